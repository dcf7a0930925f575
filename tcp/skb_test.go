package tcp

import "testing"

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
	// A packet grows its skb with the next one's data up to the
	// congestion window's quota (tcp_grow_skb), then is cut from it.
	c.skbs = []skbRec{{start: start, end: start.Add(1000), size: 1000}, {start: start.Add(1000), end: start.Add(1500), size: 500}, {start: start.Add(1500), end: start.Add(20000), size: 18500}}
	mss := c.mss
	c.skbSend(start, start.Add(3*mss), 5)
	want := []skbRec{{start, start.Add(3 * mss), 3 * mss}, {start.Add(3 * mss), start.Add(5 * mss), 2 * mss}, {start.Add(5 * mss), start.Add(20000), 20000 - 5*mss}}
	if len(c.skbs) != 3 || c.skbs[0] != want[0] || c.skbs[1] != want[1] || c.skbs[2] != want[2] {
		t.Errorf("after a grown packet: %+v, want %+v", c.skbs, want)
	}
}
