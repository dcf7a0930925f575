package tcp

// ring is a byte queue in one reused array: the send queue (unacknowledged,
// then unsent bytes) and the receive queue (unread bytes, with out-of-order
// data written ahead of them at its place). Bytes are copied in once and
// never move while they are queued, so a segment's payload may alias them
// (slice) until they are consumed; only a write after that reuses their
// place. The array's first mirror bytes are repeated after its end, so a
// slice of up to mirror bytes is contiguous even where the queue wraps.
//
// Offsets are logical: 0 is the first queued byte.
type ring struct {
	buf    []byte // size bytes, then the mirror
	size   int
	mirror int
	head   int // index of the first queued byte
	n      int // queued bytes
	ext    int // end of what was written (>= n): out-of-order data lies between
}

// ringMin is the smallest array a ring allocates; it doubles from there.
const ringMin = 64

// mirrorMin is the smallest mirror made when a slice first wraps: more
// than one segment, so that a ring is remade once, not once per size.
const mirrorMin = 2048

// Len is the number of queued bytes.
func (r *ring) Len() int { return r.n }

// push queues p at the end.
func (r *ring) push(p []byte) {
	r.write(r.n, p)
	r.n += len(p)
}

// write copies p to offset off, which may lie past the queued bytes (the
// receive queue's out-of-order data); the array grows to hold it.
func (r *ring) write(off int, p []byte) {
	if len(p) == 0 {
		return
	}
	end := off + len(p)
	if end > r.size {
		r.grow(end)
	}
	pos := r.head + off
	if pos >= r.size {
		pos -= r.size
	}
	k := copy(r.buf[pos:r.size], p)
	wrapped := copy(r.buf[:r.size], p[k:])
	if r.mirror > 0 {
		if pos < r.mirror {
			e := min(pos+k, r.mirror)
			copy(r.buf[r.size+pos:r.size+e], r.buf[pos:e])
		}
		if wrapped > 0 {
			m := min(wrapped, r.mirror)
			copy(r.buf[r.size:r.size+m], r.buf[:m])
		}
	}
	r.ext = max(r.ext, end)
}

// advance queues k bytes already written past the end (out-of-order
// data that became in order).
func (r *ring) advance(k int) {
	r.n += k
	r.ext = max(r.ext, r.n)
}

// consume drops the first k queued bytes; their place may be reused.
func (r *ring) consume(k int) {
	if k <= 0 {
		return
	}
	k = min(k, r.n)
	r.head += k
	if r.head >= r.size {
		r.head -= r.size
	}
	r.n -= k
	r.ext -= k
}

// slice is the k bytes at offset off, aliasing the ring: valid until they
// are consumed. Its capacity is its length, so an append copies.
func (r *ring) slice(off, k int) []byte {
	if k <= 0 {
		return nil
	}
	pos := r.head + off
	if pos >= r.size {
		pos -= r.size
	}
	if pos+k > r.size+r.mirror {
		r.remirror(k)
	}
	return r.buf[pos : pos+k : pos+k]
}

// read copies bytes from offset off into dst and reports how many.
func (r *ring) read(dst []byte, off int) int {
	k := min(len(dst), r.n-off)
	if k <= 0 {
		return 0
	}
	pos := r.head + off
	if pos >= r.size {
		pos -= r.size
	}
	m := copy(dst[:k], r.buf[pos:r.size])
	copy(dst[m:k], r.buf[:r.size])
	return k
}

// reset forgets everything and lets the array go.
func (r *ring) reset() { *r = ring{} }

// grow makes a larger array holding what was written, from index 0.
// Slices of the old array stay as they were.
func (r *ring) grow(need int) {
	size := max(r.size, ringMin)
	for size < need {
		size *= 2
	}
	nb := make([]byte, size+r.mirror)
	if r.ext > 0 {
		m := copy(nb[:r.ext], r.buf[r.head:r.size])
		copy(nb[m:r.ext], r.buf[:r.size])
	}
	copy(nb[size:], nb[:r.mirror])
	r.buf, r.size, r.head = nb, size, 0
}

// remirror remakes the array with a mirror of at least k bytes.
func (r *ring) remirror(k int) {
	m := min(r.size, max(k, mirrorMin))
	nb := make([]byte, r.size+m)
	copy(nb, r.buf[:r.size])
	copy(nb[r.size:], nb[:m])
	r.buf, r.mirror = nb, m
}

// appendQ appends v to q, a queue consumed from its front that lives in
// *base's array: when q reaches the end of that array while most of it is
// free, q's elements move to its front first, so the queue reuses one
// array instead of growing a new one as it slides along.
func appendQ[T any](base *[]T, q []T, v T) []T {
	if len(q) == cap(q) && cap(*base) > 0 && len(q) <= cap(*base)/2 {
		q = (*base)[:copy((*base)[:cap(*base)], q)]
	}
	q = append(q, v)
	if cap(q) > cap(*base) {
		*base = q[:0]
	}
	return q
}
