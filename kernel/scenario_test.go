package kernel_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// The runner makes a repeat's calls one burst on backends that can.
var _ scenario.Burster = (*kernel.Backend)(nil)

// needKernel skips a test that needs root and namespaces, saying why.
func needKernel(t testing.TB) {
	t.Helper()
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
}

// runKernel plays a built-in scenario on the kernel and returns the
// result and the events.
func runKernel(t testing.TB, name string) (*scenario.Result, []trace.Event) {
	t.Helper()
	sc, err := scenario.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	return play(t, sc, kernel.Options{})
}

// play runs a scenario on a kernel backend with options, and removes
// the lab after.
func play(t testing.TB, sc *scenario.Scenario, opt kernel.Options) (*scenario.Result, []trace.Event) {
	t.Helper()
	b := kernel.New(opt)
	defer func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	var rec trace.Recorder
	res, err := scenario.Run(sc, b, scenario.Options{Sink: rec.Sink()})
	if err != nil {
		t.Fatal(err)
	}
	return res, rec.Events
}

// textOf is the last n lines of a run's text trace, counters and notes
// included: what a failure on a busy machine needs to be understood.
func textOf(events []trace.Event, n int) string {
	text := &trace.Text{Counters: true}
	var lines []string
	for i := range events {
		if l, ok := text.Line(&events[i]); ok {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("(%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func failures(res *scenario.Result) string {
	var b strings.Builder
	for _, c := range res.Checks {
		if !c.OK {
			b.WriteString("\n  " + c.Text + ": seen " + c.Seen)
		}
	}
	return b.String()
}

// TestKernelScenarios runs the short built-in scenarios on the kernel:
// every expectation written for the simulator must hold on Linux too.
func TestKernelScenarios(t *testing.T) {
	needKernel(t)
	for _, name := range []string{"handshake", "rst-closed-port", "close-unread-rst", "last-ack", "handshake-ipv6", "rst-closed-port-ipv6"} {
		t.Run(name, func(t *testing.T) {
			res, events := runKernel(t, name)
			if res.Failed() > 0 {
				t.Errorf("%d of %d expectations failed on the kernel:%s\nthe run:\n%s", res.Failed(), len(res.Checks), failures(res), textOf(events, 80))
			}
			var packets, states int
			for _, e := range events {
				switch e.Kind {
				case trace.KindPacket:
					packets++
				case trace.KindState:
					states++
				}
			}
			if packets == 0 || states == 0 {
				t.Errorf("%d packets and %d state changes reported", packets, states)
			}
		})
	}
}
