package draw

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcplab/tcplab/trace"
)

// LadderOptions tune the ladder.
type LadderOptions struct {
	Absolute bool   // absolute sequence numbers, like tcpdump -S
	Title    string // the picture's title
	// Group folds a run of at least this many like segments (same hosts,
	// flags and fate, nothing else between them) into one arrow marked
	// "×N", so that floods and bursts stay readable. 0 means 4; negative
	// never folds.
	Group int
}

// Layout of the ladder, in pixels.
const (
	ladTimeCol  = 84.0  // the time column
	ladStateCol = 104.0 // room left of the first lifeline for its states
	ladRow      = 22.0  // one row per segment, state change, call or note
	ladHead     = 44.0  // host names
	ladMinGap   = 300.0 // least room between two lifelines
	ladRight    = 300.0 // room right of the last lifeline for notes
	ladIdle     = 5 * time.Second
	ladBreak    = 26.0
	titleScale  = 14.0 / fontSize * 1.05 // the title's larger, bold type
)

type rowKind int

const (
	rowSegment rowKind = iota
	rowState
	rowCall
	rowHeading
	rowBreak
)

type ladRowT struct {
	kind    rowKind
	at      time.Duration
	from    int // lifeline of the sender, the state or the call
	to      int // lifeline of the receiver; -1 when no host owns the address
	label   string
	drop    string // "in" (died at the receiver), "out" (before the wire), or ""
	count   int    // segments folded into this row
	until   time.Duration
	key     string // what makes segments alike for folding
	comment string // after the label: "no host", "lost"
}

