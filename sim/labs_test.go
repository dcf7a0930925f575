package sim

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// The classic TCP lab experiments, with the timing of real stacks in
// virtual time. Link delay is the default 1 ms one way.

// TestLabServerDropsAllInput: the server's firewall drops everything to
// port 80. The Linux client sends its SYN at 0 and retransmits at 1, 3, 7,
// 15, 31 and 63 s (tcp_syn_retries 6, RTO doubling from 1 s); connect fails
// with ETIMEDOUT at 127 s.
func TestLabServerDropsAllInput(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Drop})
	_, r := l.connect("client", serverAP)
	if !r.Pending {
		t.Fatalf("connect did not block")
	}
	l.n.RunFor(126*time.Second + 999*time.Millisecond)
	if c := l.calls("client", "connect"); len(c) != 0 {
		t.Fatalf("connect returned early: %v", c)
	}
	l.n.RunFor(time.Hour)

	syns := l.packets("client", trace.Out, isFlags(wire.SYN))
	if got, want := times(syns), secs(0, 1, 3, 7, 15, 31, 63); !eqDur(got, want) {
		l.dump()
		t.Fatalf("SYNs at %v, want %v", got, want)
	}
	for _, e := range syns {
		if e.Packet.Segment.Seq != syns[0].Packet.Segment.Seq || e.Packet.Segment.SrcPort != syns[0].Packet.Segment.SrcPort {
			t.Errorf("retransmitted SYN differs: %s", e.String())
		}
	}
	in := l.packets("server", trace.In, nil)
	if len(in) != 7 {
		t.Errorf("server tap saw %d packets, want 7", len(in))
	}
	for i, e := range in {
		if e.Packet.Verdict != trace.VerdictDrop || e.At != syns[i].At+time.Millisecond {
			t.Errorf("server tap %s", e.String())
		}
	}
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].At != 127*time.Second || c[0].Call.Errno != "ETIMEDOUT" || c[0].Call.Ret != -1 || c[0].Call.Started != 0 {
		t.Fatalf("connect = %v, want ETIMEDOUT at 127 s", c)
	}
	st := l.states("client")
	last := st[len(st)-1]
	if last.At != 127*time.Second || last.State.From != "SYN_SENT" || last.State.To != "CLOSED" || last.State.CauseKind != "timer" {
		t.Errorf("client state %s", last.String())
	}
	// OutSegs counts new segments only, as __tcp_transmit_skb does: the
	// six retransmitted SYNs are in RetransSegs.
	for name, want := range map[string]int64{"ActiveOpens": 1, "AttemptFails": 1, "RetransSegs": 6, "OutSegs": 1, "TCPTimeouts": 7, "TCPAbortOnTimeout": 1, "CurrEstab": 0} {
		if got := counter(t, l.n, "client", name); got != want {
			t.Errorf("client %s = %d, want %d", name, got, want)
		}
	}
	if !l.n.Idle() {
		t.Error("network not idle after the failed connect")
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestLabSynLinearTimeouts: kernels 6.5 and later send the first four
// retransmissions at 1 s intervals (tcp_syn_linear_timeouts 4): SYNs at 0,
// 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s, ETIMEDOUT at 131 s.
func TestLabSynLinearTimeouts(t *testing.T) {
	p := tcp.Linux()
	if err := p.Set("tcp_syn_linear_timeouts", "4"); err != nil {
		t.Fatal(err)
	}
	l := newLab(t, 1, p, tcp.Linux())
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(time.Hour)
	syns := l.packets("client", trace.Out, isFlags(wire.SYN))
	if got, want := times(syns), secs(0, 1, 2, 3, 4, 5, 7, 11, 19, 35, 67); !eqDur(got, want) {
		t.Errorf("SYNs at %v, want %v", got, want)
	}
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].At != 131*time.Second || c[0].Call.Errno != "ETIMEDOUT" {
		t.Errorf("connect = %v, want ETIMEDOUT at 131 s", c)
	}
}

