package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcplab/tcplab/internal/clitest"
	"golang.org/x/sys/unix"
)

// failing parses but cannot run: the read names a socket whose accept
// is still blocked.
const failing = `host client 10.0.0.1
host server 10.0.0.2
server: listen 80
server: accept
server: read conn
`

// runaway runs long: under a raised budget it takes seconds.
const runaway = `host attacker 10.0.9.1
host server 10.0.0.2
server: listen 80
attacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 1us
after 1s
`

var pictureFlags = []string{"--pcap", "--svg", "--states", "--html"}

func writeScenario(t *testing.T, dir, name, src string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A run that cannot finish leaves every output path as it was: a regular
// file keeps its content, a symlink stays a link to an unchanged target.
func TestFailedRunKeepsOutputPaths(t *testing.T) {
	for _, flag := range pictureFlags {
		dir := t.TempDir()
		sc := writeScenario(t, dir, "failing.tcplab", failing)
		file := filepath.Join(dir, "file.out")
		os.WriteFile(file, []byte("file before"), 0o644)
		target := filepath.Join(dir, "target.out")
		os.WriteFile(target, []byte("target before"), 0o644)
		link := filepath.Join(dir, "link.out")
		os.Symlink("target.out", link)
		before := clitest.Names(t, dir)
		for _, p := range []string{file, link} {
			_, errs, code := tcplab(t, "run", sc, flag, p)
			if code != 2 || !strings.Contains(errs, "accept() is still blocked") {
				t.Fatalf("%s %s: exit %d: %s", flag, p, code, errs)
			}
		}
		if b, _ := os.ReadFile(file); string(b) != "file before" {
			t.Errorf("%s: the file now holds %q", flag, b)
		}
		if li, err := os.Lstat(link); err != nil || li.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: the symlink is gone or replaced", flag)
		}
		if b, _ := os.ReadFile(target); string(b) != "target before" {
			t.Errorf("%s: the link's target now holds %q", flag, b)
		}
		if after := clitest.Names(t, dir); after != before {
			t.Errorf("%s: the directory held %q, now %q", flag, before, after)
		}

		// A run that finishes writes through the link and replaces the file.
		for _, p := range []string{file, link} {
			if _, errs, code := tcplab(t, "run", "handshake", flag, p); code != 0 {
				t.Fatalf("%s: exit %d: %s", flag, code, errs)
			}
		}
		if li, err := os.Lstat(link); err != nil || li.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: a finished run replaced the symlink", flag)
		}
		for _, p := range []string{file, target} {
			if b, _ := os.ReadFile(p); len(b) < 100 {
				t.Errorf("%s: %s was not written: %q", flag, p, b)
			}
		}
		if after := clitest.Names(t, dir); after != before {
			t.Errorf("%s: the directory held %q, now %q", flag, before, after)
		}
	}
}

// A device node given as an output is written to and never removed, also
// when writing to it fails (the node of /dev/full) or the run is refused.
func TestOutputDeviceNodeNeverRemoved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	dir := t.TempDir()
	sc := writeScenario(t, dir, "failing.tcplab", failing)
	full, null := filepath.Join(dir, "full"), filepath.Join(dir, "null")
	for p, minor := range map[string]uint32{full: 7, null: 3} {
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, minor))); err != nil {
			t.Skipf("mknod: %v", err)
		}
	}
	isDev := func(what, p string) {
		t.Helper()
		if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			t.Fatalf("%s: %s is gone or no longer a device: %v", what, p, err)
		}
	}
	for _, flag := range pictureFlags {
		// Writing fails: ENOSPC.
		_, errs, code := tcplab(t, "run", "hutu", flag, full)
		if code != 2 || !strings.Contains(errs, "no space left") {
			t.Errorf("%s %s: exit %d: %s", flag, full, code, errs)
		}
		isDev(flag+" to a full device", full)
		// The run fails.
		if _, _, code := tcplab(t, "run", sc, flag, null); code != 2 {
			t.Errorf("%s: exit %d", flag, code)
		}
		isDev(flag+" with a failing run", null)
		// The run finishes.
		if _, errs, code := tcplab(t, "run", "handshake", flag, null); code != 0 {
			t.Errorf("%s: exit %d: %s", flag, code, errs)
		}
		isDev(flag+" with a finished run", null)
	}
	if got := clitest.Names(t, dir); got != "failing.tcplab full null" {
		t.Errorf("directory holds %q", got)
	}
}

// /dev/fd/N (and so /dev/stdout) names a descriptor: written by
// appending, never truncated or removed.
func TestOutputToDescriptor(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("report\n")
	p := "/dev/fd/" + strconv.Itoa(int(f.Fd()))
	sc := writeScenario(t, dir, "failing.tcplab", failing)
	if _, _, code := tcplab(t, "run", sc, "--svg", p); code != 2 {
		t.Fatalf("exit %d", code)
	}
	if _, errs, code := tcplab(t, "run", "handshake", "--svg", p); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, _ := os.ReadFile(f.Name())
	if !strings.HasPrefix(string(b), "report\n<svg") {
		t.Fatalf("the file behind the descriptor holds %.60q", b)
	}
	if _, err := os.Stat("/dev/stdout"); err != nil {
		t.Fatal(err)
	}
}