// Ladder draws a run as an SVG ladder diagram: one lifeline per host,
// time downwards, one row per segment (an arrow from sender to receiver,
// labelled with flags and numbers, ending in a cross where a rule dropped
// it), per state change (written on the host's lifeline), per application
// call (a side note) and per part of the scenario; idle gaps of 5 s or
// more are drawn as a marked break. Every label has a row of its own, so
// none overlaps another.
func Ladder(hosts []trace.Host, events []trace.Event, o LadderOptions) string {
	col := map[string]int{}
	for i, h := range hosts {
		col[h.Name] = i
	}
	// Where each packet arrived and what the receiver's firewall did.
	type arrival struct {
		host    string
		verdict string
	}
	arrive := map[uint64]arrival{}
	owner := map[netip.Addr]string{}
	for _, h := range hosts {
		for _, s := range []string{h.Addr, h.Addr6} {
			if a, err := netip.ParseAddr(s); err == nil {
				owner[a] = h.Name
			}
		}
	}
	for i := range events {
		e := &events[i]
		if e.Kind == trace.KindPacket && e.Packet.Dir == trace.In {
			arrive[e.Packet.ID] = arrival{e.Host, e.Packet.Verdict}
		}
	}
	var rel trace.Relative
	rel.Absolute = o.Absolute
	var rows []ladRowT
	last := time.Duration(-1)
	add := func(r ladRowT) {
		if last >= 0 && r.at-last >= ladIdle {
			rows = append(rows, ladRowT{kind: rowBreak, at: r.at, until: r.at - last})
		}
		last = r.at
		rows = append(rows, r)
	}
	for i := range events {
		e := &events[i]
		switch e.Kind {
		case trace.KindPacket:
			p := e.Packet
			from, ok := col[e.Host]
			if p.Dir != trace.Out || !ok {
				continue
			}
			r := ladRowT{kind: rowSegment, at: e.At, from: from, to: -1, label: rel.Label(&p.Segment), count: 1}
			if a, ok := arrive[p.ID]; ok {
				r.to = col[a.host]
				if a.verdict == trace.VerdictDrop || a.verdict == trace.VerdictReject {
					r.drop = "in"
				}
			} else if h, ok := owner[p.Segment.Dst]; ok && h != e.Host {
				r.to = col[h]
			}
			switch {
			case !p.OnWire:
				r.drop = "out"
				r.comment = "dropped on the way out"
			case r.to < 0:
				r.comment = "to " + p.Segment.Dst.String() + ": no host"
			case p.Lost != "":
				r.comment = "lost"
			}
			if p.Crafted {
				r.comment = strings.TrimSpace("crafted " + r.comment)
			}
			r.key = fmt.Sprintf("%d>%d %s %s %s", r.from, r.to, p.Segment.Flags.Short(), r.drop, r.comment)
			add(r)
		case trace.KindState:
			if c, ok := col[e.Host]; ok {
				add(ladRowT{kind: rowState, at: e.At, from: c, label: e.State.To, count: 1, key: fmt.Sprintf("s%d %s", c, e.State.To)})
			}
		case trace.KindCall:
			if c, ok := col[e.Host]; ok && !e.Call.Pending {
				add(ladRowT{kind: rowCall, at: e.At, from: c, label: trace.CallText(e.Call), count: 1,
					key: fmt.Sprintf("c%d %s %s", c, e.Call.Op, e.Call.Errno)})
			}
		case trace.KindNote:
			if e.Host == "" && strings.HasPrefix(e.Note, "== ") {
				add(ladRowT{kind: rowHeading, at: e.At, label: strings.Trim(e.Note, "= ")})
			}
		}
	}
	rows = fold(rows, o.Group)

	// Room between lifelines: the longest arrow label.
	gap := ladMinGap
	for _, r := range rows {
		if r.kind == rowSegment && r.to >= 0 && r.to != r.from && r.drop != "out" {
			gap = max(gap, textWidth(segmentLabel(r))/float64(max(1, abs(r.to-r.from)))+40)
		}
	}
	// Room left of the first lifeline for its state labels.
	stateCol := ladStateCol
	for _, r := range rows {
		if r.kind == rowState && r.from == 0 {
			stateCol = max(stateCol, textWidth(countLabel(r))+28)
		}
	}
	x := func(i int) float64 { return ladTimeCol + stateCol + float64(i)*gap }
	width := x(len(hosts)-1) + ladRight
	for _, r := range rows {
		switch r.kind {
		case rowCall, rowState:
			width = max(width, x(r.from)+16+textWidth(countLabel(r))+16)
		case rowSegment:
			if r.to < 0 { // a stub, its label right of it
				width = max(width, x(r.from)+46+textWidth(segmentLabel(r))+16)
			}
		}
	}
	head := ladHead
	if o.Title != "" {
		head += 20
		width = max(width, 16+textWidth(o.Title)*titleScale)
	}
	height := head + 8
	for _, r := range rows {
		if r.kind == rowBreak {
			height += ladBreak
		} else {
			height += ladRow
		}
	}
	height += 12

	var s svg
	s.open("tcplab-ladder", width, height, o.Title, ladderStyle)
	if o.Title != "" {
		s.text(8, 16, "title", "start", o.Title)
	}
	for i, h := range hosts {
		s.text(x(i), head-20, "host", "middle", h.Name)
		s.text(x(i), head-6, "addr", "middle", h.Addrs())
	}
	// Lifelines are drawn first, in pieces between breaks.
	y := head + 8
	top := y
	var body svg
	for _, r := range rows {
		switch r.kind {
		case rowBreak:
			for i := range hosts {
				s.line(x(i), top, x(i), y, "life")
				body.printf(`<path d="M%.1f %.1f l-6 6 l12 6 l-6 6" class="zig"/>`+"\n", x(i), y+2)
			}
			body.text(x(0)+14, y+ladBreak/2+4, "idle", "start", fmt.Sprintf("%v pass", r.until.Round(time.Millisecond)))
			y += ladBreak
			top = y
			continue
		case rowSegment:
			drawSegment(&body, r, x, y)
		case rowState:
			r.label = countLabel(r)
			lx := x(r.from)
			if r.from == 0 {
				body.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="16" rx="3" class="state"/>`+"\n", lx-8-textWidth(r.label)-6, y+3, textWidth(r.label)+8)
				body.text(lx-8-2, y+15, "statet", "end", r.label)
			} else {
				body.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="16" rx="3" class="state"/>`+"\n", lx+8-2, y+3, textWidth(r.label)+8)
				body.text(lx+8+2, y+15, "statet", "start", r.label)
			}
		case rowCall:
			body.text(x(r.from)+10, y+15, "call", "start", countLabel(r))
		case rowHeading:
			body.text(x(0)-stateCol+4, y+15, "heading", "start", r.label)
		}
		if r.kind != rowHeading {
			s.text(ladTimeCol-8, y+15, "time", "end", trace.FormatTime(r.at))
		}
		y += ladRow
	}
	for i := range hosts {
		s.line(x(i), top, x(i), y, "life")
	}
	s.b.WriteString(body.b.String())
	return s.close()
}

