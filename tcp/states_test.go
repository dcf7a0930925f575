package tcp

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

func TestStateNames(t *testing.T) {
	for _, s := range States() {
		p, ok := ParseState(s.String())
		if !ok || p != s {
			t.Fatalf("%v does not round-trip", s)
		}
	}
	for name, want := range map[string]State{"ESTAB": Established, "syn-sent": SynSent, "FIN-WAIT-1": FinWait1, "time_wait": TimeWait} {
		if s, ok := ParseState(name); !ok || s != want {
			t.Errorf("ParseState(%q) = %v %v", name, s, ok)
		}
	}
	if _, ok := ParseState("ESTABLISHD"); ok {
		t.Fatal("accepted a misspelling")
	}
	if Legal(Listen, SynSent) {
		t.Fatal("LISTEN -> SYN_SENT is not offered by the socket API")
	}
	if !Legal(FinWait1, TimeWait) || !Legal(SynSent, SynRecv) || Legal(TimeWait, Established) {
		t.Fatal("transition table")
	}
}

func TestListenThenClose(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(5)
	if s := f.h.fds[f.lfd].state; s != Listen {
		t.Fatalf("state %v", s)
	}
	id := f.h.fds[f.lfd].id
	f.do(Call{Op: OpClose, FD: f.lfd})
	f.expectNothing()
	if got := f.transitionsOf(id); !slices.Equal(got, []string{"CLOSED->LISTEN", "LISTEN->CLOSED"}) {
		t.Fatalf("transitions %v", got)
	}
	if f.h.fds[f.lfd] != nil {
		t.Fatal("descriptor still open")
	}
	// The port is free again.
	if _, e := f.h.ListenOn(usPort, 5); e != OK {
		t.Fatalf("relisten: %v", e)
	}
}

func TestPassiveOpen(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	c := f.conn()
	if got := f.transitionsOf(c.id); !slices.Equal(got, []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED"}) {
		t.Fatalf("transitions %v", got)
	}
	f.wantCounter(PassiveOpens, 1)
	f.wantCounter(CurrEstab, 1)
}

func TestActiveOpen(t *testing.T) {
	f := newFx(t, Linux())
	f.active()
	if got := f.transitionsOf(f.conn().id); !slices.Equal(got, []string{"CLOSED->SYN_SENT", "SYN_SENT->ESTABLISHED"}) {
		t.Fatalf("transitions %v", got)
	}
	f.wantCounter(ActiveOpens, 1)
}

func TestSimultaneousOpen(t *testing.T) {
	f := newFx(t, Linux())
	r := f.connectFrom(6666, false)
	// The peer's own SYN crosses ours.
	f.recv(f.mk(wire.SYN, f.pNxt, 0, ""))
	f.pNxt = f.pNxt.Add(1)
	f.expect(exp{wire.SYN | wire.ACK, 0, 1, 0})
	f.wantState(SynRecv)
	// Then its SYN-ACK, acking our SYN.
	f.recv(f.mk(wire.SYN|wire.ACK, peerISS, f.usISS.Add(1), ""))
	// Its SYN is old by now: Linux ACKs it at once (a D-SACK when SACK
	// was negotiated), so each side sends SYN, SYN-ACK and an ACK.
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.wantState(Established)
	if d := f.callDone(r.ID); d == nil || d.Err != OK || d.Ret != 0 {
		t.Fatalf("connect result %+v", d)
	}
	want := []string{"CLOSED->SYN_SENT", "SYN_SENT->SYN_RECV", "SYN_RECV->ESTABLISHED"}
	if got := f.transitionsOf(f.conn().id); !slices.Equal(got, want) {
		t.Fatalf("transitions %v", got)
	}
	// Data flows.
	f.send(wire.PSH|wire.ACK, "hi")
	rd := f.do(Call{Op: OpRead, FD: f.fd})
	if string(rd.Data) != "hi" {
		t.Fatalf("read %q", rd.Data)
	}
}

