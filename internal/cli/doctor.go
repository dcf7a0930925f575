package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
)

func newDoctor(stdout io.Writer) *cobra.Command {
	var (
		tf       TargetFlags
		interval time.Duration
		asJSON   bool
		quiet    bool
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Sample this host twice and report TCP problems, with evidence and the scenario that explains each",
		Long: `doctor reads the host's sockets (sock_diag), counters (/proc/net/netstat,
snmp, sockstat) and limits (sysctls) twice, --interval apart, and reports what
it finds: full accept queues and ListenOverflows, SYN queue pressure and SYN
cookies, CLOSE_WAIT leaks per process and port (sockets still there in the
second sample, and growth), ephemeral ports used up toward one destination,
TIME_WAIT against its limit, SYN_SENT piling up toward a destination,
FIN_WAIT1 pile-ups, orphans and TCP memory against their limits, and the
retransmission and reset rates between the samples.

Each finding has its evidence (the numbers), an explanation, what to do, and
the built-in scenario that reproduces it (tcplab run NAME). The exit code is
1 when a finding is at error level, 0 otherwise.

Root is not needed for your own namespace, but processes are named only where
/proc lets you look.`,
		Example: `  tcplab doctor
  tcplab doctor --interval 10s --json
  sudo tcplab doctor --netns-pid 4242     # a container, by one of its PIDs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return fmt.Errorf("--interval must be positive")
			}
			h, err := inspect.OpenHost(tf.Target())
			if err != nil {
				return err
			}
			defer h.Close()
			a, err := inspect.TakeSample(h)
			if err != nil {
				return err
			}
			sig, stop := interrupts()
			defer stop()
			if err := countdown(cmd.ErrOrStderr(), interval, quiet, sig); err != nil {
				return err
			}
			b, err := inspect.TakeSample(h)
			if err != nil {
				return err
			}
			owners := inspect.FindOwners(inspect.CloseWaitInodes(b), false)
			fs := inspect.Diagnose(a, b, owners, inspect.DefaultThresholds)
			if asJSON {
				if fs == nil {
					fs = []inspect.Finding{}
				}
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(fs); err != nil {
					return err
				}
			} else if err := inspect.WriteFindings(stdout, fs, b.At.Sub(a.At).Round(time.Millisecond)); err != nil {
				return err
			}
			if inspect.Worst(fs) == inspect.LevelError {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	tf.Add(cmd)
	cmd.Flags().DurationVar(&interval, "interval", 5*time.Second, "time between the two samples")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no countdown to the second sample on standard error")
	cmd.Flags().BoolVar(&asJSON, "json", false, "write the findings as JSON")
	return cmd
}

// countdown waits for the second sample, saying so on w (standard error):
// on a terminal a line that counts the seconds down and is cleared at the
// end, elsewhere one line. A signal ends the wait with an error.
func countdown(w io.Writer, d time.Duration, quiet bool, sig <-chan os.Signal) error {
	end := time.Now().Add(d)
	tty := isTerminal(w) && !quiet
	if !quiet && !tty {
		fmt.Fprintf(w, "doctor: first sample taken; the second in %v\n", d)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		left := time.Until(end)
		if left <= 0 {
			break
		}
		if tty {
			secs := (left + time.Second - 1) / time.Second // whole seconds, rounded up
			fmt.Fprintf(w, "\rdoctor: first sample taken; the second in %v ", secs*time.Second)
		}
		select {
		case <-time.After(left):
		case <-tick.C:
			continue
		case <-sig:
			if tty {
				fmt.Fprint(w, "\r\033[K")
			}
			return fmt.Errorf("interrupted before the second sample")
		}
	}
	if tty {
		fmt.Fprint(w, "\r\033[K") // the line goes: the findings follow
	}
	return nil
}
