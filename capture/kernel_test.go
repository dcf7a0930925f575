package capture_test

import (
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// The library on this machine's kernel (root, about ten minutes; set
// TCPLAB_EXPLAIN_KERNEL=1): the states inferred from each run's capture
// against the states the kernel's tracepoint reported, and the findings
// against the simulator's. Three runs at a time. The share is logged;
// docs/explain.md has the figures.
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
	type result struct {
		name         string
		right, total [2]int
		misses       [2][]string
		findings     string
	}
	var (
		lock, mu sync.Mutex
		wg       sync.WaitGroup
		results  []result
	)
	slots := make(chan struct{}, 3)
	for _, sc := range lib {
		wg.Add(1)
		go func(sc *scenario.Scenario) {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			b := kernel.New(kernel.Options{BuildLock: &lock})
			var rec trace.Recorder
			_, err := scenario.Run(sc, b, scenario.Options{Sink: rec.Sink()})
			if cerr := b.Close(); cerr != nil {
				t.Errorf("%s: close: %v", sc.Name, cerr)
			}
			if err != nil {
				t.Logf("%s: %v", sc.Name, err)
				return
			}
			hosts := hostsOf(sc)
			r := result{name: sc.Name}
			for i, oneTap := range []bool{false, true} {
				hs := hosts
				if oneTap {
					hs = hosts[:1]
				}
				r.right[i], r.total[i], r.misses[i] = compareRun(t, sc.Name, hs, rec.Events, oneTap, 5*time.Millisecond)
			}
			got := strings.Join(explainCapture(t, hosts, rec.Events).kinds(), " ")
			if want := strings.Join(findingsWanted[sc.Name], " "); got != want {
				r.findings = sc.Name + ": findings " + got + ", in the simulator " + want
			}
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		}(sc)
	}
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].name < results[j].name })
	var right, total [2]int
	for _, r := range results {
		for i := range right {
			right[i] += r.right[i]
			total[i] += r.total[i]
		}
	}
	for i, what := range []string{"both hosts' taps", "the first host's tap"} {
		t.Logf("%s: %d of %d state changes inferred at the right packet (%.1f%%)", what, right[i], total[i], 100*float64(right[i])/float64(max(total[i], 1)))
		for _, r := range results {
			for _, m := range r.misses[i] {
				t.Logf("  missed %s", m)
			}
		}
	}
	same := 0
	for _, r := range results {
		if r.findings == "" {
			same++
		} else {
			t.Logf("  %s", r.findings)
		}
	}
	t.Logf("findings as in the simulator: %d of %d scenarios", same, len(results))
}
