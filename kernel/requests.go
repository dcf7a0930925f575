package kernel

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/procnet"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Request socks.
//
// A SYN that reaches a listener leaves a request sock (SYN_RECV) in its
// SYN queue, or is answered with a SYN cookie, or is dropped. The
// inet_sock_set_state tracepoint sees none of it: it reports a connection
// only once the handshake has made a full socket. So the backend follows
// every SYN its capture sees arriving at a listener, from real hosts and
// from spoofed addresses alike, and asks the kernel what became of it in
// a look taken after the SYN: the counters, then a sock_diag dump, then
// the packets captured up to the dump.
//
//   - The dump lists it as NEW_SYN_RECV: a request, created when its SYN
//     arrived.
//   - The dump does not list it and nothing came after it that could end
//     a request (the peer's RST, our RST, a connection made of it): no
//     request. A SYN-ACK that left was a cookie; without one the SYN was
//     dropped.
//   - It is gone, but a RST or a completed connection explains it: it
//     lived shorter than a look. Whether it was a request or a cookie is
//     read from tcp_syncookies, from SyncookiesSent between two counter
//     reads against the cookies already accounted for, from the SYN
//     queue's length around it against the listener's backlog (bounds
//     from the looks, then Linux's own rule replayed over the SYNs left
//     open), and for a RST from EmbryonicRsts. A note says so when none
//     of them decides.
//
// A request ends when a packet explains it (a RST, a connection the
// tracer reports), else when a look no longer lists it: at the time its
// SYN-ACK timer was due, as the last look that listed it said, or at that
// look. Ends found by a look are reported in time order with the packets.

// reqKey is a connection as its listener's host sees it: local, remote.
type reqKey = [2]netip.AddrPort

type reqClass uint8

const (
	reqOpen    reqClass = iota // explained by a RST or a connection: not yet told
	reqRequest                 // the kernel kept a request sock
	reqCookie                  // a SYN-ACK left, no state was kept: a SYN cookie
	reqNone                    // no SYN-ACK seen and nothing kept
	reqUnknown                 // could not be told
)

// reqSYN is a SYN that reached one of the host's listeners, with the
// counter reads that may first have counted its answer (lo to hi).
type reqSYN struct {
	key    reqKey
	at     time.Duration
	lo, hi int
	class  reqClass
	synack bool
	end    time.Duration // for an open one: what ended or completed it
}

// reqLife is what looks said of a reported request.
type reqLife struct {
	seen    time.Duration // the start of the last look that listed it
	due     time.Duration // when its SYN-ACK timer was due, as that look said
	retrans int
	ending  bool // its end is found and waits to be reported
}

// reqEnd is an end found by a look, reported when the run's events reach
// its time.
type reqEnd struct {
	s          *ksock
	at         time.Duration
	cause      string
	seen, gone time.Duration // the looks around it
}

// reqCount is one read of the counters that tell requests from cookies.
type reqCount struct {
	n                         int
	at                        time.Duration
	cookies, embryonic, drops int64
}

// reqTrack is one host's bookkeeping of SYNs and request socks.
type reqTrack struct {
	syns    []*reqSYN
	byKey   map[reqKey]*reqSYN  // the latest SYN of each 4-tuple among syns
	tags    map[reqSynID][2]int // counter reads a SYN's answer may fall in, from the drain that brought it
	live    map[*ksock]*reqLife
	looks   []*reqLook // recent looks, oldest first
	look    *reqLook   // this flush's look, once taken
	ends    []reqEnd
	counts  []reqCount
	reads   int
	lastSYN time.Duration
	anySYN  bool
	buf     []byte
	spans   []*reqSpan // the requests reported, alive or ended in the last seconds
	spanOf  map[*ksock]*reqSpan
}

// reqSpan is the life of a reported request.
type reqSpan struct {
	key      reqKey
	from, to time.Duration // to is 0 while it lives
	lo, hi   time.Duration // when set, its end lies somewhere in (lo, hi]
}

// spanEnd notes the end of a request; lo and hi bound it when at is
// only a guess.
func (t *reqTrack) spanEnd(s *ksock, at, lo, hi time.Duration) {
	if sp := t.spanOf[s]; sp != nil && sp.to == 0 {
		sp.to, sp.lo, sp.hi = at, lo, hi
		delete(t.spanOf, s)
	}
}

type reqSynID struct {
	at  time.Duration
	key reqKey
}

// reqLook is one look at a host's kernel.
type reqLook struct {
	at, end    time.Duration // the dump
	read       int           // the counter read just before the dump, or 0
	ok         bool
	socks      []inspect.Socket
	reqs       map[reqKey]*inspect.Socket
	conns      map[reqKey]bool // full sockets (not listeners)
	backlog    map[lkey]int    // listener: sk_max_ack_backlog
	qlen       map[lkey]int    // listener: requests listed
	v4ports    map[uint16]bool // ports with an AF_INET listener
	obs        map[reqKey][]reqObs
	syncookies int // tcp_syncookies, -1 until read
}

type reqObsKind uint8

const (
	obsSYN    reqObsKind = iota // a SYN arrived
	obsSYNACK                   // a SYN-ACK left
	obsRSTIn                    // the peer's RST arrived
	obsRSTOut                   // a RST left
	obsChild                    // the tracer saw the connection made
)

