package full

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tcplab/tcplab/internal/cli"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/conformance"
	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

type diffFlags struct {
	quiet    bool
	all      bool
	jobs     int
	quick    bool
	markdown bool
	seed     uint64
}

func newDiff(stdout io.Writer) *cobra.Command {
	var f diffFlags
	cmd := &cobra.Command{
		Use:   "diff NAME|FILE... | --all",
		Short: cli.FullCommandShort("diff"),
		Long: `diff runs each scenario twice, in the simulator and on this machine's Linux
kernel in network namespaces, and compares the two runs host by host:

  states    each connection's sequence of states
  packets   each connection's segments as they left the host: flags (PSH
            left out: Linux sets it more often), seq and ack relative to
            the initial sequence numbers, payload length
  calls     every application call's result and errno
  counters  the counters the scenario's expectations name, at the end
  timing    the time of each state change, segment sent and call return
            that both runs agree on, measured from the step that led to
            it on each run (the latest step that acts: a call, inject,
            rule or setting), within the kernel's tolerance (50 ms + 1/8
            of the time: Linux's timer wheel fires late)

The kernel harness can start a step late (a busy machine, a slow lab): a
step that starts more than 20 ms after the script wanted it has its
timings left out and is reported as "step at line N started X late", never
as a difference of TCP's. A summary line gives how late the harness
started the steps (median, p90, max). When the harness started a step
after a segment reached its host that, in the simulator, came after the
step (two connects meant to cross, a close meant to come first), and a
difference no entry explains follows it, the verdict is "inconclusive",
not DIFFERS: such a scenario is run again alone, up to twice, and keeps
the last verdict.

Connections are paired by their addresses, ephemeral ports masked, in order
of appearance. It prints a conformance table: scenario, verdict, and the
first difference, then, for scenarios named on the command line, every
difference with its reason. A difference is accepted when the
known-differences list (conformance/known.txt, built in; see
docs/conformance.md) explains it: a behaviour, a pattern of states or
segments recognised in any scenario (yours too), or an entry naming the
scenario, host and aspect. The verdict is then "known differences". Any
other difference makes the verdict DIFFERS.

The kernel runs take real time (the scenario's timers are Linux's), several
at once (--jobs), the longest first. --quick leaves out scenarios whose
script runs longer than 30 s: their lessons are kernel timers that Linux
does not let anyone shorten, such as TIME_WAIT's 60 s.

Needs root and network namespaces. Exit status: 0 when every scenario
agrees or differs only as documented, 1 when a difference is not
documented, 2 for a usage error or when the kernel backend is
unavailable, 3 when no difference is undocumented but a scenario stayed
inconclusive after its runs alone.`,
		Example: `  sudo tcplab diff hutu
  sudo tcplab diff --all
  sudo tcplab diff --all --quick
  sudo tcplab diff --all --markdown > docs/conformance.md`,
		ValidArgsFunction: func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			names, _ := cli.CompleteScenarios(cmd, args, prefix)
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.all == (len(args) > 0) {
				return errors.New("name scenarios or give --all (not both)")
			}
			ctx := cmd.Context()
			if !f.quiet {
				ctx = cli.WithProgress(ctx, cmd.ErrOrStderr())
			}
			return runDiff(ctx, stdout, args, f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.all, "all", false, "every built-in scenario")
	fl.IntVar(&f.jobs, "jobs", 12, "kernel runs at once")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress on standard error")
	fl.BoolVar(&f.quick, "quick", false, "leave out scenarios whose script runs longer than 30 s")
	fl.BoolVar(&f.markdown, "markdown", false, "write the conformance report as Markdown (docs/conformance.md)")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the simulator's runs")
	return cmd
}

// loadScenarios resolves the arguments, or the whole library with all.
func loadScenarios(args []string, all bool) ([]*scenario.Scenario, error) {
	if all {
		return scenario.Library()
	}
	var out []*scenario.Scenario
	for _, a := range args {
		sc, err := scenario.Load(a)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// verdictSkipped marks a scenario --quick left out.
const verdictSkipped = "skipped"

type diffRow struct {
	name    string
	verdict string
	first   string
	diffs   []conformance.Difference
	late    []conformance.LateStep
	steps   []time.Duration // how late the kernel harness started each step
	timings int
	wall    time.Duration
	// inversion says why the verdict is inconclusive; attempts counts the
	// runs made (more than one when an inconclusive run was repeated
	// alone), earlier the inversions of the runs before.
	inversion string
	attempts  int
	earlier   []string
}

// diffRetries is how many times diff runs an inconclusive scenario again.
const diffRetries = 2

// compareRun compares a scenario's two runs into a row of the table.
func compareRun(known []conformance.Known, sc *scenario.Scenario, sim simRun, k kernelRun) diffRow {
	row := diffRow{name: sc.Name, wall: k.wall, attempts: 1}
	if k.skipped != "" {
		row.verdict, row.first = verdictSkipped, k.skipped
		return row
	}
	cmp := conformance.Compare(sc, conformance.Side{Events: sim.events, Result: sim.res, Err: sim.err},
		conformance.Side{Events: k.events, Result: k.res, Err: k.err}, conformance.Config{Tolerance: kernel.Tolerance, Known: known})
	row.diffs, row.late, row.timings = cmp.Differences, cmp.Late, cmp.Timings
	if k.res != nil && k.err == nil {
		for i, st := range k.res.Steps {
			if i < len(sc.Steps) && conformance.Acts(sc.Steps[i].Kind) {
				row.steps = append(row.steps, st.Late())
			}
		}
	}
	v, first, inv := conformance.Conclude(known, sc.Name, cmp)
	row.verdict = v
	if first != nil {
		row.first = first.String()
	}
	if inv != nil {
		row.inversion = inv.String()
		row.first = inv.String() + "; then " + row.first
	}
	return row
}

func runDiff(ctx context.Context, stdout io.Writer, args []string, f diffFlags) error {
	if f.jobs < 1 {
		return fmt.Errorf("--jobs %d: at least 1", f.jobs)
	}
	known, err := conformance.KnownDifferences()
	if err != nil {
		return err
	}
	scs, err := loadScenarios(args, f.all)
	if err != nil {
		return err
	}
	if err := kernel.Check(); err != nil {
		return err
	}
	start := time.Now()
	sims := make([]simRun, len(scs))
	for i, sc := range scs {
		sims[i] = runSim(sc, f.seed)
	}
	kruns, interrupted := runKernelBatch(ctx, sims, f.jobs, f.quick)
	rows := make([]diffRow, len(scs))
	for i, sc := range scs {
		rows[i] = compareRun(known, sc, sims[i], kruns[i])
	}
	// An inconclusive scenario (the harness started a step out of
	// order, and the runs part after it) is run again alone, when the
	// machine has only it to do, up to twice.
	for attempt := 2; attempt <= 1+diffRetries && interrupted == nil; attempt++ {
		var again []int
		for i, r := range rows {
			if r.verdict == conformance.VerdictInconclusive {
				again = append(again, i)
			}
		}
		if len(again) == 0 {
			break
		}
		sub := make([]simRun, len(again))
		for j, i := range again {
			sub[j] = sims[i]
		}
		var kr []kernelRun
		kr, interrupted = runKernelBatch(ctx, sub, 1, f.quick)
		for j, i := range again {
			if kr[j].err != nil && interrupted != nil {
				continue
			}
			r := compareRun(known, scs[i], sims[i], kr[j])
			r.attempts = attempt
			r.earlier = append(rows[i].earlier, rows[i].inversion)
			rows[i] = r
		}
	}
	undocumented, inconclusive := 0, 0
	for _, r := range rows {
		switch r.verdict {
		case conformance.VerdictDiffers:
			undocumented++
		case conformance.VerdictInconclusive:
			inconclusive++
		}
	}
	wall := time.Since(start)
	stale := unusedKnown(known, rows)
	if f.markdown {
		err = writeConformanceMarkdown(stdout, rows, known, stale, f, wall)
	} else {
		err = writeDiffText(stdout, rows, known, stale, len(args) > 0, wall, f.jobs)
	}
	if err != nil {
		return err
	}
	if interrupted != nil {
		return interrupted
	}
	if undocumented > 0 {
		return &cli.ExitError{Code: 1}
	}
	if inconclusive > 0 {
		return &cli.ExitError{Code: 3}
	}
	return nil
}

func writeDiffText(w io.Writer, rows []diffRow, known []conformance.Known, stale []conformance.Known, detail bool, wall time.Duration, jobs int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tverdict\tfirst difference")
	count := map[string]int{}
	for _, r := range rows {
		count[r.verdict]++
		first := r.first
		if first == "" {
			first = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.name, r.verdict, oneLine(first, 160))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if detail {
		for _, r := range rows {
			if len(r.diffs) == 0 {
				continue
			}
			fmt.Fprintf(w, "\n%s:\n", r.name)
			for _, d := range r.diffs {
				fmt.Fprintf(w, "  %s\n", d)
				if k := conformance.Explain(known, r.name, d); k != nil {
					fmt.Fprintf(w, "    known, %s: %s\n", k.Label(), k.Reason)
				} else {
					fmt.Fprintf(w, "    not in the known differences\n")
				}
			}
		}
	}
	for _, r := range rows {
		for _, l := range r.late {
			fmt.Fprintf(w, "\n%s: %s (the harness, not TCP)\n", r.name, l)
		}
		if r.attempts > 1 {
			fmt.Fprintf(w, "\n%s: run %d times; the run(s) before the last were inconclusive: %s\n", r.name, r.attempts, strings.Join(r.earlier, "; "))
		}
		if r.verdict == conformance.VerdictInconclusive {
			fmt.Fprintf(w, "\n%s: inconclusive after %d runs: the differences follow a step the harness started out of order, so they may be the harness's, not TCP's; run it alone on an idle machine\n", r.name, r.attempts)
		}
	}
	for _, k := range stale {
		fmt.Fprintf(w, "\n%s matched no difference in this run: Linux and the engine may agree there now\n", k.Label())
	}
	if h := harnessLine(rows); h != "" {
		fmt.Fprintf(w, "\n%s\n", h)
	}
	inconclusive := ""
	if n := count[conformance.VerdictInconclusive]; n > 0 {
		inconclusive = fmt.Sprintf(", %d inconclusive", n)
	}
	// As many runs at once as there were runs, at most --jobs.
	fmt.Fprintf(w, "\n%s: %d agree, %d differ as documented, %d differ otherwise%s, %d skipped; Linux %s, %s of wall time, %s at once\n",
		cli.Count(len(rows), "scenario"), count[conformance.VerdictAgrees], count[conformance.VerdictKnown], count[conformance.VerdictDiffers], inconclusive,
		count[verdictSkipped], kernelRelease(), wall.Round(100*time.Millisecond), cli.Count(min(jobs, max(len(rows)-count[verdictSkipped], 1)), "kernel run"))
	return nil
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

func writeConformanceMarkdown(w io.Writer, rows []diffRow, known []conformance.Known, stale []conformance.Known, f diffFlags, wall time.Duration) error {
	var b strings.Builder
	b.WriteString("# Conformance: the simulator against Linux\n\n")
	b.WriteString("<!-- generated by `sudo tcplab diff --all --markdown > docs/conformance.md`; do not edit by hand -->\n\n")
	fmt.Fprintf(&b, "Every built-in scenario run in tcplab's simulator and on Linux %s in network\n", kernelRelease())
	b.WriteString("namespaces, compared host by host: each connection's states, the segments it\n")
	b.WriteString("sent (flags, relative seq/ack, length), the calls' results and errno, the\n")
	b.WriteString("counters the scenario names, and the times of state changes, segments and\n")
	b.WriteString("call returns within the kernel's tolerance. A difference is accepted only when\n")
	b.WriteString("[conformance/known.txt](../conformance/known.txt) explains it.\n\n")
	b.WriteString(conformanceModel)
	fmt.Fprintf(&b, "Generated with %d kernel runs at once in %s of wall time.\n\n", f.jobs, wall.Round(time.Second))
	b.WriteString("| scenario | verdict | first difference |\n|---|---|---|\n")
	for _, r := range rows {
		first := r.first
		if first == "" {
			first = "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.name, r.verdict, mdEscape(oneLine(first, 220)))
	}
	b.WriteString("\n## Differences and their reasons\n")
	for _, r := range rows {
		if len(r.diffs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n### %s\n\n", r.name)
		for _, d := range r.diffs {
			fmt.Fprintf(&b, "- %s\n", mdEscape(d.String()))
			if k := conformance.Explain(known, r.name, d); k != nil {
				fmt.Fprintf(&b, "  - why (%s): %s\n", mdEscape(k.Label()), mdEscape(k.Reason))
			} else {
				b.WriteString("  - **not documented**\n")
			}
		}
	}
	var late []string
	for _, r := range rows {
		for _, l := range r.late {
			late = append(late, fmt.Sprintf("- %s: %s\n", r.name, l))
		}
		if r.attempts > 1 {
			late = append(late, fmt.Sprintf("- %s: run %d times, alone after the first; before: %s\n", r.name, r.attempts, strings.Join(r.earlier, "; ")))
		}
	}
	b.WriteString("\n## The harness\n\n")
	if h := harnessLine(rows); h != "" {
		b.WriteString(mdEscape(h) + ".\n")
	}
	if len(late) > 0 {
		b.WriteString("\nSteps started late in this run (their timings were not compared), and scenarios run again after an inconclusive run:\n\n")
		for _, l := range late {
			b.WriteString(mdEscape(l))
		}
	}
	if len(stale) > 0 {
		b.WriteString("\n## Known differences this run did not meet\n\n")
		for _, k := range stale {
			fmt.Fprintf(&b, "- %s\n", mdEscape(k.Label()))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// conformanceModel is the part of docs/conformance.md that explains how
// runs are compared.
const conformanceModel = `## How times are compared

A kernel run cannot keep the simulator's clock: building the lab, waking up
from a wait and making a system call take real time, and more on a busy
machine running twelve labs. Times are therefore compared per cause, not
from time zero:

- Each step of the script records when it started on each run (for a call,
  when the system call began; for a rule, when it took effect) and when the
  script wanted it (the end of the wait before it, or the time of the event
  that met the ` + "`until`" + ` before it). Waits run on the script's own clock, so a
  step started late does not delay the steps after it.
- Each state change, segment sent and call return that both runs agree on
  belongs to the latest step that acts (a call, an inject, a rule, a
  setting) that the simulator started before it. Its time is measured from
  that step's start on each run, and the two offsets must agree within the
  kernel's tolerance: 50 ms plus an eighth of the item's time in the
  scenario (Linux's timer wheel rounds a timer up by up to an eighth of its
  length, and the timer may have been armed by any earlier step).
- A kernel step that started more than 20 ms after the script wanted it is
  the harness's lateness, not TCP's: its timings are not compared, and the
  report says so ("step at line 12 started 63ms late: its timings are not
  compared"). A timing that is off when measured from its own step but
  agrees when measured from an earlier late step (a timer that step armed)
  is treated the same way. The 20 ms limit lies below the tolerance's
  50 ms floor, so the lateness of steps on time cannot add up to a timing
  difference, and well above the harness's measured latency (the summary
  line of every run, below).
- Some lessons depend on the order of a step and a segment: two connects
  that must cross in a simultaneous open, a close that must come before a
  segment. When the kernel harness started a step after a segment reached
  the step's host that, in the simulator, arrived after the step, the
  harness changed the order. A difference no entry explains that comes
  after such a step makes the verdict *inconclusive* rather than DIFFERS;
  ` + "`diff`" + ` runs such a scenario again alone, up to twice, and keeps the last
  verdict.

## How known differences are recognised

[conformance/known.txt](../conformance/known.txt) holds two kinds of entry.
A *behaviour* is a pattern of states or segments sent, recognised in any
scenario, built-in or a user's file: where a connection's items part on the
two runs, the simulator's next items match the behaviour's simulator side
and the kernel's match its kernel side (words matched one by one, ` + "`$x`" + `
binding a word across both sides, each side's items within a time bound),
and the comparison goes on after them. A connection only one run has is
recognised when the whole of it is the pattern. A *scenario entry* covers
every difference of one aspect on one host of one scenario; it is kept only
where the difference belongs to what that scenario does (an autotuned
receive buffer, the order of one timer tick, another OS's profile).

`

// unusedKnown lists the entries that explained no difference among the
// scenarios that ran: a sign that the engine or Linux changed, or that a
// run was luckier than usual (timing).
func unusedKnown(known []conformance.Known, rows []diffRow) []conformance.Known {
	ran := map[string]bool{}
	used := map[int]bool{}
	for _, r := range rows {
		if r.verdict == verdictSkipped {
			continue
		}
		ran[r.name] = true
		for _, d := range r.diffs {
			if k := conformance.Explain(known, r.name, d); k != nil {
				used[k.Line] = true
			}
		}
	}
	var out []conformance.Known
	for _, k := range known {
		// A behaviour belongs to no scenario: that one run did not meet
		// it says nothing.
		if !k.Behaviour() && ran[k.Scenario] && !used[k.Line] {
			out = append(out, k)
		}
	}
	return out
}

// harnessLine sums up how late the kernel harness started the steps of
// the runs: the latency that per-step timing takes out of the comparison.
func harnessLine(rows []diffRow) string {
	var all []time.Duration
	late := 0
	for _, r := range rows {
		all = append(all, r.steps...)
		for _, l := range r.late {
			if l.Skipped > 0 {
				late++
			}
		}
	}
	if len(all) == 0 {
		return ""
	}
	slices.Sort(all)
	q := func(p float64) string { return all[int(p*float64(len(all)-1))].Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("harness: the kernel started its %d acting steps late by %s (median), %s (p90), %s (max); %d step(s) later than %s had timings left out",
		len(all), q(0.5), q(0.9), q(1), late, conformance.DefaultLateLimit)
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", "\\|", "<", "&lt;", ">", "&gt;", "*", "\\*", "_", "\\_").Replace(s)
}

// tourKernel runs the library on the kernel and prints tour's table.
func tourKernel(ctx context.Context, w io.Writer, lib []*scenario.Scenario, seed uint64, jobs int, quick bool) error {
	if err := kernel.Check(); err != nil {
		return err
	}
	if jobs < 1 {
		return fmt.Errorf("--jobs %d: at least 1", jobs)
	}
	start := time.Now()
	sims := make([]simRun, len(lib))
	for i, sc := range lib {
		sims[i] = runSim(sc, seed)
	}
	kruns, interrupted := runKernelBatch(ctx, sims, jobs, quick)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tchecks\treal time\tstates reached")
	failed, checks, ran := 0, 0, 0
	var notRun []string
	for i, sc := range lib {
		k := kruns[i]
		switch {
		case k.skipped != "":
			fmt.Fprintf(tw, "%s\tskipped\t-\t%s\n", sc.Name, k.skipped)
			notRun = append(notRun, sc.Name)
			continue
		case k.err != nil:
			fmt.Fprintf(tw, "%s\tnot run\t-\t%s\n", sc.Name, oneLine(k.err.Error(), 140))
			notRun = append(notRun, sc.Name)
			continue
		}
		ran++
		mark := ""
		if k.res.Failed() > 0 {
			mark = "  FAILED"
		}
		fmt.Fprintf(tw, "%s\t%d/%d%s\t%ss\t%s\n", sc.Name, len(k.res.Checks)-k.res.Failed(), len(k.res.Checks), mark,
			trace.FormatTime(k.res.End), cli.StatesLine(k.res))
		failed += k.res.Failed()
		checks += len(k.res.Checks)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%s on Linux %s (%d not run), %d of %d expectations held, in %s of wall time with %s at once\n",
		cli.Count(ran, "scenario"), kernelRelease(), len(notRun), checks-failed, checks, time.Since(start).Round(100*time.Millisecond), cli.Count(min(jobs, max(ran, 1)), "run"))
	fmt.Fprintln(w, "run one with `tcplab run --kernel NAME`; compare with the simulator with `tcplab diff NAME`")
	if interrupted != nil {
		return interrupted
	}
	if failed > 0 {
		return &cli.ExitError{Code: 1}
	}
	return nil
}
