package capture

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/wire"
)

// Finding is something a connection's packets show that an engineer on
// call wants named: what happened, the packets that show it, why, in
// plain words, and the built-in scenario that reproduces it.
type Finding struct {
	Kind     string `json:"kind"`
	End      string `json:"end,omitempty"` // the end it is about: "client", "server" (or "" for both)
	Summary  string `json:"summary"`
	Frames   []int  `json:"frames"` // the evidence, as Wireshark numbers frames
	Explain  string `json:"explanation"`
	Scenario string `json:"scenario,omitempty"` // `tcplab run NAME` shows it happen
	// Conns are the connections a capture-wide finding covers.
	Conns int `json:"connections,omitempty"`
}

// Kinds lists every finding explain can make, with the scenario that
// reproduces it, for the docs and the tests.
var Kinds = []struct{ Kind, Scenario, What string }{
	{"syn-unanswered", "syn-sent", "a SYN sent again and again, never answered (and which stack's timeline its retransmissions follow)"},
	{"refused", "rst-closed-port", "a SYN answered by RST: no listener on the port"},
	{"synack-unanswered", "syn-recv", "a SYN-ACK sent again and again, its ACK never seen (SYN_RECV)"},
	{"accept-queue-full", "accept-overflow", "a SYN-ACK sent again after the client's ACK: the server dropped the ACK, the client believes it is ESTABLISHED"},
	{"syn-flood", "syn-flood", "many handshakes to one port never completed, from many sources"},
	{"close-wait-data-loss", "close-wait-data-loss", "data sent after the peer's FIN, answered by RST: the bytes are lost"},
	{"close-wait-held", "close-wait", "a FIN never answered by the other side's FIN within the capture (CLOSE_WAIT)"},
	{"fin-unanswered", "fin-wait-1", "a FIN sent again, never acknowledged (FIN_WAIT1)"},
	{"last-ack-lost", "last-ack", "a FIN sent again from LAST_ACK: the peer's last ACK was lost"},
	{"fin-wait-2-timeout", "close-wait", "an orphaned FIN_WAIT2 ended by tcp_fin_timeout: the peer's late packets are answered by RST"},
	{"time-wait-reuse", "time-wait-bind", "a new SYN on a 4-tuple still in TIME_WAIT"},
	{"simultaneous-open", "simultaneous-open", "two SYNs crossed: both ends passed through SYN_RECV"},
	{"simultaneous-close", "closing", "two FINs crossed: both ends passed through CLOSING"},
	{"abortive-close", "abortive-close", "a connection ended by RST instead of FIN (SO_LINGER 0, or close() with unread data)"},
	{"blind-reset", "blind-reset", "an RST not exactly at the expected sequence number: ignored, answered by a challenge ACK (RFC 5961)"},
	{"keepalive", "keepalive-dead-peer", "keepalive probes, answered or not (a dead peer)"},
	{"retransmissions-given-up", "linger-timeout", "data sent again and again until its sender gave up"},
	{"zero-window", "abortive-close", "a receiver advertising a zero window, its peer sending persist probes"},
	{"no-end", "keepalive-dead-peer", "a connection with neither FIN nor RST within the capture"},
}

func scenarioOf(kind string) string {
	for _, k := range Kinds {
		if k.Kind == kind {
			return k.Scenario
		}
	}
	return ""
}

// closeWaitHeld is how long CLOSE_WAIT must last to be a finding (a
// program that answers a FIN by closing does it within milliseconds).
const closeWaitHeld = 5 * time.Second

// maxMarks is how many packets of one kind an end keeps as evidence
// (the count goes on).
const maxMarks = 16

type mark struct {
	frame int
	ns    int64 // Unix nanoseconds
}

func markOf(p *Packet) mark { return mark{p.Frame, p.Time.UnixNano()} }

func (m mark) time() time.Time { return time.Unix(0, m.ns) }

// marks counts packets of one kind and keeps the first few and the last.
type marks struct {
	n     int
	first []mark
	last  mark
}

func (ms *marks) add(p *Packet) {
	ms.n++
	m := markOf(p)
	if len(ms.first) < maxMarks {
		ms.first = append(ms.first, m)
	}
	ms.last = m
}

func (ms *marks) frames(limit int) []int {
	out := make([]int, 0, min(len(ms.first), limit)+1)
	for _, m := range ms.first {
		if len(out) == limit {
			break
		}
		out = append(out, m.frame)
	}
	if ms.n > len(out) && ms.last.frame != out[len(out)-1] {
		out = append(out, ms.last.frame)
	}
	return out
}

