package tcp

import (
	"math"
	"net/netip"
	"strconv"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// never marks a timer that is not armed.
const never = time.Duration(math.MaxInt64)

// tcpRTOMin is Linux's TCP_RTO_MIN constant, the base of the retransmission
// time budget in tcp_model_timeout (the tcp_rto_min sysctl does not change
// it).
const tcpRTOMin = 200 * time.Millisecond

// tcpTimeoutFallback is TCP_TIMEOUT_FALLBACK, the RTO after a handshake
// that gave no RTT sample.
const tcpTimeoutFallback = 3 * time.Second

// conn is a socket: unconnected, listening, a request in a SYN queue, a
// connection, or a TIME_WAIT remnant. One type for all, as Linux's struct
// sock, so that a descriptor can move through every state.
type conn struct {
	h     *Host
	id    SockID
	fd    FD // -1: no descriptor (orphaned, not yet accepted, or a request)
	state State

	// laddr and raddr are the addresses on the wire: IPv4 for a v6
	// socket's IPv4 peer (mapped), whose user sees them IPv4-mapped.
	laddr, raddr        netip.Addr
	lport, rport        uint16
	v6, v6only, mapped  bool   // an AF_INET6 socket; IPV6_V6ONLY; talking IPv4 through it
	flow                uint32 // IPv6 flow label (0 in IPv4)
	flowRehash          uint64 // retransmission timeouts that drew a new flow label
	bound, explicitBind bool
	hashed              bool // in h.conns under its 4-tuple
	portIdx             int  // index in its port bucket's socks, when bound

	lst      *listener // set on a listening socket
	parent   *conn     // the listener a passive connection belongs to until accept
	parentSk SockID
	req      bool // a request socket in the SYN queue (Linux TCP_NEW_SYN_RECV)
	inAccept bool // completed, waiting in the parent's accept queue
	tw       bool // a TIME_WAIT remnant (TIME_WAIT, or the FIN_WAIT2 of an orphan)

	// socket options
	reuseAddr, nonBlock, noDelay bool
	linger                       bool
	lingerTime                   time.Duration
	keepalive                    bool
	kaIdle, kaIntvl              time.Duration
	kaProbes                     int
	sndBuf                       int           // SO_SNDBUF as Linux keeps it (doubled); 0: the profile's
	userMSS                      int           // TCP_MAXSEG; 0: none
	userTimeout                  time.Duration // TCP_USER_TIMEOUT; 0: none

	// sk_shutdown bits, SOCK_DONE, SOCK_DEAD, sk_err
	rcvShut, sndShut bool
	done             bool
	orphan           bool
	err              Errno
	closing          bool // close() was called (possibly still lingering)
	ss               sockState

	lastOOWAck    time.Duration // last ACK sent for an invalid segment (rate limit)
	hasLastOOWAck bool
	bytesAcked    int64 // data bytes the peer acknowledged (tcp_sock bytes_acked)
	ackNow        bool  // ICSK_ACK_NOW: the next ACK check sends at once

	// send side
	iss, sndUna, sndNxt, sndMax wire.Seq
	sndWnd, maxWnd              uint32
	sndWl1                      wire.Seq
	snd                         ring // bytes from sndBase: unacknowledged, then unsent
	sndBase                     wire.Seq
	finQueued, finSent          bool
	finSeq                      wire.Seq
	sndSml                      wire.Seq  // end of the last small segment (Nagle, Minshall)
	sent                        []sentRec // segments in flight, oldest first (in sentArr's array)
	sentArr                     []sentRec
	finAckPending               bool // our FIN was acked by the segment being processed

	// negotiated options
	mss, peerMSS         int
	sndWScale, rcvWScale uint8
	wsOK, tsOK, sackOK   bool
	tsRecent             uint32
	tsRecentAt           time.Duration
	tsOff                uint32

	// receive side
	irs, rcvNxt, rcvWup wire.Seq
	rcvWnd              uint32
	rcv                 ring     // unread bytes, then out-of-order data at its place
	ooo                 []oooSeg // the out-of-order data held, in sequence order
	oooLast             wire.Seq // start of the most recent out-of-order arrival
	dsack               *wire.SACKBlock
	rcvMSS              int

	// congestion control, RTT, retransmission
	cwnd, ssthresh    int
	dupAcks           int
	inRecovery        bool
	recover           wire.Seq
	srtt, rttvar, rto time.Duration
	rttTiming         bool
	rttSeq            wire.Seq
	rttAt             time.Duration
	retransmits       int // icsk_retransmits: since the last forward progress
	totalRTO          int
	retransTotal      int // every retransmitted segment (ss "retrans:x/total")
	backoff           int
	retransStamp      time.Duration
	hasRetransStamp   bool
	probesOut         int
	probesStamp       time.Duration // when the first unanswered zero-window probe went (icsk_probes_tstamp)
	hasProbesStamp    bool
	lastAckRcv        time.Duration // rcv_tstamp
	lastDataRcv       time.Duration // icsk_ack.lrcvtime
	dataRcvd          bool          // lastDataRcv is set: data has arrived (Linux's lrcvtime starts far in the past)
	lastDataSent      time.Duration // tp->lsndtime
	lrcvAt            time.Duration // icsk_ack.lrcvtime: the last data, or the handshake (tcpi_last_data_recv)
	// wakeups counts the socket's wake-ups of waiters (sk_data_ready,
	// sk_write_space, sk_state_change): what an edge-triggered epoll
	// reports.
	wakeups uint64
	noSpace bool     // SOCK_NOSPACE: a write found the send buffer full
	skbs    []skbRec // the send queue's skbs, with the skb_overhead setting
	pushOne bool     // xmit sends one packet at most (tcp_push_one)
	skbSize int      // the skbs' payload charge
	// sleepWakeups is wakeups when a write went to sleep for buffer
	// space: a wake-up of the socket since lets it look again
	// (sk_stream_wait_memory).
	sleepWakeups uint64
	// pushedSeq is tp->pushed_seq: where the last push mark went.
	pushedSeq wire.Seq
	// chrono is tcp_chrono: what the sender is limited by now (busy
	// sending, the peer's window, the send buffer) since when, and the
	// time spent in each (tcpi_busy_time, _rwnd_limited, _sndbuf_limited).
	chrono chronoType
	// Corking: TCP_CORK, a push from a MSG_MORE write (moreNow), a push
	// past them (pushNow: TCP_NODELAY set, uncork, the probe timer), and
	// the end of the last write pushed (PSH goes on the segment that
	// holds it).
	cork, moreNow, pushNow, probePush bool
	// pktsAcked is what the last ACK acknowledged, in segments;
	// maxPacketsOut the largest flight since cwndUsageSeq was sent
	// (tcp_cwnd_validate), which decides whether slow start grows.
	pktsAcked     int
	inLoss        bool     // TCP_CA_Loss: after a timeout, until lossHigh is acknowledged
	lossHigh      wire.Seq // high_seq of the loss episode
	maxPacketsOut int
	cwndUsageSeq  wire.Seq
	pushEnd       wire.Seq
	chronoStart   time.Duration
	chronoStat    [4]time.Duration
	hasLrcv       bool
	dataSent      bool
	persist       bool // the write timer is the zero-window probe timer

	// delayed ACK machinery (inet_connection_sock icsk_ack)
	ackPending bool
	quick      int
	pingpong   bool
	ato        time.Duration
	pushed     bool

	// request socket
	numTimeout int
	acked      bool // final ACK arrived while the accept queue was full

	// timers, absolute virtual times; never when off
	rtxAt, delackAt, kaAt, closeAt, lingerAt time.Duration
	// probing: rtxAt is a tail loss probe, not the RTO (ICSK_TIME_LOSS_PROBE);
	// tlpOut: a probe is outstanding until SND.UNA reaches tlpHigh, SND.NXT
	// when it went out (Linux's tlp_high_seq).
	probing bool
	tlpHigh wire.Seq
	tlpOut  bool
	wakeAt  time.Duration
	heapIdx int

	pending []*Result // blocked application calls, oldest first
}

type sentRec struct {
	end wire.Seq
	at  time.Duration
}

// oooSeg is an out-of-order segment held: its bytes are in the receive
// ring, at their place.
type oooSeg struct {
	seq wire.Seq
	n   int
	fin bool
}

// sockState is the BSD socket's own state (Linux's sock->state), apart
// from the TCP state: it decides what connect() answers.
type sockState uint8

const (
	ssUnconnected sockState = iota
	ssConnecting
	ssConnected
)

// oowRateLimited is tcp_oow_rate_limited: an ACK for an invalid segment
// without data (or with SYN) is sent at most once per tcp_invalid_ratelimit
// per socket; skipped ones count in the given counter. A nil segment (a
// challenge ACK) is always subject to the limit.
func (c *conn) oowRateLimited(seg *wire.Segment, skipped Counter) bool {
	if seg != nil && seg.Len() > 0 && seg.Flags&wire.SYN == 0 {
		return false
	}
	h := c.h
	if lim := h.prof.InvalidRateLimit; lim > 0 && c.hasLastOOWAck && h.now-c.lastOOWAck < lim {
		h.count(skipped)
		return true
	}
	c.lastOOWAck, c.hasLastOOWAck = h.now, true
	return false
}

func (h *Host) newConn() *conn {
	p := &h.prof
	c := &conn{
		h: h, id: h.newID(), fd: -1, state: Closed,
		kaIdle: p.KeepaliveTime, kaIntvl: p.KeepaliveIntvl, kaProbes: p.KeepaliveProbes,
		rtxAt: never, delackAt: never, kaAt: never, closeAt: never, lingerAt: never,
		wakeAt: never, heapIdx: -1,
	}
	c.resetTransport()
	return c
}

// resetTransport sets what a fresh socket starts with (tcp_init_sock): the
// minimum MSS until the peer says more, no RTT yet, the initial RTO and
// congestion window.
func (c *conn) resetTransport() {
	p := &c.h.prof
	c.mss, c.peerMSS, c.rcvMSS = 536, 536, 536
	c.srtt, c.rttvar, c.rto = 0, 0, p.InitialRTO
	c.cwnd, c.ssthresh = p.InitialCwnd*536, 1<<30
}

// localAP and remoteAP are the socket's ends as its user sees them: an
// AF_INET6 socket's IPv4 peer is IPv4-mapped (::ffff:10.0.0.1).
func (c *conn) localAP() netip.AddrPort  { return netip.AddrPortFrom(c.userAddr(c.laddr), c.lport) }
func (c *conn) remoteAP() netip.AddrPort { return netip.AddrPortFrom(c.userAddr(c.raddr), c.rport) }

func (c *conn) userAddr(a netip.Addr) netip.Addr {
	if c.v6 && a.Is4() {
		return netip.AddrFrom16(a.As16())
	}
	return a
}

// wireV6 says the connection's segments travel in IPv6.
func (c *conn) wireV6() bool { return c.laddr.Is6() }

// defaultMSS is the MSS assumed of a peer that offers none: 536 in IPv4
// (TCP_MSS_DEFAULT), 1220 in IPv6 (the minimum MTU, 1280, less headers).
func (c *conn) defaultMSS() int {
	if c.wireV6() {
		return 1220
	}
	return 536
}
func (c *conn) key() tuple {
	return tuple{laddr: c.laddr, raddr: c.raddr, lport: c.lport, rport: c.rport}
}

// appState is the state the socket's owner sees: a TIME_WAIT remnant
// belongs to the kernel, and the descriptor that led to it reads CLOSED.
func (c *conn) appState() State {
	if c.tw {
		return Closed
	}
	return c.state
}

// setState is the one place where a connection changes state. It checks the
// change against the transition table, keeps CurrEstab and EstabResets as
// Linux's tcp_set_state does, and reports the change with its cause.
func (c *conn) setState(to State, kind CauseKind, text string) {
	h := c.h
	from := c.state
	if !Legal(from, to) {
		h.bug("sock %d: illegal transition %v -> %v (%s)", c.id, from, to, text)
	}
	c.state = to
	c.wakeups++ // sk_state_change
	if to == TimeWait || to == Closed {
		h.portsGen++ // a TIME_WAIT may now be reusable, a CLOSED one freed
	}
	// CurrEstab counts ESTABLISHED and CLOSE_WAIT connections, as
	// tcp_set_state does since Linux 6.10.
	if inEstab(to) && !inEstab(from) {
		h.count(CurrEstab)
	} else if inEstab(from) && !inEstab(to) {
		h.add(CurrEstab, -1)
	}
	if to == Closed && (from == Established || from == CloseWait) {
		h.count(EstabResets)
	}
	if h.record {
		h.events = append(h.events, Event{Kind: EvState, At: h.now, Sock: c.id, Parent: c.parentSk,
			Local: c.localAP(), Remote: c.remoteAP(), V6Only: c.v6only, From: from, To: to, Cause: Cause{kind, text}})
	}
}

func inEstab(s State) bool { return s == Established || s == CloseWait }

// fail is tcp_done: the connection failed (a reset or a timeout). One that
// never got established counts in AttemptFails.
func (c *conn) fail(kind CauseKind, text string) {
	if c.state == SynSent || c.state == SynRecv {
		c.h.count(AttemptFails)
	}
	c.finish(kind, text)
}

// finish ends a connection. The socket stays for its descriptor, if it
// still has one; otherwise it is gone.
func (c *conn) finish(kind CauseKind, text string) {
	if c.state == Closed {
		return
	}
	c.setState(Closed, kind, text)
	c.rcvShut, c.sndShut = true, true
	c.tw = false
	c.stopTimers()
	c.snd.reset()
	c.ooo, c.sent, c.skbs, c.skbSize = nil, nil, nil, 0
	c.finQueued = false
	c.unhash()
	if c.parent != nil {
		// A reset connection stays in the accept queue: accept() still
		// returns it, and its first read reports the error (Linux's
		// inet_csk_accept does not look at the state).
		c.parent.lst.forgetReq(c)
	}
	if !c.explicitBind || c.fd < 0 {
		c.h.unbindPort(c)
	}
	c.maybeFree()
}

// maybeFree releases a socket nobody can reach any more.
func (c *conn) maybeFree() {
	if c.state == Closed && c.fd < 0 && len(c.pending) == 0 && !c.inAccept {
		c.stopTimers()
		c.unhash()
		c.h.unbindPort(c)
		c.rearm()
	}
}

func (c *conn) hash() {
	if !c.hashed {
		if o := c.h.conns[c.key()]; o != nil && o != c {
			c.h.bug("sock %d takes the 4-tuple of sock %d (%v)", c.id, o.id, o.state)
		}
		c.h.conns[c.key()] = c
		c.hashed = true
	}
}

func (c *conn) unhash() {
	if c.hashed {
		c.h.portsGen++
		if c.h.conns[c.key()] == c {
			delete(c.h.conns, c.key())
		}
		c.hashed = false
	}
}

func (c *conn) stopTimers() {
	c.rtxAt, c.delackAt, c.kaAt, c.closeAt, c.lingerAt = never, never, never, never, never
	c.probing = false
	c.persist = false
}

// rearm puts the connection in the host's timer heap at its earliest timer.
func (c *conn) rearm() {
	w := min(c.rtxAt, c.delackAt, c.kaAt, c.closeAt, c.lingerAt)
	t := &c.h.timers
	switch {
	case w == never && c.heapIdx >= 0:
		c.wakeAt = never
		t.remove(c)
	case w == never:
		c.wakeAt = never
	case c.heapIdx < 0:
		c.wakeAt = w
		t.push(c)
	case w != c.wakeAt:
		c.wakeAt = w
		t.fix(c)
	}
}

// onTimers runs every timer of the connection that is due now.
func (c *conn) onTimers() {
	now := c.h.now
	if c.closeAt <= now {
		c.closeAt = never
		c.onCloseTimer()
	}
	if c.rtxAt <= now {
		c.rtxAt = never
		switch {
		case c.req:
			c.onSynAckTimer()
		case c.persist:
			c.onProbeTimer()
		case c.probing:
			c.probing = false
			c.onLossProbe()
		default:
			c.onRetransmitTimer()
		}
	}
	if c.delackAt <= now {
		c.delackAt = never
		c.onDelackTimer()
	}
	if c.kaAt <= now {
		c.kaAt = never
		c.onKeepaliveTimer()
	}
	if c.lingerAt <= now {
		c.lingerAt = never
		c.onLingerTimer()
	}
	c.checkPending()
	if c.parent != nil {
		c.parent.checkPending()
	}
}

// onCloseTimer ends TIME_WAIT, or the FIN_WAIT2 of an orphan
// (tcp_fin_timeout), silently as Linux's inet_twsk timer does.
func (c *conn) onCloseTimer() {
	why := "" // the cause is only read by an event
	switch c.state {
	case TimeWait:
		if c.h.record {
			why = "TIME_WAIT expired (" + fmtDur(c.h.prof.TimeWait) + ", 2*MSL)"
		}
		c.finish(CauseTimer, why)
	case FinWait2:
		if c.h.record {
			why = "orphaned FIN_WAIT2 expired (tcp_fin_timeout " + fmtDur(c.finTime()) + ")"
		}
		c.finish(CauseTimer, why)
	}
}

// enterTimeWait is tcp_time_wait(TCP_TIME_WAIT): the connection becomes a
// remnant that only re-ACKs a retransmitted FIN and keeps the 4-tuple and
// the port for 2*MSL.
func (c *conn) enterTimeWait(kind CauseKind, text string) {
	c.setState(TimeWait, kind, text)
	c.becomeRemnant(c.h.prof.TimeWait)
}

// becomeRemnant turns the connection into a timewait socket that lives for
// d. Linux counts it when it is made (__inet_twsk_schedule): TW, or
// TWKilled for a remnant of at most 4 s.
func (c *conn) becomeRemnant(d time.Duration) {
	if d <= 4*time.Second {
		c.h.count(TWKilled)
	} else {
		c.h.count(TW)
	}
	c.tw = true
	c.hasLastOOWAck = false // a timewait socket has its own rate limit
	c.stopTimers()
	c.closeAt = c.h.now + d
	c.snd.reset()
	c.ooo, c.sent, c.skbs, c.skbSize = nil, nil, nil, 0
	c.ackPending = false
	c.rcvShut, c.sndShut = true, true
	if c.parent != nil {
		c.parent.lst.forgetReq(c)
	}
}

// finTime is tcp_fin_time: tcp_fin_timeout, at least 3.5 RTO.
func (c *conn) finTime() time.Duration {
	t := c.h.prof.FinTimeout
	if m := c.rto*4 - c.rto/2; t < m {
		t = m
	}
	return t
}

// fmtDur prints whole seconds as "60s", anything else as Go does.
func fmtDur(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
	return d.String()
}
