package capture_test

import (
	"os"
	"testing"
	"time"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// The library on this machine's kernel (root, a few minutes; set
// TCPLAB_EXPLAIN_KERNEL=1): the states inferred from each run's capture
// against the states the kernel's tracepoint reported. The share is
// logged; docs/explain.md has the figures.
func TestInferenceAgainstKernel(t *testing.T) {
	if os.Getenv("TCPLAB_EXPLAIN_KERNEL") == "" {
		t.Skip("set TCPLAB_EXPLAIN_KERNEL=1 to run the library on the kernel (root, minutes)")
	}
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	lib, err := scenario.Library()
	if err != nil {
		t.Fatal(err)
	}
	var right, total [2]int
	var misses [2][]string
	for _, sc := range lib {
		var rec trace.Recorder
		if _, err := scenario.Run(sc, kernel.New(kernel.Options{}), scenario.Options{Sink: rec.Sink()}); err != nil {
			t.Logf("%s: %v", sc.Name, err)
		}
		var hosts []trace.Host
		for _, h := range sc.Hosts {
			hosts = append(hosts, trace.Host{Name: h.Name, Addr: h.Addr.String()})
		}
		for i, oneTap := range []bool{false, true} {
			hs := hosts
			if oneTap {
				hs = hosts[:1]
			}
			r, n, m := compareRun(t, sc.Name, hs, rec.Events, oneTap, 5*time.Millisecond)
			right[i], total[i], misses[i] = right[i]+r, total[i]+n, append(misses[i], m...)
		}
	}
	for i, what := range []string{"both hosts' taps", "the first host's tap"} {
		t.Logf("%s: %d of %d state changes inferred at the right packet (%.1f%%)", what, right[i], total[i], 100*float64(right[i])/float64(max(total[i], 1)))
		for _, m := range misses[i] {
			t.Logf("  missed %s", m)
		}
	}
}