// endEvidence is what an end's packets show, for the findings.
type endEvidence struct {
	syn, synack, fin marks // its transmissions of each
	finFrom          string
	retx             marks // its data segments sent again
	probes           marks // keepalive and zero-window probes
	probeIdle        time.Duration
	probeOpen        bool
	answered         int // probes the peer answered
	zeroProbes       int // probes sent while the peer's window was zero
	zero             marks
	reopen           mark
	win              uint16
	hasWin           bool
	refused          mark   // the RST that answered its SYN
	rst              mark   // the RST it sent
	rstFrom          string // its state then
	rstSeq           wire.Seq
	rcvData          mark  // the last payload that reached it
	sentData         mark  // the last payload it sent
	dataAfterFin     mark  // the first new payload that reached it after its FIN
	blind            marks // unacceptable RSTs it received
	forged           marks // RSTs it received that their sender's tap never saw
	forgedOff        []forgedAt
	challenge        marks // the ACKs it sent right after one
	challengeDue     bool
	ackNotTaken      mark // the ACK of its SYN-ACK it never took
	synackPrev       mark // its SYN-ACK before the last
	synackAgain      mark
	fw2Timeout       time.Time
}

// observeSend gathers the evidence a packet gives of its sender.
func (c *Conn) observeSend(p *Packet, snd, rcv *End, idle time.Duration) {
	s := &p.Segment
	f := s.Flags
	ev := &snd.ev
	if rcv.ev.probeOpen {
		rcv.ev.answered++
		rcv.ev.probeOpen = false
	}
	if f&(wire.RST|wire.SYN) == 0 {
		if s.Window == 0 {
			ev.zero.add(p)
		} else if ev.zero.n > 0 && ev.reopen.frame == 0 {
			ev.reopen = markOf(p)
		}
		ev.win, ev.hasWin = s.Window, true
	}
	switch {
	case f&wire.RST != 0:
		c.sawRst = true
		if ev.rst.frame == 0 {
			ev.rst, ev.rstFrom = markOf(p), snd.State
		}
		ev.rstSeq = s.Seq
	case f&wire.SYN != 0 && f&wire.ACK == 0:
		ev.syn.add(p)
	case f&wire.SYN != 0:
		ev.synackPrev = ev.synack.last
		ev.synack.add(p)
	case f&wire.FIN != 0:
		c.sawFin = true
		if ev.fin.n == 0 {
			ev.finFrom = snd.State
		}
		ev.fin.add(p)
		if p.Len > 0 && snd.hasISS && s.Seq.LessThan(snd.sndNxt) {
			ev.retx.add(p)
		}
	case p.Len <= 1 && snd.hasISS && s.Seq == snd.sndNxt.Add(-1) && snd.hasAcked && snd.acked == snd.sndNxt:
		// One below what the peer acknowledged, nothing in flight:
		// Linux's keepalive and zero-window probes (Windows' carry a
		// byte).
		if ev.probes.n == 0 {
			ev.probeIdle = idle
		}
		ev.probes.add(p)
		ev.probeOpen = true
		if rcv.ev.hasWin && rcv.ev.win == 0 {
			ev.zeroProbes++
		}
		return
	case p.Len > 0 && snd.hasISS && s.Seq.LessThan(snd.sndNxt):
		ev.retx.add(p)
	}
	if p.Len > 0 {
		ev.sentData = markOf(p)
	}
	if ev.challengeDue && p.Len == 0 && f == wire.ACK {
		ev.challenge.add(p)
		ev.challengeDue = false
	}
}

// forgedRst notes a RST in snd's name that snd's own tap never saw
// (the capture has both hosts' taps): snd sent no RST with that number.
func (c *Conn) forgedRst(p *Packet, snd *End) {
	if p.Segment.Flags&wire.RST == 0 || snd.ev.rst.frame != 0 && snd.ev.rstSeq == p.Segment.Seq {
		return
	}
	rcv := c.peer(snd)
	rcv.ev.forged.add(p)
	if len(rcv.ev.forgedOff) < maxMarks && rcv.hasRcv {
		rcv.ev.forgedOff = append(rcv.ev.forgedOff, forgedAt{p.Time, p.Segment.Seq.Diff(rcv.rcvNxt)})
	}
	if rcv.ev.forged.n == 1 {
		c.note(p, fmt.Sprintf("a RST in the %s's name that the %s's tap never saw: forged (spoofed), or made by a middlebox", snd.Name, snd.Name))
	}
}

// forgedAt is a forged RST's time and its distance from the number its
// receiver expected.
type forgedAt struct {
	at  time.Time
	off int32
}

// observeRecv gathers the evidence a packet gives of its receiver.
func (c *Conn) observeRecv(p *Packet, rcv *End) {
	if p.Len == 0 {
		return
	}
	ev := &rcv.ev
	ev.rcvData = markOf(p)
	if rcv.finSent && ev.dataAfterFin.frame == 0 && p.Segment.Seq.Add(p.Len).GreaterThan(rcv.rcvNxt) {
		ev.dataAfterFin = markOf(p)
	}
}

