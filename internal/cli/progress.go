package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// progressKey keys, in a command's context, where a long batch says how
// far it is (standard error, unless -q).
type progressKey struct{}

// WithProgress gives ctx the writer a batch reports its progress to.
func WithProgress(ctx context.Context, w io.Writer) context.Context {
	return context.WithValue(ctx, progressKey{}, w)
}

// Progress reports a batch of runs of known lengths (the simulator's
// virtual time, which is about the kernel's real time): on a terminal one
// line, rewritten every second, with how many are done, which run, the
// time elapsed and about how long is left; elsewhere a plain line as each
// run ends. A nil Progress reports nothing.
type Progress struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	what    string
	total   int
	jobs    int
	done    int
	start   time.Time
	left    time.Duration // the lengths of the runs not started
	running map[string]runSlot
	stop    chan struct{}
	wg      sync.WaitGroup
	width   int // of the line last drawn
}

type runSlot struct {
	start  time.Time
	length time.Duration
}

// NewProgress starts reporting a batch of runs of the given lengths, at
// most jobs at once, to the writer of ctx (WithProgress); nil if it has
// none.
func NewProgress(ctx context.Context, what string, lengths []time.Duration, jobs int) *Progress {
	w, _ := ctx.Value(progressKey{}).(io.Writer)
	if w == nil {
		return nil
	}
	p := &Progress{w: w, tty: isTerminal(w), what: what, total: len(lengths), jobs: max(jobs, 1),
		start: time.Now(), running: map[string]runSlot{}, stop: make(chan struct{})}
	for _, l := range lengths {
		p.left += l
	}
	if p.tty {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
					p.mu.Lock()
					p.draw()
					p.mu.Unlock()
				}
			}
		}()
	}
	return p
}

// Start says a run began.
func (p *Progress) Start(name string, length time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running[name] = runSlot{time.Now(), length}
	p.left -= length
	if p.tty {
		p.draw()
	}
}

// Done says a run ended, after wall of real time.
func (p *Progress) Done(name string, wall time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.running, name)
	p.done++
	if p.tty {
		p.draw()
		return
	}
	fmt.Fprintf(p.w, "%s: %d of %d done: %s in %v; %s\n", p.what, p.done, p.total, name, wall.Round(100*time.Millisecond), p.status())
}

// Close ends the report; on a terminal the line goes.
func (p *Progress) Close() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	if p.tty {
		p.mu.Lock()
		fmt.Fprint(p.w, "\r\033[K")
		p.mu.Unlock()
	}
}

// status is the part of a line after the count: what runs, the time
// elapsed, and an estimate of what is left.
func (p *Progress) status() string {
	now := time.Now()
	var names []string
	longest := time.Duration(0)
	for n, r := range p.running {
		names = append(names, n)
		longest = max(longest, r.length-now.Sub(r.start))
	}
	sort.Strings(names)
	// What is left: the longest of the running ones, or the runs not
	// started shared among the jobs, whichever is longer.
	eta := max(longest, p.left/time.Duration(p.jobs))
	run := "none running"
	if len(names) > 0 {
		run = "running " + strings.Join(names, ", ")
		if len(run) > 60 {
			run = fmt.Sprintf("running %d", len(names))
		}
	}
	return fmt.Sprintf("%s; %v elapsed, about %v left", run, now.Sub(p.start).Round(time.Second), eta.Round(time.Second))
}

func (p *Progress) draw() {
	line := fmt.Sprintf("%s: %d/%d done; %s", p.what, p.done, p.total, p.status())
	// A line longer than the terminal would wrap, and \r would then
	// redraw only its last part: it is cut to the width.
	if cols := termWidth(p.w); cols > 1 && len(line) > cols-1 {
		line = line[:cols-1]
	}
	pad := ""
	if n := p.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
}
