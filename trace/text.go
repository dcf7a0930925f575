package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tcplab/tcplab/wire"
)

// flow is one direction of a connection.
type flow struct{ src, dst netip.AddrPort }

// Relative turns absolute sequence numbers into numbers relative to each
// direction's initial sequence number, as Wireshark shows them (the SYN is
// 0), so that "seq 1:5, ack 1" reads the same in every run. It learns the
// ISNs from the SYNs it sees; a flow whose SYN it never saw keeps absolute
// numbers.
type Relative struct {
	Absolute bool // print absolute numbers, like tcpdump -S
	isn      map[flow]wire.Seq
}

func (r *Relative) learn(s *wire.Segment) {
	if r.isn == nil {
		r.isn = make(map[flow]wire.Seq)
	}
	if s.Flags&wire.SYN != 0 && s.Flags&wire.RST == 0 {
		f := flow{netip.AddrPortFrom(s.Src, s.SrcPort), netip.AddrPortFrom(s.Dst, s.DstPort)}
		if _, ok := r.isn[f]; !ok {
			r.isn[f] = s.Seq
		}
	}
}

func (r *Relative) rel(src, dst netip.AddrPort, v wire.Seq) uint32 {
	if r.Absolute {
		return uint32(v)
	}
	if base, ok := r.isn[flow{src, dst}]; ok {
		return uint32(v - base)
	}
	return uint32(v)
}

// Segment formats a segment the way tcpdump prints it, with sequence and
// acknowledgement numbers made relative:
// "10.0.0.1.40000 > 10.0.0.2.80: Flags [P.], seq 1:5, ack 1, win 502, length 4".
func (r *Relative) Segment(s *wire.Segment) string {
	r.learn(s)
	src := netip.AddrPortFrom(s.Src, s.SrcPort)
	dst := netip.AddrPortFrom(s.Dst, s.DstPort)
	var b strings.Builder
	fmt.Fprintf(&b, "%s.%d > %s.%d: Flags [%s]", s.Src, s.SrcPort, s.Dst, s.DstPort, s.Flags.Short())
	seq := r.rel(src, dst, s.Seq)
	switch {
	case len(s.Payload) > 0:
		fmt.Fprintf(&b, ", seq %d:%d", seq, seq+uint32(len(s.Payload)))
	case s.Flags&(wire.SYN|wire.FIN|wire.RST) != 0 || s.Flags&wire.ACK == 0:
		fmt.Fprintf(&b, ", seq %d", seq)
	}
	if s.Flags&wire.ACK != 0 {
		fmt.Fprintf(&b, ", ack %d", r.rel(dst, src, s.Ack))
	}
	fmt.Fprintf(&b, ", win %d", s.Window)
	if !s.Options.Empty() {
		o := s.Options
		if !r.Absolute && len(o.SACK) > 0 {
			o.SACK = make([]wire.SACKBlock, len(s.Options.SACK))
			for i, blk := range s.Options.SACK {
				o.SACK[i] = wire.SACKBlock{Left: wire.Seq(r.rel(dst, src, blk.Left)), Right: wire.Seq(r.rel(dst, src, blk.Right))}
			}
		}
		fmt.Fprintf(&b, ", options [%s]", o.String())
	}
	fmt.Fprintf(&b, ", length %d", len(s.Payload))
	return b.String()
}

// PacketLine formats a packet event as one line: time, host, direction, the
// tcpdump-style segment, and what the lab's firewall did with it.
func (r *Relative) PacketLine(e *Event) string {
	p := e.Packet
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-8s %-3s %s", FormatTime(e.At), e.Host, p.Dir, r.Segment(&p.Segment))
	switch {
	case p.Verdict != VerdictPass && !p.OnWire:
		fmt.Fprintf(&b, "  [%s before the wire by %s]", p.Verdict, p.Rule)
	case p.Verdict != VerdictPass:
		fmt.Fprintf(&b, "  [%s by %s]", p.Verdict, p.Rule)
	}
	if p.Crafted {
		b.WriteString("  [crafted]")
	}
	if p.Lost != "" {
		fmt.Fprintf(&b, "  [lost: %s]", p.Lost)
	}
	return b.String()
}
