// Package conformance compares a scenario's run in tcplab's simulator with
// its run on the Linux kernel: per host, the states each connection went
// through, the segments the stack sent, the results of the application's
// calls, the counters the scenario names, and the timing of state changes.
// Differences that are understood are listed, each with its reason, in
// known.txt; the rest make `tcplab diff` fail.
package conformance

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Aspects of a run that are compared, in the order they are reported.
const (
	AspectRun      = "run"      // the scenario could not run on one backend
	AspectStates   = "states"   // a connection's sequence of states
	AspectPackets  = "packets"  // a connection's sequence of sent segments
	AspectCalls    = "calls"    // an application call's result or errno
	AspectCounters = "counters" // a counter the scenario names
	AspectTiming   = "timing"   // a state change's time, beyond the tolerance
)

// Aspects lists every aspect name.
var Aspects = []string{AspectRun, AspectStates, AspectPackets, AspectCalls, AspectCounters, AspectTiming}

// Side is one backend's run of a scenario.
type Side struct {
	Events []trace.Event
	Result *scenario.Result
	Err    error // the run failed to start or was refused
}

// Difference is one place where the two runs disagree.
type Difference struct {
	Host   string
	Aspect string
	Text   string        // what differs, with both values
	At     time.Duration // the simulator's time of the first differing item
}

func (d Difference) String() string {
	if d.Host == "" {
		return d.Aspect + ": " + d.Text
	}
	return d.Host + " " + d.Aspect + ": " + d.Text
}

// Compare returns every difference between the simulator's run and the
// kernel's, at most one per host and aspect (the first), in the order of
// Aspects. tol gives the kernel's timing tolerance for an expected time.
func Compare(sc *scenario.Scenario, sim, kern Side, tol func(time.Duration) time.Duration) []Difference {
	switch {
	case sim.Err != nil:
		return []Difference{{Aspect: AspectRun, Text: "simulator: " + sim.Err.Error()}}
	case kern.Err != nil:
		return []Difference{{Aspect: AspectRun, Text: "kernel: " + kern.Err.Error()}}
	}
	var out []Difference
	for _, h := range sc.Hosts {
		a, b := digest(sim.Events, h.Name), digest(kern.Events, h.Name)
		if d, ok := compareConns(h.Name, AspectStates, a.states, b.states, nil); ok {
			out = append(out, d)
		}
		if d, ok := compareConns(h.Name, AspectPackets, a.packets, b.packets, nil); ok {
			out = append(out, d)
		}
		if d, ok := compareCalls(h.Name, a, b); ok {
			out = append(out, d)
		}
		if d, ok := compareCounters(sc, h.Name, sim.Result, kern.Result); ok {
			out = append(out, d)
		}
		if d, ok := compareConns(h.Name, AspectTiming, a.states, b.states, tol); ok {
			out = append(out, d)
		}
	}
	slices.SortStableFunc(out, func(x, y Difference) int {
		return slices.Index(Aspects, x.Aspect) - slices.Index(Aspects, y.Aspect)
	})
	return out
}

// item is one element of a connection's history: a state reached or a
// segment sent, with its time.
type item struct {
	text string
	at   time.Duration
}

// conn is one connection's history on a host. Connections of the two
// runs are paired by their addresses with ephemeral ports masked, and by
// order of appearance among connections with the same masked addresses.
type conn struct {
	key   string
	items []item
}

type hostDigest struct {
	states  []conn
	packets []conn
	calls   map[uint64]trace.Event
	callIDs []uint64
}

// mask writes an address with an ephemeral port (where Linux and the
// simulator pick local ports for connect: ip_local_port_range's default
// is 32768-60999) as ADDR:eph, so that the two runs' ports compare equal.
func mask(ap netip.AddrPort) string {
	if !ap.IsValid() || ap.Port() == 0 {
		return "*"
	}
	if ap.Port() >= 32768 {
		return ap.Addr().String() + ":eph"
	}
	return ap.String()
}

// connTable numbers a host's connections. A connection is found by an
// identity (the socket for state changes, the 4-tuple for segments);
// forget lets a 4-tuple start a new connection when it is used again.
type connTable struct {
	byID  map[any]int
	seen  map[string]int
	conns []conn
}

func (t *connTable) forget(id any) { delete(t.byID, id) }

func (t *connTable) get(id any, local, remote netip.AddrPort) *conn {
	if t.byID == nil {
		t.byID, t.seen = map[any]int{}, map[string]int{}
	}
	if i, ok := t.byID[id]; ok {
		return &t.conns[i]
	}
	base := mask(local) + " > " + mask(remote)
	t.seen[base]++
	key := base
	if n := t.seen[base]; n > 1 {
		key = fmt.Sprintf("%s #%d", base, n)
	}
	t.byID[id] = len(t.conns)
	t.conns = append(t.conns, conn{key: key})
	return &t.conns[len(t.conns)-1]
}

