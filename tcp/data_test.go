package tcp

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// passiveOpts is passive() with a peer that offers Linux's options
// (MSS 1460, SACK, timestamps, window scale 7).
func (f *fx) passiveOpts() {
	f.t.Helper()
	f.opts = true
	f.passive()
}

func TestSendSegmentsAtMSS(t *testing.T) {
	f := newFx(t, Linux())
	f.passive() // the peer sent no MSS option: 536
	f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, 3000)})
	segs := f.expect(
		exp{wire.ACK, 1, 1, 536}, exp{wire.ACK, 537, 1, 536}, exp{wire.ACK, 1073, 1, 536},
		exp{wire.ACK, 1609, 1, 536}, exp{wire.ACK, 2145, 1, 536}, exp{wire.ACK | wire.PSH, 2681, 1, 320})
	_ = segs
	f.send(wire.ACK, "")
	if c := f.conn(); c.sndUna != c.sndMax || c.snd.Len() != 0 {
		t.Fatal("not everything acknowledged")
	}
}

func TestReceiveAndEchoWithOptions(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	c := f.conn()
	if !c.tsOK || !c.sackOK || !c.wsOK || c.mss != 1448 {
		t.Fatalf("negotiated ts %v sack %v ws %v mss %d", c.tsOK, c.sackOK, c.wsOK, c.mss)
	}
	f.send(wire.PSH|wire.ACK, "ping")
	segs := f.expect(exp{wire.ACK, 1, 5, 0})
	if !segs[0].Options.HasTimestamps || segs[0].Window != 502 {
		t.Fatalf("ACK %s", segs[0].String())
	}
	r := f.do(Call{Op: OpRead, FD: f.fd})
	f.do(Call{Op: OpWrite, FD: f.fd, Data: r.Data})
	f.expect(exp{wire.PSH | wire.ACK, 1, 5, 4})
}

func TestRetransmissionBackoffAndGiveUp(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	rd := f.do(Call{Op: OpRead, FD: f.fd})
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("hello")})
	f.expect(exp{wire.PSH | wire.ACK, 1, 1, 5})
	var times []time.Duration
	for f.state() == Established {
		d, _ := f.h.NextDeadline()
		f.at(d)
		for _, s := range f.out {
			if len(s.Payload) != 5 || s.Seq != f.usISS.Add(1) {
				t.Fatalf("retransmission %s", s.String())
			}
			times = append(times, f.h.Now())
		}
		f.out = nil
	}
	// RTO 204 ms doubling, capped at TCP_RTO_MAX (120 s); tcp_retries2 15
	// is a budget of 924.6 s, reached at the 16th expiry.
	var want []time.Duration
	rto, at := 204*time.Millisecond, time.Duration(0)
	for i := 0; i < 15; i++ {
		at += rto
		want = append(want, at)
		rto = min(2*rto, 120*time.Second)
	}
	if !slices.Equal(times, want) {
		t.Fatalf("retransmissions at\n %v\nwant\n %v", times, want)
	}
	if f.h.Now() != at+rto {
		t.Fatalf("gave up at %v, want %v", f.h.Now(), at+rto)
	}
	if d := f.callDone(rd.ID); d == nil || d.Err != ETIMEDOUT {
		t.Fatalf("blocked read: %+v", d)
	}
	f.wantCounter(RetransSegs, 15)
	f.wantCounter(TCPTimeouts, 16)
	f.wantCounter(TCPAbortOnTimeout, 1)
}

func TestRTOFromRTT(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("x")})
	f.out = nil
	f.after(50 * time.Millisecond)
	f.send(wire.ACK, "")
	c := f.conn()
	// The first sample came from the handshake (0, counted as 1 us); the
	// second is 50 ms. RFC 6298: SRTT = 7/8 * 1 us + 50 ms / 8 = 6.250875
	// ms; RTTVAR = 3/4 * 0.5 us + 1/4 * 49.999 ms; RTO = SRTT + max(4
	// RTTVAR, 200 ms) = 206.25 ms, rounded up to a 4 ms jiffy: 208 ms.
	if c.srtt != 6250875*time.Nanosecond {
		t.Fatalf("srtt %v", c.srtt)
	}
	if c.rto != 208*time.Millisecond {
		t.Fatalf("rto %v", c.rto)
	}
}