// TestLabSynRetriesSetting: tcp_syn_retries 2 gives SYNs at 0, 1, 3 s and
// ETIMEDOUT at 7 s; the classic Windows client SYNs at 0, 3, 9 s and fails
// at 21 s.
func TestLabSynRetriesSetting(t *testing.T) {
	p := tcp.Linux()
	p.Set("tcp_syn_retries", "2")
	for _, tc := range []struct {
		name string
		prof tcp.Profile
		syns []time.Duration
		fail time.Duration
	}{
		{"linux tcp_syn_retries=2", p, secs(0, 1, 3), 7 * time.Second},
		{"windows-classic", tcp.WindowsClassic(), secs(0, 3, 9), 21 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, 1, tc.prof, tcp.Linux())
			l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Drop})
			l.connect("client", serverAP)
			l.n.RunFor(time.Hour)
			if got := times(l.packets("client", trace.Out, isFlags(wire.SYN))); !eqDur(got, tc.syns) {
				t.Errorf("SYNs at %v, want %v", got, tc.syns)
			}
			c := l.calls("client", "connect")
			if len(c) != 1 || c[0].At != tc.fail || c[0].Call.Errno != "ETIMEDOUT" {
				t.Errorf("connect = %v, want ETIMEDOUT at %v", c, tc.fail)
			}
		})
	}
}

// synRecvEnd returns the first request's SYN_RECV -> CLOSED event on the
// server.
func synRecvEnd(t *testing.T, l *lab) trace.Event {
	t.Helper()
	var sock uint64
	for _, e := range l.states("server") {
		if e.State.To == "SYN_RECV" && sock == 0 {
			sock = e.Sock
		}
		if sock != 0 && e.Sock == sock && e.State.From == "SYN_RECV" {
			return e
		}
	}
	l.dump()
	t.Fatalf("the SYN_RECV request never ended")
	return trace.Event{}
}

// TestLabClientDropsSynAcks: the client drops everything from source port
// 80. The Linux server's request sends SYN-ACKs at 0, 1, 3, 7, 15 and 31 s
// (from the SYN's arrival at 0.001) and disappears at 63 s, when the sixth
// timeout finds tcp_synack_retries (5) used up: SYN_RECV -> CLOSED.
//
// The client's own SYN retransmissions reach the server at the same
// instants as the request's timer; the timer fires first and tcp_check_req
// answers the duplicate SYN with one more SYN-ACK, so each instant after
// the first has two SYN-ACKs.
func TestLabClientDropsSynAcks(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.In, SrcPort: 80, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(63 * time.Second)

	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if got, want := distinct(times(sa)), plus(secs(0, 1, 3, 7, 15, 31), time.Millisecond); !eqDur(got, want) {
		l.dump()
		t.Fatalf("SYN-ACK instants %v, want %v", got, want)
	}
	if len(sa) != 11 {
		t.Errorf("%d SYN-ACKs, want 1 + 5 x 2", len(sa))
	}
	for _, e := range sa {
		if e.Packet.Segment.Seq != sa[0].Packet.Segment.Seq {
			t.Errorf("SYN-ACK with a new ISN: %s", e.String())
		}
	}
	for _, e := range l.packets("client", trace.In, nil) {
		if e.Packet.Verdict != trace.VerdictDrop {
			t.Errorf("client let through %s", e.String())
		}
	}
	l.n.RunFor(10 * time.Millisecond)
	end := synRecvEnd(t, l)
	if end.At != 63*time.Second+time.Millisecond || end.State.To != "CLOSED" || end.State.CauseKind != "timer" {
		t.Errorf("request ended: %s, want SYN_RECV -> CLOSED by timer at 63.001", end.String())
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// isolatedSynAckLab is the lab of TestLabClientDropsSynAcks with the
// client's SYN retransmissions also dropped (Skip 1: only the first SYN
// leaves), so only the server's request timer speaks.
func isolatedSynAckLab(t *testing.T, server tcp.Profile) *lab {
	l := newLab(t, 1, tcp.Linux(), server)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.In, SrcPort: 80, Action: Drop})
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Skip: 1, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(10 * time.Minute)
	return l
}

