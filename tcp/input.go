package tcp

import (
	"time"

	"github.com/tcplab/tcplab/wire"
)

// input dispatches a segment that matched this connection's 4-tuple.
func (c *conn) input(seg *wire.Segment) {
	switch {
	case c.req:
		c.reqInput(seg)
	case c.tw:
		c.twInput(seg)
	case c.state == SynSent:
		c.synSentInput(seg)
	case c.state == Closed || c.state == Listen:
		c.h.sendResetFor(seg, "socket closed")
	default:
		c.rcvStateProcess(seg)
	}
	c.checkPending()
	if c.parent != nil {
		c.parent.checkPending()
	}
}

// synSentInput mirrors tcp_rcv_synsent_state_process (RFC 9293 3.10.7.3).
func (c *conn) synSentInput(seg *wire.Segment) {
	h := c.h
	f := seg.Flags
	if f&wire.ACK != 0 {
		if seg.Ack.LessEq(c.iss) || seg.Ack.GreaterThan(c.sndMax) {
			if f&wire.RST == 0 {
				h.sendResetFor(seg, "unacceptable ACK in SYN_SENT")
			}
			return
		}
		if f&wire.RST != 0 {
			c.reset("rcv RST: connection refused")
			return
		}
		if f&wire.SYN == 0 {
			return
		}
		c.irs = seg.Seq
		c.rcvNxt = seg.Seq.Add(1)
		c.rcvWup = c.rcvNxt
		c.takeSynOptions(seg)
		c.sndWnd = uint32(seg.Window) // never scaled in a SYN (RFC 7323)
		c.maxWnd = max(c.maxWnd, c.sndWnd)
		c.sndWl1 = seg.Seq
		c.ackAdvance(seg.Ack)
		c.lastAckRcv = h.now
		c.setState(Established, CauseSegment, "rcv SYN,ACK, snd ACK")
		c.lrcvAt, c.hasLrcv = c.h.now, true // icsk_ack.lrcvtime starts at the handshake
		c.initTransfer()
		c.sendAck()
		c.xmit()
		return
	}
	if f&wire.RST != 0 {
		return
	}
	if f&wire.SYN != 0 {
		// Crossed SYNs: simultaneous open.
		c.irs = seg.Seq
		c.rcvNxt = seg.Seq.Add(1)
		c.rcvWup = c.rcvNxt
		c.takeSynOptions(seg)
		c.sndWnd = uint32(seg.Window)
		c.maxWnd = max(c.maxWnd, c.sndWnd)
		c.sndWl1 = seg.Seq
		c.setState(SynRecv, CauseSegment, "rcv SYN (simultaneous open), snd SYN,ACK")
		c.sendSyn()
	}
}

