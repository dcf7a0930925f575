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

const ms = time.Millisecond

// timed is one run for the timing tests: the client's states, a close
// call, and the steps' times.
type timed struct {
	states []struct {
		at       time.Duration
		from, to string
	}
	closeAt time.Duration
	steps   []scenario.StepTime
}

// side numbers the events as a runner does and places each step before
// the first event at or after its start.
func (r timed) side() Side {
	l, rm := netip.AddrPortFrom(cli, 41000), netip.AddrPortFrom(srv, 80)
	var ev []trace.Event
	for _, s := range r.states {
		ev = append(ev, trace.Event{At: s.at, Host: "client", Kind: trace.KindState, Local: l, Remote: rm, Sock: 1,
			State: &trace.StateChange{From: s.from, To: s.to}})
	}
	ev = append(ev, trace.Event{At: r.closeAt, Host: "client", Kind: trace.KindCall, Call: &trace.Call{ID: 1, Op: "close", Text: "close(3)"}})
	// Events in time order, a call before the state change it makes.
	for i := 1; i < len(ev); i++ {
		for j := i; j > 0 && (ev[j].At < ev[j-1].At || ev[j].At == ev[j-1].At && ev[j].Kind == trace.KindCall); j-- {
			ev[j], ev[j-1] = ev[j-1], ev[j]
		}
	}
	steps := append([]scenario.StepTime(nil), r.steps...)
	for i := range ev {
		ev[i].Seq = i + 1
	}
	for k := range steps {
		for i := range ev {
			if ev[i].At < steps[k].Start {
				steps[k].Seq = i + 1
			}
		}
	}
	return Side{Events: ev, Result: &scenario.Result{Steps: steps, Counters: map[string][]trace.Counter{}}}
}

// tsc is the script the timing tests stand for: connect (line 3), a
// wait (line 4), close (line 5).
var tsc = &scenario.Scenario{Name: "t", Hosts: sc.Hosts, Steps: []scenario.Step{
	{Kind: scenario.StepCall, Pos: scenario.Pos{Line: 3}}, {Kind: scenario.StepAfter, Pos: scenario.Pos{Line: 4}},
	{Kind: scenario.StepCall, Pos: scenario.Pos{Line: 5}}}}

func step(line int, start, due time.Duration) scenario.StepTime {
	return scenario.StepTime{Pos: scenario.Pos{Line: line}, Start: start, Due: due}
}

// base: connect at time zero (line 3), established 2 ms later, close at
// 200 ms (line 5), FIN_WAIT1, then TIME_WAIT 2 ms later.
func base(shift, closeLate, finLate time.Duration) timed {
	var r timed
	add := func(at time.Duration, from, to string) {
		r.states = append(r.states, struct {
			at       time.Duration
			from, to string
		}{at, from, to})
	}
	add(shift, "CLOSED", "SYN_SENT")
	add(shift+2*ms, "SYN_SENT", "ESTABLISHED")
	c := 200*ms + closeLate
	add(c, "ESTABLISHED", "FIN_WAIT1")
	add(c+2*ms+finLate, "FIN_WAIT1", "TIME_WAIT")
	r.closeAt = c
	r.steps = []scenario.StepTime{step(3, shift, shift), step(4, shift, shift), step(5, c, 200*ms)}
	return r
}

// A kernel run whose first step came 60 ms after time zero (the lab's
// start) agrees: every time is measured from its step, and the step's own
// effects need no excuse.
func TestTimingStartOffsetDoesNotCount(t *testing.T) {
	sim := base(0, 0, 0).side()
	k := base(60*ms, 0, 0)
	k.steps[0].Due, k.steps[1].Due = 0, 0 // started late
	c := Compare(tsc, sim, k.side(), Config{Tolerance: tol})
	if len(c.Differences) != 0 || len(c.Late) != 0 || c.Timings != 6 {
		t.Fatalf("want agreement with all 6 timings compared, got %v, late %v, %d timings", c.Differences, c.Late, c.Timings)
	}
}

