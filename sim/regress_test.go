package sim

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Regression tests for bugs found while writing this suite; each failed at
// commit 11ef80e and passes since 463e89f.

// TestHostClockFollowsRunFor: RunFor(2ms) ends exactly at the instant the
// client handles the SYN-ACK; the server last ran at 1 ms. A call made now
// on the server must be stamped 2 ms, and every host's clock must be the
// network's. (Before: RunUntil advanced hosts only when t > n.now, so the
// server stayed at 1 ms.)
func TestHostClockFollowsRunFor(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.connect("client", serverAP)
	l.n.RunFor(2 * time.Millisecond)
	if l.n.Now() != 2*time.Millisecond {
		t.Fatalf("Now = %v", l.n.Now())
	}
	for _, h := range l.n.Hosts() {
		if h.Stack.Now() != l.n.Now() {
			t.Errorf("after RunFor host %s is at %v, the network at %v", h.Name, h.Stack.Now(), l.n.Now())
		}
	}
	r := l.do("server", tcp.Call{Op: tcp.OpSocket})
	if r.Started != l.n.Now() {
		t.Errorf("socket() on the server started at %v, network time is %v", r.Started, l.n.Now())
	}
	evs := l.rec.Events
	if last := evs[len(evs)-1]; last.At != l.n.Now() {
		t.Errorf("event stamped %v at network time %v: %s", last.At, l.n.Now(), last.String())
	}
}

// TestStaleHostClockCannotSendTimeBackwards: a host nobody touched since 0
// connects after RunUntilCond stopped at 3.002 s. Its SYN timer must be
// armed from 3.002 s. (Before: it was armed at 0 + 1 s, the next Step ran
// at "1 s", the network clock went backwards and the host retransmitted a
// SYN that had been answered.)
func TestStaleHostClockCannotSendTimeBackwards(t *testing.T) {
	l := newLinuxLab(t)
	l.addHost("other", netip.MustParseAddr("10.0.0.3"), tcp.Linux())
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "server", Dir: trace.In, FlagsMask: 0xff, FlagsValue: wire.SYN, Count: 2, Action: Drop})
	l.connect("client", serverAP)
	if !l.n.RunUntilCond(func() bool { return len(l.calls("client", "connect")) == 1 }, time.Minute) {
		t.Fatal("client never connected")
	}
	start := l.n.Now()
	if start != 3002*time.Millisecond {
		t.Fatalf("client connected at %v", start)
	}
	l.connect("other", serverAP)
	for i := range 5 {
		if !l.n.Step() {
			break
		}
		if l.n.Now() < start {
			t.Errorf("step %d ran at %v, before the network time %v it started from", i, l.n.Now(), start)
		}
	}
	l.n.RunFor(time.Second)
	c := l.calls("other", "connect")
	if len(c) != 1 || c[0].At != start+2*time.Millisecond || c[0].Call.Started != start {
		t.Errorf("other's connect: %v, want started at %v and done at %v", c, start, start+2*time.Millisecond)
	}
	if n := len(l.packets("other", trace.Out, isFlags(wire.SYN))); n != 1 {
		t.Errorf("other sent %d SYNs, want 1", n)
	}
	checkSeqs(t, l.rec.Events)
	checkTaps(t, l.n, l.rec.Events)
}

// TestSnapshotTimerLeftAfterRunUntilCond: after RunUntilCond stops at an
// instant where the client did nothing, ss must still show the time left
// from the network's clock. (Before: 2 s instead of 0.5 s.)
func TestSnapshotTimerLeftAfterRunUntilCond(t *testing.T) {
	l := newLinuxLab(t)
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Drop})
	l.connect("client", serverAP) // SYNs at 0, 1, 3 s
	// Something unrelated happens at 2.5 s.
	seg := wire.Segment{Src: serverAddr, Dst: netip.MustParseAddr("10.0.0.99"), SrcPort: 1, DstPort: 2, Flags: wire.SYN}
	l.n.InjectAt(2500*time.Millisecond, "server", seg)
	ok := l.n.RunUntilCond(func() bool { return len(l.packets("server", trace.Out, nil)) == 1 }, time.Minute)
	if !ok || l.n.Now() != 2500*time.Millisecond {
		t.Fatalf("RunUntilCond: %v at %v", ok, l.n.Now())
	}
	cs, _ := l.n.Snapshot("client")
	if len(cs) != 1 || cs[0].TimerLeft != 500*time.Millisecond {
		t.Errorf("client at 2.5 s: %+v, want timer left 500ms (next SYN at 3 s)", cs)
	}
}

