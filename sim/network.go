// Package sim is tcplab's discrete-event network: hosts running the tcp
// engine, a link with a one-way delay between every pair, the lab's
// firewall rules, and a capture tap on every host. Time is virtual and only
// moves when the next packet or timer is due, so a run of minutes of TCP
// timers takes microseconds, and a seed fixes every random choice.
package sim

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// DefaultDelay is the one-way delay of a link unless set otherwise.
const DefaultDelay = time.Millisecond

// LoopbackDelay is the one-way delay of a host's loopback interface.
const LoopbackDelay = 10 * time.Microsecond

// Config sets up a network.
type Config struct {
	Seed  uint64
	Delay time.Duration // one-way delay between hosts; 0 means DefaultDelay
}

// Host is a simulated host.
type Host struct {
	Name  string
	Addr  netip.Addr // its first address, IPv4 or IPv6
	Addr6 netip.Addr // its IPv6 address when it has one besides Addr
	Stack *tcp.Host
	tcpEv []tcp.Event
	segs  []wire.Segment
	// outRules is the output rule that acts on each segment the stack
	// has queued, chosen as the stack sent it (Config.Refuse): the stack
	// learns at once that a rule drops it, as Linux's sender gets EPERM.
	outRules []*Rule
	// receive is a peer's (AddPeer): it has no stack, and what reaches
	// it is handed to this function.
	receive func(seg *wire.Segment)
	// The last destination this host sent to: its host and link delay,
	// while the network's topo is rtTopo.
	rtDst   netip.Addr
	rtHost  *Host
	rtDelay time.Duration
	rtTopo  uint64
}

// IsPeer tells whether the host is a peer (AddPeer): a program playing a
// host, with no TCP stack of its own.
func (h *Host) IsPeer() bool { return h.receive != nil }

// Network is the simulated lab.
type Network struct {
	now    time.Duration
	seed   uint64
	rng    *rand.Rand
	delay  time.Duration
	delays map[[2]string]time.Duration

	hosts  []*Host
	byName map[string]*Host
	byAddr map[netip.Addr]*Host
	// topo counts changes of hosts and delays; a host's route cache is
	// good while it matches.
	topo uint64

	rules  []*Rule
	nextID int

	q     itemHeap
	qseq  uint64
	pktID uint64
	evSeq int
	sink  trace.Sink

	halted atomic.Bool
	// owned: segments own their payloads (ownPayloads).
	owned bool

	// With a sink, the events' parts come from slabs: one allocation
	// per 64 of each instead of one per event.
	pkts   slab[trace.Packet]
	states slab[trace.StateChange]
	calls  slab[trace.Call]
	ctrs   slab[trace.Counter]
}

// slab hands out pointers to elements of arrays it allocates: 8 at
// first, then twice as many each time up to 64, so that a short run does
// not pay for 64. An array lives as long as any of its elements is kept.
type slab[T any] struct {
	free []T
	last int
}

func (s *slab[T]) new(v T) *T {
	if len(s.free) == 0 {
		s.last = min(max(2*s.last, 8), 64)
		s.free = make([]T, s.last)
	}
	p := &s.free[0]
	*p = v
	s.free = s.free[1:]
	return p
}

// Halt makes the network stop processing at once, from any goroutine: the
// run loops return at their next packet or timer and process nothing more.
// A scenario run uses it when its budget is spent or it is interrupted.
func (n *Network) Halt() { n.halted.Store(true) }

// Halted reports whether Halt was called.
func (n *Network) Halted() bool { return n.halted.Load() }

type itemKind uint8

const (
	itemArrive  itemKind = iota // a packet reaches a host's tap
	itemDeliver                 // a delayed packet reaches the stack (after the tap)
	itemSend                    // a crafted packet leaves a host at a set time
)

type item struct {
	at      time.Duration
	seq     uint64
	kind    itemKind
	host    *Host
	seg     wire.Segment
	pktID   uint64
	crafted bool
	// A series of crafted segments (itemSend): left more after this one,
	// every apart, the i-th from source port +i, each with the queue
	// order it would have had if all had been scheduled at once.
	every, left, i int64
}

// New creates an empty network.
func New(cfg Config) *Network {
	d := cfg.Delay
	if d <= 0 {
		d = DefaultDelay
	}
	return &Network{
		seed:   cfg.Seed,
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x73696d)),
		delay:  d,
		delays: make(map[[2]string]time.Duration),
		byName: make(map[string]*Host),
		byAddr: make(map[netip.Addr]*Host),
		nextID: 1,
	}
}

