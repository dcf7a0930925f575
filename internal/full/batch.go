package full

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tcplab/tcplab/internal/cli"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// quickLimit is the longest scenario `--quick` runs on the kernel. The
// scripts are written in absolute times and their lessons are kernel
// timers, some of which Linux does not let anyone shorten (TIME_WAIT's
// 60 s is a constant), so --quick leaves the long ones out and says so.
const quickLimit = 30 * time.Second

// simRun is a scenario's run in the simulator.
type simRun struct {
	sc     *scenario.Scenario
	res    *scenario.Result
	events []trace.Event
	err    error
}

func runSim(sc *scenario.Scenario, seed uint64) simRun {
	var rec trace.Recorder
	res, err := scenario.Run(sc, scenario.NewSim(seed), scenario.Options{Sink: rec.Sink()})
	return simRun{sc: sc, res: res, events: rec.Events, err: err}
}

// kernelRun is a scenario's run on the kernel.
type kernelRun struct {
	res     *scenario.Result
	events  []trace.Event
	err     error
	skipped string // why --quick left it out
	wall    time.Duration
}

// runKernelBatch runs scenarios on the kernel, jobs at a time, the longest
// first (by the simulator's virtual time, which is close to the kernel's
// real time) so the batch ends soon after its longest scenario. Each run
// has its own namespaces, rules and tracer, and removes them when it ends.
func runKernelBatch(ctx context.Context, sims []simRun, jobs int, quick bool) ([]kernelRun, error) {
	out := make([]kernelRun, len(sims))
	order := make([]int, 0, len(sims))
	for i, s := range sims {
		switch {
		case s.err != nil:
			out[i].err = fmt.Errorf("not run: it fails in the simulator: %w", s.err)
		case quick && s.res.End > quickLimit:
			out[i].skipped = fmt.Sprintf("--quick: its script runs %v of kernel timers", s.res.End.Round(time.Second))
		default:
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return int(sims[b].res.End - sims[a].res.End) })
	lengths := make([]time.Duration, len(order))
	for k, i := range order {
		lengths[k] = sims[i].res.End
	}
	prog := cli.NewProgress(ctx, "kernel runs", lengths, min(jobs, len(order)))
	defer prog.Close()
	// One watcher for the batch: a signal interrupts every running
	// scenario (each then removes its lab) and starts no more.
	var mu, build sync.Mutex
	active := map[*kernel.Backend]bool{}
	var stopped error
	defer cli.OnInterrupt(ctx, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		stopped = err
		for b := range active {
			b.Interrupt(err)
		}
	})()
	work := make(chan int)
	var wg sync.WaitGroup
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				mu.Lock()
				if stopped != nil {
					out[i].err = stopped
					mu.Unlock()
					continue
				}
				b := kernel.New(kernel.Options{BuildLock: &build})
				active[b] = true
				mu.Unlock()
				start := time.Now()
				prog.Start(sims[i].sc.Name, sims[i].res.End)
				var rec trace.Recorder
				res, err := runKernel(sims[i].sc, b, scenario.Options{Sink: rec.Sink()})
				out[i] = kernelRun{res: res, events: rec.Events, err: err, wall: time.Since(start)}
				prog.Done(sims[i].sc.Name, out[i].wall)
				mu.Lock()
				delete(active, b)
				mu.Unlock()
			}
		}()
	}
	for _, i := range order {
		work <- i
	}
	close(work)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return out, stopped
}