// drawSegment draws one arrow row.
func drawSegment(s *svg, r ladRowT, x func(int) float64, y float64) {
	ay := y + 17
	label := segmentLabel(r)
	class := "seg"
	if r.drop != "" {
		class = "seg dropped"
	}
	xa := x(r.from)
	switch {
	case r.drop == "out" || r.to < 0 || r.to == r.from:
		// A short stub beside the sender: the segment went nowhere.
		// Toward the receiver it never reached; to the right when no
		// host owns the address (there is room right of every lifeline).
		dir := 1.0
		if r.to >= 0 && r.to < r.from {
			dir = -1
		}
		xe := xa + dir*36
		s.line(xa, ay, xe, ay, class)
		if r.drop != "" {
			cross(s, xe, ay)
		} else {
			s.printf(`<path d="M%.1f %.1f l%.1f -4 v8 z" class="head"/>`+"\n", xe, ay, -dir*7)
		}
		anchor, tx := "start", xe+10
		if dir < 0 {
			anchor, tx = "end", xe-10
		}
		s.text(tx, ay+4, "segt", anchor, label)
	default:
		xb := x(r.to)
		dir := 1.0
		if xb < xa {
			dir = -1
		}
		end := xb - dir*2
		if r.drop == "in" {
			end = xb - dir*18 // it dies at the receiver's firewall
		}
		s.line(xa, ay, end, ay, class)
		if r.drop == "in" {
			cross(s, end, ay)
		} else {
			s.printf(`<path d="M%.1f %.1f l%.1f -4 v8 z" class="head"/>`+"\n", end, ay, -dir*8)
		}
		s.text((xa+xb)/2, ay-5, "segt", "middle", label)
	}
}

// countLabel is a state's or call's text, with the count of a folded run.
func countLabel(r ladRowT) string {
	if r.count > 1 {
		return fmt.Sprintf("%s ×%d", r.label, r.count)
	}
	return r.label
}

// segmentLabel is an arrow's text: flags and numbers, the count of a
// folded run, and what became of it.
func segmentLabel(r ladRowT) string {
	label := r.label
	if r.count > 1 {
		label = fmt.Sprintf("%s ×%d until %s", label, r.count, trace.FormatTime(r.until))
	}
	if r.comment != "" {
		label += " (" + r.comment + ")"
	}
	return label
}

func cross(s *svg, cx, cy float64) {
	s.printf(`<path d="M%.1f %.1f l8 8 M%.1f %.1f l8 -8" class="cross"/>`+"\n", cx-4, cy-4, cx-4, cy+4)
}

// fold merges repeated runs: a block of up to four rows (say a spoofed
// SYN, the SYN_RECV it makes and the SYN-ACK sent nowhere) that repeats
// at least group times in a row is drawn once, each row marked with its
// count. Breaks and headings never fold.
func fold(rows []ladRowT, group int) []ladRowT {
	if group == 0 {
		group = 4
	}
	if group < 0 {
		return rows
	}
	same := func(a, b int) bool { return rows[a].key != "" && rows[a].key == rows[b].key }
	var out []ladRowT
	for i := 0; i < len(rows); {
		bestL, bestR := 1, 1
		for l := 1; l <= 4 && i+l <= len(rows); l++ {
			r := 1
			for {
				next := i + r*l
				if next+l > len(rows) {
					break
				}
				ok := true
				for k := 0; k < l && ok; k++ {
					ok = same(i+k, next+k)
				}
				if !ok {
					break
				}
				r++
			}
			if r >= group && r*l > bestR*bestL {
				bestL, bestR = l, r
			}
		}
		if bestR >= group {
			for k := 0; k < bestL; k++ {
				r := rows[i+k]
				r.count, r.until = bestR, rows[i+(bestR-1)*bestL+k].at
				out = append(out, r)
			}
			i += bestR * bestL
			continue
		}
		out = append(out, rows[i])
		i++
	}
	return out
}

const ladderStyle = `
.title { font-weight: bold; font-size: 14px; }
.host { font-weight: bold; font-size: 13px; }
.addr, .time, .idle { fill: #555; }
.life { stroke: #444; stroke-width: 1.5; }
.zig { stroke: #444; stroke-width: 1.5; fill: none; }
.seg { stroke: #1f5fbf; stroke-width: 1.4; }
.seg.dropped { stroke: #c0392b; stroke-dasharray: 5 3; }
.head { fill: #1f5fbf; }
.cross { stroke: #c0392b; stroke-width: 2.5; }
.segt { fill: #10305f; paint-order: stroke; stroke: white; stroke-width: 4px; }
.state { fill: #fff4d6; stroke: #b08a2e; }
.statet { fill: #6b4e00; font-weight: bold; }
.call { fill: #2e7d32; font-style: italic; }
.heading { font-weight: bold; fill: #333; paint-order: stroke; stroke: white; stroke-width: 4px; }
`

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
