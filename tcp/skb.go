package tcp

import "github.com/tcplab/tcplab/wire"

// The send queue as Linux's skbs, for its memory accounting (opt-in, the
// skb_overhead setting; packetdrill runs turn it on). Linux charges a
// socket's send buffer (sk_wmem_queued) with each skb's truesize: the
// payload copied into it plus the skb's own overhead. A write starts a new
// skb only while the charge is below the send buffer, and fills the last
// unsent one up to the size goal without looking. A packet may take data
// from the skbs after its own, up to the congestion window's quota
// (tcp_grow_skb, Linux 6.10 and later; an skb emptied so is freed), and
// is cut from its skb where it ends (tso_fragment: one overhead more). An
// ACK uncharges the bytes it covers (tcp_trim_head) and the overhead of
// each skb it covers entirely. A writer that found the buffer full is
// woken when a third of it is free again (sk_stream_write_space).

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
		return c.snd.Len()
	}
	return c.skbSize + len(c.skbs)*c.h.prof.SkbOverhead
}

// writeSpace is tcp_check_space with sk_stream_write_space: a writer that
// found the buffer full is woken once a third of it is free again.
func (c *conn) writeSpace() {
	if q := c.sndQueued(); c.noSpace && c.sndBufSize()-q >= q/2 && q < c.sndBufSize() {
		c.noSpace = false
		c.wakeups++
		c.chronoStopT(chronoSndbuf)
	}
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
		writeSeq := c.sndBase.Add(c.snd.Len())
		k := len(c.skbs)
		var t *skbRec
		if k > 0 && !c.skbs[k-1].start.LessThan(c.sndMax) && c.skbs[k-1].end == writeSeq &&
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
		c.skbSize += m
		c.snd.push(data[taken : taken+m])
		taken += m
		if taken == len(data) || int(t.end.Diff(t.start)) < goal {
			continue // the write ends here: tcp_push marks and sends it
		}
		head := t.start == c.sndMax // tcp_send_head: the first skb never sent
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

// skbSend does to the skbs what tcp_write_xmit does when it sends the
// new data [from, to) as one packet of at most limitSegs segments: the
// skb at from grows with data of the next one up to that limit
// (tcp_grow_skb, Linux 6.10 and later; an skb emptied so is freed), and
// is cut where the packet ends (tso_fragment; the second part costs one
// overhead more).
func (c *conn) skbSend(from, to wire.Seq, limitSegs int) {
	if !c.skbModel() {
		return
	}
	i := c.skbAt(from)
	if i < 0 {
		return
	}
	grow := from.Add(max(limitSegs, 1) * max(c.mss, 1))
	if grow.LessThan(to) {
		grow = to
	}
	if c.skbs[i].end.LessThan(grow) && i+1 < len(c.skbs) && c.skbs[i+1].start == c.skbs[i].end {
		next := &c.skbs[i+1]
		m := min(int(grow.Diff(c.skbs[i].end)), int(next.end.Diff(next.start)))
		moved := min(m, next.size)
		c.skbs[i].end, c.skbs[i].size = c.skbs[i].end.Add(m), c.skbs[i].size+moved
		next.start, next.size = next.start.Add(m), next.size-moved
		if next.start == next.end {
			c.skbSize -= next.size
			c.skbs = append(c.skbs[:i+1], c.skbs[i+2:]...)
		}
	}
	c.skbSplit(to)
}

// skbSplit cuts the skb holding at in two there: the second part takes
// its payload's charge and costs one overhead more.
func (c *conn) skbSplit(at wire.Seq) {
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

// skbAcked frees the skbs that ack covers entirely, and trims a TSO
// skb it covers in part (tcp_tso_acked: tcp_trim_head uncharges the
// bytes it drops; an skb of one segment is left whole).
func (c *conn) skbAcked(ack wire.Seq) {
	i := 0
	for i < len(c.skbs) && !ack.LessThan(c.skbs[i].end) {
		c.skbSize -= c.skbs[i].size
		i++
	}
	if i > 0 {
		c.skbs = append(c.skbs[:0], c.skbs[i:]...)
	}
	if len(c.skbs) > 0 && c.skbs[0].start.LessThan(ack) && int(c.skbs[0].end.Diff(c.skbs[0].start)) > max(c.mss, 1) {
		t := &c.skbs[0]
		d := min(int(ack.Diff(t.start)), t.size)
		t.size -= d
		c.skbSize -= d
		t.start = ack
	}
}
