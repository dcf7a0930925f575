package tcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// clientSeg builds a segment from a numbered client (10.0.1.N:40000+N).
func clientSeg(n int, flags wire.Flags, seq, ack wire.Seq) wire.Segment {
	return wire.Segment{Src: netip.AddrFrom4([4]byte{10, 0, 1, byte(n)}), Dst: usAddr,
		SrcPort: uint16(40000 + n), DstPort: usPort, Seq: seq, Ack: ack, Flags: flags, Window: 65535, TTL: 64}
}

func clientISS(n int) wire.Seq { return wire.Seq(1000000 * n) }

// synFrom sends client n's SYN and returns our SYN-ACK, if any.
func (f *fx) synFrom(n int) *wire.Segment {
	f.t.Helper()
	f.out = nil
	f.recv(clientSeg(n, wire.SYN, clientISS(n), 0))
	for _, s := range f.out {
		if s.Flags == wire.SYN|wire.ACK && s.DstPort == uint16(40000+n) {
			f.out = nil
			return &s
		}
	}
	f.out = nil
	return nil
}

// ackFrom sends client n's final ACK for a SYN-ACK.
func (f *fx) ackFrom(n int, synack *wire.Segment) {
	f.t.Helper()
	f.recv(clientSeg(n, wire.ACK, clientISS(n).Add(1), synack.Seq.Add(1)))
}

func (f *fx) listenerInfo() SocketInfo {
	f.t.Helper()
	for _, s := range f.h.Snapshot() {
		if s.State == Listen {
			return s
		}
	}
	f.t.Fatal("no listener")
	return SocketInfo{}
}

func TestAcceptQueueHoldsBacklogPlusOne(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(2)
	for n := 1; n <= 3; n++ {
		sa := f.synFrom(n)
		if sa == nil {
			t.Fatalf("client %d: no SYN-ACK", n)
		}
		f.ackFrom(n, sa)
	}
	if li := f.listenerInfo(); li.RecvQ != 3 || li.SendQ != 2 {
		t.Fatalf("ss shows Recv-Q %d Send-Q %d, want 3 and 2", li.RecvQ, li.SendQ)
	}
	// Full: a new SYN is dropped and counted.
	if sa := f.synFrom(4); sa != nil {
		t.Fatal("SYN answered while the accept queue is full")
	}
	f.wantCounter(ListenOverflows, 1)
	f.wantCounter(ListenDrops, 1)
	// accept() drains in arrival order.
	r := f.do(Call{Op: OpAccept, FD: f.lfd})
	c := f.h.fds[FD(r.Ret)]
	if c.raddr != netip.AddrFrom4([4]byte{10, 0, 1, 1}) {
		t.Fatalf("first accepted is %v", c.raddr)
	}
	if sa := f.synFrom(4); sa == nil {
		t.Fatal("SYN refused after an accept made room")
	}
}

// The story of SEEDS.md's "fake ESTABLISHED": the client completed the
// handshake, the server dropped the final ACK because its accept queue was
// full, and keeps resending its SYN-ACK until the program makes room.
func TestFinalAckDroppedWhenAcceptQueueFull(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(2) // the accept queue holds 3, the SYN queue 2 requests
	for n := 1; n <= 2; n++ {
		f.ackFrom(n, f.synFrom(n))
	}
	sa3 := f.synFrom(3)
	sa4 := f.synFrom(4)
	f.ackFrom(4, sa4) // queue now 3: full
	f.ackFrom(3, sa3) // dropped
	f.wantCounter(ListenOverflows, 1)
	f.wantCounter(ListenDrops, 1)
	if !f.hasNote("final ACK dropped") {
		t.Fatal("no explanation")
	}
	req := f.h.conns[tuple{laddr: usAddr, raddr: netip.AddrFrom4([4]byte{10, 0, 1, 3}), lport: usPort, rport: 40003}]
	if req == nil || req.state != SynRecv || !req.req || !req.acked {
		t.Fatalf("request after dropped ACK: %+v", req)
	}
	// The SYN-ACK comes again after 1 s; the client (ESTABLISHED) answers
	// with an ACK, dropped again.
	f.at(sec(1))
	if len(f.out) != 1 || f.out[0].Flags != wire.SYN|wire.ACK || f.out[0].DstPort != 40003 {
		t.Fatalf("want SYN-ACK retransmission:\n%s", f.dump())
	}
	f.out = nil
	f.ackFrom(3, sa3)
	f.wantCounter(ListenOverflows, 2)
	// The program accepts one; the next SYN-ACK's ACK gets in.
	f.do(Call{Op: OpAccept, FD: f.lfd})
	f.at(sec(3))
	f.out = nil
	f.ackFrom(3, sa3)
	if req.state != Established || !req.inAccept {
		t.Fatalf("request state %v in queue %v", req.state, req.inAccept)
	}
	if li := f.listenerInfo(); li.RecvQ != 3 {
		t.Fatalf("Recv-Q %d", li.RecvQ)
	}
}

