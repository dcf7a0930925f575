// Package wire is tcplab's model of a TCP segment: header fields, flags,
// options and payload, with Parse and Marshal of IPv4+TCP packets.
package wire

// Seq is a TCP sequence number. Comparisons are modulo 2^32 (RFC 9293
// section 3.4), so they stay correct across wrap-around as long as the two
// numbers are less than 2^31 apart.
type Seq uint32

// Add returns s advanced by n.
func (s Seq) Add(n int) Seq { return s + Seq(uint32(n)) }

// Diff returns s - o as a signed distance.
func (s Seq) Diff(o Seq) int32 { return int32(s - o) }

// LessThan reports s < o.
func (s Seq) LessThan(o Seq) bool { return int32(s-o) < 0 }

// LessEq reports s <= o.
func (s Seq) LessEq(o Seq) bool { return int32(s-o) <= 0 }

// GreaterThan reports s > o.
func (s Seq) GreaterThan(o Seq) bool { return int32(s-o) > 0 }

// GreaterEq reports s >= o.
func (s Seq) GreaterEq(o Seq) bool { return int32(s-o) >= 0 }

// InWindow reports start <= s < start+size.
func (s Seq) InWindow(start Seq, size uint32) bool { return uint32(s-start) < size }

// Max returns the later of s and o.
func (s Seq) Max(o Seq) Seq {
	if s.LessThan(o) {
		return o
	}
	return s
}
