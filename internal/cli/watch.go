package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
)

func newWatch(stdout io.Writer) *cobra.Command {
	var (
		tf       TargetFlags
		ff       filterFlags
		procs    bool
		asJSON   bool
		interval time.Duration
		duration time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Show TCP state changes live, with the time spent in the previous state (needs root)",
		Long: `watch prints every TCP state change on this host (or in a namespace) as it
happens, like bcc's tcpstates, with the time the socket spent in the state it
leaves. It reads the sock/inet_sock_set_state tracepoint through a private
tracefs instance (tcplab-PID-watch), each CPU's ring buffer in binary, so it
needs root.

The tracepoint does not fire when a socket enters or leaves TIME_WAIT (a
timewait socket replaces the full one); those changes come from sock_diag
listings taken every --interval and are marked "snapshot". A timewait
socket whose 4-tuple a new connection takes before its timer runs out
(tcp_tw_reuse, counted in TcpExtTWRecycled; or a new SYN to a server's
TIME_WAIT) is shown as "TIME_WAIT -> reused" (in JSON "new":"reused", with
the time spent in TIME_WAIT), just before the new connection's changes, which
follow as its own, its close into TIME_WAIT included.

Under load nothing is fatal: when the kernel's buffer overflows, the changes
it dropped are counted and reported ("# lost N ..."; with --json on stderr,
and their sum at the end), and when the reader falls behind the changes come
late, in order, with a note. Stopped (an interrupt, --duration), watch shows
the changes made before, if it gets to them within 2 s.

The tracepoint fires for every namespace: a change is shown when its local
address belongs to the watched namespace, its connection is in that
namespace's socket table, or the threads that made it were there.
Processes (-p) come from the socket's inode, never from the tracepoint's
PID, which is whoever happened to run. docs/live.md tells more.

Filters are those of tcplab ss; a state filter keeps changes into or out of
the given states.`,
		Example: `  sudo tcplab watch
  sudo tcplab watch --sport 8080 -p
  sudo tcplab watch --state time-wait,close-wait --json
  sudo tcplab watch -N myns --duration 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := ff.filter()
			if err != nil {
				return err
			}
			if interval <= 0 || duration < 0 {
				return fmt.Errorf("--interval must be positive and --duration not negative")
			}
			if len(ff.states) == 0 && !ff.listening {
				f.States = 0 // every change
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("watch reads a tracepoint through tracefs, which needs root: run it with sudo")
			}
			w, err := inspect.NewWatcher(tf.Target(), f, procs)
			if err != nil {
				return err
			}
			defer w.Close()
			sig, stop := interrupts()
			defer stop()
			var end <-chan time.Time
			if duration > 0 {
				end = time.After(duration)
			}
			bw := bufio.NewWriter(stdout)
			if !asJSON {
				fmt.Fprintf(bw, "%-15s %-22s %-22s %-11s    %-11s %10s  %s\n", "TIME", "LOCAL", "REMOTE", "OLD", "NEW", "IN OLD", "SOURCE")
				bw.Flush()
			}
			// Notes and losses go with the changes as comments, or to
			// stderr when stdout is JSON.
			say := func(format string, a ...any) {
				if asJSON {
					fmt.Fprintf(cmd.ErrOrStderr(), "tcplab watch: "+format+"\n", a...)
				} else {
					fmt.Fprintf(bw, "# "+format+"\n", a...)
				}
			}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			lostShown := 0
			var stopAt time.Time
			closed := make(chan time.Time)
			close(closed)
			for {
				if stopAt.IsZero() {
					var now <-chan time.Time // a watcher behind polls again at once
					if w.Behind() {
						now = closed
					}
					select {
					case <-sig:
						stopAt = time.Now()
					case <-end:
						stopAt = time.Now()
					case <-tick.C:
					case <-now:
					}
				} else {
					select {
					case <-sig: // a second interrupt: stop now
						return nil
					default:
					}
				}
				ts, err := w.Poll()
				if err != nil {
					return err
				}
				for _, t := range ts {
					if asJSON {
						b, _ := json.Marshal(t)
						bw.Write(append(b, '\n'))
						continue
					}
					writeTransition(bw, t)
				}
				for _, n := range w.Notes() {
					say("%s", n)
				}
				if l := w.Lost(); l > lostShown {
					say("lost %d state changes (the trace buffer overflowed)", l-lostShown)
					lostShown = l
				}
				if err := bw.Flush(); err != nil {
					return err
				}
				// Once stopped, the changes made before are shown, if the
				// reader reaches them within 2 s.
				if !stopAt.IsZero() && (!w.Through().Before(stopAt) || time.Since(stopAt) > 2*time.Second) {
					if w.Lost() > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "tcplab watch: %d state changes were lost\n", w.Lost())
					}
					return nil
				}
			}
		},
	}
	tf.Add(cmd)
	ff.add(cmd)
	cmd.Flags().BoolVarP(&procs, "processes", "p", false, "name the process holding each socket (sockets still open at the next poll)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "write one JSON object per change")
	cmd.Flags().DurationVar(&interval, "interval", 250*time.Millisecond, "how often to read the trace and list the timewait sockets")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long (0: until interrupted)")
	return cmd
}

func writeTransition(w io.Writer, t inspect.Transition) {
	in := "-"
	if t.InOld > 0 {
		in = fmt.Sprintf("%.3fms", float64(t.InOld.Microseconds())/1000)
		if t.InOld >= 10*time.Second {
			in = t.InOld.Round(100 * time.Millisecond).String()
		}
	}
	old := t.Old.String()
	if t.Old == 0 {
		old = "?"
	}
	proc := ""
	for _, p := range t.Processes {
		proc += fmt.Sprintf(" %s(%d)", p.Comm, p.PID)
	}
	fmt.Fprintf(w, "%-15s %-22s %-22s %-11s -> %-11s %10s  %s%s\n", t.At.Format("15:04:05.000000"), t.Local, t.Remote, old, t.New, in, t.Source, proc)
}