type reqObs struct {
	at   time.Duration
	kind reqObsKind
}

// reqLooksKept bounds the history of looks and counter reads.
const reqLooksKept = 16

// capAt places a captured packet on the run's clock.
func (b *Backend) capAt(p *capturedPacket) time.Duration {
	return time.Duration(p.at.UnixNano()) - b.realOff - b.t0
}

// tcpFlags reads the flags of a captured IPv4 TCP packet without parsing
// the rest.
func tcpFlags(data []byte) (wire.Flags, bool) {
	if len(data) >= 40 && data[0]>>4 == 6 {
		// TCP right after the header (the lab's stacks add no extension).
		if data[6] != 6 || len(data) < 54 {
			return 0, false
		}
		return wire.Flags(data[53]), true
	}
	if len(data) < 20 || data[0]>>4 != 4 || data[9] != 6 {
		return 0, false
	}
	ihl := int(data[0]&0xf) * 4
	if len(data) < ihl+14 {
		return 0, false
	}
	return wire.Flags(data[ihl+13]), true
}

// pktTuple reads the 4-tuple of a captured packet as its host sees it.
func pktTuple(data []byte, out bool) (reqKey, bool) {
	if len(data) >= 40 && data[0]>>4 == 6 {
		if data[6] != 6 || len(data) < 44 {
			return reqKey{}, false
		}
		src := netip.AddrPortFrom(netip.AddrFrom16([16]byte(data[8:24])), binary.BigEndian.Uint16(data[40:]))
		dst := netip.AddrPortFrom(netip.AddrFrom16([16]byte(data[24:40])), binary.BigEndian.Uint16(data[42:]))
		if out {
			return reqKey{src, dst}, true
		}
		return reqKey{dst, src}, true
	}
	if len(data) < 20 || data[0]>>4 != 4 || data[9] != 6 {
		return reqKey{}, false
	}
	ihl := int(data[0]&0xf) * 4
	if len(data) < ihl+4 {
		return reqKey{}, false
	}
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(data[12:16])), binary.BigEndian.Uint16(data[ihl:]))
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(data[16:20])), binary.BigEndian.Uint16(data[ihl+2:]))
	if out {
		return reqKey{src, dst}, true
	}
	return reqKey{dst, src}, true
}

// reqLookAt returns this flush's look at the host, taking it if needed.
// Everything the flush reports happened before it.
func (b *Backend) reqLookAt(h *host) *reqLook {
	t := &h.req
	if t.look != nil {
		return t.look
	}
	if t.tags == nil {
		t.tags = map[reqSynID][2]int{}
		t.live = map[*ksock]*reqLife{}
		t.byKey = map[reqKey]*reqSYN{}
		t.spanOf = map[*ksock]*reqSpan{}
	}
	// SYNs waiting to be reported were delivered before this look's
	// counter read, after the previous one.
	fresh := b.reqTagSYNs(h, t.reads+1, t.reads+1)
	l := &reqLook{syncookies: -1}
	if fresh || t.reads == 0 || (t.anySYN && b.Now()-t.lastSYN < 2*time.Second) {
		b.reqReadCounters(h)
		l.read = t.reads
	}
	l.at = b.Now()
	socks, err := h.diag.dump(allStates)
	l.end = b.Now()
	l.ok = err == nil
	l.socks = socks
	l.reqs, l.conns = map[reqKey]*inspect.Socket{}, map[reqKey]bool{}
	l.backlog, l.qlen, l.v4ports = map[lkey]int{}, map[lkey]int{}, v4Listeners(socks)
	for i := range socks {
		d := &socks[i]
		k := rk(d.Local, d.Remote)
		switch d.State {
		case inspect.NewSynRecv:
			l.reqs[k] = d
			l.qlen[queueOf(d.Local, l.v4ports)]++
		case inspect.Listen:
			l.backlog[listenerQueue(d.Local)] = int(d.SendQ)
		case inspect.TimeWait:
			// An earlier connection's remnant, not one a SYN made.
		default:
			l.conns[k] = true
		}
	}
	// The packets that explain what the dump shows were delivered before
	// it: bring them in, so that no look is ahead of its explanation.
	_ = h.cap.drain(func(p capturedPacket) {
		pp := p
		b.raw = append(b.raw, rawItem{at: b.capAt(&pp), h: h, pkt: &pp})
	})
	// SYNs this drain brought may have been counted by this look's read
	// or by the next.
	if l.read > 0 {
		b.reqTagSYNs(h, l.read, l.read+1)
	} else {
		b.reqTagSYNs(h, t.reads+1, t.reads+1)
	}
	l.obs = map[reqKey][]reqObs{}
	for i := range b.raw {
		it := &b.raw[i]
		switch {
		case it.pkt != nil && it.h == h:
			f, ok := tcpFlags(it.pkt.data)
			if !ok {
				continue
			}
			k, _ := pktTuple(it.pkt.data, it.pkt.out)
			var kind reqObsKind
			switch {
			case f&wire.RST != 0 && it.pkt.out:
				kind = obsRSTOut
			case f&wire.RST != 0:
				kind = obsRSTIn
			case f&(wire.SYN|wire.ACK) == wire.SYN && !it.pkt.out:
				kind = obsSYN
			case f&(wire.SYN|wire.ACK) == wire.SYN|wire.ACK && it.pkt.out:
				kind = obsSYNACK
			default:
				continue
			}
			l.obs[k] = append(l.obs[k], reqObs{at: it.at, kind: kind})
		case it.st != nil && it.st.New == inspect.SynRecv && (it.st.Local.Addr().Unmap() == h.addr || it.st.Local.Addr() == h.addr6):
			k := rk(it.st.Local, it.st.Remote)
			l.obs[k] = append(l.obs[k], reqObs{at: it.at, kind: obsChild})
		}
	}
	if l.ok {
		b.reqSchedule(h, l)
		for s, life := range t.live {
			if d := l.reqs[rk(s.local, s.remote)]; d != nil {
				life.seen, life.due, life.retrans = l.at, 0, int(d.Retrans)
				if d.Timer != 0 {
					// Expires was read somewhere in the dump, in
					// whole jiffies left: counted from the dump's end,
					// the time placed is no earlier than the timer was
					// due, and at most the dump's length and a jiffy
					// later (the timer wheel may fire later still,
					// never earlier). So in every look below.
					life.due = l.end + d.Expires
				}
			}
		}
	}
	t.look = l
	t.looks = append(t.looks, l)
	if len(t.looks) > reqLooksKept {
		t.looks = t.looks[1:]
	}
	return l
}