func TestSimultaneousOpenCloseInSynRecv(t *testing.T) {
	f := newFx(t, Linux())
	f.connectFrom(6666, true)
	f.recv(f.mk(wire.SYN, f.pNxt, 0, ""))
	f.pNxt = f.pNxt.Add(1)
	f.expect(exp{wire.SYN | wire.ACK, 0, 1, 0})
	f.do(Call{Op: OpClose, FD: f.fd})
	f.wantState(FinWait1)
	f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
}

func TestConnectRefused(t *testing.T) {
	f := newFx(t, Linux())
	r := f.connectFrom(80, false)
	// A RST whose ACK is not for our SYN is ignored.
	f.recv(f.mk(wire.RST|wire.ACK, 0, f.usISS.Add(5), ""))
	f.wantState(SynSent)
	f.recv(f.mk(wire.RST|wire.ACK, 0, f.usISS.Add(1), ""))
	f.wantState(Closed)
	d := f.callDone(r.ID)
	if d == nil || d.Err != ECONNREFUSED {
		t.Fatalf("connect: %+v", d)
	}
	f.wantCounter(AttemptFails, 1)
	// The socket can try again.
	r = f.do(Call{Op: OpConnect, FD: f.fd, Addr: f.peer, NonBlock: true})
	if r.Err != EINPROGRESS {
		t.Fatalf("reconnect: %v", r.Err)
	}
}

func TestSynSentUnacceptableAckGetsReset(t *testing.T) {
	f := newFx(t, Linux())
	f.connectFrom(80, false)
	// An old SYN-ACK acking something else: RST at its ACK number.
	f.recv(f.mk(wire.SYN|wire.ACK, 77, f.usISS.Add(99), ""))
	if len(f.out) != 1 || f.out[0].Flags != wire.RST || f.out[0].Seq != f.usISS.Add(99) {
		t.Fatalf("got %s", f.dump())
	}
	f.wantState(SynSent)
}

func TestCloseDuringConnect(t *testing.T) {
	f := newFx(t, Linux())
	f.peer = netip.AddrPortFrom(peerAddr, 80)
	fd := f.h.Socket()
	r := f.do(Call{Op: OpConnect, FD: fd, Addr: f.peer, NonBlock: true})
	if r.Err != EINPROGRESS {
		t.Fatalf("nonblocking connect: %v", r.Err)
	}
	f.out = nil
	f.do(Call{Op: OpClose, FD: fd})
	f.expectNothing()
	if len(f.h.conns) != 0 || len(f.h.ports) != 0 {
		t.Fatalf("leftovers: %d conns %d ports", len(f.h.conns), len(f.h.ports))
	}
	if !covered[[2]State{SynSent, Closed}] {
		t.Fatal("SYN_SENT -> CLOSED not seen")
	}
}

func TestHalfOpenRequestReset(t *testing.T) {
	f := newFx(t, Linux())
	f.synRecv()
	id := f.conn().id
	f.recv(f.mk(wire.RST, f.pNxt, 0, ""))
	f.expectNothing()
	if f.conn() != nil {
		t.Fatal("request still there")
	}
	if got := f.transitionsOf(id); !slices.Equal(got, []string{"LISTEN->SYN_RECV", "SYN_RECV->CLOSED"}) {
		t.Fatalf("transitions %v", got)
	}
	f.wantCounter(EmbryonicRsts, 1)
	f.wantCounter(AttemptFails, 1)
}

func TestEstablishedPeerCloses(t *testing.T) {
	f := newFx(t, Linux())
	f.closeWait()
	r := f.do(Call{Op: OpRead, FD: f.fd})
	if r.Ret != 0 || r.Err != OK {
		t.Fatalf("read after FIN: %+v", r)
	}
}

