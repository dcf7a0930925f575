package full

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/internal/cli"
)

func TestMain(m *testing.M) {
	Install()
	os.Exit(m.Run())
}

// tcplab runs the full build's command line in this process.
func tcplab(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestHelpFull(t *testing.T) {
	for _, cmd := range []string{"diff", "lab", "explain", "pkt", "serve", "exporter"} {
		out, _, code := tcplab(t, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Usage:\n  tcplab "+cmd) {
			t.Errorf("%s --help: exit %d\n%s", cmd, code, out)
		}
	}
}

// --netns-pid takes a process ID, 1 or more: 0 and negative values are
// usage errors rather than a quiet "this host" (which is what leaving the
// flag out means). Each command also gets a bad flag that it checks only
// once it runs, so that a --netns-pid let through ends the command at once
// instead of serving (exporter) or watching until stopped.
func TestLiveNetnsPIDUsage(t *testing.T) {
	for _, cmd := range [][]string{
		{"ss"},
		{"stats", "--watch", "-1s"},
		{"doctor", "--interval", "0s"},
		{"watch", "--interval", "0s"},
		{"exporter", "--top-ports", "0"},
	} {
		for pid, want := range map[string]string{"0": "1 or more", "+0": "1 or more", "-1": "1 or more", "-4242": "1 or more", "pid": "not a process ID", "": "not a process ID"} {
			for _, flag := range [][]string{{"--netns-pid", pid}, {"--netns-pid=" + pid}} {
				args := append(slices.Clone(cmd), flag...)
				out, errs, code := tcplab(t, args...)
				if code != 2 || !strings.HasPrefix(errs, `tcplab: invalid argument "`+pid+`" for "--netns-pid" flag: `) || !strings.Contains(errs, want) || out != "" {
					t.Errorf("%q: exit %d, stderr %q, stdout %q; want exit 2 and %q", args, code, errs, out, want)
				}
			}
		}
	}
}

// Flags that cannot go together are refused, not one of them dropped.
func TestConflictingFlagsFull(t *testing.T) {
	for _, args := range [][]string{{"explain", "--json", "--ladder", "x.pcap"}, {"pkt", "--json", "--ladder", "x.pkt"}} {
		out, errs, code := tcplab(t, args...)
		if code != 2 || out != "" || !strings.Contains(errs, "--json and --ladder cannot go together") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}

// Help names values for what they are, never by Go's types, and shows no
// empty defaults.
func TestHelpWithoutTypeInternals(t *testing.T) {
	for _, cmd := range []string{"list", "run", "tour", "show", "ss", "stats", "doctor", "watch", "diff", "lab", "serve", "exporter", "pkt", "explain"} {
		out, _, code := tcplab(t, cmd, "--help")
		if code != 0 {
			t.Fatalf("%s --help: exit %d", cmd, code)
		}
		for _, bad := range []string{"Slice", "stringArray", "(default [])", "strings ", "uint16", "int64", "float64"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s --help shows %q", cmd, bad)
			}
		}
	}
}

// tcplab man writes a page per command, made from their help, and leaves
// a page already there alone unless --force.
func TestMan(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := tcplab(t, "man", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, p := range []string{"tcplab.1", "tcplab-run.1", "tcplab-ss.1", "tcplab-explain.1", "tcplab-lab-clean.1"} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !strings.Contains(string(b), ".TH \"TCPLAB\" \"1\"") {
			t.Errorf("%s: %v %.100q", p, err, b)
		}
	}
	run, _ := os.ReadFile(filepath.Join(dir, "tcplab-run.1"))
	if !strings.Contains(string(run), `\fB--kernel\fP`) {
		t.Errorf("tcplab-run.1 lacks --kernel")
	}
	if err := os.WriteFile(filepath.Join(dir, "tcplab-ss.1"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := tcplab(t, "man", dir); code != 0 || !strings.Contains(errs, "tcplab-ss.1 is already there: left alone") {
		t.Errorf("second run: exit %d, %q", code, errs)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "tcplab-ss.1")); string(b) != "mine" {
		t.Errorf("a page already there was replaced")
	}
	if _, _, code := tcplab(t, "man", "--force", dir); code != 0 {
		t.Errorf("--force: exit %d", code)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "tcplab-ss.1")); string(b) == "mine" {
		t.Errorf("--force left the page")
	}
	_ = out
}
