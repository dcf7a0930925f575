package tcp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// Config describes a host.
type Config struct {
	Name    string
	Addr    netip.Addr // the host's IPv4 address (zero: none)
	Addr6   netip.Addr // the host's IPv6 address (zero: none)
	Profile Profile    // copied; zero value means Linux()
	Seed    uint64     // seeds ISN keys, timestamp offsets and port choice
	// Refuse, when set, is asked about each segment as the host sends
	// it: true means that the host's own output refused it (a local
	// firewall's drop, which Linux's ip_local_out returns as EPERM). The
	// segment is handed out by PollSegments all the same. The engine
	// acts on a refusal where Linux's request sock does: a SYN-ACK its
	// timer could not resend drops the request (reqsk_timer_handler),
	// one resent for a retransmitted SYN does not restart the timer
	// (tcp_check_req), and neither is counted. (Linux also keeps refused
	// new data unsent, in tcp_write_xmit; the engine does not model it.)
	Refuse func(*wire.Segment) bool
}

// tuple identifies a connection from this host's point of view.
type tuple struct {
	laddr, raddr netip.Addr
	lport, rport uint16
}

// portBucket holds every socket bound to a local port: listeners,
// connections (their children included) and TIME_WAIT remnants, as Linux's
// inet_bind_bucket does.
type portBucket struct {
	socks    []*conn // each at its conn's portIdx
	explicit int     // sockets that bound the port with bind() or listen()
}

// Host is one TCP/IP host: its sockets, connections, listeners, counters
// and timers. It is not safe for concurrent use.
type Host struct {
	name  string
	addr  netip.Addr
	addr6 netip.Addr
	prof  Profile
	rng   *rand.Rand
	key   [4]uint64 // secrets: ISN, cookies, timestamp offsets, ports

	now    time.Duration
	nextID SockID

	fds     map[FD]*conn
	freeFDs []FD
	nextFD  FD
	conns   map[tuple]*conn
	listens map[listenKey]*conn
	ports   map[uint16]*portBucket
	// freeBuckets are empty port buckets kept for reuse: an ephemeral
	// port is bound and freed once per connection.
	freeBuckets []*portBucket
	resultSlab  []Result // where call events' results are copied (record)
	resultSlabN int      // the size of its last array
	perturb     [256]uint16
	timers      timerHeap
	out         []wire.Segment
	refuse      func(*wire.Segment) bool
	events      []Event
	counters    [numCounters]int64
	record      bool // collect events (off: counters and state still change)
	// copyPayloads: segments sent own their payload (CopyPayloads).
	copyPayloads bool
	// ringSweep is when idle connections' empty queues last gave their
	// arrays back (sweepRings).
	ringSweep time.Duration

	bsdISS     uint32 // ISNPredictable state
	bsdISSTick time.Duration
	nextCallID uint64

	challengeWindow time.Duration
	challengeCount  int

	// portsGen counts changes that can free an ephemeral port (a 4-tuple
	// unhashed, a bound port released, a move to TIME_WAIT or CLOSED);
	// exhausted remembers which parities of the range the last search
	// for a destination found full, valid while the generation, the time
	// and the range are the same: later searches skip them instead of
	// scanning 14,116 taken ports again (a repeat of 100,000 connects to
	// one destination took minutes).
	portsGen  uint64
	exhausted exhaustedScan
	// noPortCache makes pickEphemeral neither read nor write exhausted:
	// a test knob, so that tests can compare every search against a full
	// scan.
	noPortCache bool

	bugs []string
}

// NewHost creates a host.
func NewHost(cfg Config) *Host {
	p := cfg.Profile
	if p.Name == "" {
		p = Linux()
	}
	h := &Host{
		name:    cfg.Name,
		addr:    cfg.Addr,
		addr6:   cfg.Addr6,
		prof:    p,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x7463706c6162)),
		nextID:  1,
		fds:     make(map[FD]*conn),
		nextFD:  3,
		conns:   make(map[tuple]*conn),
		listens: make(map[listenKey]*conn),
		ports:   make(map[uint16]*portBucket),
		record:  true,
		bsdISS:  1,
		refuse:  cfg.Refuse,
	}
	for i := range h.key {
		h.key[i] = h.rng.Uint64()
	}
	for i := range h.perturb {
		h.perturb[i] = uint16(h.rng.Uint32())
	}
	return h
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

// Addr returns the host's address.
func (h *Host) Addr() netip.Addr { return h.addr }

