package trace

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

func TestSSDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{204 * time.Millisecond, "204ms"}, {1200 * time.Millisecond, "1.200ms"}, {59 * time.Second, "59sec"},
		{12500 * time.Millisecond, "12sec"}, {62 * time.Second, "1min2sec"}, {12*time.Minute + 5*time.Second, "12min"},
		{0, "0ms"},
	} {
		if got := SSDuration(c.d); got != c.want {
			t.Errorf("SSDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

func TestWriteSS(t *testing.T) {
	var b strings.Builder
	WriteSS(&b, []Socket{
		{State: "LISTEN", Local: netip.MustParseAddrPort("0.0.0.0:80"), SendQ: 128, RecvQ: 3},
		{State: "ESTABLISHED", Parent: 1, Local: netip.MustParseAddrPort("10.0.0.2:80"), Remote: netip.MustParseAddrPort("10.0.0.1:40000")},
		{State: "TIME_WAIT", Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:80"),
			Timer: "timewait", TimerLeft: 59 * time.Second},
		{State: "FIN_WAIT1", FD: 0, Orphan: true, Local: netip.MustParseAddrPort("10.0.0.1:40001"), Remote: netip.MustParseAddrPort("10.0.0.2:80"),
			Timer: "on", TimerLeft: 1600 * time.Millisecond, Retransmits: 2, SendQ: 1},
	})
	want := `State       Recv-Q Send-Q  Local Address:Port    Peer Address:Port     Timer
LISTEN           3    128  0.0.0.0:80            0.0.0.0:*             
ESTAB            0      0  10.0.0.2:80           10.0.0.1:40000         (not accepted)
TIME-WAIT        0      0  10.0.0.1:40000        10.0.0.2:80           timer:(timewait,59sec,0)
FIN-WAIT-1       0      1  10.0.0.1:40001        10.0.0.2:80           timer:(on,1.600ms,2) (orphan: closed by its program)
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestTextLines(t *testing.T) {
	syn := seg(cli, srv, 40000, 80, wire.SYN, 1000, 0, "")
	events := []Event{
		{At: 0, Host: "client", Kind: KindCall, Call: &Call{Op: "connect", Text: "connect(3, 10.0.0.2:80)", Pending: true}},
		{At: 0, Host: "client", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: Out, Segment: syn, Verdict: VerdictPass, OnWire: true}},
		{At: time.Millisecond, Host: "server", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: In, Segment: syn, Verdict: VerdictPass, OnWire: true}},
		{At: time.Millisecond, Host: "server", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: In, Segment: syn, Verdict: VerdictDrop, Rule: "block", OnWire: true}},
		{At: 2 * time.Second, Host: "client", Kind: KindState, Local: netip.MustParseAddrPort("10.0.0.1:40000"),
			Remote: netip.MustParseAddrPort("10.0.0.2:80"), State: &StateChange{From: "SYN_SENT", To: "CLOSED", CauseKind: "timer", Cause: "SYN timeout"}},
		{At: 2 * time.Second, Host: "client", Kind: KindCall, Call: &Call{Op: "connect", Text: "connect(3, 10.0.0.2:80)", Ret: -1, Errno: "ETIMEDOUT"}},
		{At: 2 * time.Second, Host: "client", Kind: KindCounter, Counter: &Counter{Name: "AttemptFails", Delta: 1, Value: 1}},
		{At: 2 * time.Second, Host: "", Kind: KindNote, Note: "== part two =="},
		{At: 2 * time.Second, Host: "client", Kind: KindCheck, Check: &Check{Text: "expect x", OK: false, Seen: "y"}},
	}
	var b strings.Builder
	WriteText(&b, events, &Text{HostWidth: 6})
	want := `0.000000  client call   connect(3, 10.0.0.2:80) blocks
0.000000  client out    10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 502, length 0
0.001000  server in     10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 502, length 0  [drop by block]
2.000000  client state  10.0.0.1:40000 > 10.0.0.2:80  SYN_SENT -> CLOSED  (SYN timeout)
2.000000  client call   connect(3, 10.0.0.2:80) = -1 ETIMEDOUT

2.000000 == part two ==
2.000000  client check  FAILED  expect x
                        seen: y
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	// Counters and every tap on request.
	b.Reset()
	WriteText(&b, events, &Text{HostWidth: 6, Counters: true, AllTaps: true})
	if !strings.Contains(b.String(), "count  AttemptFails +1 = 1") || strings.Count(b.String(), "Flags [S]") != 3 {
		t.Fatalf("counters/all taps:\n%s", b.String())
	}
}

func TestLadderDrop(t *testing.T) {
	syn := seg(cli, srv, 40000, 80, wire.SYN, 1000, 0, "")
	events := []Event{
		{At: 0, Host: "client", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: Out, Segment: syn, Verdict: VerdictPass, OnWire: true}},
		{At: time.Millisecond, Host: "server", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: In, Segment: syn, Verdict: VerdictDrop, Rule: "block", OnWire: true}},
		{At: 10 * time.Second, Host: "client", Kind: KindState, State: &StateChange{From: "SYN_SENT", To: "CLOSED"}},
	}
	var b strings.Builder
	WriteLadder(&b, []string{"client", "server"}, events, false)
	lines := strings.Split(b.String(), "\n")
	if !strings.HasSuffix(lines[1], "-- [S] seq 1000 --------------X  |") {
		t.Errorf("dropped arrow: %q", lines[1])
	}
	if !strings.Contains(lines[2], "~") || !strings.Contains(lines[2], "10s pass") {
		t.Errorf("idle break: %q", lines[2])
	}
	if !strings.HasSuffix(lines[3], "CLOSED |                                               |") {
		t.Errorf("state: %q", lines[3])
	}
}
