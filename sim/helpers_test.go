package sim

import (
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

var (
	clientAddr = netip.MustParseAddr("10.0.0.1")
	serverAddr = netip.MustParseAddr("10.0.0.2")
	serverAP   = netip.AddrPortFrom(serverAddr, 80)
)

// lab is a network with a recorder, usually a client and a server.
type lab struct {
	t   *testing.T
	n   *Network
	rec *trace.Recorder
}

// newLab creates a network with seed and a client (10.0.0.1) and a server
// (10.0.0.2) with the given profiles.
func newLab(t *testing.T, seed uint64, client, server tcp.Profile) *lab {
	t.Helper()
	l := newEmptyLab(t, seed)
	l.addHost("client", clientAddr, client)
	l.addHost("server", serverAddr, server)
	return l
}

func newLinuxLab(t *testing.T) *lab { return newLab(t, 1, tcp.Linux(), tcp.Linux()) }

func newEmptyLab(t *testing.T, seed uint64) *lab {
	t.Helper()
	n := New(Config{Seed: seed})
	rec := &trace.Recorder{}
	n.SetSink(rec.Sink())
	return &lab{t: t, n: n, rec: rec}
}

func (l *lab) addHost(name string, a netip.Addr, p tcp.Profile) *Host {
	l.t.Helper()
	h, err := l.n.AddHost(name, a, p)
	if err != nil {
		l.t.Fatalf("AddHost(%s): %v", name, err)
	}
	return h
}

// do runs a call and fails the test on an unknown host.
func (l *lab) do(host string, c tcp.Call) tcp.Result {
	l.t.Helper()
	r, err := l.n.Do(host, c)
	if err != nil {
		l.t.Fatalf("Do(%s, %v): %v", host, c, err)
	}
	return r
}

func (l *lab) socket(host string) tcp.FD {
	l.t.Helper()
	r := l.do(host, tcp.Call{Op: tcp.OpSocket})
	if r.Err != tcp.OK {
		l.t.Fatalf("socket on %s: %v", host, r.Err)
	}
	return tcp.FD(r.Ret)
}

// listen makes a listening socket on host:port.
func (l *lab) listen(host string, port uint16, backlog int) tcp.FD {
	l.t.Helper()
	fd := l.socket(host)
	r := l.do(host, tcp.Call{Op: tcp.OpListen, FD: fd, Port: port, Backlog: backlog})
	if r.Err != tcp.OK {
		l.t.Fatalf("listen on %s:%d: %v", host, port, r.Err)
	}
	return fd
}

// connect starts a blocking connect from host to dst.
func (l *lab) connect(host string, dst netip.AddrPort) (tcp.FD, tcp.Result) {
	l.t.Helper()
	fd := l.socket(host)
	r := l.do(host, tcp.Call{Op: tcp.OpConnect, FD: fd, Addr: dst})
	return fd, r
}

func (l *lab) addRule(r Rule) int {
	l.t.Helper()
	id, err := l.n.AddRule(r)
	if err != nil {
		l.t.Fatalf("AddRule(%s): %v", r.Summary(), err)
	}
	return id
}

// packets returns the packet events seen at host in direction dir whose
// segment satisfies keep (nil keeps all).
func (l *lab) packets(host string, dir trace.Dir, keep func(*wire.Segment) bool) []trace.Event {
	var out []trace.Event
	for _, e := range l.rec.Events {
		if e.Kind != trace.KindPacket || e.Host != host || e.Packet.Dir != dir {
			continue
		}
		if keep != nil && !keep(&e.Packet.Segment) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// calls returns the completed (non-pending) call events of op on host.
func (l *lab) calls(host, op string) []trace.Event {
	var out []trace.Event
	for _, e := range l.rec.Events {
		if e.Kind == trace.KindCall && e.Host == host && e.Call.Op == op && !e.Call.Pending {
			out = append(out, e)
		}
	}
	return out
}

// states returns the state events on host.
func (l *lab) states(host string) []trace.Event {
	var out []trace.Event
	for _, e := range l.rec.Events {
		if e.Kind == trace.KindState && e.Host == host {
			out = append(out, e)
		}
	}
	return out
}

// dump logs every event but counters, for failures.
func (l *lab) dump() {
	l.t.Helper()
	var b strings.Builder
	for _, e := range l.rec.Events {
		if e.Kind == trace.KindCounter {
			continue
		}
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	l.t.Log("trace:\n" + b.String())
}

// checkBugs fails when an engine caught an inconsistency in itself.
func (l *lab) checkBugs() {
	l.t.Helper()
	for _, h := range l.n.Hosts() {
		if b := h.Stack.Bugs(); len(b) > 0 {
			l.t.Errorf("engine bugs on %s: %v", h.Name, b)
		}
	}
}

func isFlags(f wire.Flags) func(*wire.Segment) bool {
	return func(s *wire.Segment) bool { return s.Flags == f }
}

func hasData(s *wire.Segment) bool { return len(s.Payload) > 0 }

func times(evs []trace.Event) []time.Duration {
	out := make([]time.Duration, len(evs))
	for i, e := range evs {
		out[i] = e.At
	}
	return out
}

func verdicts(evs []trace.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Packet.Verdict
	}
	return out
}

// distinct removes consecutive repeats.
func distinct(ts []time.Duration) []time.Duration {
	var out []time.Duration
	for i, t := range ts {
		if i == 0 || t != ts[i-1] {
			out = append(out, t)
		}
	}
	return out
}

func secs(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, s := range v {
		out[i] = time.Duration(math.Round(s*1e6)) * time.Microsecond
	}
	return out
}

// plus adds d to every time.
func plus(ts []time.Duration, d time.Duration) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t + d
	}
	return out
}

func eqDur(a, b []time.Duration) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func counter(t *testing.T, n *Network, host, name string) int64 {
	t.Helper()
	cs, err := n.Counters(host)
	if err != nil {
		t.Fatalf("Counters(%s): %v", host, err)
	}
	for _, c := range cs {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("no counter %q on %s", name, host)
	return 0
}

// checkTaps verifies the capture model over a whole trace: every packet
// that left a host on the wire towards an owned address arrives at its
// owner's tap with the same ID and segment, exactly once, not earlier than
// it left; every packet seen on the wire at a receiver was sent by someone
// with that ID; IDs are never shared by two different sends.
func checkTaps(t *testing.T, n *Network, evs []trace.Event) {
	t.Helper()
	outs := map[uint64]trace.Event{}
	ins := map[uint64][]trace.Event{}
	for _, e := range evs {
		if e.Kind != trace.KindPacket {
			continue
		}
		p := e.Packet
		if p.Dir == trace.Out {
			if o, dup := outs[p.ID]; dup {
				t.Errorf("packet ID %d sent twice: %s and %s", p.ID, o.String(), e.String())
			}
			outs[p.ID] = e
			if e.Host != hostOwning(n, p.Segment.Src) && !p.Crafted && !p.Segment.Src.IsLoopback() {
				t.Errorf("stack packet sent by %s with a source it does not own: %s", e.Host, e.String())
			}
		} else if p.OnWire {
			ins[p.ID] = append(ins[p.ID], e)
		}
	}
	for id, o := range outs {
		p := o.Packet
		got := ins[id]
		owner := hostOwning(n, p.Segment.Dst)
		if p.Segment.Dst.IsLoopback() {
			owner = o.Host // the sender's own loopback interface
		}
		switch {
		case !p.OnWire || owner == "":
			if len(got) != 0 {
				t.Errorf("packet %s arrived although it never left or has no destination: %s", o.String(), got[0].String())
			}
			if p.OnWire && p.Lost == "" {
				t.Errorf("packet to an unowned address not marked Lost: %s", o.String())
			}
		default:
			if p.Lost != "" {
				t.Errorf("packet to an owned address marked Lost: %s", o.String())
			}
			if len(got) != 1 {
				t.Errorf("packet %s seen %d times at the receiver", o.String(), len(got))
				continue
			}
			in := got[0]
			if in.Host != owner {
				t.Errorf("packet %s arrived at %s, not %s", o.String(), in.Host, owner)
			}
			if in.At < o.At {
				t.Errorf("packet %s arrived before it left: %s", o.String(), in.String())
			}
			if !reflect.DeepEqual(in.Packet.Segment, p.Segment) {
				t.Errorf("packet %d changed on the wire:\n out %s\n in  %s", id, p.Segment.String(), in.Packet.Segment.String())
			}
			if in.Packet.Crafted != p.Crafted {
				t.Errorf("packet %d: Crafted %v at sender, %v at receiver", id, p.Crafted, in.Packet.Crafted)
			}
		}
	}
	for id, in := range ins {
		if _, ok := outs[id]; !ok {
			t.Errorf("packet seen on the wire at a receiver but never sent: %s", in[0].String())
		}
	}
}

func hostOwning(n *Network, a netip.Addr) string {
	for _, h := range n.Hosts() {
		if h.Addr == a {
			return h.Name
		}
	}
	return ""
}

// checkSeqs verifies event sequence numbers and time order.
func checkSeqs(t *testing.T, evs []trace.Event) {
	t.Helper()
	for i, e := range evs {
		if e.Seq != i+1 {
			t.Errorf("event %d has Seq %d: %s", i, e.Seq, e.String())
			return
		}
		if i > 0 && e.At < evs[i-1].At {
			t.Errorf("time goes backwards at event %d: %s after %s", i, e.String(), evs[i-1].String())
			return
		}
	}
}