// reqTagSYNs notes, for the SYNs at the host's listeners that are waiting
// in b.raw and have no note yet, the counter reads that may have counted
// their answers. It says whether there were any.
func (b *Backend) reqTagSYNs(h *host, lo, hi int) bool {
	t := &h.req
	found := false
	for i := range b.raw {
		it := &b.raw[i]
		if it.pkt == nil || it.h != h || it.pkt.out {
			continue
		}
		if f, ok := tcpFlags(it.pkt.data); !ok || f&(wire.SYN|wire.ACK|wire.RST) != wire.SYN {
			continue
		}
		k, _ := pktTuple(it.pkt.data, false)
		if h.listenerOn(k[0]) == nil {
			continue
		}
		id := reqSynID{it.at, k}
		if _, ok := t.tags[id]; !ok {
			t.tags[id] = [2]int{lo, hi}
			found = true
		}
	}
	return found
}

// reqReadCounters reads the counters that tell requests from cookies.
func (b *Backend) reqReadCounters(h *host) {
	t := &h.req
	c := reqCount{at: b.Now()}
	if h.netstat != nil {
		if t.buf == nil {
			t.buf = make([]byte, 64<<10)
		}
		n, _ := h.netstat.ReadAt(t.buf, 0)
		cs := procnet.Counters{}
		_ = procnet.ParseInto(cs, t.buf[:n])
		c.cookies, _ = cs.Get("TcpExt", "SyncookiesSent")
		c.embryonic, _ = cs.Get("TcpExt", "EmbryonicRsts")
		c.drops, _ = cs.Get("TcpExt", "ListenDrops")
	}
	t.reads++
	c.n = t.reads
	t.counts = append(t.counts, c)
	if len(t.counts) > reqLooksKept {
		t.counts = t.counts[1:]
	}
}

func (t *reqTrack) count(n int) (reqCount, bool) {
	for _, c := range t.counts {
		if c.n == n {
			return c, true
		}
	}
	return reqCount{}, false
}

// reqSyncookies reads the host's tcp_syncookies once per look.
func (b *Backend) reqSyncookies(h *host, l *reqLook) int {
	if l.syncookies >= 0 {
		return l.syncookies
	}
	l.syncookies = 1
	_ = h.work.do(func() error {
		v, err := os.ReadFile("/proc/sys/net/ipv4/tcp_syncookies")
		if err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(v))); err == nil {
				l.syncookies = n
			}
		}
		return nil
	})
	return l.syncookies
}

// explained tells whether something seen after time from (and up to the
// look) could have ended a request of key k: a RST either way, or the
// connection it became.
func (l *reqLook) explained(k reqKey, from time.Duration) (child, rst bool) {
	for _, o := range l.obs[k] {
		if o.at < from || o.at > l.end {
			continue
		}
		switch o.kind {
		case obsChild:
			child = true
		case obsRSTIn, obsRSTOut:
			rst = true
		}
	}
	return child || l.conns[k], rst
}

// ended is when what explains a key's end first came after from (the
// look's time if only the dump shows it).
func (l *reqLook) ended(k reqKey, from time.Duration) time.Duration {
	end := l.at
	for _, o := range l.obs[k] {
		if o.at >= from && o.at < end && (o.kind == obsChild || o.kind == obsRSTIn || o.kind == obsRSTOut) {
			end = o.at
		}
	}
	return end
}

func (l *reqLook) synackAfter(k reqKey, from time.Duration) bool {
	for _, o := range l.obs[k] {
		if o.kind == obsSYNACK && o.at >= from {
			return true
		}
	}
	return false
}

