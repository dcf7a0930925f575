package main

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
		tf       targetFlags
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
tracefs instance (tcplab-PID-watch), so it needs root, and reports how many
changes the kernel dropped when its buffer filled.

The tracepoint does not fire when a socket enters or leaves TIME_WAIT (a
timewait socket replaces the full one); those changes come from sock_diag
snapshots taken every --interval and are marked "snapshot". The tracepoint
fires for every namespace: a change is shown when its local address belongs
to the watched namespace or its connection is in that namespace's socket
table. Processes (-p) come from the socket's inode, never from the
tracepoint's PID, which is whoever happened to run.

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
			w, err := inspect.NewWatcher(tf.target(), f, procs)
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
			tick := time.NewTicker(interval)
			defer tick.Stop()
			lostShown := 0
			for {
				stop := false
				select {
				case <-sig:
					stop = true
				case <-end:
					stop = true
				case <-tick.C:
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
				if l := w.Lost(); l > lostShown && !asJSON {
					fmt.Fprintf(bw, "# the kernel dropped %d state changes (trace buffer full)\n", l-lostShown)
					lostShown = l
				}
				if err := bw.Flush(); err != nil {
					return err
				}
				if stop {
					if w.Lost() > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "tcplab watch: %d state changes were lost\n", w.Lost())
					}
					return nil
				}
			}
		},
	}
	tf.add(cmd)
	ff.add(cmd)
	cmd.Flags().BoolVarP(&procs, "processes", "p", false, "name the process holding each socket (sockets still open at the next poll)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "write one JSON object per change")
	cmd.Flags().DurationVar(&interval, "interval", 250*time.Millisecond, "how often to read the trace and take the TIME_WAIT snapshot")
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