func TestDelayedAckAfterQuickAcks(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	// The first 16 data segments are ACKed at once (TCP_MAX_QUICKACKS).
	for i := 0; i < 16; i++ {
		f.after(100 * time.Millisecond)
		f.send(wire.PSH|wire.ACK, "x")
		if len(f.out) != 1 {
			t.Fatalf("segment %d: want an immediate ACK", i)
		}
		f.out = nil
	}
	f.after(100 * time.Millisecond)
	f.send(wire.PSH|wire.ACK, "x")
	f.expectNothing()
	f.after(40*time.Millisecond - 1)
	f.expectNothing()
	f.after(1)
	f.expect(exp{wire.ACK, 1, 18, 0})
	f.wantCounter(DelayedACKs, 1)
	// Two full-sized segments are ACKed at once.
	f.send(wire.ACK, strings.Repeat("a", 536))
	f.expectNothing()
	f.send(wire.ACK, strings.Repeat("b", 536))
	f.expect(exp{wire.ACK, 1, 18 + 1072, 0})
}

func TestDelayedAckOfFinWithAFastClose(t *testing.T) {
	// After data, the ACK of a FIN waits 40 ms (pingpong); a program that
	// closes within that time sends FIN,ACK together: a 3-segment close.
	f := newFx(t, Linux())
	f.passive()
	f.send(wire.PSH|wire.ACK, "Hutu")
	f.out = nil
	f.do(Call{Op: OpRead, FD: f.fd})
	f.send(wire.FIN|wire.ACK, "")
	f.expectNothing()
	f.after(10 * time.Millisecond)
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expect(exp{wire.FIN | wire.ACK, 1, 6, 0})
	f.wantState(LastAck)
}

func TestOutOfOrderDeliveredInOrderWithSACK(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	base := f.pNxt
	seg := func(off int, s string) wire.Segment {
		x := f.mk(wire.ACK, base.Add(off), f.ourNxt(), s)
		x.Options = wire.Options{HasTimestamps: true, TSVal: 200}
		return x
	}
	f.recv(seg(5, "world"))
	acks := f.expect(exp{wire.ACK, 1, 1, 0})
	if got := acks[0].Options.SACK; len(got) != 1 || got[0].Left != base.Add(5) || got[0].Right != base.Add(10) {
		t.Fatalf("SACK %v", got)
	}
	if r := f.do(Call{Op: OpRead, FD: f.fd, NonBlock: true}); r.Err != EAGAIN {
		t.Fatalf("out-of-order data readable: %+v", r)
	}
	f.recv(seg(0, "hello"))
	f.expect(exp{wire.ACK, 1, 11, 0})
	r := f.do(Call{Op: OpRead, FD: f.fd})
	if string(r.Data) != "helloworld" {
		t.Fatalf("read %q", r.Data)
	}
	// A duplicate is re-ACKed at once with a D-SACK block.
	f.recv(seg(0, "hello"))
	acks = f.expect(exp{wire.ACK, 1, 11, 0})
	if got := acks[0].Options.SACK; len(got) != 1 || got[0].Left != base || got[0].Right != base.Add(5) {
		t.Fatalf("D-SACK %v", got)
	}
	if r := f.do(Call{Op: OpRead, FD: f.fd, NonBlock: true}); r.Err != EAGAIN {
		t.Fatalf("duplicate delivered again: %+v", r)
	}
}

func TestOutOfOrderFin(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	base := f.pNxt
	f.recv(f.mk(wire.FIN|wire.ACK, base.Add(3), f.ourNxt(), "end"))
	f.wantState(Established)
	f.recv(f.mk(wire.ACK, base, f.ourNxt(), "the"))
	f.wantState(CloseWait)
	r := f.do(Call{Op: OpRead, FD: f.fd})
	if string(r.Data) != "theend" {
		t.Fatalf("read %q", r.Data)
	}
	if r := f.do(Call{Op: OpRead, FD: f.fd}); r.Ret != 0 || r.Err != OK {
		t.Fatalf("EOF: %+v", r)
	}
}