func TestActiveCloseFullSequence(t *testing.T) {
	f := newFx(t, Linux())
	f.timeWait()
	want := []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->FIN_WAIT1",
		"FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"}
	id := f.conn().id
	if got := f.transitionsOf(id); !slices.Equal(got, want) {
		t.Fatalf("transitions %v", got)
	}
	f.at(sec(60) - 1)
	f.wantState(TimeWait)
	f.at(sec(60))
	f.wantState(Closed)
	f.wantCounter(TW, 1)
	if len(f.h.conns) != 0 || len(f.h.ports) != 1 { // only the listener holds port 80
		t.Fatalf("leftovers: %d conns %d ports", len(f.h.conns), len(f.h.ports))
	}
}

func TestFinAckInFinWait1GoesStraightToTimeWait(t *testing.T) {
	f := newFx(t, WindowsClassic()) // the RFC's direct edge
	f.finWait1()
	f.send(wire.FIN|wire.ACK, "") // acks our FIN (ourNxt) and carries its own
	f.expect(exp{wire.ACK, 2, 2, 0})
	f.wantState(TimeWait)
	got := f.transitionsOf(f.conn().id)
	if got[len(got)-1] != "FIN_WAIT1->TIME_WAIT" {
		t.Fatalf("transitions %v", got)
	}
}

// Linux passes through FIN_WAIT2 at the same instant: tcp_rcv_state_process
// handles the ACK of our FIN, then tcp_fin the FIN.
func TestFinAckInFinWait1PassesFinWait2OnLinux(t *testing.T) {
	f := newFx(t, Linux())
	f.finWait1()
	f.send(wire.FIN|wire.ACK, "")
	f.expect(exp{wire.ACK, 2, 2, 0})
	f.wantState(TimeWait)
	got := f.transitionsOf(f.conn().id)
	if !slices.Equal(got[len(got)-2:], []string{"FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"}) {
		t.Fatalf("transitions %v", got)
	}
}

func TestSimultaneousClose(t *testing.T) {
	f := newFx(t, Linux())
	f.closing()
	f.send(wire.ACK, "") // now acks our FIN
	f.expectNothing()
	f.wantState(TimeWait)
	got := f.transitionsOf(f.conn().id)
	if !slices.Equal(got[len(got)-3:], []string{"ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->CLOSING", "CLOSING->TIME_WAIT"}) {
		t.Fatalf("transitions %v", got)
	}
}

func TestResetInEveryState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fx)
		err   Errno
	}{
		{"ESTABLISHED", (*fx).passive, ECONNRESET},
		{"FIN_WAIT1", (*fx).finWait1, OK},
		{"CLOSE_WAIT", (*fx).closeWait, EPIPE},
		{"CLOSING", (*fx).closing, OK},
		{"LAST_ACK", (*fx).lastAck, OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFx(t, Linux())
			tc.setup(f)
			f.out = nil
			c := f.conn()
			f.recv(f.mk(wire.RST, f.pNxt, 0, ""))
			f.expectNothing()
			if c.state != Closed {
				t.Fatalf("state %v after exact RST", c.state)
			}
			if tc.err != OK && c.err != tc.err {
				t.Fatalf("sk_err %v, want %v", c.err, tc.err)
			}
		})
	}
}

func TestResetAfterRead(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.recv(f.mk(wire.RST, f.pNxt, 0, ""))
	f.wantCounter(EstabResets, 1)
	r := f.do(Call{Op: OpRead, FD: f.fd})
	if r.Err != ECONNRESET {
		t.Fatalf("first read: %+v", r)
	}
	r = f.do(Call{Op: OpRead, FD: f.fd})
	if r.Err != OK || r.Ret != 0 {
		t.Fatalf("second read: %+v", r)
	}
	r = f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("x")})
	if r.Err != EPIPE {
		t.Fatalf("write: %+v", r)
	}
}

func TestLastAckCompletes(t *testing.T) {
	f := newFx(t, Linux())
	f.lastAck()
	f.send(wire.ACK, "")
	f.expectNothing()
	if f.conn() != nil {
		t.Fatal("connection survives LAST_ACK")
	}
	got := f.transitionsOf(f.ev[len(f.ev)-1].Sock)
	_ = got
	if !covered[[2]State{LastAck, Closed}] || !covered[[2]State{CloseWait, LastAck}] {
		t.Fatal("LAST_ACK transitions not seen")
	}
}

