package tcp

import (
	"sort"
	"strconv"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// listener is the listening half of a socket: Linux's request_sock_queue.
type listener struct {
	backlog int // sk_max_ack_backlog: min(backlog, somaxconn)

	reqs    map[*conn]struct{} // the SYN queue: request sockets in SYN_RECV
	young   int                // requests whose SYN-ACK was never retransmitted
	acceptq []*conn            // completed connections waiting for accept()

	lastOverflow time.Duration // tcp_synq_overflow: when cookies were last needed
	overflowed   bool
	floodWarned  bool
}

// acceptFull is sk_acceptq_is_full: the queue holds backlog+1 connections.
func (l *listener) acceptFull() bool { return len(l.acceptq) > l.backlog }

// synqFull is inet_csk_reqsk_queue_is_full: more requests than the backlog
// (">" since early 2025, so that a backlog of 0 still admits one).
func (l *listener) synqFull() bool { return len(l.reqs) > l.backlog }

// forgetReq takes a request out of the SYN queue.
func (l *listener) forgetReq(c *conn) {
	if _, ok := l.reqs[c]; ok {
		delete(l.reqs, c)
		if c.numTimeout == 0 {
			l.young--
		}
	}
}

// listenDrop is tcp_listendrop.
func (c *conn) listenDrop(why string) {
	c.h.count(ListenDrops)
	c.h.note(c, "listener dropped a segment: %s", why)
}

// takes says whether a listener takes a segment of its family: an AF_INET
// one IPv4, an AF_INET6 one IPv6 and, unless IPV6_V6ONLY, IPv4 (its
// connections then see IPv4-mapped addresses).
func (c *conn) takes(seg *wire.Segment) bool {
	if seg.Dst.Is6() {
		return c.v6
	}
	return !c.v6 || !c.v6only
}

// listenInput handles a segment for a listening socket (tcp_v4_do_rcv with
// cookie_v4_check, then tcp_rcv_state_process in LISTEN). isn is not 0 when
// a SYN reopens a TIME_WAIT 4-tuple, and is then the new ISN.
func (c *conn) listenInput(seg *wire.Segment, isn wire.Seq) {
	h := c.h
	f := seg.Flags
	if f&wire.RST != 0 {
		return
	}
	if f&wire.ACK != 0 {
		if f&wire.SYN == 0 && h.prof.Syncookies != 0 && c.lst.overflowed &&
			h.now-c.lst.lastOverflow <= synCookieValid {
			if c.cookieAck(seg) {
				return
			}
		}
		h.sendResetFor(seg, "ACK for a listener with no such connection")
		return
	}
	if f&wire.SYN == 0 || f&wire.FIN != 0 {
		return
	}
	c.connRequest(seg, isn)
}

// connRequest is tcp_conn_request: a SYN for a listener.
func (c *conn) connRequest(seg *wire.Segment, isn wire.Seq) {
	h := c.h
	fromTW := isn != 0
	p := &h.prof
	l := c.lst
	wantCookie := false
	if (p.Syncookies == 2 || l.synqFull()) && !fromTW {
		if p.Syncookies != 0 {
			wantCookie = true
			h.count(TCPReqQFullDoCookies)
		} else {
			h.count(TCPReqQFullDrop)
			c.listenDrop("SYN queue full and SYN cookies off: SYN dropped")
			return
		}
		if !l.floodWarned && p.Syncookies != 2 {
			l.floodWarned = true
			h.note(c, "possible SYN flooding on port %d: sending cookies", c.lport)
		}
	}
	if l.acceptFull() {
		h.count(ListenOverflows)
		c.listenDrop("accept queue full: SYN dropped")
		return
	}
	if !wantCookie && !fromTW && p.Syncookies == 0 &&
		p.MaxSynBacklog-len(l.reqs) < p.MaxSynBacklog>>2 {
		c.listenDrop("SYN queue past three quarters of tcp_max_syn_backlog: SYN dropped")
		return
	}
	t := tuple{laddr: seg.Dst, raddr: seg.Src, lport: seg.DstPort, rport: seg.SrcPort}
	if wantCookie {
		l.lastOverflow, l.overflowed = h.now, true
		h.count(SyncookiesSent)
		c.sendCookieSynAck(seg, t)
		return
	}
	if !fromTW {
		isn = h.isn(t)
	}
	r := c.newChild(t, seg.Seq, isn, seg)
	r.req = true
	r.sndWnd = uint32(seg.Window)
	l.reqs[r] = struct{}{}
	l.young++
	r.setState(SynRecv, CauseSegment, "rcv SYN, snd SYN,ACK")
	r.sendSynAck()
	// The handshake's RTT is measured from this SYN-ACK unless it has to
	// be resent (tcp_synack_rtt_meas, Karn's rule).
	r.rttTiming, r.rttSeq, r.rttAt = true, r.iss, h.now
	r.sndNxt = r.iss.Add(1)
	r.sndMax = r.sndNxt
	r.rtxAt = h.now + p.SynAckInitialRTO
	r.rearm()
}

// newChild makes a passive connection of this listener for the 4-tuple t:
// a clone of the listener (state LISTEN, its socket options) with the
// peer's ISN irs, our ISN iss and what the peer's SYN offered; hashed, and
// on the listener's port.
func (l *conn) newChild(t tuple, irs, iss wire.Seq, syn *wire.Segment) *conn {
	h := l.h
	c := h.newConn()
	c.laddr, c.raddr, c.lport, c.rport = t.laddr, t.raddr, t.lport, t.rport
	c.v6, c.v6only, c.mapped = l.v6, l.v6only, l.v6 && t.laddr.Is4()
	c.state = Listen
	c.parent, c.parentSk = l, l.id
	c.inheritOptions(l)
	c.irs = irs
	c.rcvNxt = irs.Add(1)
	c.rcvWup = c.rcvNxt
	c.takeSynOptions(syn)
	c.tsOff = h.tsOffset(t)
	c.flow = h.flowLabel(t, 0)
	c.iss = iss
	c.sndUna, c.sndNxt, c.sndMax = iss, iss, iss
	c.sndBase = iss.Add(1)
	c.pushedSeq = c.sndBase
	c.hash()
	h.bindPort(c, l.lport, false)
	return c
}

func (r *conn) inheritOptions(l *conn) {
	r.reuseAddr = l.reuseAddr
	r.linger, r.lingerTime = l.linger, l.lingerTime
	r.keepalive, r.kaIdle, r.kaIntvl, r.kaProbes = l.keepalive, l.kaIdle, l.kaIntvl, l.kaProbes
	r.noDelay = l.noDelay
	r.sndBuf, r.userMSS, r.userTimeout = l.sndBuf, l.userMSS, l.userTimeout
}

// sendSynAck sends the SYN-ACK of a request socket; it reports false when
// the host's output refused it.
func (r *conn) sendSynAck() bool {
	s := r.segment(wire.SYN|wire.ACK, r.iss, nil)
	peer := wire.Options{SACKPermitted: r.sackOK, HasTimestamps: r.tsOK, TSVal: r.tsRecent, HasWScale: r.wsOK}
	s.Options = r.synOptions(true, &peer)
	return r.emit(s)
}

// resendSynAck retransmits the SYN-ACK of a request; its answer no longer
// gives an RTT sample (Karn's rule). As tcp_rtx_synack, it counts the
// retransmission only when the host's output let it through, and reports
// whether it did.
func (r *conn) resendSynAck() bool {
	r.rttTiming = false
	if !r.sendSynAck() {
		return false
	}
	r.countRetrans()
	return true
}

// onSynAckTimer is reqsk_timer_handler: resend the SYN-ACK with a doubling
// timeout until tcp_synack_retries, fewer when the queue fills with old
// requests (half of the queue is kept for young ones).
func (r *conn) onSynAckTimer() {
	h := r.h
	p := &h.prof
	l := r.parent
	if l == nil || l.state != Listen {
		r.finish(CauseTimer, "listener closed")
		return
	}
	lst := l.lst
	maxRetries := p.SynAckRetries
	qlen := len(lst.reqs)
	if qlen<<1 > max(8, lst.backlog) {
		young := lst.young << 1
		for maxRetries > 2 {
			if qlen < young {
				break
			}
			maxRetries--
			young <<= 1
		}
	}
	h.count(TCPTimeouts)
	if r.numTimeout >= maxRetries {
		text := "SYN-ACK retries exhausted (tcp_synack_retries " + strconv.Itoa(p.SynAckRetries) + ")"
		if maxRetries < p.SynAckRetries {
			text = "SYN-ACK retries cut to " + strconv.Itoa(maxRetries) + " by a SYN queue full of old requests"
		}
		r.finish(CauseTimer, text)
		return
	}
	if !r.resendSynAck() && !r.acked {
		// inet_rtx_syn_ack failed: the request goes, unless its final
		// ACK came while the accept queue was full.
		r.finish(CauseTimer, "SYN-ACK resend refused by the host's output (EPERM)")
		return
	}
	if r.numTimeout == 0 {
		lst.young--
	}
	r.numTimeout++
	r.rtxAt = h.now + min(p.SynAckInitialRTO<<r.numTimeout, p.MaxRTO)
}

// reqInput is tcp_check_req: a segment for a request in the SYN queue.
func (r *conn) reqInput(seg *wire.Segment) {
	h := r.h
	f := seg.Flags
	l := r.parent
	paws := r.pawsReject(seg)
	if seg.Seq == r.irs && f&(wire.RST|wire.SYN|wire.ACK) == wire.SYN && !paws {
		// The peer did not get our SYN-ACK: resend it and restart the
		// timer, at most once per tcp_invalid_ratelimit.
		if r.oowRateLimited(seg, TCPACKSkippedSynRecv) {
			return
		}
		// tcp_check_req restarts the timer only when the resend left.
		if r.resendSynAck() {
			r.rtxAt = h.now + min(h.prof.SynAckInitialRTO<<r.numTimeout, h.prof.MaxRTO)
		}
		return
	}
	if f&wire.ACK != 0 && seg.Ack != r.iss.Add(1) {
		l.listenInput(seg, 0)
		return
	}
	if paws || !inWindow(seg.Seq, seg.End(), r.rcvNxt, r.rcvNxt.Add(int(r.rcvWnd))) {
		if f&wire.RST == 0 && !r.oowRateLimited(seg, TCPACKSkippedSynRecv) {
			r.sendAck()
		}
		if paws {
			h.count(PAWSEstabRejected)
		}
		return
	}
	if f&(wire.RST|wire.SYN) != 0 {
		h.count(AttemptFails)
		if f&wire.RST == 0 {
			h.sendResetFor(seg, "SYN in window of a half-open connection")
		}
		h.count(EmbryonicRsts)
		r.finishReq(CauseSegment, "rcv RST")
		return
	}
	if f&wire.ACK == 0 {
		return
	}
	lst := l.lst
	if lst.acceptFull() {
		h.count(ListenOverflows)
		h.count(ListenDrops)
		if !h.prof.AbortOnOverflow {
			r.acked = true
			h.note(r, "accept queue full: final ACK dropped, the client believes it is ESTABLISHED (SYN-ACK will be resent)")
			return
		}
		h.note(r, "accept queue full and tcp_abort_on_overflow=1: connection reset")
		h.sendResetFor(seg, "accept queue full (tcp_abort_on_overflow)")
		h.count(EmbryonicRsts)
		r.finishReq(CauseSegment, "accept queue full, tcp_abort_on_overflow=1: RST")
		return
	}
	// Complete the connection: Linux's syn_recv_sock, then the child
	// processes the segment.
	lst.forgetReq(r)
	r.req = false
	r.rtxAt = never
	h.count(PassiveOpens)
	r.rcvStateProcess(seg)
	switch r.state {
	case Established, CloseWait:
		r.inAccept = true
		lst.acceptq = append(lst.acceptq, r)
		if r.parent != nil {
			r.parent.wakeups++
		}
	case Closed:
	default:
		h.bug("sock %d: completed request left in %v", r.id, r.state)
	}
}

// finishReq removes a request socket.
func (r *conn) finishReq(kind CauseKind, text string) {
	r.req = false
	r.finish(kind, text)
}

// closeListener is inet_csk_listen_stop: half-open requests vanish and
// connections nobody accepted are reset.
func (c *conn) closeListener() {
	l := c.lst
	reqs := make([]*conn, 0, len(l.reqs))
	for r := range l.reqs {
		reqs = append(reqs, r)
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].id < reqs[j].id })
	for _, r := range reqs {
		r.finishReq(CauseApp, "listener closed")
	}
	for len(l.acceptq) > 0 {
		ch := l.acceptq[0]
		l.acceptq = l.acceptq[1:]
		ch.inAccept = false
		ch.orphan = true
		ch.abort(CauseApp, "listener closed before accept()")
		ch.maybeFree() // already closed (reset in the queue): free it now
	}
	l.acceptq = nil
}

// abort is tcp_disconnect: drop the connection, with RST where the peer
// holds state (tcp_need_reset).
func (c *conn) abort(kind CauseKind, text string) {
	switch c.state {
	case Established, CloseWait, FinWait1, FinWait2, SynRecv:
		c.sendActiveReset()
		c.err = ECONNRESET
	case Closing, LastAck:
		// Only if something we queued (data or our FIN) never went out:
		// tcp_disconnect compares snd_nxt with write_seq.
		writeSeq := c.sndBase.Add(c.snd.Len())
		if c.finQueued {
			writeSeq = writeSeq.Add(1)
		}
		if c.sndMax != writeSeq {
			c.sendActiveReset()
			c.err = ECONNRESET
		}
	case SynSent:
		c.err = ECONNRESET
	}
	c.finish(kind, text)
}
