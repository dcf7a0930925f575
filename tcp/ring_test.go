package tcp

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// bytes copies out what is queued (tests).
func (r *ring) bytes() []byte {
	b := make([]byte, r.n)
	r.read(b, 0)
	return b
}

// TestRingModel drives a ring and a plain byte slice with the same random
// pushes, out-of-order writes, consumes and slices, and checks that they
// hold the same bytes, that slices taken earlier keep their bytes until
// those are consumed, and that a ring at its size stops allocating.
func TestRingModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var r ring
		var model []byte // queued, then written ahead (ext)
		queued := 0
		next := byte(round)
		fill := func(n int) []byte {
			p := make([]byte, n)
			for i := range p {
				p[i] = next
				next++
			}
			return p
		}
		type alias struct {
			off  int // logical offset when taken, relative to consumed
			want []byte
			got  []byte
		}
		var aliases []alias
		consumed := 0
		for range 300 {
			switch rng.IntN(5) {
			case 0, 1: // push at the end of the queued bytes
				p := fill(rng.IntN(3000))
				r.push(p)
				model = append(model[:queued], append(p, model[min(queued+len(p), len(model)):]...)...)
				queued += len(p)
			case 2: // write ahead (out of order), then maybe advance over it
				gap := rng.IntN(2000)
				p := fill(1 + rng.IntN(1500))
				r.write(queued+gap, p)
				for len(model) < queued+gap+len(p) {
					model = append(model, 0)
				}
				copy(model[queued+gap:], p)
				if rng.IntN(2) == 0 {
					// fill the gap in order: the bytes ahead join
					g := fill(gap)
					r.push(g)
					copy(model[queued:], g)
					queued += gap
					r.advance(len(p))
					queued += len(p)
				}
			case 3: // consume
				k := rng.IntN(queued + 1)
				r.consume(k)
				model = model[k:]
				queued -= k
				consumed += k
			case 4: // slice
				if queued == 0 {
					continue
				}
				off := rng.IntN(queued)
				k := 1 + rng.IntN(min(queued-off, 4000))
				s := r.slice(off, k)
				if cap(s) != len(s) {
					t.Fatalf("slice capacity %d for %d bytes", cap(s), len(s))
				}
				aliases = append(aliases, alias{off: consumed + off, want: append([]byte(nil), model[off:off+k]...), got: s})
			}
			if r.Len() != queued {
				t.Fatalf("round %d: Len %d, model %d", round, r.Len(), queued)
			}
			if got := r.bytes(); !bytes.Equal(got, model[:queued]) {
				t.Fatalf("round %d: ring holds %x, model %x", round, got, model[:queued])
			}
			// Aliases of bytes not yet consumed still hold them.
			for _, a := range aliases {
				if a.off >= consumed && !bytes.Equal(a.got, a.want) {
					t.Fatalf("round %d: a slice of queued bytes changed: %x, want %x", round, a.got, a.want)
				}
			}
		}
	}
}

// TestRingSteadyStateAllocs: a ring that has reached its size moves bytes
// without allocating, wrapping included.
func TestRingSteadyStateAllocs(t *testing.T) {
	var r ring
	p := make([]byte, 1448)
	cycle := func() {
		for range 40 {
			r.push(p)
		}
		for r.Len() > 0 {
			_ = r.slice(0, min(r.Len(), 1448))
			r.consume(1000)
		}
	}
	cycle()
	cycle()
	if a := testing.AllocsPerRun(20, cycle); a != 0 {
		t.Fatalf("%v allocations per cycle", a)
	}
}

func TestAppendQReusesArray(t *testing.T) {
	var base, q []int
	for i := range 64 {
		q = appendQ(&base, q, i)
	}
	q = q[60:]
	allocs := testing.AllocsPerRun(100, func() {
		for i := range 32 {
			q = appendQ(&base, q, i)
		}
		q = q[32:]
	})
	if allocs != 0 {
		t.Fatalf("%v allocations", allocs)
	}
	if len(q) != 4 {
		t.Fatalf("len %d", len(q))
	}
}
