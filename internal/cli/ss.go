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
		extended, memory    bool
		noHeader            bool
		asJSON              bool
		tcp, all, numeric   bool // ss's -t -a -n: what tcplab ss does anyway
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

ss's habits work: its short options combine (-tanp, -lnt), and a filter
may follow them as ss takes it: state STATE, exclude STATE, sport/dport
with = > >= < <= and :PORT, src/dst with an address, prefix or ADDR:PORT,
parentheses, "and" (conditions of one kind are intersected), and "or" in
an expression of one kind of condition; what the kernel filter cannot say
exactly is refused. The columns
and states are spelt as ss spells them (ESTAB, CLOSE-WAIT; 0.0.0.0:* for a
listener's peer). tcplab ss lists every state unless filtered (as ss -a),
never resolves names (as ss -n) and lists only TCP (as ss -t): -a, -n
and -t are accepted for the habit.

Root is not needed for your own namespace; -p shows only the processes you
may look into (all of them as root), and entering another namespace needs
root.`,
		Example: `  tcplab ss                                  # every TCP socket
  tcplab ss -l -p                            # listeners and their processes
  tcplab ss --state close-wait --sport 8080  # CLOSE_WAIT on local port 8080
  tcplab ss --state synchronized --dst 10.0.0.0/8 -o
  tcplab ss --state established -i --json
  tcplab ss -tanp                            # as ss -tanp
  tcplab ss -tn state established '( sport = :22 or sport = :443 )'
  tcplab ss -tan exclude time-wait dst 10.0.0.0/8
  sudo tcplab ss -N myns                     # inside network namespace myns`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			defer oneShot()()
			if err := ff.ssExpr(args); err != nil {
				return err
			}
			f, err := ff.filter()
			if err != nil {
				return err
			}
			f.Info, f.Memory = info, memory
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
			o := inspect.TableOptions{Procs: procs, Timers: timers, Info: info, Extended: extended, Memory: memory, NoHeader: noHeader}
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
	cmd.Flags().BoolVarP(&extended, "extended", "e", false, "show the owner's uid (when not root), the inode and the socket's cookie (sk)")
	cmd.Flags().BoolVarP(&memory, "memory", "m", false, "show the socket's memory: skmem:(r,rb,t,tb,f,w,o,bl,d) as ss prints it")
	cmd.Flags().BoolVarP(&noHeader, "no-header", "H", false, "leave out the header line")
	cmd.Flags().BoolVarP(&tcp, "tcp", "t", false, "TCP sockets (tcplab ss lists only those; for ss's habit)")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "every state (what tcplab ss lists unless filtered; for ss's habit)")
	cmd.Flags().BoolVarP(&numeric, "numeric", "n", false, "numbers, not names (tcplab ss never resolves; for ss's habit)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON")
	return cmd
}