func TestLastAckRetransmitsFin(t *testing.T) {
	f := newFx(t, Linux())
	f.lastAck()
	f.after(sec(0.204))
	f.expect(exp{wire.FIN | wire.ACK, 1, 2, 0})
	f.after(sec(0.408))
	f.expect(exp{wire.FIN | wire.ACK, 1, 2, 0})
	f.wantCounter(RetransSegs, 2)
}

func TestHalfCloseKeepsReceiving(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpShutdown, FD: f.fd, How: ShutWR})
	f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
	f.send(wire.ACK, "")
	f.wantState(FinWait2)
	// A half-closed socket has no FIN_WAIT2 timer: it waits for the peer.
	f.after(10 * time.Minute)
	f.wantState(FinWait2)
	f.send(wire.PSH|wire.ACK, "still talking")
	f.expect(exp{wire.ACK, 2, 14, 0}) // quick ACK at the start of the data
	r := f.do(Call{Op: OpRead, FD: f.fd})
	if string(r.Data) != "still talking" {
		t.Fatalf("read %q", r.Data)
	}
	w := f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("x")})
	if w.Err != EPIPE {
		t.Fatalf("write after SHUT_WR: %+v", w)
	}
	f.send(wire.FIN|wire.ACK, "")
	f.expect(exp{wire.ACK, 2, 15, 0})
	f.wantState(TimeWait)
	r = f.do(Call{Op: OpRead, FD: f.fd})
	if r.Ret != 0 || r.Err != OK {
		t.Fatalf("read at EOF %+v", r)
	}
}

func TestOrphanFinWait2Expires(t *testing.T) {
	f := newFx(t, Linux())
	f.finWait2()
	start := f.h.Now()
	f.at(start + sec(60) - 1)
	f.wantState(FinWait2)
	f.at(start + sec(60))
	f.wantState(Closed)
	f.expectNothing() // Linux ends it silently
	e := f.ev[len(f.ev)-1]
	for i := len(f.ev) - 1; i >= 0; i-- {
		if f.ev[i].Kind == EvState {
			e = f.ev[i]
			break
		}
	}
	if e.From != FinWait2 || e.To != Closed || e.Cause.Kind != CauseTimer {
		t.Fatalf("last transition %v", e)
	}
}

func TestOrphanFinWait2RespectsFinTimeout(t *testing.T) {
	p := Linux()
	if err := p.Set("tcp_fin_timeout", "5"); err != nil {
		t.Fatal(err)
	}
	f := newFx(t, p)
	f.finWait2()
	f.after(sec(5))
	f.wantState(Closed)
}

func TestDataAfterCloseResets(t *testing.T) {
	// The server side of the close-wait-data-loss story: our program
	// closed, we sit in FIN_WAIT2 as an orphan, the peer writes.
	f := newFx(t, Linux())
	f.finWait2()
	f.send(wire.PSH|wire.ACK, "lost")
	if len(f.out) != 1 || f.out[0].Flags != wire.RST || f.out[0].Seq != f.usISS.Add(2) {
		t.Fatalf("want RST at our next seq:\n%s", f.dump())
	}
	f.wantState(Closed)
	// The remnant answers with TCP_TW_RST: no TCPAbortOnData (that counts
	// resets by full sockets, as in FIN_WAIT1 below).
	f.wantCounter(TCPAbortOnData, 0)
	if !f.hasNote("data arrived after close()") {
		t.Fatal("no explanation")
	}
}

func TestDataAfterCloseInFinWait1Resets(t *testing.T) {
	f := newFx(t, Linux())
	f.finWait1()
	f.recv(f.mk(wire.PSH|wire.ACK, f.pNxt, f.usISS.Add(1), "late"))
	if len(f.out) != 1 || f.out[0].Flags != wire.RST {
		t.Fatalf("want RST:\n%s", f.dump())
	}
	f.wantState(Closed)
	f.wantCounter(TCPAbortOnData, 1)
	if !covered[[2]State{FinWait1, Closed}] {
		t.Fatal("FIN_WAIT1 -> CLOSED not seen")
	}
}

