package trace

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// Label is a segment's short form for diagrams: "[S.] seq 0 ack 1",
// "[P.] seq 1:5 ack 1", with numbers as Segment prints them.
func (r *Relative) Label(s *wire.Segment) string {
	seq, ack, _, _ := r.numbers(s)
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]", s.Flags.Short())
	writeNumbers(&b, s, seq, ack, " ")
	return b.String()
}

const (
	ladderGap    = 48 // columns between two lifelines
	ladderMargin = 13 // room for the first host's state names
	ladderIdle   = 5 * time.Second
)

// WriteLadder draws the lab notes' ladder diagram: one lifeline per host
// (in the order given), time downwards, an arrow per segment as it leaves
// its sender, labelled with its flags and numbers, ending in X where a
// rule dropped it; each host's state written at its lifeline when it
// changes; long idle gaps shown as a break.
func WriteLadder(w io.Writer, hosts []string, events []Event, absolute bool) error {
	col := map[string]int{}
	for i, h := range hosts {
		col[h] = i
	}
	// Where each packet arrived and what the receiver's firewall did.
	type arrival struct {
		host    string
		verdict string
	}
	arrive := map[uint64]arrival{}
	owner := map[netip.Addr]string{}
	for i := range events {
		e := &events[i]
		if e.Kind != KindPacket {
			continue
		}
		if e.Packet.Dir == In {
			arrive[e.Packet.ID] = arrival{e.Host, e.Packet.Verdict}
		} else if !e.Packet.Crafted {
			owner[e.Packet.Segment.Src] = e.Host
		}
	}
	width := ladderMargin + (len(hosts)-1)*ladderGap + 16
	x := func(i int) int { return ladderMargin + i*ladderGap }
	blank := func() []byte {
		b := []byte(strings.Repeat(" ", width))
		for i := range hosts {
			b[x(i)] = '|'
		}
		return b
	}
	var out strings.Builder
	head := []byte(strings.Repeat(" ", width))
	for i, h := range hosts {
		start := max(0, x(i)-len(h)/2)
		copy(head[start:], h)
	}
	fmt.Fprintf(&out, "%10s %s\n", "", strings.TrimRight(string(head), " "))
	emit := func(at time.Duration, row []byte) {
		fmt.Fprintf(&out, "%10s %s\n", FormatTime(at), strings.TrimRight(string(row), " "))
	}
	var rel Relative
	rel.Absolute = absolute
	last := time.Duration(-1)
	for i := range events {
		e := &events[i]
		var row []byte
		switch e.Kind {
		case KindPacket:
			p := e.Packet
			if p.Dir != Out {
				continue
			}
			from, ok := col[e.Host]
			if !ok {
				continue
			}
			label := " " + rel.Label(&p.Segment) + " "
			to := -1
			verdict := VerdictPass
			if a, ok := arrive[p.ID]; ok {
				to, verdict = col[a.host], a.verdict
			} else if h, ok := owner[p.Segment.Dst]; ok {
				to = col[h]
			}
			row = blank()
			switch {
			case !p.OnWire: // dropped by the sender's own output rule
				xa := x(from)
				dir := 1
				if to >= 0 && to < from || to < 0 && from > 0 {
					dir = -1
				}
				row[xa+dir] = '-'
				row[xa+2*dir] = 'X'
				label = strings.TrimSpace(label) + " (dropped on the way out)"
				if dir > 0 {
					copy(row[xa+4:], label)
				} else {
					copy(row[max(0, xa-4-len(label)):], label)
				}
			case to < 0 || to == from:
				xa := x(from)
				label = strings.TrimSpace(label) + " (to " + p.Segment.Dst.String() + ": no host)"
				copy(row[xa+2:], "--> "+label)
			default:
				xa, xb := x(from), x(to)
				lo, hi := min(xa, xb), max(xa, xb)
				for c := lo + 1; c < hi; c++ {
					row[c] = '-'
				}
				if xb > xa {
					row[xb-1] = '>'
				} else {
					row[xb+1] = '<'
				}
				if verdict == VerdictDrop || verdict == VerdictReject {
					// The segment dies at the receiver's firewall.
					if xb > xa {
						row[xb-1], row[xb-2], row[xb-3] = ' ', ' ', 'X'
					} else {
						row[xb+1], row[xb+2], row[xb+3] = ' ', ' ', 'X'
					}
				}
				if len(label) > hi-lo-6 {
					label = label[:max(0, hi-lo-6)]
				}
				start := lo + (hi-lo-len(label))/2
				copy(row[start:], label)
			}
		case KindState:
			c, ok := col[e.Host]
			if !ok {
				continue
			}
			row = blank()
			beside(row, c, e.State.To)
		case KindCall:
			// A failed call is worth a side note: the errno is often
			// the point of the lesson (EADDRINUSE, ECONNRESET).
			c, ok := col[e.Host]
			if !ok || e.Call.Pending || e.Call.Errno == "" {
				continue
			}
			row = blank()
			beside(row, c, fmt.Sprintf("%s: %s", e.Call.Op, e.Call.Errno))
		case KindNote:
			if e.Host != "" || !strings.HasPrefix(e.Note, "== ") {
				continue
			}
		default:
			continue
		}
		if last >= 0 && e.At-last >= ladderIdle {
			gap := blank()
			for i := range hosts {
				gap[x(i)] = '~'
			}
			txt := fmt.Sprintf(" %v pass ", (e.At - last).Round(time.Millisecond))
			copy(gap[x(0)+3:], txt)
			fmt.Fprintf(&out, "%10s %s\n", "", strings.TrimRight(string(gap), " "))
		}
		last = e.At
		if row == nil { // a part heading
			fmt.Fprintf(&out, "%10s %s\n", "", e.Note)
			continue
		}
		emit(e.At, row)
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// beside writes a label at host c's lifeline: left of the first lifeline
// when it fits in the margin, right of the lifeline otherwise.
func beside(row []byte, c int, txt string) {
	x := ladderMargin + c*ladderGap
	if c == 0 && len(txt) < x {
		copy(row[x-1-len(txt):], txt)
		return
	}
	copy(row[x+2:], txt)
}