// A step the harness started 100 ms late: its own effects agree measured
// from its start; a timer of the step before, which fires after it, is
// off from its start but on time from when the script wanted it: left out
// and reported. The same gap with the step on time is TCP's.
func TestTimingLateStep(t *testing.T) {
	mk := func(closeLate, timerLate time.Duration) timed {
		r := base(0, closeLate, 0)
		// TIME_WAIT here stands for an item of a timer the connect
		// armed: 150 ms after the close was due.
		r.states[3].at = 350*ms + timerLate
		return r
	}
	sim := mk(0, 0).side()
	c := Compare(tsc, sim, mk(100*ms, 0).side(), Config{Tolerance: tol})
	if len(c.Differences) != 0 {
		t.Fatalf("a late step: want no difference, got %v", c.Differences)
	}
	if len(c.Late) != 1 || c.Late[0].Line != 5 || c.Late[0].Skipped != 1 || c.Late[0].Late != 100*ms {
		t.Fatalf("want line 5, 100ms late, with the timer's item left out, got %v", c.Late)
	}
	if !strings.Contains(c.Late[0].String(), "step at line 5 started 100ms late: its timings are not compared (1)") {
		t.Errorf("late step reads %q", c.Late[0])
	}
	// The step on time, the timer 100 ms late: TCP's difference.
	c = Compare(tsc, sim, mk(0, 100*ms).side(), Config{Tolerance: tol})
	if len(c.Differences) != 1 || c.Differences[0].Aspect != AspectTiming || len(c.Late) != 0 {
		t.Fatalf("want one timing difference, got %v (late %v)", c.Differences, c.Late)
	}
	if d := c.Differences[0].Text; !strings.Contains(d, "TIME_WAIT at 0.350000s in the simulator, 0.450000s on the kernel; from the step at line 5: simulator +0.150000s, kernel +0.250000s (100ms apart, tolerance 94ms)") {
		t.Errorf("text %q", d)
	}
	if got := span(-100 * ms); got != "-0.100000s" {
		t.Errorf("a negative offset reads %q", got)
	}
}

// A timer armed by a late step fires after a later step that was on
// time: measured from its own step it is off by the lateness; measured
// from the late step it agrees, so it is the harness's.
func TestTimingExplainedByEarlierLateStep(t *testing.T) {
	mk := func(late time.Duration, k bool) timed {
		r := base(late, 0, 0)
		r.states[3].at = 250*ms + late // the connect's timer
		if k {
			r.steps[0].Due, r.steps[1].Due = 0, 0
		}
		return r
	}
	sim := mk(0, false).side()
	c := Compare(tsc, sim, mk(100*ms, true).side(), Config{Tolerance: tol})
	if len(c.Differences) != 0 {
		t.Fatalf("want no difference, got %v", c.Differences)
	}
	if len(c.Late) != 1 || c.Late[0].Line != 3 || c.Late[0].Skipped != 1 {
		t.Errorf("want line 3 late with its timer's item left out, got %v", c.Late)
	}
	// A lateness too small to account for the gap explains nothing.
	k := mk(25*ms, true)
	k.states[3].at += 200 * ms
	c = Compare(tsc, sim, k.side(), Config{Tolerance: tol})
	if len(c.Differences) != 1 || c.Differences[0].Aspect != AspectTiming {
		t.Errorf("a 25 ms late step and a timer 225 ms late: want a timing difference, got %v (late %v)", c.Differences, c.Late)
	}
}

// Segments sent and call returns are timed too.
func TestTimingPacketsAndCalls(t *testing.T) {
	a := run{port: 41000, isn: 1000, peer: 5000}
	k := a
	k.shift = 400 * ms
	ds := cmp(side(a), side(k))
	var aspects []string
	for _, d := range ds {
		if d.Aspect != AspectTiming {
			t.Errorf("want only timing differences, got %v", d)
		}
		aspects = append(aspects, strings.Fields(d.Text)[0])
	}
	if got := strings.Join(aspects, " "); got != "10.0.0.1:eph segment call" {
		t.Errorf("want a state, a segment and a call timing difference, got %q: %v", got, ds)
	}
}