// digest extracts one host's connections, segments and calls from a run.
func digest(events []trace.Event, host string) hostDigest {
	var st, pk connTable
	d := hostDigest{calls: map[uint64]trace.Event{}}
	isn := map[[2]netip.AddrPort]wire.Seq{} // per direction of a connection, its first sequence number
	ended := map[[2]netip.AddrPort]bool{}
	for _, e := range events {
		if e.Host != host {
			continue
		}
		switch e.Kind {
		case trace.KindState:
			c := st.get(e.Sock, e.Local, e.Remote)
			if len(c.items) == 0 {
				c.items = append(c.items, item{text: e.State.From, at: e.At})
			}
			c.items = append(c.items, item{text: e.State.To, at: e.At})
		case trace.KindPacket:
			p := e.Packet
			s := &p.Segment
			src := netip.AddrPortFrom(s.Src, s.SrcPort)
			dst := netip.AddrPortFrom(s.Dst, s.DstPort)
			// Either end's first sequence number is the base of its
			// relative numbers: this host's own as it sends, the peer's
			// as it arrives.
			fwd, rev := [2]netip.AddrPort{src, dst}, [2]netip.AddrPort{dst, src}
			if _, ok := isn[fwd]; !ok || s.Flags&wire.SYN != 0 {
				isn[fwd] = s.Seq
			}
			tuple := [2]netip.AddrPort{src, dst}
			if p.Dir == trace.In {
				tuple = rev
			}
			// A SYN on a 4-tuple whose connection has ended opens a
			// new connection on it (a reused port).
			if s.Flags&wire.SYN != 0 && ended[tuple] {
				pk.forget(tuple)
				ended[tuple] = false
			}
			if s.Flags&(wire.FIN|wire.RST) != 0 {
				ended[tuple] = true
			}
			// Only what left the host: Linux's capture cannot see a
			// segment the host's own firewall dropped on its way out.
			if p.Dir != trace.Out || p.Crafted || !p.OnWire {
				continue
			}
			// PSH is left out: it is advice to the receiver, and Linux
			// sets it on more segments than the end of a write (every
			// half window of a large one).
			text := fmt.Sprintf("[%s] seq %d", (s.Flags &^ wire.PSH).Short(), uint32(s.Seq-isn[fwd]))
			if s.Flags&wire.ACK != 0 {
				if base, ok := isn[rev]; ok {
					text += fmt.Sprintf(" ack %d", uint32(s.Ack-base))
				} else {
					text += " ack ?"
				}
			}
			text += fmt.Sprintf(" len %d", len(s.Payload))
			c := pk.get(tuple, src, dst)
			c.items = append(c.items, item{text: text, at: e.At})
		case trace.KindCall:
			if e.Call.Pending {
				continue
			}
			if _, ok := d.calls[e.Call.ID]; !ok {
				d.callIDs = append(d.callIDs, e.Call.ID)
			}
			d.calls[e.Call.ID] = e
		}
	}
	d.states, d.packets = st.conns, pk.conns
	return d
}

