package full

import (
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/conformance"
)

func TestHarnessLine(t *testing.T) {
	ms := time.Millisecond
	rows := []diffRow{
		{steps: []time.Duration{1 * ms, 2 * ms, 3 * ms}, late: []conformance.LateStep{{Line: 4, Late: 30 * ms, Skipped: 2}}},
		{steps: []time.Duration{4 * ms, 50 * ms}},
		{verdict: verdictSkipped},
	}
	got := harnessLine(rows)
	want := "harness: the kernel started its 5 acting steps late by 3ms (median), 4ms (p90), 50ms (max); 1 step(s) later than 20ms had timings left out"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if harnessLine([]diffRow{{verdict: verdictSkipped}}) != "" {
		t.Error("no steps: want no line")
	}
	if !strings.Contains(conformanceModel, "step at line 12 started 63ms late") {
		t.Error("the model text lost its example")
	}
}
