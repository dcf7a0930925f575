package conformance

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// A simultaneous open: the client connects (line 3), the server connects
// (line 4) before the client's SYN reaches it (1 ms later). On a kernel
// whose harness starts the server's step after that SYN arrived, the
// server answers with RST: the runs part, and the verdict says the
// harness may be why.
func TestInversionMakesItInconclusive(t *testing.T) {
	osc := &scenario.Scenario{Name: "o", Hosts: sc.Hosts, Steps: []scenario.Step{
		{Kind: scenario.StepCall, Host: "client", Pos: scenario.Pos{Line: 3}},
		{Kind: scenario.StepCall, Host: "server", Pos: scenario.Pos{Line: 4}}}}
	c, s := netip.AddrPortFrom(cli, 4000), netip.AddrPortFrom(srv, 5000)
	synAt := time.Millisecond
	mk := func(serverStart time.Duration, serverSynSent bool) Side {
		var ev []trace.Event
		add := func(e trace.Event) { e.Seq = len(ev) + 1; ev = append(ev, e) }
		st := func(at time.Duration, host string, l, r netip.AddrPort, from, to string) trace.Event {
			return trace.Event{At: at, Host: host, Kind: trace.KindState, Sock: 1, Local: l, Remote: r, State: &trace.StateChange{From: from, To: to}}
		}
		syn := trace.Event{At: synAt, Host: "server", Kind: trace.KindPacket,
			Packet: &trace.Packet{Dir: trace.In, OnWire: true, Segment: wire.Segment{Src: cli, Dst: srv, SrcPort: 4000, DstPort: 5000, Flags: wire.SYN}}}
		steps := []scenario.StepTime{{Pos: scenario.Pos{Line: 3}}, {Pos: scenario.Pos{Line: 4}, Start: serverStart, Last: serverStart}}
		add(st(0, "client", c, s, "CLOSED", "SYN_SENT"))
		if serverStart < syn.At {
			steps[1].Seq = len(ev)
			add(st(serverStart, "server", s, c, "CLOSED", "SYN_SENT"))
			add(syn)
			add(st(synAt, "server", s, c, "SYN_SENT", "SYN_RECV"))
		} else {
			add(syn)
			steps[1].Seq = len(ev)
			if serverSynSent {
				add(st(serverStart, "server", s, c, "CLOSED", "SYN_SENT"))
			}
		}
		return Side{Events: ev, Result: &scenario.Result{Steps: steps}}
	}
	sim := mk(0, true)
	k := mk(1500*time.Microsecond, true)
	cmp := Compare(osc, sim, k, Config{Tolerance: tol})
	if len(cmp.Inversions) != 1 || cmp.Inversions[0].Line != 4 || cmp.Inversions[0].Host != "server" || cmp.Inversions[0].Before != 500*time.Microsecond {
		t.Fatalf("want the server's step at line 4 inverted by 0.5 ms, got %v", cmp.Inversions)
	}
	if s := cmp.Inversions[0].String(); !strings.Contains(s, "step at line 4 started 1.5ms late, 500µs after [S] from 10.0.0.1:4000 reached server") {
		t.Errorf("inversion reads %q", s)
	}
	v, first, inv := Conclude(nil, "o", cmp)
	if v != VerdictInconclusive || first == nil || inv == nil {
		t.Errorf("verdict %s (%v, %v), want %s", v, first, inv, VerdictInconclusive)
	}
	// The same difference with the step in order is TCP's.
	k = mk(0, true)
	k.Events = k.Events[:len(k.Events)-1] // no SYN_RECV: TCP's own difference
	cmp = Compare(osc, sim, k, Config{Tolerance: tol})
	if v, _, _ := Conclude(nil, "o", cmp); v != VerdictDiffers || len(cmp.Inversions) != 0 {
		t.Errorf("verdict %s, inversions %v; want %s and none", v, cmp.Inversions, VerdictDiffers)
	}
	// A kernel whose SYN simply arrives sooner, with the step on time,
	// is no inversion: whatever follows is TCP's.
	synAt = 100 * time.Microsecond
	k = mk(200*time.Microsecond, true)
	synAt = time.Millisecond
	cmp = Compare(osc, sim, k, Config{Tolerance: tol})
	if len(cmp.Inversions) != 0 {
		t.Errorf("a step 0.2 ms late with 1 ms of room: want no inversion, got %v", cmp.Inversions)
	}
}
