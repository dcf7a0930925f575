package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// The states an end can be in, as Linux names them.
const (
	Closed      = "CLOSED"
	Listen      = "LISTEN"
	SynSent     = "SYN_SENT"
	SynRecv     = "SYN_RECV"
	Established = "ESTABLISHED"
	FinWait1    = "FIN_WAIT1"
	FinWait2    = "FIN_WAIT2"
	Closing     = "CLOSING"
	TimeWait    = "TIME_WAIT"
	CloseWait   = "CLOSE_WAIT"
	LastAck     = "LAST_ACK"
)

// timeWaitLen is Linux's TIME_WAIT (TCP_TIMEWAIT_LEN).
const timeWaitLen = 60 * time.Second

// endGrace is how long a connection that ended (RST, last ACK) stays
// open to the packets still in flight, in capture time.
const endGrace = time.Second

// overGrace is how long a connection whose ends are both done, one in
// TIME_WAIT, stays open to late packets (a FIN sent again because the
// last ACK was lost, on a backoff of 0.2, 0.4, 0.8, 1.6 s). Then it is
// reported, its TIME_WAIT's end told as probable, and only a small
// record of the TIME_WAIT is kept, to know a new SYN that reuses it: so
// memory follows the connections in progress, not those in TIME_WAIT.
const overGrace = 5 * time.Second

// maxTimeWaits bounds the TIME_WAIT records kept (about 150 bytes each);
// past it, a SYN reusing an older one is not known as such.
const maxTimeWaits = 1 << 20

// twRecord is a TIME_WAIT a reported connection left behind (small:
// there may be a minute of connections).
type twRecord struct {
	index  int   // its connection
	frame  int   // the packet that put it there
	until  int64 // Unix nanoseconds
	server bool  // the end in TIME_WAIT is the server
}

type twExpiry struct {
	k     twKey
	until int64
}

// twKey is a 4-tuple, compact.
type twKey struct {
	a, b   [16]byte
	pa, pb uint16
}

func twKeyOf(k key) twKey {
	return twKey{k.a.Addr().As16(), k.b.Addr().As16(), k.a.Port(), k.b.Port()}
}

// Change is one inferred state change of an end.
type Change struct {
	At       time.Time
	Frame    int // the packet that caused it (0: a timer, or the capture's end)
	From, To string
	Cause    string
	// Probably says why the capture cannot be sure ("" when it saw it).
	Probably string
}

// End is one side of a connection, as the capture lets us infer it.
type End struct {
	Name    string // "client" or "server"
	Addr    netip.AddrPort
	State   string
	Changes []Change

	iss              wire.Seq
	hasISS           bool
	sndNxt           wire.Seq // after the highest sequence number it sent
	finSeq           wire.Seq // its FIN's sequence number
	finSent, finAckd bool
	rcvNxt           wire.Seq // after the highest in-order number it was sent
	hasRcv           bool
	wscale           uint8
	synRetrans       int
	// The transmissions of its oldest unacknowledged segment: when it was
	// last sent and the gap before that (a retransmission's timeout).
	txSeq        wire.Seq
	txAt, txPrev time.Time
	txCount      int
	lastSent     time.Time
	timerFrom    time.Time // a restart of its state's timer
	// ackNotTaken: in SYN_RECV, an ACK of its SYN-ACK was seen and not
	// taken (it sent the SYN-ACK again); later ones may not be either:
	// pending is the first ACK since, taken only if it shows it is
	// established.
	ackNotTaken bool
	pending     *Packet
	// finHeld: the peer's FIN did not reach it (it never acknowledged
	// it, the FIN came again); it takes the FIN when it acknowledges it.
	finHeld bool
	// synackHeld: likewise for the SYN-ACK (in SYN_SENT, it never
	// acknowledged it and the SYN-ACK came again).
	synackHeld bool
	acked      wire.Seq // the highest ACK the peer sent it
	hasAcked   bool

	ev endEvidence // what the findings are made of
}

// Conn is one connection of the capture: a 4-tuple from a SYN (or from
// the capture's start) to its end. A 4-tuple used again after the
// connection closed is a new Conn.
type Conn struct {
	Index       int // from 1, in the order connections start
	Client      *End
	Server      *End
	First, Last time.Time
	FirstFrame  int
	Packets     int
	Bytes       [2]int64 // payload: client to server, server to client
	// Notes are what the capture could not see, in the connection's
	// order ("the capture starts mid-connection").
	Notes  []string
	Events []trace.Event // with Options.Events
	// EventsCut: Options.MaxEvents stopped Events short.
	EventsCut bool
	// Dups counts the packets seen twice, on two interfaces of one
	// capture (both hosts' taps): each is taken once.
	Dups   int
	recent *[recentLen]seen // nil once the connection is over
	ri     int
	// dual: the capture has both ends' taps (taps: interface to end);
	// each end's changes are taken at its own tap's copy.
	dual   bool
	taps   map[int]*End
	ended  bool
	nextID uint64
	t0     time.Time
	// Findings are what the connection's packets show (see Finding).
	Findings  []Finding
	sawFin    bool
	sawRst    bool
	reusedBy  int // the frame of a SYN that took over its TIME_WAIT
	twNearEnd bool
	queued    bool // in the tracker's queues of connections done
	moreNotes int
	inHS      bool
	split     bool      // a new connection took its 4-tuple while it was open
	seenUntil time.Time // the capture's time when it was reported
	// prev, next: the tracker's list of open connections, the one
	// whose last packet is oldest first.
	prev, next *Conn
	evCap      int       // events kept at most (0: no bound)
	reuseOf    *twRecord // the TIME_WAIT of a reported connection its SYN took over
}

// Ends returns the client and the server.
func (c *Conn) Ends() [2]*End { return [2]*End{c.Client, c.Server} }

// String is the connection's one-line summary.
func (c *Conn) String() string {
	return fmt.Sprintf("#%d %v > %v", c.Index, c.Client.Addr, c.Server.Addr)
}