// rcvStateProcess handles a segment in SYN_RECV (simultaneous open),
// ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, CLOSING and LAST_ACK: Linux's
// tcp_validate_incoming, tcp_ack and tcp_rcv_state_process in RFC 9293
// order.
func (c *conn) rcvStateProcess(seg *wire.Segment) {
	h := c.h
	f := seg.Flags
	if f&(wire.ACK|wire.RST|wire.SYN) == 0 {
		return // tcp_rcv_state_process drops these before any check
	}

	// PAWS (RFC 7323): an old timestamp marks an old duplicate. RSTs are
	// exempt (tcp_validate_incoming).
	if f&wire.RST == 0 && c.pawsReject(seg) {
		if f&wire.SYN != 0 {
			c.synChallenge()
			return
		}
		h.count(PAWSEstabRejected)
		if !c.oowRateLimited(seg, TCPACKSkippedPAWS) {
			c.sendDupAck(seg)
		}
		return
	}

	// 1. Sequence number (tcp_sequence).
	if !c.seqAcceptable(seg) {
		if f&wire.RST == 0 {
			if f&wire.SYN != 0 {
				c.synChallenge()
				return
			}
			if !c.oowRateLimited(seg, TCPACKSkippedSeq) {
				c.sendDupAck(seg)
			}
		} else if c.resetCheck(seg) {
			c.reset("rcv RST at the peer's FIN")
		}
		return
	}

	// 2. RST, RFC 5961 section 3.2: only an exact match resets.
	if f&wire.RST != 0 {
		if seg.Seq == c.rcvNxt || c.resetCheck(seg) {
			c.reset("rcv RST")
		} else {
			c.challengeAck("RST in window but not at RCV.NXT")
		}
		return
	}
	// 4. SYN in a synchronized state, RFC 5961 section 4.2.
	if f&wire.SYN != 0 {
		crossedSynAck := c.state == SynRecv && f&wire.ACK != 0 && len(seg.Payload) == 0 &&
			seg.Seq.Add(1) == c.rcvNxt && seg.Ack == c.sndNxt
		if !crossedSynAck {
			c.synChallenge()
			return
		}
	}

	// 5. ACK.
	if f&wire.ACK == 0 {
		return
	}
	if c.state == SynRecv {
		if !(c.sndUna.LessThan(seg.Ack) && seg.Ack.LessEq(c.sndMax)) {
			h.sendResetFor(seg, "unacceptable ACK in SYN_RECV")
			return
		}
		c.replaceTSRecent(seg)
		c.sndWnd = uint32(seg.Window) << c.sndWScale
		c.maxWnd = max(c.maxWnd, c.sndWnd)
		c.sndWl1 = seg.Seq
		c.ackAdvance(seg.Ack)
		c.lastAckRcv = h.now
		c.setState(Established, CauseSegment, "rcv ACK of SYN")
		c.lrcvAt, c.hasLrcv = c.h.now, true // icsk_ack.lrcvtime starts at the handshake
		c.initTransfer()
		if f&wire.SYN != 0 {
			// The crossed SYN-ACK repeats the peer's SYN, which is
			// now old: tcp_data_queue ACKs it at once with a D-SACK,
			// so a simultaneous open ends with two pure ACKs.
			c.setDSACK(seg.Seq, seg.Seq.Add(1))
			c.enterQuickack()
			c.sendAck()
			return
		}
	} else {
		switch {
		case seg.Ack.GreaterThan(c.sndMax):
			// Acks data never sent: dropped, and answered with a
			// challenge ACK in every state (tcp_ack on Linux 6.18; a
			// packetdrill run on the kernel shows it in ESTABLISHED
			// too, where older kernels dropped it silently).
			c.challengeAck("ACK of unsent data")
			return
		case seg.Ack.LessThan(c.sndUna.Add(-int(min(int64(c.maxWnd), c.bytesAcked)))):
			// RFC 5961 5.2, with Linux's bound: the window, but no more
			// than what the peer has acknowledged so far.
			c.challengeAck("ACK older than the window (RFC 5961 5.2)")
			return
		case seg.Ack.LessThan(c.sndUna):
			// An old ACK, reordered: use the segment, ignore the ACK
			// and its timestamp (in closing states too since Linux 6.10).
		default:
			c.replaceTSRecent(seg)
			c.processAck(seg)
		}
	}

	switch c.state {
	case Closing:
		if c.finAcked() {
			c.enterTimeWait(CauseSegment, "rcv ACK of FIN")
			return
		}
	case LastAck:
		if c.finAcked() {
			c.finish(CauseSegment, "rcv ACK of FIN")
			return
		}
	case FinWait1:
		if c.finAcked() {
			c.finAckPending = true
		}
	}

	// 7. Data and FIN.
	switch c.state {
	case CloseWait, Closing, LastAck:
		if !seg.Seq.LessThan(c.rcvNxt) {
			break // the peer already sent its FIN: nothing new can come
		}
		fallthrough
	case FinWait1, FinWait2:
		if c.rcvShut && c.abortOnData(seg) {
			return
		}
		fallthrough
	case Established:
		c.dataQueue(seg)
	}
	if c.state == FinWait1 && c.finAckPending {
		c.finAckPending = false
		c.enterFinWait2(CauseSegment, "rcv ACK of FIN")
		if c.state != FinWait2 {
			return
		}
	}
	c.finAckPending = false
	if c.state == Closed || c.tw {
		return
	}
	c.xmit()
	c.ackSndCheck()
}

// resetCheck is tcp_reset_check: a RST at the peer's FIN (RCV.NXT-1) ends
// a connection in CLOSE_WAIT, LAST_ACK or CLOSING even out of the window.
func (c *conn) resetCheck(seg *wire.Segment) bool {
	return seg.Seq == c.rcvNxt.Add(-1) && (c.state == CloseWait || c.state == LastAck || c.state == Closing)
}