// quick classifies a SYN by what the look shows alone; reqOpen when only
// the counters and the queue can tell.
func (l *reqLook) quick(k reqKey, at time.Duration) (reqClass, bool) {
	synack := l.synackAfter(k, at)
	if l.reqs[k] != nil {
		return reqRequest, synack
	}
	if child, rst := l.explained(k, at); child || rst {
		return reqOpen, synack
	}
	if synack {
		return reqCookie, true
	}
	return reqNone, false
}

// reqSYNArrived handles a SYN that reached the host and passed its input
// rules: it reports the request sock it made, if it made one.
func (b *Backend) reqSYNArrived(h *host, local, remote netip.AddrPort, at time.Duration) {
	if s := h.find(local, remote); s != nil && !s.tw {
		return // a retransmitted SYN, or one for a connection of ours
	}
	l := h.listenerOn(local)
	if l == nil {
		return
	}
	b.reqStart(h, l, rk(local, remote), at, "rcv SYN, snd SYN,ACK")
}

// reqStart decides what a SYN (or, when its SYN was not captured, a
// SYN-ACK) at time at left on the host, and reports it.
func (b *Backend) reqStart(h *host, l *ksock, k reqKey, at time.Duration, cause string) {
	look := b.reqLookAt(h)
	t := &h.req
	syn := &reqSYN{key: k, at: at, lo: t.reads, hi: t.reads}
	if tag, ok := t.tags[reqSynID{at, k}]; ok {
		syn.lo, syn.hi = tag[0], tag[1]
		delete(t.tags, reqSynID{at, k})
	}
	syn.class, syn.synack = look.quick(k, at)
	if syn.class == reqOpen {
		syn.end = look.ended(k, at)
		syn.class = b.reqDecide(h, look, syn)
	}
	t.syns = append(t.syns, syn)
	t.byKey[k] = syn
	t.lastSYN, t.anySYN = at, true
	switch syn.class {
	case reqRequest:
		s := h.newSock(-1)
		s.req, s.parent, s.local, s.remote = true, l.id, k[0], k[1]
		if l.v6 && k[0].Addr().Is4() {
			// An AF_INET6 listener's IPv4 connection: its ends read
			// IPv4-mapped, as the connection's own will.
			s.local = netip.AddrPortFrom(netip.AddrFrom16(k[0].Addr().As16()), k[0].Port())
			s.remote = netip.AddrPortFrom(netip.AddrFrom16(k[1].Addr().As16()), k[1].Port())
		}
		life := &reqLife{}
		if d := look.reqs[k]; d != nil {
			life.seen, life.retrans = look.at, int(d.Retrans)
			if d.Timer != 0 {
				life.due = look.end + d.Expires
			}
		}
		t.live[s] = life
		sp := &reqSpan{key: k, from: at}
		t.spans = append(t.spans, sp)
		t.spanOf[s] = sp
		if !syn.synack && look.reqs[k] != nil {
			cause = "rcv SYN (its SYN-ACK was not captured)"
		}
		b.stateEvent(h, s, "SYN_RECV", at, "segment", cause)
	case reqCookie:
		b.emit(trace.Event{At: at, Host: h.name, Kind: trace.KindNote, Sock: l.id, Local: l.local,
			Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0),
			Note:   fmt.Sprintf("SYN cookie sent to %v (no state kept)", k[1])})
	case reqNone:
		b.emit(trace.Event{At: at, Host: h.name, Kind: trace.KindNote, Sock: l.id, Local: l.local,
			Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0),
			Note:   fmt.Sprintf("the SYN from %v left no request and no SYN-ACK was seen: it was dropped, or got a SYN cookie that an output rule kept from the capture", k[1])})
	case reqUnknown:
		b.emit(trace.Event{At: at, Host: h.name, Kind: trace.KindNote, Sock: l.id, Local: l.local,
			Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0),
			Note:   fmt.Sprintf("the SYN from %v was answered and its connection ended or completed within one look at the kernel; whether it held a request sock (SYN_RECV) or got a SYN cookie could not be told from the counters and queue lengths, so no SYN_RECV is reported for it", k[1])})
	}
}

// reqDecide tells a request from a cookie for a SYN whose answer ended
// or completed before the look.
func (b *Backend) reqDecide(h *host, look *reqLook, x *reqSYN) reqClass {
	switch b.reqSyncookies(h, look) {
	case 0:
		// No cookies: an answered SYN made a request.
		if x.synack {
			return reqRequest
		}
		if c, ok := b.reqDelta(h, x, func(c reqCount) int64 { return c.drops }); ok && c == 0 {
			return reqRequest
		}
	case 2:
		return reqCookie
	}
	if c := b.reqByCookies(h, look, x); c != reqOpen {
		return c
	}
	if c := b.reqByQueue(h, look, x); c != reqOpen {
		return c
	}
	if c := b.reqBySolving(h, look, x); c != reqOpen {
		return c
	}
	if child, rst := look.explained(x.key, x.at); rst && !child {
		// A RST ends a request only by tcp_check_req's embryonic reset.
		if d, ok := b.reqDelta(h, x, func(c reqCount) int64 { return c.embryonic }); ok && d == 0 {
			return reqCookie
		}
	}
	return reqUnknown
}

