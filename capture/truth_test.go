package capture_test

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/capture"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// truthChange is one state change as a run reported it or as a capture's
// inference found it.
type truthChange struct {
	local, remote netip.AddrPort
	from, to      string
	at            time.Duration
	// timer: made by a timer, not a packet (inferred: at no frame);
	// since: when the end entered the state the timer ended.
	timer bool
	since time.Duration
}

func (c truthChange) String() string {
	return fmt.Sprintf("%v>%v %s->%s at %v", c.local, c.remote, c.from, c.to, c.at)
}

// explainRun writes a run's packets as the capture of the given hosts'
// taps, explains it, and returns the inferred changes.
func explainRun(t *testing.T, hosts []trace.Host, events []trace.Event) []truthChange {
	t.Helper()
	r, err := capture.NewReader(bytes.NewReader(pcapOf(t, hosts, events)))
	if err != nil {
		t.Fatal(err)
	}
	var got []truthChange
	tr := capture.NewTracker(capture.Options{}, func(c *capture.Conn) {
		for _, e := range c.Ends() {
			for _, ch := range e.Changes {
				got = append(got, truthChange{e.Addr, c.Peer(e).Addr, ch.From, ch.To, ch.At.Sub(trace.PcapEpoch), ch.Frame == 0, 0})
			}
		}
	})
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		tr.Add(&p)
	}
	tr.Flush()
	return got
}

// The library's scenarios, run in the simulator: the states inferred
// from their captures against the states the engine reported.
func TestInferenceAgainstSimulator(t *testing.T) {
	for _, c := range []struct {
		name    string
		oneTap  bool
		atLeast float64
	}{
		{"both hosts' taps", false, 0.95},
		{"the first host's tap", true, 0.95},
	} {
		t.Run(c.name, func(t *testing.T) {
			share := inferLibrary(t, c.oneTap)
			if share < c.atLeast {
				t.Errorf("%.1f%% of the state changes inferred, want %.0f%% at least", 100*share, 100*c.atLeast)
			}
		})
	}
}

// inferLibrary runs every library scenario the simulator can run, and
// returns the share of its state changes the capture's inference found.
func inferLibrary(t *testing.T, oneTap bool) float64 {
	lib, err := scenario.Library()
	if err != nil {
		t.Fatal(err)
	}
	total, right := 0, 0
	var misses []string
	for _, sc := range lib {
		var rec trace.Recorder
		if _, err := scenario.Run(sc, scenario.NewSim(1), scenario.Options{Sink: rec.Sink()}); err != nil {
			continue // a run the simulator cannot make (another profile's host, a stop)
		}
		var hosts []trace.Host
		for _, h := range sc.Hosts {
			hosts = append(hosts, trace.Host{Name: h.Name, Addr: h.Addr.String()})
		}
		if oneTap {
			hosts = hosts[:1]
		}
		r, n, m := compareRun(t, sc.Name, hosts, rec.Events, oneTap, 0)
		right, total, misses = right+r, total+n, append(misses, m...)
	}
	share := float64(right) / float64(max(total, 1))
	t.Logf("%d of %d state changes inferred (%.1f%%)", right, total, 100*share)
	if len(misses) > 0 {
		t.Logf("missed:\n%s", strings.Join(misses[:min(len(misses), 60)], "\n"))
	}
	return share
}

// compareRun explains a run's capture (of hosts' taps) and counts its
// state changes inferred with the right state at the right packet: within
// slack of the run's time (plus a link delay at the far end with one tap).
func compareRun(t *testing.T, name string, hosts []trace.Host, events []trace.Event, oneTap bool, slack time.Duration) (right, total int, misses []string) {
	t.Helper()
	// The connections the taps saw: a connection no packet of the
	// capture belongs to cannot be inferred by anyone.
	tapped := map[string]bool{}
	for _, h := range hosts {
		tapped[h.Name] = true
	}
	seen := map[[2]netip.AddrPort]bool{}
	for _, e := range events {
		if e.Kind == trace.KindPacket && tapped[e.Host] && (e.Packet.Dir == trace.In || e.Packet.OnWire) {
			s := e.Packet.Segment
			a, b := netip.AddrPortFrom(s.Src, s.SrcPort), netip.AddrPortFrom(s.Dst, s.DstPort)
			seen[[2]netip.AddrPort{a, b}], seen[[2]netip.AddrPort{b, a}] = true, true
		}
	}
	var want []truthChange
	entered := map[[2]netip.AddrPort]time.Duration{}
	for _, e := range events {
		if e.Kind == trace.KindState && e.Remote.Port() != 0 && e.State.From != "" && seen[[2]netip.AddrPort{e.Local, e.Remote}] {
			k := [2]netip.AddrPort{e.Local, e.Remote}
			want = append(want, truthChange{e.Local, e.Remote, e.State.From, e.State.To, e.At, e.State.CauseKind == "timer", entered[k]})
			entered[k] = e.At
		}
	}
	got := explainRun(t, hosts, events)
	// Match in order per connection end (a 4-tuple can be used again).
	pending := map[string][]truthChange{}
	for _, g := range got {
		k := g.local.String() + ">" + g.remote.String()
		pending[k] = append(pending[k], g)
	}
	for _, w := range want {
		total++
		k := w.local.String() + ">" + w.remote.String()
		q := pending[k]
		found := false
		for i, g := range q {
			// The right state, at the right packet: the time of the
			// packet that caused it (at the end's own tap when the
			// capture has it; one link delay off at the other's).
			slack := slack
			if oneTap {
				slack += 2 * time.Millisecond
			}
			// A timer's change has no packet: the right one is a timer's,
			// within what Linux's timer wheel allows (it fires a timer
			// up to an eighth of its length late).
			if w.timer && g.timer {
				slack += max(w.at-w.since, 0) / 8
			}
			if g.from == w.from && g.to == w.to && (g.at-w.at).Abs() <= slack {
				pending[k] = append(q[:i:i], q[i+1:]...)
				found = true
				break
			}
		}
		if found {
			right++
		} else {
			misses = append(misses, name+": "+w.String())
		}
	}
	return right, total, misses
}