// An interrupted run keeps the output paths as they were, leaves no
// temporary file, prints the events it saw and says why it stopped.
func TestInterruptedRunKeepsOutputsAndShowsEvents(t *testing.T) {
	dir := t.TempDir()
	sc := writeScenario(t, dir, "runaway.tcplab", runaway)
	out := filepath.Join(dir, "out.html")
	os.WriteFile(out, []byte("before"), 0o644)
	ctx, cancel := context.WithCancelCause(context.Background())
	// Interrupted once its output is open (its temporary file is
	// there), while the flood runs (seconds under this budget).
	go func() {
		for ctx.Err() == nil {
			if m, _ := filepath.Glob(filepath.Join(dir, ".out.html.tcplab-*")); len(m) > 0 {
				time.Sleep(50 * time.Millisecond)
				cancel(errInterruptedByTest)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var stdout, stderr bytes.Buffer
	code := runContext(ctx, []string{"run", sc, "--html", out, "--max-events", "100000000"}, &stdout, &stderr)
	cancel(nil)
	if code != 2 || !strings.Contains(stderr.String(), "the run stopped at") || !strings.Contains(stderr.String(), "interrupted by a test") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "runaway: ") || !strings.Contains(stdout.String(), "the run stopped here: interrupted by a test") {
		t.Errorf("the events seen are not printed:\n%.2000s", stdout.String())
	}
	if b, _ := os.ReadFile(out); string(b) != "before" {
		t.Errorf("the output now holds %.60q", b)
	}
	if got := clitest.Names(t, dir); got != "out.html runaway.tcplab" {
		t.Errorf("directory holds %q", got)
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errInterruptedByTest = testError("interrupted by a test")

// The budget stops a runaway run with the line it was at, the inject
// line that floods, and how to raise it; --max-events raises it.
func TestRunBudget(t *testing.T) {
	dir := t.TempDir()
	sc := writeScenario(t, dir, "runaway.tcplab", runaway)
	out, errs, code := tcplab(t, "run", sc, "--max-events", "3000")
	if code != 2 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"runaway.tcplab:5:1: the run stopped at", "it made 3000 events", "line 4 injects 100000 segments", "--max-events raises the limit"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q: %s", want, errs)
		}
	}
	if !strings.Contains(out, "the run stopped here") || !strings.Contains(out, "states reached:") {
		t.Errorf("the partial run is not shown:\n%.1000s", out)
	}
	if _, errs, code := tcplab(t, "run", "syn-flood", "--max-events", "3000"); code != 0 {
		t.Errorf("syn-flood under 3000 events: exit %d: %s", code, errs)
	}
	if _, errs, code := tcplab(t, "run", "hutu", "--max-events", "0"); code != 2 || !strings.Contains(errs, "at least 1") {
		t.Errorf("--max-events 0: exit %d: %s", code, errs)
	}
}

// A SIGINT that arrives while the scenario is still being read stops the
// run, also when tcplab was started with SIGINT ignored (a background job
// of a script), where the signal used to be lost until the run began.
func TestEarlySigintNotLost(t *testing.T) {
	bin := buildTcplab(t)
	fifo := filepath.Join(t.TempDir(), "slow.tcplab")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	var out bytes.Buffer
	cmd := exec.Command("sh", "-c", `trap "" INT; exec "$0" run "$1" --max-events 100000000`, bin, fifo)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Opening the FIFO waits for tcplab to open it: it is then reading
	// its scenario, before any run.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	w.WriteString(runaway)
	w.Close()
	if code := clitest.WaitExit(t, cmd, 60*time.Second, &out); code != 2 || !strings.Contains(out.String(), "interrupted by interrupt") {
		t.Fatalf("exit %d, want 2 and the interruption:\n%s", code, tail(out.String(), 600))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// A FIFO nobody reads is refused at once as an output; a scenario read
// from a FIFO whose writer stays silent gives way to SIGINT.
func TestFIFOsDoNotHang(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.fifo")
	if err := unix.Mkfifo(out, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if _, errs, code := tcplab(t, "run", "hutu", "--svg", out); code != 2 || !strings.Contains(errs, "nobody reads") {
		t.Fatalf("exit %d: %s", code, errs)
	}

	bin := buildTcplab(t)
	in := filepath.Join(dir, "in.tcplab")
	unix.Mkfifo(in, 0o600)
	var buf bytes.Buffer
	cmd := exec.Command(bin, "run", in)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	w, err := os.OpenFile(in, os.O_WRONLY, 0) // returns once tcplab opened it
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd.Process.Signal(syscall.SIGINT)
	if code := clitest.WaitExit(t, cmd, 20*time.Second, &buf); code != 2 || !strings.Contains(buf.String(), "not read: interrupted by interrupt") {
		t.Fatalf("exit %d: %s", code, buf.String())
	}
}