// sendDupAck is tcp_send_dupack: answer an unacceptable segment with an
// ACK, and when it carried old data, report the duplicate with a D-SACK.
func (c *conn) sendDupAck(seg *wire.Segment) {
	if seg.Len() > 0 && seg.Seq.LessThan(c.rcvNxt) {
		c.enterQuickack()
		end := seg.End()
		if end.GreaterThan(c.rcvNxt) {
			end = c.rcvNxt
		}
		c.setDSACK(seg.Seq, end)
	}
	c.sendAck()
}

// abortOnData resets a connection whose socket is shut for reading (after
// close()) when new data arrives: RFC 1122 says the host MUST reset, and
// Linux does (TCPAbortOnData).
func (c *conn) abortOnData(seg *wire.Segment) bool {
	dataEnd := seg.End()
	if seg.Flags&wire.FIN != 0 {
		dataEnd = dataEnd.Add(-1)
	}
	if seg.Len() > 0 && dataEnd.GreaterThan(c.rcvNxt) {
		c.h.count(TCPAbortOnData)
		c.h.note(c, "data arrived after close(): the connection is reset and the data lost")
		c.reset("rcv data after close(): reset")
		c.h.sendResetFor(seg, "data for a closed socket")
		return true
	}
	return false
}

// enterFinWait2 follows an ACK of our FIN in FIN_WAIT1. A socket still
// open for reading waits as long as the peer likes (a half-close); an
// orphan becomes a remnant that dies after tcp_fin_timeout.
func (c *conn) enterFinWait2(kind CauseKind, text string) {
	c.setState(FinWait2, kind, text)
	c.sndShut = true
	c.rtxAt, c.persist, c.probing = never, false, false
	if c.orphan {
		c.becomeRemnant(c.finTime())
	}
}

func (c *conn) finAcked() bool {
	return c.finSent && c.sndUna.GreaterThan(c.finSeq)
}

// seqAcceptable is tcp_sequence: the segment overlaps the window we
// advertised last.
func (c *conn) seqAcceptable(seg *wire.Segment) bool {
	end := seg.End()
	return !end.LessThan(c.rcvWup) && !seg.Seq.GreaterThan(c.rcvNxt.Add(int(c.receiveWindow())))
}

// receiveWindow is what is left of the window we advertised last.
func (c *conn) receiveWindow() uint32 {
	w := int64(c.rcvWup.Add(int(c.rcvWnd)).Diff(c.rcvNxt))
	if w < 0 {
		return 0
	}
	return uint32(w)
}

// pawsReject is the PAWS test (RFC 7323): the segment's timestamp is older
// than the last one in order.
func (c *conn) pawsReject(seg *wire.Segment) bool {
	return c.tsOK && seg.Options.HasTimestamps && int32(seg.Options.TSVal-c.tsRecent) < 0
}

// reset is tcp_reset: the peer reset the connection.
func (c *conn) reset(text string) {
	switch c.state {
	case SynSent:
		c.err = ECONNREFUSED
	case CloseWait:
		c.err = EPIPE
	case Closed:
		return
	default:
		c.err = ECONNRESET
	}
	c.fail(CauseSegment, text)
}

// challengeAck sends an RFC 5961 challenge ACK: the peer, if genuine,
// answers with an exact RST or a correct segment; a blind attacker learns
// nothing.
// replaceTSRecent is tcp_replace_ts_recent, which tcp_ack calls only once
// it knows the ACK is acceptable (neither of unsent data nor older than
// SND.UNA): the timestamp of a segment that starts at or before RCV.WUP
// becomes TS.Recent. A segment whose ACK is refused leaves it alone, so
// that a forged timestamp cannot make later segments fail PAWS.
func (c *conn) replaceTSRecent(seg *wire.Segment) {
	if c.tsOK && seg.Options.HasTimestamps && seg.Seq.LessEq(c.rcvWup) {
		c.tsRecent, c.tsRecentAt = seg.Options.TSVal, c.h.now
	}
}

func (c *conn) challengeAck(why string) {
	h := c.h
	if c.oowRateLimited(nil, TCPACKSkippedChallenge) {
		return
	}
	if lim := h.prof.ChallengeAckLimit; lim > 0 {
		if h.now-h.challengeWindow >= 1e9 {
			h.challengeWindow, h.challengeCount = h.now, 0
		}
		if h.challengeCount >= lim {
			return
		}
		h.challengeCount++
	}
	h.count(TCPChallengeACK)
	h.note(c, "challenge ACK: %s", why)
	c.sendAck()
}