// recording reports whether events are wanted; without a sink neither the
// network nor the engines build them.
func (n *Network) recording() bool { return n.sink != nil }

// SetSink sends every event to s; nil stops recording (the engine then
// skips building events, which benchmarks use).
func (n *Network) SetSink(s trace.Sink) {
	n.sink = s
	for _, h := range n.hosts {
		h.Stack.RecordEvents(n.recording())
	}
	if s != nil {
		n.ownPayloads()
	}
}

// ownPayloads makes every segment sent from now on own its payload, and
// those on the way own theirs. The engines' segments alias their send
// queues (tcp.Host.PollSegments), which holds only while nothing keeps
// them and every ACK comes from the receiver: a sink keeps them, and a
// crafted segment or a peer may acknowledge bytes that are still on
// their way, whose place a write may then reuse. Once on, it stays on.
func (n *Network) ownPayloads() {
	if n.owned {
		return
	}
	n.owned = true
	for _, h := range n.hosts {
		h.Stack.CopyPayloads(true)
	}
	for i := range n.q.slots {
		if p := n.q.slots[i].seg.Payload; len(p) > 0 {
			n.q.slots[i].seg.Payload = append([]byte(nil), p...)
		}
	}
}

// Now is the network's virtual time.
func (n *Network) Now() time.Duration { return n.now }

// AddHost adds a host with an address (IPv4 or IPv6) and a profile; AddAddr
// gives it one of the other family. Each host's randomness is derived from
// the network's seed and the host's name.
func (n *Network) AddHost(name string, addr netip.Addr, prof tcp.Profile) (*Host, error) {
	if err := n.checkNewHost(name, addr); err != nil {
		return nil, err
	}
	seed := n.seed
	for _, c := range name {
		seed = seed*1099511628211 ^ uint64(c)
	}
	h := &Host{Name: name, Addr: addr}
	refuse := func(s *wire.Segment) bool {
		r := n.firstRule(name, trace.Out, s)
		// outRules[i] is the rule of the stack's i-th queued segment:
		// a new queue (the stack's output was taken) starts afresh.
		if q := h.Stack.Queued(); len(h.outRules) >= q {
			h.outRules = h.outRules[:q-1]
		}
		h.outRules = append(h.outRules, r)
		return r != nil && (r.Action == Drop || r.Action == Reject)
	}
	cfg := tcp.Config{Name: name, Addr: addr, Profile: prof, Seed: seed, Refuse: refuse}
	if addr.Is6() {
		cfg.Addr, cfg.Addr6 = netip.Addr{}, addr
	}
	h.Stack = tcp.NewHost(cfg)
	h.Stack.RecordEvents(n.recording())
	h.Stack.CopyPayloads(n.owned)
	h.Stack.Advance(n.now)
	n.hosts = append(n.hosts, h)
	n.byName[name] = h
	n.byAddr[addr] = h
	n.topo++
	return h, nil
}

func (n *Network) checkNewHost(name string, addr netip.Addr) error {
	if name == "" {
		return fmt.Errorf("a host needs a name")
	}
	if n.byName[name] != nil {
		return fmt.Errorf("host %q already exists", name)
	}
	return n.checkAddr(name, addr)
}

func (n *Network) checkAddr(name string, addr netip.Addr) error {
	if !addr.IsValid() || addr.Is4In6() || addr.IsUnspecified() || addr.Is6() && addr.IsLinkLocalUnicast() {
		return fmt.Errorf("host %q: %v is not a usable host address", name, addr)
	}
	if o := n.byAddr[addr]; o != nil {
		return fmt.Errorf("host %q: address %v already belongs to %q", name, addr, o.Name)
	}
	return nil
}

// AddAddr gives a host with a stack an address of the other family than
// its first: an IPv6 address to an IPv4 host, or the reverse.
func (n *Network) AddAddr(name string, addr netip.Addr) error {
	h, err := n.stackHost(name)
	if err != nil {
		return err
	}
	if err := n.checkAddr(name, addr); err != nil {
		return err
	}
	if err := h.Stack.AddAddr(addr); err != nil {
		return err
	}
	if addr.Is6() {
		h.Addr6 = addr
	} else {
		h.Addr6, h.Addr = h.Addr, addr
	}
	n.byAddr[addr] = h
	n.topo++
	return nil
}

