package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/trace"
)

// flood is the runaway line at the most a scenario may inject.
const flood = `host attacker 10.0.9.1
host server 10.0.0.2
server: listen 80
attacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 1us
after 1s
expect server: count SYN_RECV >= 0
`

func runFlood(t *testing.T, opt Options) (*Result, *StoppedError, []trace.Event) {
	t.Helper()
	sc, err := Parse("flood.tcplab", flood)
	if err != nil {
		t.Fatal(err)
	}
	var rec trace.Recorder
	opt.Sink = rec.Sink()
	res, err := Run(sc, NewSim(1), opt)
	var se *StoppedError
	if !errors.As(err, &se) {
		t.Fatalf("the run was not stopped: err %v", err)
	}
	if res == nil {
		t.Fatal("a stopped run returned no result")
	}
	return res, se, rec.Events
}

// TestBudgetStopsRunaway: the default budget stops a flood of injected
// SYNs at its event cap, names the step the run was at and the inject
// line sending them, and keeps what happened up to then.
func TestBudgetStopsRunaway(t *testing.T) {
	res, se, events := runFlood(t, Options{})
	if n := len(events); n > DefaultBudget.MaxEvents+1 || n < DefaultBudget.MaxEvents {
		t.Fatalf("%d events recorded, want the cap %d (+1 note)", n, DefaultBudget.MaxEvents)
	}
	msg := se.Error()
	for _, want := range []string{"flood.tcplab:5:", "200000 events", "line 4 injects 100000 segments"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	last := events[len(events)-1]
	if last.Kind != trace.KindNote || !strings.Contains(last.Note, "the run stopped here") {
		t.Errorf("last event %v is not the stop note", last.String())
	}
	if res.End != se.At || res.End <= 0 || res.End >= 1e9 {
		t.Errorf("result ends at %v, stop at %v", res.End, se.At)
	}
	if len(res.Checks) != 0 {
		t.Errorf("the expect after the stop was checked: %v", res.Checks)
	}
	if len(res.States) != 2 || len(res.States[1].States) == 0 {
		t.Errorf("states of the partial run: %v", res.States)
	}
}

// TestBudgetBytes: a run whose events carry more data than the budget's
// bytes stops too.
func TestBudgetBytes(t *testing.T) {
	src := served
	for i := 0; i < 40; i++ {
		src += "client: write conn 60000 bytes\nafter 200ms\nserver: read conn 60000\n"
	}
	sc, err := Parse("big.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(sc, NewSim(1), Options{Budget: Budget{MaxBytes: 1 << 20}})
	var se *StoppedError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "more than 1 MB") {
		t.Fatalf("err %v", err)
	}
	// The same run under the default budget finishes.
	if _, err := Run(sc, NewSim(1), Options{}); err != nil {
		t.Fatal(err)
	}
}

// TestContextStopsRun: a run stops at its next event once its context is
// cancelled, with the context's cause, and sends nothing after the stop.
func TestContextStopsRun(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sc, _ := Parse("flood.tcplab", flood)
	n, after := 0, 0
	stopped := false
	sink := func(e trace.Event) {
		n++
		if stopped {
			after++
		}
		if n == 1000 {
			cancel(errors.New("interrupted by a test"))
			stopped = true
		}
	}
	res, err := Run(sc, NewSim(1), Options{Context: ctx, Sink: sink})
	var se *StoppedError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "interrupted by a test") || res == nil {
		t.Fatalf("err %v", err)
	}
	// The run's own stop note; at most the events of the instant being
	// processed may precede it.
	if after > 1 {
		t.Fatalf("%d events after the cancellation", after)
	}
}

// TestParseBounded: inputs that used to take minutes or gigabytes are
// refused early with a short message.
func TestParseBounded(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 100_000; i++ {
		fmt.Fprintf(&b, "host h%d 10.%d.%d.%d\n", i, i>>16&255, i>>8&255, i&255+1)
	}
	_, err := Parse("hosts.tcplab", b.String())
	if err == nil || !strings.Contains(err.Error(), "hosts.tcplab:65:6: more than 64 hosts") {
		t.Fatalf("100,000 hosts: %v", err)
	}

	long := strings.Repeat("x", 1<<20)
	_, err = Parse("word.tcplab", "host "+long+" 10.0.0.1\n")
	if err == nil || len(err.Error()) > 400 || !strings.Contains(err.Error(), "1048576 bytes") {
		t.Fatalf("a 1 MB word: %.400v", err)
	}
	_, err = Parse("call.tcplab", "host a 10.0.0.1\na: "+long+"\n")
	if err == nil || len(err.Error()) > 600 {
		t.Fatalf("a 1 MB call: %.600v", err)
	}
	_, err = Parse("str.tcplab", "host a 10.0.0.1\na: write c \""+long+"x\"\n")
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("a long string: %.400v", err)
	}

	var reps strings.Builder
	reps.WriteString(hosts + "server: listen 80\n")
	for i := 0; i < 11; i++ {
		fmt.Fprintf(&reps, "repeat 10000 client: connect server:80 as c%dx{i}\n", i)
	}
	_, err = Parse("repeat.tcplab", reps.String())
	if err == nil || !strings.Contains(err.Error(), "repeat.tcplab:14:8: this line brings the repeated calls to 110000") {
		t.Fatalf("repeats: %v", err)
	}

	_, err = Parse("inject.tcplab", hosts+`client: inject [S] from 10.0.9.1:1 to server:80 count 60000 every 1us
client: inject [S] from 10.0.9.2:1 to server:80 count 60000 every 1us
`)
	if err == nil || !strings.Contains(err.Error(), "inject.tcplab:4:1: this line brings the segments injected to 120000") {
		t.Fatalf("injections: %v", err)
	}
}

