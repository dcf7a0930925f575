package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/internal/clitest"
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
	os.Unsetenv(handoffEnv) // restored by t.Setenv's cleanup
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
	dir := clitest.Build(t, "../../cmd/", "tcplab", "tcplab-full")
	cmd := exec.Command(filepath.Join(dir, "tcplab"), "explain", "--help")
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "--conn") {
		t.Fatalf("tcplab explain --help: %v\n%s", err, out.String())
	}
	// A command the full build has and the lean one runs itself gives
	// the same output from both.
	ca := exec.Command(filepath.Join(dir, "tcplab"), "run", "hutu")
	ca.Env = cleanEnv()
	a, _ := ca.Output()
	b, _ := exec.Command(filepath.Join(dir, "tcplab-full"), "run", "hutu").Output()
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("run hutu differs between the builds:\n%s\n---\n%s", a, b)
	}
}

// cleanEnv is this process's environment without tcplab's own variables.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "TCPLAB_FULL=") && !strings.HasPrefix(e, handoffEnv+"=") {
			env = append(env, e)
		}
	}
	return env
}

// Completing a command of the full build is handed over too: tcplab-full
// knows its subcommands and flags.
func TestHandoffCompletion(t *testing.T) {
	var got []string
	saved := execFull
	defer func() { execFull = saved }()
	execFull = func(path string, args []string) error { got = slices.Clone(args); return nil }
	t.Setenv("TCPLAB_FULL", "/opt/x/tcplab-full")
	t.Setenv(handoffEnv, "")
	os.Unsetenv(handoffEnv)
	for _, args := range [][]string{{"__complete", "lab", ""}, {"__completeNoDesc", "serve", "--li"}} {
		got = nil
		if _, _, code := tcplab(t, args...); code != 0 || !slices.Equal(got, args) {
			t.Errorf("%q: exit %d, handed %q", args, code, got)
		}
	}
	// The lean build's own commands complete here.
	got = nil
	out, _, code := tcplab(t, "__complete", "run", "--pro")
	if code != 0 || got != nil || !strings.Contains(out, "--profile") {
		t.Errorf("run completion: exit %d, handed %q, %q", code, got, out)
	}
}

// What stops a handoff: an empty TCPLAB_HANDOFF counts as a handoff (no
// loop), tcplab-full being this very binary, a signal before the exec, a
// failed help (exit 2, not 0).
func TestHandoffRefusals(t *testing.T) {
	saved := execFull
	defer func() { execFull = saved }()
	execFull = func(path string, args []string) error {
		t.Fatalf("exec %s %q", path, args)
		return nil
	}
	t.Setenv("TCPLAB_FULL", "/opt/x/tcplab-full")
	t.Setenv(handoffEnv, "")
	if _, errs, code := tcplab(t, "diff", "hutu"); code != 2 || !strings.Contains(errs, "handed it back") {
		t.Errorf("empty TCPLAB_HANDOFF: exit %d, %q", code, errs)
	}
	os.Unsetenv(handoffEnv)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TCPLAB_FULL", self)
	if _, errs, code := tcplab(t, "serve"); code != 2 || !strings.Contains(errs, "is this binary") {
		t.Errorf("itself: exit %d, %q", code, errs)
	}
	t.Setenv("TCPLAB_FULL", "/opt/x/tcplab-full")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("interrupted by interrupt"))
	var out, errb bytes.Buffer
	if code := runContext(ctx, []string{"run", "--kernel", "hutu"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("signal first: exit %d, %q", code, errb.String())
	}
	t.Setenv("TCPLAB_FULL", "")
	t.Setenv("PATH", t.TempDir())
	if _, errs, code := tcplab(t, "help", "diff"); code != 2 || !strings.Contains(errs, "needs tcplab-full") {
		t.Errorf("help without the full build: exit %d, %q", code, errs)
	}
}

// The full build says when the tcplab that handed it a command is another
// build, and does not pass the mark on.
func TestHandedOverNote(t *testing.T) {
	for _, tc := range []struct{ from, want string }{{Version(), ""}, {"v0.0.1 (abcdef)", "another build"}} {
		t.Setenv(handoffEnv, tc.from)
		var b bytes.Buffer
		handedOver(&b)
		if tc.want == "" && b.Len() != 0 || tc.want != "" && !strings.Contains(b.String(), tc.want) {
			t.Errorf("from %q: %q", tc.from, b.String())
		}
		if _, ok := os.LookupEnv(handoffEnv); ok {
			t.Errorf("from %q: the mark is passed on", tc.from)
		}
	}
}
