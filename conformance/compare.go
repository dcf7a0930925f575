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
	// Conn is the connection (addresses, ephemeral ports masked), the
	// call or the counter that differs; Sim and Kernel are the items
	// that differ on each side ("" for none).
	Conn        string
	Sim, Kernel string
	// Known is the behaviour the comparison recognised in it, or nil.
	Known *Known
}

func (d Difference) String() string {
	if d.Host == "" {
		return d.Aspect + ": " + d.Text
	}
	return d.Host + " " + d.Aspect + ": " + d.Text
}

// Config tunes a comparison.
type Config struct {
	// Tolerance gives the kernel's timing tolerance for an item the
	// simulator has at time d (the longest a timer leading to it can
	// have run: the kernel's timer wheel rounds a timer up by up to an
	// eighth of its length).
	Tolerance func(d time.Duration) time.Duration
	// Known lists the documented differences; behaviours among them are
	// recognised while comparing.
	Known []Known
	// LateLimit is how late a kernel step may start before its timings
	// are not compared (default DefaultLateLimit).
	LateLimit time.Duration
}

// DefaultLateLimit is how late the kernel harness may start a step
// before the timings that follow it are not compared: well above what
// the harness takes on a busy 2-core machine running 12 labs (see
// docs/kernel.md), and below the tolerance's 50 ms floor, so that the
// lateness of steps on time cannot add up to a timing difference.
const DefaultLateLimit = 20 * time.Millisecond

// LateStep is a step the kernel harness started late.
type LateStep struct {
	Line    int
	Late    time.Duration
	Skipped int // timings measured from it that were not compared
}

func (l LateStep) String() string {
	return fmt.Sprintf("step at line %d started %s late: its timings are not compared (%d)", l.Line, l.Late.Round(100*time.Microsecond), l.Skipped)
}

// Comparison is the outcome of Compare.
type Comparison struct {
	Differences []Difference
	// Late lists the kernel steps that started late and left timings
	// uncompared: the harness, not TCP.
	Late []LateStep
	// Timings counts the items whose times were compared.
	Timings int
	// Inversions lists the steps the harness started after a segment
	// that, in the simulator, came after them.
	Inversions []Inversion
}

// Compare returns every difference between the simulator's run and the
// kernel's, in the order of Aspects: per connection, the first item where
// states or segments part (after behaviours the known list recognises),
// every call and counter that differs, and per connection the first
// timing beyond the tolerance.
//
// Times are compared per cause: an item's time is taken from the start of
// the step that led to it (the latest step the simulator started before
// it) on each run, so that harness latency before that step does not
// count. See docs/conformance.md, "Timing".
func Compare(sc *scenario.Scenario, sim, kern Side, cfg Config) *Comparison {
	out := &Comparison{}
	switch {
	case sim.Err != nil:
		out.Differences = []Difference{{Aspect: AspectRun, Text: "simulator: " + sim.Err.Error()}}
		return out
	case kern.Err != nil:
		out.Differences = []Difference{{Aspect: AspectRun, Text: "kernel: " + kern.Err.Error()}}
		return out
	}
	if cfg.LateLimit <= 0 {
		cfg.LateLimit = DefaultLateLimit
	}
	if cfg.Tolerance == nil {
		cfg.Tolerance = func(time.Duration) time.Duration { return 0 }
	}
	tm := newTimer(sc, sim.Result, kern.Result, cfg)
	for _, h := range sc.Hosts {
		a, b := digest(sim.Events, h.Name), digest(kern.Events, h.Name)
		for _, asp := range []struct {
			name string
			a, b []conn
		}{{AspectStates, a.states, b.states}, {AspectPackets, a.packets, b.packets}} {
			ds, pairs := compareConns(h.Name, asp.name, asp.a, asp.b, cfg.Known)
			out.Differences = append(out.Differences, ds...)
			for _, p := range pairs {
				if d, ok := tm.conn(h.Name, asp.name, p); ok {
					out.Differences = append(out.Differences, d)
				}
			}
		}
		ds, pairs := compareCalls(h.Name, a, b)
		out.Differences = append(out.Differences, ds...)
		if d, ok := tm.conn(h.Name, AspectCalls, pairs); ok {
			out.Differences = append(out.Differences, d)
		}
		out.Differences = append(out.Differences, compareCounters(sc, h.Name, sim.Result, kern.Result)...)
	}
	slices.SortStableFunc(out.Differences, func(x, y Difference) int {
		return slices.Index(Aspects, x.Aspect) - slices.Index(Aspects, y.Aspect)
	})
	out.Late, out.Timings = tm.lateSteps(), tm.compared
	out.Inversions = inversions(sc, sim, kern)
	return out
}

