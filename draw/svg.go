// Package draw renders runs as pictures: the ladder diagram and the state
// diagram as SVG, for files, the HTML report and the web page.
package draw

import (
	"fmt"
	"strings"
)

// Text metrics of the monospace font the pictures use: every width is
// computed from them, which is how labels are kept from overlapping.
const (
	fontSize  = 12
	charWidth = 7.3 // DejaVu Sans Mono at 12 px; other monospace fonts are narrower
)

func textWidth(s string) float64 { return float64(len([]rune(s))) * charWidth }

// svg accumulates one SVG document.
type svg struct {
	b strings.Builder
}

func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&quot;")
		default:
			if r < 0x20 && r != '\t' && r != '\n' && r != '\r' {
				r = '\uFFFD' // XML 1.0 has no place for other control characters
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (s *svg) printf(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

// text writes a label; anchor is start, middle or end.
func (s *svg) text(x, y float64, class, anchor, txt string) {
	s.printf(`<text x="%.1f" y="%.1f" class="%s" text-anchor="%s">%s</text>`+"\n", x, y, class, anchor, esc(txt))
}

func (s *svg) line(x1, y1, x2, y2 float64, class string) {
	s.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="%s"/>`+"\n", x1, y1, x2, y2, class)
}

// open starts the document. Its style rules are scoped to its id, so that
// two pictures inline in one HTML page keep their own looks.
func (s *svg) open(id string, width, height float64, title, style string) {
	s.printf(`<svg xmlns="http://www.w3.org/2000/svg" id="%s" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="%d">`+"\n", id, width, height, width, height, fontSize)
	var scoped strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(style), "\n") {
		scoped.WriteString("#" + id + " " + strings.ReplaceAll(l, ", .", ", #"+id+" .") + "\n")
	}
	s.printf("<title>%s</title>\n<style>\n%s</style>\n", esc(title), scoped.String())
	s.printf(`<rect x="0" y="0" width="%.0f" height="%.0f" fill="white"/>`+"\n", width, height)
}

func (s *svg) close() string {
	s.b.WriteString("</svg>\n")
	return s.b.String()
}
