package cli

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The tcplab binary hands the command lines that need the full build to
// tcplab-full as they are, before writing anything.
func TestHandoff(t *testing.T) {
	var gotPath string
	var gotArgs []string
	saved := execFull
	defer func() { execFull = saved }()
	execFull = func(path string, args []string) error {
		gotPath, gotArgs = path, slices.Clone(args)
		return nil
	}
	t.Setenv("TCPLAB_FULL", "/opt/x/tcplab-full")
	t.Setenv(handoffEnv, "")
	for _, args := range [][]string{
		{"serve", "--listen", "127.0.0.1:0", "--no-such-flag"},
		{"explain", "--help"},
		{"help", "pkt"},
		{"diff", "hutu"},
		{"lab", "clean", "--force"},
		{"exporter", "-h"},
		{"run", "--kernel", "hutu", "--ladder"},
		{"run", "hutu", "--kernel=true"},
		{"tour", "--kernel", "--quick"},
	} {
		gotPath, gotArgs = "", nil
		out, errs, code := tcplab(t, args...)
		if code != 0 || out != "" || errs != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
		if gotPath != "/opt/x/tcplab-full" || !slices.Equal(gotArgs, args) {
			t.Errorf("%q: handed to %q with %q", args, gotPath, gotArgs)
		}
	}
	// What the lean build runs itself is not handed over.
	gotPath = ""
	if _, _, code := tcplab(t, "run", "hutu"); code != 0 || gotPath != "" {
		t.Errorf("run hutu: exit %d, handed to %q", code, gotPath)
	}
}

// Without tcplab-full, or when it hands the line back, the error says what
// to install.
func TestHandoffErrors(t *testing.T) {
	saved := execFull
	defer func() { execFull = saved }()
	execFull = func(path string, args []string) error {
		t.Fatalf("exec %s %q", path, args)
		return nil
	}
	t.Setenv("TCPLAB_FULL", "")
	t.Setenv("PATH", t.TempDir())
	_, errs, code := tcplab(t, "serve")
	if code != 2 || !strings.Contains(errs, "`tcplab serve` needs tcplab-full") || !strings.Contains(errs, "go install ./cmd/tcplab ./cmd/tcplab-full") {
		t.Errorf("no full build: exit %d, %q", code, errs)
	}
	t.Setenv("TCPLAB_FULL", "/opt/x/tcplab-full")
	t.Setenv(handoffEnv, "1")
	if _, errs, code := tcplab(t, "pkt", "x.pkt"); code != 2 || !strings.Contains(errs, "not the full build") {
		t.Errorf("handed back: exit %d, %q", code, errs)
	}
}

// The real thing: tcplab finds tcplab-full beside it and becomes it.
func TestHandoffExec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	dir := t.TempDir()
	for _, c := range []string{"tcplab", "tcplab-full"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../../cmd/"+c).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	cmd := exec.Command(filepath.Join(dir, "tcplab"), "explain", "--help")
	cmd.Env = append(cmd.Environ(), "TCPLAB_FULL=", handoffEnv+"=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "--conn") {
		t.Fatalf("tcplab explain --help: %v\n%s", err, out.String())
	}
	// A command the full build has and the lean one runs itself gives
	// the same output from both.
	a, _ := exec.Command(filepath.Join(dir, "tcplab"), "run", "hutu").Output()
	b, _ := exec.Command(filepath.Join(dir, "tcplab-full"), "run", "hutu").Output()
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("run hutu differs between the builds:\n%s\n---\n%s", a, b)
	}
}