// A behaviour of the known list is recognised in any scenario: a
// FIN_WAIT2 in passing (a behaviour of this test's own, since the engine
// now has it too), a kernel-only connection of a refused connect, and an
// ACK merged into the FIN with consistent bindings.
func TestBehavioursAnyScenario(t *testing.T) {
	known, err := KnownDifferences()
	if err != nil {
		t.Fatal(err)
	}
	own, err := ParseKnown("behaviour fin-wait2-in-passing states\n  simulator: TIME_WAIT\n  kernel: FIN_WAIT2; TIME_WAIT\n  within: 1ms\n  reason: the test's own.\n")
	if err != nil {
		t.Fatal(err)
	}
	known = append(own, known...)
	cfg := Config{Tolerance: tol, Known: known}
	c := Compare(sc, side(run{port: 41000, isn: 1, peer: 2}), side(run{port: 42000, isn: 9, peer: 7, finWait2: true}), cfg)
	if len(c.Differences) != 1 || c.Differences[0].Known == nil || c.Differences[0].Known.Name != "fin-wait2-in-passing" {
		t.Fatalf("want the fin-wait2-in-passing behaviour, got %v", c.Differences)
	}
	if v, _ := Verdict(known, "someones-file", c.Differences); v != VerdictKnown {
		t.Errorf("verdict %s in a user's scenario", v)
	}
	// Not at the same instant: not that behaviour.
	late := side(run{port: 42000, isn: 9, peer: 7, finWait2: true})
	for i, e := range late.Events {
		if e.Kind == trace.KindState && e.State.To == "TIME_WAIT" {
			late.Events[i].At += 300 * ms
		}
	}
	c = Compare(sc, side(run{port: 41000, isn: 1, peer: 2}), late, cfg)
	if v, _ := Verdict(known, "someones-file", c.Differences); v != VerdictDiffers {
		t.Errorf("FIN_WAIT2 300 ms before TIME_WAIT: verdict %s, want %s (%v)", v, VerdictDiffers, c.Differences)
	}

	// A connect refused with EADDRNOTAVAIL: a kernel-only connection.
	l, rm := netip.AddrPortFrom(cli, 5555), netip.AddrPortFrom(srv, 80)
	refused := func(at time.Duration, from, to string) trace.Event {
		return trace.Event{At: at, Host: "client", Kind: trace.KindState, Sock: 9, Local: l, Remote: rm, State: &trace.StateChange{From: from, To: to}}
	}
	k := side(run{port: 41000, isn: 1, peer: 2})
	k.Events = append(k.Events, refused(3*time.Second, "CLOSED", "SYN_SENT"), refused(3*time.Second+10*time.Microsecond, "SYN_SENT", "CLOSED"))
	c = Compare(sc, side(run{port: 41000, isn: 1, peer: 2}), k, cfg)
	if len(c.Differences) != 1 || c.Differences[0].Known == nil || c.Differences[0].Known.Name != "connect-refused-after-syn-sent" {
		t.Fatalf("want the connect-refused-after-syn-sent behaviour, got %v", c.Differences)
	}

	// The server's ACK of the FIN merged into its own FIN.
	srvSide := func(merged bool, ack wire.Seq) Side {
		sl, sr := netip.AddrPortFrom(srv, 80), netip.AddrPortFrom(cli, 41000)
		pk := func(at time.Duration, f wire.Flags, seq, ack wire.Seq) trace.Event {
			return trace.Event{At: at, Host: "server", Kind: trace.KindPacket, Local: sl, Remote: sr, Packet: &trace.Packet{Dir: trace.Out, OnWire: true,
				Segment: wire.Segment{Src: srv, Dst: cli, SrcPort: 80, DstPort: 41000, Flags: f, Seq: seq, Ack: ack}}}
		}
		in := func(at time.Duration, f wire.Flags, seq, ack wire.Seq) trace.Event {
			return trace.Event{At: at, Host: "server", Kind: trace.KindPacket, Local: sl, Remote: sr, Packet: &trace.Packet{Dir: trace.In, OnWire: true,
				Segment: wire.Segment{Src: cli, Dst: srv, SrcPort: 41000, DstPort: 80, Flags: f, Seq: seq, Ack: ack}}}
		}
		ev := []trace.Event{in(0, wire.SYN, 100, 0), pk(ms, wire.SYN|wire.ACK, 500, 101), in(2*ms, wire.FIN|wire.ACK, 101, 501)}
		if !merged {
			ev = append(ev, pk(3*ms, wire.ACK, 501, 102))
		}
		return Side{Events: append(ev, pk(3*ms, wire.FIN|wire.ACK, 501, ack)), Result: &scenario.Result{}}
	}
	c = Compare(sc, srvSide(false, 102), srvSide(true, 102), cfg)
	if len(c.Differences) != 1 || c.Differences[0].Known == nil || c.Differences[0].Known.Name != "ack-merged-into-fin" {
		t.Fatalf("want the ack-merged-into-fin behaviour, got %v", c.Differences)
	}
	// A FIN that acknowledges something else is not that behaviour.
	c = Compare(sc, srvSide(false, 102), srvSide(true, 103), cfg)
	if len(c.Differences) != 1 || c.Differences[0].Known != nil {
		t.Fatalf("ack 2 then FIN ack 3: want an unexplained difference, got %v", c.Differences)
	}
}

func TestParseBehaviours(t *testing.T) {
	k, err := ParseKnown("behaviour b states\n  simulator: A; B x\n  kernel: -\n  within: 2ms\n  reason: because\n   it is so.\nsc * states why\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != 2 || !k[0].Behaviour() || len(k[0].Sim) != 2 || len(k[0].Sim[1]) != 2 || len(k[0].Kernel) != 0 || k[0].Within != 2*ms ||
		k[0].Reason != "because it is so." || k[1].Behaviour() {
		t.Fatalf("got %+v", k)
	}
	for _, bad := range []string{
		"behaviour b states\n  simulator: A\n  reason: r\n",                                                                      // no kernel side
		"behaviour b states\n  simulator: -\n  kernel: -\n  reason: r\n",                                                         // both empty
		"behaviour b calls\n  simulator: A\n  kernel: B\n  reason: r\n",                                                          // not a pattern aspect
		"behaviour b states\n  simulator: A\n  kernel: B\n",                                                                      // no reason
		"behaviour b states\n  simulator: A\n  kernel: B\n  within: soon\n",                                                      // bad duration
		"behaviour b states\n  simulator: A\n  kernel: B\n  what: x\n",                                                           // unknown field
		"behaviour b states\n simulator: A\n kernel: B\n reason: r\nbehaviour b states\n simulator: A\n kernel: B\n reason: r\n", // twice
	} {
		if _, err := ParseKnown(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}