// AddAddr gives the host its address of the other family (an IPv4 host
// its IPv6 address, or the reverse).
func (h *Host) AddAddr(a netip.Addr) error {
	switch {
	case a.Is4() && !h.addr.IsValid():
		h.addr = a
	case a.Is6() && !a.Is4In6() && !h.addr6.IsValid():
		h.addr6 = a
	default:
		return fmt.Errorf("host %s: it has an address of %v's family already", h.name, a)
	}
	return nil
}

// Addr6 returns the host's IPv6 address (zero: none).
func (h *Host) Addr6() netip.Addr { return h.addr6 }

// addrFor is the host's address of dst's family (a loopback destination is
// reached from itself); zero when the host has none.
func (h *Host) addrFor(dst netip.Addr) netip.Addr {
	switch {
	case dst.IsLoopback():
		return dst
	case dst.Is4():
		return h.addr
	}
	return h.addr6
}

// Profile returns the host's current profile.
func (h *Host) Profile() Profile { return h.prof }

// SetProfile replaces the profile; sockets keep the values they already
// copied (a listener's backlog, a socket's keepalive times).
func (h *Host) SetProfile(p Profile) { h.prof = p }

// Set changes one setting of the host's profile by sysctl name.
func (h *Host) Set(name, value string) error { return h.prof.Set(name, value) }

// Now is the host's current virtual time.
func (h *Host) Now() time.Duration { return h.now }

// CopyPayloads makes every segment sent own a copy of its payload, taken
// as it is sent, instead of aliasing the send queue (see PollSegments).
// A driver needs it when segments are kept (a trace records them), or when
// acknowledgements may not come from the receiver (crafted or spoofed
// segments, a scripted peer): an ACK for bytes still on their way frees
// their place in the send queue, and a write may reuse it before they
// arrive.
func (h *Host) CopyPayloads(on bool) { h.copyPayloads = on }

// RecordEvents turns event collection on or off. With it off the engine
// still counts and changes state; benchmarks use it to measure the engine
// alone.
func (h *Host) RecordEvents(on bool) { h.record = on }

// Counter returns a counter's value.
func (h *Host) Counter(c Counter) int64 {
	if c < numCounters {
		return h.counters[c]
	}
	return 0
}

// CounterValues returns every counter, in Counters() order.
func (h *Host) CounterValues() []int64 { return append([]int64(nil), h.counters[:]...) }

// Bugs lists internal inconsistencies the engine caught in itself (an
// illegal transition, a broken sequence invariant). Tests require it empty.
func (h *Host) Bugs() []string { return h.bugs }

func (h *Host) bug(format string, a ...any) {
	if len(h.bugs) < 100 {
		h.bugs = append(h.bugs, fmt.Sprintf("%v %s: ", h.now, h.name)+fmt.Sprintf(format, a...))
	}
}

func (h *Host) count(c Counter) { h.add(c, 1) }

func (h *Host) add(c Counter, d int64) {
	h.counters[c] += d
	// InSegs and OutSegs move with every packet; the packets themselves
	// are the events, so these two are counted without an event each.
	if h.record && c != InSegs && c != OutSegs {
		h.events = append(h.events, Event{Kind: EvCounter, At: h.now, Counter: c, Delta: d, Value: h.counters[c]})
	}
}

func (h *Host) note(c *conn, format string, a ...any) {
	if !h.record {
		return
	}
	e := Event{Kind: EvNote, At: h.now, Note: fmt.Sprintf(format, a...)}
	if c != nil {
		e.Sock, e.Parent, e.Local, e.Remote = c.id, c.parentSk, c.localAP(), c.remoteAP()
	}
	h.events = append(h.events, e)
}

// Queued is how many segments wait for PollSegments.
func (h *Host) Queued() int { return len(h.out) }

// PollSegments appends the segments the host wants to send to dst and
// forgets them. A segment's payload aliases its connection's send queue
// and is not copied (unless CopyPayloads is on): it keeps its bytes until
// they are acknowledged. When every ACK comes from the receiver, which
// only takes bytes it has not acknowledged, a segment in flight delivers
// what was sent; a driver that keeps segments (a trace) or lets others
// acknowledge (crafted segments, a scripted peer) turns CopyPayloads on.
// Never write to a payload.
func (h *Host) PollSegments(dst []wire.Segment) []wire.Segment {
	dst = append(dst, h.out...)
	clear(h.out)
	h.out = h.out[:0]
	return dst
}

// SwapSegments is PollSegments without a copy: it returns the queued
// segments in the host's own slice and keeps buf, emptied, for the next
// ones. The caller owns the returned slice until it passes it back (with
// its length: its segments are cleared then, and their payloads let go).
func (h *Host) SwapSegments(buf []wire.Segment) []wire.Segment {
	out := h.out
	clear(buf)
	h.out = buf[:0]
	return out
}

