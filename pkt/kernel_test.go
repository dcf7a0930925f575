package pkt_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/pkt"
	"github.com/tcplab/tcplab/trace"
)

// The project's own scripts are written from what Linux does: on this
// machine's kernel they pass (and the wrong ones fail) as on the engine.
func TestKernelScripts(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	for _, c := range []struct {
		file   string
		status pkt.Status
		msg    string
	}{
		{"passive-close.pkt", pkt.Pass, ""},
		{"active-nonblock.pkt", pkt.Pass, ""},
		{"blocking-calls.pkt", pkt.Pass, ""},
		{"ack-of-unsent-data.pkt", pkt.Pass, ""},
		{"socket-queries.pkt", pkt.Pass, ""},
		{"user-timeout.pkt", pkt.Pass, ""},
		{"maxseg.pkt", pkt.Pass, ""},
		{"inq.pkt", pkt.Pass, ""},
		{"remote-isn.pkt", pkt.Pass, ""},
		{"null-buffer.pkt", pkt.Pass, ""},
		{"rwnd-limited.pkt", pkt.Pass, ""},
		{"more-calls.pkt", pkt.Pass, ""},
		{"cork.pkt", pkt.Pass, ""},
		{"congestion.pkt", pkt.Pass, ""},
		{"tso.pkt", pkt.Pass, ""},
		{"ip-fields.pkt", pkt.Pass, ""},
		{"idle-restart.pkt", pkt.Pass, ""},
		{"gso-off.pkt", pkt.Pass, ""},
		{"fin-cwnd.pkt", pkt.Pass, ""},
		{"sndbuf.pkt", pkt.Pass, ""},
		{"output-drop.pkt", pkt.Pass, ""},
		{"fin-delayed-ack.pkt", pkt.Pass, ""},
		{"raw-calls.pkt", pkt.Pass, ""},
		{"epoll-edge.pkt", pkt.Pass, ""},
		{"wrong-ack.pkt", pkt.Fail, "wrong-ack.pkt:12: error handling packet: live packet field tcp_ack_seq: expected: 100 (0x64) vs actual: 101 (0x65)"},
	} {
		t.Run(c.file, func(t *testing.T) {
			s, err := pkt.ParseFile("testdata/" + c.file)
			if err != nil {
				t.Fatal(err)
			}
			var events []trace.Event
			b := kernel.New(kernel.Options{Tick: time.Millisecond})
			res := pkt.Run(s, b, pkt.Options{Dir: "testdata", Sink: func(e trace.Event) { events = append(events, e) }})
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if res.Status != c.status || !strings.Contains(res.Error(), c.msg) {
				var lines []string
				text := &trace.Text{}
				for i := range events {
					if l, ok := text.Line(&events[i]); ok {
						lines = append(lines, l)
					}
				}
				t.Fatalf("%s, want %s %q\n%s\n%s\n%s", res.Status, c.status, c.msg, res.Error(), res.Stack, strings.Join(lines, "\n"))
			}
			if c.status == pkt.Pass {
				states := 0
				for _, e := range events {
					if e.Kind == trace.KindState && e.Host == pkt.LocalHost {
						states++
					}
				}
				if states == 0 {
					t.Errorf("no state change of the local host in the trace")
				}
			}
		})
	}
}
