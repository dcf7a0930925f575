package cli

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
)

func newSS(stdout io.Writer) *cobra.Command {
	var (
		tf                  TargetFlags
		ff                  filterFlags
		procs, info, timers bool
		asJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "ss",
		Short: "List this host's TCP sockets, like ss -tan",
		Long: `ss lists the TCP sockets (IPv4 and IPv6) of this host, a named network
namespace, or a process's network namespace, with the columns of ss -tan:
State, Recv-Q, Send-Q, Local and Peer address. On a listener Recv-Q is the
accept queue's length and Send-Q its limit (the backlog).

It asks the kernel through NETLINK_SOCK_DIAG, and the kernel applies the
filters: the state mask, and ports and addresses compiled to inet_diag
bytecode, so a filtered query costs little even among many sockets. Filters
of one kind are alternatives; different kinds must all match.

Root is not needed for your own namespace; -p shows only the processes you
may look into (all of them as root), and entering another namespace needs
root.`,
		Example: `  tcplab ss                                  # every TCP socket
  tcplab ss -l -p                            # listeners and their processes
  tcplab ss --state close-wait --sport 8080  # CLOSE_WAIT on local port 8080
  tcplab ss --state synchronized --dst 10.0.0.0/8 -o
  tcplab ss --state established -i --json
  sudo tcplab ss -N myns                     # inside network namespace myns`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			defer oneShot()()
			f, err := ff.filter()
			if err != nil {
				return err
			}
			f.Info = info
			h, err := inspect.OpenHost(tf.Target())
			if err != nil {
				return err
			}
			defer h.Close()
			socks, err := h.Sockets(f)
			if err != nil {
				return err
			}
			var owners inspect.Owners
			if procs {
				inodes := make(map[uint32]bool, len(socks))
				for i := range socks {
					inodes[socks[i].Inode] = true
				}
				owners = inspect.FindOwners(inodes, true)
			}
			o := inspect.TableOptions{Procs: procs, Timers: timers, Info: info}
			if asJSON {
				return inspect.WriteJSON(stdout, socks, owners, o)
			}
			return inspect.WriteTable(stdout, socks, owners, o)
		},
	}
	tf.Add(cmd)
	ff.add(cmd)
	cmd.Flags().BoolVarP(&procs, "processes", "p", false, "show the processes holding each socket (reads /proc/*/fd)")
	cmd.Flags().BoolVarP(&info, "info", "i", false, "show tcp_info: rtt, rto, mss, cwnd, unacked, retransmissions, lost, bytes")
	cmd.Flags().BoolVarP(&timers, "options", "o", false, "show the pending timer, its time left and its retransmission count")
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON")
	return cmd
}
