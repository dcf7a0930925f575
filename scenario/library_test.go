package scenario

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files of the built-in scenarios")

// TestLibraryNames: the names are the CLI's public interface; every one
// the issue lists exists, each parses, and each has a title and an
// explanation.
func TestLibraryNames(t *testing.T) {
	have := map[string]bool{}
	for _, n := range Names() {
		have[n] = true
	}
	for _, n := range tourOrder {
		if !have[n] {
			t.Errorf("built-in scenario %q is missing", n)
		}
	}
	lib, err := Library()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range lib {
		if sc.Title == "" || sc.Explain == "" {
			t.Errorf("%s: needs a title and an explanation", sc.Name)
		}
		last := sc.Steps[len(sc.Steps)-1]
		if last.Kind != StepExpect {
			t.Errorf("%s: should end with expect lines, ends with %q", sc.Name, last.Text)
		}
	}
}

func runBuiltin(t testing.TB, name string, seed uint64) (*Result, []trace.Event) {
	t.Helper()
	sc, err := Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	var rec trace.Recorder
	res, err := Run(sc, NewSim(seed), Options{Sink: rec.Sink()})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res, rec.Events
}

// TestLibraryExpectations runs every built-in scenario and requires all
// its expectations to hold.
func TestLibraryExpectations(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			res, _ := runBuiltin(t, name, 1)
			if len(res.Checks) == 0 {
				t.Fatal("no expectations")
			}
			for _, c := range res.Checks {
				if !c.OK {
					t.Errorf("%s: %s\n    seen: %s", c.Pos, c.Text, c.Seen)
				}
			}
		})
	}
}

// TestLibraryGolden compares every built-in scenario's text output with
// the stored one; go test ./scenario -run Golden -update rewrites them.
func TestLibraryGolden(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			res, events := runBuiltin(t, name, 1)
			var b bytes.Buffer
			if err := WriteReport(&b, res, events, ReportOptions{Backend: "simulator, seed 1"}); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "golden", name+".txt"), b.Bytes())
		})
	}
	// One ladder, to keep the diagram's layout under test.
	res, events := runBuiltin(t, "hutu", 1)
	var b bytes.Buffer
	if err := WriteReport(&b, res, events, ReportOptions{Backend: "simulator, seed 1", Ladder: true}); err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "golden", "hutu.ladder.txt"), b.Bytes())
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./scenario -update creates it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs at line %d:\n got: %s\nwant: %s\n(go test ./scenario -update accepts the new output)", path, i+1, g, w)
			}
		}
	}
}

// TestLibraryDeterministic: the same seed gives a byte-identical trace,
// another seed another one (other ISNs and ports) with the same outcome.
func TestLibraryDeterministic(t *testing.T) {
	for _, name := range []string{"hutu", "accept-overflow", "syn-flood"} {
		_, a := runBuiltin(t, name, 1)
		_, b := runBuiltin(t, name, 1)
		res, c := runBuiltin(t, name, 7)
		var ta, tb, tc bytes.Buffer
		trace.WriteText(&ta, a, &trace.Text{AllTaps: true, Counters: true})
		trace.WriteText(&tb, b, &trace.Text{AllTaps: true, Counters: true})
		trace.WriteText(&tc, c, &trace.Text{AllTaps: true, Counters: true})
		if ta.String() != tb.String() {
			t.Errorf("%s: two runs with seed 1 differ", name)
		}
		if ta.String() == tc.String() {
			t.Errorf("%s: seeds 1 and 7 give the same trace", name)
		}
		if res.Failed() > 0 {
			t.Errorf("%s: with seed 7 %d expectations fail", name, res.Failed())
		}
	}
}

// BenchmarkTour runs the whole library once per iteration: the figure
// behind "tcplab tour completes in under a second".
func BenchmarkTour(b *testing.B) {
	lib, err := Library()
	if err != nil {
		b.Fatal(err)
	}
	var virtual time.Duration
	for b.Loop() {
		virtual = 0
		for _, sc := range lib {
			res, err := Run(sc, NewSim(1), Options{})
			if err != nil {
				b.Fatal(err)
			}
			virtual += res.End
		}
	}
	b.ReportMetric(virtual.Seconds(), "virtual-s/op")
}

// TestLibraryDoc keeps docs/library.md in step with the scenarios.
func TestLibraryDoc(t *testing.T) {
	var b bytes.Buffer
	if err := WriteLibraryDoc(&b); err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("..", "docs", "library.md"), b.Bytes())
}
