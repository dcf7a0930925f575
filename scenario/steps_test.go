package scenario

import (
	"testing"
	"time"
)

// In the simulator every step starts when the script wants it: Start is
// Due for every step of every built-in scenario.
func TestStepTimesSimulator(t *testing.T) {
	lib, err := Library()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range lib {
		res, err := Run(sc, NewSim(1), Options{})
		if err != nil {
			t.Fatalf("%s: %v", sc.Name, err)
		}
		if len(res.Steps) != len(sc.Steps) {
			t.Errorf("%s: %d step times for %d steps", sc.Name, len(res.Steps), len(sc.Steps))
		}
		for i, st := range res.Steps {
			if st.Start != st.Due || st.Pos != sc.Steps[i].Pos {
				t.Errorf("%s: step %d (line %d): start %v, due %v", sc.Name, i, st.Pos.Line, st.Start, st.Due)
			}
			if i > 0 && (st.Start < res.Steps[i-1].Start || st.Seq < res.Steps[i-1].Seq) {
				t.Errorf("%s: step %d goes back in time", sc.Name, i)
			}
		}
	}
}

// lagging is a backend whose waits all end lag late, as the kernel's do
// on a busy machine.
type lagging struct {
	*SimBackend
	lag time.Duration
}

func (b lagging) RunUntil(t time.Duration, stop func() bool) bool {
	return b.SimBackend.RunUntil(t+b.lag, stop)
}

// A late wait makes the step after it late, and only that one: the next
// wait is measured on the script's clock, so lateness does not add up.
func TestStepTimesLateHarness(t *testing.T) {
	sc, err := Parse("t.tcplab", hosts+`server: listen 80
after 1s
client: connect server:80
after 1s
client: connect server:80 as c2
at 3s
client: close conn
`)
	if err != nil {
		t.Fatal(err)
	}
	lag := 30 * time.Millisecond
	res, err := Run(sc, lagging{NewSim(1), lag}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ start, due time.Duration }{
		{0, 0}, {0, 0}, // listen, after
		{time.Second + lag, time.Second}, {time.Second + lag, time.Second}, // connect, after
		{2*time.Second + lag, 2 * time.Second}, {2*time.Second + lag, 2 * time.Second}, // connect, at
		{3*time.Second + lag, 3 * time.Second}, // close
	}
	if len(res.Steps) != len(want) {
		t.Fatalf("%d step times, want %d: %+v", len(res.Steps), len(want), res.Steps)
	}
	for i, w := range want {
		st := res.Steps[i]
		if st.Start != w.start || st.Due != w.due || st.Late() != w.start-w.due {
			t.Errorf("step %d (line %d): start %v due %v late %v, want start %v due %v", i, st.Pos.Line, st.Start, st.Due, st.Late(), w.start, w.due)
		}
	}
}