// Options steer a Tracker.
type Options struct {
	// Events keeps each connection's trace events (packets and state
	// changes), for the views; without it only the summary is kept.
	Events bool
	// EventsFor keeps the events of the connections it says yes to
	// (with their index, client and server), when Events is off.
	EventsFor func(index int, client, server netip.AddrPort) bool
	// MaxEvents bounds the events kept for one connection (0: no bound).
	MaxEvents int
	// MaxUnzipped bounds a gzip capture's uncompressed bytes (Read; 0:
	// no bound).
	MaxUnzipped int64
	// MaxOpen bounds the connections held open (0: no bound): past it,
	// the one in its handshake silent longest is reported at once, and
	// CutShort counts them.
	MaxOpen int
	// T0 is time zero of the events (the capture's first packet when
	// zero).
	T0 time.Time
}

// Tracker groups packets into connections and infers both ends' states.
// Its memory grows with the connections still open, not with the
// capture: a connection that ended is handed to Done.
type Tracker struct {
	opt       Options
	open      map[key]*Conn
	count     int
	t0        time.Time
	last      time.Time
	nextSweep time.Time
	floods    map[netip.AddrPort]*flood
	final     bool
	tw        map[twKey]twRecord
	spare     []*[recentLen]seen
	twOrder   []twExpiry // the records, in the order they were made
	doneQ     []*Conn    // connections done, in the order they were
	// hsHead, hsTail: the connections still in their handshake, the
	// one silent longest first.
	hsHead, hsTail *Conn
	// CutShort counts the connections reported early (Options.MaxOpen).
	CutShort int
	// iface0, ifaces, multi: whether the capture has shown a second
	// interface yet (until then no packet can be another's copy).
	iface0, ifaces int
	multi          bool
	twQ            []*Conn // and of those, the ones with an end in TIME_WAIT
	// Done receives each connection once it has ended (or, at Flush, the
	// ones still open), in the order they end.
	Done func(*Conn)
}

type key struct{ a, b netip.AddrPort }

// seen is a packet's identity, to know it again on another interface.
// It is kept small: a connection holds recentLen of them.
type seen struct {
	seq, ack wire.Seq
	ts       uint32
	len      int32
	at       int64 // Unix nanoseconds
	live     bool  // false: none, or its copy was matched
	iface    int32
	id       uint16
	win      uint16
	sack     uint8 // SACK blocks
	flags    wire.Flags
	fromCli  bool
	// The receiver's changes this packet made (Changes[from:to]), and
	// where its events start: retimed to the receiving tap's copy.
	rcv                *End
	chFrom, chTo, evAt int32
}

// recentLen is how many packets a connection remembers to know their
// copies at another tap: the packets in flight between two taps.
const recentLen = 16

// match finds the copy of p already taken from another interface of the
// capture (the same segment, the same IP ID and timestamp, within 2 s).
func (c *Conn) match(p *Packet) *seen {
	if c.recent == nil {
		return nil
	}
	s := &p.Segment
	fromCli := c.Client.Addr == netip.AddrPortFrom(s.Src, s.SrcPort)
	now := p.Time.UnixNano()
	for i := range c.recent {
		r := &c.recent[i]
		if r.seq == s.Seq && r.ack == s.Ack && r.iface != int32(p.Iface) && r.flags == s.Flags && r.id == s.ID &&
			r.ts == s.Options.TSVal && r.len == int32(p.Len) && r.fromCli == fromCli && r.live && now-r.at < int64(2*time.Second) {
			return r
		}
	}
	return nil
}

// copyOf says whether p is a second copy of a packet on the same
// interface within a millisecond: tcpdump -i any sees a loopback packet
// going out and coming in. A retransmission differs in IP ID or
// timestamp; a packet with neither is not judged.
func (c *Conn) copyOf(p *Packet) bool {
	s := &p.Segment
	if c.recent == nil || s.ID == 0 {
		return false // IPv6, or no IP ID: a copy cannot be told from a new packet
	}
	fromCli := c.Client.Addr == netip.AddrPortFrom(s.Src, s.SrcPort)
	now := p.Time.UnixNano()
	for i := range c.recent {
		r := &c.recent[i]
		if r.seq == s.Seq && r.ack == s.Ack && r.iface == int32(p.Iface) && r.flags == s.Flags && r.id == s.ID && r.win == s.Window &&
			r.sack == uint8(len(s.Options.SACK)) && r.ts == s.Options.TSVal && r.len == int32(p.Len) && r.fromCli == fromCli &&
			r.at <= now && now-r.at <= int64(time.Millisecond) {
			return true
		}
	}
	return false
}

// remember keeps p's identity, to know its copy on another interface.
func (c *Conn) remember(p *Packet) *seen {
	s := &p.Segment
	if c.recent == nil {
		c.recent = new([recentLen]seen) // a late packet after it was let go
	}
	r := &c.recent[c.ri%recentLen]
	*r = seen{seq: s.Seq, ack: s.Ack, flags: s.Flags, id: s.ID, win: s.Window, sack: uint8(len(s.Options.SACK)), ts: s.Options.TSVal, len: int32(p.Len),
		fromCli: c.Client.Addr == netip.AddrPortFrom(s.Src, s.SrcPort), iface: int32(p.Iface), at: p.Time.UnixNano(), live: true}
	c.ri++
	return r
}

// retime moves the receiver's changes that a packet made to the copy of
// it seen at the receiver's own tap: that is when it took the packet.
func (c *Conn) retime(r *seen, p *Packet) {
	e := r.rcv
	if e == nil || int(r.chTo) > len(e.Changes) {
		return
	}
	for i := r.chFrom; i < r.chTo; i++ {
		if e.Changes[i].Frame != 0 && p.Time.After(e.Changes[i].At) {
			e.Changes[i].At, e.Changes[i].Frame = p.Time, p.Frame
		}
	}
	if c.Events == nil {
		return
	}
	for i := int(r.evAt); i < len(c.Events); i++ {
		ev := &c.Events[i]
		if ev.Host == e.Name && (ev.Kind == trace.KindState || ev.Kind == trace.KindNote) {
			ev.At = p.Time.Sub(c.t0)
		}
		if ev.Kind == trace.KindPacket && ev.Host == e.Name && ev.Packet.Dir == trace.In && ev.Packet.ID == c.nextID {
			ev.At = p.Time.Sub(c.t0)
		}
	}
}

func keyOf(s *wire.Segment) key {
	return keyOf2(netip.AddrPortFrom(s.Src, s.SrcPort), netip.AddrPortFrom(s.Dst, s.DstPort))
}

func keyOf2(x, y netip.AddrPort) key {
	if y.Compare(x) < 0 {
		x, y = y, x
	}
	return key{x, y}
}