func TestAbortOnOverflow(t *testing.T) {
	p := Linux()
	if err := p.Set("tcp_abort_on_overflow", "1"); err != nil {
		t.Fatal(err)
	}
	f := newFx(t, p)
	f.listen(1) // the accept queue holds 2, the SYN queue 2 requests
	f.ackFrom(1, f.synFrom(1))
	sa2 := f.synFrom(2)
	f.ackFrom(3, f.synFrom(3)) // the accept queue is now full
	f.out = nil
	f.ackFrom(2, sa2)
	if len(f.out) != 1 || f.out[0].Flags != wire.RST || f.out[0].Seq != sa2.Seq.Add(1) {
		t.Fatalf("want RST:\n%s", f.dump())
	}
	f.wantCounter(ListenOverflows, 1)
	f.wantCounter(EmbryonicRsts, 1)
}

func TestBacklogCappedAtSomaxconn(t *testing.T) {
	p := Linux()
	p.Somaxconn = 3
	f := newFx(t, p)
	f.listen(1000)
	if li := f.listenerInfo(); li.SendQ != 3 {
		t.Fatalf("backlog %d, want 3", li.SendQ)
	}
}

func TestRetransmittedSynGetsSynAckAgain(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(5)
	sa := f.synFrom(1)
	sa2 := f.synFrom(1)
	if sa2 == nil || sa2.Seq != sa.Seq {
		t.Fatal("SYN retransmission not answered with the same SYN-ACK")
	}
	f.wantCounter(RetransSegs, 1)
	// A wrong ACK number: RST at that number.
	f.recv(clientSeg(1, wire.ACK, clientISS(1).Add(1), sa.Seq.Add(7)))
	if len(f.out) != 1 || f.out[0].Flags != wire.RST || f.out[0].Seq != sa.Seq.Add(7) {
		t.Fatalf("want RST:\n%s", f.dump())
	}
}

func TestSynCookies(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(2)
	for n := 1; n <= 3; n++ {
		f.synFrom(n) // the SYN queue holds backlog+1 requests: now full
	}
	syn := clientSeg(4, wire.SYN, clientISS(4), 0)
	syn.Options = wire.Options{HasMSS: true, MSS: 1460, SACKPermitted: true, HasTimestamps: true, TSVal: 5000, HasWScale: true, WScale: 9}
	f.recv(syn)
	if len(f.out) != 1 || f.out[0].Flags != wire.SYN|wire.ACK {
		t.Fatalf("want a cookie SYN-ACK:\n%s", f.dump())
	}
	ck := f.out[0]
	f.out = nil
	f.wantCounter(SyncookiesSent, 1)
	f.wantCounter(TCPReqQFullDoCookies, 1)
	if len(f.listenerLst().reqs) != 3 {
		t.Fatal("a cookie created state")
	}
	if !ck.Options.HasWScale || !ck.Options.SACKPermitted || ck.Options.MSS != 1460 || !ck.Options.HasTimestamps {
		t.Fatalf("cookie options %s", ck.Options.String())
	}
	// A forged ACK fails.
	f.recv(clientSeg(5, wire.ACK, 77, 12345))
	f.wantCounter(SyncookiesFailed, 1)
	if len(f.out) != 1 || f.out[0].Flags != wire.RST {
		t.Fatalf("want RST for a bad cookie:\n%s", f.dump())
	}
	f.out = nil
	// The genuine ACK, a second later, carries data.
	f.at(sec(1))
	ack := clientSeg(4, wire.ACK|wire.PSH, clientISS(4).Add(1), ck.Seq.Add(1))
	ack.Options = wire.Options{HasTimestamps: true, TSVal: 6000, TSEcr: ck.Options.TSVal}
	ack.Payload = []byte("GET /")
	f.recv(ack)
	f.wantCounter(SyncookiesRecv, 1)
	c := f.h.conns[tuple{laddr: usAddr, raddr: ack.Src, lport: usPort, rport: ack.SrcPort}]
	if c == nil || c.state != Established || !c.inAccept {
		t.Fatalf("no connection from the cookie: %+v", c)
	}
	if !c.wsOK || c.sndWScale != 9 || !c.sackOK || !c.tsOK || c.mss != 1448 {
		t.Fatalf("options rebuilt wrong: ws %v/%d sack %v ts %v mss %d", c.wsOK, c.sndWScale, c.sackOK, c.tsOK, c.mss)
	}
	if got := c.rcv.bytes(); string(got) != "GET /" {
		t.Fatalf("data %q", got)
	}
	want := []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED"}
	if got := f.transitionsOf(c.id); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("transitions %v", got)
	}
}