// PollEvents appends the host's events to dst and forgets them.
func (h *Host) PollEvents(dst []Event) []Event {
	dst = append(dst, h.events...)
	clear(h.events)
	h.events = h.events[:0]
	return dst
}

// NextDeadline returns the earliest pending timer.
func (h *Host) NextDeadline() (time.Duration, bool) {
	if len(h.timers) == 0 {
		return 0, false
	}
	return h.timers[0].wakeAt, true
}

// Advance moves the host's clock to now, firing every timer that is due,
// each at its own deadline and in deadline order.
func (h *Host) Advance(now time.Duration) {
	if now < h.now {
		return
	}
	for len(h.timers) > 0 && h.timers[0].wakeAt <= now {
		c := h.timers[0]
		h.now = c.wakeAt
		c.onTimers()
		c.rearm()
	}
	h.now = now
	if now-h.ringSweep >= ringSweepEvery {
		h.sweepRings()
	}
}

// ringSweepEvery is how often, in virtual time, the empty send and
// receive queues of connections give their arrays back.
const ringSweepEvery = time.Second

// sweepRings gives back the arrays of empty queues: an idle connection
// keeps no buffer, as Linux frees a socket's skbs once they are read or
// acknowledged. Once a second, not at every drain, so that a busy
// connection keeps its arrays. Segments that alias an array keep it
// alive; it is only let go, never written again.
func (h *Host) sweepRings() {
	h.ringSweep = h.now
	for _, c := range h.conns {
		if c.snd.Len() == 0 && c.snd.buf != nil {
			c.snd.reset()
		}
		if c.rcv.Len() == 0 && c.rcv.ext == 0 && len(c.ooo) == 0 && c.rcv.buf != nil {
			c.rcv.reset()
		}
	}
}

// Input processes one segment received by this host at the current time.
func (h *Host) Input(seg *wire.Segment) {
	if !seg.Dst.IsValid() || seg.Dst != h.addr && seg.Dst != h.addr6 && !seg.Dst.IsLoopback() {
		return // not ours: a router would forward it; a host drops it
	}
	h.count(InSegs)
	t := tuple{laddr: seg.Dst, raddr: seg.Src, lport: seg.DstPort, rport: seg.SrcPort}
	if c := h.conns[t]; c != nil {
		c.input(seg)
		c.rearm()
		return
	}
	if l := h.listener(seg); l != nil {
		l.listenInput(seg, 0)
		return
	}
	h.sendResetFor(seg, "no socket")
}

// sendResetFor answers a segment that has no connection with a reset, the
// way RFC 9293 section 3.10.7.1 and Linux's tcp_v4_send_reset do.
func (h *Host) sendResetFor(seg *wire.Segment, why string) {
	r, ok := wire.ResetFor(seg)
	if !ok {
		return
	}
	r.TTL = h.prof.TTL
	h.count(OutRsts)
	h.send(r, true)
	if h.record {
		h.events = append(h.events, Event{Kind: EvNote, At: h.now,
			Local: netip.AddrPortFrom(seg.Dst, seg.DstPort), Remote: netip.AddrPortFrom(seg.Src, seg.SrcPort),
			Note: "RST sent: " + why})
	}
}

// send queues a segment; it reports false when the host's output
// refused it (Config.Refuse).
func (h *Host) send(s wire.Segment, countOut bool) bool {
	if countOut {
		h.count(OutSegs)
	}
	if h.prof.OutputDrop {
		return false // the output queue dropped it (__tcp_transmit_skb counted it)
	}
	if h.copyPayloads && len(s.Payload) > 0 {
		s.Payload = append([]byte(nil), s.Payload...)
	}
	h.out = append(h.out, s)
	return h.refuse == nil || !h.refuse(&h.out[len(h.out)-1])
}

func (h *Host) newID() SockID {
	id := h.nextID
	h.nextID++
	return id
}

// port bookkeeping

func (h *Host) bindPort(c *conn, port uint16, explicit bool) {
	b := h.ports[port]
	if b == nil {
		if k := len(h.freeBuckets); k > 0 {
			b = h.freeBuckets[k-1]
			h.freeBuckets = h.freeBuckets[:k-1]
		} else {
			b = new(portBucket)
		}
		h.ports[port] = b
	}
	c.portIdx = len(b.socks)
	b.socks = append(b.socks, c)
	if explicit {
		b.explicit++
		c.explicitBind = true
	}
	c.lport = port
	c.bound = true
}

