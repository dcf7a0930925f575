package main

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

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
	)
	cmd := &cobra.Command{
		Use:   "pkt FILE.pkt...",
		Short: "Run packetdrill scripts against the engine",
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
time, in a fresh network namespace (root): the same checks and trace.

Shell lines in backquotes are not run: sysctl settings (sysctl -q
net.ipv4.X=Y, echo N > /proc/sys/..., set_sysctls.py) and the shell files
that hold them (relative to the script's directory) are applied to the
engine when it models the setting, and on the kernel to the namespace
(only its own net.* settings: the machine's are never changed);
--verbose lists everything ignored.

Exit status: 0 when every script passed, 1 when one failed, 2 for a script
that does not parse (file:line:col: message), 3 when none failed but one
was unsupported.`,
		Example: `  tcplab pkt close-remote-fin-then-close.pkt
  tcplab pkt --trace my-test.pkt
  tcplab pkt gtests/net/tcp/close/*.pkt`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			worst := 0
			for _, path := range args {
				code, err := pktOne(stdout, path, pkt.Options{Tolerance: tolerance, Seed: seed, Dir: filepath.Dir(path)}, showTrace, verbose, onKernel)
				if err != nil {
					return err
				}
				worst = pktWorse(worst, code)
			}
			if worst != 0 {
				return &exitError{code: worst}
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
func pktOne(w io.Writer, path string, opt pkt.Options, showTrace, verbose, onKernel bool) (int, error) {
	s, err := pkt.ParseFile(path)
	if err != nil {
		if _, ok := err.(*pkt.Error); ok {
			fmt.Fprintln(w, err)
			return 2, nil
		}
		return 0, err
	}
	if showTrace {
		text := &trace.Text{}
		opt.Sink = func(e trace.Event) {
			if line, ok := text.Line(&e); ok {
				fmt.Fprintln(w, line)
			}
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
	switch res.Status {
	case pkt.Fail:
		return 1, nil
	case pkt.Unsupported:
		return 3, nil
	}
	return 0, nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