// AddPeer adds a host that has no TCP stack: a program plays it (a
// packetdrill script plays the remote peer of the host under test). The
// packets that reach it, after its input rules, are handed to receive
// at their arrival time (Now); it sends with InjectAt. It makes no calls
// and has no sockets or counters, and is not among Hosts.
func (n *Network) AddPeer(name string, addr netip.Addr, receive func(seg *wire.Segment)) (*Host, error) {
	if err := n.checkNewHost(name, addr); err != nil {
		return nil, err
	}
	if receive == nil {
		return nil, fmt.Errorf("peer %q needs a receive function", name)
	}
	h := &Host{Name: name, Addr: addr, receive: receive}
	n.ownPayloads() // a peer's ACKs need not follow what it received
	n.byName[name] = h
	n.byAddr[addr] = h
	n.topo++
	return h, nil
}

// stackHost returns the host of a name that has a stack.
func (n *Network) stackHost(name string) (*Host, error) {
	h := n.byName[name]
	switch {
	case h == nil:
		return nil, fmt.Errorf("unknown host %q", name)
	case h.IsPeer():
		return nil, fmt.Errorf("host %q is a peer: it has no TCP stack", name)
	}
	return h, nil
}

// Host returns a host by name, or nil.
func (n *Network) Host(name string) *Host { return n.byName[name] }

// Hosts lists the hosts in the order they were added.
func (n *Network) Hosts() []*Host { return append([]*Host(nil), n.hosts...) }

// SetDelay sets the one-way delay between two hosts, both ways.
func (n *Network) SetDelay(a, b string, d time.Duration) error {
	if n.byName[a] == nil || n.byName[b] == nil {
		return fmt.Errorf("unknown host in %q-%q", a, b)
	}
	if d < 0 {
		return fmt.Errorf("delay cannot be negative")
	}
	n.delays[[2]string{a, b}] = d
	n.delays[[2]string{b, a}] = d
	n.topo++
	return nil
}

// route finds the host a packet from h to dst reaches: the owner of the
// address, or h itself for a loopback address.
func (n *Network) route(h *Host, dst netip.Addr) *Host {
	if dst.IsLoopback() {
		return h
	}
	return n.byAddr[dst]
}

// routeDelay is route and linkDelay, remembered per sender for its last
// destination: a connection sends to one address again and again.
func (n *Network) routeDelay(h *Host, dst netip.Addr) (*Host, time.Duration) {
	if h.rtTopo == n.topo && h.rtDst == dst && h.rtTopo != 0 {
		return h.rtHost, h.rtDelay
	}
	to := n.route(h, dst)
	var d time.Duration
	if to != nil {
		d = n.linkDelay(h, to, dst)
	}
	h.rtDst, h.rtHost, h.rtDelay, h.rtTopo = dst, to, d, n.topo
	return to, d
}

func (n *Network) linkDelay(a, b *Host, dst netip.Addr) time.Duration {
	if dst.IsLoopback() {
		return LoopbackDelay
	}
	if d, ok := n.delays[[2]string{a.Name, b.Name}]; ok {
		return d
	}
	return n.delay
}

// AddRule installs a fault rule and returns its ID.
func (n *Network) AddRule(r Rule) (int, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	if n.byName[r.Host] == nil {
		return 0, fmt.Errorf("rule for unknown host %q", r.Host)
	}
	r.id = n.nextID
	n.nextID++
	r.matched, r.acted = 0, 0
	rp := &r
	n.rules = append(n.rules, rp)
	n.emit(trace.Event{At: n.now, Host: r.Host, Kind: trace.KindRule,
		Rule: &trace.RuleChange{ID: r.id, Added: true, Summary: rp.Summary()}})
	return r.id, nil
}

// RemoveRule removes a rule by ID.
func (n *Network) RemoveRule(id int) error {
	for i, r := range n.rules {
		if r.id == id {
			n.rules = append(n.rules[:i], n.rules[i+1:]...)
			n.emit(trace.Event{At: n.now, Host: r.Host, Kind: trace.KindRule,
				Rule: &trace.RuleChange{ID: id, Added: false, Summary: r.Summary()}})
			return nil
		}
	}
	return fmt.Errorf("no rule #%d", id)
}

// Rules lists the installed rules.
func (n *Network) Rules() []Rule {
	out := make([]Rule, len(n.rules))
	for i, r := range n.rules {
		out[i] = *r
	}
	return out
}

