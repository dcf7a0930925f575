package scenario

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/trace"
)

func mustRun(t *testing.T, src string, opt Options) *Result {
	t.Helper()
	sc, err := Parse("t.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(sc, NewSim(1), opt)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

const served = hosts + `server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
`

// TestChecksCanFail: a wrong expectation fails with what was seen, an
// until that never happens fails at its bound, and the run goes on.
func TestChecksCanFail(t *testing.T) {
	res := mustRun(t, served+`expect client: conn state SYN_SENT
until client: conn state TIME_WAIT within 2s
expect server: count ESTABLISHED = 1
expect server: conn read pending
expect client: conn connect = ECONNREFUSED
expect client: packets out [S] = 2
expect client: counter ActiveOpens = 1
expect client: counter ActiveOpens delta = 1
expect client: conn entered ESTABLISHED at 2ms
expect client: conn entered ESTABLISHED at 3ms
expect client: conn entered CLOSED at 3ms
`, Options{})
	want := []struct {
		ok   bool
		seen string
	}{
		{true, ""}, // the until of the prelude
		{false, "state ESTABLISHED"},
		{false, "not within 2s; at the end: state ESTABLISHED"},
		{true, ""},
		{false, "no read call on conn"},
		{false, "connect = 0 at 0.002000s"},
		{false, "1 [S] packets out"},
		{true, ""},
		{false, "ActiveOpens grew by 0 (now 1)"}, // the expect before it saw the 1
		{true, ""},
		{false, "entered ESTABLISHED at 0.002000s"},
		{false, "never entered CLOSED"},
	}
	if len(res.Checks) != len(want) {
		t.Fatalf("%d checks, want %d", len(res.Checks), len(want))
	}
	for i, w := range want {
		c := res.Checks[i]
		if c.OK != w.ok || c.Seen != w.seen {
			t.Errorf("check %d %q: ok=%v seen=%q, want ok=%v seen=%q", i, c.Text, c.OK, c.Seen, w.ok, w.seen)
		}
	}
	if res.Failed() != 8 {
		t.Errorf("Failed() = %d", res.Failed())
	}
	// The until gave up at its bound: 2 s after it started.
	if at := res.Checks[2].At; at != 2*time.Second+3*time.Millisecond {
		t.Errorf("until ended at %v", at)
	}
}

// TestCounterDelta: delta is the change since the previous expect on the
// same counter.
func TestCounterDelta(t *testing.T) {
	res := mustRun(t, served+`expect client: counter OutSegs delta = 2
client: write "x"
after 1s
expect client: counter OutSegs delta = 1
expect client: counter OutSegs = 3
`, Options{})
	if res.Failed() != 0 {
		t.Fatalf("%+v", res.Checks)
	}
}

// TestRunErrors: a call on a socket that cannot exist yet is an error with
// the line, not a crash or a silent no-op.
func TestRunErrors(t *testing.T) {
	sc, err := Parse("t.tcplab", hosts+"server: listen 80\nserver: accept\nserver: read conn\n")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(sc, NewSim(1), Options{})
	var re *RunError
	if !errors.As(err, &re) || re.Pos.Line != 5 || !strings.Contains(err.Error(), "accept() is still blocked") {
		t.Fatalf("err = %v", err)
	}
	sc, _ = Parse("t.tcplab", hosts+"after 2s\nat 1s\n")
	if _, err := Run(sc, NewSim(1), Options{}); err == nil || !strings.Contains(err.Error(), "t.tcplab:4:1: at 1s is in the past") {
		t.Fatalf("err = %v", err)
	}
}

// TestFailedAccept: a socket whose accept failed is CLOSED, not waiting.
func TestFailedAccept(t *testing.T) {
	res := mustRun(t, hosts+"server: listen 80\nserver: accept nonblock\nexpect server: conn accept = EAGAIN\nexpect server: conn state CLOSED\n", Options{})
	if res.Failed() != 0 {
		t.Fatalf("%+v", res.Checks)
	}
}

// TestSnapshotsAt: --at snapshots land at their times, also after the
// last step.
func TestSnapshotsAt(t *testing.T) {
	res := mustRun(t, served+"client: close\nafter 1s\n", Options{At: []time.Duration{500 * time.Microsecond, 2 * time.Second, 30 * time.Second}})
	if len(res.Snapshots) != 3 {
		t.Fatalf("%d snapshots", len(res.Snapshots))
	}
	state := func(s Snapshot, host string) []string {
		var out []string
		for _, h := range s.Hosts {
			if h.Host == host {
				for _, x := range h.Sockets {
					out = append(out, x.State)
				}
			}
		}
		return out
	}
	if got := state(res.Snapshots[0], "client"); len(got) != 1 || got[0] != "SYN_SENT" {
		t.Errorf("at 0.5ms client %v", got)
	}
	if got := state(res.Snapshots[1], "client"); len(got) != 1 || got[0] != "FIN_WAIT2" || !res.Snapshots[1].PastEnd {
		t.Errorf("at 2s client %v", got)
	}
	if got := state(res.Snapshots[2], "server"); len(got) != 2 || got[1] != "CLOSE_WAIT" || !res.Snapshots[2].PastEnd {
		t.Errorf("at 30s server %v past=%v", got, res.Snapshots[2].PastEnd)
	}
	if res.End != time.Second+3*time.Millisecond {
		t.Errorf("end %v", res.End)
	}
}

// TestProfileOverride: Options.Profile replaces every host's profile.
func TestProfileOverride(t *testing.T) {
	src := hosts + `rule server in drop
client: connect server:80
until client: conn connect returned within 5m
expect client: packets out [S] at 0s 1s 3s 7s 15s 31s 63s
expect client: conn connect = ETIMEDOUT at 127s
`
	if res := mustRun(t, src, Options{}); res.Failed() != 0 {
		t.Fatalf("linux: %+v", res.Checks)
	}
	res := mustRun(t, src, Options{Profile: "windows-classic"})
	if res.Failed() != 2 || res.Checks[1].Seen != "[S] at 0s 3s 9s" {
		t.Fatalf("windows-classic: %+v", res.Checks)
	}
}

// TestEventsNumbered: the runner's own events join the backend's in one
// numbered sequence, in time order.
func TestEventsNumbered(t *testing.T) {
	var rec trace.Recorder
	mustRun(t, served+"note hello\nexpect client: conn state ESTABLISHED\n", Options{Sink: rec.Sink()})
	var last time.Duration
	for i, e := range rec.Events {
		if e.Seq != i+1 {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		if e.At < last {
			t.Fatalf("event %d goes back in time", i)
		}
		last = e.At
	}
	n := len(rec.Events)
	if rec.Events[n-2].Kind != trace.KindNote || rec.Events[n-1].Kind != trace.KindCheck || !rec.Events[n-1].Check.OK {
		t.Fatalf("last events %v %v", rec.Events[n-2].String(), rec.Events[n-1].String())
	}
}

// A kernel run's report gives its time as wall time, a simulator run's as
// virtual time.
func TestReportClock(t *testing.T) {
	sc, err := Builtin("handshake")
	if err != nil {
		t.Fatal(err)
	}
	var rec trace.Recorder
	res, err := Run(sc, NewSim(1), Options{Sink: rec.Sink()})
	if err != nil {
		t.Fatal(err)
	}
	for backend, want := range map[string]string{"sim": "; virtual time ", "kernel": "; wall time "} {
		res.Backend = backend
		var b strings.Builder
		if err := WriteReport(&b, res, rec.Events, ReportOptions{}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), want) {
			t.Errorf("%s: the report does not say %q:\n%s", backend, want, b.String())
		}
	}
}
