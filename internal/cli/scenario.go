package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/draw"
	"github.com/tcplab/tcplab/internal/outfile"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

func newList(stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the built-in scenarios",
		Example: "  tcplab list\n  tcplab list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := scenario.Library()
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				for _, sc := range lib {
					if err := enc.Encode(map[string]string{"name": sc.Name, "title": sc.Title}); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			for _, sc := range lib {
				fmt.Fprintf(tw, "%s\t%s\n", sc.Name, sc.Title)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per scenario")
	return cmd
}

func newShow(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Print a built-in scenario's source, to read it or start your own",
		Example: "  tcplab show hutu\n  tcplab show syn-flood > flood.tcplab",
		Args:    cobra.ExactArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			return matching(scenario.Names(), prefix), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			src, ok := scenario.BuiltinSource(args[0])
			if !ok {
				_, err := scenario.Builtin(args[0])
				return err
			}
			_, err := io.WriteString(stdout, src)
			return err
		},
	}
}

type runFlags struct {
	profile   string
	seed      uint64
	asJSON    bool
	ladder    bool
	at        []time.Duration
	absolute  bool
	counters  bool
	allTaps   bool
	kernel    bool
	pcap      string
	svg       string
	states    string
	html      string
	maxEvents int
}

func newRun(stdout io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run NAME|FILE",
		Short: "Run a scenario and show every packet, state change and call",
		Long: `run plays a scenario, a built-in one by name or a file, in the simulator and
prints what happened on every host in time order: the time in seconds since
the start, the host, then packets as tcpdump prints them (flag letters such
as [S], [S.], [.], [P.], [F.], [R], and relative numbers after the
handshake), state changes with their cause, application calls with their
results and errno, the scenario's notes, and the outcome of every expect
line. A packet is shown once as it leaves its sender, and again at its
receiver only when a rule acted on it there.

A run has a budget: 200,000 events (--max-events raises it), 128 MB of
memory held by them (and by --at snapshots) and 5 million sockets and
packets gone through by until and expect conditions. A run that
reaches it, or is interrupted (SIGINT, SIGTERM), stops at its next event,
prints what happened up to then and says why, at the line it was at.

The files of --pcap, --svg, --states and --html are written beside their
path and put in place only when the run finishes (a failed expectation
included): a run that fails or is interrupted leaves them as they were.
A symlink stays a link; a device or /dev/stdout is written, never removed.

Exit status: 0 when every expectation held, 1 when one failed (expected
and seen are printed), 2 for a usage or scenario error, a run stopped by
its budget, or an interrupted run.`,
		Example: `  tcplab run hutu
  tcplab run syn-recv --ladder
  tcplab run accept-overflow --at 1s --at 10s
  tcplab run my.tcplab --profile windows-classic
  tcplab run time-wait --json | jq -c 'select(.kind=="state")'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: CompleteScenarios,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := Apart(cmd, "--json writes the events, --ladder draws them (--svg draws the ladder to a file beside the JSON)", "json", "ladder"); err != nil {
				return err
			}
			if f.kernel && Full.KernelBackend == nil {
				return handoff(cmd) // before any output: tcplab-full runs it all
			}
			return runOne(cmd.Context(), stdout, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.profile, "profile", "", "run every host with this profile ("+strings.Join(tcp.ProfileNames(), ", ")+")")
	cmd.RegisterFlagCompletionFunc("profile", CompleteProfiles)
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the run: the same seed gives the same trace")
	fl.BoolVar(&f.asJSON, "json", false, "print the event stream as JSON lines (schema in docs/scenario-language.md)")
	fl.BoolVar(&f.ladder, "ladder", false, "draw the ladder diagram instead of the event lines")
	fl.Var(timesFlag{&f.at}, "at", "print an ss-style snapshot of every host at this virtual time (repeatable)")
	fl.BoolVar(&f.absolute, "absolute", false, "absolute sequence numbers, like tcpdump -S")
	fl.BoolVar(&f.counters, "counters", false, "also print every counter change")
	fl.BoolVar(&f.allTaps, "all-packets", false, "print every packet at both its sender and its receiver")
	fl.StringVar(&f.pcap, "pcap", "", "also write the capture of every host to this pcapng file (one interface per host; open it in Wireshark)")
	fl.StringVar(&f.svg, "svg", "", "also draw the ladder diagram as SVG to this file (runs of like segments folded into one arrow ×N)")
	fl.StringVar(&f.states, "states", "", "also draw the RFC 9293 state diagram as SVG to this file, with each host's path numbered")
	fl.StringVar(&f.html, "html", "", "also write a self-contained HTML report to this file: explanation, expectations, ladder, state diagram, events, sockets after each state change")
	fl.IntVar(&f.maxEvents, "max-events", scenario.DefaultBudget.MaxEvents, "stop the run after this many events (its memory and work bounds grow with it)")
	fl.BoolVar(&f.kernel, "kernel", false, "run on this machine's Linux kernel in network namespaces instead of the simulator (needs root; real time)")
	return cmd
}

func runOne(ctx context.Context, stdout io.Writer, arg string, f runFlags) (err error) {
	if f.profile != "" {
		if _, err := tcp.ProfileByName(f.profile); err != nil {
			return err
		}
	}
	for _, t := range f.at {
		if t < 0 || t > scenario.MaxTime {
			return fmt.Errorf("--at %v: a time is between 0 and %v", t, scenario.MaxTime)
		}
	}
	if f.maxEvents < 1 {
		return fmt.Errorf("--max-events %d: at least 1", f.maxEvents)
	}
	sc, err := loadInterruptible(ctx, arg)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	var rec trace.Recorder
	opt := scenario.Options{Profile: f.profile, At: f.at, Sink: rec.Sink(), Budget: budgetFor(f.maxEvents)}
	var enc *json.Encoder
	if f.asJSON {
		enc = json.NewEncoder(w)
		record := rec.Sink()
		opt.Sink = func(e trace.Event) {
			_ = enc.Encode(&e)
			if f.pcap != "" || f.svg != "" || f.states != "" || f.html != "" {
				record(e)
			}
		}
	}
	// Output files are opened before the run, which on the kernel takes
	// real time, so that a path that cannot be written is said at once.
	// What they held is replaced only when the run finishes (a failed
	// expectation included); a run that fails, is refused or interrupted
	// leaves every path as it was (outfile never removes what it did not
	// create).
	var pcapFile, svgFile, statesFile, htmlFile *outfile.File
	for _, o := range []struct {
		path string
		f    **outfile.File
	}{{f.pcap, &pcapFile}, {f.svg, &svgFile}, {f.states, &statesFile}, {f.html, &htmlFile}} {
		if o.path == "" {
			continue
		}
		if *o.f, err = outfile.Create(o.path); err != nil {
			return err
		}
		// Abort does nothing after Commit: a failed run, a refused one
		// and a panic leave no temporary file.
		defer (*o.f).Abort()
	}
	b, desc, err := newBackend(f.kernel, f.seed)
	if err != nil {
		return err
	}
	ro := scenario.ReportOptions{Colour: colour(stdout), Backend: desc, Profile: f.profile, Ladder: f.ladder, Absolute: f.absolute,
		Counters: f.counters, AllTaps: f.allTaps}
	// A kernel run takes real time: its lines are printed as they happen,
	// each flushed at once, on a terminal and in a pipe alike. A simulator
	// run is over in an instant and prints its report at the end.
	streaming := f.kernel && !f.ladder
	if streaming {
		record := opt.Sink
		if f.asJSON {
			opt.Sink = func(e trace.Event) {
				record(e)
				w.Flush()
			}
		} else {
			view := scenario.WriteReportHead(w, sc, ro)
			w.Flush()
			opt.Sink = func(e trace.Event) {
				record(e)
				if line, ok := view.Line(&e); ok {
					w.WriteString(line)
					w.WriteByte('\n')
					w.Flush()
				}
			}
		}
	}
	var res *scenario.Result
	report := func() error {
		if streaming {
			return scenario.WriteReportTail(w, res, ro)
		}
		return scenario.WriteReport(w, res, rec.Events, ro)
	}
	res, err = runInterruptible(ctx, sc, b, opt)
	var stopped *scenario.StoppedError
	if errors.As(err, &stopped) && res != nil {
		// Show what the run did up to its stop, then the reason.
		if !f.asJSON {
			if werr := report(); werr != nil {
				return werr
			}
		}
		if werr := w.Flush(); werr != nil {
			return werr
		}
		if stopped.Cause == nil {
			return fmt.Errorf("%w; --max-events raises the limit", err)
		}
		return err
	}
	if err != nil {
		return err
	}
	if pcapFile != nil {
		if err := writePcap(pcapFile, sc, rec.Events); err != nil {
			return err
		}
	}
	title := sc.Name + ": " + sc.Title
	if svgFile != nil {
		if err := WriteCommit(svgFile, draw.Ladder(sc.TraceHosts(), rec.Events, draw.LadderOptions{Absolute: f.absolute, Title: title})); err != nil {
			return err
		}
	}
	if htmlFile != nil {
		var b strings.Builder
		if err := draw.HTML(&b, res, rec.Events, draw.ReportOptions{Backend: desc, Absolute: f.absolute}); err != nil {
			return err
		}
		if err := WriteCommit(htmlFile, b.String()); err != nil {
			return err
		}
	}
	if statesFile != nil {
		var names []string
		for _, h := range sc.Hosts {
			names = append(names, h.Name)
		}
		if err := WriteCommit(statesFile, draw.States(names, rec.Events, title)); err != nil {
			return err
		}
	}
	if f.asJSON {
		for _, s := range res.Snapshots {
			if err := enc.Encode(jsonSnapshot{Kind: "snapshot", At: s.At, Hosts: s.Hosts}); err != nil {
				return err
			}
		}
	} else {
		if err := report(); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if res.Failed() > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

// loadInterruptible reads a scenario, giving up when ctx is done (a
// FIFO or a terminal whose writer stays silent).
func loadInterruptible(ctx context.Context, arg string) (*scenario.Scenario, error) {
	type loaded struct {
		sc  *scenario.Scenario
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		sc, err := scenario.Load(arg)
		done <- loaded{sc, err}
	}()
	select {
	case l := <-done:
		return l.sc, l.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: not read: %w", arg, context.Cause(ctx))
	}
}

// budgetFor is the run budget of --max-events: the memory and work
// bounds grow with the event cap.
func budgetFor(maxEvents int) scenario.Budget {
	d := scenario.DefaultBudget
	if maxEvents > d.MaxEvents {
		scale := float64(maxEvents) / float64(d.MaxEvents)
		d.MaxBytes = saturate(float64(d.MaxBytes) * scale)
		d.MaxWork = saturate(float64(d.MaxWork) * scale)
	}
	d.MaxEvents = maxEvents
	return d
}

// saturate converts to int64, the largest one past its range.
func saturate(f float64) int64 {
	if f >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(f)
}

// writeCommit writes doc to f and puts it in place.
func WriteCommit(f *outfile.File, doc string) error {
	if _, err := f.WriteString(doc); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return f.Commit()
}

// writePcap writes the run's capture to f and puts it in place.
func writePcap(f *outfile.File, sc *scenario.Scenario, events []trace.Event) error {
	if _, err := trace.WritePcapng(f, sc.TraceHosts(), events); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return f.Commit()
}

type jsonSnapshot struct {
	Kind  string                 `json:"kind"`
	At    time.Duration          `json:"at"`
	Hosts []scenario.HostSockets `json:"hosts"`
}

func newTour(stdout io.Writer) *cobra.Command {
	var (
		seed     uint64
		onKernel bool
		quiet    bool
		quick    bool
		jobs     int
	)
	cmd := &cobra.Command{
		Use:   "tour",
		Short: "Run the whole built-in library and summarize it in a table",
		Long: `tour runs every built-in scenario in the simulator, in teaching order, and
prints one line each: the expectations that held, the virtual time the
scenario covers, and the states each host's connections reached. It exits 1
if any expectation failed.

With --kernel it runs the library on this machine's Linux kernel instead
(needs root): each scenario in its own network namespaces, several at once
(--jobs), the longest first, in real time. Scenarios written for another
stack's profile are not run there, and --quick leaves out those whose
script runs longer than 30 s (their lessons are kernel timers that Linux
does not let anyone shorten, such as TIME_WAIT's 60 s).`,
		Example: "  tcplab tour\n  tcplab tour --seed 7\n  sudo tcplab tour --kernel\n  sudo tcplab tour --kernel --quick",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := scenario.Library()
			if err != nil {
				return err
			}
			if onKernel {
				if Full.TourKernel == nil {
					return handoff(cmd)
				}
				ctx := cmd.Context()
				if !quiet {
					ctx = WithProgress(ctx, cmd.ErrOrStderr())
				}
				return Full.TourKernel(ctx, stdout, lib, seed, jobs, quick)
			}
			if quick || cmd.Flags().Changed("jobs") {
				return fmt.Errorf("--quick and --jobs go with --kernel")
			}
			start := time.Now()
			var table bytes.Buffer
			tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "scenario\tchecks\tvirtual time\tstates reached")
			failed, checks := 0, 0
			var virtual time.Duration
			for _, sc := range lib {
				res, err := scenario.Run(sc, scenario.NewSim(seed), scenario.Options{})
				if err != nil {
					return fmt.Errorf("%s: %w", sc.Name, err)
				}
				mark := ""
				if res.Failed() > 0 {
					mark = "  FAILED"
				}
				fmt.Fprintf(tw, "%s\t%d/%d%s\t%ss\t%s\n", sc.Name, len(res.Checks)-res.Failed(), len(res.Checks), mark,
					trace.FormatTime(res.End), StatesLine(res))
				failed += res.Failed()
				checks += len(res.Checks)
				virtual += res.End
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			text := table.String()
			if colour(stdout) {
				text = scenario.ColourFailed(text) // after the alignment
			}
			if _, err := io.WriteString(stdout, text); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "\n%s, %d of %d expectations held, %s of virtual time in %s of wall time\n",
				Count(len(lib), "scenario"), checks-failed, checks, virtual.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			fmt.Fprintln(stdout, "run one with `tcplab run NAME`; read one with `tcplab show NAME`")
			if failed > 0 {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.Uint64Var(&seed, "seed", 1, "seed of every simulator run")
	fl.BoolVar(&onKernel, "kernel", false, "run on this machine's Linux kernel in network namespaces (needs root; real time)")
	fl.BoolVar(&quick, "quick", false, "with --kernel: leave out scenarios whose script runs longer than 30 s")
	fl.IntVar(&jobs, "jobs", 12, "with --kernel: scenarios run at once")
	fl.BoolVarP(&quiet, "quiet", "q", false, "with --kernel: no progress on standard error")
	return cmd
}

func StatesText(states []string) string {
	if len(states) == 0 {
		return "(no connection)"
	}
	return strings.Join(states, " ")
}

// StatesLine is every host's states reached, for one line.
func StatesLine(res *scenario.Result) string {
	var st []string
	for _, h := range res.States {
		st = append(st, h.Host+": "+StatesText(h.States))
	}
	return strings.Join(st, " | ")
}