// timeline is a stack's retransmission gaps for a SYN or a SYN-ACK.
type timeline struct {
	name string
	gaps []time.Duration
}

func backoff(first time.Duration, linear, retries int) []time.Duration {
	gaps := make([]time.Duration, retries)
	for k := range gaps {
		gaps[k] = first << max(0, k-linear)
	}
	return gaps
}

// timelines are the SYN (or SYN-ACK) timelines of the stacks tcplab
// models: its profiles, and Linux with tcp_syn_linear_timeouts=4.
func timelines(synack bool) []timeline {
	var out []timeline
	for _, name := range []string{"linux", "windows-classic"} {
		p, err := tcp.ProfileByName(name)
		if err != nil {
			continue
		}
		if synack {
			out = append(out, timeline{name, backoff(p.SynAckInitialRTO, 0, p.SynAckRetries)})
			continue
		}
		out = append(out, timeline{name, backoff(p.InitialRTO, p.SynLinearTimeouts, p.SynRetries)})
		if name == "linux" {
			out = append(out, timeline{"linux with tcp_syn_linear_timeouts=4", backoff(p.InitialRTO, 4, p.SynRetries)})
		}
	}
	return out
}

func fmtGaps(gaps []time.Duration) string {
	var b strings.Builder
	at := time.Duration(0)
	b.WriteString("0")
	for _, g := range gaps {
		at += g
		fmt.Fprintf(&b, ", %s", roundDur(at))
	}
	return b.String() + " s"
}