func (f *fx) listenerLst() *listener { return f.h.fds[f.lfd].lst }

func TestSynCookieExpires(t *testing.T) {
	p := Linux()
	p.Syncookies = 2 // always
	f := newFx(t, p)
	f.listen(5)
	sa := f.synFrom(1)
	if sa == nil || len(f.listenerLst().reqs) != 0 {
		t.Fatal("tcp_syncookies=2 must answer every SYN with a cookie")
	}
	// Cookies live two one-minute periods; after three minutes the
	// listener no longer checks ACKs at all and resets them.
	f.at(3 * time.Minute)
	f.ackFrom(1, sa)
	f.wantCounter(SyncookiesRecv, 0)
	if len(f.out) != 1 || f.out[0].Flags != wire.RST {
		t.Fatalf("want RST:\n%s", f.dump())
	}
	// A fresh cookie checked 130 s later (beyond its two periods, within
	// the listener's window) fails.
	f.out = nil
	sa = f.synFrom(2)
	f.after(130 * time.Second)
	f.synFrom(3) // keeps the listener's overflow stamp recent
	f.ackFrom(2, sa)
	f.wantCounter(SyncookiesFailed, 1)
}

func TestSyncookiesOffDropsWhenSynQueueFull(t *testing.T) {
	p := Linux()
	p.Syncookies = 0
	f := newFx(t, p)
	f.listen(2)
	for n := 1; n <= 3; n++ {
		if f.synFrom(n) == nil {
			t.Fatalf("SYN %d dropped", n)
		}
	}
	if sa := f.synFrom(4); sa != nil {
		t.Fatal("answered with cookies off")
	}
	f.wantCounter(TCPReqQFullDrop, 1)
	f.wantCounter(ListenDrops, 1)
}

func TestMaxSynBacklogWithoutCookies(t *testing.T) {
	p := Linux()
	p.Syncookies = 0
	p.MaxSynBacklog = 8
	f := newFx(t, p)
	f.listen(100)
	answered := 0
	for n := 1; n <= 10; n++ {
		if f.synFrom(n) != nil {
			answered++
		}
	}
	// The last quarter of tcp_max_syn_backlog is kept free: 7 requests.
	if answered != 7 {
		t.Fatalf("answered %d SYNs, want 7", answered)
	}
}

// Linux keeps half of the SYN queue for young requests: when a full queue
// holds only old ones, their SYN-ACK retries are cut down to 2.
func TestSynQueuePruning(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(16)
	for n := 1; n <= 16; n++ {
		if f.synFrom(n) == nil {
			t.Fatal("SYN dropped")
		}
	}
	f.at(sec(8))
	if n := len(f.listenerLst().reqs); n != 8 {
		t.Fatalf("%d requests left at 8 s, want 8", n)
	}
	f.at(sec(62))
	if n := len(f.listenerLst().reqs); n != 8 {
		t.Fatalf("%d requests left at 62 s", n)
	}
	f.at(sec(63))
	if n := len(f.listenerLst().reqs); n != 0 {
		t.Fatalf("%d requests left at 63 s", n)
	}
}

