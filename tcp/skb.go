package tcp

import "github.com/tcplab/tcplab/wire"

// The send queue as Linux's skbs, for its memory accounting (opt-in, the
// skb_overhead setting; packetdrill runs turn it on). Linux charges a
// socket's send buffer (sk_wmem_queued) with each skb's truesize: the
// payload copied into it plus the skb's own overhead. A write starts a new
// skb only while the charge is below the send buffer, and fills the last
// unsent one up to the size goal without looking; each skb that a send
// cuts in two (tso_fragment) costs one overhead more; an skb is uncharged
// when all of it is acknowledged (a partial ACK frees none of it, its page
// fragments being still in use). A writer that found the buffer full is
// woken when a third of it is free again (sk_stream_write_space). A packet
// never spans two skbs.

// skbRec is one skb of the send queue: [start, end), charged with size
// payload bytes plus the overhead.
type skbRec struct {
	start, end wire.Seq
	size       int
}

// gsoMaxSize is sk_gso_max_size on a TUN device: GSO_MAX_SIZE less
// MAX_TCP_HEADER and one byte.
const gsoMaxSize = 65536 - 320 - 1

func (c *conn) skbModel() bool { return c.h.prof.SkbOverhead > 0 }

// sndQueued is what the send queue charges the send buffer: its skbs'
// truesize, or its bytes without the skb model.
func (c *conn) sndQueued() int {
	if !c.skbModel() {
		return len(c.snd)
	}
	n := 0
	for _, s := range c.skbs {
		n += s.size + c.h.prof.SkbOverhead
	}
	return n
}

// sizeGoal is tcp_xmit_size_goal: how much one skb takes from writes.
// Without TSO (no GSO), one segment; with it, as much as one GSO packet
// holds, at most half the largest window the peer offered
// (tcp_bound_to_half_wnd), in whole segments.
func (c *conn) sizeGoal() int {
	mss := max(c.mss, 1)
	if !c.h.prof.TSO {
		return mss
	}
	goal := gsoMaxSize
	cutoff := int(c.maxWnd)
	if cutoff > 536 {
		cutoff /= 2
	}
	if cutoff > 0 && goal > cutoff {
		hdr := 20
		if c.tsOK {
			hdr += 12
		}
		goal = max(cutoff, 68-hdr)
	}
	return max(goal/mss*mss, mss)
}

// skbWrite copies what it can of a write into the send queue, as
// tcp_sendmsg does: into the last skb while it is unsent and below the
// size goal, into a new one while the buffer's charge allows. Each skb it
// fills is sent at once: with everything sendable when more than half the
// peer's largest window was written since the last push (forced_push),
// else one packet if the skb is the first unsent one (tcp_push_one). It
// reports how many bytes it took.
func (c *conn) skbWrite(data []byte) int {
	goal := c.sizeGoal()
	taken := 0
	for taken < len(data) {
		writeSeq := c.sndBase.Add(len(c.snd))
		k := len(c.skbs)
		var t *skbRec
		if k > 0 && !c.skbs[k-1].start.LessThan(c.sndNxt) && c.skbs[k-1].end == writeSeq &&
			int(c.skbs[k-1].end.Diff(c.skbs[k-1].start)) < goal {
			t = &c.skbs[k-1]
		} else {
			if c.sndQueued() >= c.sndBufSize() {
				break
			}
			c.skbs = append(c.skbs, skbRec{start: writeSeq, end: writeSeq})
			t = &c.skbs[k]
		}
		m := min(goal-int(t.end.Diff(t.start)), len(data)-taken)
		t.end, t.size = t.end.Add(m), t.size+m
		c.snd = append(c.snd, data[taken:taken+m]...)
		taken += m
		if taken == len(data) || int(t.end.Diff(t.start)) < goal {
			continue // the write ends here: tcp_push marks and sends it
		}
		head := t.start == c.sndNxt
		c.pushNow = true
		if end := t.end; int(end.Diff(c.pushedSeq)) > int(c.maxWnd/2) {
			c.pushEnd, c.pushedSeq = end, end // tcp_mark_push
			c.xmit()
		} else if head {
			c.pushOne = true
			c.xmit()
			c.pushOne = false
		}
		c.pushNow = false
	}
	return taken
}

// skbAt is the skb holding seq, or -1.
func (c *conn) skbAt(seq wire.Seq) int {
	for i := range c.skbs {
		if !seq.LessThan(c.skbs[i].start) && seq.LessThan(c.skbs[i].end) {
			return i
		}
	}
	return -1
}

// skbRoom is how many bytes from seq a packet may take without crossing
// into the next skb (no limit without the model).
func (c *conn) skbRoom(seq wire.Seq) int {
	if !c.skbModel() {
		return 1 << 30
	}
	if i := c.skbAt(seq); i >= 0 {
		return int(c.skbs[i].end.Diff(seq))
	}
	return 1 << 30
}

// skbSplit cuts the skb holding at in two there, as tso_fragment does
// when a packet ends inside it: the second part takes its payload's
// charge and costs one overhead more.
func (c *conn) skbSplit(at wire.Seq) {
	if !c.skbModel() {
		return
	}
	i := c.skbAt(at)
	if i < 0 || at == c.skbs[i].start {
		return
	}
	s := c.skbs[i]
	nlen := int(s.end.Diff(at))
	c.skbs = append(c.skbs, skbRec{})
	copy(c.skbs[i+2:], c.skbs[i+1:])
	c.skbs[i] = skbRec{start: s.start, end: at, size: max(s.size-nlen, 0)}
	c.skbs[i+1] = skbRec{start: at, end: s.end, size: nlen}
}

// skbAcked frees the skbs that ack covers entirely.
func (c *conn) skbAcked(ack wire.Seq) {
	i := 0
	for i < len(c.skbs) && !ack.LessThan(c.skbs[i].end) {
		i++
	}
	if i > 0 {
		c.skbs = append(c.skbs[:0], c.skbs[i:]...)
	}
}