func TestOrphanFinWait1GivesUp(t *testing.T) {
	f := newFx(t, Linux())
	f.finWait1()
	// The peer went silent. On this fast link the RTO is tcp_rto_min
	// (200 ms) plus the RTT, rounded up to a jiffy: 204 ms at HZ=250. An
	// orphan gets 8 retries (tcp_orphan_retries 0): a time budget of
	// 0.2 s * (2^9 - 1) = 102.2 s from the FIN, checked when the timer
	// fires, so the end comes at the ninth expiry, 204 ms * 511.
	var times []time.Duration
	for f.state() == FinWait1 && f.h.Now() < sec(300) {
		d, ok := f.h.NextDeadline()
		if !ok {
			t.Fatal("no timer")
		}
		f.at(d)
		for _, s := range f.out {
			if s.Flags&wire.FIN != 0 {
				times = append(times, f.h.Now())
			}
		}
		f.out = nil
	}
	var want []time.Duration
	for k := 1; k <= 8; k++ {
		want = append(want, time.Duration((1<<k)-1)*204*time.Millisecond)
	}
	if !slices.Equal(times, want) {
		t.Fatalf("FIN retransmissions at %v, want %v", times, want)
	}
	if f.h.Now() != 511*204*time.Millisecond {
		t.Fatalf("gave up at %v", f.h.Now())
	}
	f.wantCounter(TCPAbortOnTimeout, 1)
}

func TestClosingRetransmitsFin(t *testing.T) {
	f := newFx(t, Linux())
	f.closing()
	f.after(sec(0.204))
	f.expect(exp{wire.FIN | wire.ACK, 1, 2, 0})
}

func TestTimeWaitReacksRetransmittedFin(t *testing.T) {
	f := newFx(t, Linux())
	f.timeWait()
	f.at(sec(30))
	// The peer lost our last ACK and resends its FIN.
	f.recv(f.mk(wire.FIN|wire.ACK, f.pNxt.Add(-1), f.usISS.Add(2), ""))
	f.expect(exp{wire.ACK, 2, 2, 0})
	// Linux restarts the TIME_WAIT timer.
	f.at(sec(89))
	f.wantState(TimeWait)
	f.at(sec(90))
	f.wantState(Closed)
}

func TestTimeWaitAssassination(t *testing.T) {
	f := newFx(t, Linux())
	f.timeWait()
	f.recv(f.mk(wire.RST, f.pNxt, 0, ""))
	f.expectNothing()
	f.wantState(Closed)
	if !f.hasNote("TIME_WAIT assassination") {
		t.Fatal("no explanation")
	}
}

func TestTimeWaitIgnoresRSTWithRFC1337(t *testing.T) {
	p := Linux()
	p.RFC1337 = true
	f := newFx(t, p)
	f.timeWait()
	f.recv(f.mk(wire.RST, f.pNxt, 0, ""))
	f.wantState(TimeWait)
}

func TestTimeWaitNewSynReopens(t *testing.T) {
	f := newFx(t, Linux())
	f.timeWait()
	old := f.conn()
	// A new SYN with a higher sequence number reopens the 4-tuple.
	f.recv(f.mk(wire.SYN, f.pNxt.Add(100000), 0, ""))
	if len(f.out) != 1 || f.out[0].Flags != wire.SYN|wire.ACK {
		t.Fatalf("want SYN-ACK:\n%s", f.dump())
	}
	if f.out[0].Seq != old.sndNxt.Add(65537) {
		t.Fatalf("ISN %d, want old SND.NXT + 65537", f.out[0].Seq)
	}
	if c := f.conn(); c == nil || c == old || c.state != SynRecv {
		t.Fatal("no new request")
	}
	// An old SYN (lower sequence) is only re-ACKed.
	f2 := newFx(t, Linux())
	f2.timeWait()
	f2.recv(f2.mk(wire.SYN, peerISS, 0, ""))
	f2.expect(exp{wire.ACK, 2, 2, 0})
	f2.wantState(TimeWait)
}