func TestZeroWindowAndWindowUpdate(t *testing.T) {
	p := Linux()
	p.RcvWindow = 4000
	f := newFx(t, p)
	f.passive()
	chunk := strings.Repeat("z", 536)
	var last wire.Segment
	for i := 0; i < 8; i++ {
		f.send(wire.ACK, chunk)
		if len(f.out) > 0 {
			last = f.out[len(f.out)-1]
		}
		f.out = nil
	}
	f.after(time.Second)
	if len(f.out) > 0 {
		last = f.out[len(f.out)-1]
	}
	f.out = nil
	if last.Window != 0 {
		t.Fatalf("window %d after filling the buffer, want 0", last.Window)
	}
	got := f.conn().rcv.Len()
	// More data is refused while the window is closed.
	f.recv(f.mk(wire.ACK, f.conn().rcvNxt, f.ourNxt(), "more"))
	f.expect(exp{wire.ACK, 1, int(f.conn().rcvNxt.Diff(peerISS)), 0})
	if f.conn().rcv.Len() != got {
		t.Fatal("data accepted into a zero window")
	}
	// Reading opens the window and announces it.
	f.do(Call{Op: OpRead, FD: f.fd})
	if len(f.out) != 1 || f.out[0].Window == 0 {
		t.Fatalf("want a window update:\n%s", f.dump())
	}
}

func TestPersistProbes(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	// The peer's window is closed.
	f.recv(wire.Segment{Src: f.peer.Addr(), Dst: f.us.Addr(), SrcPort: f.peer.Port(), DstPort: f.us.Port(),
		Seq: f.pNxt, Ack: f.ourNxt(), Flags: wire.ACK, Window: 0})
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("waiting")})
	f.expectNothing()
	f.after(204 * time.Millisecond)
	f.expect(exp{wire.ACK, 0, 1, 0}) // a zero-window probe
	f.after(408 * time.Millisecond)
	f.expect(exp{wire.ACK, 0, 1, 0})
	if info := f.conn().info(); info.Timer != "persist" {
		t.Fatalf("timer %q", info.Timer)
	}
	// The window opens.
	f.send(wire.ACK, "")
	f.expect(exp{wire.PSH | wire.ACK, 1, 1, 7})
	f.wantCounter(RetransSegs, 0)
}

func TestNagleHoldsSecondSmallWrite(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("one")})
	f.expect(exp{wire.PSH | wire.ACK, 1, 1, 3})
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("two")})
	f.expectNothing()
	f.recv(f.mk(wire.ACK, f.pNxt, f.usISS.Add(4), ""))
	f.expect(exp{wire.PSH | wire.ACK, 4, 1, 3})
	// TCP_NODELAY sends at once.
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptNoDelay, On: true}})
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("3")})
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("4")})
	f.expect(exp{wire.PSH | wire.ACK, 7, 1, 1}, exp{wire.PSH | wire.ACK, 8, 1, 1})
}

func TestFinPiggybacksOnHeldData(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("one")})
	f.out = nil
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("two")}) // held by Nagle
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expect(exp{wire.FIN | wire.PSH | wire.ACK, 4, 1, 3})
	f.wantState(FinWait1)
}

func TestFastRetransmit(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, 536*5)})
	f.out = nil
	// The first segment is lost; the next four arrive and produce
	// duplicate ACKs.
	for i := 0; i < 3; i++ {
		f.recv(f.mk(wire.ACK, f.pNxt, f.usISS.Add(1), ""))
	}
	f.expect(exp{wire.ACK, 1, 1, 536})
	f.wantCounter(RetransSegs, 1)
	f.recv(f.mk(wire.ACK, f.pNxt, f.usISS.Add(1+536*5), ""))
	if c := f.conn(); c.inRecovery || c.sndUna != c.sndMax {
		t.Fatal("recovery did not end")
	}
}

func TestBidirectionalStream(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	want := bytes.Repeat([]byte("0123456789"), 300)
	f.do(Call{Op: OpWrite, FD: f.fd, Data: want})
	var got []byte
	for _, s := range f.out {
		got = append(got, s.Payload...)
	}
	f.out = nil
	if !bytes.Equal(got, want[:len(got)]) || len(got) != 3000 {
		t.Fatalf("sent %d bytes", len(got))
	}
	f.recv(f.mk(wire.ACK|wire.PSH, f.pNxt, f.usISS.Add(1+3000), "thanks"))
	r := f.do(Call{Op: OpRead, FD: f.fd})
	if string(r.Data) != "thanks" {
		t.Fatalf("read %q", r.Data)
	}
	if info := f.conn().info(); info.SendQ != 0 || info.RecvQ != 0 {
		t.Fatalf("queues %d %d", info.RecvQ, info.SendQ)
	}
}

