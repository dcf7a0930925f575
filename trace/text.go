package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tcplab/tcplab/wire"
)

// conv is one connection as tcpdump's sequence table keys it: the end
// with the lower port (or, on a tie, the lower address) first.
type conv struct{ a, b netip.AddrPort }

// bases are tcpdump's th->seq and th->ack for a conversation.
type bases struct{ seq, ack wire.Seq }

// Relative prints sequence and acknowledgement numbers the way tcpdump
// does without -S: packets without ACK print absolute numbers; the first
// ACK-bearing packet of a connection, and every packet with SYN, sets the
// bases and prints absolute numbers; later packets print numbers relative
// to the bases. So the handshake shows real ISNs and "ack 1" follows, as in
// any tcpdump capture, and `tcpdump -r` of the same packets agrees.
type Relative struct {
	Absolute bool // print absolute numbers, like tcpdump -S
	convs    map[conv]*bases
}

// numbers returns the seq and ack to print, the bases and whether the
// packet runs against the conversation's order, following tcpdump's
// tcp_print.
func (r *Relative) numbers(s *wire.Segment) (seq, ack uint32, b bases, rev bool) {
	seq, ack = uint32(s.Seq), uint32(s.Ack)
	if r.Absolute || s.Flags&wire.ACK == 0 {
		return seq, ack, bases{}, false
	}
	src := netip.AddrPortFrom(s.Src, s.SrcPort)
	dst := netip.AddrPortFrom(s.Dst, s.DstPort)
	rev = s.SrcPort > s.DstPort || (s.SrcPort == s.DstPort && s.Src.Compare(s.Dst) > 0)
	k := conv{src, dst}
	if rev {
		k = conv{dst, src}
	}
	if r.convs == nil {
		r.convs = make(map[conv]*bases)
	}
	th := r.convs[k]
	if th == nil || s.Flags&wire.SYN != 0 {
		if th == nil {
			th = new(bases)
			r.convs[k] = th
		}
		if rev {
			th.ack, th.seq = s.Seq, s.Ack-1
		} else {
			th.seq, th.ack = s.Seq, s.Ack-1
		}
		return seq, ack, *th, rev
	}
	if rev {
		seq, ack = uint32(s.Seq-th.ack), uint32(s.Ack-th.seq)
	} else {
		seq, ack = uint32(s.Seq-th.seq), uint32(s.Ack-th.ack)
	}
	return seq, ack, *th, rev
}

// Segment formats a segment the way tcpdump -n prints it:
// "10.0.0.1.40000 > 10.0.0.2.80: Flags [P.], seq 1:5, ack 1, win 502, length 4".
func (r *Relative) Segment(s *wire.Segment) string {
	seq, ack, th, rev := r.numbers(s)
	var b strings.Builder
	fmt.Fprintf(&b, "%s.%d > %s.%d: Flags [%s]", s.Src, s.SrcPort, s.Dst, s.DstPort, s.Flags.Short())
	writeNumbers(&b, s, seq, ack, ", ")
	fmt.Fprintf(&b, ", win %d", s.Window)
	if s.Flags&wire.URG != 0 {
		fmt.Fprintf(&b, ", urg %d", s.Urgent)
	}
	if !s.Options.Empty() {
		o := s.Options
		if len(o.SACK) > 0 && (th != bases{}) {
			// tcpdump makes SACK blocks relative with the same bases.
			base := th.ack
			if rev {
				base = th.seq
			}
			o.SACK = make([]wire.SACKBlock, len(s.Options.SACK))
			for i, blk := range s.Options.SACK {
				o.SACK[i] = wire.SACKBlock{Left: wire.Seq(uint32(blk.Left - base)), Right: wire.Seq(uint32(blk.Right - base))}
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

// writeNumbers writes the seq and ack parts as tcpdump does: seq only for
// data, SYN, FIN or RST ("seq 1:5" with data), ack only with ACK; each
// part starts with sep.
func writeNumbers(b *strings.Builder, s *wire.Segment, seq, ack uint32, sep string) {
	if len(s.Payload) > 0 || s.Flags&(wire.SYN|wire.FIN|wire.RST) != 0 {
		fmt.Fprintf(b, "%sseq %d", sep, seq)
		if len(s.Payload) > 0 {
			fmt.Fprintf(b, ":%d", seq+uint32(len(s.Payload)))
		}
	}
	if s.Flags&wire.ACK != 0 {
		fmt.Fprintf(b, "%sack %d", sep, ack)
	}
}
