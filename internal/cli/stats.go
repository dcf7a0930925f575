package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
)

func newStats(stdout io.Writer) *cobra.Command {
	var (
		tf     TargetFlags
		ports  []string
		every  time.Duration
		count  int
		asJSON bool
		procs  bool
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count sockets per port and state, services and outgoing connections apart",
		Long: `stats counts TCP sockets per port and state in two tables. Listening
services: sockets whose local port has a listener, by local port, with the
listener's process. Outgoing connections: every other socket, by remote port,
with the processes of a few of them. A socket is never counted twice, unlike
with "netstat -tan | grep :443", which matches the port in either column and
mixes a server's clients with its own calls to port 443 elsewhere.

Processes are the holders of a service's listeners and of an outgoing port's
two oldest sockets, found in /proc/*/fd (the listeners' while the kernel
lists the sockets); the search reads at most 4,096 descriptors, the lowest of
every process first, and shows "-" for a holder it did not reach or cannot
see (another PID namespace, another user's process without root).

--port keeps one port: the local port of a service, the remote port of
outgoing connections. --watch refreshes until interrupted (or --count times).`,
		Example: `  tcplab stats
  tcplab stats --port 443
  tcplab stats --watch 1s
  tcplab stats --json --processes=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pr, err := inspect.ParsePorts(ports)
			if err != nil {
				return err
			}
			if every < 0 || count < 0 {
				return fmt.Errorf("--watch and --count must not be negative")
			}
			h, err := inspect.OpenHost(tf.Target())
			if err != nil {
				return err
			}
			defer h.Close()
			once := func() error {
				st, err := h.PortStats(pr, procs)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(stdout).Encode(st)
				}
				return inspect.WriteStats(stdout, st)
			}
			if every == 0 {
				defer oneShot()()
				return once()
			}
			sig, stop := interrupts()
			defer stop()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for n := 0; count == 0 || n < count; n++ {
				if n > 0 {
					select {
					case <-sig:
						return nil
					case <-tick.C:
					}
				}
				if !asJSON {
					// A terminal shows one screen at a time; a pipe or a
					// file gets every refresh, one after the other.
					clear := ""
					if isTerminal(stdout) {
						clear = "\033[H\033[2J"
					} else if n > 0 {
						clear = "\n"
					}
					fmt.Fprintf(stdout, "%s%s  (every %v, Ctrl-C to stop)\n\n", clear, time.Now().Format("15:04:05"), every)
				}
				if err := once(); err != nil {
					return err
				}
			}
			return nil
		},
	}
	tf.Add(cmd)
	listVar(cmd.Flags(), &ports, "port", "ports", "only this port (or range): a service's local port or an outgoing connection's remote port")
	cmd.Flags().DurationVar(&every, "watch", 0, "refresh every interval (1s, 500ms) until interrupted")
	cmd.Flags().IntVar(&count, "count", 0, "with --watch, stop after this many refreshes (0: until interrupted)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON (one object per refresh)")
	cmd.Flags().BoolVar(&procs, "processes", true, "name the processes (reads /proc/*/fd, at most 4,096 descriptors)")
	return cmd
}
