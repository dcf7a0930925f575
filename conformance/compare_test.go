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

var (
	cli = netip.MustParseAddr("10.0.0.1")
	srv = netip.MustParseAddr("10.0.0.2")
)

// run builds a client's view of one connection: the handshake, a FIN
// exchange, with the given ephemeral port and ISNs, and a close call.
type run struct {
	port      uint16
	isn, peer wire.Seq
	finWait2  bool          // pass through FIN_WAIT2 (Linux) or not
	shift     time.Duration // added to every time
	extraFIN  bool          // a second FIN (a tail loss probe)
	closeRet  int
	counter   int64
}

func (r run) events() []trace.Event {
	l := netip.AddrPortFrom(cli, r.port)
	rm := netip.AddrPortFrom(srv, 80)
	ms := func(n int) time.Duration { return time.Duration(n)*time.Millisecond + r.shift }
	st := func(at time.Duration, from, to string) trace.Event {
		return trace.Event{At: at, Host: "client", Kind: trace.KindState, Local: l, Remote: rm,
			State: &trace.StateChange{From: from, To: to}}
	}
	pk := func(at time.Duration, f wire.Flags, seq, ack wire.Seq) trace.Event {
		return trace.Event{At: at, Host: "client", Kind: trace.KindPacket, Packet: &trace.Packet{Dir: trace.Out, OnWire: true,
			Segment: wire.Segment{Src: cli, Dst: srv, SrcPort: r.port, DstPort: 80, Flags: f, Seq: seq, Ack: ack}}}
	}
	in := func(at time.Duration, f wire.Flags, seq, ack wire.Seq) trace.Event {
		return trace.Event{At: at, Host: "client", Kind: trace.KindPacket, Packet: &trace.Packet{Dir: trace.In, OnWire: true,
			Segment: wire.Segment{Src: srv, Dst: cli, SrcPort: 80, DstPort: r.port, Flags: f, Seq: seq, Ack: ack}}}
	}
	ev := []trace.Event{
		st(ms(0), "CLOSED", "SYN_SENT"),
		pk(ms(0), wire.SYN, r.isn, 0),
		in(ms(2), wire.SYN|wire.ACK, r.peer, r.isn+1),
		st(ms(2), "SYN_SENT", "ESTABLISHED"),
		pk(ms(2), wire.ACK, r.isn+1, r.peer+1),
		{At: ms(1000), Host: "client", Kind: trace.KindCall, Call: &trace.Call{ID: 1, Op: "close", Text: "close(3)", Ret: r.closeRet}},
		st(ms(1000), "ESTABLISHED", "FIN_WAIT1"),
		pk(ms(1000), wire.FIN|wire.ACK, r.isn+1, r.peer+1),
	}
	if r.extraFIN {
		ev = append(ev, pk(ms(1204), wire.FIN|wire.ACK, r.isn+1, r.peer+1))
	}
	if r.finWait2 {
		ev = append(ev, st(ms(1002), "FIN_WAIT1", "FIN_WAIT2"))
	}
	ev = append(ev, st(ms(1002), pick(r.finWait2, "FIN_WAIT2", "FIN_WAIT1"), "TIME_WAIT"),
		pk(ms(1002), wire.ACK, r.isn+2, r.peer+2))
	return ev
}