func (c *conn) synChallenge() {
	c.h.count(TCPSYNChallenge)
	c.challengeAck("SYN in a synchronized state")
}

// processAck is the heart of tcp_ack for an acceptable ACK.
func (c *conn) processAck(seg *wire.Segment) {
	h := c.h
	ack := seg.Ack
	nwin := uint32(seg.Window) << c.sndWScale
	winUpdate := false
	// tcp_may_update_window
	if ack.GreaterThan(c.sndUna) || seg.Seq.GreaterThan(c.sndWl1) ||
		(seg.Seq == c.sndWl1 && (nwin > c.sndWnd || nwin == 0)) {
		winUpdate = nwin != c.sndWnd
		c.sndWnd = nwin
		if unsent := int(c.sndBase.Add(c.snd.Len()).Diff(c.sndNxt)); unsent > 0 &&
			!c.sndNxt.Add(min(unsent, c.mss)).GreaterThan(c.sndUna.Add(int(nwin))) {
			// tcp_ack_probe: the window takes the next segment, so
			// zero-window probing is over (icsk_probes_tstamp = 0).
			c.hasProbesStamp = false
		}
		c.maxWnd = max(c.maxWnd, nwin)
		c.sndWl1 = seg.Seq
	}
	c.lastAckRcv = h.now
	c.probesOut = 0 // the stamp of the first probe stays until the window opens (tcp_ack_probe)
	if ack.GreaterThan(c.sndUna) {
		acked := int(ack.Diff(c.sndUna))
		c.ackAdvance(ack)
		c.dupAcks = 0
		if c.inRecovery {
			if !ack.LessThan(c.recover) {
				c.inRecovery = false
				c.cwnd = c.ssthresh
			}
		} else if c.cwnd < c.ssthresh {
			// tcp_slow_start, when tcp_is_cwnd_limited: one segment
			// per segment acknowledged, up to ssthresh, while the
			// window is less than twice the largest flight of late.
			if c.cwnd < 2*c.maxPacketsOut*c.mss {
				c.cwnd = min(c.cwnd+c.pktsAcked*c.mss, max(c.ssthresh, c.cwnd))
			}
			_ = acked
		} else {
			c.cwnd += max(1, c.mss*c.mss/c.cwnd)
		}
		return
	}
	// A duplicate ACK (RFC 5681): same ack, no data, same window, data
	// outstanding.
	if ack == c.sndUna && len(seg.Payload) == 0 && seg.Flags&(wire.SYN|wire.FIN) == 0 &&
		!winUpdate && c.sndMax.GreaterThan(c.sndUna) {
		c.dupAcks++
		if c.dupAcks == 3 && !c.inRecovery {
			c.fastRetransmit()
		}
	}
	if winUpdate && c.persist && c.sndWnd > 0 {
		c.rtxAt, c.persist, c.probing = never, false, false
	}
}

// ackAdvance moves SND.UNA to ack: frees acknowledged bytes, takes an RTT
// sample (Karn's rule: never from a retransmitted segment), and restarts or
// stops the retransmission timer.
func (c *conn) ackAdvance(ack wire.Seq) {
	h := c.h
	if c.rttTiming && ack.GreaterThan(c.rttSeq) {
		c.rttSample(h.now - c.rttAt)
		c.rttTiming = false
	}
	if ack.GreaterThan(c.sndBase) {
		n := min(int(ack.Diff(c.sndBase)), c.snd.Len())
		if n > 0 {
			c.bytesAcked += int64(n)
			c.snd.consume(n)
			// tcp_check_space: a writer that found the buffer full is
			// woken once it is writeable again (sk_stream_write_space).
			c.skbAcked(ack)
			c.writeSpace()
			c.sndBase = c.sndBase.Add(n)
		}
	}
	if c.sndBase.LessThan(ack) && !c.finSent {
		// The SYN occupied iss; data starts after it.
		c.sndBase = ack
	}
	c.sndUna = ack
	c.sndNxt = c.sndNxt.Max(ack)
	if c.chrono != chronoNone && ack == c.sndBase.Add(c.snd.Len()) {
		c.chronoStopT(chronoBusy) // all acknowledged: idle
	}
	i := 0
	for i < len(c.sent) && !c.sent[i].end.GreaterThan(ack) {
		i++
	}
	c.sent = c.sent[i:]
	c.pktsAcked = i
	if c.inLoss && !ack.LessThan(c.lossHigh) {
		c.inLoss = false // the loss episode is over (tcp_try_undo_recovery's TCP_CA_Open)
	}
	c.retransmits, c.backoff = 0, 0
	c.hasRetransStamp = false
	if c.srtt > 0 {
		c.rto = c.computeRTO()
	}
	if c.tlpOut && !ack.LessThan(c.tlpHigh) {
		c.tlpOut = false // tcp_process_tlp_ack: the episode is over
	}
	if c.sndUna == c.sndMax {
		c.rtxAt, c.persist, c.probing = never, false, false
	} else if !c.scheduleLossProbe(true) {
		c.rtxAt, c.persist, c.probing = h.now+c.rto, false, false
	}
}