// Do runs an application call on a host now. A blocking call that cannot
// finish returns Pending; its completion arrives later as a call event.
func (n *Network) Do(host string, call tcp.Call) (tcp.Result, error) {
	h, err := n.stackHost(host)
	if err != nil {
		return tcp.Result{}, err
	}
	h.Stack.Advance(n.now)
	r := h.Stack.Do(call)
	n.flush(h)
	return r, nil
}

// Inject sends a crafted segment (any source address, spoofed or not) from
// a host now. It passes the host's output rules like any packet.
func (n *Network) Inject(host string, seg wire.Segment) error {
	return n.InjectAt(n.now, host, seg)
}

// InjectAt schedules a crafted segment to leave a host at time t.
func (n *Network) InjectAt(t time.Duration, host string, seg wire.Segment) error {
	if err := n.checkInject(t, host, &seg); err != nil {
		return err
	}
	// Keep a copy: the caller may reuse its buffers before the packet leaves.
	n.push(item{at: t, kind: itemSend, host: n.byName[host], seg: *seg.Clone(), crafted: true})
	return nil
}

func (n *Network) checkInject(t time.Duration, host string, seg *wire.Segment) error {
	if n.byName[host] == nil {
		return fmt.Errorf("unknown host %q", host)
	}
	if t < n.now {
		return fmt.Errorf("cannot inject in the past (%v < %v)", t, n.now)
	}
	if !seg.Src.IsValid() || !seg.Dst.IsValid() || seg.Src.Is4() != seg.Dst.Is4() {
		return fmt.Errorf("a crafted segment needs two addresses of one family")
	}
	if seg.TTL == 0 {
		seg.TTL = 64
	}
	n.ownPayloads() // a crafted ACK may acknowledge bytes still on their way
	return nil
}

// InjectSeries sends count crafted segments from a host, the first at t
// and the others every apart, the i-th with the first's source port plus i
// (wrapping within 1-65535), so that each is a connection of its own (a
// spoofed SYN flood). It costs one queue entry however many there are.
func (n *Network) InjectSeries(t, every time.Duration, count int, host string, seg wire.Segment) error {
	if count < 1 || count > 1 && every <= 0 {
		return fmt.Errorf("a series needs a count of at least 1 and a positive interval")
	}
	if err := n.checkInject(t, host, &seg); err != nil {
		return err
	}
	// Reserve the queue order of every segment of the series.
	n.push(item{at: t, kind: itemSend, host: n.byName[host], seg: *seg.Clone(), crafted: true, every: int64(every), left: int64(count - 1)})
	n.qseq += uint64(count - 1)
	return nil
}

// seriesPort is port p moved on by i within 1-65535.
func seriesPort(p uint16, i int) uint16 { return uint16((int(p)-1+i)%65535 + 1) }

// NextTime is when the next packet or timer is due.
func (n *Network) NextTime() (time.Duration, bool) {
	t, ok := time.Duration(0), false
	if len(n.q.h) > 0 {
		t, ok = n.q.h[0].at, true
	}
	for _, h := range n.hosts {
		if d, dok := h.Stack.NextDeadline(); dok && (!ok || d < t) {
			t, ok = d, true
		}
	}
	return t, ok
}

// Step processes everything due at the next instant; false when nothing
// is pending.
func (n *Network) Step() bool {
	t, ok := n.NextTime()
	if !ok {
		return false
	}
	n.processAt(t)
	return true
}

func (n *Network) processAt(t time.Duration) {
	n.now = t
	for {
		progressed := false
		for len(n.q.h) > 0 && n.q.h[0].at <= t {
			if n.halted.Load() {
				return
			}
			it := n.q.pop()
			n.handle(&it)
			progressed = true
		}
		for _, h := range n.hosts {
			if d, ok := h.Stack.NextDeadline(); ok && d <= t {
				h.Stack.Advance(t)
				n.flush(h)
				progressed = true
			}
		}
		if !progressed || n.halted.Load() {
			return
		}
	}
}

// RunUntil processes everything due up to t and leaves the clock at t.
func (n *Network) RunUntil(t time.Duration) {
	for !n.halted.Load() {
		next, ok := n.NextTime()
		if !ok || next > t {
			break
		}
		n.processAt(next)
	}
	if t > n.now && !n.halted.Load() {
		n.now = t
	}
	n.syncClocks()
}