func TestSynRecvTimesOut(t *testing.T) {
	f := newFx(t, Linux())
	f.synRecv()
	var times []time.Duration
	for f.conn() != nil {
		d, _ := f.h.NextDeadline()
		f.at(d)
		if len(f.out) > 0 {
			f.expect(exp{wire.SYN | wire.ACK, 0, 1, 0})
			times = append(times, f.h.Now())
		}
	}
	if want := []time.Duration{sec(1), sec(3), sec(7), sec(15), sec(31)}; !slices.Equal(times, want) {
		t.Fatalf("SYN-ACKs at %v, want %v", times, want)
	}
	if f.h.Now() != sec(63) {
		t.Fatalf("request dropped at %v, want 63s", f.h.Now())
	}
	f.wantCounter(TCPTimeouts, 6)
	f.wantCounter(RetransSegs, 5)
}

func TestSynSentTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linear int
		want   []float64
		fail   float64
	}{
		{"classic", 0, []float64{1, 3, 7, 15, 31, 63}, 127},
		{"linear4", 4, []float64{1, 2, 3, 4, 5, 7, 11, 19, 35, 67}, 131},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Linux()
			p.SynLinearTimeouts = tc.linear
			f := newFx(t, p)
			fd := f.h.Socket()
			r := f.do(Call{Op: OpConnect, FD: fd, Addr: netip.MustParseAddrPort("10.0.0.1:80")})
			f.out = nil
			var times []float64
			for f.h.fds[fd].state == SynSent {
				d, _ := f.h.NextDeadline()
				f.at(d)
				for _, s := range f.out {
					if s.Flags != wire.SYN {
						t.Fatalf("unexpected %s", s.String())
					}
					times = append(times, f.h.Now().Seconds())
				}
				f.out = nil
			}
			if !slices.Equal(times, tc.want) {
				t.Fatalf("SYN retransmissions at %v, want %v", times, tc.want)
			}
			if f.h.Now().Seconds() != tc.fail {
				t.Fatalf("failed at %v", f.h.Now())
			}
			if d := f.callDone(r.ID); d == nil || d.Err != ETIMEDOUT {
				t.Fatalf("connect: %+v", d)
			}
			rs, fail := synTimeline(&p)
			var rsSec []float64
			for _, x := range rs {
				rsSec = append(rsSec, x.Seconds())
			}
			if !slices.Equal(rsSec, tc.want) || fail.Seconds() != tc.fail {
				t.Fatalf("synTimeline %v %v", rs, fail)
			}
		})
	}
}

func TestWindowsClassicTimeline(t *testing.T) {
	f := newFx(t, WindowsClassic())
	f.synRecv()
	var times []time.Duration
	for f.conn() != nil {
		d, _ := f.h.NextDeadline()
		f.at(d)
		if len(f.out) > 0 {
			times = append(times, f.h.Now())
			f.out = nil
		}
	}
	if want := []time.Duration{sec(3), sec(9), sec(21), sec(45)}; !slices.Equal(times, want) {
		t.Fatalf("SYN-ACK retransmissions at %v", times)
	}
	if f.h.Now() != sec(93) {
		t.Fatalf("dropped at %v, want 93s", f.h.Now())
	}
}

// synTimeline computes, apart from the engine, when SYNs are retransmitted
// and when connect gives up: a second derivation the timer test checks the
// engine against.
func synTimeline(p *Profile) (retransmits []time.Duration, fail time.Duration) {
	rto, t := p.InitialRTO, time.Duration(0)
	max := p.SynRetries + p.SynLinearTimeouts
	for i := 0; ; i++ {
		t += rto
		if i >= max {
			return retransmits, t
		}
		retransmits = append(retransmits, t)
		if i+1 > p.SynLinearTimeouts {
			rto = min(rto*2, p.MaxRTO)
		}
	}
}
