package draw

import (
	"fmt"
	"math"
	"strings"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// node is a state's box in the diagram.
type node struct{ x, y float64 }

// The layout of RFC 9293 figure 5: CLOSED on top (where connections start
// and where LISTEN and SYN_SENT return) and again at the bottom (where the
// others end).
var stateNodes = map[string]node{
	"CLOSED":      {400, 50},
	"LISTEN":      {400, 135},
	"SYN_RECV":    {170, 225},
	"SYN_SENT":    {630, 225},
	"ESTABLISHED": {400, 315},
	"FIN_WAIT1":   {170, 405},
	"CLOSE_WAIT":  {630, 405},
	"FIN_WAIT2":   {170, 495},
	"CLOSING":     {400, 495},
	"LAST_ACK":    {630, 495},
	"TIME_WAIT":   {400, 585},
	"CLOSED ":     {400, 675}, // the bottom CLOSED
}

// stateOrder is the order boxes are drawn and searched in, so that the
// picture is the same on every run.
var stateOrder = []string{"CLOSED", "LISTEN", "SYN_RECV", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSE_WAIT",
	"FIN_WAIT2", "CLOSING", "LAST_ACK", "TIME_WAIT", "CLOSED "}

const (
	boxW, boxH = 124.0, 30.0
	legendX    = 790.0
	statesH    = 715.0
)

// hostColors tell the hosts' paths apart.
var hostColors = []string{"#1f5fbf", "#c0392b", "#2e7d32", "#8e44ad", "#d35400", "#16a085"}

// nodeFor places a transition's target: a connection that ends goes to
// the bottom CLOSED unless it never got past LISTEN or SYN_SENT.
func nodeFor(from, to string) string {
	if to == "CLOSED" && from != "LISTEN" && from != "SYN_SENT" && from != "CLOSED" {
		return "CLOSED "
	}
	return to
}

// curve is an edge: a quadratic Bézier from one box's border to
// another's.
type curve struct{ x0, y0, cx, cy, x1, y1 float64 }

func (c curve) at(t float64) (float64, float64) {
	u := 1 - t
	return u*u*c.x0 + 2*u*t*c.cx + t*t*c.x1, u*u*c.y0 + 2*u*t*c.cy + t*t*c.y1
}

func (c curve) d() string {
	return fmt.Sprintf("M%.1f %.1f Q%.1f %.1f %.1f %.1f", c.x0, c.y0, c.cx, c.cy, c.x1, c.y1)
}

// border is where the ray from a box's centre toward (tx, ty) leaves it.
func border(n node, tx, ty float64) (float64, float64) {
	dx, dy := tx-n.x, ty-n.y
	t := math.Inf(1)
	if dx != 0 {
		t = boxW / 2 / math.Abs(dx)
	}
	if dy != 0 {
		t = math.Min(t, boxH/2/math.Abs(dy))
	}
	return n.x + dx*t, n.y + dy*t
}

// inBox reports whether a point is inside a state's box (with a margin).
func inBox(x, y float64, n node, margin float64) bool {
	return math.Abs(x-n.x) < boxW/2+margin && math.Abs(y-n.y) < boxH/2+margin
}

// route draws the edge between two states: straight when nothing is in
// the way, otherwise bowed to one side until it misses every other box.
// off shifts it sideways (two edges between the same boxes).
func route(a, b string, off float64) curve {
	A, B := stateNodes[a], stateNodes[b]
	dx, dy := B.x-A.x, B.y-A.y
	l := math.Hypot(dx, dy)
	nx, ny := -dy/l, dx/l
	var c curve
	for _, bow := range []float64{0, 70, -70, 130, -130, 200, -200, 280, -280} {
		mx, my := (A.x+B.x)/2+nx*(bow+off), (A.y+B.y)/2+ny*(bow+off)
		// The control point that puts the curve's middle at (mx, my).
		cx, cy := 2*mx-(A.x+B.x)/2, 2*my-(A.y+B.y)/2
		if bow == 0 {
			cx, cy = mx, my
		}
		c.cx, c.cy = cx, cy
		c.x0, c.y0 = border(A, cx+nx*off, cy+ny*off)
		c.x1, c.y1 = border(B, cx+nx*off, cy+ny*off)
		clear := true
		for _, name := range stateOrder {
			n := stateNodes[name]
			if name == a || name == b {
				continue
			}
			for t := 0.05; t < 1 && clear; t += 0.05 {
				if x, y := c.at(t); inBox(x, y, n, 6) {
					clear = false
				}
			}
		}
		if clear {
			return c
		}
	}
	return c
}

type step struct {
	n        int
	from, to string
	at       string
	cause    string
	local    string
}

// States draws RFC 9293's state diagram with the path each host's
// connections took: every legal transition in grey (dashed when RFC 9293's
// figure does not draw it), the edges a host took in its colour with
// numbered badges on them, and a legend listing each step in order with
// its time, connection and cause.
func States(hosts []string, events []trace.Event, title string) string {
	steps := map[string][]step{}
	for i := range events {
		e := &events[i]
		if e.Kind != trace.KindState {
			continue
		}
		st := steps[e.Host]
		steps[e.Host] = append(st, step{n: len(st) + 1, from: e.State.From, to: e.State.To,
			at: trace.FormatTime(e.At), cause: e.State.Cause, local: e.Local.String()})
	}
	// Legend lines, to size the picture.
	var legend []string
	var legendClass []int
	for hi, h := range hosts {
		legend = append(legend, h)
		legendClass = append(legendClass, -1-hi)
		for _, s := range steps[h] {
			legend = append(legend, fmt.Sprintf("%2d  %s  %s → %s  %s  (%s)", s.n, s.at, s.from, s.to, s.cause, s.local))
			legendClass = append(legendClass, hi)
		}
	}
	width := legendX + 40
	for _, l := range legend {
		width = max(width, legendX+textWidth(l)+20)
	}
	height := max(statesH, 60+float64(len(legend))*17+20)

	var s svg
	s.open("tcplab-states", width, height, title, statesStyle)
	if title != "" {
		s.text(8, 16, "title", "start", title)
	}
	s.printf(`<defs><marker id="ah" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" fill="#999"/></marker>`)
	for i, c := range hostColors {
		s.printf(`<marker id="ah%d" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="3.5" markerHeight="3.5" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" fill="%s"/></marker>`, i, c)
	}
	s.printf("</defs>\n")
	// Every legal transition, in grey.
	pairs := map[[2]string]bool{}
	for _, t := range tcp.Transitions() {
		pairs[[2]string{t.From.String(), nodeFor(t.From.String(), t.To.String())}] = true
	}
	offset := func(a, b string) float64 {
		if pairs[[2]string{b, a}] {
			return 5 // both ways: draw them apart
		}
		return 0
	}
	for _, t := range tcp.Transitions() {
		a, b := t.From.String(), nodeFor(t.From.String(), t.To.String())
		class := "edge"
		if !t.Figure {
			class = "edge extra"
		}
		s.printf(`<path d="%s" class="%s" marker-end="url(#ah)"><title>%s -> %s: %s</title></path>`+"\n",
			route(a, b, offset(a, b)).d(), class, esc(t.From.String()), esc(t.To.String()), esc(t.Event))
	}
	// Badges go where they cover no box and no other badge.
	type rect struct{ x0, y0, x1, y1 float64 }
	var placed []rect
	free := func(r rect) bool {
		for _, p := range placed {
			if r.x0 < p.x1 && p.x0 < r.x1 && r.y0 < p.y1 && p.y0 < r.y1 {
				return false
			}
		}
		for _, name := range stateOrder {
			n := stateNodes[name]
			if r.x0 < n.x+boxW/2 && n.x-boxW/2 < r.x1 && r.y0 < n.y+boxH/2 && n.y-boxH/2 < r.y1 {
				return false
			}
		}
		return true
	}
	// The paths: each edge a host took once, badges with its step numbers.
	for hi, h := range hosts {
		color := hi % len(hostColors)
		taken := map[[2]string][]int{}
		causes := map[[2]string][]string{}
		var order [][2]string
		for _, st := range steps[h] {
			k := [2]string{st.from, nodeFor(st.from, st.to)}
			if _, ok := stateNodes[k[0]]; !ok {
				continue
			}
			if _, ok := stateNodes[k[1]]; !ok {
				continue
			}
			if taken[k] == nil {
				order = append(order, k)
			}
			taken[k] = append(taken[k], st.n)
			causes[k] = append(causes[k], fmt.Sprintf("%d. %s: %s", st.n, h, st.cause))
		}
		for _, k := range order {
			c := route(k[0], k[1], offset(k[0], k[1]))
			// The causes show when the pointer rests on the edge.
			s.printf(`<path d="%s" class="path" stroke="%s" marker-end="url(#ah%d)"><title>%s</title></path>`+"\n",
				c.d(), hostColors[color], color, esc(strings.Join(causes[k], "\n")))
			label := badgeText(taken[k])
			w := textWidth(label) + 8
			bx, by := c.at(0.5)
			for _, f := range []float64{0.5, 0.35, 0.65, 0.25, 0.75, 0.15, 0.85, 0.45, 0.55} {
				x, y := c.at(f)
				if free(rect{x - w/2 - 2, y - 10, x + w/2 + 2, y + 10}) {
					bx, by = x, y
					break
				}
			}
			placed = append(placed, rect{bx - w/2 - 2, by - 10, bx + w/2 + 2, by + 10})
			s.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="16" rx="8" fill="%s" class="badge"/>`+"\n", bx-w/2, by-8, w, hostColors[color])
			s.text(bx, by+4, "badget", "middle", label)
		}
	}
	// The states, over the edges.
	for _, name := range stateOrder {
		n := stateNodes[name]
		s.printf(`<rect x="%.1f" y="%.1f" width="%.0f" height="%.0f" rx="6" class="node"/>`+"\n", n.x-boxW/2, n.y-boxH/2, boxW, boxH)
		s.text(n.x, n.y+4, "nodet", "middle", strings.TrimSpace(name))
	}
	// The legend.
	y := 56.0
	for i, l := range legend {
		if c := legendClass[i]; c < 0 {
			y += 6
			s.printf(`<text x="%.1f" y="%.1f" class="lhost" fill="%s">%s</text>`+"\n", legendX, y, hostColors[(-1-c)%len(hostColors)], esc(l))
		} else {
			s.printf(`<text x="%.1f" y="%.1f" class="legend" xml:space="preserve">%s</text>`+"\n", legendX+8, y, esc(l))
		}
		y += 17
	}
	return s.close()
}

// badgeText lists step numbers, the first few and the count beyond.
func badgeText(ns []int) string {
	var parts []string
	for i, n := range ns {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("+%d", len(ns)-3))
			break
		}
		parts = append(parts, fmt.Sprint(n))
	}
	return strings.Join(parts, ",")
}

const statesStyle = `
.title { font-weight: bold; font-size: 14px; }
.node { fill: #fff4d6; stroke: #b08a2e; stroke-width: 1.5; }
.nodet { font-weight: bold; fill: #6b4e00; }
.edge { stroke: #999; stroke-width: 1.2; }
.edge.extra { stroke-dasharray: 4 3; }
.edge, .path { fill: none; }
.path { stroke-width: 3; opacity: 0.85; }
.badget { fill: white; font-size: 11px; font-weight: bold; }
.lhost { font-weight: bold; }
.legend { fill: #222; }
`
