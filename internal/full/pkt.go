package full

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tcplab/tcplab/internal/cli"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/draw"
	"github.com/tcplab/tcplab/internal/outfile"
	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/pkt"
	"github.com/tcplab/tcplab/trace"
)

func newPkt(stdout io.Writer) *cobra.Command {
	var (
		tolerance time.Duration
		showTrace bool
		verbose   bool
		seed      uint64
		onKernel  bool
		both      bool
		corpus    string
		markdown  string
		v         pktViews
	)
	cmd := &cobra.Command{
		Use:   "pkt FILE.pkt...",
		Short: cli.FullCommandShort("pkt"),
		Long: `pkt runs packetdrill scripts, the language Linux's own TCP tests are written
in, against tcplab's engine (the linux profile) in the simulator, in virtual
time. The script plays the remote peer: "<" lines are segments it sends,
">" lines are segments the engine must send, and system-call lines are made
by the local program with their expected results.

For each script it prints "pass", or the line where it failed, worded as
packetdrill words it, then what the engine was doing then (its connection's
state and what caused it). A script that uses a call, option or form the
engine does not have is "unsupported", never passed, with the reason.

With --kernel the script plays against this machine's Linux instead, in real
time, in a fresh network namespace (root): the same checks and trace. Its
interface is a TUN device, tun0, as packetdrill's (TSO packets pass whole),
and every call is the real system call on the real socket.

The run is a trace like a scenario's: --trace prints its events, --json
streams them (then a line of kind "result"), --ladder draws it, --pcap,
--svg and --html write a capture, the ladder and a page of the run as files.

Shell lines in backquotes are read, never handed to a shell: sysctl
settings (sysctl -q net.ipv4.X=Y, echo N > /proc/sys/..., set_sysctls.py)
and the shell files that hold them (relative to the script's directory)
are applied to the engine when it models the setting, and on the kernel to
the namespace (only its own net.* settings: the machine's are never
changed). On the kernel, tc, ip and ethtool -K lines that act on the
namespace alone run there; a line that fails, or that the engine cannot
model, makes the script unsupported. --verbose lists everything ignored.

--corpus DIR runs every .pkt file under DIR (on the engine; with --kernel
on the kernel, with --both on both) and prints one line per script: its
verdict on each backend and the first mismatch. A script that passes on
the kernel and fails on the engine is a parity gap with a name. Engine
runs are fast and independent; kernel runs go one at a time, since each
keeps time against the script. --markdown FILE also writes the table.

Exit status: 0 when every script passed, 1 when one failed, 2 for a script
that does not parse (file:line:col: message), 3 when none failed but one
was unsupported. With --corpus: 0, or 1 when a script failed on a backend.`,
		Example: `  tcplab pkt close-remote-fin-then-close.pkt
  tcplab pkt --trace my-test.pkt
  tcplab pkt gtests/net/tcp/close/*.pkt`,
		Args: func(cmd *cobra.Command, args []string) error {
			if corpus == "" && len(args) == 0 {
				return fmt.Errorf("give script files, or --corpus DIR")
			}
			if corpus != "" && len(args) > 0 {
				return fmt.Errorf("give script files or --corpus DIR, not both")
			}
			if markdown != "" && corpus == "" {
				return fmt.Errorf("--markdown goes with --corpus")
			}
			if (v.ladder || v.pcap != "" || v.svg != "" || v.html != "") && len(args) != 1 {
				return fmt.Errorf("--ladder, --pcap, --svg and --html draw one script: give one file")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cli.Apart(cmd, "--json writes the run's events, --ladder draws them (--svg draws the ladder to a file beside the JSON)", "json", "ladder"); err != nil {
				return err
			}
			if corpus != "" {
				return pktCorpus(stdout, corpus, markdown, pkt.Options{Tolerance: tolerance, Seed: seed}, !onKernel || both, onKernel || both)
			}
			worst := 0
			for _, path := range args {
				code, err := pktOne(stdout, path, pkt.Options{Tolerance: tolerance, Seed: seed, Dir: filepath.Dir(path)}, showTrace, verbose, onKernel, &v)
				if err != nil {
					return err
				}
				worst = pktWorse(worst, code)
			}
			if worst != 0 {
				return &cli.ExitError{Code: worst}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&tolerance, "tolerance", 0, "timing tolerance (default: the script's --tolerance_usecs, else packetdrill's 4ms, growing to 12.5% of the time since the previous event)")
	fl.BoolVar(&showTrace, "trace", false, "print every packet, state change and call of the run, as tcplab run does")
	fl.BoolVarP(&verbose, "verbose", "v", false, "list the shell commands and settings the engine ignored")
	fl.Uint64Var(&seed, "seed", 1, "seed of the engine's random choices (ISNs, ports)")
	fl.BoolVar(&onKernel, "kernel", false, "play the script against this machine's Linux in a fresh network namespace, in real time (needs root)")
	fl.BoolVar(&both, "both", false, "with --corpus: run every script on the engine and on the kernel")
	fl.StringVar(&corpus, "corpus", "", "run every .pkt file under this directory and print a table")
	fl.StringVar(&markdown, "markdown", "", "with --corpus: also write the table as Markdown to this file")
	fl.BoolVar(&v.json, "json", false, "print the run's events as JSON lines (as tcplab run --json), then a line of kind \"result\"")
	fl.BoolVar(&v.ladder, "ladder", false, "draw the run's ladder diagram")
	fl.StringVar(&v.pcap, "pcap", "", "also write the run's capture to this pcapng file (open it in Wireshark)")
	fl.StringVar(&v.svg, "svg", "", "also draw the ladder diagram as SVG to this file")
	fl.StringVar(&v.html, "html", "", "also write the run as one HTML page to this file (verdict, ladder, state diagram, events, sockets)")
	return cmd
}

// pktWorse orders exit codes: a parse error (2) over a failure (1) over
// an unsupported script (3) over a pass (0).
func pktWorse(a, b int) int {
	rank := map[int]int{0: 0, 3: 1, 1: 2, 2: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// pktOne runs one script and prints its verdict; it returns the exit code
// that script alone would give.
// pktViews are the pictures and streams of a script run.
type pktViews struct {
	json, ladder bool
	pcap, svg    string
	html         string
}

func pktOne(w io.Writer, path string, opt pkt.Options, showTrace, verbose, onKernel bool, v *pktViews) (int, error) {
	s, err := pkt.ParseFile(path)
	if err != nil {
		if _, ok := err.(*pkt.Error); ok {
			fmt.Fprintln(w, err)
			return 2, nil
		}
		return 0, err
	}
	var pcapFile, svgFile, htmlFile *outfile.File
	for _, o := range []struct {
		path string
		f    **outfile.File
	}{{v.pcap, &pcapFile}, {v.svg, &svgFile}, {v.html, &htmlFile}} {
		if o.path == "" {
			continue
		}
		if *o.f, err = outfile.Create(o.path); err != nil {
			return 0, err
		}
		defer (*o.f).Abort()
	}
	var rec trace.Recorder
	record := rec.Sink()
	text := &trace.Text{}
	enc := json.NewEncoder(w)
	opt.Sink = func(e trace.Event) {
		switch {
		case v.json:
			_ = enc.Encode(&e)
		case showTrace:
			if line, ok := text.Line(&e); ok {
				fmt.Fprintln(w, line)
			}
		}
		if v.ladder || pcapFile != nil || svgFile != nil || htmlFile != nil {
			record(e)
		}
	}
	var res *pkt.Result
	if onKernel {
		if err := kernel.Check(); err != nil {
			return 0, err
		}
		b := kernel.New(kernel.Options{Tick: time.Millisecond})
		res = pkt.Run(s, b, opt)
		if err := b.Close(); err != nil {
			return 0, err
		}
	} else {
		res = pkt.RunEngine(s, opt)
	}
	if v.ladder {
		names := make([]string, len(res.Hosts))
		for i, h := range res.Hosts {
			names[i] = h.Name
		}
		if err := trace.WriteLadder(w, names, rec.Events, false); err != nil {
			return 0, err
		}
	}
	if pcapFile != nil {
		if _, err := trace.WritePcapng(pcapFile, res.Hosts, rec.Events); err != nil {
			return 0, fmt.Errorf("%s: %w", pcapFile.Name(), err)
		}
		if err := pcapFile.Commit(); err != nil {
			return 0, err
		}
	}
	if svgFile != nil {
		if err := cli.WriteCommit(svgFile, draw.Ladder(res.Hosts, rec.Events, draw.LadderOptions{Title: path})); err != nil {
			return 0, err
		}
	}
	if htmlFile != nil {
		backend := "engine (linux profile, virtual time)"
		if onKernel {
			backend = "kernel (Linux " + kernelRelease() + ", real time)"
		}
		explain := "pass"
		if res.Status != pkt.Pass {
			explain = res.Error()
			if res.Stack != "" {
				explain += "\n" + res.Stack
			}
		}
		check := trace.Check{Line: res.Line, Text: "the script plays to its end", Seen: res.Status.String() + ": " + explain,
			OK: res.Status == pkt.Pass}
		r := draw.NewTraceReport("pkt: "+path, explain, backend, res.Hosts, []trace.Check{check}, res.End, rec.Events, draw.ReportOptions{})
		var b bytes.Buffer
		if err := draw.ReportHTML(&b, r); err != nil {
			return 0, err
		}
		if err := cli.WriteCommit(htmlFile, b.String()); err != nil {
			return 0, err
		}
	}
	if v.json {
		if err := enc.Encode(map[string]any{"kind": "result", "file": res.File, "status": res.Status.String(),
			"line": res.Line, "msg": res.Msg, "stack": res.Stack, "ignored": res.Ignored}); err != nil {
			return 0, err
		}
		return pktCode(res), nil
	}
	switch res.Status {
	case pkt.Pass:
		fmt.Fprintf(w, "%s: pass\n", path)
	default:
		fmt.Fprintln(w, res.Error())
		if res.Status == pkt.Fail && res.Stack != "" {
			fmt.Fprintf(w, "  %s\n", res.Stack)
		}
	}
	if n := len(res.Late); n > 0 {
		worst := res.Late[0]
		for _, l := range res.Late {
			if l.By > worst.By {
				worst = l
			}
		}
		fmt.Fprintf(w, "  harness: %d event%s started late (the latest, line %d, by %s): the harness's own latency, not a TCP difference\n",
			n, plural(n), worst.Line, worst.By.Round(10*time.Microsecond))
	}
	if verbose {
		for _, i := range res.Ignored {
			fmt.Fprintf(w, "  ignored: %s\n", i)
		}
	} else if n := len(res.Ignored); n > 0 {
		fmt.Fprintf(w, "  %d shell command%s or setting%s ignored (--verbose lists them)\n", n, plural(n), plural(n))
	}
	return pktCode(res), nil
}

// pktCode is the exit code of one script's result.
func pktCode(res *pkt.Result) int {
	switch res.Status {
	case pkt.Fail:
		return 1
	case pkt.Unsupported:
		return 3
	}
	return 0
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// maxCorpus bounds the scripts of one --corpus run.
const maxCorpus = 10000

// corpusRow is one script's verdicts.
type corpusRow struct {
	script         string
	engine, kernel *pkt.Result
	parseErr       string
}

// verdict is a result's one word, or "-" when the backend did not run.
func verdict(r *pkt.Result) string {
	if r == nil {
		return "-"
	}
	return r.Status.String()
}

// first is the first mismatch of a row: the engine's when the kernel
// passed (a parity gap), else whichever failed.
func (c *corpusRow) first() string {
	if c.parseErr != "" {
		return c.parseErr
	}
	for _, r := range []*pkt.Result{c.engine, c.kernel} {
		if r != nil && r.Status != pkt.Pass {
			msg, _, _ := strings.Cut(r.Msg, "\n")
			return fmt.Sprintf("line %d: %s", r.Line, msg)
		}
	}
	return ""
}

// pktCorpus runs every script under dir on the chosen backends.
func pktCorpus(w io.Writer, dir, markdown string, opt pkt.Options, onEngine, onKernel bool) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".pkt") {
			if len(files) >= maxCorpus {
				return fmt.Errorf("more than %d scripts under %s", maxCorpus, dir)
			}
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no .pkt file under %s", dir)
	}
	if onKernel {
		if err := kernel.Check(); err != nil {
			return err
		}
	}
	var md *outfile.File
	if markdown != "" {
		if md, err = outfile.Create(markdown); err != nil {
			return err
		}
	}
	sort.Strings(files)
	rows := make([]corpusRow, len(files))
	for i, f := range files {
		rel, _ := filepath.Rel(dir, f)
		row := &rows[i]
		row.script = filepath.ToSlash(rel)
		s, err := pkt.ParseFile(f)
		if err != nil {
			row.parseErr = err.Error()
		} else {
			o := opt
			o.Dir = filepath.Dir(f)
			if onEngine {
				row.engine = pkt.RunEngine(s, o)
			}
			if onKernel {
				b := kernel.New(kernel.Options{Tick: time.Millisecond})
				row.kernel = pkt.Run(s, b, o)
				if err := b.Close(); err != nil {
					return err
				}
			}
		}
		fmt.Fprintf(w, "%-60s %-12s %-12s %s\n", row.script, verdict(row.engine), verdict(row.kernel), row.first())
	}
	count := func(get func(*corpusRow) *pkt.Result, st pkt.Status) int {
		n := 0
		for i := range rows {
			if r := get(&rows[i]); r != nil && r.Status == st {
				n++
			}
		}
		return n
	}
	eng := func(c *corpusRow) *pkt.Result { return c.engine }
	ker := func(c *corpusRow) *pkt.Result { return c.kernel }
	gaps := 0
	for i := range rows {
		if r := rows[i]; r.engine != nil && r.kernel != nil && r.kernel.Status == pkt.Pass && r.engine.Status == pkt.Fail {
			gaps++
		}
	}
	summary := fmt.Sprintf("%d scripts", len(rows))
	if onEngine {
		summary += fmt.Sprintf("; engine: %d pass, %d fail, %d unsupported", count(eng, pkt.Pass), count(eng, pkt.Fail), count(eng, pkt.Unsupported))
	}
	if onKernel {
		summary += fmt.Sprintf("; kernel: %d pass, %d fail, %d unsupported", count(ker, pkt.Pass), count(ker, pkt.Fail), count(ker, pkt.Unsupported))
	}
	if onEngine && onKernel {
		summary += fmt.Sprintf("; %d pass on the kernel and fail on the engine", gaps)
	}
	fmt.Fprintln(w, summary)
	if md != nil {
		var b strings.Builder
		b.WriteString("| script | engine | kernel | first mismatch |\n|---|---|---|---|\n")
		for i := range rows {
			r := &rows[i]
			cell := strings.NewReplacer("|", "\\|", "<", "&lt;", ">", "&gt;").Replace(r.first())
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.script, verdict(r.engine), verdict(r.kernel), cell)
		}
		b.WriteString("\n" + summary + "\n")
		if err := cli.WriteCommit(md, b.String()); err != nil {
			return err
		}
	}
	if count(eng, pkt.Fail)+count(ker, pkt.Fail) > 0 {
		return &cli.ExitError{Code: 1}
	}
	return nil
}