func (r *twRecord) endName() string {
	if r.server {
		return "server"
	}
	return "client"
}

// NewTracker returns a tracker that hands finished connections to done.
func NewTracker(opt Options, done func(*Conn)) *Tracker {
	return &Tracker{opt: opt, open: map[key]*Conn{}, Done: done, t0: opt.T0}
}

// Add takes the capture's next packet.
func (t *Tracker) Add(p *Packet) {
	if t.t0.IsZero() {
		t.t0 = p.Time
	}
	t.last = p.Time
	s := &p.Segment
	k := keyOf(s)
	c := t.open[k]
	syn := s.Flags&wire.SYN != 0 && s.Flags&wire.ACK == 0
	if c != nil && syn && !c.over() && c.Client.hasISS && c.Client.ev.syn.n > 0 && s.Seq != c.Client.iss &&
		c.endFrom(s) == c.Client {
		// The client starts over with another ISN (it lost the old
		// connection: a restart): the old one is reported as it stands.
		c.note(p, "the client sent a new SYN with another ISN on this 4-tuple: it started a new connection (it had lost this one)")
		c.split = true
		c.atEnd(p.Time, false)
		t.finish(c)
		c = nil
	}
	if c != nil && syn && c.over() {
		// The 4-tuple again after the connection ended: a new one. An
		// end still in TIME_WAIT is taken over by it.
		for _, e := range c.Ends() {
			if e.State == TimeWait {
				c.note(p, "the 4-tuple was reused by a new SYN while "+e.Name+" was in TIME_WAIT")
				c.reusedBy = p.Frame
				// Within a second of its 60 s: Linux's timer may have
				// fired already; no finding.
				c.twNearEnd = p.Time.Sub(e.since()) > timeWaitLen-time.Second
				c.set(e, p, Closed, "TIME_WAIT ended by a new SYN on its 4-tuple", "")
			}
		}
		t.finish(c)
		c = nil
	}
	if c == nil && t.opt.MaxOpen > 0 && len(t.open) >= t.opt.MaxOpen {
		// One that is done, else the handshake silent longest, else
		// any (map order: a capture this hostile has no better choice).
		var old *Conn
		for len(t.doneQ) > 0 && old == nil {
			if o := t.doneQ[0]; t.open[keyOf2(o.Client.Addr, o.Server.Addr)] == o {
				old = o
			}
			t.doneQ[0], t.doneQ = nil, t.doneQ[1:]
		}
		if old == nil {
			old = t.hsHead
		}
		if old == nil {
			for _, o := range t.open {
				old = o
				break
			}
		}
		t.CutShort++
		old.note(p, "reported early: the capture has more connections at once than this reader keeps open")
		old.atEnd(t.last, false)
		t.finish(old)
	}
	if c == nil {
		var rec twRecord
		inTW := false
		if t.tw != nil {
			tk := twKeyOf(k)
			rec, inTW = t.tw[tk]
			if inTW {
				delete(t.tw, tk)
				inTW = p.Time.UnixNano() < rec.until
			}
		}
		c = t.start(p)
		t.open[k] = c
		if inTW {
			c.note(p, fmt.Sprintf("the 4-tuple was in TIME_WAIT at the %s of connection #%d (since frame %d)", rec.endName(), rec.index, rec.frame))
			if syn {
				c.reuseOf = &rec
			}
		}
	}
	snd := c.endFrom(s)
	if !t.multi {
		// A copy at another tap needs a second interface.
		if t.ifaces == 0 {
			t.iface0, t.ifaces = p.Iface, 1
		} else if p.Iface != t.iface0 {
			t.multi = true
		}
	}
	if c.copyOf(p) {
		c.Dups++
		t.sweep()
		return
	}
	var m *seen
	if t.multi {
		m = c.match(p)
	}
	switch {
	case m != nil:
		// The same packet at a second tap: the receiver's.
		m.live = false // matched: a third copy is another packet
		c.Dups++
		if !c.dual {
			// Both hosts' taps: from now on each end's changes are
			// taken at its own tap; the receiver's changes this packet
			// made move to this copy.
			c.dual = true
			c.taps = map[int]*End{int(m.iface): snd, p.Iface: c.otherOf(s)}
			c.retime(m, p)
		} else {
			if c.taps[int(m.iface)] != snd {
				c.forgedRst(p, snd)
			}
			c.add(p, false, true)
		}
	case c.dual && c.taps[p.Iface] == snd:
		c.remember(p)
		c.add(p, true, false)
	case c.dual:
		// Not at its sender's tap: a copy whose sender's copy is out
		// of reach (many packets in flight), or one the sender never
		// sent. Its receiver takes it at its own tap.
		c.remember(p)
		if c.taps[p.Iface] == c.otherOf(s) {
			c.forgedRst(p, snd)
			c.add(p, false, true)
		}
	default:
		r := c.remember(p)
		rcv := c.otherOf(s)
		r.rcv, r.chFrom, r.evAt = rcv, int32(len(rcv.Changes)), int32(len(c.Events))
		c.add(p, true, true)
		r.chTo = int32(len(rcv.Changes))
	}
	if !c.queued && (c.ended || c.over()) {
		c.queued = true
		t.doneQ = append(t.doneQ, c)
	}
	// Still (or again, after an undo) in its handshake: last in the list.
	hs := c.inHandshake()
	if c.inHS {
		t.unlink(c)
	}
	if hs && !c.queued {
		t.link(c)
	}
	t.sweep()
}

// Flush ends the capture: every connection still open is handed to
// Done, with what happened after the last packet that Linux's timers
// make certain enough to say (TIME_WAIT's end).
func (t *Tracker) Flush() {
	conns := make([]*Conn, 0, len(t.open))
	for _, c := range t.open {
		conns = append(conns, c)
	}
	sort.Slice(conns, func(i, j int) bool { return conns[i].Index < conns[j].Index })
	t.final = true
	for _, c := range conns {
		c.atEnd(t.last, true)
		t.finish(c)
	}
}

// Findings are the capture-wide findings (a SYN flood), known once the
// capture is flushed.
func (t *Tracker) Findings() []Finding { return t.floodFindings() }