// reqDelta is how much a counter moved over the reads that may have
// counted x.
func (b *Backend) reqDelta(h *host, x *reqSYN, f func(reqCount) int64) (int64, bool) {
	t := &h.req
	c0, ok0 := t.count(x.lo - 1)
	c1, ok1 := t.count(x.hi)
	if !ok0 || !ok1 {
		return 0, false
	}
	return f(c1) - f(c0), true
}

// reqByCookies accounts for the cookies SyncookiesSent counted over the
// reads that may hold x's answer: if the SYNs known to have got cookies
// make up the count, x got none; if only x and its like can make it up,
// they all got cookies.
func (b *Backend) reqByCookies(h *host, look *reqLook, x *reqSYN) reqClass {
	least, most, open, ok := b.reqCookieWindow(h, look, x)
	switch {
	case !ok:
		return reqOpen
	case most <= 0:
		return reqRequest
	case least >= int64(len(open)):
		return reqCookie
	}
	return reqOpen
}

// reqCookieWindow bounds how many of the open SYNs whose answers surely
// fall within x's counter reads (x among them) got cookies.
func (b *Backend) reqCookieWindow(h *host, look *reqLook, x *reqSYN) (least, most int64, open map[reqSynID]bool, ok bool) {
	t := &h.req
	delta, ok := b.reqDelta(h, x, func(c reqCount) int64 { return c.cookies })
	if !ok {
		return 0, 0, nil, false
	}
	lo, hi := x.lo, x.hi
	open = map[reqSynID]bool{{x.at, x.key}: true}
	// The SYNs whose answers fall surely (in) or maybe (maybe) within.
	var inCookie, inNone, maybe int64
	consider := func(id reqSynID, class reqClass, a, z int) {
		if a < lo || z > hi {
			if z >= lo && a <= hi && class != reqRequest {
				maybe++
			}
			return
		}
		switch class {
		case reqCookie:
			inCookie++
		case reqNone:
			inNone++
		case reqOpen, reqUnknown:
			open[id] = true
		}
	}
	seen := map[reqSynID]bool{{x.at, x.key}: true}
	for _, s := range t.syns {
		seen[reqSynID{s.at, s.key}] = true
		consider(reqSynID{s.at, s.key}, s.class, s.lo, s.hi)
	}
	// SYNs not reported yet (later in this flush or after it).
	for k, obs := range look.obs {
		for _, o := range obs {
			id := reqSynID{o.at, k}
			if o.kind != obsSYN || seen[id] {
				continue
			}
			tag, ok := t.tags[id]
			if !ok || h.listenerOn(k[0]) == nil {
				continue
			}
			class, _ := look.quick(k, o.at)
			consider(id, class, tag[0], tag[1])
		}
	}
	if delta < inCookie {
		return 0, 0, nil, false // the counter disagrees with the capture: decide otherwise
	}
	most = min(int64(len(open)), delta-inCookie)
	least = max(0, delta-inCookie-inNone-maybe)
	return least, most, open, true
}

// reqByQueue compares the SYN queue around x with the listener's backlog:
// a queue that cannot have been full made a request, one that was full
// throughout sent a cookie (inet_csk_reqsk_queue_is_full).
func (b *Backend) reqByQueue(h *host, look *reqLook, x *reqSYN) reqClass {
	t := &h.req
	q := queueOf(x.key[0], look.v4ports)
	backlog, ok := look.backlog[q]
	if !ok || !look.ok {
		return reqOpen
	}
	var prev *reqLook
	for _, l := range t.looks {
		if l.ok && l.end < x.at && l != look {
			prev = l
		}
	}
	// The SYNs since prev must all be at hand (reqTrim keeps 3 s), and
	// the port's listeners the same in both looks (so the queues are).
	if prev == nil || x.at-prev.at > 2*time.Second || prev.v4ports[q.port] != look.v4ports[q.port] {
		return reqOpen
	}
	// At most: what the earlier look listed, plus one per SYN since.
	most := prev.qlen[q]
	newer := map[reqKey]bool{}
	counted := map[reqSynID]bool{}
	count := func(k reqKey, at time.Duration) {
		id := reqSynID{at, k}
		if queueOf(k[0], look.v4ports) == q && at >= prev.at && at < x.at && !counted[id] {
			counted[id] = true
			most++
			newer[k] = true
		}
	}
	for _, s := range t.syns {
		count(s.key, s.at)
	}
	for k, obs := range look.obs {
		for _, o := range obs {
			if o.kind == obsSYN {
				count(k, o.at)
			}
		}
	}
	// Linux 6.x calls the queue full past the backlog, earlier kernels
	// at it: decide only where both agree.
	if most < backlog {
		return reqRequest
	}
	// At least: the requests both looks list, which no SYN renewed.
	least := 0
	for k := range prev.reqs {
		if queueOf(k[0], look.v4ports) == q && look.reqs[k] != nil && !newer[k] {
			least++
		}
	}
	if least > backlog {
		return reqCookie
	}
	return reqOpen
}