// Overlapping out-of-order segments with different bytes (crafted ones):
// where they overlap, the segment lowest in sequence gives the bytes, and
// one of the same start arriving later replaces it, as Linux's ofo queue
// does for these cases; in-order data beats what is held.
func TestOutOfOrderOverlapWhoseBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		segs []struct {
			off  int
			data string
		}
		want string
	}{
		{"later higher segment keeps the head of the earlier", []struct {
			off  int
			data string
		}{{10, "AAAAAAAAAA"}, {15, "BBBBBBBBBB"}, {0, "0123456789"}}, "0123456789AAAAAAAAAABBBBB"},
		{"later lower segment overwrites the tail it covers", []struct {
			off  int
			data string
		}{{15, "BBBBBBBBBB"}, {10, "AAAAAAAAAA"}, {0, "0123456789"}}, "0123456789AAAAAAAAAABBBBB"},
		{"same start: the later replaces", []struct {
			off  int
			data string
		}{{10, "AAAAA"}, {10, "BBBBBBB"}, {0, "0123456789"}}, "0123456789BBBBBBB"},
		{"inside an earlier one: ignored", []struct {
			off  int
			data string
		}{{10, "AAAAAAAAAA"}, {12, "BB"}, {0, "0123456789"}}, "0123456789AAAAAAAAAA"},
		{"in order beats held", []struct {
			off  int
			data string
		}{{5, "AAAAAAAAAA"}, {0, "0123456789"}}, "0123456789AAAAA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFx(t, Linux())
			f.passive()
			base := f.pNxt
			for _, s := range tc.segs {
				f.recv(f.mk(wire.ACK, base.Add(s.off), f.ourNxt(), s.data))
			}
			r := f.do(Call{Op: OpRead, FD: f.fd, NonBlock: true})
			if string(r.Data) != tc.want {
				t.Fatalf("read %q, want %q", r.Data, tc.want)
			}
		})
	}
}

// An idle connection gives its queues' arrays back within a second of
// virtual time; a busy one keeps them.
func TestIdleQueuesReleased(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.send(wire.ACK|wire.PSH, strings.Repeat("x", 1000))
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte(strings.Repeat("y", 1000))})
	f.after(10 * time.Millisecond)
	f.send(wire.ACK, "") // acknowledges our bytes: the send queue empties
	if r := f.do(Call{Op: OpRead, FD: f.fd}); r.Ret != 1000 {
		t.Fatalf("read %+v", r)
	}
	c := f.conn()
	if c.snd.Len() != 0 || c.rcv.Len() != 0 || c.snd.buf == nil || c.rcv.buf == nil {
		t.Fatalf("queues %d/%d bytes, arrays %v/%v", c.snd.Len(), c.rcv.Len(), c.snd.buf != nil, c.rcv.buf != nil)
	}
	f.after(2 * ringSweepEvery)
	if c.snd.buf != nil || c.rcv.buf != nil {
		t.Fatalf("an idle connection keeps its arrays: send %d, receive %d bytes", len(c.snd.buf), len(c.rcv.buf))
	}
	// They come back when needed.
	f.send(wire.ACK|wire.PSH, "again")
	if r := f.do(Call{Op: OpRead, FD: f.fd}); string(r.Data) != "again" {
		t.Fatalf("read %q", r.Data)
	}
}

// With CopyPayloads, a segment keeps the bytes it was sent with after the
// peer acknowledges them and a write reuses their place in the send queue
// (an ACK that did not come from the receiver, or a trace that keeps
// segments); without it the payload aliases the queue.
func TestCopyPayloadsKeepsSentBytes(t *testing.T) {
	for _, copying := range []bool{true, false} {
		f := newFx(t, Linux())
		f.h.CopyPayloads(copying)
		f.passive()
		f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptNoDelay, On: true}})
		first := []byte(strings.Repeat("a", 3000))
		f.do(Call{Op: OpWrite, FD: f.fd, Data: first})
		var sent []wire.Segment
		for _, s := range f.out {
			if len(s.Payload) > 0 {
				sent = append(sent, s)
			}
		}
		if len(sent) == 0 {
			t.Fatal("nothing sent")
		}
		f.out = f.out[:0]
		f.send(wire.ACK, "") // all acknowledged: the queue's place is free
		f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte(strings.Repeat("b", 3000))})
		changed := false
		for _, s := range sent {
			if strings.Trim(string(s.Payload), "a") != "" {
				changed = true
			}
		}
		if copying && changed {
			t.Fatal("with CopyPayloads, a segment sent shows the bytes of a later write")
		}
		if !copying && !changed {
			// What makes the first check mean something.
			t.Fatal("without CopyPayloads the second write no longer reuses the first one's place: change the test so that it does")
		}
	}
}
