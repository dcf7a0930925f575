package tcp

import (
	"testing"

	"github.com/tcplab/tcplab/wire"
)

// The skb model's charge: payload plus one overhead per skb; a split
// costs one overhead more and moves the payload's charge; a partial ACK
// frees nothing, a whole one frees the skb.
func TestSkbCharge(t *testing.T) {
	p := Linux()
	p.TSO, p.SkbOverhead = true, 832
	f := newFx(t, p)
	f.passiveOpts()
	c := f.conn()
	c.sndWnd = 0 // nothing leaves: the charge is the write's alone
	c.maxWnd = 40000
	if g := c.sizeGoal(); g != 20000/c.mss*c.mss {
		t.Fatalf("size goal %d, want half the largest window in whole segments", g)
	}
	c.sndBuf = 30000
	data := make([]byte, 50000)
	n := c.skbWrite(data)
	goal := c.sizeGoal()
	// Two skbs fit below 30000 with their overhead; the third would
	// start above it.
	if want := 2 * goal; n != want || len(c.skbs) != 2 {
		t.Fatalf("took %d in %d skbs, want %d in 2", n, len(c.skbs), want)
	}
	if q := c.sndQueued(); q != n+2*832 {
		t.Fatalf("charge %d, want %d", q, n+2*832)
	}
	start := c.skbs[0].start
	c.skbSplit(start.Add(1000))
	if q := c.sndQueued(); q != n+3*832 || len(c.skbs) != 3 || c.skbs[1].size != goal-1000 {
		t.Fatalf("after a split: charge %d, skbs %+v", c.sndQueued(), c.skbs)
	}
	c.skbAcked(start.Add(500))
	if len(c.skbs) != 3 {
		t.Fatalf("a partial ACK freed an skb")
	}
	c.skbAcked(start.Add(1000))
	if q := c.sndQueued(); len(c.skbs) != 2 || q != n-1000+2*832 {
		t.Fatalf("after the first skb's ACK: charge %d, skbs %d", q, len(c.skbs))
	}
	// A packet grows its skb with the next one's data up to its limit
	// (tcp_grow_skb), then is cut from it (tso_fragment).
	mss := c.mss
	set := func(recs ...skbRec) {
		c.skbs, c.skbSize = recs, 0
		for _, r := range recs {
			c.skbSize += r.size
		}
	}
	set(skbRec{start, start.Add(1000), 1000}, skbRec{start.Add(1000), start.Add(20000), 19000})
	c.skbSend(start, start.Add(3*mss), 5)
	want := []skbRec{{start, start.Add(3 * mss), 3 * mss}, {start.Add(3 * mss), start.Add(5 * mss), 2 * mss}, {start.Add(5 * mss), start.Add(20000), 20000 - 5*mss}}
	if len(c.skbs) != 3 || c.skbs[0] != want[0] || c.skbs[1] != want[1] || c.skbs[2] != want[2] || c.skbSize != 20000 {
		t.Errorf("after a grown packet: %+v (charge %d), want %+v", c.skbs, c.skbSize, want)
	}
	// An skb emptied by the growth is freed.
	set(skbRec{start, start.Add(1000), 1000}, skbRec{start.Add(1000), start.Add(1500), 500}, skbRec{start.Add(1500), start.Add(9000), 7500})
	c.skbSend(start, start.Add(1500), 5)
	if len(c.skbs) != 2 || c.skbs[0] != (skbRec{start, start.Add(1500), 1500}) || c.sndQueued() != 9000+2*832 {
		t.Errorf("after growing into a small skb: %+v, charge %d", c.skbs, c.sndQueued())
	}
}

// skbFx is a connection with the skb model, its peer's window closed so
// that nothing leaves and the charge is the writes' alone.
func skbFx(t *testing.T) *fx {
	p := Linux()
	p.TSO, p.SkbOverhead = true, 832
	f := newFx(t, p)
	f.passive()
	f.recv(wire.Segment{Src: f.peer.Addr(), Dst: f.us.Addr(), SrcPort: f.peer.Port(), DstPort: f.us.Port(),
		Seq: f.pNxt, Ack: f.ourNxt(), Flags: wire.ACK, Window: 0})
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptSndBuf, N: 5000}})
	f.conn().maxWnd = 4 * uint32(f.conn().mss) // skbs of two segments
	return f
}

// A larger SO_SNDBUF wakes a writer blocked for space (sock_setsockopt
// calls sk_write_space).
func TestSkbLargerSndBufWakesWriter(t *testing.T) {
	f := skbFx(t)
	r := f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, 30000)})
	if !r.Pending {
		t.Fatalf("write: %v, want it blocked", r)
	}
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptSndBuf, N: 100000}})
	if done := f.callDone(r.ID); done == nil || done.Ret != 30000 {
		t.Fatalf("write after SO_SNDBUF grew: %v", done)
	}
}

// A blocked writer looks again when anything wakes the socket (here data
// arriving), and goes on if the charge is below the buffer, without the
// third-free rule of sk_stream_write_space.
func TestSkbWriterWokenByData(t *testing.T) {
	f := skbFx(t)
	c := f.conn()
	r := f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, 30000)})
	if !r.Pending {
		t.Fatalf("write: %v, want it blocked", r)
	}
	// The buffer grows without a wake-up: the writer sleeps on.
	c.sndBuf = 100000
	c.checkPending()
	if d := f.callDone(r.ID); d != nil {
		t.Fatalf("the writer went on without a wake-up: %v", d)
	}
	f.send(wire.ACK|wire.PSH, "hello") // sk_data_ready
	if d := f.callDone(r.ID); d == nil || d.Ret != 30000 {
		t.Fatalf("after data arrived: %v", d)
	}
}

// Under local congestion a zero-window probe that the output queue drops
// is tried again in 500 ms, without backing off.
func TestZeroWindowProbeUnderLocalCongestion(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.recv(wire.Segment{Src: f.peer.Addr(), Dst: f.us.Addr(), SrcPort: f.peer.Port(), DstPort: f.us.Port(),
		Seq: f.pNxt, Ack: f.ourNxt(), Flags: wire.ACK, Window: 0})
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("waiting")})
	if err := f.h.Set("output_drop", "1"); err != nil {
		t.Fatal(err)
	}
	d, _ := f.h.NextDeadline()
	f.at(d)
	for range 3 {
		next, _ := f.h.NextDeadline()
		if next-f.h.Now() != resourceProbeInterval {
			t.Fatalf("next probe in %v, want %v", next-f.h.Now(), resourceProbeInterval)
		}
		f.at(next)
	}
	f.expectNothing()
	if c := f.conn(); c.backoff != 0 || c.probesOut != 4 {
		t.Errorf("backoff %d probes %d, want 0 and 4", c.backoff, c.probesOut)
	}
}