func (h *Host) unbindPort(c *conn) {
	if !c.bound {
		return
	}
	h.portsGen++
	if b := h.ports[c.lport]; b != nil {
		last := len(b.socks) - 1
		b.socks[c.portIdx] = b.socks[last]
		b.socks[c.portIdx].portIdx = c.portIdx
		b.socks[last] = nil
		b.socks = b.socks[:last]
		if c.explicitBind {
			b.explicit--
		}
		if len(b.socks) == 0 {
			delete(h.ports, c.lport)
			if len(h.freeBuckets) < 64 && cap(b.socks) <= 16 {
				h.freeBuckets = append(h.freeBuckets, b) // empty: reused by the next bind
			}
		}
	}
	c.bound, c.explicitBind = false, false
}

// listenKey is a listener's port and family: an AF_INET listener and an
// AF_INET6 one with IPV6_V6ONLY may share a port.
type listenKey struct {
	port uint16
	v6   bool
}

// listener finds the listener a segment goes to: an IPv6 one reaches an
// AF_INET6 listener; an IPv4 one an AF_INET listener, else a dual-stack
// AF_INET6 one (Linux's lookup scores the AF_INET listener higher).
func (h *Host) listener(seg *wire.Segment) *conn {
	if seg.Dst.Is6() {
		return h.listens[listenKey{seg.DstPort, true}]
	}
	if l := h.listens[listenKey{seg.DstPort, false}]; l != nil {
		return l
	}
	if l := h.listens[listenKey{seg.DstPort, true}]; l != nil && l.takes(seg) {
		return l
	}
	return nil
}

// disjoint says two sockets' address spaces do not meet: an AF_INET one
// and an AF_INET6 one with IPV6_V6ONLY (inet_bind_conflict and
// ipv6_rcv_saddr_equal see no overlap).
func disjoint(a, b *conn) bool {
	return !a.v6 && b.v6 && b.v6only || !b.v6 && a.v6 && a.v6only
}

// bindConflict mirrors inet_csk_bind_conflict: another socket on the port
// conflicts unless both set SO_REUSEADDR and the other is not listening,
// or their families do not meet (disjoint). TIME_WAIT remnants keep the
// SO_REUSEADDR of the socket they came from.
func (h *Host) bindConflict(c *conn, port uint16) *conn {
	b := h.ports[port]
	if b == nil {
		return nil
	}
	var found *conn
	for _, o := range b.socks {
		if o == c || disjoint(c, o) {
			continue
		}
		if c.reuseAddr && o.reuseAddr && o.state != Listen {
			continue
		}
		if found == nil || o.id < found.id { // deterministic choice for messages
			found = o
		}
	}
	return found
}

// fd table

func (h *Host) allocFD(c *conn) FD {
	var fd FD
	if n := len(h.freeFDs); n > 0 {
		// Lowest free descriptor first, as POSIX requires.
		low := 0
		for i := 1; i < n; i++ {
			if h.freeFDs[i] < h.freeFDs[low] {
				low = i
			}
		}
		fd = h.freeFDs[low]
		h.freeFDs[low] = h.freeFDs[n-1]
		h.freeFDs = h.freeFDs[:n-1]
	} else {
		fd = h.nextFD
		h.nextFD++
	}
	h.fds[fd] = c
	c.fd = fd
	return fd
}

func (h *Host) freeFD(c *conn) {
	if c.fd < 0 {
		return
	}
	delete(h.fds, c.fd)
	h.freeFDs = append(h.freeFDs, c.fd)
	c.fd = -1
}

// timerHeap orders connections by their earliest timer; ties go to the
// older connection so that runs are deterministic.
type timerHeap []*conn

func (t timerHeap) less(i, j int) bool {
	if t[i].wakeAt != t[j].wakeAt {
		return t[i].wakeAt < t[j].wakeAt
	}
	return t[i].id < t[j].id
}

func (t timerHeap) swap(i, j int) {
	t[i], t[j] = t[j], t[i]
	t[i].heapIdx = i
	t[j].heapIdx = j
}

func (t *timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *timerHeap) down(i int) {
	n := len(*t)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}

func (t *timerHeap) push(c *conn) {
	c.heapIdx = len(*t)
	*t = append(*t, c)
	t.up(c.heapIdx)
}

func (t *timerHeap) remove(c *conn) {
	i := c.heapIdx
	last := len(*t) - 1
	if i != last {
		t.swap(i, last)
	}
	(*t)[last] = nil
	*t = (*t)[:last]
	if i != last {
		t.down(i)
		t.up(i)
	}
	c.heapIdx = -1
}

func (t *timerHeap) fix(c *conn) {
	t.down(c.heapIdx)
	t.up(c.heapIdx)
}