// rttSample updates SRTT and RTTVAR (RFC 6298).
func (c *conn) rttSample(r time.Duration) {
	if r < time.Microsecond {
		r = time.Microsecond // Linux measures in microseconds, never 0
	}
	if c.srtt == 0 {
		c.srtt, c.rttvar = r, r/2
	} else {
		d := c.srtt - r
		if d < 0 {
			d = -d
		}
		c.rttvar = (3*c.rttvar + d) / 4
		c.srtt = (7*c.srtt + r) / 8
	}
}

// computeRTO is Linux's tcp_set_rto: SRTT plus a variance term that never
// drops below tcp_rto_min, bounded by TCP_RTO_MAX.
func (c *conn) computeRTO() time.Duration {
	p := &c.h.prof
	rto := c.srtt + max(4*c.rttvar, p.MinRTO)
	if j := p.Jiffy; j > 0 {
		rto = (rto + j - 1) / j * j // usecs_to_jiffies rounds up: ss shows rto:204 at HZ=250
	}
	return min(rto, p.MaxRTO)
}

// fastRetransmit resends the first unacknowledged segment after three
// duplicate ACKs (RFC 5681 section 3.2).
func (c *conn) fastRetransmit() {
	c.ssthresh = c.cubicSsthresh()
	c.cwnd = c.ssthresh + 3*c.mss
	c.inRecovery = true
	c.recover = c.sndMax
	c.h.note(c, "fast retransmit after 3 duplicate ACKs")
	c.retransmitHead(false)
}

// initTransfer sets congestion state when the connection is established
// (tcp_init_transfer).
func (c *conn) initTransfer() {
	if c.srtt == 0 {
		// No valid RTT sample from the handshake (it was retransmitted):
		// RFC 6298 5.7 and Linux's tcp_init_metrics fall back to 3 s.
		c.rto = tcpTimeoutFallback
	}
	c.cwnd = c.h.prof.InitialCwnd * c.mss
	c.ssthresh = 1 << 30
	if c.keepalive {
		c.kaAt = c.h.now + c.kaIdle
	}
}

// dataQueue is tcp_data_queue: in-order data is delivered (and an in-order
// FIN processed), a retransmission is re-ACKed with a D-SACK, out-of-order
// data is kept aside and answered with a duplicate ACK at once. Nothing is
// ever delivered twice or out of order.
func (c *conn) dataQueue(seg *wire.Segment) {
	seq := seg.Seq
	data := seg.Payload
	fin := seg.Flags&wire.FIN != 0
	if seg.Flags&wire.SYN != 0 {
		seq = seq.Add(1)
	}
	if len(data) == 0 && !fin {
		return
	}
	end := seq.Add(len(data))
	if fin {
		end = end.Add(1)
	}
	if !end.GreaterThan(c.rcvNxt) {
		// Entirely old: a retransmission. Force an immediate ACK.
		c.setDSACK(seq, end)
		c.enterQuickack()
		c.sendAck()
		return
	}
	win := c.receiveWindow()
	if !seq.LessThan(c.rcvNxt.Add(int(win))) && len(data) > 0 {
		c.enterQuickack()
		c.sendAck()
		return
	}
	if seq.LessThan(c.rcvNxt) {
		// Partly old: keep the new part.
		c.setDSACK(seq, c.rcvNxt)
		data = data[c.rcvNxt.Diff(seq):]
		seq = c.rcvNxt
	}
	if seq != c.rcvNxt {
		c.oooInsert(seq, data, fin)
		c.enterQuickack()
		c.sendAck()
		return
	}
	if len(data) > 0 && win == 0 {
		c.enterQuickack()
		c.sendAck()
		return
	}
	hadOOO := len(c.ooo) > 0
	take := min(len(data), int(win))
	if take < len(data) {
		fin = false // the FIN lies beyond what we accept
	}
	if take > 0 || fin {
		c.wakeups++ // sk_data_ready
	}
	if take > 0 {
		c.rcv.push(data[:take])
		c.rcvNxt = c.rcvNxt.Add(take)
		c.eventDataRecv(take, seg.Flags&wire.PSH != 0)
	}
	if fin {
		c.rcvNxt = c.rcvNxt.Add(1)
	}
	finDone := fin
	if hadOOO && !fin {
		if c.oooPull() {
			finDone = true
		}
		if len(c.ooo) == 0 {
			c.ackNow = true // RFC 5681 4.2: ACK at once when a gap fills
		}
	}
	c.ackPending = true
	if finDone {
		c.fin()
	}
}