func pick(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

func side(r run) Side {
	res := &scenario.Result{End: time.Second, Counters: map[string][]trace.Counter{}}
	if r.counter != 0 {
		res.Counters["client"] = []trace.Counter{{Name: "RetransSegs", Value: r.counter}}
	}
	return Side{Events: r.events(), Result: res}
}

var sc = &scenario.Scenario{Name: "t", Hosts: []scenario.HostDecl{{Name: "client", Addr: cli}, {Name: "server", Addr: srv}},
	Steps: []scenario.Step{{Kind: scenario.StepExpect, Cond: &scenario.Cond{Kind: scenario.CondCounter, Host: "client", Counter: "RetransSegs"}}}}

func tol(d time.Duration) time.Duration { return 50*time.Millisecond + d/8 }

// cmp compares with the test tolerance and no known differences.
func cmp(a, b Side) []Difference {
	return Compare(sc, a, b, Config{Tolerance: tol}).Differences
}

func TestCompareAgreesAcrossPortsAndISNs(t *testing.T) {
	a := run{port: 41000, isn: 1000, peer: 5000}
	b := run{port: 55555, isn: 0xfffffff0, peer: 77, shift: 3 * time.Millisecond}
	if ds := cmp(side(a), side(b)); len(ds) != 0 {
		t.Fatalf("same run with other ports, ISNs and a 3 ms shift: want no difference, got %v", ds)
	}
}

func TestCompareFindsEachAspect(t *testing.T) {
	base := run{port: 41000, isn: 1000, peer: 5000}
	cases := []struct {
		name   string
		change func(*run)
		aspect string
		text   string
	}{
		{"states", func(r *run) { r.finWait2 = true }, AspectStates, "states #5: simulator TIME_WAIT at 1.002000s, kernel FIN_WAIT2"},
		{"packets", func(r *run) { r.extraFIN = true }, AspectPackets, "segments sent #4: simulator [.] seq 2 ack 2 len 0"},
		{"calls", func(r *run) { r.closeRet = -1 }, AspectCalls, "close(3): simulator close = 0"},
		{"counters", func(r *run) { r.counter = 1 }, AspectCounters, "RetransSegs: simulator 0, kernel 1"},
	}
	for _, c := range cases {
		k := base
		c.change(&k)
		ds := cmp(side(base), side(k))
		if len(ds) != 1 {
			t.Errorf("%s: want exactly one difference, got %v", c.name, ds)
			continue
		}
		if ds[0].Aspect != c.aspect || ds[0].Host != "client" || !strings.Contains(ds[0].Text, c.text) {
			t.Errorf("%s: got %q (aspect %s), want aspect %s with %q", c.name, ds[0].Text, ds[0].Aspect, c.aspect, c.text)
		}
	}
}

func TestCompareMissingConnection(t *testing.T) {
	a := side(run{port: 41000, isn: 1, peer: 2})
	b := Side{Result: &scenario.Result{}}
	ds := cmp(a, b)
	if len(ds) < 2 || !strings.Contains(ds[0].Text, "only the simulator has this connection") {
		t.Fatalf("got %v", ds)
	}
}

func TestCompareRunError(t *testing.T) {
	ds := cmp(side(run{}), Side{Err: errTest("refused")})
	if len(ds) != 1 || ds[0].Aspect != AspectRun || ds[0].Text != "kernel: refused" {
		t.Fatalf("got %v", ds)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

func TestParseKnown(t *testing.T) {
	k, err := ParseKnown("# c\nfin-ack-direct client states Linux passes\n   through FIN_WAIT2.\n\nx * * any\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != 2 || k[0].Reason != "Linux passes through FIN_WAIT2." || k[0].Line != 2 || k[1].Host != "*" {
		t.Fatalf("got %+v", k)
	}
	for _, bad := range []string{"a b c\n", "a b nosuch reason\n", "  lonely continuation\n"} {
		if _, err := ParseKnown(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	d := Difference{Host: "client", Aspect: AspectStates}
	if Explain(k, "fin-ack-direct", d) == nil || Explain(k, "fin-ack-direct", Difference{Host: "server", Aspect: AspectStates}) != nil {
		t.Error("Explain matches the wrong entries")
	}
	if v, first := Verdict(k, "x", []Difference{d}); v != VerdictKnown || first == nil {
		t.Errorf("verdict %s", v)
	}
	if v, _ := Verdict(k, "other", []Difference{d}); v != VerdictDiffers {
		t.Errorf("verdict %s", v)
	}
	if v, _ := Verdict(k, "other", nil); v != VerdictAgrees {
		t.Errorf("verdict %s", v)
	}
}

// Every entry of the built-in list names a built-in scenario and one of
// its hosts, and gives a reason.
func TestKnownListNamesRealScenarios(t *testing.T) {
	known, err := KnownDifferences()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range known {
		if k.Behaviour() {
			if len(k.Reason) < 20 {
				t.Errorf("known.txt:%d: the reason %q explains nothing", k.Line, k.Reason)
			}
			continue
		}
		sc, err := scenario.Builtin(k.Scenario)
		if err != nil {
			t.Errorf("known.txt:%d: %v", k.Line, err)
			continue
		}
		if k.Host != "*" && sc.Host(k.Host) == nil {
			t.Errorf("known.txt:%d: scenario %s has no host %s", k.Line, k.Scenario, k.Host)
		}
		if len(k.Reason) < 20 {
			t.Errorf("known.txt:%d: the reason %q explains nothing", k.Line, k.Reason)
		}
	}
}

// Two connections from one local port to two servers: each direction of
// each connection has its own base, so both read "seq 1" after their SYN.
func TestRelativeNumbersPerConnection(t *testing.T) {
	var ev []trace.Event
	for i, r := range []run{{port: 40000, isn: 10, peer: 900}, {port: 40000, isn: 5000, peer: 77}} {
		for _, e := range r.events() {
			e.At += time.Duration(i) * time.Hour
			if i == 1 && e.Kind == trace.KindPacket {
				p := *e.Packet
				if p.Segment.DstPort == 80 {
					p.Segment.DstPort = 81
				} else {
					p.Segment.SrcPort = 81
				}
				e.Packet = &p
			}
			ev = append(ev, e)
		}
	}
	d := digest(ev, "client")
	if len(d.packets) != 2 {
		t.Fatalf("want 2 connections, got %d", len(d.packets))
	}
	for _, c := range d.packets {
		if got := c.items[1].text; got != "[.] seq 1 ack 1 len 0" {
			t.Errorf("%s: second segment %q", c.key, got)
		}
	}
	if d.packets[1].key != "10.0.0.1:eph > 10.0.0.2:81" {
		t.Errorf("second connection's key %q", d.packets[1].key)
	}
}

// The same 4-tuple used again after a FIN is a second connection, and a
// segment the host's own firewall dropped before the wire is not compared.
func TestReusedTupleAndDroppedOnTheWayOut(t *testing.T) {
	var ev []trace.Event
	for i, r := range []run{{port: 4444, isn: 10, peer: 900}, {port: 4444, isn: 5000, peer: 77}} {
		for _, e := range r.events() {
			e.At += time.Duration(i) * time.Hour
			if i == 1 {
				e.Sock = 2
			}
			ev = append(ev, e)
		}
	}
	dropped := ev[1]
	p := *dropped.Packet
	p.OnWire = false
	dropped.Packet = &p
	ev = append(ev[:2], append([]trace.Event{dropped}, ev[2:]...)...)
	d := digest(ev, "client")
	if len(d.packets) != 2 || len(d.states) != 2 {
		t.Fatalf("want 2 connections, got %d with segments and %d with states", len(d.packets), len(d.states))
	}
	if n := len(d.packets[0].items); n != 4 {
		t.Errorf("first connection: %d segments, want 4 (the dropped copy left out)", n)
	}
	if d.packets[1].key != "10.0.0.1:4444 > 10.0.0.2:80 #2" {
		t.Errorf("second connection's key %q", d.packets[1].key)
	}
}