// reqBySolving replays Linux's choice between a request and a cookie
// (tcp_conn_request: a cookie when the SYN queue is full) over the SYNs
// around x whose fate the look left open, with the SYN queue's length
// from the requests reported around them. If one assignment of requests
// and cookies fits every SYN there, x's part in it is the answer. Both
// readings of "full" are tried (past the backlog since Linux 6.14 and its
// backports, at it before); they must agree.
func (b *Backend) reqBySolving(h *host, look *reqLook, x *reqSYN) reqClass {
	t := &h.req
	q := queueOf(x.key[0], look.v4ports)
	backlog, ok := look.backlog[q]
	if !ok {
		return reqOpen
	}
	type syn struct {
		id      reqSynID
		at, end time.Duration // end: for an unknown, when it ended
		class   reqClass
	}
	vars := []syn{{reqSynID{x.at, x.key}, x.at, x.end, reqOpen}}
	var facts []syn
	from, to := x.at, x.end
	seen := map[reqSynID]bool{{x.at, x.key}: true}
	for _, s := range t.syns {
		if queueOf(s.key[0], look.v4ports) != q || s.at < x.at-time.Second {
			continue
		}
		seen[reqSynID{s.at, s.key}] = true
		switch s.class {
		case reqOpen, reqUnknown:
			vars = append(vars, syn{reqSynID{s.at, s.key}, s.at, s.end, reqOpen})
		case reqRequest, reqCookie:
			facts = append(facts, syn{at: s.at, class: s.class})
		}
	}
	for k, obs := range look.obs {
		if queueOf(k[0], look.v4ports) != q {
			continue
		}
		for _, o := range obs {
			if o.kind != obsSYN || seen[reqSynID{o.at, k}] || o.at < x.at-time.Second {
				continue
			}
			switch c, _ := look.quick(k, o.at); c {
			case reqOpen:
				vars = append(vars, syn{reqSynID{o.at, k}, o.at, look.ended(k, o.at), reqOpen})
			case reqRequest, reqCookie:
				// Not reported yet: a request here counts in the
				// queue from its SYN to the look that lists it.
				facts = append(facts, syn{at: o.at, end: look.at, class: c})
			}
		}
	}
	if len(vars) > 10 {
		return reqOpen
	}
	// When the counters say exactly how many of the open SYNs in x's
	// window got cookies, and all of them are here, that many must.
	window, cookies := 0, -1
	if least, most, open, ok := b.reqCookieWindow(h, look, x); ok && least == most {
		for i, v := range vars {
			if open[v.id] {
				window |= 1 << i
			}
		}
		if bits.OnesCount(uint(window)) == len(open) {
			cookies = int(least)
		}
	}
	for _, v := range vars {
		from, to = min(from, v.at), max(to, v.end)
	}
	checks := vars
	for _, f := range facts {
		if f.at >= from && f.at <= to {
			checks = append(checks, f)
		}
	}
	// qlen is the SYN queue when a SYN at time at came, under an
	// assignment (bit i set: vars[i] was a request); ok is false when a
	// request's end is known only roughly and may lie either side.
	qlen := func(at time.Duration, assign int) (int, bool) {
		n := 0
		for _, sp := range t.spans {
			if queueOf(sp.key[0], look.v4ports) != q || sp.from >= at {
				continue
			}
			end, lo, hi := sp.to, sp.lo, sp.hi
			if end == 0 && look.reqs[sp.key] == nil {
				// Not ended yet in the run's events, and gone from the
				// look: what ended it is still to be reported.
				end = look.ended(sp.key, sp.from)
				if end == look.at {
					lo, hi = sp.from, look.at
				}
			}
			if hi != 0 && lo < at && at <= hi {
				return 0, false
			}
			if end == 0 || end > at {
				n++
			}
		}
		for i, v := range vars {
			if assign&(1<<i) != 0 && v.at < at && v.end > at {
				n++
			}
		}
		for _, f := range facts {
			if f.class == reqRequest && f.end != 0 && f.at < at {
				n++
			}
		}
		return n, true
	}
	answer := reqOpen
	for rule := 0; rule < 2; rule++ {
		for assign := 0; assign < 1<<len(vars); assign++ {
			if cookies >= 0 && bits.OnesCount(uint(window&^assign)) != cookies {
				continue
			}
			fits := true
			for i, c := range checks {
				q, ok := qlen(c.at, assign)
				if !ok {
					return reqOpen
				}
				full := q > backlog || rule == 1 && q >= backlog
				cookie := c.class == reqCookie
				if i < len(vars) {
					cookie = assign&(1<<i) == 0
				}
				if full != cookie {
					fits = false
					break
				}
			}
			if !fits {
				continue
			}
			got := reqCookie
			if assign&1 != 0 {
				got = reqRequest
			}
			if answer != reqOpen && answer != got {
				return reqOpen
			}
			answer = got
		}
	}
	return answer
}