// oooInsert keeps an out-of-order segment, trimmed to what is new.
func (c *conn) oooInsert(seq wire.Seq, data []byte, fin bool) {
	c.oooLast = seq
	if len(data) == 0 && !fin {
		return
	}
	i := 0
	for i < len(c.ooo) && c.ooo[i].seq.LessThan(seq) {
		i++
	}
	// Cap what we hold to the window; a sender retransmits the rest.
	total := len(data)
	for j := range i {
		total += c.ooo[j].n
	}
	if total > c.h.prof.RcvWindow*2 {
		c.ooo = c.ooo[:i]
		return
	}
	// The bytes go to the receive ring at their place past the unread
	// ones, where they stay once the gap before them fills. Where held
	// segments overlap, the one lowest in sequence gives the bytes, and a
	// later one of the same start replaces it over its length (Linux's
	// ofo queue keeps the lower one too, and replaces one of the same
	// start that the new one covers). Those before i start below seq, so
	// what they cover of the new segment is its head, up to the furthest
	// of their ends.
	skip := 0
	for _, o := range c.ooo[:i] {
		skip = max(skip, int(o.seq.Add(o.n).Diff(seq)))
	}
	if skip < len(data) {
		c.rcv.write(c.rcv.Len()+int(seq.Diff(c.rcvNxt))+skip, data[skip:])
	}
	c.ooo = append(c.ooo, oooSeg{})
	copy(c.ooo[i+1:], c.ooo[i:])
	c.ooo[i] = oooSeg{seq: seq, n: len(data), fin: fin}
	for j := i + 1; j < len(c.ooo); j++ {
		total += c.ooo[j].n
		if total > c.h.prof.RcvWindow*2 {
			c.ooo = c.ooo[:j]
			break
		}
	}
}

// oooPull moves out-of-order data that has become in-order into the
// receive queue; it reports whether a FIN was reached.
func (c *conn) oooPull() bool {
	fin := false
	for len(c.ooo) > 0 {
		s := c.ooo[0]
		if s.seq.GreaterThan(c.rcvNxt) {
			break
		}
		c.ooo = c.ooo[1:]
		end := s.seq.Add(s.n)
		if end.GreaterThan(c.rcvNxt) {
			// The bytes are in the ring already, after the unread ones.
			c.rcv.advance(int(end.Diff(c.rcvNxt)))
			c.wakeups++
			c.rcvNxt = end
		}
		if s.fin && c.rcvNxt == end {
			c.rcvNxt = c.rcvNxt.Add(1)
			fin = true
			break
		}
	}
	if fin || len(c.ooo) == 0 {
		c.ooo = nil
	}
	return fin
}

func (c *conn) setDSACK(from, to wire.Seq) {
	if c.sackOK {
		c.dsack = &wire.SACKBlock{Left: from, Right: to}
	}
}

