package draw

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// run plays a scenario in the simulator and records its events.
func run(t testing.TB, sc *scenario.Scenario) (*scenario.Result, []trace.Event) {
	t.Helper()
	var rec trace.Recorder
	res, err := scenario.Run(sc, scenario.NewSim(1), scenario.Options{Sink: rec.Sink()})
	if err != nil {
		t.Fatal(err)
	}
	return res, rec.Events
}

func runLibrary(t testing.TB, name string) (*scenario.Scenario, []trace.Event) {
	t.Helper()
	sc, err := scenario.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	_, events := run(t, sc)
	return sc, events
}

// eachBuiltin runs every built-in scenario as a subtest.
func eachBuiltin(t *testing.T, f func(t *testing.T, sc *scenario.Scenario, res *scenario.Result, events []trace.Event)) {
	lib, err := scenario.Library()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range lib {
		t.Run(sc.Name, func(t *testing.T) {
			res, events := run(t, sc)
			f(t, sc, res, events)
		})
	}
}

// largest is the built-in run with the most events (syn-flood).
func largest(b *testing.B) (*scenario.Result, []trace.Event) {
	lib, err := scenario.Library()
	if err != nil {
		b.Fatal(err)
	}
	var best *scenario.Result
	var events []trace.Event
	for _, sc := range lib {
		res, ev := run(b, sc)
		if len(ev) > len(events) {
			best, events = res, ev
		}
	}
	b.ReportMetric(float64(len(events)), "events")
	return best, events
}

// box is where a text element's glyphs are, as the picture's own font
// metrics place them.
type box struct {
	x0, y0, x1, y1 float64
	text           string
}

// texts parses an SVG and returns its text boxes and how many elements of
// each class it has.
func texts(t *testing.T, doc string) ([]box, map[string]int) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	var boxes []box
	classes := map[string]int{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		attr := map[string]string{}
		for _, a := range se.Attr {
			attr[a.Name.Local] = a.Value
		}
		for _, c := range strings.Fields(attr["class"]) {
			classes[c]++
		}
		if se.Name.Local != "text" {
			continue
		}
		var content string
		if err := d.DecodeElement(&content, &se); err != nil {
			t.Fatal(err)
		}
		x, _ := strconv.ParseFloat(attr["x"], 64)
		y, _ := strconv.ParseFloat(attr["y"], 64)
		w := textWidth(content)
		switch attr["text-anchor"] {
		case "middle":
			x -= w / 2
		case "end":
			x -= w
		}
		boxes = append(boxes, box{x, y - fontSize + 2, x + w, y + 2, content})
	}
	return boxes, classes
}

// Every built-in scenario draws: well-formed SVG, one arrow per segment row
// (folded runs count once), a cross per dropped segment, a state label per
// state change, and no label over another.
func TestLadderLibrary(t *testing.T) {
	eachBuiltin(t, func(t *testing.T, sc *scenario.Scenario, _ *scenario.Result, events []trace.Event) {
		doc := Ladder(sc.TraceHosts(), events, LadderOptions{Title: sc.Name})
		boxes, _ := texts(t, doc)
		// Unfolded, every state change and segment has its row.
		_, classes := texts(t, Ladder(sc.TraceHosts(), events, LadderOptions{Group: -1}))
		states, sent := 0, 0
		for _, e := range events {
			switch {
			case e.Kind == trace.KindState:
				states++
			case e.Kind == trace.KindPacket && e.Packet.Dir == trace.Out:
				sent++
			}
		}
		if classes["statet"] != states {
			t.Errorf("%d state labels, %d state changes", classes["statet"], states)
		}
		if classes["seg"] != sent {
			t.Errorf("%d arrows for %d segments sent", classes["seg"], sent)
		}
		if classes["cross"] != classes["dropped"] {
			t.Errorf("%d crosses, %d dropped arrows", classes["cross"], classes["dropped"])
		}
		for i := range boxes {
			for j := i + 1; j < len(boxes); j++ {
				a, b := boxes[i], boxes[j]
				if a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1 {
					t.Errorf("labels overlap: %q at (%.0f,%.0f) and %q at (%.0f,%.0f)", a.text, a.x0, a.y0, b.text, b.x0, b.y0)
				}
			}
		}
		if dir := os.Getenv("TCPLAB_SVG_DIR"); dir != "" {
			os.WriteFile(filepath.Join(dir, sc.Name+".svg"), []byte(doc), 0o644)
		}
	})
}

// A flood of like segments folds into one arrow marked with its count.
func TestLadderFolds(t *testing.T) {
	sc, events := runLibrary(t, "syn-flood")
	folded := Ladder(sc.TraceHosts(), events, LadderOptions{})
	all := Ladder(sc.TraceHosts(), events, LadderOptions{Group: -1})
	_, cf := texts(t, folded)
	_, ca := texts(t, all)
	if cf["seg"] >= ca["seg"] || !strings.Contains(folded, "×") {
		t.Errorf("folding left %d arrows of %d", cf["seg"], ca["seg"])
	}
}

