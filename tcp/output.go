package tcp

import (
	"strconv"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// tsNow is the timestamp clock: milliseconds plus a per-connection offset,
// as Linux's tcp_time_stamp_ts with secure_tcp_ts_off.
func (c *conn) tsNow() uint32 {
	return uint32(c.h.now/time.Millisecond) + c.tsOff
}

// segment builds a segment of this connection. ACK, window and timestamps
// are filled in; sending it counts as having sent an ACK.
func (c *conn) segment(flags wire.Flags, seq wire.Seq, payload []byte) wire.Segment {
	h := c.h
	s := wire.Segment{Src: c.laddr, Dst: c.raddr, SrcPort: c.lport, DstPort: c.rport,
		Seq: seq, Flags: flags, TTL: h.prof.TTL, DF: !c.wireV6(), FlowLabel: c.flow}
	s.Payload = payload // the send queue's bytes (ring.slice), not copied
	if flags&wire.ACK != 0 {
		s.Ack = c.rcvNxt
	}
	s.Window = c.selectWindow(flags&wire.SYN != 0)
	if c.tsOK {
		s.Options.HasTimestamps = true
		s.Options.TSVal = c.tsNow()
		s.Options.TSEcr = c.tsRecent
	}
	if c.sackOK && flags&wire.SYN == 0 && flags&wire.ACK != 0 {
		s.Options.SACK = c.sackBlocks()
	}
	if flags&wire.ACK != 0 {
		c.ackSent()
	}
	return s
}

// selectWindow is tcp_select_window: free receive space, never shrinking
// the right edge already advertised, scaled and rounded up to the scale
// unit. A SYN carries the window unscaled.
func (c *conn) selectWindow(syn bool) uint16 {
	p := &c.h.prof
	shift := uint32(0)
	if c.wsOK {
		shift = uint32(c.rcvWScale)
	}
	if c.req && !syn {
		// A request socket always offers its initial window
		// (tcp_v4_reqsk_send_ack uses rsk_rcv_wnd).
		return uint16(min(c.rcvWnd>>shift, 65535))
	}
	oooBytes := 0
	for _, s := range c.ooo {
		oooBytes += s.n
	}
	free := p.RcvWindow - c.rcv.Len() - oooBytes
	if free < min(c.rcvMSS, p.RcvWindow/2) {
		free = 0 // receiver-side silly window avoidance (RFC 1122 4.2.3.3)
	}
	win := uint32(max(free, 0))
	if cur := c.receiveWindow(); win < cur {
		win = cur
	}
	if syn {
		// A SYN's window field is never scaled: it carries at most 65535,
		// while the window itself stays what it is (tcp_transmit_skb).
		c.rcvWnd = win
		c.rcvWup = c.rcvNxt
		return uint16(min(win, 65535))
	}
	unit := uint32(1) << shift
	win = (win + unit - 1) &^ (unit - 1)
	win = min(win, 65535<<shift)
	c.rcvWnd = win
	c.rcvWup = c.rcvNxt
	return uint16(win >> shift)
}

// sackBlocks lists a D-SACK block first (RFC 2883), then the out-of-order
// ranges, the most recent arrival first; three blocks fit beside
// timestamps, four without.
func (c *conn) sackBlocks() []wire.SACKBlock {
	limit := 4
	if c.tsOK {
		limit = 3
	}
	var out []wire.SACKBlock
	if c.dsack != nil {
		out = append(out, *c.dsack)
		c.dsack = nil
	}
	if len(c.ooo) == 0 {
		return out
	}
	var ranges []wire.SACKBlock
	for _, s := range c.ooo {
		end := s.seq.Add(s.n)
		if s.fin {
			end = end.Add(1)
		}
		if n := len(ranges); n > 0 && !s.seq.GreaterThan(ranges[n-1].Right) {
			ranges[n-1].Right = ranges[n-1].Right.Max(end)
			continue
		}
		ranges = append(ranges, wire.SACKBlock{Left: s.seq, Right: end})
	}
	for i, r := range ranges {
		if c.oooLast.InWindow(r.Left, uint32(r.Right.Diff(r.Left))) {
			ranges[0], ranges[i] = ranges[i], ranges[0]
			break
		}
	}
	for _, r := range ranges {
		if len(out) == limit {
			break
		}
		out = append(out, r)
	}
	return out
}

// ackSent is tcp_event_ack_sent: any segment carrying an ACK answers what
// was pending. A quick ACK is spent only when an ACK was due (Linux 6.6's
// tcp_dec_quickack_mode); when they run out, ATO starts again from 40 ms.
func (c *conn) ackSent() {
	if c.ackPending && c.quick > 0 {
		c.quick--
		if c.quick == 0 {
			c.ato = c.h.prof.DelayedAck
		}
	}
	c.ackPending = false
	c.ackNow = false
	c.pushed = false
	c.delackAt = never
}

// emit sends a segment of this connection; it reports false when the
// host's output refused it. Like __tcp_transmit_skb, OutSegs counts new
// segments and pure ACKs, not retransmissions.
func (c *conn) emit(s wire.Segment) bool {
	return c.h.send(s, s.Len() == 0 || s.End().GreaterThan(c.sndMax))
}

// sendAck sends a bare ACK at SND.NXT.
func (c *conn) sendAck() {
	c.emit(c.segment(wire.ACK, c.sndNxt, nil))
}

// sendActiveReset is tcp_send_active_reset: RST,ACK at SND.NXT.
func (c *conn) sendActiveReset() {
	c.h.count(OutRsts)
	c.emit(c.segment(wire.RST|wire.ACK, c.sndNxt, nil))
}

// synOptions are the options of our SYN or SYN-ACK. For a SYN-ACK, only
// what the peer offered is echoed.
func (c *conn) synOptions(synack bool, peer *wire.Options) wire.Options {
	p := &c.h.prof
	o := wire.Options{HasMSS: true, MSS: uint16(c.advMSS())}
	if p.SACK && (!synack || peer.SACKPermitted) {
		o.SACKPermitted = true
	}
	if p.Timestamps && (!synack || peer.HasTimestamps) {
		o.HasTimestamps = true
		o.TSVal = c.tsNow()
		if synack {
			o.TSEcr = peer.TSVal
		}
	}
	if p.WScale >= 0 && (!synack || peer.HasWScale) {
		o.HasWScale = true
		o.WScale = uint8(p.WScale)
	}
	return o
}

// sendSyn sends (or resends) our SYN in SYN_SENT, or SYN,ACK in SYN_RECV
// after a simultaneous open.
func (c *conn) sendSyn() {
	flags := wire.SYN
	var peer wire.Options
	if c.state != SynSent {
		// SYN_RECV after a simultaneous open, or a socket closed from
		// there (FIN_WAIT1) whose SYN is still unacknowledged.
		flags |= wire.ACK
		peer = wire.Options{HasTimestamps: c.tsOK, TSVal: c.tsRecent, SACKPermitted: c.sackOK, HasWScale: c.wsOK}
	}
	s := c.segment(flags, c.iss, nil)
	s.Options = c.synOptions(c.state != SynSent, &peer)
	c.emit(s)
	if c.retransmits == 0 && !c.rttTiming {
		c.rttTiming, c.rttSeq, c.rttAt = true, c.iss, c.h.now
	}
	if c.sndNxt == c.iss {
		c.sndNxt = c.iss.Add(1)
	}
	c.sndMax = c.sndMax.Max(c.sndNxt)
	if c.rtxAt == never {
		c.rtxAt = c.h.now + c.rto
	}
}

// takeSynOptions records what the peer's SYN or SYN-ACK offered.
func (c *conn) takeSynOptions(seg *wire.Segment) {
	p := &c.h.prof
	o := &seg.Options
	c.peerMSS = c.defaultMSS()
	if o.HasMSS && o.MSS > 0 {
		c.peerMSS = int(o.MSS)
	}
	c.sackOK = p.SACK && o.SACKPermitted
	c.wsOK = p.WScale >= 0 && o.HasWScale
	if c.wsOK {
		c.sndWScale = min(o.WScale, 14)
		c.rcvWScale = uint8(p.WScale)
	} else {
		c.sndWScale, c.rcvWScale = 0, 0
	}
	c.tsOK = p.Timestamps && o.HasTimestamps
	if c.tsOK {
		c.tsRecent, c.tsRecentAt = o.TSVal, c.h.now
	}
	c.setMSS()
}

// setMSS is the payload per segment: the smaller of both MSS values, less
// the 12 bytes of the timestamps option.
func (c *conn) setMSS() {
	m := min(c.peerMSS, c.advMSS())
	if c.tsOK {
		m -= 12
	}
	c.mss = max(m, 48)
	c.rcvMSS = min(c.h.prof.MSS, c.h.prof.RcvWindow/2)
	if c.rcvMSS > 536 {
		c.rcvMSS = 536 // tcp_initialize_rcv_mss: guess low until measured
	}
}

// xmit is tcp_write_xmit: send what the send window, the congestion window,
// Nagle's algorithm and sender-side silly window avoidance allow; then the
// FIN once all data is out.
func (c *conn) xmit() {
	switch c.state {
	case Established, CloseWait, FinWait1, LastAck, Closing:
	default:
		return
	}
	var t tsoPacket
	rwndLimited, sent := c.xmitLoop(&t)
	t.flush(c) // the packet leaves before the chrono looks
	// tcp_cwnd_validate: the largest flight of the last window.
	if out := len(c.sent); !c.sndUna.LessThan(c.cwndUsageSeq) || out > c.maxPacketsOut {
		c.maxPacketsOut, c.cwndUsageSeq = out, c.sndNxt
	}
	// The end of tcp_write_xmit: the peer's window limits the sender or
	// no longer does; with nothing left to send, an application out of
	// send buffer is what limits it (tcp_cwnd_validate).
	if rwndLimited {
		c.chronoStartT(chronoRwnd)
	} else {
		c.chronoStopT(chronoRwnd)
	}
	if sent && !c.sndNxt.LessThan(c.sndBase.Add(c.snd.Len())) && c.noSpace && (c.state == Established || c.state == CloseWait) {
		c.chronoStartT(chronoSndbuf)
	}
}

// tsoPacket is the TSO packet xmit is building: with TSO, consecutive new
// segments leave as one packet of at most max segments.
type tsoPacket struct {
	seg    wire.Segment
	n, max int // segments in it (0: none begun), and its limit
}

// flush sends the packet begun, if any.
func (t *tsoPacket) flush(c *conn) {
	if t.n == 0 {
		return
	}
	tso := &t.seg
	if t.n >= 2 {
		tso.Flags |= wire.PSH // as this kernel sends every TSO packet of several segments
	}
	c.skbSend(tso.Seq, tso.Seq.Add(len(tso.Payload)), t.max)
	if c.h.prof.GSOSplit && t.n >= 2 {
		// The device takes no TSO packets: software GSO cuts this
		// one into segments, PSH and FIN on the last only
		// (tcp_gso_segment).
		mss := max(c.mss, 1)
		for off := 0; off < len(tso.Payload); off += mss {
			seg := *tso
			end := min(off+mss, len(tso.Payload))
			seg.Seq, seg.Payload = tso.Seq.Add(off), tso.Payload[off:end:end]
			if end < len(tso.Payload) {
				seg.Flags &^= wire.PSH | wire.FIN
			}
			c.emit(seg)
		}
	} else {
		c.emit(*tso)
	}
	for range t.n - 1 {
		c.h.count(OutSegs) // the packet's other segments
	}
	t.n = 0
}

// xmitLoop is tcp_write_xmit's loop; it reports whether the peer's window
// stopped it and whether anything was sent. A TSO packet begun is left in
// t for the caller to send.
func (c *conn) xmitLoop(t *tsoPacket) (rwndLimited, sent bool) {
	for {
		dataEnd := c.sndBase.Add(c.snd.Len())
		inflight := int(c.sndNxt.Diff(c.sndUna))
		if c.h.prof.OutputDrop && (c.sndNxt.LessThan(dataEnd) || c.finQueued && (!c.finSent || !c.sndNxt.GreaterThan(c.finSeq))) {
			// Local congestion: tcp_transmit_skb fails and tcp_write_xmit
			// stops with the segment unsent; with nothing in flight the
			// probe timer tries again (tcp_check_probe_timer).
			t.flush(c)
			if c.sndMax == c.sndUna {
				c.startPersist()
			}
			return rwndLimited, sent
		}
		if c.sndNxt.LessThan(dataEnd) {
			off := int(c.sndNxt.Diff(c.sndBase))
			n := min(c.mss, c.snd.Len()-off)
			wndLeft := int(c.sndUna.Add(int(c.sndWnd)).Diff(c.sndNxt))
			can := min(n, wndLeft, c.cwnd-inflight)
			// tcp_snd_wnd_test after tcp_cwnd_test: the window, not the
			// congestion window, stops the next segment.
			rwndLimited = c.cwnd-inflight > 0 && wndLeft < n
			if can <= 0 {
				if c.sndWnd == 0 && inflight == 0 {
					c.startPersist()
				}
				return rwndLimited, sent
			}
			// What was sent before (go-back after a timeout) goes again
			// without Nagle, cork or waiting for a bigger window, as
			// Linux's retransmissions do; so does tcp_write_wakeup's
			// probe, cut to the window.
			resend := c.sndNxt.LessThan(c.sndMax)
			if can < n && can < c.mss && uint32(can) < c.maxWnd/2 && !resend && !c.probePush {
				// Sender-side silly window avoidance: wait for a
				// bigger window; probe if nothing is in flight.
				if inflight == 0 {
					c.startPersist()
				}
				return rwndLimited, sent
			}
			last := off+can == c.snd.Len()
			if can < c.mss && (c.cork || c.moreNow) && !c.pushNow && !resend && !(c.finQueued && last) {
				// Corked (tcp_nagle_check with TCP_NAGLE_CORK): a
				// partial segment waits; with nothing in flight the
				// probe timer will send it (tcp_check_probe_timer).
				if inflight == 0 {
					c.startPersist()
				}
				return rwndLimited, sent
			}
			if can < c.mss && !c.noDelay && !c.pushNow && !resend && !(c.finQueued && last) &&
				inflight > 0 && c.sndSml.GreaterThan(c.sndUna) && !c.sndSml.GreaterThan(c.sndNxt) {
				return rwndLimited, sent // Nagle (Minshall's variant, tcp_nagle_check)
			}
			flags := wire.ACK
			if segEnd := c.sndNxt.Add(can); c.pushEnd.GreaterThan(c.sndNxt) && !c.pushEnd.GreaterThan(segEnd) || c.pushNow && c.probePush {
				flags |= wire.PSH // the segment ends a pushed write (tcp_mark_push), or is tcp_write_wakeup's
			}
			withFin := last && c.finQueued
			if withFin {
				flags |= wire.FIN
			}
			seq := c.sndNxt
			s := c.segment(flags, seq, c.snd.slice(off, can))
			stop := false
			switch {
			case !c.h.prof.TSO || resend:
				t.flush(c)
				if !resend {
					c.skbSend(seq, seq.Add(can), 1)
				}
				c.emit(s)
				stop = c.pushOne // tcp_push_one: this one packet
			case t.n > 0 && t.n < t.max && t.seg.End() == s.Seq:
				// The packet's bytes are the send queue's, contiguous.
				tso := &t.seg
				tso.Payload = c.snd.slice(int(tso.Seq.Diff(c.sndBase)), len(tso.Payload)+len(s.Payload))
				tso.Flags |= s.Flags & (wire.PSH | wire.FIN)
				tso.Window, tso.Options = s.Window, s.Options
				t.n++
			default:
				if t.n > 0 && c.pushOne {
					return rwndLimited, sent // tcp_push_one: one packet (flushed by the caller)
				}
				t.flush(c)
				t.seg, t.n, t.max = s, 1, c.tsoLimit(inflight)
			}
			sent = true
			end := seq.Add(can)
			if withFin {
				c.finSent, c.finSeq = true, end
				end = end.Add(1)
			}
			c.afterSend(seq, end)
			if can < c.mss {
				c.sndSml = seq.Add(can)
			}
			if stop {
				return rwndLimited, sent
			}
			continue
		}
		t.flush(c)
		// A new FIN needs room in the congestion window like data: Linux
		// 6.18's tcp_cwnd_test has no exception for it (older kernels
		// let a lone FIN past a full window).
		if c.finQueued && c.sndNxt == dataEnd && (c.finSent && !c.sndNxt.GreaterThan(c.finSeq) || !c.finSent && c.cwnd > inflight) {
			seq := c.sndNxt
			c.emit(c.segment(wire.FIN|wire.ACK, seq, nil))
			c.finSent, c.finSeq = true, seq
			c.afterSend(seq, seq.Add(1))
		}
		return rwndLimited, sent
	}
}

// countRetrans counts a retransmitted segment, for the host and the socket.
func (c *conn) countRetrans() {
	c.h.count(RetransSegs)
	c.retransTotal++
}

// afterSend does the bookkeeping of a segment covering [seq, end).
func (c *conn) afterSend(seq, end wire.Seq) {
	h := c.h
	if seq.LessThan(c.sndMax) {
		c.countRetrans()
	} else {
		c.sent = appendQ(&c.sentArr, c.sent, sentRec{end: end, at: h.now})
		if !c.rttTiming && c.retransmits == 0 {
			c.rttTiming, c.rttSeq, c.rttAt = true, seq, h.now
		}
	}
	newData := !seq.LessThan(c.sndMax)
	c.sndNxt = end
	c.sndMax = c.sndMax.Max(end)
	if c.rtxAt == never || c.persist || (newData && c.probing) {
		// tcp_event_new_data_sent: the first segment in flight starts
		// the RTO, and new data replaces a pending loss probe by it.
		c.persist, c.probing = false, false
		c.rtxAt = h.now + c.rto
	}
	if newData {
		c.scheduleLossProbe(false)
	}
	c.lastSendAt()
}

// scheduleLossProbe is tcp_schedule_loss_probe (RFC 8985): while nothing
// is being recovered, arm a probe timeout of two smoothed RTTs (plus the
// minimum RTO when a single segment is out, to allow for the receiver's
// delayed ACK) instead of the RTO, unless the RTO comes first. With
// advancing, the RTO would restart now (an ACK advanced SND.UNA).
func (c *conn) scheduleLossProbe(advancing bool) bool {
	h := c.h
	p := &h.prof
	out := len(c.sent)
	if !p.LossProbes || out == 0 || !c.sackOK || c.inRecovery || c.retransmits > 0 || c.persist ||
		c.sndUna == c.iss || c.state == SynSent || c.state == SynRecv {
		return false // nothing to probe, recovery under way, or the handshake is not over
	}
	timeout := p.InitialRTO
	if c.srtt > 0 {
		timeout = 2 * c.srtt
		if out == 1 {
			timeout += p.MinRTO
		} else {
			timeout += 2 * time.Millisecond // TCP_TIMEOUT_MIN_US
		}
		if j := p.Jiffy; j > 0 {
			timeout = (timeout + j - 1) / j * j
		}
	}
	rtoLeft := c.rto
	if !advancing {
		rtoLeft = c.sent[0].at + c.rto - h.now // tcp_rto_delta_us: from the oldest segment out
	}
	if rtoLeft > 0 {
		timeout = min(timeout, rtoLeft)
	}
	c.rtxAt, c.probing = h.now+timeout, true
	return true
}

// onLossProbe is tcp_send_loss_probe: once per episode (tlp_high_seq),
// send one new segment if there is one and the peer's window has room
// for it (the congestion window does not limit a probe), else resend the
// last segment in flight; then wait a full RTO from now.
func (c *conn) onLossProbe() {
	h := c.h
	if c.sndUna == c.sndMax || c.state == Closed {
		return
	}
	if !c.tlpOut && c.probeNewData() {
		c.tlpOut, c.tlpHigh = true, c.sndNxt
		h.count(TCPLossProbes)
	} else if !c.tlpOut && len(c.sent) > 0 && c.sndUna != c.iss {
		start := c.sndUna
		if n := len(c.sent); n > 1 {
			start = c.sent[n-2].end
		}
		saveNxt, saveCwnd := c.sndNxt, c.cwnd
		c.sndNxt = start
		c.cwnd = int(c.sndNxt.Diff(c.sndUna)) + int(c.sent[len(c.sent)-1].end.Diff(start))
		sent := c.retransTotal
		c.xmit()
		c.sndNxt, c.cwnd = saveNxt.Max(c.sndNxt), saveCwnd
		if c.retransTotal > sent {
			c.tlpOut, c.tlpHigh = true, c.sndNxt
			h.count(TCPLossProbes)
		}
	}
	c.rtxAt, c.persist, c.probing = h.now+c.rto, false, false
}

// probeNewData sends the loss probe as new data, as tcp_send_loss_probe
// does when the send queue has a segment that fits the peer's window
// (tcp_snd_wnd_test): one segment, past the congestion window and
// Nagle. It reports whether one left.
func (c *conn) probeNewData() bool {
	dataEnd := c.sndBase.Add(c.snd.Len())
	unsent := int(dataEnd.Diff(c.sndNxt))
	if unsent <= 0 && !(c.finQueued && !c.finSent) {
		return false
	}
	n := min(max(unsent, 0), c.mss)
	if c.sndNxt.Add(n).GreaterThan(c.sndUna.Add(int(c.sndWnd))) {
		return false
	}
	before := c.sndNxt
	saveCwnd, saveNoDelay := c.cwnd, c.noDelay
	c.cwnd, c.noDelay, c.pushNow = int(c.sndNxt.Diff(c.sndUna))+max(n, 1), true, true // TCP_NAGLE_OFF: past a cork too
	c.xmit()
	c.cwnd, c.noDelay, c.pushNow = saveCwnd, saveNoDelay, false
	return c.sndNxt.GreaterThan(before)
}

// lastSendAt applies tcp_event_data_sent's pingpong rule: replying within
// ATO of the last received data marks the connection interactive.
func (c *conn) lastSendAt() {
	c.lastDataSent, c.dataSent = c.h.now, true // tp->lsndtime
	if c.ato > 0 && c.dataRcvd && c.h.now-c.lastDataRcv < c.ato {
		c.pingpong = true
	}
}

// retransmitHead resends the first unacknowledged segment. After a
// timeout (goBack) sending resumes from there, every later segment being
// resent as ACKs come back, as Linux does after tcp_enter_loss; a fast
// retransmit resends one segment and carries on where it was.
func (c *conn) retransmitHead(goBack bool) {
	c.rttTiming = false
	if c.sndUna == c.iss {
		// The SYN itself is the first unacknowledged segment.
		c.sndNxt = c.iss
		c.sendSyn()
		c.countRetrans()
		return
	}
	saveNxt, saveCwnd := c.sndNxt, c.cwnd
	c.sndNxt = c.sndUna
	c.cwnd = int(c.sndNxt.Diff(c.sndUna)) + c.mss
	c.xmit()
	if !goBack && c.sndNxt.LessThan(saveNxt) && c.state != Closed {
		c.sndNxt = saveNxt
	}
	c.cwnd = saveCwnd
}

// onRetransmitTimer is tcp_retransmit_timer with tcp_write_timeout.
func (c *conn) onRetransmitTimer() {
	h := c.h
	p := &h.prof
	if c.sndUna == c.sndMax && c.state != SynSent && c.state != SynRecv {
		return
	}
	h.count(TCPTimeouts)
	if c.flow != 0 {
		// A new transmit hash, a new path: a new flow label.
		c.flowRehash++
		c.flow = h.flowLabel(c.key(), c.flowRehash)
	}
	if c.state == SynSent || c.state == SynRecv {
		maxRetr := p.SynRetries
		if c.state == SynSent {
			maxRetr += p.SynLinearTimeouts
		}
		if c.retransmits >= maxRetr {
			c.writeErr(CauseTimer, "SYN retransmissions exhausted (tcp_syn_retries "+strconv.Itoa(p.SynRetries)+")")
			return
		}
	} else {
		until, knob := p.Retries2, "tcp_retries2"
		if c.orphan {
			until, knob = c.orphanRetries(c.rto < p.MaxRTO), "tcp_orphan_retries"
		}
		if c.userTimeout > 0 {
			knob = "TCP_USER_TIMEOUT " + c.userTimeout.String() + ", not " + knob
		}
		if c.retransmitsTimedOut(until, c.userTimeout) {
			c.writeErr(CauseTimer, "retransmissions exhausted ("+knob+" "+strconv.Itoa(until)+")")
			return
		}
	}
	if !c.hasRetransStamp {
		// tcp_retransmit_skb saves the timestamp of the segment as it is
		// retransmitted: the budget runs from this first timeout (a tail
		// loss probe, sent by __tcp_retransmit_skb, does not start it).
		c.hasRetransStamp = true
		c.retransStamp = h.now
	}
	if c.retransmits == 0 && c.state != SynSent && c.state != SynRecv && !c.inRecovery {
		// tcp_enter_loss: a timeout during fast recovery keeps the
		// ssthresh recovery set.
		c.ssthresh = c.cubicSsthresh()
	}
	if c.state != SynSent && c.state != SynRecv {
		c.lossHigh, c.inLoss = c.sndMax, true // TCP_CA_Loss until all of it is acknowledged
	}
	c.cwnd = c.mss
	c.inRecovery, c.dupAcks = false, 0
	c.retransmits++
	c.totalRTO++
	c.rtxAt, c.probing, c.tlpOut = never, false, false
	c.retransmitHead(true)
	if p.OutputDrop && c.state != Closed && (c.sndWnd != 0 || c.state == SynSent || c.state == SynRecv) {
		// The retransmission failed for local congestion: try again in
		// TCP_RESOURCE_PROBE_INTERVAL, without backing off.
		c.persist, c.rtxAt = false, h.now+resourceProbeInterval
		h.note(c, "retransmission dropped by the output queue (local congestion); again in %v", resourceProbeInterval)
		return
	}
	if c.state != SynSent || c.totalRTO > p.SynLinearTimeouts {
		c.backoff++
		c.rto = min(c.rto*2, p.MaxRTO)
	}
	c.rtxAt = h.now + c.clampRTOToUserTimeout()
}

// clampRTOToUserTimeout is tcp_clamp_rto_to_user_timeout: with
// TCP_USER_TIMEOUT, the next timeout comes no later than the time left
// (one jiffy when none is).
func (c *conn) clampRTOToUserTimeout() time.Duration {
	if c.userTimeout == 0 || c.state == SynSent || c.state == SynRecv || !c.hasRetransStamp {
		return c.rto
	}
	left := c.userTimeout - (c.h.now - c.retransStamp)
	if left <= 0 {
		return c.h.prof.Jiffy
	}
	return min(c.rto, left)
}

// retransmitsTimedOut is retransmits_timed_out: the time budget of
// tcp_model_timeout, or TCP_USER_TIMEOUT when set, measured from the
// first retransmission by timeout.
func (c *conn) retransmitsTimedOut(boundary int, userTimeout time.Duration) bool {
	if c.retransmits == 0 || !c.hasRetransStamp {
		return false
	}
	if userTimeout > 0 {
		return c.h.now-c.retransStamp >= userTimeout
	}
	return c.h.now-c.retransStamp >= modelTimeout(boundary, tcpRTOMin, c.h.prof.MaxRTO)
}

// modelTimeout is tcp_model_timeout: the time that `boundary` doubling
// retransmissions from rtoBase take, the doubling capped at maxRTO.
func modelTimeout(boundary int, rtoBase, maxRTO time.Duration) time.Duration {
	thresh := 0
	for rtoBase<<(thresh+1) <= maxRTO {
		thresh++
	}
	if boundary <= thresh {
		return time.Duration((2<<boundary)-1) * rtoBase
	}
	return time.Duration((2<<thresh)-1)*rtoBase + maxRTO*time.Duration(boundary-thresh)
}

// orphanRetries is tcp_orphan_retries.
func (c *conn) orphanRetries(alive bool) int {
	r := c.h.prof.OrphanRetries
	if r == 0 && alive {
		r = 8
	}
	return r
}

// writeErr is tcp_write_err: give up, report ETIMEDOUT, no RST.
func (c *conn) writeErr(kind CauseKind, text string) {
	c.err = ETIMEDOUT
	c.h.count(TCPAbortOnTimeout)
	c.fail(kind, text)
}

func (c *conn) startPersist() {
	if c.rtxAt != never && !c.persist {
		return
	}
	if !c.persist {
		c.persist = true
		c.rtxAt = c.h.now + c.probeWhen()
	}
}

// probeWhen is tcp_probe0_when: RTO doubled per probe, at most TCP_RTO_MAX.
func (c *conn) probeWhen() time.Duration {
	d := c.rto
	for i := 0; i < c.backoff && d < c.h.prof.MaxRTO; i++ {
		d *= 2
	}
	return min(d, c.h.prof.MaxRTO)
}

// onProbeTimer is tcp_probe_timer: a zero-window probe (a segment one byte
// below SND.UNA that the receiver must answer with its window).
func (c *conn) onProbeTimer() {
	h := c.h
	c.persist = false
	unsent := c.sndNxt.LessThan(c.sndBase.Add(c.snd.Len())) || (c.finQueued && !c.finSent)
	windowOpen := c.sndWnd != 0 && unsent && c.sndMax == c.sndUna
	if !windowOpen && (c.sndWnd != 0 || !unsent || c.sndMax != c.sndUna) {
		c.probesOut, c.hasProbesStamp = 0, false
		c.xmit()
		return
	}
	maxProbes := h.prof.Retries2
	if c.orphan {
		maxProbes = c.orphanRetries(c.probeWhen() < h.prof.MaxRTO)
	}
	// With TCP_USER_TIMEOUT, probing ends when that time has passed
	// since the first probe (icsk_probes_tstamp).
	if !c.hasProbesStamp {
		c.hasProbesStamp, c.probesStamp = true, h.now
	} else if c.userTimeout > 0 && h.now-c.probesStamp >= c.userTimeout {
		if windowOpen {
			c.writeErr(CauseTimer, "data held by local congestion (the output queue drops) for TCP_USER_TIMEOUT")
		} else {
			c.writeErr(CauseTimer, "zero-window probes unanswered for TCP_USER_TIMEOUT")
		}
		return
	}
	if c.probesOut >= maxProbes {
		if windowOpen {
			c.writeErr(CauseTimer, "data held by local congestion (the output queue drops): probes exhausted")
		} else {
			c.writeErr(CauseTimer, "zero-window probes unanswered")
		}
		return
	}
	if windowOpen {
		// Unsent data with nothing in flight, held by a cork or by
		// local congestion: tcp_write_wakeup sends it, with PSH.
		c.pushNow, c.probePush = true, true
		c.xmit()
		c.pushNow, c.probePush = false, false
		if c.sndMax != c.sndUna || c.state == Closed {
			c.probesOut, c.hasProbesStamp, c.backoff = 0, false, 0
			return
		}
		// The output queue dropped it (tcp_send_probe0 with a local
		// congestion error): again in TCP_RESOURCE_PROBE_INTERVAL,
		// without backing off.
		c.probesOut++
		c.persist = true
		c.rtxAt = h.now + c.clampProbeToUserTimeout(resourceProbeInterval)
		h.note(c, "probe %d: the output queue dropped the unsent data (local congestion); again in %v", c.probesOut, c.rtxAt-h.now)
		return
	}
	sent := c.emit(c.segment(wire.ACK, c.sndUna.Add(-1), nil))
	c.probesOut++
	c.persist = true
	if !sent && h.prof.OutputDrop {
		// Dropped on the way out (local congestion): again in
		// TCP_RESOURCE_PROBE_INTERVAL, without backing off.
		c.rtxAt = h.now + c.clampProbeToUserTimeout(resourceProbeInterval)
		return
	}
	c.backoff++
	c.rtxAt = h.now + c.clampProbeToUserTimeout(c.probeWhen())
}

// resourceProbeInterval is TCP_RESOURCE_PROBE_INTERVAL: how soon a send
// that local congestion stopped is tried again.
const resourceProbeInterval = 500 * time.Millisecond

// clampProbeToUserTimeout is tcp_clamp_probe0_to_user_timeout: with
// TCP_USER_TIMEOUT, the next probe comes no later than that timeout,
// counted from the first probe (two jiffies at least).
func (c *conn) clampProbeToUserTimeout(when time.Duration) time.Duration {
	if c.userTimeout > 0 && c.hasProbesStamp {
		when = min(when, max(c.userTimeout-(c.h.now-c.probesStamp), 2*c.h.prof.Jiffy))
	}
	return when
}

// onDelackTimer is tcp_delack_timer_handler.
func (c *conn) onDelackTimer() {
	if !c.ackPending || c.state == Closed || c.tw {
		return
	}
	if !c.pingpong {
		c.ato = min(c.ato*2, c.rto)
	} else {
		c.pingpong = false
		c.ato = c.h.prof.DelayedAck
	}
	c.h.count(DelayedACKs)
	c.sendAck()
}

// onKeepaliveTimer is tcp_keepalive_timer.
func (c *conn) onKeepaliveTimer() {
	h := c.h
	if !c.keepalive || c.state == Closed || c.state == SynSent || c.state == Listen || c.tw {
		return
	}
	if c.sndMax != c.sndUna || c.sndNxt.LessThan(c.sndBase.Add(c.snd.Len())) {
		c.kaAt = h.now + c.kaIdle
		return
	}
	idle := h.now - max(c.lastDataRcv, c.lastAckRcv)
	if idle < c.kaIdle {
		c.kaAt = h.now + c.kaIdle - idle
		return
	}
	if c.probesOut >= c.kaProbes {
		h.note(c, "keepalive: %d probes unanswered, the peer is gone", c.probesOut)
		c.sendActiveReset()
		c.writeErr(CauseTimer, "keepalive probes unanswered")
		return
	}
	c.emit(c.segment(wire.ACK, c.sndUna.Add(-1), nil))
	c.probesOut++
	h.count(TCPKeepAlive)
	c.kaAt = h.now + c.kaIntvl
}

// eventDataRecv is tcp_event_data_recv: quick ACKs at the start of a
// connection and after a long pause; ATO follows the arrival pattern.
func (c *conn) eventDataRecv(n int, psh bool) {
	h := c.h
	now := h.now
	atoMin := h.prof.DelayedAck
	if psh {
		c.pushed = true
	}
	if c.ato == 0 {
		c.incrQuickack()
		c.ato = atoMin
	} else {
		m := now - c.lastDataRcv
		if !c.dataRcvd {
			m = c.rto + 1 // nothing received yet: as long ago as can be
		}
		switch {
		case m <= atoMin/2:
			c.ato = c.ato/2 + atoMin/2
		case m < c.ato:
			c.ato = min(c.ato/2+m, c.rto)
		case m > c.rto:
			c.incrQuickack()
		}
	}
	c.lastDataRcv, c.dataRcvd = now, true
	c.lrcvAt, c.hasLrcv = now, true
	if n >= c.rcvMSS {
		c.rcvMSS = min(n, c.h.prof.MSS)
	}
}

// incrQuickack is tcp_incr_quickack.
func (c *conn) incrQuickack() {
	q := c.h.prof.RcvWindow / (2 * max(c.rcvMSS, 1))
	if q == 0 {
		q = 2
	}
	c.quick = max(c.quick, min(q, c.h.prof.QuickAcks))
}

// enterQuickack is tcp_enter_quickack_mode.
func (c *conn) enterQuickack() {
	c.incrQuickack()
	c.pingpong = false
	c.ato = c.h.prof.DelayedAck
}

// ackSndCheck is __tcp_ack_snd_check: ACK now or arm the delayed ACK timer.
func (c *conn) ackSndCheck() {
	if !c.ackPending {
		return
	}
	h := c.h
	if c.ackNow || int(c.rcvNxt.Diff(c.rcvWup)) > c.rcvMSS ||
		(c.quick > 0 && !c.pingpong) || len(c.ooo) > 0 {
		c.sendAck()
		return
	}
	if c.delackAt != never {
		return
	}
	ato := c.ato
	if ato > h.prof.DelayedAck {
		maxAto := 500 * time.Millisecond
		if c.pingpong || c.pushed {
			maxAto = h.prof.MaxDelAck
		}
		if c.srtt > 0 {
			maxAto = min(maxAto, max(c.srtt, h.prof.DelayedAck))
		}
		ato = min(ato, maxAto, h.prof.MaxDelAck) // icsk_delack_max
	}
	c.delackAt = h.now + ato
}

// cleanupRbuf is tcp_cleanup_rbuf after the application read: announce a
// window that doubled, so a sender stalled on a small window resumes.
func (c *conn) cleanupRbuf(copied int) {
	if copied == 0 || c.rcvShut || c.state == Closed || c.tw {
		return
	}
	cur := c.receiveWindow()
	if 2*int(cur) <= c.h.prof.RcvWindow {
		free := c.h.prof.RcvWindow - c.rcv.Len()
		if free >= c.rcvMSS && uint32(free) >= 2*cur {
			c.sendAck()
		}
	}
}

// cubicSsthresh is CUBIC's ssthresh after a loss (bictcp_recalc_ssthresh,
// Linux's default congestion control): 717/1024 of the congestion
// window, two segments at least.
func (c *conn) cubicSsthresh() int {
	mss := max(c.mss, 1)
	return max(c.cwnd/mss*717/1024, 2) * mss
}

// slowStartAfterIdleCheck is tcp_slow_start_after_idle_check as a write
// queues data: after more than an RTO without sending, with nothing in
// flight, the congestion window restarts (tcp_cwnd_restart): halved once
// per further RTO of idleness, down to the initial window at least (or
// the current one, if smaller), ssthresh kept at 3/4 of the old window.
func (c *conn) slowStartAfterIdleCheck() {
	h := c.h
	if !h.prof.SlowStartAfterIdle || !c.dataSent || c.sndMax != c.sndUna || c.state != Established && c.state != CloseWait {
		return
	}
	delta := h.now - c.lastDataSent
	if delta <= c.rto {
		return
	}
	mss := max(c.mss, 1)
	cwnd := c.cwnd / mss
	restart := min(h.prof.InitialCwnd, cwnd)
	if !c.inRecovery && !c.inLoss {
		c.ssthresh = max(c.ssthresh, (cwnd>>1+cwnd>>2)*mss) // tcp_current_ssthresh
	}
	for delta -= c.rto; delta > 0 && cwnd > restart; delta -= c.rto {
		cwnd >>= 1
	}
	c.cwnd = max(cwnd, restart) * mss
}

// cwndQuota is tcp_cwnd_test: how many segments the congestion window
// lets one packet take, half the window at most.
func (c *conn) cwndQuota(inflight int) int {
	mss := max(c.mss, 1)
	cwndSegs := c.cwnd / mss
	return min(max(cwndSegs/2, 1), cwndSegs-inflight/mss)
}

// tsoLimit is how many segments the next TSO packet may hold
// (tcp_tso_autosize and tcp_cwnd_test): about a millisecond of the pacing
// rate (ss_ratio 200% of cwnd per RTT in slow start, ca_ratio 120% after),
// at least tcp_min_tso_segs, at most what the congestion window has room
// for and half of it, at most 64 KB.
func (c *conn) tsoLimit(inflight int) int {
	mss := max(c.mss, 1)
	cwndSegs := c.cwnd / mss
	quota := c.cwndQuota(inflight)
	segs := 65536 / mss
	if c.srtt > 0 {
		ratio := 120.0
		if c.cwnd < c.ssthresh/2 {
			ratio = 200
		}
		rate := float64(mss) * float64(max(cwndSegs, len(c.sent))) * ratio / 100 / c.srtt.Seconds()
		segs = min(segs, int(rate/1024)/mss)
	}
	segs = max(segs, c.h.prof.MinTSOSegs)
	return max(min(segs, quota), 1)
}