// fin is tcp_fin: an in-order FIN arrived.
func (c *conn) fin() {
	c.ackPending = true
	c.rcvShut = true
	c.done = true
	c.ooo = nil
	switch c.state {
	case SynRecv, Established:
		c.setState(CloseWait, CauseSegment, "rcv FIN")
		c.pingpong = true
	case FinWait1:
		c.sendAck()
		if c.finAckPending {
			c.finAckPending = false
			if c.h.prof.FinWait2InPassing {
				c.setState(FinWait2, CauseSegment, "rcv ACK of FIN")
				c.enterTimeWait(CauseSegment, "rcv FIN, snd ACK")
				return
			}
			c.enterTimeWait(CauseSegment, "rcv FIN,ACK acking our FIN, snd ACK")
		} else {
			c.setState(Closing, CauseSegment, "rcv FIN (simultaneous close), snd ACK")
		}
	case FinWait2:
		c.sendAck()
		c.enterTimeWait(CauseSegment, "rcv FIN, snd ACK")
	}
}

// twInput is tcp_timewait_state_process for a remnant in TIME_WAIT or in
// the FIN_WAIT2 of an orphan.
func (c *conn) twInput(seg *wire.Segment) {
	h := c.h
	f := seg.Flags
	paws := c.pawsReject(seg)
	if c.state == FinWait2 {
		if paws || !inWindow(seg.Seq, seg.End(), c.rcvNxt, c.rcvNxt.Add(int(c.rcvWnd))) {
			if !c.oowRateLimited(seg, TCPACKSkippedFinWait2) {
				c.sendAck()
			}
			return
		}
		if f&wire.RST != 0 {
			c.finish(CauseSegment, "rcv RST")
			return
		}
		if f&wire.SYN != 0 && !seg.Seq.LessThan(c.rcvNxt) {
			h.sendResetFor(seg, "SYN for a closing connection")
			c.finish(CauseSegment, "rcv SYN in FIN_WAIT2: reset")
			return
		}
		if f&wire.ACK == 0 || !seg.End().GreaterThan(c.rcvNxt) || seg.Len() == 0 {
			return
		}
		if f&wire.FIN == 0 || seg.End() != c.rcvNxt.Add(1) {
			h.note(c, "data arrived after close(): the connection is reset and the data lost")
			h.sendResetFor(seg, "data for a closed socket")
			c.finish(CauseSegment, "rcv data after close(): reset")
			return
		}
		c.rcvNxt = seg.End()
		if seg.Options.HasTimestamps && c.tsOK {
			c.tsRecent, c.tsRecentAt = seg.Options.TSVal, h.now
		}
		c.setState(TimeWait, CauseSegment, "rcv FIN, snd ACK")
		c.closeAt = h.now + h.prof.TimeWait
		c.sendAck()
		return
	}

	// TIME_WAIT
	if !paws && seg.Seq == c.rcvNxt && (seg.Len() == 0 || f&wire.RST != 0) {
		if f&wire.RST != 0 {
			if !h.prof.RFC1337 {
				h.note(c, "RST in TIME_WAIT ends it early (TIME_WAIT assassination, RFC 1337)")
				c.finish(CauseSegment, "rcv RST (TIME_WAIT assassination)")
			}
			return
		}
		c.closeAt = h.now + h.prof.TimeWait
		if seg.Options.HasTimestamps && c.tsOK {
			c.tsRecent, c.tsRecentAt = seg.Options.TSVal, h.now
		}
		return
	}
	if f&wire.SYN != 0 && f&(wire.RST|wire.ACK) == 0 && !paws &&
		(seg.Seq.GreaterThan(c.rcvNxt) || (c.tsOK && seg.Options.HasTimestamps && int32(c.tsRecent-seg.Options.TSVal) < 0)) {
		// A new SYN for the same 4-tuple may reopen it (RFC 1122
		// 4.2.2.13) with an ISN above anything the old one used.
		if l := h.listener(seg); l != nil {
			isn := c.sndNxt.Add(65535 + 2)
			if isn == 0 {
				isn++
			}
			c.finish(CauseSegment, "rcv SYN for a new incarnation of the 4-tuple")
			l.listenInput(seg, isn)
			return
		}
	}
	if paws {
		h.count(PAWSEstabRejected)
	}
	if f&wire.RST == 0 {
		if paws || f&wire.ACK != 0 {
			c.closeAt = h.now + h.prof.TimeWait
		}
		if !c.oowRateLimited(seg, TCPACKSkippedTimeWait) {
			c.sendAck()
		}
	}
}

// inWindow is tcp_in_window.
func inWindow(seq, end, s, e wire.Seq) bool {
	if seq == s {
		return true
	}
	if end.GreaterThan(s) && seq.LessThan(e) {
		return true
	}
	return seq == e && seq == end
}
