package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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

// A batch's progress: a line per run that ends in a pipe; on a terminal
// one line rewritten in place and cleared at the end; nothing without a
// writer (-q).
func TestProgress(t *testing.T) {
	var b bytes.Buffer
	ctx := WithProgress(context.Background(), &b)
	p := NewProgress(ctx, "kernel runs", []time.Duration{60 * time.Second, 2 * time.Second, time.Second}, 2)
	p.Start("hutu", 60*time.Second)
	p.Start("handshake", 2*time.Second)
	p.Done("handshake", 2100*time.Millisecond)
	p.Start("syn-recv", time.Second)
	p.Done("syn-recv", time.Second)
	p.Done("hutu", 61*time.Second)
	p.Close()
	want := []string{
		"kernel runs: 1 of 3 done: handshake in 2.1s; running hutu; T elapsed, about 1m0s left",
		"kernel runs: 2 of 3 done: syn-recv in 1s; running hutu; T elapsed, about 1m0s left",
		"kernel runs: 3 of 3 done: hutu in 1m1s; none running; T elapsed, about 0s left",
	}
	// The elapsed time is this test's; a slow machine may take a second
	// from the estimate too.
	norm := regexp.MustCompile(`[0-9ms]+ elapsed`)
	got := strings.Split(norm.ReplaceAllString(strings.TrimSpace(b.String()), "T elapsed"), "\n")
	got = slices.Clone(got)
	for i := range got {
		got[i] = strings.Replace(got[i], "about 59s left", "about 1m0s left", 1)
	}
	if !slices.Equal(got, want) {
		t.Errorf("in a pipe:\n%s\nwant\n%s", b.String(), strings.Join(want, "\n"))
	}
	if NewProgress(context.Background(), "x", nil, 1) != nil {
		t.Error("a progress without a writer")
	}
	master, tty := openPTY(t)
	done := make(chan []byte)
	go func() {
		out, _ := io.ReadAll(master)
		done <- out
	}()
	// A narrow terminal: each drawn line fits it, or \r would redraw only
	// a wrapped line's last part.
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 40}); err != nil {
		t.Fatal(err)
	}
	p = NewProgress(WithProgress(context.Background(), tty), "kernel runs", []time.Duration{time.Second}, 1)
	p.Start("hutu", time.Second)
	p.Done("hutu", time.Second)
	p.Close()
	tty.Close()
	out := string(<-done)
	if !strings.HasPrefix(out, "\rkernel runs: 0/1 done; running hutu;") || !strings.Contains(out, "\rkernel runs: 1/1 done;") ||
		!strings.HasSuffix(out, "\r\033[K") || strings.Contains(out, "\n") {
		t.Errorf("on a terminal: %q", out)
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\r\033[K"), "\r") {
		if len(strings.TrimRight(l, " ")) > 39 {
			t.Errorf("a line of %d columns on a terminal of 40: %q", len(l), l)
		}
	}
}