func roundDur(d time.Duration) string {
	s := fmt.Sprintf("%.3f", d.Seconds())
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// matchTimeline names the stack whose timeline the transmissions follow
// (each gap within 10% or 20 ms), or says it matches none.
func matchTimeline(ms *marks, synack bool) (string, string) {
	var seen []time.Duration
	for i := 1; i < len(ms.first); i++ {
		seen = append(seen, ms.first[i].time().Sub(ms.first[i-1].time()))
	}
	if len(seen) == 0 {
		return "", "one transmission only: too few to tell whose timeline it follows"
	}
	for _, tl := range timelines(synack) {
		if len(seen) > len(tl.gaps) {
			continue
		}
		ok := true
		for i, g := range seen {
			want := tl.gaps[i]
			tol := max(want/10, 20*time.Millisecond)
			if g < want-tol || g > want+tol {
				ok = false
				break
			}
		}
		if ok {
			return tl.name, fmt.Sprintf("its retransmissions follow %s's timeline (%s; %d retries at most)", tl.name, fmtGaps(tl.gaps), len(tl.gaps))
		}
	}
	return "", fmt.Sprintf("its gaps (%s) match none of the timelines tcplab knows", fmtGaps(seen))
}

// conclude makes the connection's findings from its ends' evidence,
// once it has ended (final: at the capture's end, whose last packet is at
// last).
func (c *Conn) conclude(final bool, last time.Time) {
	c.seenUntil = last
	t := func(at time.Time) string { return trace0(at, c.t0) }
	add := func(kind, end, summary string, frames []int, explain string) {
		sort.Ints(frames)
		frames = dedupe(frames)
		c.Findings = append(c.Findings, Finding{Kind: kind, End: end, Summary: summary, Frames: frames, Explain: explain, Scenario: scenarioOf(kind)})
	}
	cl, sv := c.Client, c.Server
	reached := func(e *End, state string) *Change {
		for i := range e.Changes {
			if e.Changes[i].To == state {
				return &e.Changes[i]
			}
		}
		return nil
	}
	gaveUp := func(e *End) *Change {
		if n := len(e.Changes); n > 0 && strings.HasPrefix(e.Changes[n-1].Cause, "retransmissions given up") {
			return &e.Changes[n-1]
		}
		return nil
	}
	giveUpText := func(e *End) string {
		if g := gaveUp(e); g != nil {
			return fmt.Sprintf(" It then went quiet: it gave up at %s (probably: %s).", t(g.At), g.Probably)
		}
		return ""
	}

	// The handshake.
	// Unanswered: sent again, or the capture went on for the first
	// timeout (1 s) after it; a handshake the capture's end cut is not.
	waited := func(ms *marks) bool { return ms.n >= 2 || last.Sub(ms.last.time()) >= time.Second }
	if ev := &cl.ev; c.synLost() && waited(&ev.syn) {
		_, tl := matchTimeline(&ev.syn, false)
		add("syn-unanswered", "client", fmt.Sprintf("SYN sent %d times from %s, never answered", ev.syn.n, t(ev.syn.first[0].time())),
			ev.syn.frames(8), fmt.Sprintf("The client called connect() and sent a SYN to %v; no SYN-ACK and no RST came back within the capture, so it stayed in SYN_SENT and sent the SYN again each time its timer ran out (%d transmissions, the last at %s): %s. A silent drop does this (a firewall rule that drops instead of rejecting, a host that is down, a route that goes nowhere); a closed port would have answered RST.%s",
				sv.Addr, ev.syn.n, t(ev.syn.last.time()), tl, giveUpText(cl)))
	}
	if ev := &cl.ev; ev.refused.frame != 0 {
		fr := []int{ev.refused.frame}
		if ev.syn.n > 0 {
			fr = append(fr, ev.syn.last.frame)
		}
		add("refused", "client", fmt.Sprintf("SYN refused by RST at %s", t(ev.refused.time())), fr,
			fmt.Sprintf("The client's SYN to %v was answered by a RST with ACK: no socket listens on that port (or a firewall rejects with a TCP reset). connect() fails with ECONNREFUSED at once; no state is left on either side.", sv.Addr))
	}
	if ev := &sv.ev; c.synackLost() && waited(&ev.synack) {
		name, tl := matchTimeline(&ev.synack, true)
		sc := "syn-recv"
		if name == "windows-classic" {
			sc = "syn-recv-windows"
		}
		add("synack-unanswered", "server", fmt.Sprintf("SYN-ACK sent %d times, its ACK never seen", ev.synack.n), ev.synack.frames(8),
			fmt.Sprintf("The server answered the SYN from %v and kept a half-open request in SYN_RECV, but no ACK of its SYN-ACK came back within the capture: it sent the SYN-ACK %d times (the last at %s); %s. The SYN-ACK or the ACK was lost on the way, or the SYN came from an address that does not answer (spoofed, as in a SYN flood).%s",
				cl.Addr, ev.synack.n, t(ev.synack.last.time()), tl, giveUpText(sv)))
		c.Findings[len(c.Findings)-1].Scenario = sc
	}
	if ev := &sv.ev; ev.ackNotTaken.frame != 0 {
		add("accept-queue-full", "server", "SYN-ACK sent again after the client's ACK: the server dropped that ACK",
			[]int{ev.ackNotTaken.frame, ev.synackAgain.frame},
			fmt.Sprintf("The client took the SYN-ACK, acknowledged it (frame %d) and is ESTABLISHED: connect() returned and it may already write. The server sent its SYN-ACK again after that ACK (frame %d), so the ACK never made a connection there: Linux drops the handshake's final ACK when the listener's accept queue is full (the program is not calling accept() fast enough, or its backlog is too small) and keeps the request in SYN_RECV, resending the SYN-ACK. The client believes in a connection the server never completed; its data waits unacknowledged until the queue has room or the server gives up.",
				ev.ackNotTaken.frame, ev.synackAgain.frame))
		if !c.dual {
			f := &c.Findings[len(c.Findings)-1]
			f.Summary = "SYN-ACK sent again after the client's ACK: the ACK never made a connection (a full accept queue, or lost on the way)"
			f.Explain += " This capture has one tap: the ACK may also have been lost between the capture point and the server; a full accept queue shows on many connections at once, a lossy path on few."
		}
	}
	if cl.changedVia(SynSent, SynRecv) && sv.changedVia(SynSent, SynRecv) || cl.changedVia(SynSent, SynRecv) && sv.ev.syn.n > 0 {
		fr := []int{}
		if cl.ev.syn.n > 0 {
			fr = append(fr, cl.ev.syn.first[0].frame)
		}
		if sv.ev.syn.n > 0 {
			fr = append(fr, sv.ev.syn.first[0].frame)
		}
		add("simultaneous-open", "", "both ends sent a SYN: simultaneous open", fr,
			"Both ends connected to each other at the same time: each sent a SYN while the other's was in flight, so each received a SYN in SYN_SENT, answered SYN-ACK and passed through SYN_RECV. No listener is involved. It is rare by accident; NAT traversal does it on purpose.")
	}

	// The close.
	if cl.changedVia(FinWait1, Closing) || sv.changedVia(FinWait1, Closing) {
		var fr []int
		for _, e := range c.Ends() {
			if e.ev.fin.n > 0 {
				fr = append(fr, e.ev.fin.first[0].frame)
			}
		}
		add("simultaneous-close", "", "both ends sent a FIN before getting the other's: simultaneous close", fr,
			"Both programs closed at about the same time: each end sent its FIN before the other's arrived, so each received a FIN in FIN_WAIT1 and went to CLOSING, then to TIME_WAIT when its own FIN was acknowledged. Both ends, not only one, wait in TIME_WAIT.")
	}
	for _, e := range c.Ends() {
		p := c.peer(e)
		ev := &e.ev
		switch {
		case ev.rst.frame != 0 && !ev.fw2Timeout.IsZero() && ev.rstFrom == Closed:
			add("fin-wait-2-timeout", e.Name, fmt.Sprintf("%s's FIN_WAIT2 timed out; its later packets were answered by RST", e.Name),
				[]int{ev.fin.first[0].frame, ev.rst.frame},
				fmt.Sprintf("The %s closed (FIN, frame %d), the %s acknowledged the FIN but did not close its side: the %s waited in FIN_WAIT2 with no program behind it (an orphan) until tcp_fin_timeout, 60 s by default, ended it at about %s. The %s's later packets found no socket and were answered by a RST (frame %d). The %s sat in CLOSE_WAIT all that time: its program never called close().",
					e.Name, ev.fin.first[0].frame, p.Name, e.Name, t(ev.fw2Timeout), p.Name, ev.rst.frame, p.Name))
		case ev.rst.frame != 0 && e.finSent && ev.dataAfterFin.frame != 0 && !ev.dataAfterFin.time().After(ev.rst.time()):
			add("close-wait-data-loss", p.Name, fmt.Sprintf("%s wrote after %s's FIN; answered by RST, the data is lost", p.Name, e.Name),
				[]int{ev.fin.first[0].frame, ev.dataAfterFin.frame, ev.rst.frame},
				fmt.Sprintf("The %s closed its socket (its FIN, frame %d) and the %s, in CLOSE_WAIT, went on writing: its write() succeeded, since a FIN only says the peer will send no more. But the %s's program had closed the socket and could read nothing, so its kernel answered the data (frame %d) with a RST (frame %d). Those bytes are lost, and the %s learns it only from an ECONNRESET or EPIPE on a later call. A FIN must be treated as the end of the conversation unless the protocol says the peer only half-closed.",
					e.Name, ev.fin.first[0].frame, p.Name, e.Name, ev.dataAfterFin.frame, ev.rst.frame, p.Name))
		case ev.rst.frame != 0 && p.ev.blind.n == 0 && p.ev.forged.n == 0 && ev.answered == ev.probes.n && ev.rstFrom != Closed && ev.rstFrom != Listen && ev.rstFrom != SynSent && p.ev.refused.frame == 0:
			unread := ev.rcvData.frame != 0 && ev.rcvData.time().After(ev.sentData.time()) && !e.finSent
			why := "Its program closed with SO_LINGER on and a zero timeout (unsent data is dropped), or closed while received data was still unread; or, at a server, the program closed its listening socket while this connection still waited in the accept queue."
			if unread {
				why = fmt.Sprintf("It had received data (the last at frame %d) and sent none since: Linux sends RST instead of FIN when a program closes a socket whose received data it never read; SO_LINGER with a zero timeout does the same.", ev.rcvData.frame)
			}
			add("abortive-close", e.Name, fmt.Sprintf("%s ended the connection with RST at %s (from %s)", e.Name, t(ev.rst.time()), ev.rstFrom),
				[]int{ev.rst.frame}, fmt.Sprintf("The %s ended the connection with a RST (frame %d) instead of the FIN handshake, while in %s. %s Nothing waits in TIME_WAIT after a RST; the %s's next call fails with ECONNRESET, and any data not yet delivered is gone.",
					e.Name, ev.rst.frame, ev.rstFrom, why, p.Name))
			if unread {
				c.Findings[len(c.Findings)-1].Scenario = "close-unread-rst"
			}
		}
		if cw := reached(e, CloseWait); cw != nil && !e.finSent && p.finAckd {
			// Held until it left CLOSE_WAIT (a RST) or the capture's end.
			until, how := last, "to the capture's end"
			if e.State != CloseWait {
				left := e.Changes[len(e.Changes)-1]
				until, how = left.At, fmt.Sprintf("until %s (%s)", t(left.At), left.Cause)
			}
			// Held from the FIN, or from the last data it sent since (a
			// half-close: it may send as long as it likes).
			from := cw.At
			if d := ev.sentData.time(); d.After(from) && p.ev.rst.frame == 0 {
				from = d
			}
			if held := until.Sub(from); held >= closeWaitHeld && (final || c.split || e.State != CloseWait) {
				add("close-wait-held", e.Name, fmt.Sprintf("%s in CLOSE_WAIT from %s %s, %s s, never sending its FIN", e.Name, t(cw.At), how, roundDur(held)),
					[]int{cw.Frame}, fmt.Sprintf("The %s received the %s's FIN (frame %d) and acknowledged it, but never sent its own FIN within the capture: it sat in CLOSE_WAIT for %s s, where a socket stays until its program calls close(). Many sockets in CLOSE_WAIT on one host mean a program that does not close connections its peers closed (a leak, or a pool that never checks). The %s meanwhile waits in FIN_WAIT2, which Linux ends after tcp_fin_timeout if its socket is orphaned; a later packet from the %s is then answered by RST.",
						e.Name, p.Name, cw.Frame, roundDur(held), p.Name, e.Name))
			}
		}
		if ev.fin.n >= 2 && ev.finFrom == CloseWait {
			add("last-ack-lost", e.Name, fmt.Sprintf("%s sent its FIN %d times from LAST_ACK", e.Name, ev.fin.n), ev.fin.frames(6),
				fmt.Sprintf("The %s closed second (LAST_ACK) and sent its FIN again (%d transmissions): the %s's last ACK did not reach it. The %s, in TIME_WAIT, answers each FIN again with an ACK: this is what TIME_WAIT is for. Until an ACK arrives the %s stays in LAST_ACK.",
					e.Name, ev.fin.n, p.Name, p.Name, e.Name))
		} else if ev.fin.n >= 2 && !e.finAckd {
			add("fin-unanswered", e.Name, fmt.Sprintf("%s's FIN sent %d times, never acknowledged", e.Name, ev.fin.n), ev.fin.frames(8),
				fmt.Sprintf("The %s closed and sent its FIN (frame %d), then sent it again %d times with a growing backoff (the last at %s): no ACK came, so it stayed in FIN_WAIT1. The %s is unreachable or drops everything (a firewall, a crashed host). Linux gives up on an orphaned socket after tcp_orphan_retries.%s",
					e.Name, ev.fin.first[0].frame, ev.fin.n-1, t(ev.fin.last.time()), p.Name, giveUpText(e)))
		}
		if ev.retx.n >= 3 && gaveUp(e) != nil {
			add("retransmissions-given-up", e.Name, fmt.Sprintf("%s sent data again %d times, then gave up", e.Name, ev.retx.n), ev.retx.frames(8),
				fmt.Sprintf("The %s's data was not acknowledged, so it sent it again %d times with exponential backoff (the last at %s), and then ended the connection.%s The %s (or the path to it) stopped answering; Linux gives up after tcp_retries2 (15 retransmissions, about 15 minutes), TCP_USER_TIMEOUT, or for an orphan tcp_orphan_retries.",
					e.Name, ev.retx.n, t(ev.retx.last.time()), giveUpText(e), p.Name))
		}
		if ev.blind.n > 0 || ev.forged.n > 0 {
			fr := append(ev.blind.frames(6), ev.challenge.frames(6)...)
			fr = append(fr, ev.forged.frames(6)...)
			summary := fmt.Sprintf("%d RST(s) to %s not at its expected sequence number, %d challenge ACK(s)", ev.blind.n, e.Name, ev.challenge.n)
			text := fmt.Sprintf("The %s received %d RST(s) whose sequence number was not the exact next number it expected. Since RFC 5961 (Linux 3.6) such a RST does not close the connection: the receiver answers it with a challenge ACK carrying the right number (%d seen here), and only a genuine peer, which sees that ACK, can reset. An off-path attacker guessing sequence numbers sends exactly this; so does a middlebox or a peer whose state is out of date.",
				e.Name, ev.blind.n, ev.challenge.n)
			if ev.forged.n > 0 {
				summary = fmt.Sprintf("%d RST(s) to %s forged in the %s's name", ev.forged.n, e.Name, p.Name)
				if ev.blind.n > 0 {
					summary += fmt.Sprintf(", %d RST(s) not at the expected number, %d challenge ACK(s)", ev.blind.n, ev.challenge.n)
				}
				text += fmt.Sprintf(" The capture has both hosts' taps, and the %s's tap never saw %d of these packets (from frame %d): the %s did not send them, someone forged them in its name.", p.Name, ev.forged.n, ev.forged.first[0].frame, p.Name)
				if ch := reached(e, Closed); ch != nil && ch.Cause == "rcv RST" {
					text += fmt.Sprintf(" The one at frame %d hit the exact number and reset the %s: the %s, which never saw it, learns it only when its next packet is answered by RST.", ch.Frame, e.Name, p.Name)
				}
			}
			add("blind-reset", e.Name, summary, fr, text)
		}
		if n := ev.probes.n - ev.zeroProbes; n > 0 {
			un := ev.probes.n - ev.answered
			interval := ""
			if len(ev.probes.first) > 1 {
				interval = fmt.Sprintf(", then every %s s", roundDur(ev.probes.first[1].time().Sub(ev.probes.first[0].time())))
			}
			dead := un >= 2 && (e.State == Closed || final)
			summary := fmt.Sprintf("%s sent %d keepalive probe(s), %d answered", e.Name, ev.probes.n, ev.answered)
			text := fmt.Sprintf("The connection was idle for %s s, then the %s sent keepalive probes (a segment one below the next sequence number, which the peer must acknowledge)%s: %d sent, %d answered.", roundDur(ev.probeIdle), e.Name, interval, ev.probes.n, ev.answered)
			if dead {
				summary += ": the peer is dead"
				text += fmt.Sprintf(" The %s did not answer the last %d: it is gone (crashed, unplugged, or a middlebox forgot the connection). Linux ends the connection after tcp_keepalive_probes unanswered probes (9 by default; here SO_KEEPALIVE with TCP_KEEPIDLE/KEEPINTVL/KEEPCNT as the program set them); without keepalive it would stay ESTABLISHED forever.", p.Name, un)
			} else {
				text += fmt.Sprintf(" The %s is alive. Linux's defaults wait 7200 s before the first probe (tcp_keepalive_time); a shorter idle means the program set TCP_KEEPIDLE.", p.Name)
			}
			add("keepalive", e.Name, summary, ev.probes.frames(8), text)
		}
		if ev.zero.n > 0 {
			fr := append([]int{ev.zero.first[0].frame}, p.ev.probes.frames(6)...)
			stuck := ev.reopen.frame == 0
			summary := fmt.Sprintf("%s advertised a zero window at %s", e.Name, t(ev.zero.first[0].time()))
			text := fmt.Sprintf("The %s's receive buffer filled (frame %d advertises window 0): its program reads more slowly than the %s sends, or not at all. The %s keeps its data and sends persist (zero-window) probes to learn when the window opens (%d seen).", e.Name, ev.zero.first[0].frame, p.Name, p.Name, p.ev.zeroProbes)
			if stuck {
				summary += ", never reopened: a stuck receiver"
				text += fmt.Sprintf(" The window never reopened within the capture: the %s's program is stuck or stopped reading. Persist probes never give up while they are answered, so such a connection can last forever.", e.Name)
			} else {
				fr = append(fr, ev.reopen.frame)
				summary += fmt.Sprintf(", reopened at %s", t(ev.reopen.time()))
				text += fmt.Sprintf(" It reopened at frame %d.", ev.reopen.frame)
			}
			add("zero-window", e.Name, summary, fr, text)
		}
	}
	if c.reusedBy != 0 && !c.twNearEnd {
		fr := []int{c.reusedBy}
		for _, e := range c.Ends() {
			if tw := reached(e, TimeWait); tw != nil && tw.Frame != 0 {
				fr = append(fr, tw.Frame)
			}
		}
		add("time-wait-reuse", "", "a new SYN on this 4-tuple while it was in TIME_WAIT", fr,
			fmt.Sprintf("A new connection (SYN, frame %d) used this connection's 4-tuple while one end still held it in TIME_WAIT. Linux lets it through when the SYN's sequence number or timestamp is above the old connection's (tcp_tw_reuse for an outgoing connect, or the TIME_WAIT socket accepting a new SYN); otherwise the SYN is answered with the old connection's ACK or dropped. A client that always uses the same local port hits EADDRINUSE instead.", c.reusedBy))
	}
	if r := c.reuseOf; r != nil && c.Client.ev.syn.n > 0 {
		add("time-wait-reuse", "", fmt.Sprintf("its SYN reused a 4-tuple that connection #%d held in TIME_WAIT", r.index), []int{c.Client.ev.syn.first[0].frame},
			fmt.Sprintf("This connection's SYN (frame %d) used the 4-tuple of connection #%d, whose %s was still in TIME_WAIT (since frame %d, until about %s). Linux lets it through when the SYN's sequence number or timestamp is above the old connection's (tcp_tw_reuse for an outgoing connect, or the TIME_WAIT socket accepting a new SYN); otherwise the SYN is answered with the old connection's ACK or dropped. A client that always uses the same local port hits EADDRINUSE instead.",
				c.Client.ev.syn.first[0].frame, r.index, r.endName(), r.frame, t(time.Unix(0, r.until))))
	}
	if final && !c.sawFin && !c.sawRst && (cl.State == Established || sv.State == Established) {
		add("no-end", "", fmt.Sprintf("neither FIN nor RST within the capture (idle %s s at its end)", roundDur(last.Sub(c.Last))), []int{c.FirstFrame},
			fmt.Sprintf("The connection neither closed nor reset within the capture; its last packet came %s s before the capture's end. Either it is still open (a long-lived connection, or the capture simply stopped), or one end vanished without a word (crash, power loss, a NAT or firewall that forgot the connection): the other end then stays ESTABLISHED until it sends something, or forever if it only waits to read, unless keepalive probes it.", roundDur(last.Sub(c.Last))))
	}
}

// synLost says whether the client's SYN got no answer at all.
func (c *Conn) synLost() bool {
	cl, sv := c.Client, c.Server
	return cl.ev.syn.n > 0 && cl.ev.refused.frame == 0 && sv.ev.synack.n == 0 && reachedState(cl, Established) == nil && sv.ev.rst.frame == 0 &&
		sv.lastSent.IsZero() // a challenge ACK is an answer too
}

// synackLost says whether the server's SYN-ACK never made a connection
// (and no ACK of it was dropped by the server: that is a full queue).
func (c *Conn) synackLost() bool {
	cl, sv := c.Client, c.Server
	return sv.ev.synack.n > 0 && reachedState(sv, Established) == nil && sv.ev.ackNotTaken.frame == 0 && sv.ev.rst.frame == 0 && cl.ev.rst.frame == 0
}

// changedVia says whether the end made the change from one state to the other.
func (e *End) changedVia(from, to string) bool {
	for _, ch := range e.Changes {
		if ch.From == from && ch.To == to {
			return true
		}
	}
	return false
}

func dedupe(xs []int) []int {
	out := xs[:0]
	for i, x := range xs {
		if x != 0 && (i == 0 || x != xs[i-1]) {
			out = append(out, x)
		}
	}
	return out
}

func trace0(at, t0 time.Time) string {
	return fmt.Sprintf("%ss", roundDur(at.Sub(t0)))
}

// flood counts, per server endpoint, the handshakes that never completed:
// many of them from many sources is a SYN flood.
type flood struct {
	n           int
	sources     map[netip.AddrPort]struct{}
	addrs       map[netip.Addr]struct{}
	first, last time.Time
	frames      []int
}

const (
	floodAtLeast    = 16   // incomplete handshakes to one endpoint
	floodRate       = 5    // per second, over their span
	floodSources    = 8    // distinct client endpoints
	floodMaxTrack   = 1024 // server endpoints followed
	floodMaxSources = 256  // sources counted per endpoint ("256 or more")
)

func (t *Tracker) countFlood(c *Conn) {
	cl, sv := c.Client, c.Server
	if cl.ev.syn.n == 0 || sv.changedVia(SynRecv, Established) || cl.changedVia(SynSent, Established) || cl.ev.refused.frame != 0 {
		return
	}
	if t.floods == nil {
		t.floods = map[netip.AddrPort]*flood{}
	}
	f := t.floods[sv.Addr]
	if f == nil {
		if len(t.floods) >= floodMaxTrack {
			return
		}
		f = &flood{sources: map[netip.AddrPort]struct{}{}, addrs: map[netip.Addr]struct{}{}, first: c.First}
		t.floods[sv.Addr] = f
	}
	f.n++
	if len(f.sources) < floodMaxSources {
		f.sources[cl.Addr] = struct{}{}
		f.addrs[cl.Addr.Addr()] = struct{}{}
	}
	if c.First.Before(f.first) {
		f.first = c.First
	}
	if c.First.After(f.last) {
		f.last = c.First
	}
	if len(f.frames) < 8 {
		f.frames = append(f.frames, cl.ev.syn.first[0].frame)
	}
}

// floodFindings are the capture-wide findings: a SYN flood per server
// endpoint that drew one.
func (t *Tracker) floodFindings() []Finding {
	var out []Finding
	for addr, f := range t.floods {
		span := max(f.last.Sub(f.first), time.Second)
		rate := float64(f.n) / span.Seconds()
		if f.n < floodAtLeast || len(f.sources) < floodSources || rate < floodRate {
			continue
		}
		frames := append([]int(nil), f.frames...)
		sort.Ints(frames)
		count := func(n int) string {
			if n >= floodMaxSources {
				return fmt.Sprintf("%d or more", n)
			}
			return fmt.Sprint(n)
		}
		srcs, addrs := count(len(f.sources)), count(len(f.addrs))
		out = append(out, Finding{Kind: "syn-flood", Summary: fmt.Sprintf("%d handshakes to %v never completed, from %s sources (%s addresses), %.0f/s", f.n, addr, srcs, addrs, rate),
			Frames: frames, Conns: f.n, Scenario: scenarioOf("syn-flood"),
			Explain: fmt.Sprintf("%d SYNs to %v from %s different source endpoints (%s addresses) between %s and %s never became connections: the server answered SYN-ACK and no ACK came back, or it could not answer at all. Many half-open requests from many sources, at %.0f per second, is a SYN flood, usually from spoofed addresses that never answer. Each request holds an entry in the listener's SYN queue (SYN_RECV) until its SYN-ACK retries run out; when the queue is full, Linux drops new SYNs, real clients' too, unless tcp_syncookies lets it answer without keeping state.",
				f.n, addr, srcs, addrs, trace0(f.first, t.t0), trace0(f.last, t.t0), rate)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conns > out[j].Conns })
	return out
}
