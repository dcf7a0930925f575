package tcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// Regression tests for differences from Linux found in review.

func TestReconnectAfterRefusedWorks(t *testing.T) {
	f := newFx(t, Linux())
	f.connectFrom(80, false)
	f.recv(f.mk(wire.RST|wire.ACK, 0, f.usISS.Add(1), ""))
	// Try again on the same socket; this time the peer answers.
	r := f.do(Call{Op: OpConnect, FD: f.fd, Addr: f.peer})
	if !r.Pending {
		t.Fatalf("second connect: %+v", r)
	}
	f.usISS = f.out[0].Seq
	f.out = nil
	f.recv(f.mk(wire.SYN|wire.ACK, f.pNxt, f.usISS.Add(1), ""))
	f.pNxt = f.pNxt.Add(1)
	f.out = nil
	if d := f.callDone(r.ID); d == nil || d.Err != OK {
		t.Fatalf("connect: %+v", d)
	}
	if w := f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("ok")}); w.Err != OK || w.Ret != 2 {
		t.Fatalf("write after reconnect: %+v", w)
	}
	if rd := f.do(Call{Op: OpRead, FD: f.fd, NonBlock: true}); rd.Err != EAGAIN {
		t.Fatalf("read after reconnect: %+v", rd)
	}
}

func TestConnectErrnoFollowsSocketState(t *testing.T) {
	f := newFx(t, Linux())
	fd := f.h.Socket()
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true})
	syn := f.out[0]
	f.out = nil
	f.recv(wire.Segment{Src: peerAddr, Dst: usAddr, SrcPort: 80, DstPort: syn.SrcPort, Seq: 9, Ack: syn.Seq.Add(1),
		Flags: wire.SYN | wire.ACK, Window: 65535})
	// The classic way to collect a non-blocking connect: call it again.
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != OK || r.Ret != 0 {
		t.Fatalf("connect after the handshake: %+v", r)
	}
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EISCONN {
		t.Fatalf("third connect: %+v", r)
	}
	// Once connected, a reset connection still answers EISCONN.
	f.recv(wire.Segment{Src: peerAddr, Dst: usAddr, SrcPort: 80, DstPort: syn.SrcPort, Seq: 10, Flags: wire.RST})
	f.do(Call{Op: OpRead, FD: fd})
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EISCONN {
		t.Fatalf("connect on a reset connection: %+v", r)
	}
	// A failed non-blocking connect whose error a read took: ECONNABORTED.
	g := newFx(t, Linux())
	fd = g.h.Socket()
	g.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true})
	syn = g.out[0]
	g.recv(wire.Segment{Src: peerAddr, Dst: usAddr, SrcPort: 80, DstPort: syn.SrcPort, Ack: syn.Seq.Add(1), Flags: wire.RST | wire.ACK})
	if r := g.do(Call{Op: OpRead, FD: fd}); r.Err != ECONNREFUSED {
		t.Fatalf("read: %+v", r)
	}
	if r := g.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != ECONNABORTED {
		t.Fatalf("connect after the error was read: %+v", r)
	}
}

func TestShutdownDuringConnectDisconnects(t *testing.T) {
	f := newFx(t, Linux())
	fd := f.h.Socket()
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst})
	f.out = nil
	if s := f.do(Call{Op: OpShutdown, FD: fd, How: ShutRD}); s.Err != OK {
		t.Fatalf("shutdown: %+v", s)
	}
	f.expectNothing()
	if d := f.callDone(r.ID); d == nil || d.Err != ECONNRESET {
		t.Fatalf("blocked connect: %+v", d)
	}
	if c := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); c.Err != EINPROGRESS {
		t.Fatalf("connect again: %+v", c)
	}
	f.wantCounter(AttemptFails, 0) // tcp_disconnect does not count it
}

func TestPAWSFailingFinalAckKeepsRequest(t *testing.T) {
	f := newFx(t, Linux())
	f.opts = true
	f.synRecv()
	ack := f.mk(wire.ACK, f.pNxt, f.usISS.Add(1), "")
	ack.Options = wire.Options{HasTimestamps: true, TSVal: 50} // older than the SYN's 100
	f.recv(ack)
	c := f.conn()
	if c == nil || !c.req || c.state != SynRecv || c.rtxAt == never {
		t.Fatalf("request after a PAWS failure: %+v", c)
	}
	if len(f.listenerLst().acceptq) != 0 {
		t.Fatal("a half-open connection reached the accept queue")
	}
	f.wantCounter(PAWSEstabRejected, 1)
}