// syncClocks brings every host's clock to the network's, so that calls,
// snapshots and timers armed from now all see the same time.
func (n *Network) syncClocks() {
	for _, h := range n.hosts {
		h.Stack.Advance(n.now)
	}
}

// RunFor runs the network for d of virtual time.
func (n *Network) RunFor(d time.Duration) { n.RunUntil(n.now + d) }

// RunUntilCond steps until cond holds or the time limit passes; it reports
// whether cond held. The clock stops at the instant cond became true, or at
// limit.
func (n *Network) RunUntilCond(cond func() bool, limit time.Duration) bool {
	for !cond() {
		if n.halted.Load() {
			return false
		}
		next, ok := n.NextTime()
		if !ok || next > limit {
			n.RunUntil(limit)
			return cond()
		}
		n.processAt(next)
	}
	n.syncClocks()
	return true
}

// Idle reports whether nothing is pending at all: no packet in flight and no
// timer armed anywhere.
func (n *Network) Idle() bool {
	_, ok := n.NextTime()
	return !ok
}

// Snapshot lists a host's sockets as `ss -tanoi` would.
func (n *Network) Snapshot(host string) ([]trace.Socket, error) {
	h, err := n.stackHost(host)
	if err != nil {
		return nil, err
	}
	h.Stack.Advance(n.now)
	snap := h.Stack.Snapshot()
	out := make([]trace.Socket, 0, len(snap))
	for _, s := range snap {
		out = append(out, trace.Socket{Host: host, Sock: uint64(s.Sock), Parent: uint64(s.Parent),
			FD: int(s.FD), State: s.State.String(), Local: s.Local, Remote: s.Remote, V6Only: s.V6Only,
			RecvQ: s.RecvQ, SendQ: s.SendQ, Timer: s.Timer, TimerLeft: s.TimerLeft,
			Retransmits: s.Retransmits, RTO: s.RTO, RTT: s.RTT, Cwnd: s.Cwnd,
			RetransTotal: s.RetransTotal, Orphan: s.Orphan, Accepting: s.Accepting, SynQueue: s.SynQueue})
	}
	return out, nil
}

// Counters returns a host's counters by name, in a fixed order.
func (n *Network) Counters(host string) ([]trace.Counter, error) {
	h, err := n.stackHost(host)
	if err != nil {
		return nil, err
	}
	vals := h.Stack.CounterValues()
	out := make([]trace.Counter, len(vals))
	for i, c := range tcp.Counters() {
		out[i] = trace.Counter{Name: c.String(), Value: vals[i]}
	}
	return out, nil
}

// flush turns a host's engine output into events and packets.
func (n *Network) flush(h *Host) {
	h.tcpEv = h.Stack.PollEvents(h.tcpEv[:0])
	for i := range h.tcpEv {
		n.emitTCP(h, &h.tcpEv[i])
	}
	h.segs = h.Stack.SwapSegments(h.segs)
	if len(h.segs) != len(h.outRules) {
		panic(fmt.Sprintf("sim: host %s queued %d segments but %d output verdicts", h.Name, len(h.segs), len(h.outRules)))
	}
	for i := range h.segs {
		n.sendFrom(h, h.segs[i], false, h.outRules[i]) // SwapSegments clears them when they go back
	}
	clear(h.outRules)
	h.outRules = h.outRules[:0]
}