// TestValidateRejectsRulesThatNeverWork: Validate reports "a rule that can
// never work". (Before, it accepted a NaN probability, which then acted on
// every packet and did not show in Summary; a source and a destination of
// two families, which no packet has; and a direction other than In and
// Out, which Summary printed as "in" but which never matched.)
func TestValidateRejectsRulesThatNeverWork(t *testing.T) {
	bad := map[string]Rule{
		"NaN probability": {Host: "h", Probability: math.NaN()},
		"two families":    {Host: "h", SrcAddr: netip.MustParsePrefix("2001:db8::/32"), DstAddr: netip.MustParsePrefix("10.0.0.0/8")},
		"direction 2":     {Host: "h", Dir: trace.Dir(2)},
	}
	for name, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("%s: Validate(%q) = nil, want an error", name, r.Summary())
		}
	}
	l := newLinuxLab(t)
	if _, err := l.n.AddRule(Rule{Host: "server", Dir: trace.Dir(2), Action: Drop}); err == nil {
		t.Errorf("AddRule accepted direction 2")
	}
	if _, err := l.n.AddRule(Rule{Host: "server", Probability: math.NaN(), Action: Drop}); err == nil {
		t.Errorf("AddRule accepted a NaN probability")
	}
	if len(l.n.Rules()) != 0 || len(l.rec.Events) != 0 {
		t.Errorf("refused rules left rules %v or events %v", l.n.Rules(), l.rec.Events)
	}
}

// TestInjectAtCopiesSegment: the packet that leaves is the segment as it
// was when InjectAt was called, whatever the caller does with its buffers
// afterwards. (Before: the payload slice was kept and sent as changed.)
func TestInjectAtCopiesSegment(t *testing.T) {
	l := newLinuxLab(t)
	buf := []byte("first")
	sack := []wire.SACKBlock{{Left: 1, Right: 2}}
	seg := wire.Segment{Src: clientAddr, Dst: netip.MustParseAddr("10.0.0.99"), SrcPort: 1, DstPort: 2,
		Flags: wire.PSH | wire.ACK, Payload: buf, Options: wire.Options{SACK: sack}}
	if err := l.n.InjectAt(time.Second, "client", seg); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXX")
	sack[0].Left = 99
	l.n.RunFor(2 * time.Second)
	out := l.packets("client", trace.Out, nil)
	if len(out) != 1 {
		t.Fatalf("%v", out)
	}
	s := out[0].Packet.Segment
	if string(s.Payload) != "first" {
		t.Errorf("injected payload %q, want \"first\" as it was when InjectAt was called", s.Payload)
	}
	if len(s.Options.SACK) != 1 || s.Options.SACK[0].Left != 1 {
		t.Errorf("injected SACK blocks %v, want [1-2]", s.Options.SACK)
	}
}

// TestLoopback: connect() to 127.0.0.1 reaches the host's own listener over
// its loopback interface (LoopbackDelay one way), as on Linux. (Before: the
// SYN was "lost: no host has address 127.0.0.1" and connect timed out.)
func TestLoopback(t *testing.T) {
	l := newLinuxLab(t)
	lfd := l.listen("server", 80, 5)
	fd, _ := l.connect("server", netip.MustParseAddrPort("127.0.0.1:80"))
	l.n.RunFor(time.Second)
	out := l.packets("server", trace.Out, isFlags(wire.SYN))
	in := l.packets("server", trace.In, isFlags(wire.SYN))
	if len(out) != 1 || len(in) != 1 {
		l.dump()
		t.Fatalf("loopback SYN out %v in %v", out, in)
	}
	if out[0].Packet.Lost != "" || in[0].Packet.ID != out[0].Packet.ID || in[0].At != LoopbackDelay {
		t.Errorf("loopback SYN: %s / %s", out[0].String(), in[0].String())
	}
	if s := out[0].Packet.Segment; s.Src != netip.MustParseAddr("127.0.0.1") || s.Dst != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("loopback SYN addresses %v > %v", s.Src, s.Dst)
	}
	c := l.calls("server", "connect")
	if len(c) != 1 || c[0].Call.Errno != "" || c[0].At != 2*LoopbackDelay {
		t.Fatalf("connect to 127.0.0.1:80 with a local listener: %v, want success after 2 x %v", c, LoopbackDelay)
	}
	// The client never sees any of it.
	if n := len(l.packets("client", trace.In, nil)); n != 0 {
		t.Errorf("client saw %d loopback packets", n)
	}
	a := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd, NonBlock: true})
	if a.Err != tcp.OK {
		t.Fatalf("accept: %v", a.Err)
	}
	l.do("server", tcp.Call{Op: tcp.OpWrite, FD: fd, Data: []byte("ping")})
	l.n.RunFor(time.Millisecond)
	r := l.do("server", tcp.Call{Op: tcp.OpRead, FD: tcp.FD(a.Ret), NonBlock: true})
	if string(r.Data) != "ping" {
		t.Errorf("read over loopback %q", r.Data)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}