func TestBoundConnectTakesOverTimeWaitWithTimestamps(t *testing.T) {
	f := newFx(t, Linux())
	f.opts = true
	f.us = netip.AddrPortFrom(usAddr, 5555)
	f.peer = netip.AddrPortFrom(peerAddr, 80)
	f.fd = f.h.Socket()
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptReuseAddr, On: true}})
	f.do(Call{Op: OpBind, FD: f.fd, Port: 5555})
	f.do(Call{Op: OpConnect, FD: f.fd, Addr: f.peer})
	f.usISS = f.out[0].Seq
	f.out = nil
	synack := f.mk(wire.SYN|wire.ACK, f.pNxt, f.usISS.Add(1), "")
	synack.Options = wire.Options{HasMSS: true, MSS: 1460, HasTimestamps: true, TSVal: 100}
	f.recv(synack)
	f.pNxt = f.pNxt.Add(1)
	f.do(Call{Op: OpClose, FD: f.fd})
	fin := f.mk(wire.FIN|wire.ACK, f.pNxt, f.usISS.Add(2), "")
	fin.Options = wire.Options{HasTimestamps: true, TSVal: 101}
	f.recv(fin)
	f.wantState(TimeWait)
	old := f.conn()
	f.out = nil
	fd := f.h.Socket()
	f.do(Call{Op: OpSetOption, FD: fd, Option: Option{Kind: OptReuseAddr, On: true}})
	f.do(Call{Op: OpBind, FD: fd, Port: 5555})
	r := f.do(Call{Op: OpConnect, FD: fd, Addr: f.peer, NonBlock: true})
	if r.Err != EINPROGRESS {
		t.Fatalf("connect over TIME_WAIT with timestamps: %v", r.Err)
	}
	if len(f.out) != 1 || f.out[0].Seq != old.sndNxt.Add(65537) {
		t.Fatalf("new ISN, want old SND.NXT + 65537:\n%s", f.dump())
	}
}

func TestOldAckWithFinInFinWait1(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("abc")})
	f.recv(f.mk(wire.ACK, f.pNxt, f.usISS.Add(4), ""))
	f.do(Call{Op: OpClose, FD: f.fd})
	f.out = nil
	// A FIN that was sent before the peer saw all of our data, arriving
	// late with an old ACK (SND.UNA - 2): since Linux 6.10 the FIN is still
	// taken (simultaneous close), not answered with a challenge ACK.
	f.recv(f.mk(wire.FIN|wire.ACK, f.pNxt, f.usISS.Add(2), ""))
	f.wantState(Closing)
	f.wantCounter(TCPChallengeACK, 0)
}

func TestLingerZeroAfterFinSentIsSilent(t *testing.T) {
	f := newFx(t, Linux())
	f.closeWait()
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptLinger, On: true}})
	f.do(Call{Op: OpShutdown, FD: f.fd, How: ShutWR}) // our FIN leaves: LAST_ACK
	f.expect(exp{wire.FIN | wire.ACK, 1, 2, 0})
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expectNothing()
	f.wantState(Closed)
}

func TestCountersLikeLinux(t *testing.T) {
	f := newFx(t, Linux())
	f.closeWait()
	f.wantCounter(CurrEstab, 1) // CLOSE_WAIT counts since 6.10
	f.do(Call{Op: OpClose, FD: f.fd})
	f.wantCounter(CurrEstab, 0)

	g := newFx(t, Linux())
	g.finWait2() // an orphan: a FIN_WAIT2 remnant is made and counted
	g.wantCounter(TW, 1)
	g.send(wire.FIN|wire.ACK, "")
	g.wantCounter(TW, 1) // becoming TIME_WAIT does not count again
	g.at(sec(200))
	g.wantCounter(TW, 1)

	h := newFx(t, Linux())
	h.synRecv()
	h.at(sec(63)) // the request times out
	h.wantCounter(AttemptFails, 0)

	// Retransmissions are not in OutSegs.
	k := newFx(t, Linux())
	k.passive()
	out := k.counter(OutSegs)
	k.do(Call{Op: OpWrite, FD: k.fd, Data: []byte("x")})
	k.after(sec(0.204))
	k.wantCounter(RetransSegs, 1)
	k.wantCounter(OutSegs, out+1)
}

func TestResetAtPeerFinInCloseWait(t *testing.T) {
	f := newFx(t, Linux())
	f.closeWait()
	f.recv(f.mk(wire.RST, f.pNxt.Add(-1), 0, "")) // the FIN's own number
	f.wantState(Closed)
}

func TestKeepIdleCountsElapsedTime(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptKeepAlive, On: true}})
	f.at(sec(100))
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptKeepIdle, Dur: 150 * time.Second}})
	f.at(sec(150) - 1)
	f.expectNothing()
	f.at(sec(150))
	f.expect(exp{wire.ACK, 0, 1, 0})
}