// sendFrom passes a packet through the sender's output rules and onto the
// link.
// r is the output rule that acts on it, already chosen.
func (n *Network) sendFrom(h *Host, seg wire.Segment, crafted bool, r *Rule) {
	n.pktID++
	id := n.pktID
	dst, delay := n.routeDelay(h, seg.Dst)
	ev := func(verdict string, onWire bool) *trace.Packet {
		if !n.recording() {
			return nil
		}
		p := n.pkts.new(trace.Packet{ID: id, Dir: trace.Out, Segment: seg, Verdict: verdict, OnWire: onWire, Crafted: crafted})
		if r != nil {
			p.Rule = r.name()
		}
		if dst == nil && onWire {
			p.Lost = "no host has address " + seg.Dst.String()
		}
		return p
	}
	extra := time.Duration(0)
	copies := 1
	if r != nil {
		switch r.Action {
		case Drop:
			n.emitPacket(h, ev(trace.VerdictDrop, false))
			return
		case Reject:
			n.emitPacket(h, ev(trace.VerdictReject, false))
			// The local stack hears a reset as if from the destination.
			if rst, ok := wire.ResetFor(&seg); ok {
				rst.TTL = 64
				n.pktID++
				n.push(item{at: n.now, kind: itemDeliver, host: h, seg: rst, pktID: n.pktID, crafted: true})
				if n.recording() {
					n.emitPacket(h, n.pkts.new(trace.Packet{ID: n.pktID, Dir: trace.In, Segment: rst, Verdict: trace.VerdictPass,
						Crafted: true, Rule: r.name()}))
				}
			}
			return
		case Delay:
			extra = r.Delay
			n.emitPacket(h, ev(trace.VerdictDelay, true))
		case Duplicate:
			copies = 2
			n.emitPacket(h, ev(trace.VerdictDup, true))
		}
	} else {
		n.emitPacket(h, ev(trace.VerdictPass, true))
	}
	at := n.now + delay + extra
	for i := 0; i < copies; i++ {
		pid := id
		if i > 0 {
			n.pktID++
			pid = n.pktID
			if n.recording() {
				p := n.pkts.new(trace.Packet{ID: pid, Dir: trace.Out, Segment: seg, Verdict: trace.VerdictDup,
					OnWire: true, Crafted: crafted, Rule: r.name()})
				if dst == nil {
					p.Lost = "no host has address " + seg.Dst.String()
				}
				n.emitPacket(h, p)
			}
		}
		if dst != nil {
			n.push(item{at: at, kind: itemArrive, host: dst, seg: seg, pktID: pid, crafted: crafted})
		}
	}
}

func (n *Network) handle(it *item) {
	switch it.kind {
	case itemSend:
		if it.left > 0 {
			next := *it
			next.at += time.Duration(it.every)
			next.left--
			next.i++
			next.seq++
			next.seg.SrcPort = seriesPort(it.seg.SrcPort, 1)
			n.q.push(next)
		}
		n.sendFrom(it.host, it.seg, true, n.firstRule(it.host.Name, trace.Out, &it.seg))
	case itemDeliver:
		n.deliver(it.host, &it.seg)
	case itemArrive:
		h := it.host
		r := n.firstRule(h.Name, trace.In, &it.seg)
		if r == nil {
			if n.recording() {
				n.emitPacket(h, n.pkts.new(trace.Packet{ID: it.pktID, Dir: trace.In, Segment: it.seg, Verdict: trace.VerdictPass, OnWire: true, Crafted: it.crafted}))
			}
			n.deliver(h, &it.seg)
			return
		}
		p := n.pkts.new(trace.Packet{ID: it.pktID, Dir: trace.In, Segment: it.seg, OnWire: true, Crafted: it.crafted, Rule: r.name()})
		switch r.Action {
		case Drop:
			p.Verdict = trace.VerdictDrop
			n.emitPacket(h, p)
		case Reject:
			p.Verdict = trace.VerdictReject
			n.emitPacket(h, p)
			if rst, ok := wire.ResetFor(&it.seg); ok {
				rst.TTL = 64
				n.sendRaw(h, rst, r)
			}
		case Delay:
			p.Verdict = trace.VerdictDelay
			n.emitPacket(h, p)
			n.push(item{at: n.now + r.Delay, kind: itemDeliver, host: h, seg: it.seg, pktID: it.pktID})
		case Duplicate:
			p.Verdict = trace.VerdictDup
			n.emitPacket(h, p)
			n.deliver(h, &it.seg)
			n.deliver(h, &it.seg)
		}
	}
}

// sendRaw puts a firewall-made packet on the link without passing rules.
func (n *Network) sendRaw(h *Host, seg wire.Segment, by *Rule) {
	n.pktID++
	dst := n.route(h, seg.Dst)
	if n.recording() {
		p := n.pkts.new(trace.Packet{ID: n.pktID, Dir: trace.Out, Segment: seg, Verdict: trace.VerdictPass, OnWire: true, Crafted: true, Rule: by.name()})
		if dst == nil {
			p.Lost = "no host has address " + seg.Dst.String()
		}
		n.emitPacket(h, p)
	}
	if dst != nil {
		n.push(item{at: n.now + n.linkDelay(h, dst, seg.Dst), kind: itemArrive, host: dst, seg: seg, pktID: n.pktID, crafted: true})
	}
}

