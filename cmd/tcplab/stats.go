package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
)

func newStats(stdout io.Writer) *cobra.Command {
	var (
		tf     targetFlags
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
with the processes of a few of them. A port is never counted in both tables,
unlike "netstat -tan | grep :443", which mixes a server's clients with its
own calls to port 443 elsewhere.

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
			h, err := inspect.OpenHost(tf.target())
			if err != nil {
				return err
			}
			defer h.Close()
			once := func() error {
				st, err := portStats(h, pr)
				if err != nil {
					return err
				}
				if procs {
					st.NameOwners()
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
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sig)
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
					fmt.Fprintf(stdout, "\033[H\033[2J%s  (every %v, Ctrl-C to stop)\n\n", time.Now().Format("15:04:05"), every)
				}
				if err := once(); err != nil {
					return err
				}
			}
			return nil
		},
	}
	tf.add(cmd)
	cmd.Flags().StringSliceVar(&ports, "port", nil, "only this port (or range): a service's local port or an outgoing connection's remote port")
	cmd.Flags().DurationVar(&every, "watch", 0, "refresh every interval (1s, 500ms) until interrupted")
	cmd.Flags().IntVar(&count, "count", 0, "with --watch, stop after this many refreshes (0: until interrupted)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON (one object per refresh)")
	cmd.Flags().BoolVar(&procs, "processes", true, "name the processes (reads /proc/*/fd until found)")
	return cmd
}

// portStats counts the host's sockets; with ports, the kernel keeps only
// sockets with one of them at either end, and the counts keep only the
// services and outgoing ports asked for.
func portStats(h *inspect.Host, ports []inspect.PortRange) (inspect.Stats, error) {
	if len(ports) == 0 {
		socks, err := h.Sockets(inspect.Filter{})
		if err != nil {
			return inspect.Stats{}, err
		}
		return inspect.Count(socks), nil
	}
	local, err := h.Sockets(inspect.Filter{SPort: ports})
	if err != nil {
		return inspect.Stats{}, err
	}
	remote, err := h.Sockets(inspect.Filter{DPort: ports})
	if err != nil {
		return inspect.Stats{}, err
	}
	// Listeners on other ports decide which of the remote-port sockets
	// are services; a socket with the port at both ends appears twice.
	listeners, err := h.Sockets(inspect.Filter{States: inspect.Mask(inspect.Listen)})
	if err != nil {
		return inspect.Stats{}, err
	}
	seen := map[uint64]bool{}
	var all []inspect.Socket
	for _, l := range [][]inspect.Socket{local, remote, listeners} {
		for _, s := range l {
			k := s.Cookie
			if seen[k] {
				continue
			}
			seen[k] = true
			all = append(all, s)
		}
	}
	st := inspect.Count(all)
	st.Services = keepPorts(st.Services, ports)
	st.Outgoing = keepPorts(st.Outgoing, ports)
	return st, nil
}

func keepPorts(rows []inspect.PortCount, ports []inspect.PortRange) []inspect.PortCount {
	var out []inspect.PortCount
	for _, r := range rows {
		for _, p := range ports {
			if r.Port >= p.Lo && r.Port <= p.Hi {
				out = append(out, r)
				break
			}
		}
	}
	return out
}