// sweep, once a second of capture time, reports the connections that
// are done (ended by a RST or the last ACK, or both ends closed or in
// TIME_WAIT) and had their grace for late packets, so that memory follows
// the connections in progress. It looks only at those: they wait in two
// queues, in the order they were done.
func (t *Tracker) sweep() {
	if t.last.Before(t.nextSweep) {
		return
	}
	t.nextSweep = t.last.Add(time.Second)
	var done []*Conn
	live := func(c *Conn) bool { return t.open[keyOf2(c.Client.Addr, c.Server.Addr)] == c }
	// Handshakes silent for longer than Linux keeps trying: reported
	// (a SYN flood's half-open requests would otherwise stay).
	for c := t.hsHead; c != nil && t.last.Sub(c.Last) >= handshakeIdle; c = t.hsHead {
		t.unlink(c)
		if live(c) && !c.queued {
			c.atEnd(t.last, false)
			done = append(done, c)
		}
	}
	// Done a second ago: let go of their packet memory; report those
	// with no TIME_WAIT; the rest wait for overGrace.
	for len(t.doneQ) > 0 {
		c := t.doneQ[0]
		if !live(c) || !(c.ended || c.over()) {
			c.queued = false // reported, or a later packet revised it
			t.doneQ[0], t.doneQ = nil, t.doneQ[1:]
			continue
		}
		if t.last.Sub(c.Last) < endGrace {
			break
		}
		t.doneQ[0], t.doneQ = nil, t.doneQ[1:]
		if c.recent != nil {
			t.freeRecent(c)
		}
		if c.ended || (c.Client.State != TimeWait && c.Server.State != TimeWait) {
			done = append(done, c)
			continue
		}
		t.twQ = append(t.twQ, c)
	}
	for len(t.twQ) > 0 {
		c := t.twQ[0]
		if !live(c) || !c.over() {
			c.queued = false
			t.twQ[0], t.twQ = nil, t.twQ[1:]
			continue
		}
		if t.last.Sub(c.Last) < overGrace {
			break
		}
		t.twQ[0], t.twQ = nil, t.twQ[1:]
		c.atEnd(t.last, false) // a TIME_WAIT that already ran out
		for _, e := range c.Ends() {
			if e.State != TimeWait {
				continue
			}
			// Reported now; a record of its TIME_WAIT stays.
			until := e.since().Add(timeWaitLen)
			if len(t.tw) < maxTimeWaits {
				if t.tw == nil {
					t.tw = map[twKey]twRecord{}
				}
				tk := twKeyOf(keyOf2(c.Client.Addr, c.Server.Addr))
				t.tw[tk] = twRecord{c.Index, e.Changes[len(e.Changes)-1].Frame, until.UnixNano(), e == c.Server}
				t.twOrder = append(t.twOrder, twExpiry{tk, until.UnixNano()})
			}
			c.set(e, &Packet{Time: until}, Closed, "TIME_WAIT timer (60 s)", "Linux's TIME_WAIT lasts 60 s")
		}
		done = append(done, c)
	}
	// TIME_WAIT records run out about in the order they were made.
	now := t.last.UnixNano()
	for len(t.twOrder) > 0 && now >= t.twOrder[0].until {
		k := t.twOrder[0].k
		if r, ok := t.tw[k]; ok && now >= r.until {
			delete(t.tw, k)
		}
		t.twOrder = t.twOrder[1:]
	}
	sort.Slice(done, func(i, j int) bool { return done[i].Index < done[j].Index })
	for _, c := range done {
		t.finish(c)
	}
}

// handshakeIdle is how long a connection still in its handshake (no end
// ever ESTABLISHED) may stay silent before it is reported: Linux's
// connect() gives up after 127 s, a SYN_RECV entry after 63 s.
const handshakeIdle = 130 * time.Second

func (t *Tracker) link(c *Conn) {
	c.inHS = true
	c.prev, c.next = t.hsTail, nil
	if t.hsTail != nil {
		t.hsTail.next = c
	} else {
		t.hsHead = c
	}
	t.hsTail = c
}

func (t *Tracker) unlink(c *Conn) {
	if !c.inHS {
		return
	}
	c.inHS = false
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		t.hsHead = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		t.hsTail = c.prev
	}
	c.prev, c.next = nil, nil
}

// inHandshake says whether no end of c has been ESTABLISHED.
func (c *Conn) inHandshake() bool {
	for _, e := range c.Ends() {
		switch e.State {
		case Closed, Listen, SynSent, SynRecv:
		default:
			return false
		}
		for _, ch := range e.Changes {
			if ch.To == Established {
				return false
			}
		}
	}
	return true
}

// newRecent gives a connection its packet memory, from those of
// connections that let theirs go when there are.
func (t *Tracker) newRecent() *[recentLen]seen {
	if n := len(t.spare); n > 0 {
		r := t.spare[n-1]
		t.spare = t.spare[:n-1]
		*r = [recentLen]seen{}
		return r
	}
	return new([recentLen]seen)
}

func (t *Tracker) freeRecent(c *Conn) {
	if len(t.spare) < 1024 {
		t.spare = append(t.spare, c.recent)
	}
	c.recent = nil
}

func (t *Tracker) finish(c *Conn) {
	t.unlink(c)
	if c.recent != nil {
		t.freeRecent(c)
	}
	delete(t.open, key{c.Client.Addr, c.Server.Addr})
	delete(t.open, key{c.Server.Addr, c.Client.Addr})
	c.conclude(t.final, t.last)
	t.countFlood(c)
	if t.Done != nil {
		t.Done(c)
	}
}

