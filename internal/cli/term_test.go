package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: what is written to tty reads back from
// master.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open the terminal: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// onTerminal runs a command line with its output on a terminal and
// returns what the terminal got.
func onTerminal(t *testing.T, args ...string) (string, int) {
	t.Helper()
	master, tty := openPTY(t)
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(master) // until the terminal closes (EIO)
		done <- b
	}()
	var errb bytes.Buffer
	code := runContext(context.Background(), args, tty, &errb)
	tty.Close()
	out := <-done
	return string(out), code
}

// FAILED is bold red on a terminal, plain in a pipe and with NO_COLOR; a
// refreshing stats clears the screen only on a terminal.
func TestColourOnlyOnATerminal(t *testing.T) {
	file := writeScenario(t, t.TempDir(), "failing.tcplab", `title a failing expectation
host client 10.0.0.1
host server 10.0.0.2
server: listen 80
client: connect server:80
expect client: conn connect = ECONNREFUSED
`)
	t.Setenv("NO_COLOR", "")
	os.Unsetenv("NO_COLOR") // restored by t.Setenv's cleanup
	t.Setenv("TERM", "xterm")
	out, code := onTerminal(t, "run", file)
	if code != 1 || !strings.Contains(out, "\033[1;31mFAILED\033[0m") {
		t.Errorf("on a terminal: exit %d, no red FAILED in %q", code, out)
	}
	_, _, code = tcplab(t, "run", file)
	if pipe, _, _ := tcplab(t, "run", file); code != 1 || strings.Contains(pipe, "\033") || !strings.Contains(pipe, "FAILED") {
		t.Errorf("in a pipe: exit %d, %q", code, pipe)
	}
	t.Setenv("NO_COLOR", "1")
	if out, _ := onTerminal(t, "run", file); strings.Contains(out, "\033[1;31m") || !strings.Contains(out, "FAILED") {
		t.Errorf("NO_COLOR: %q", out)
	}
	out, code = onTerminal(t, "stats", "--watch", "10ms", "--count", "2")
	if code != 0 || strings.Count(out, "\033[H\033[2J") != 2 {
		t.Errorf("stats --watch on a terminal: exit %d, %d screen clears", code, strings.Count(out, "\033[H\033[2J"))
	}
	if pipe, _, code := tcplab(t, "stats", "--watch", "10ms", "--count", "2"); code != 0 || strings.Contains(pipe, "\033") || strings.Count(pipe, "(every 10ms") != 2 {
		t.Errorf("stats --watch in a pipe: exit %d, %q", code, pipe)
	}
}

// doctor says on standard error that it waits for its second sample: a
// countdown on a terminal, cleared before the findings; one line in a
// pipe; nothing with -q.
func TestDoctorCountdown(t *testing.T) {
	master, tty := openPTY(t)
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(master)
		done <- b
	}()
	code := runContext(context.Background(), []string{"doctor", "--interval", "1500ms"}, io.Discard, tty)
	tty.Close()
	out := string(<-done)
	if code > 1 || !strings.Contains(out, "\rdoctor: first sample taken; the second in 2s") || !strings.HasSuffix(out, "\r\033[K") {
		t.Errorf("on a terminal: exit %d, %q", code, out)
	}
	_, errs, code := tcplab(t, "doctor", "--interval", "10ms")
	if code > 1 || errs != "doctor: first sample taken; the second in 10ms\n" {
		t.Errorf("in a pipe: exit %d, %q", code, errs)
	}
	if _, errs, code := tcplab(t, "doctor", "--interval", "10ms", "-q"); code > 1 || errs != "" {
		t.Errorf("-q: exit %d, %q", code, errs)
	}
}