// compareConns pairs connections by key and compares their items. With
// tol nil it compares the items' texts; with tol it compares the times of
// items whose texts agree.
func compareConns(host, aspect string, a, b []conn, tol func(time.Duration) time.Duration) (Difference, bool) {
	bk := map[string]*conn{}
	for i := range b {
		bk[b[i].key] = &b[i]
	}
	what := "states"
	if aspect == AspectPackets {
		what = "segments sent"
	}
	var found []Difference
	for i := range a {
		ca := &a[i]
		cb := bk[ca.key]
		delete(bk, ca.key)
		if cb == nil {
			if tol == nil {
				found = append(found, Difference{Host: host, Aspect: aspect, At: ca.items[0].at,
					Text: fmt.Sprintf("%s: only the simulator has this connection (%s)", ca.key, joinItems(ca.items, 6))})
			}
			continue
		}
		n := min(len(ca.items), len(cb.items))
		before := len(found)
		for j := 0; j < n; j++ {
			x, y := ca.items[j], cb.items[j]
			if tol == nil && x.text != y.text {
				found = append(found, Difference{Host: host, Aspect: aspect, At: x.at,
					Text: fmt.Sprintf("%s: %s #%d: simulator %s at %ss, kernel %s at %ss", ca.key, what, j+1,
						x.text, trace.FormatTime(x.at), y.text, trace.FormatTime(y.at))})
				break
			}
			if tol != nil && x.text == y.text {
				if d := (x.at - y.at).Abs(); d > tol(x.at) {
					found = append(found, Difference{Host: host, Aspect: aspect, At: x.at,
						Text: fmt.Sprintf("%s: %s at %ss in the simulator, %ss on the kernel (%s apart, tolerance %s)", ca.key,
							x.text, trace.FormatTime(x.at), trace.FormatTime(y.at), d.Round(time.Microsecond), tol(x.at).Round(time.Millisecond))})
					break
				}
			}
			if tol != nil && x.text != y.text {
				break // the texts differ: the states aspect reports it
			}
		}
		if tol == nil && len(ca.items) != len(cb.items) && len(found) == before {
			long, who := ca, "simulator"
			if len(cb.items) > len(ca.items) {
				long, who = cb, "kernel"
			}
			x := long.items[n]
			found = append(found, Difference{Host: host, Aspect: aspect, At: x.at,
				Text: fmt.Sprintf("%s: %s #%d: only the %s has %s at %ss (simulator %d, kernel %d)", ca.key, what, n+1, who,
					x.text, trace.FormatTime(x.at), len(ca.items), len(cb.items))})
		}
	}
	if tol == nil {
		for i := range b {
			if cb := bk[b[i].key]; cb != nil {
				found = append(found, Difference{Host: host, Aspect: aspect, At: cb.items[0].at,
					Text: fmt.Sprintf("%s: only the kernel has this connection (%s)", cb.key, joinItems(cb.items, 6))})
			}
		}
	}
	if len(found) == 0 {
		return Difference{}, false
	}
	first := found[0]
	for _, d := range found[1:] {
		if d.At < first.At {
			first = d
		}
	}
	if len(found) > 1 {
		first.Text += fmt.Sprintf(" (and %d more connection(s) differ)", len(found)-1)
	}
	return first, true
}

func joinItems(items []item, max int) string {
	var s []string
	for i, it := range items {
		if i == max {
			s = append(s, "...")
			break
		}
		s = append(s, it.text)
	}
	return strings.Join(s, " ")
}

func callText(e trace.Event) string {
	c := e.Call
	if c.Errno != "" {
		return fmt.Sprintf("%s = %s", c.Op, c.Errno)
	}
	return fmt.Sprintf("%s = %d", c.Op, c.Ret)
}

// compareCalls pairs completed calls by ID (the runner numbers them in
// script order on both backends) and compares result and errno.
func compareCalls(host string, a, b hostDigest) (Difference, bool) {
	for _, id := range a.callIDs {
		x := a.calls[id]
		y, ok := b.calls[id]
		if !ok {
			return Difference{Host: host, Aspect: AspectCalls, At: x.At,
				Text: fmt.Sprintf("%s: simulator %s at %ss, kernel: never returned", x.Call.Text, callText(x), trace.FormatTime(x.At))}, true
		}
		if callText(x) != callText(y) {
			return Difference{Host: host, Aspect: AspectCalls, At: x.At,
				Text: fmt.Sprintf("%s: simulator %s at %ss, kernel %s at %ss", x.Call.Text, callText(x), trace.FormatTime(x.At),
					callText(y), trace.FormatTime(y.At))}, true
		}
	}
	for _, id := range b.callIDs {
		if _, ok := a.calls[id]; !ok {
			y := b.calls[id]
			return Difference{Host: host, Aspect: AspectCalls, At: y.At,
				Text: fmt.Sprintf("%s: kernel %s at %ss, simulator: never returned", y.Call.Text, callText(y), trace.FormatTime(y.At))}, true
		}
	}
	return Difference{}, false
}

// compareCounters compares, at the end of the runs, the counters the
// scenario's expectations name for the host.
func compareCounters(sc *scenario.Scenario, host string, a, b *scenario.Result) (Difference, bool) {
	var names []string
	for _, st := range sc.Steps {
		if st.Cond != nil && st.Cond.Kind == scenario.CondCounter && st.Cond.Host == host && !slices.Contains(names, st.Cond.Counter) {
			names = append(names, st.Cond.Counter)
		}
	}
	for _, n := range names {
		x, y := counterValue(a, host, n), counterValue(b, host, n)
		if x != y {
			return Difference{Host: host, Aspect: AspectCounters, At: a.End,
				Text: fmt.Sprintf("%s: simulator %d, kernel %d at the end", n, x, y)}, true
		}
	}
	return Difference{}, false
}

func counterValue(r *scenario.Result, host, name string) int64 {
	if r == nil {
		return 0
	}
	for _, c := range r.Counters[host] {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}