func (n *Network) deliver(h *Host, seg *wire.Segment) {
	if h.IsPeer() {
		h.receive(seg.Clone())
		return
	}
	h.Stack.Advance(n.now)
	h.Stack.Input(seg)
	n.flush(h)
}

// firstRule returns the first rule of the host and direction that acts on
// the packet, counting matches for Skip and Count.
func (n *Network) firstRule(host string, dir trace.Dir, seg *wire.Segment) *Rule {
	for _, r := range n.rules {
		if r.Host != host || r.Dir != dir || !r.Matches(seg) {
			continue
		}
		r.matched++
		if r.matched <= r.Skip {
			continue
		}
		if r.Count > 0 && r.acted >= r.Count {
			continue
		}
		if r.Probability > 0 && r.Probability < 1 && n.rng.Float64() >= r.Probability {
			continue
		}
		r.acted++
		return r
	}
	return nil
}

func (n *Network) emit(e trace.Event) {
	if !n.recording() {
		return
	}
	n.evSeq++
	e.Seq = n.evSeq
	n.sink(e)
}

func (n *Network) emitPacket(h *Host, p *trace.Packet) {
	if !n.recording() {
		return
	}
	s := &p.Segment
	e := trace.Event{At: n.now, Host: h.Name, Kind: trace.KindPacket, Packet: p}
	if p.Dir == trace.Out {
		e.Local, e.Remote = netip.AddrPortFrom(s.Src, s.SrcPort), netip.AddrPortFrom(s.Dst, s.DstPort)
	} else {
		e.Local, e.Remote = netip.AddrPortFrom(s.Dst, s.DstPort), netip.AddrPortFrom(s.Src, s.SrcPort)
	}
	n.emit(e)
}

func (n *Network) emitTCP(h *Host, te *tcp.Event) {
	e := trace.Event{At: te.At, Host: h.Name, Sock: uint64(te.Sock), Parent: uint64(te.Parent),
		Local: te.Local, Remote: te.Remote, V6Only: te.V6Only}
	switch te.Kind {
	case tcp.EvState:
		e.Kind = trace.KindState
		e.State = n.states.new(trace.StateChange{From: te.From.String(), To: te.To.String(),
			CauseKind: te.Cause.Kind.String(), Cause: te.Cause.Text})
	case tcp.EvCall:
		r := te.Result
		e.Kind = trace.KindCall
		e.Call = n.calls.new(trace.Call{ID: r.ID, Op: r.Call.Op.String(), Text: r.Call.String(), FD: int(r.Call.FD),
			Ret: r.Ret, Errno: r.Err.Name(), Data: r.Data, NewSock: uint64(r.NewSock), Pending: r.Pending,
			Started: r.Started})
	case tcp.EvCounter:
		e.Kind = trace.KindCounter
		e.Counter = n.ctrs.new(trace.Counter{Name: te.Counter.String(), Delta: te.Delta, Value: te.Value})
	case tcp.EvNote:
		e.Kind = trace.KindNote
		e.Note = te.Note
	}
	n.emit(e)
}

func (n *Network) push(it item) {
	n.qseq++
	it.seq = n.qseq
	n.q.push(it)
}

// itemHeap orders pending packets by time, then by the order they were
// scheduled. The items stay in slots reused as they are taken; the heap
// moves only their keys.
type itemHeap struct {
	slots []item
	free  []int32
	h     []heapKey
}

type heapKey struct {
	at   time.Duration
	seq  uint64
	slot int32
}

func (a heapKey) less(b heapKey) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

func (q *itemHeap) push(it item) {
	var slot int32
	if k := len(q.free); k > 0 {
		slot = q.free[k-1]
		q.free = q.free[:k-1]
		q.slots[slot] = it
	} else {
		slot = int32(len(q.slots))
		q.slots = append(q.slots, it)
	}
	h := append(q.h, heapKey{at: it.at, seq: it.seq, slot: slot})
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].less(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	q.h = h
}

func (q *itemHeap) pop() item {
	h := q.h
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	i, n := 0, last
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].less(h[l]) {
			m = r
		}
		if !h[m].less(h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	q.h = h
	it := q.slots[top.slot]
	q.slots[top.slot] = item{} // let its segment's bytes go
	q.free = append(q.free, top.slot)
	return it
}

// HostNames lists host names sorted.
func (n *Network) HostNames() []string {
	out := make([]string, 0, len(n.hosts))
	for _, h := range n.hosts {
		out = append(out, h.Name)
	}
	sort.Strings(out)
	return out
}