// start makes a connection of a packet: its client is the end that sent
// the first SYN; mid-connection, the end with the higher port.
func (t *Tracker) start(p *Packet) *Conn {
	t.count++
	s := &p.Segment
	src, dst := netip.AddrPortFrom(s.Src, s.SrcPort), netip.AddrPortFrom(s.Dst, s.DstPort)
	// One allocation: the connection, its ends, and room for about six
	// changes an end (a connection's life).
	a := &struct {
		c      Conn
		cl, sv End
		ch     [12]Change
	}{}
	c := &a.c
	*c = Conn{Index: t.count, First: p.Time, FirstFrame: p.Frame, t0: t.t0, Client: &a.cl, Server: &a.sv}
	switch {
	case s.Flags&wire.SYN != 0 && s.Flags&wire.ACK == 0:
		c.Client.Addr, c.Server.Addr = src, dst
		c.Client.State, c.Server.State = Closed, Listen
	case s.Flags&wire.SYN != 0:
		c.Client.Addr, c.Server.Addr = dst, src
		c.Client.State, c.Server.State = SynSent, Listen
		c.note(p, "the capture missed the client's SYN")
	default:
		if s.SrcPort < s.DstPort {
			src, dst = dst, src
		}
		c.Client.Addr, c.Server.Addr = src, dst
		c.Client.State, c.Server.State = Established, Established
		c.note(p, "the capture starts mid-connection: both ends are taken as ESTABLISHED")
	}
	c.Client.Name, c.Server.Name = "client", "server"
	c.Client.Changes, c.Server.Changes = a.ch[:0:6], a.ch[6:6:12]
	c.recent = t.newRecent()
	c.evCap = t.opt.MaxEvents
	if s.Flags&wire.SYN != 0 {
		t.link(c) // in its handshake: let go if it stays silent
	}
	if !t.opt.Events && (t.opt.EventsFor == nil || !t.opt.EventsFor(c.Index, c.Client.Addr, c.Server.Addr)) {
		c.Events = nil
	} else {
		c.Events = []trace.Event{}
	}
	return c
}

// maxNotes bounds a connection's notes (a flood of blind RSTs makes one
// each); the rest are counted in the last.
const maxNotes = 32

// event keeps a trace event, up to the connection's bound.
func (c *Conn) event(e trace.Event) {
	if c.evCap > 0 && len(c.Events) >= c.evCap {
		c.EventsCut = true
		return
	}
	c.Events = append(c.Events, e)
}

// zeroPayload stands for the payload of the packets kept as events: the
// views need its length, not its bytes (one shared, never written).
var zeroPayload [65536]byte

func zeros(n int) []byte {
	n = max(n, 0)
	if n > len(zeroPayload) {
		return make([]byte, n) // a GSO packet's: rare
	}
	return zeroPayload[:n:n]
}

func (c *Conn) note(p *Packet, text string) {
	switch n := len(c.Notes); {
	case n < maxNotes:
		c.Notes = append(c.Notes, fmt.Sprintf("frame %d: %s", p.Frame, text))
	case n == maxNotes:
		c.Notes = append(c.Notes, "")
		fallthrough
	default:
		c.moreNotes++
		c.Notes[maxNotes] = fmt.Sprintf("and %d more notes like these", c.moreNotes)
	}
}

// over says whether both ends are done with the connection.
func (c *Conn) over() bool {
	done := func(s string) bool { return s == Closed || s == TimeWait || s == Listen }
	return done(c.Client.State) && done(c.Server.State)
}

// endFrom is the end that sent s; otherOf the end it went to.
func (c *Conn) endFrom(s *wire.Segment) *End {
	if c.Client.Addr == netip.AddrPortFrom(s.Src, s.SrcPort) {
		return c.Client
	}
	return c.Server
}

func (c *Conn) otherOf(s *wire.Segment) *End {
	if c.Client.Addr == netip.AddrPortFrom(s.Src, s.SrcPort) {
		return c.Server
	}
	return c.Client
}

func (c *Conn) set(e *End, p *Packet, to, cause, probably string) {
	if e.State == to {
		return
	}
	ch := Change{At: p.Time, Frame: p.Frame, From: e.State, To: to, Cause: cause, Probably: probably}
	e.Changes = append(e.Changes, ch)
	if c.Events != nil {
		c.event(trace.Event{At: p.Time.Sub(c.t0), Host: e.Name, Kind: trace.KindState,
			Local: e.Addr, Remote: c.peer(e).Addr,
			State: &trace.StateChange{From: e.State, To: to, CauseKind: causeKind(p), Cause: cause}})
		if probably != "" {
			c.event(trace.Event{At: p.Time.Sub(c.t0), Host: e.Name, Kind: trace.KindNote,
				Local: e.Addr, Remote: c.peer(e).Addr, Note: "probably: " + probably})
		}
	}
	e.State = to
}

// unset takes back an end's last change (the inference learned better).
func (c *Conn) unset(e *End) {
	last := e.Changes[len(e.Changes)-1]
	e.Changes = e.Changes[:len(e.Changes)-1]
	e.State = last.From
	for i := len(c.Events) - 1; i >= 0; i-- {
		ev := &c.Events[i]
		if ev.Kind == trace.KindState && ev.Host == e.Name && ev.State.To == last.To {
			c.Events = append(c.Events[:i], c.Events[i+1:]...)
			break
		}
	}
}

func causeKind(p *Packet) string {
	if p.Frame == 0 {
		return "timer"
	}
	return "segment"
}

// Peer is the other end.
func (c *Conn) Peer(e *End) *End { return c.peer(e) }

func (c *Conn) peer(e *End) *End {
	if e == c.Client {
		return c.Server
	}
	return c.Client
}