// item is one element of a connection's history: a state reached or a
// segment sent, with its time.
type item struct {
	text string
	at   time.Duration
	seq  int // the event's Seq: its place among the run's events
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
				c.items = append(c.items, item{text: e.State.From, at: e.At, seq: e.Seq})
			}
			c.items = append(c.items, item{text: e.State.To, at: e.At, seq: e.Seq})
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
			c.items = append(c.items, item{text: text, at: e.At, seq: e.Seq})
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

// paired is a connection's items that agree on both sides, in order:
// a[i] on the simulator is b[i] on the kernel.
type paired struct {
	key  string
	a, b []item
}

// compareConns pairs connections by key and compares their items'
// texts, one difference per connection: where they first part, unless a
// behaviour of the known list recognises the place, after which the
// comparison goes on. It returns the items that agree, for timing.
func compareConns(host, aspect string, a, b []conn, known []Known) ([]Difference, []paired) {
	bk := map[string]*conn{}
	for i := range b {
		bk[b[i].key] = &b[i]
	}
	what := "states"
	if aspect == AspectPackets {
		what = "segments sent"
	}
	var found []Difference
	var pairs []paired
	only := func(c *conn, who string, simItems, kernItems []item) {
		d := Difference{Host: host, Aspect: aspect, At: c.items[0].at, Conn: c.key,
			Text: fmt.Sprintf("%s: only the %s has this connection (%s)", c.key, who, joinItems(c.items, 6))}
		if who == "simulator" {
			d.Sim = joinItems(c.items, 6)
		} else {
			d.Kernel = joinItems(c.items, 6)
		}
		d.Known = recognise(known, aspect, simItems, kernItems, true)
		found = append(found, d)
	}
	for i := range a {
		ca := &a[i]
		cb := bk[ca.key]
		delete(bk, ca.key)
		if cb == nil {
			only(ca, "simulator", ca.items, nil)
			continue
		}
		p := paired{key: ca.key}
		x, y := ca.items, cb.items
		n := 0 // items compared on the simulator's side, for numbering
		for len(x) > 0 || len(y) > 0 {
			if len(x) > 0 && len(y) > 0 && x[0].text == y[0].text {
				p.a, p.b = append(p.a, x[0]), append(p.b, y[0])
				x, y, n = x[1:], y[1:], n+1
				continue
			}
			if k := recognise(known, aspect, x, y, false); k != nil {
				at := firstAt(x, y)
				found = append(found, Difference{Host: host, Aspect: aspect, At: at, Conn: ca.key, Known: k,
					Sim: joinItems(x[:len(k.Sim)], 6), Kernel: joinItems(y[:len(k.Kernel)], 6),
					Text: fmt.Sprintf("%s: %s #%d: simulator %s, kernel %s at %ss", ca.key, what, n+1,
						orNone(joinItems(x[:len(k.Sim)], 6)), orNone(joinItems(y[:len(k.Kernel)], 6)), trace.FormatTime(at))})
				// The items that end the pattern on both sides, when
				// they are the same, are still timed.
				if ns, nk := len(k.Sim), len(k.Kernel); ns > 0 && nk > 0 && x[ns-1].text == y[nk-1].text {
					p.a, p.b = append(p.a, x[ns-1]), append(p.b, y[nk-1])
				}
				x, y, n = x[len(k.Sim):], y[len(k.Kernel):], n+len(k.Sim)
				continue
			}
			d := Difference{Host: host, Aspect: aspect, Conn: ca.key}
			switch {
			case len(x) > 0 && len(y) > 0:
				d.At, d.Sim, d.Kernel = x[0].at, x[0].text, y[0].text
				d.Text = fmt.Sprintf("%s: %s #%d: simulator %s at %ss, kernel %s at %ss", ca.key, what, n+1,
					x[0].text, trace.FormatTime(x[0].at), y[0].text, trace.FormatTime(y[0].at))
			case len(x) > 0:
				d.At, d.Sim = x[0].at, x[0].text
				d.Text = fmt.Sprintf("%s: %s #%d: only the simulator has %s at %ss (simulator %d, kernel %d)", ca.key, what, n+1,
					x[0].text, trace.FormatTime(x[0].at), len(ca.items), len(cb.items))
			default:
				d.At, d.Kernel = y[0].at, y[0].text
				d.Text = fmt.Sprintf("%s: %s #%d: only the kernel has %s at %ss (simulator %d, kernel %d)", ca.key, what, n+1,
					y[0].text, trace.FormatTime(y[0].at), len(ca.items), len(cb.items))
			}
			found = append(found, d)
			break // past here the two sequences are not aligned
		}
		pairs = append(pairs, p)
	}
	for i := range b {
		if cb := bk[b[i].key]; cb != nil {
			only(cb, "kernel", nil, cb.items)
		}
	}
	return found, pairs
}