// reqTrim forgets SYNs and notes too old to matter.
func (b *Backend) reqTrim(h *host, now time.Duration) {
	t := &h.req
	if len(t.tags) > 64 {
		for id := range t.tags {
			if now-id.at > 3*time.Second {
				delete(t.tags, id)
			}
		}
	}
	if len(t.spans) > 0 && t.spans[0].to != 0 && now-t.spans[0].to > 3*time.Second {
		keep := t.spans[:0]
		for _, sp := range t.spans {
			if sp.to == 0 || now-sp.to <= 3*time.Second {
				keep = append(keep, sp)
			}
		}
		clear(t.spans[len(keep):])
		t.spans = keep
	}
	if len(t.syns) == 0 || now-t.syns[0].at < 3*time.Second {
		return
	}
	keep := t.syns[:0]
	for _, s := range t.syns {
		// A SYN whose answer a counter read still to come may count
		// stays, for reqByCookies.
		if now-s.at < 3*time.Second || s.hi > t.reads {
			keep = append(keep, s)
		} else if t.byKey[s.key] == s {
			delete(t.byKey, s.key)
		}
	}
	clear(t.syns[len(keep):])
	t.syns = keep
}

// reqSegment handles a RST that arrived or left for a connection that is
// a request of the run: the request ends with it unless the look still
// lists it or shows the connection it became.
func (b *Backend) reqSegment(h *host, k reqKey, at time.Duration, cause string) {
	s := h.find(k[0], k[1])
	if s == nil || !s.req || s.state != "SYN_RECV" {
		return
	}
	look := b.reqLookAt(h)
	if !look.ok || look.reqs[k] != nil {
		return
	}
	if child, _ := look.explained(k, at); child {
		return // the tracer reports the connection it became
	}
	b.reqEnd(h, s, at, cause)
}

// reqSYNACKSent handles a SYN-ACK that left a listener's host for a
// connection it has no request for: its SYN was not captured.
func (b *Backend) reqSYNACKSent(h *host, k reqKey, at time.Duration) {
	t := &h.req
	if s := t.byKey[k]; s != nil && s.at <= at && at-s.at < time.Second {
		s.synack = true
		return
	}
	if h.find(k[0], k[1]) != nil {
		return // a retransmission, or a simultaneous open's SYN-ACK
	}
	l := h.listenerOn(k[0])
	if l == nil {
		return
	}
	b.reqStart(h, l, k, at, "rcv SYN (not captured), snd SYN,ACK")
}

func (b *Backend) reqEnd(h *host, s *ksock, at time.Duration, cause string) {
	delete(h.req.live, s)
	h.req.spanEnd(s, at, 0, 0)
	b.stateEvent(h, s, "CLOSED", at, "segment", cause)
}

// reqSchedule finds, right after a look, the reported requests that it
// no longer lists and that no packet or connection explains, and places
// their ends: when the SYN-ACK timer was due, as the last look that listed
// the request said, if that is since that look; else at this look.
func (b *Backend) reqSchedule(h *host, look *reqLook) {
	t := &h.req
	socks := make([]*ksock, 0, len(t.live))
	for s := range t.live {
		socks = append(socks, s)
	}
	sort.Slice(socks, func(i, j int) bool { return socks[i].id < socks[j].id })
	for _, s := range socks {
		life := t.live[s]
		if !s.req || s.state != "SYN_RECV" {
			delete(t.live, s)
			continue
		}
		k := rk(s.local, s.remote)
		if life.ending || look.reqs[k] != nil {
			continue
		}
		if child, rst := look.explained(k, life.seen); child || rst {
			continue // ended in order by what explains it
		}
		e := reqEnd{s: s, at: look.at, cause: "gone from sock_diag", seen: life.seen, gone: look.at}
		if life.due > 0 && life.due <= look.at && !look.synackAfter(k, life.due) {
			e.cause = "SYN-ACK timer"
			if life.retrans > 0 {
				e.cause = fmt.Sprintf("SYN-ACK timer, after %d retransmissions", life.retrans)
			}
			if life.due > life.seen {
				e.at = life.due
			}
		}
		if p := h.sockByID(s.parent); p != nil && p.state != "LISTEN" {
			e.cause = "listener closed; " + e.cause
		}
		life.ending = true
		t.ends = append(t.ends, e)
	}
	sort.SliceStable(t.ends, func(i, j int) bool { return t.ends[i].at < t.ends[j].at })
}

// reqEnding tells whether an end found by a look waits to be reported
// (for a request that is still one: reqEndNow skips the others).
func (b *Backend) reqEnding() bool {
	for _, h := range b.hosts {
		for _, e := range h.req.ends {
			if e.s.req && e.s.state == "SYN_RECV" {
				return true
			}
		}
	}
	return false
}

// reqReportEnds reports the request ends that earlier looks placed,
// with a flush that takes no new look (which could place new ones): the
// run's end needs them, and they happened before it.
func (b *Backend) reqReportEnds() {
	if !b.reqEnding() {
		return
	}
	b.reqNoLook = true
	defer func() { b.reqNoLook = false }()
	b.flushNow()
}

// reqDue reports the ends placed before upTo. A flush that has live
// requests takes its look before its first event, so that every end it
// finds is reported in time order.
func (b *Backend) reqDue(upTo time.Duration) {
	for _, h := range b.hosts {
		t := &h.req
		if t.look == nil && len(t.live) > 0 && !b.reqNoLook {
			b.reqLookAt(h)
		}
		for len(t.ends) > 0 && t.ends[0].at <= upTo {
			b.reqEndNow(h, t.ends[0].at)
		}
	}
}