// add infers what a packet did to both ends: with send, to its sender as
// it sent it; with recv, to its receiver as it took it. A capture with
// one tap applies both at once (where the ends are far apart, the
// receiver's change comes later than the capture says); with both
// hosts' taps, each at its own tap's copy, so that a packet lost on the
// way changes only its sender.
func (c *Conn) add(p *Packet, send, recv bool) {
	s := &p.Segment
	snd, rcv := c.endFrom(s), c.otherOf(s)
	if send {
		c.Packets++
		if snd == c.Client {
			c.Bytes[0] += int64(p.Len)
		} else {
			c.Bytes[1] += int64(p.Len)
		}
	}
	idle := p.Time.Sub(c.Last)
	c.Last = p.Time
	if c.Events != nil {
		at := p.Time.Sub(c.t0)
		seg := *s
		seg.Options.Order = slices.Clone(seg.Options.Order) // the reader's memory
		seg.Payload = zeros(p.Len)                          // its length; the bytes are not in the capture's summary
		if send {
			c.nextID++
			c.event(trace.Event{At: at, Host: snd.Name, Kind: trace.KindPacket, Local: snd.Addr, Remote: rcv.Addr,
				Packet: &trace.Packet{ID: c.nextID, Dir: trace.Out, Segment: seg, Verdict: trace.VerdictPass, OnWire: true}})
		}
		if recv {
			id := c.nextID
			if !send {
				id = c.idOf(s)
			}
			c.event(trace.Event{At: at, Host: rcv.Name, Kind: trace.KindPacket, Local: rcv.Addr, Remote: snd.Addr,
				Packet: &trace.Packet{ID: id, Dir: trace.In, Segment: seg, Verdict: trace.VerdictPass, OnWire: true}})
		}
	}
	// Timers that ran out before this packet: the end it concerns had
	// already gone (a RST it sends then comes from no socket).
	if send {
		c.expire(snd, p.Time)
	}
	if recv {
		c.expire(rcv, p.Time)
	}
	f := s.Flags
	end := s.Seq.Add(p.Len)
	if f&wire.SYN != 0 {
		end = end.Add(1)
	}
	if f&wire.FIN != 0 {
		end = end.Add(1)
	}
	if send {
		c.observeSend(p, snd, rcv, idle)
		c.sent(p, snd, end)
	}
	if recv {
		c.observeRecv(p, rcv)
	}

	switch {
	case f&wire.RST != 0:
		c.rst(p, snd, rcv, send, recv)
		return
	case f&wire.SYN != 0 && f&wire.ACK == 0:
		if send {
			switch snd.State {
			case Closed, Listen:
				snd.State = Closed // a listener sends no SYN: this end connects
				c.set(snd, p, SynSent, "connect(), snd SYN", "")
			}
		}
		if recv && rcv.State == SynSent {
			// Simultaneous open: both sent a SYN.
			c.set(rcv, p, SynRecv, "rcv SYN (simultaneous open), snd SYN,ACK", "")
		}
		return
	case f&wire.SYN != 0:
		// SYN-ACK.
		if send {
			switch snd.State {
			case Listen, Closed, SynSent:
				c.set(snd, p, SynRecv, "rcv SYN, snd SYN,ACK", "")
			}
			snd.pending = nil
		}
		if recv {
			if rcv.hasISS && s.Ack == rcv.iss.Add(1) {
				// It acknowledges the SYN: the SYN's transmissions end.
				rcv.acked, rcv.hasAcked = s.Ack, true
				if rcv.txCount > 0 && s.Ack.GreaterThan(rcv.txSeq) {
					rcv.txCount = 0
				}
			}
			if rcv.State == SynSent && s.Ack == rcv.iss.Add(1) && !rcv.synackHeld {
				c.set(rcv, p, Established, "rcv SYN,ACK, snd ACK", "")
			}
			rcv.rcvNxt, rcv.hasRcv = s.Seq.Add(1), true
		}
		return
	}
	// An ACK, maybe with data and a FIN. First what it acknowledges.
	if recv && f&wire.ACK != 0 {
		c.ackOf(p, snd, rcv)
	}
	if send && snd.State == SynRecv && snd.pending != nil {
		// It sends more than its SYN-ACK: the ACK was taken at last.
		c.set(snd, snd.pending, Established, "rcv ACK of SYN", "an earlier ACK was not taken (its SYN-ACK came again); this one was, since it now sends")
		snd.pending = nil
	}
	if send && snd.finHeld && f&wire.ACK != 0 && c.peer(snd).finSent && s.Ack.GreaterThan(c.peer(snd).finSeq) {
		snd.finHeld = false
		c.fin(p, c.peer(snd), snd, false, true)
	}
	if send && snd.State == SynSent && f&wire.ACK != 0 {
		c.set(snd, p, Established, "rcv SYN,ACK, snd ACK", "the capture missed the SYN-ACK")
	}
	if recv && (end.GreaterThan(rcv.rcvNxt) || !rcv.hasRcv) {
		rcv.rcvNxt, rcv.hasRcv = end, true
	}
	if f&wire.FIN != 0 {
		c.fin(p, snd, rcv, send, recv)
	}
}

// sent keeps the sender's bookkeeping: its ISN, what it sent, and the
// transmissions of its oldest unacknowledged segment.
func (c *Conn) sent(p *Packet, snd *End, end wire.Seq) {
	s := &p.Segment
	prevISS, hadISS := snd.iss, snd.hasISS
	if s.Flags&wire.SYN != 0 {
		if snd.hasISS && snd.iss == s.Seq {
			snd.synRetrans++
		}
		snd.iss, snd.hasISS = s.Seq, true
		if s.Options.HasWScale {
			snd.wscale = s.Options.WScale
		}
	}
	if !snd.hasISS {
		snd.iss, snd.hasISS = s.Seq, true
	}
	if end.GreaterThan(snd.sndNxt) || snd.sndNxt == 0 {
		snd.sndNxt = end
	}
	snd.lastSent = p.Time
	// A segment sent again after the capture saw its ACK: that ACK was
	// seen but never taken (a full accept queue drops it, a firewall on
	// the host may): what it was taken to do is undone.
	if n := len(snd.Changes); n > 0 {
		last := snd.Changes[n-1]
		switch {
		case s.Flags&wire.SYN != 0 && s.Flags&wire.ACK != 0 && snd.State == Established && last.Cause == "rcv ACK of SYN" &&
			hadISS && s.Seq == prevISS && !c.peer(snd).ev.syn.last.time().After(last.At) &&
			p.Time.Sub(snd.ev.synackPrev.time()) >= 500*time.Millisecond: // its timer's, not an answer to another SYN
			c.unset(snd)
			snd.ackNotTaken = true
			if snd.ev.ackNotTaken.frame == 0 {
				snd.ev.ackNotTaken, snd.ev.synackAgain = mark{last.Frame, last.At.UnixNano()}, markOf(p)
			}
			c.note(p, fmt.Sprintf("%s sent its SYN-ACK again: the ACK of frame %d never reached its socket (a full accept queue drops it)", snd.Name, last.Frame))
		case s.Flags&wire.SYN != 0 && s.Flags&wire.ACK == 0 && snd.State == Established && last.Cause == "rcv SYN,ACK, snd ACK" && hadISS && s.Seq == prevISS:
			c.unset(snd)
			c.note(p, fmt.Sprintf("%s sent its SYN again: the SYN-ACK of frame %d never reached its socket (dropped on its host)", snd.Name, last.Frame))
		case s.Flags&wire.FIN != 0 && snd.finAckd && s.Seq.Add(p.Len) == snd.finSeq && last.Cause == "rcv ACK of FIN":
			c.unset(snd)
			snd.finAckd = false
			c.note(p, fmt.Sprintf("%s sent its FIN again: the ACK of frame %d never reached its socket", snd.Name, last.Frame))
		}
	}
	// Its SYN-ACK sent again, and the peer sent nothing since it took the
	// first: its socket never did (dropped on its host).
	if rcv := c.peer(snd); s.Flags&(wire.SYN|wire.ACK) == wire.SYN|wire.ACK && hadISS && s.Seq == prevISS && !rcv.synackHeld && rcv.State == Established {
		if n := len(rcv.Changes); n > 0 && rcv.Changes[n-1].Cause == "rcv SYN,ACK, snd ACK" && rcv.lastSent.Before(rcv.Changes[n-1].At) {
			frame := rcv.Changes[n-1].Frame
			c.unset(rcv)
			c.note(p, fmt.Sprintf("%s sent its SYN-ACK again and %s never acknowledged it: the SYN-ACK of frame %d never reached %s's socket", snd.Name, rcv.Name, frame, rcv.Name))
			rcv.synackHeld = true
		}
	}
	// Its FIN sent again and never acknowledged: the peer's socket never
	// took the first one, whatever the peer's tap saw.
	if rcv := c.peer(snd); s.Flags&wire.FIN != 0 && snd.finSent && !snd.finAckd && s.Seq.Add(p.Len) == snd.finSeq && !rcv.finHeld {
		if n := len(rcv.Changes); n > 0 && rcv.Changes[n-1].Cause == "rcv FIN" && rcv.Changes[n-1].To == CloseWait {
			frame := rcv.Changes[n-1].Frame
			c.unset(rcv)
			c.note(p, fmt.Sprintf("%s sent its FIN again and %s never acknowledged it: the FIN of frame %d never reached %s's socket", snd.Name, rcv.Name, frame, rcv.Name))
			rcv.finHeld = true
		}
	}
	if end != s.Seq { // it takes sequence space: a (re)transmission
		if snd.txCount > 0 && s.Seq == snd.txSeq {
			snd.txPrev, snd.txAt = snd.txAt, p.Time
			snd.txCount++
		} else if snd.txCount == 0 || s.Seq.GreaterThan(snd.txSeq) && !snd.unacked(snd.txSeq) {
			snd.txSeq, snd.txAt, snd.txPrev, snd.txCount = s.Seq, p.Time, time.Time{}, 1
		}
	}
}

