package conformance

import (
	"fmt"
	"sort"
	"time"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// Inversion is a step the kernel harness started after a segment reached
// the step's host, where in the simulator the step came first: the
// harness changed the order of the application and the network, and what
// follows may differ for that reason alone (two connects meant to cross
// in a simultaneous open, a close meant to come before a segment).
type Inversion struct {
	Line    int
	Host    string
	Segment string        // the segment that arrived first on the kernel
	Before  time.Duration // how long before the step it arrived
	Late    time.Duration // how late the step was (Start - Due)
	At      time.Duration // the step's time in the simulator
}

func (v Inversion) String() string {
	return fmt.Sprintf("step at line %d started %s late, %s after %s reached %s; in the simulator the step came first",
		v.Line, v.Late.Round(10*time.Microsecond), v.Before.Round(10*time.Microsecond), v.Segment, v.Host)
}

// inversions finds the acting steps whose order with the segments
// arriving at their host differs between the runs: in the simulator the
// step started before the host's n-th arriving segment, on the kernel
// after it.
func inversions(sc *scenario.Scenario, sim, kern Side) []Inversion {
	if sim.Result == nil || kern.Result == nil {
		return nil
	}
	arrivals := func(ev []trace.Event, host string) []trace.Event {
		var out []trace.Event
		for _, e := range ev {
			if e.Host == host && e.Kind == trace.KindPacket && e.Packet.Dir == trace.In {
				out = append(out, e)
			}
		}
		return out
	}
	simIn, kernIn := map[string][]trace.Event{}, map[string][]trace.Event{}
	for _, h := range sc.Hosts {
		simIn[h.Name] = arrivals(sim.Events, h.Name)
		k := arrivals(kern.Events, h.Name)
		sort.SliceStable(k, func(i, j int) bool { return k[i].At < k[j].At })
		kernIn[h.Name] = k
	}
	var out []Inversion
	for i, st := range sim.Result.Steps {
		if i >= len(sc.Steps) || i >= len(kern.Result.Steps) || !Acts(sc.Steps[i].Kind) || sc.Steps[i].Host == "" {
			continue
		}
		host := sc.Steps[i].Host
		in := simIn[host]
		// The segments that reached the host before the step started, in
		// the simulator.
		n := sort.Search(len(in), func(j int) bool { return in[j].Seq > st.Seq })
		if n >= len(in) || n >= len(kernIn[host]) {
			continue
		}
		ks := kern.Result.Steps[i]
		// The step's last call is the one that meets the network (a
		// connect after its socket and bind). It is an inversion when
		// the segment came first on the kernel and the step was later
		// than the simulator's room between the two: a kernel that
		// is merely faster is TCP's business.
		room := in[n].At - st.Start
		if p := kernIn[host][n]; p.At < max(ks.Start, ks.Last) && ks.Late() > room {
			seg := &p.Packet.Segment
			what := fmt.Sprintf("[%s] from %s:%d", seg.Flags.Short(), seg.Src, seg.SrcPort)
			out = append(out, Inversion{Line: st.Pos.Line, Host: host, Segment: what,
				Before: max(ks.Start, ks.Last) - p.At, Late: ks.Late(), At: st.Start})
		}
	}
	return out
}
