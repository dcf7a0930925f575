package conformance

import (
	"fmt"
	"sort"
	"time"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// timer compares the times of items that agree, per cause: each item's
// time is measured from the start of its step on each run. The step of an
// item is the latest step the simulator started before the item's event
// (by the events' order, so that a timer firing at a step's own instant
// but before it belongs to the step before). The kernel's clock is
// measured from the same step's start on the kernel, so what the harness
// took before that step (building the lab, a late wake-up) does not
// count.
//
// Measured from where each run started the step, the step's own effects
// agree whatever the step's lateness. What a late step (more than
// LateLimit after it was due) moves is the reference of items that are
// not its own: an item that is off when measured from the step's start
// but on time from when the script wanted the step, or on time from an
// earlier late step whose lateness accounts for the gap (a timer that
// step armed), is the harness's, left out and reported with the step.
type timer struct {
	cfg      Config
	sim      []scenario.StepTime // the steps that act, on each run
	kern     []scenario.StepTime
	skipped  map[int]int // step index -> timings not compared
	compared int
}

// Acts tells whether a step does something to the hosts: waits, checks
// and notes lead to nothing, so an item is never theirs.
func Acts(k scenario.StepKind) bool {
	switch k {
	case scenario.StepCall, scenario.StepInject, scenario.StepRule, scenario.StepRemove, scenario.StepSet, scenario.StepProfile:
		return true
	}
	return false
}

func newTimer(sc *scenario.Scenario, sim, kern *scenario.Result, cfg Config) *timer {
	t := &timer{cfg: cfg, skipped: map[int]int{}}
	if sim == nil || kern == nil {
		return t
	}
	for i, st := range sim.Steps {
		if i < len(sc.Steps) && Acts(sc.Steps[i].Kind) {
			t.sim = append(t.sim, st)
			if i < len(kern.Steps) {
				t.kern = append(t.kern, kern.Steps[i])
			}
		}
	}
	return t
}

// ref is the index of the item's step in the simulator's run, -1 for
// time zero.
func (t *timer) ref(x item) int {
	return sort.Search(len(t.sim), func(i int) bool { return t.sim[i].Seq >= x.seq }) - 1
}

func (t *timer) late(j int) bool {
	return j >= 0 && t.kern[j].Late() > t.cfg.LateLimit
}

// offsets of an item pair from step j on each run.
func (t *timer) offsets(j int, x, y item) (time.Duration, time.Duration) {
	if j < 0 {
		return x.at, y.at
	}
	return x.at - t.sim[j].Start, y.at - t.kern[j].Start
}

// conn compares the times of a connection's agreeing items and reports
// the first beyond the tolerance, with the count of the others.
func (t *timer) conn(host, aspect string, p paired) (Difference, bool) {
	var first Difference
	bad := 0
	for i := range p.a {
		x, y := p.a[i], p.b[i]
		j := t.ref(x)
		if j >= len(t.kern) {
			continue // the kernel run stopped before that step
		}
		tol := t.cfg.Tolerance(x.at)
		xo, yo := t.offsets(j, x, y)
		if (yo - xo).Abs() <= tol {
			t.compared++
			continue
		}
		// Off when measured from where the step started, but on time
		// from where the script wanted it: the item is not the step's
		// own (a timer of an earlier step), and the step's lateness
		// moved the reference.
		if t.late(j) && (y.at-t.kern[j].Due-xo).Abs() <= tol {
			t.skipped[j]++
			continue
		}
		if k := t.explainedBy(j, x, y, (yo - xo).Abs(), tol); k >= 0 {
			t.skipped[k]++
			continue
		}
		t.compared++
		bad++
		if bad > 1 {
			continue
		}
		from := "time zero"
		if j >= 0 {
			from = fmt.Sprintf("the step at line %d", t.sim[j].Pos.Line)
		}
		first = Difference{Host: host, Aspect: AspectTiming, At: x.at, Conn: p.key, Sim: x.text, Kernel: x.text,
			Text: fmt.Sprintf("%s%s at %ss in the simulator, %ss on the kernel; from %s: simulator %s, kernel %s (%s apart, tolerance %s)",
				keyPrefix(p.key), x.text, trace.FormatTime(x.at), trace.FormatTime(y.at), from, span(xo), span(yo),
				(yo - xo).Abs().Round(time.Microsecond), tol.Round(time.Millisecond))}
	}
	if bad == 0 {
		return Difference{}, false
	}
	if aspect != AspectStates {
		first.Text = aspectWord(aspect) + " " + first.Text
	}
	if bad > 1 {
		first.Text += fmt.Sprintf(" (and %d more)", bad-1)
	}
	return first, true
}

func keyPrefix(k string) string {
	if k == "" {
		return ""
	}
	return k + ": "
}

func aspectWord(aspect string) string {
	if aspect == AspectPackets {
		return "segment"
	}
	return "call"
}

func span(d time.Duration) string {
	if d < 0 {
		return "-" + trace.FormatTime(-d) + "s"
	}
	return "+" + trace.FormatTime(d) + "s"
}

// explainedBy finds an earlier late step from which the item's timing
// agrees: the item came of that step (a timer it armed), and the step's
// lateness is what moved it. -1 when none.
func (t *timer) explainedBy(j int, x, y item, off, tol time.Duration) int {
	for k := j - 1; k >= 0; k-- {
		// The step's lateness must be able to account for the gap.
		if !t.late(k) || t.kern[k].Late()+tol < off {
			continue
		}
		xo, yo := t.offsets(k, x, y)
		if (yo - xo).Abs() <= tol {
			return k
		}
	}
	return -1
}

// lateSteps lists the late steps that left timings uncompared.
func (t *timer) lateSteps() []LateStep {
	var out []LateStep
	for j, n := range t.skipped {
		out = append(out, LateStep{Line: t.kern[j].Pos.Line, Late: t.kern[j].Late(), Skipped: n})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Line < out[b].Line })
	return out
}