// idOf is the packet ID its sender's copy got (for the receiver's copy).
func (c *Conn) idOf(s *wire.Segment) uint64 {
	for i := len(c.Events) - 1; i >= 0 && i >= len(c.Events)-64; i-- {
		e := &c.Events[i]
		if e.Kind == trace.KindPacket && e.Packet.Dir == trace.Out && e.Packet.Segment.Seq == s.Seq &&
			e.Packet.Segment.Ack == s.Ack && e.Packet.Segment.Flags == s.Flags && e.Packet.Segment.ID == s.ID {
			return e.Packet.ID
		}
	}
	c.nextID++
	return c.nextID
}

// since is when the end's current state began, or its timer last
// restarted (a FIN again in TIME_WAIT restarts its 60 s).
func (e *End) since() time.Time {
	at := e.Changes[len(e.Changes)-1].At
	if e.timerFrom.After(at) {
		return e.timerFrom
	}
	return at
}

// unacked says whether seq was not yet acknowledged by the peer.
func (e *End) unacked(seq wire.Seq) bool { return !e.acked.GreaterThan(seq) || !e.hasAcked }

// ackOf applies what an ACK from snd acknowledges of rcv's.
func (c *Conn) ackOf(p *Packet, snd, rcv *End) {
	s := &p.Segment
	if !rcv.hasAcked || s.Ack.GreaterThan(rcv.acked) {
		rcv.acked, rcv.hasAcked = s.Ack, true
	}
	if rcv.txCount > 0 && s.Ack.GreaterThan(rcv.txSeq) && !(rcv.State == SynRecv && rcv.ackNotTaken) {
		rcv.txCount = 0 // its oldest segment arrived
	}
	if rcv.State == SynRecv && rcv.hasISS && !s.Ack.LessThan(rcv.iss.Add(1)) {
		if !rcv.ackNotTaken {
			c.set(rcv, p, Established, "rcv ACK of SYN", "")
		} else if rcv.pending == nil {
			cp := *p
			rcv.pending = &cp
		}
	}
	if rcv.finSent && !rcv.finAckd && s.Ack.GreaterThan(rcv.finSeq) {
		rcv.finAckd = true
		switch rcv.State {
		case FinWait1:
			c.set(rcv, p, FinWait2, "rcv ACK of FIN", "")
		case Closing:
			c.set(rcv, p, TimeWait, "rcv ACK of FIN", "")
		case LastAck:
			c.set(rcv, p, Closed, "rcv ACK of FIN", "")
			c.ended = c.ended || snd.State == Closed
		}
	}
}

// fin applies a FIN from snd: its own close, and the receiver's side.
func (c *Conn) fin(p *Packet, snd, rcv *End, send, recv bool) {
	s := &p.Segment
	finSeq := s.Seq.Add(p.Len)
	if send && (!snd.finSent || snd.finSeq != finSeq) {
		snd.finSent, snd.finSeq = true, finSeq
		if !c.dual && snd.State == CloseWait && rcv.finSent && !s.Ack.GreaterThan(rcv.finSeq) && len(snd.Changes) > 0 &&
			snd.Changes[len(snd.Changes)-1].To == CloseWait {
			// Its FIN does not acknowledge the peer's: it was sent before
			// that FIN arrived, the two crossed (simultaneous close).
			rcvFin := snd.Changes[len(snd.Changes)-1]
			c.unset(snd)
			c.set(snd, p, FinWait1, "close(), snd FIN", "")
			c.set(snd, &Packet{Frame: rcvFin.Frame, Time: p.Time}, Closing, "rcv FIN (simultaneous close), snd ACK", "the two FINs crossed: its FIN was sent before the peer's arrived")
		}
		switch snd.State {
		case Established, SynRecv:
			c.set(snd, p, FinWait1, "close(), snd FIN", "")
		case CloseWait:
			c.set(snd, p, LastAck, "close(), snd FIN", "")
		}
	}
	if !recv || rcv.finHeld {
		return
	}
	switch rcv.State {
	case Established, SynRecv:
		c.set(rcv, p, CloseWait, "rcv FIN", "")
	case FinWait1:
		if rcv.finAckd {
			c.set(rcv, p, FinWait2, "rcv ACK of FIN", "")
			c.set(rcv, p, TimeWait, "rcv FIN, snd ACK", "")
		} else {
			c.set(rcv, p, Closing, "rcv FIN (simultaneous close), snd ACK", "")
		}
	case FinWait2:
		c.set(rcv, p, TimeWait, "rcv FIN, snd ACK", "")
	case TimeWait:
		rcv.timerFrom = p.Time // tcp_timewait_state_process: a FIN again restarts TIME_WAIT
	}
}

