package scenario

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
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

// An until that is met moves the script's clock to the event that met
// it; one already true leaves it; one not met moves it by its bound. A
// repeated call's step is timed by its first call.
func TestStepTimesUntil(t *testing.T) {
	sc, err := Parse("t.tcplab", hosts+`server: listen 80
client: connect server:80
until client: conn connect returned within 1s
until client: conn connect returned within 1s
after 1s
until client: conn state CLOSED within 100ms
repeat 3 client: connect server:80 as c{i}
`)
	if err != nil {
		t.Fatal(err)
	}
	lag := 30 * time.Millisecond
	res, err := Run(sc, lagging{NewSim(1), lag}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 7 {
		t.Fatalf("%d step times", len(res.Steps))
	}
	met := res.Steps[3].Due // the second until: due when the first was met
	if met <= 0 || met >= lag || res.Steps[3].Start != met {
		t.Errorf("after the met until: start %v due %v, want both at the handshake's end (under %v)", res.Steps[3].Start, met, lag)
	}
	if res.Steps[4].Due != met {
		t.Errorf("an until already true moved the script's clock: %v, want %v", res.Steps[4].Due, met)
	}
	if d := res.Steps[5].Due; d != met+time.Second || res.Steps[5].Late() != lag {
		t.Errorf("after 1s: due %v late %v, want %v and %v", d, res.Steps[5].Late(), met+time.Second, lag)
	}
	rep := res.Steps[6]
	if rep.Due != met+time.Second+100*time.Millisecond || rep.Last != rep.Start {
		t.Errorf("after the unmet until: due %v, last %v start %v; want due %v and the repeat's calls at one instant",
			rep.Due, rep.Last, rep.Start, met+time.Second+100*time.Millisecond)
	}
}

// slowCalls stamps each call as started 1 ms after the one before, as
// kernel calls take real time.
type slowCalls struct{ *SimBackend }

func (b slowCalls) SetSink(s trace.Sink) {
	b.SimBackend.SetSink(func(e trace.Event) {
		if e.Kind == trace.KindCall {
			c := *e.Call
			c.Started += time.Duration(c.ID) * time.Millisecond
			e.Call = &c
		}
		s(e)
	})
}

func TestStepTimesLastCall(t *testing.T) {
	sc, err := Parse("t.tcplab", hosts+`server: listen 80
client: connect server:80 from 4000
repeat 3 client: connect server:80 as c{i}
`)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(sc, slowCalls{NewSim(1)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	one, rep := res.Steps[1], res.Steps[2]
	if one.Last <= one.Start || one.Late() != one.Last {
		t.Errorf("socket, bind, connect: start %v last %v late %v; want the connect's start as last and lateness", one.Start, one.Last, one.Late())
	}
	// The repeat's calls are meant for one instant: its last connect
	// (the ninth call) says how late it was.
	if rep.Start != 4*time.Millisecond || rep.Last != 9*time.Millisecond || rep.Late() != rep.Last {
		t.Errorf("repeat: start %v last %v late %v; want 4ms, 9ms (its last connect) and 9ms", rep.Start, rep.Last, rep.Late())
	}
}

// bursts records the Burst brackets the runner asks for, and the calls
// made inside them; like the kernel backend, it holds the events of a
// burst back until its end.
type bursts struct {
	*SimBackend
	on   bool
	log  []string
	sink trace.Sink
	held []trace.Event
}

func (b *bursts) SetSink(s trace.Sink) {
	b.sink = s
	b.SimBackend.SetSink(func(e trace.Event) {
		if b.on {
			b.held = append(b.held, e)
			return
		}
		s(e)
	})
}

func (b *bursts) Burst(on bool) {
	b.on = on
	b.log = append(b.log, fmt.Sprintf("burst %v", on))
	if !on {
		for _, e := range b.held {
			b.sink(e)
		}
		b.held = nil
	}
}

func (b *bursts) Call(host string, c tcp.Call) (tcp.Result, error) {
	if b.on {
		b.log = append(b.log, c.Op.String())
	}
	return b.SimBackend.Call(host, c)
}

func TestRepeatIsOneBurst(t *testing.T) {
	sc, err := Parse("t.tcplab", hosts+`server: listen 80
client: connect server:80 as one
repeat 2 client: connect server:80 as c{i}
`)
	if err != nil {
		t.Fatal(err)
	}
	b := &bursts{SimBackend: NewSim(1)}
	if _, err := Run(sc, b, Options{}); err != nil {
		t.Fatal(err)
	}
	want := "burst true socket connect socket connect burst false"
	if got := strings.Join(b.log, " "); got != want {
		t.Errorf("backend saw %q, want %q: only the repeat's calls, in one burst", got, want)
	}
}

// A call that returned at once within a burst is counted once, though its
// event comes after the burst.
func TestBurstEventsAfterTheCalls(t *testing.T) {
	sc, err := Parse("t.tcplab", hosts+`server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
client: write conn "hello"
after 100ms
repeat 2 server: read conn 3 nonblock
expect server: conn received = 5
expect server: conn received "hello"
`)
	if err != nil {
		t.Fatal(err)
	}
	b := &bursts{SimBackend: NewSim(1)}
	res, err := Run(sc, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("line %d: %s: seen %s", c.Pos.Line, c.Text, c.Seen)
		}
	}
}

// earlyReturn reports a blocking read's return inside its own Call, before
// the runner has recorded the call, as the kernel backend can when the
// data arrives just after the call looked (its Call flushes).
type earlyReturn struct {
	*SimBackend
	sink trace.Sink
}

func (b *earlyReturn) SetSink(s trace.Sink) { b.sink = s; b.SimBackend.SetSink(s) }

func (b *earlyReturn) Call(host string, c tcp.Call) (tcp.Result, error) {
	res, err := b.SimBackend.Call(host, c)
	if err == nil && res.Pending && c.Op == tcp.OpRead {
		b.sink(trace.Event{At: b.Now(), Host: host, Kind: trace.KindCall,
			Call: &trace.Call{ID: res.ID, Op: "read", Ret: 0, Started: b.Now()}})
	}
	return res, err
}

func TestCompletionBeforeItsCall(t *testing.T) {
	sc, err := Parse("t.tcplab", hosts+`server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: read conn
until server: conn read = 0 within 1s
`)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(sc, &earlyReturn{SimBackend: NewSim(1)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("line %d: %s: seen %s (a return reported before its call was lost)", c.Pos.Line, c.Text, c.Seen)
		}
	}
}