func TestLabSynAckTimelineLinux(t *testing.T) {
	l := isolatedSynAckLab(t, tcp.Linux())
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if got, want := times(sa), plus(secs(0, 1, 3, 7, 15, 31), time.Millisecond); !eqDur(got, want) {
		l.dump()
		t.Fatalf("SYN-ACKs at %v, want %v", got, want)
	}
	end := synRecvEnd(t, l)
	if end.At != 63*time.Second+time.Millisecond || end.State.To != "CLOSED" || end.State.CauseKind != "timer" {
		t.Errorf("request ended: %s", end.String())
	}
	if n := len(l.states("server")); n != 3 { // LISTEN, SYN_RECV, CLOSED
		t.Errorf("server states %v", l.states("server"))
	}
	// The client gave up at 127 s.
	if c := l.calls("client", "connect"); len(c) != 1 || c[0].At != 127*time.Second || c[0].Call.Errno != "ETIMEDOUT" {
		t.Errorf("connect %v", c)
	}
	if v := counter(t, l.n, "server", "RetransSegs"); v != 5 {
		t.Errorf("server RetransSegs = %d, want 5", v)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestLabSynAckTimelineWindows: the classic Windows server sends SYN-ACKs
// at 0, 3, 9, 21, 45 s and drops the half-open entry at 93 s.
func TestLabSynAckTimelineWindows(t *testing.T) {
	l := isolatedSynAckLab(t, tcp.WindowsClassic())
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if got, want := times(sa), plus(secs(0, 3, 9, 21, 45), time.Millisecond); !eqDur(got, want) {
		l.dump()
		t.Fatalf("SYN-ACKs at %v, want %v", got, want)
	}
	for _, e := range sa {
		if e.Packet.Segment.TTL != 128 || e.Packet.Segment.Options.HasTimestamps || e.Packet.Segment.Options.HasWScale {
			t.Errorf("not a classic Windows SYN-ACK: %s ttl %d", e.String(), e.Packet.Segment.TTL)
		}
	}
	end := synRecvEnd(t, l)
	if end.At != 93*time.Second+time.Millisecond || end.State.To != "CLOSED" || end.State.CauseKind != "timer" {
		t.Errorf("request ended: %s, want at 93.001", end.String())
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestLabSynAckWindowsServerLinuxClient: the same lab with the Linux
// client's SYN retransmissions (1, 3, 7, 15, 31, 63 s) reaching the
// Windows-timed server. Each duplicate SYN makes the request resend its
// SYN-ACK and restart its timer at SynAckInitialRTO << num_timeout
// (tcp_check_req: "Reset timer after retransmitting SYNACK"), so the
// timeline stretches and the request lives until 111 s.
func TestLabSynAckWindowsServerLinuxClient(t *testing.T) {
	l := newLab(t, 1, tcp.Linux(), tcp.WindowsClassic())
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.In, SrcPort: 80, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(10 * time.Minute)
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	// SYN-triggered: 1, 3, 7, 15, 31, 63; timer: 6 (3+3), 13 (7+6),
	// 27 (15+12), 55 (31+24); the last SYN at 63 restarts 48 s: 111.
	want := plus(secs(0, 1, 3, 6, 7, 13, 15, 27, 31, 55, 63), time.Millisecond)
	if got := times(sa); !eqDur(got, want) {
		l.dump()
		t.Fatalf("SYN-ACKs at %v, want %v", got, want)
	}
	end := synRecvEnd(t, l)
	if end.At != 111*time.Second+time.Millisecond {
		t.Errorf("request ended: %s, want at 111.001", end.String())
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestLabHalfOpenSnapshot: while the client drops the SYN-ACKs, the
// server's snapshot shows the request in SYN_RECV with the "on" timer and
// its retransmission count, and the listener's SYN queue.
func TestLabHalfOpenSnapshot(t *testing.T) {
	l := newLab(t, 1, tcp.Linux(), tcp.Linux())
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.In, SrcPort: 80, Action: Drop})
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Skip: 1, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunUntil(5 * time.Second)
	ss, _ := l.n.Snapshot("server")
	if len(ss) != 2 || ss[0].SynQueue != 1 || ss[0].RecvQ != 0 {
		t.Fatalf("server sockets %+v", ss)
	}
	r := ss[1]
	// SYN-ACKs at 0.001, 1.001, 3.001; the next at 7.001.
	if r.State != "SYN_RECV" || r.Timer != "on" || r.TimerLeft != 2*time.Second+time.Millisecond || r.Retransmits != 2 || r.FD != -1 {
		t.Errorf("request %+v, want timer on 2.001 s, 2 retransmits", r)
	}
	cs, _ := l.n.Snapshot("client")
	if len(cs) != 1 || cs[0].State != "SYN_SENT" || cs[0].Timer != "on" || cs[0].TimerLeft != 2*time.Second || cs[0].Retransmits != 2 {
		t.Errorf("client %+v, want SYN_SENT, next SYN in 2 s after 2 retransmits", cs)
	}
	if fmt.Sprint(cs[0].RTO) != "4s" {
		t.Errorf("client RTO %v, want 4s", cs[0].RTO)
	}
}

// serverSynAckDrop is the server's own firewall dropping its SYN-ACKs
// after the first skip of them (the sender gets EPERM).
func serverSynAckDrop(skip int) Rule {
	return Rule{Host: "server", Dir: trace.Out, FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK, Skip: skip, Action: Drop}
}

// TestLabSynAckResendRefused: the server's own output drops its SYN-ACKs
// after the first (a local firewall: the sender gets EPERM). Linux's
// request timer cannot resend at 1 s and drops the request at once
// (reqsk_timer_handler), counting no retransmission. (The client hears
// nothing and sends one SYN, so that only the request timer acts.)
func TestLabSynAckResendRefused(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(serverSynAckDrop(1))
	l.addRule(Rule{Host: "client", Dir: trace.In, SrcPort: 80, Action: Drop})
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Skip: 1, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(10 * time.Second)
	end := synRecvEnd(t, l)
	if end.At != time.Second+time.Millisecond || end.State.To != "CLOSED" || end.State.CauseKind != "timer" ||
		!strings.Contains(end.State.Cause, "EPERM") {
		l.dump()
		t.Errorf("request ended: %s; want CLOSED by its timer at 1.001 s, its SYN-ACK refused", end.String())
	}
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if got := verdicts(sa); !reflect.DeepEqual(got, []string{"pass", "drop"}) {
		t.Errorf("SYN-ACK verdicts %v, want [pass drop]", got)
	}
	if v := counter(t, l.n, "server", "RetransSegs"); v != 0 {
		t.Errorf("server RetransSegs = %d, want 0 (a refused resend is not counted)", v)
	}
	l.checkBugs()
}

// TestLabSynAckResendRefusedAcked: a request whose final ACK came while
// the accept queue was full (acked) is kept when its resend is refused.
func TestLabSynAckResendRefusedAcked(t *testing.T) {
	l := newLinuxLab(t)
	// As in accept-overflow: backlog 2, two connections accepted into
	// the queue, then three SYNs at once each make a request; the first
	// final ACK fills the queue, the other two are dropped and their
	// requests marked acked.
	l.listen("server", 80, 2)
	l.addRule(serverSynAckDrop(5))
	l.connect("client", serverAP)
	l.connect("client", serverAP)
	l.n.RunFor(10 * time.Millisecond)
	for range 3 {
		l.connect("client", serverAP)
	}
	l.n.RunFor(2500 * time.Millisecond)
	if sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK)); len(sa) < 7 || sa[5].Packet.Verdict != "drop" {
		l.dump()
		t.Fatalf("the acked request's SYN-ACK was not resent into the rule: %v", sa)
	}
	var ended []string
	for _, e := range l.states("server") {
		if e.State.From == "SYN_RECV" {
			ended = append(ended, e.String())
		}
	}
	if len(ended) != 3 || !strings.Contains(strings.Join(ended, " "), "-> ESTABLISHED") || strings.Contains(strings.Join(ended, " "), "CLOSED") {
		l.dump()
		t.Errorf("server's requests left SYN_RECV: %v; want three, to ESTABLISHED (the two acked stay)", ended)
	}
	l.checkBugs()
}

// TestLabSynAckResendRefusedForSYN: a retransmitted SYN makes the server
// resend its SYN-ACK, which its output refuses; tcp_check_req then leaves
// the request's timer as it was, so the request still ends at its first
// timeout (1 s after the SYN), not 1 s after the refused resend.
func TestLabSynAckResendRefusedForSYN(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(serverSynAckDrop(1))
	l.addRule(Rule{Host: "client", Dir: trace.In, SrcPort: 80, Action: Drop})
	// The client's own retransmissions (the third SYN on) stay home.
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Skip: 2, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(time.Millisecond)
	syn := l.packets("client", trace.Out, isFlags(wire.SYN))[0].Packet.Segment
	if err := l.n.InjectAt(500*time.Millisecond, "client", syn); err != nil {
		t.Fatal(err)
	}
	l.n.RunFor(3 * time.Second)
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if got := times(sa); !eqDur(got, []time.Duration{time.Millisecond, 501 * time.Millisecond, 1001 * time.Millisecond}) ||
		!reflect.DeepEqual(verdicts(sa), []string{"pass", "drop", "drop"}) {
		l.dump()
		t.Fatalf("SYN-ACKs at %v, %v; want at 0.001 (passed), 0.501 (for the SYN sent again) and 1.001 s (the timer's), both refused", got, verdicts(sa))
	}
	if end := synRecvEnd(t, l); end.At != time.Second+time.Millisecond || !strings.Contains(end.State.Cause, "EPERM") {
		l.dump()
		t.Errorf("request ended: %s; want at 1.001 s, when its timer's resend was refused", end.String())
	}
}