func firstAt(x, y []item) time.Duration {
	if len(x) > 0 {
		return x[0].at
	}
	return y[0].at
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
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
// script order on both backends) and compares result and errno. It
// returns the calls that agree, for timing.
func compareCalls(host string, a, b hostDigest) ([]Difference, paired) {
	var found []Difference
	p := paired{}
	for _, id := range a.callIDs {
		x := a.calls[id]
		y, ok := b.calls[id]
		if !ok {
			found = append(found, Difference{Host: host, Aspect: AspectCalls, At: x.At, Conn: x.Call.Text, Sim: callText(x),
				Text: fmt.Sprintf("%s: simulator %s at %ss, kernel: never returned", x.Call.Text, callText(x), trace.FormatTime(x.At))})
			continue
		}
		if callText(x) != callText(y) {
			found = append(found, Difference{Host: host, Aspect: AspectCalls, At: x.At, Conn: x.Call.Text, Sim: callText(x), Kernel: callText(y),
				Text: fmt.Sprintf("%s: simulator %s at %ss, kernel %s at %ss", x.Call.Text, callText(x), trace.FormatTime(x.At),
					callText(y), trace.FormatTime(y.At))})
			continue
		}
		txt := x.Call.Text + strings.TrimPrefix(callText(x), x.Call.Op)
		p.a = append(p.a, item{text: txt, at: x.At, seq: x.Seq})
		p.b = append(p.b, item{text: txt, at: y.At, seq: y.Seq})
	}
	for _, id := range b.callIDs {
		if _, ok := a.calls[id]; !ok {
			y := b.calls[id]
			found = append(found, Difference{Host: host, Aspect: AspectCalls, At: y.At, Conn: y.Call.Text, Kernel: callText(y),
				Text: fmt.Sprintf("%s: kernel %s at %ss, simulator: never returned", y.Call.Text, callText(y), trace.FormatTime(y.At))})
		}
	}
	return found, p
}

// compareCounters compares, at the end of the runs, the counters the
// scenario's expectations name for the host.
func compareCounters(sc *scenario.Scenario, host string, a, b *scenario.Result) []Difference {
	var names []string
	for _, st := range sc.Steps {
		if st.Cond != nil && st.Cond.Kind == scenario.CondCounter && st.Cond.Host == host && !slices.Contains(names, st.Cond.Counter) {
			names = append(names, st.Cond.Counter)
		}
	}
	var found []Difference
	for _, n := range names {
		x, y := counterValue(a, host, n), counterValue(b, host, n)
		if x != y {
			var end time.Duration
			if a != nil {
				end = a.End
			}
			found = append(found, Difference{Host: host, Aspect: AspectCounters, At: end, Conn: n,
				Sim: fmt.Sprint(x), Kernel: fmt.Sprint(y),
				Text: fmt.Sprintf("%s: simulator %d, kernel %d at the end", n, x, y)})
		}
	}
	return found
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