// TestLoadBounded: a file is read up to MaxSource, so /dev/zero or a huge
// file is an error, not gigabytes of memory.
func TestLoadBounded(t *testing.T) {
	_, err := Load("/dev/zero")
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("/dev/zero: %v", err)
	}
	p := filepath.Join(t.TempDir(), "big.tcplab")
	if err := os.WriteFile(p, []byte(strings.Repeat("# comment\n", MaxSource/10+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("a big file: %v", err)
	}
	long := strings.Repeat("n", 1<<20)
	if _, err := Load(long); err == nil || len(err.Error()) > 600 {
		t.Fatalf("a 1 MB name: %.600v", err)
	}
}

func BenchmarkFloodToBudget(b *testing.B) {
	sc, err := Parse("flood.tcplab", flood)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var rec trace.Recorder
		if _, err := Run(sc, NewSim(1), Options{Sink: rec.Sink()}); err == nil {
			b.Fatal("not stopped")
		}
	}
}

// TestBudgetWork: an until tested after every change on a host with many
// sockets stops at the work bound, naming its line.
func TestBudgetWork(t *testing.T) {
	src := `host client 10.0.0.1
host server 10.0.0.2
host attacker 10.0.9.1
server: listen 80 backlog 1024
repeat 1000 client: connect server:80 as a{i}
after 1s
attacker: inject [S] from 10.0.9.1:1000 to server:80 count 10000 every 10us
until server: count ESTABLISHED >= 100000 within 1h
`
	sc, err := Parse("work.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(sc, NewSim(1), Options{Budget: Budget{MaxWork: 1_000_000}})
	var se *StoppedError
	if !errors.As(err, &se) || se.Pos.Line != 8 || !strings.Contains(err.Error(), "went through more than 1000000 sockets and packets") ||
		!strings.Contains(err.Error(), "went through 1") {
		t.Fatalf("err %v", err)
	}
}

// TestBudgetSnapshots: --at snapshots are charged like events, and a stop
// while running on for one names the last step, not a line past the end.
func TestBudgetSnapshots(t *testing.T) {
	src := `host client 10.0.0.1
host server 10.0.0.2
server: listen 80 backlog 1024
repeat 500 client: connect server:80 as c{i}
`
	sc, err := Parse("at.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Duration
	for i := range 200 {
		at = append(at, time.Second+time.Duration(i)*time.Millisecond)
	}
	_, err = Run(sc, NewSim(1), Options{At: at, Budget: Budget{MaxBytes: 8 << 20}})
	var se *StoppedError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "snapshots (--at) hold more than 8 MB") || se.Pos.Line != 4 {
		t.Fatalf("err %v", err)
	}
}

// TestParseBoundedMore: rule lines are bounded, and suggestions are not
// looked for among thousands of long names (the distance costs the
// product of the lengths).
func TestParseBoundedMore(t *testing.T) {
	var b strings.Builder
	b.WriteString(hosts)
	for range MaxRules + 1 {
		b.WriteString("rule server in dport 9 drop\n")
	}
	if _, err := Parse("rules.tcplab", b.String()); err == nil || !strings.Contains(err.Error(), "rules.tcplab:1003:1: more than 1000 rules at once") {
		t.Fatalf("rules: %v", err)
	}

	b.Reset()
	b.WriteString(hosts + "server: listen 80\n")
	long := strings.Repeat("n", 60)
	for i := range 2000 {
		fmt.Fprintf(&b, "client: connect server:80 as %s%04d\n", long, i)
	}
	fmt.Fprintf(&b, "client: close %s000x\n", long)
	_, err := Parse("names.tcplab", b.String())
	if err == nil || strings.Contains(err.Error(), "did you mean") || !strings.Contains(err.Error(), "2000 in all") {
		t.Fatalf("a bad name among 2000: %.300v", err)
	}
}

// BenchmarkUntilOnLargeRead: an until on a socket that has read a
// megabyte is tested after every change of a flood; what was seen is not
// described on every test (it used to be: the quoted megabyte each time).
func BenchmarkUntilOnLargeRead(b *testing.B) {
	src := served + `client: write conn 1000000 bytes
after 2s
server: read conn 1000000
after 1s
host2: inject [S] from 10.0.9.1:1000 to server:80 count 10000 every 10us
until server: conn received "zzz" within 1s
`
	src = strings.Replace(src, "host server 10.0.0.2\n", "host server 10.0.0.2\nhost host2 10.0.9.1\n", 1)
	sc, err := Parse("read.tcplab", src)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := Run(sc, NewSim(1), Options{})
		if err != nil || res.Failed() != 1 {
			b.Fatal(err, res.Failed())
		}
	}
}