// rst applies a reset: the sender is gone; the receiver closes if the
// RST is acceptable (RFC 5961: exactly its next expected number, or any
// RST answering its SYN).
func (c *Conn) rst(p *Packet, snd, rcv *End, send, recv bool) {
	s := &p.Segment
	if send {
		c.set(snd, p, Closed, "snd RST", "")
	}
	if !recv {
		return
	}
	switch {
	case rcv.State == SynSent:
		if s.Flags&wire.ACK != 0 && s.Ack == rcv.iss.Add(1) {
			rcv.ev.refused = markOf(p)
			c.set(rcv, p, Closed, "rcv RST: connection refused", "")
		}
	case rcv.State == Closed || rcv.State == Listen:
	case !rcv.hasRcv || s.Seq == rcv.rcvNxt:
		c.set(rcv, p, Closed, "rcv RST", "")
	default:
		rcv.ev.blind.add(p)
		rcv.ev.challengeDue = true
		c.note(p, fmt.Sprintf("RST at seq %d where %s expected %d: not acceptable (a challenge ACK, RFC 5961, or ignored)",
			uint32(s.Seq-rcv.iss), rcv.Name, uint32(rcv.rcvNxt-rcv.iss)))
		return
	}
	c.ended = true
}

// expire ends TIME_WAIT and an orphaned FIN_WAIT2 whose 60 s ran out
// before now.
func (c *Conn) expire(e *End, now time.Time) {
	if (e.State != TimeWait && e.State != FinWait2) || len(e.Changes) == 0 {
		return
	}
	at := e.since().Add(timeWaitLen)
	if at.After(now) {
		return
	}
	if e.State == TimeWait {
		c.set(e, &Packet{Time: at}, Closed, "TIME_WAIT timer (60 s)", "no packet shows it: Linux's TIME_WAIT lasts 60 s")
	} else {
		e.ev.fw2Timeout = at
		c.set(e, &Packet{Time: at}, Closed, "FIN_WAIT2 timer (tcp_fin_timeout 60 s)",
			"its next packet came from no socket: Linux ends an orphaned FIN_WAIT2 after tcp_fin_timeout (60 s)")
	}
}

// atEnd closes the story at the capture's last packet (last) with what
// Linux's timers make near certain: TIME_WAIT and an orphaned FIN_WAIT2
// end 60 s after they began, and an end that retransmitted and then went
// quiet gave up when its next retransmission was due. With final, the
// capture is over: timers that run past its end are told too, as
// probable.
func (c *Conn) atEnd(last time.Time, final bool) {
	for _, e := range c.Ends() {
		if len(e.Changes) == 0 {
			continue
		}
		since := e.since()
		var at time.Time
		var cause, why string
		switch e.State {
		case TimeWait:
			at, cause, why = since.Add(timeWaitLen), "TIME_WAIT timer (60 s)", "Linux's TIME_WAIT lasts 60 s"
		case FinWait2:
			if e.ev.rcvData.frame != 0 && !e.ev.rcvData.time().Before(since) {
				continue // it still receives: a half-close, not an orphan
			}
			at, cause, why = since.Add(timeWaitLen), "FIN_WAIT2 timer (tcp_fin_timeout 60 s)", "if its program had closed the socket, Linux ends an orphaned FIN_WAIT2 after tcp_fin_timeout (60 s)"
		case SynSent, SynRecv, FinWait1, LastAck, Closing, Established, CloseWait:
			// Linux's retries: tcp_syn_retries 6, tcp_synack_retries 5,
			// tcp_orphan_retries 8 (a closed socket's), tcp_retries2 15.
			retries := 15
			switch e.State {
			case SynSent:
				retries = 6
			case SynRecv:
				retries = 5
			case FinWait1, LastAck, Closing:
				retries = 8
			}
			shown := e.txCount >= 3 && e.txAt.Equal(e.lastSent) // a backoff, and nothing sent since
			gap := e.txAt.Sub(e.txPrev)
			handshake := e.State == SynSent || e.State == SynRecv
			orphan := e.State == FinWait1 || e.State == LastAck || e.State == Closing
			switch {
			case handshake && e.txAt.Equal(e.lastSent):
				// Linux gives up 127 s after the first SYN, 63 s after
				// the first SYN-ACK; another stack's longer backoff
				// shows in the capture.
				give, what := 127*time.Second, "connect() gives up 127 s after the first SYN (tcp_syn_retries 6)"
				if e.State == SynRecv {
					give, what = 63*time.Second, "a SYN_RECV request is dropped 63 s after the first SYN-ACK (tcp_synack_retries 5)"
				}
				at, cause, why = since.Add(give), fmt.Sprintf("retransmissions given up (%d sent)", e.txCount), "Linux's "+what
				if next := e.txAt.Add(2 * gap); shown && (next.After(at) || next.Before(last)) {
					// Another stack's longer backoff, or retries cut short
					// (a SYN queue more than half full): what it shows.
					at, why = next, fmt.Sprintf("no retransmission came when the next was due (%v after the last): it gave up", 2*gap)
				}
			case shown && (orphan || e.txAt.Add(2*gap).Before(last) || e.txCount > retries):
				// The next was due within the capture and did not come;
				// or all of Linux's retries are shown; or a closing end
				// (an orphan, most often) backs off to its end.
				at = e.txAt.Add(2 * gap)
				cause = fmt.Sprintf("retransmissions given up (%d sent)", e.txCount)
				why = fmt.Sprintf("no retransmission came when the next was due (%v after the last): it gave up", 2*gap)
			default:
				continue // data still retried when the capture ends (Linux tries 15 times), or never retried
			}
		default:
			continue
		}
		if at.After(last) {
			if !final {
				continue
			}
			why += ", after the capture's end"
		} else {
			why = "no packet shows it: " + why
		}
		c.set(e, &Packet{Time: at}, Closed, cause, why)
	}
}