func TestListenerCloseResetsUnaccepted(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(5)
	sa := f.synFrom(1)
	f.ackFrom(1, sa)
	f.synFrom(2) // half-open
	f.out = nil
	f.do(Call{Op: OpClose, FD: f.lfd})
	if len(f.out) != 1 || f.out[0].Flags != wire.RST|wire.ACK || f.out[0].DstPort != 40001 {
		t.Fatalf("want one RST to the unaccepted client:\n%s", f.dump())
	}
	if len(f.h.conns) != 0 {
		t.Fatalf("%d connections left", len(f.h.conns))
	}
	// A late ACK from the half-open client finds no socket.
	f.out = nil
	f.recv(clientSeg(2, wire.ACK, clientISS(2).Add(1), 5))
	if len(f.out) != 1 || f.out[0].Flags != wire.RST {
		t.Fatalf("want RST:\n%s", f.dump())
	}
}

func TestBlockingAcceptWakes(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(5)
	r := f.do(Call{Op: OpAccept, FD: f.lfd})
	if !r.Pending {
		t.Fatal("accept did not block")
	}
	nb := f.do(Call{Op: OpAccept, FD: f.lfd, NonBlock: true})
	if nb.Err != EAGAIN {
		t.Fatalf("non-blocking accept while another blocks: %v", nb.Err)
	}
	sa := f.synFrom(1)
	f.ackFrom(1, sa)
	d := f.callDone(r.ID)
	if d == nil || d.Err != OK || d.Ret < 3 {
		t.Fatalf("accept: %+v", d)
	}
}

func TestResetWhileInAcceptQueue(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(5)
	sa := f.synFrom(1)
	f.ackFrom(1, sa)
	f.recv(clientSeg(1, wire.RST, clientISS(1).Add(1), 0))
	// Linux still hands the connection out; its first read reports the
	// reset.
	r := f.do(Call{Op: OpAccept, FD: f.lfd, NonBlock: true})
	if r.Err != OK {
		t.Fatalf("accept: %v", r.Err)
	}
	if rd := f.do(Call{Op: OpRead, FD: FD(r.Ret)}); rd.Err != ECONNRESET {
		t.Fatalf("read: %+v", rd)
	}
	f.do(Call{Op: OpClose, FD: FD(r.Ret)})
	if len(f.h.conns) != 0 {
		t.Fatal("connection not freed")
	}
}

func TestListenerCloseFreesResetChild(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(5)
	f.ackFrom(1, f.synFrom(1))
	f.recv(clientSeg(1, wire.RST, clientISS(1).Add(1), 0))
	f.do(Call{Op: OpClose, FD: f.lfd})
	if len(f.h.conns) != 0 || len(f.h.ports) != 0 || len(f.h.timers) != 0 {
		t.Fatalf("leftovers: %d conns, %d ports, %d timers", len(f.h.conns), len(f.h.ports), len(f.h.timers))
	}
}

func TestCookieSynAckOffersOurMSS(t *testing.T) {
	p := Linux()
	p.Syncookies = 2
	f := newFx(t, p)
	f.listen(5)
	syn := clientSeg(1, wire.SYN, clientISS(1), 0)
	syn.Options = wire.Options{HasMSS: true, MSS: 1300}
	f.recv(syn)
	if len(f.out) != 1 || f.out[0].Options.MSS != 1460 {
		t.Fatalf("want our MSS 1460 in the cookie SYN-ACK:\n%s", f.dump())
	}
}

func TestBacklogZeroStillAdmitsOne(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(0)
	sa := f.synFrom(1)
	if sa == nil || len(f.listenerLst().reqs) != 1 {
		t.Fatal("listen(fd, 0) refuses the first request")
	}
	f.ackFrom(1, sa)
	if li := f.listenerInfo(); li.RecvQ != 1 {
		t.Fatalf("Recv-Q %d", li.RecvQ)
	}
	g := newFx(t, Linux())
	g.listen(-1)
	if li := g.listenerInfo(); li.SendQ != 4096 {
		t.Fatalf("listen(fd, -1): backlog %d, want somaxconn", li.SendQ)
	}
}