func BenchmarkLadderLargest(b *testing.B) {
	res, events := largest(b)
	for b.Loop() {
		Ladder(res.Scenario.TraceHosts(), events, LadderOptions{})
	}
}

// The state diagram of every built-in scenario: well-formed, a box per
// state, every legal transition, a badge per edge each host took, and a
// legend line per state change.
func TestStatesLibrary(t *testing.T) {
	eachBuiltin(t, func(t *testing.T, sc *scenario.Scenario, _ *scenario.Result, events []trace.Event) {
		doc := States(sc.HostNames(), events, sc.Name)
		_, classes := texts(t, doc)
		changes, edges := 0, map[string]bool{}
		for _, e := range events {
			if e.Kind == trace.KindState {
				changes++
				edges[e.Host+" "+e.State.From+">"+nodeFor(e.State.From, e.State.To)] = true
			}
		}
		if classes["node"] != 12 || classes["edge"] != len(tcp.Transitions()) {
			t.Errorf("%d boxes and %d edges, want 12 and %d", classes["node"], classes["edge"], len(tcp.Transitions()))
		}
		if classes["legend"] != changes {
			t.Errorf("%d legend lines, %d state changes", classes["legend"], changes)
		}
		if classes["badge"] != len(edges) || classes["path"] != len(edges) {
			t.Errorf("%d badges and %d highlighted edges, want %d", classes["badge"], classes["path"], len(edges))
		}
		if dir := os.Getenv("TCPLAB_SVG_DIR"); dir != "" {
			os.WriteFile(filepath.Join(dir, sc.Name+"-states.svg"), []byte(doc), 0o644)
		}
	})
}

func BenchmarkStatesLargest(b *testing.B) {
	res, events := largest(b)
	for b.Loop() {
		States(res.Scenario.HostNames(), events, "")
	}
}

// The HTML report of every built-in scenario is one self-contained page:
// both pictures inline, a row per shown event, a socket table per state
// change, and nothing fetched from elsewhere.
func TestHTMLLibrary(t *testing.T) {
	eachBuiltin(t, func(t *testing.T, sc *scenario.Scenario, res *scenario.Result, events []trace.Event) {
		var b strings.Builder
		if err := HTML(&b, res, events, ReportOptions{}); err != nil {
			t.Fatal(err)
		}
		page := b.String()
		shown, changes := 0, 0
		view := &trace.Text{}
		for i := range events {
			if _, _, ok := view.Parts(&events[i]); ok {
				shown++
			}
			if events[i].Kind == trace.KindState {
				changes++
			}
		}
		for what, want := range map[string]int{
			`<svg xmlns="http://www.w3.org/2000/svg" id="tcplab-ladder"`: 1,
			`<svg xmlns="http://www.w3.org/2000/svg" id="tcplab-states"`: 1,
			"<details>":   changes,
			`<tr class="`: shown,
		} {
			if n := strings.Count(page, what); n != want {
				t.Errorf("%d of %q, want %d", n, what, want)
			}
		}
		for _, ext := range []string{"src=", "href=", "@import", "url(http"} {
			if strings.Contains(page, ext) {
				t.Errorf("the page refers to something outside it: %q", ext)
			}
		}
		if !strings.Contains(page, fmt.Sprintf("%d of %d held", len(res.Checks)-res.Failed(), len(res.Checks))) {
			t.Error("no expectation summary")
		}
		if dir := os.Getenv("TCPLAB_SVG_DIR"); dir != "" {
			os.WriteFile(filepath.Join(dir, sc.Name+".html"), []byte(page), 0o644)
		}
	})
}

func BenchmarkHTMLLargest(b *testing.B) {
	best, events := largest(b)
	for b.Loop() {
		if err := HTML(io.Discard, best, events, ReportOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// Odd text (markup, quotes, control characters) stays well-formed, and the
// pictures are the same on every call.
func TestPicturesOddTextAndDeterminism(t *testing.T) {
	sc, events := runLibrary(t, "hutu")
	title := "a <b> & \"c\" \x01\x1b[0m é"
	doc := Ladder(sc.TraceHosts(), events, LadderOptions{Title: title})
	texts(t, doc)
	st := States([]string{"client", "server"}, events, title)
	texts(t, st)
	if !strings.Contains(doc, "a &lt;b&gt; &amp; &quot;c&quot; \uFFFD\uFFFD[0m é") {
		t.Errorf("title not escaped as expected")
	}
	if States([]string{"client", "server"}, events, "") != States([]string{"client", "server"}, events, "") ||
		Ladder(sc.TraceHosts(), events, LadderOptions{}) != Ladder(sc.TraceHosts(), events, LadderOptions{}) {
		t.Error("two drawings of one run differ")
	}
}