// reqEndNow reports the first placed end at time at.
func (b *Backend) reqEndNow(h *host, at time.Duration) {
	t := &h.req
	e := t.ends[0]
	t.ends = t.ends[1:]
	delete(t.live, e.s)
	if e.s.state != "SYN_RECV" || !e.s.req {
		return
	}
	t.spanEnd(e.s, at, e.seen, e.gone)
	if !b.warned["reqend"] {
		b.warned["reqend"] = true
		b.emitAt(at, trace.Event{Kind: trace.KindNote, Note: fmt.Sprintf(
			"a request sock that ends without a packet to say so is seen to end by sock_diag, looked at every %v or so: "+
				"its end is placed when its SYN-ACK timer was due, if the last look that listed it said so, else at the first look without it "+
				"(this one: listed at %s, gone at %s)", b.opt.Tick, trace.FormatTime(e.seen), trace.FormatTime(e.gone))})
	}
	b.stateEvent(h, e.s, "CLOSED", at, "timer", e.cause)
}

// reqPoll ends the flush for the host's requests: it reports the ends
// placed by this flush's look up to hz. The look came after hz, so an
// end it places later waits for the next flush, which reports it in
// its place among that flush's events (reqDue): moving it back to hz
// would make it early by however long the look took.
func (b *Backend) reqPoll(h *host, hz time.Duration) {
	t := &h.req
	// A host with requests is looked at on every flush; a listener's
	// host now and then, so that a SYN's queue can be bounded by a
	// recent look and its counters.
	recent := t.reads > 0 && len(t.looks) > 0 && hz-t.looks[len(t.looks)-1].at < 500*time.Millisecond
	var look *reqLook
	if !b.reqNoLook && (len(t.live) > 0 || t.look != nil || h.hasListener() && !recent) {
		look = b.reqLookAt(h)
	}
	for len(t.ends) > 0 && t.ends[0].at <= hz {
		b.reqEndNow(h, t.ends[0].at)
	}
	if look != nil {
		b.reqUnseen(h, look, hz)
		b.reqTrim(h, hz)
	}
}

// reqUnseen reports the requests a look lists that no SYN the run saw
// accounts for (a capture that lost the SYN, say), from the end of the
// flush that found them.
func (b *Backend) reqUnseen(h *host, look *reqLook, hz time.Duration) {
	if !look.ok {
		return
	}
	keys := make([]reqKey, 0, len(look.reqs))
	for k := range look.reqs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][1].Compare(keys[j][1]) < 0 || keys[i][1] == keys[j][1] && keys[i][0].Compare(keys[j][0]) < 0
	})
	for _, k := range keys {
		if s := h.find(k[0], k[1]); s != nil && !s.tw {
			continue
		}
		l := h.listenerOn(k[0])
		if l == nil {
			continue
		}
		pending := false
		for id := range h.req.tags {
			if id.key == k {
				pending = true // its SYN is still to be reported
			}
		}
		if pending {
			continue
		}
		s := h.newSock(-1)
		s.req, s.parent, s.local, s.remote = true, l.id, k[0], k[1]
		d := look.reqs[k]
		life := &reqLife{seen: look.at, retrans: int(d.Retrans)}
		if d.Timer != 0 {
			life.due = look.end + d.Expires
		}
		h.req.live[s] = life
		sp := &reqSpan{key: k, from: hz}
		h.req.spans = append(h.req.spans, sp)
		h.req.spanOf[s] = sp
		b.emitAt(hz, trace.Event{Host: h.name, Kind: trace.KindNote, Sock: s.id, Local: k[0], Remote: k[1],
			Note: "sock_diag lists a request sock whose SYN the capture did not see arrive: it is reported from this look on"})
		b.stateEvent(h, s, "SYN_RECV", hz, "segment", "rcv SYN (not captured)")
	}
}

func (h *host) hasListener() bool {
	for _, s := range h.socks {
		if s.listener && s.state == "LISTEN" {
			return true
		}
	}
	return false
}

// lkey names a listener's queue: its port, and whether the listener is
// AF_INET. An AF_INET listener and a v6only AF_INET6 one may share a port
// (nginx's "listen 80; listen [::]:80 ipv6only=on"): IPv4 requests then
// queue at the first and IPv6 ones at the second. Without an AF_INET
// listener, IPv4 requests queue at the port's dual-stack one.
type lkey struct {
	port uint16
	v4   bool
}

// listenerQueue is the queue of a listener bound to local.
func listenerQueue(local netip.AddrPort) lkey {
	return lkey{local.Port(), local.Addr().Is4()}
}

// queueOf is the queue a request (or a SYN) to local joins, given the
// ports that have an AF_INET listener.
func queueOf(local netip.AddrPort, v4ports map[uint16]bool) lkey {
	return lkey{local.Port(), local.Addr().Unmap().Is4() && v4ports[local.Port()]}
}

// v4Listeners lists the ports with an AF_INET listener among socks.
func v4Listeners(socks []inspect.Socket) map[uint16]bool {
	m := map[uint16]bool{}
	for i := range socks {
		if socks[i].State == inspect.Listen && socks[i].Local.Addr().Is4() {
			m[socks[i].Local.Port()] = true
		}
	}
	return m
}
