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
	if c.skbRoom(start.Add(1500)) != goal-1500 {
		t.Errorf("room in the second skb %d, want %d", c.skbRoom(start.Add(1500)), goal-1500)
	}
}
