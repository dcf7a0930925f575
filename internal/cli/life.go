package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
)

func newLife(stdout io.Writer) *cobra.Command {
	var (
		tf       TargetFlags
		ff       filterFlags
		asJSON   bool
		interval time.Duration
		duration time.Duration
	)
	cmd := &cobra.Command{
		Use:   "life",
		Short: "Show each TCP connection as it ends: its ends, process, bytes each way, duration, last state, who closed first (needs root)",
		Long: `life prints one line per TCP connection of this host (or of a namespace) as
it ends, like bcc's tcplife: its two ends, the process that held it, the
data bytes each way, how long it lived, the last state it reached and which
end began the close.

  TX, RX      data bytes this end sent (each once: retransmissions do not
              count) and received in order, SYN and FIN not counted. They
              come from the socket's tcp_info as the kernel frees it
              (sock_diag's destroy broadcast). A connection whose socket its
              owner keeps open after the end, or that an abort with
              SO_LINGER 0 ended (its counts zeroed), shows the counts of
              the last listing that had it, marked + (at least), or ? when
              none did.
              RX alone is marked + when the peer's FIN came within 25 ms of
              the socket's end: the kernel does not tell whether the socket
              counted it.
  DURATION    from its first change (connect(), or the handshake's end on a
              listener's side) to its end: "-" when it began before life
              started.
  FINAL       the last state of the connection's socket: for the end that
              closed first FIN_WAIT2 (freed before the peer's FIN came; a
              timewait socket waits for it) or TIME_WAIT; LAST_ACK for the
              other; for a reset, the state it found; SYN_SENT for a refused
              connect.
  CLOSED      local (this end sent the first FIN), remote, both (a
              simultaneous close), reset (a reset from the peer came first),
              abort (it ended without FIN or a reset received: it sent a
              reset, or gave up retransmitting).
  PID COMM    the process holding the socket (its inode, from a listing
              while it lived), or else the one whose thread called
              connect() or close() on it.

A connection ends when its socket does (it leaves for TIME_WAIT or CLOSE,
or is freed); it is shown once the kernel has freed the socket, or a
second after its end. docs/live.md tells more.
The changes come from the tracepoint and the listings that watch uses
(see tcplab watch --help), read every --interval; the final counts from
sock_diag, which needs CAP_NET_ADMIN.`,
		Example: `  sudo tcplab life
  sudo tcplab life --dport 443 --json
  sudo tcplab life -N myns --duration 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := ff.filter()
			if err != nil {
				return err
			}
			if interval <= 0 || duration < 0 {
				return fmt.Errorf("--interval must be positive and --duration not negative")
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("life reads a tracepoint through tracefs and sock_diag's destroy events, which need root: run it with sudo")
			}
			lw, err := inspect.NewLifeWatcher(tf.Target(), f)
			if err != nil {
				return err
			}
			defer lw.Close()
			sig, stop := interrupts()
			defer stop()
			var end <-chan time.Time
			if duration > 0 {
				end = time.After(duration)
			}
			bw := bufio.NewWriter(stdout)
			if !asJSON {
				fmt.Fprintf(bw, "%-15s %-22s %-22s %7s %-15s %10s %10s %11s  %-11s %s\n", "END", "LOCAL", "REMOTE", "PID", "COMM", "TX", "RX", "DURATION", "FINAL", "CLOSED")
				bw.Flush()
			}
			say := func(format string, a ...any) {
				if asJSON {
					fmt.Fprintf(cmd.ErrOrStderr(), "tcplab life: "+format+"\n", a...)
				} else {
					fmt.Fprintf(bw, "# "+format+"\n", a...)
				}
			}
			show := func(ls []inspect.Life) {
				for _, l := range ls {
					if asJSON {
						b, _ := json.Marshal(l)
						bw.Write(append(b, '\n'))
						continue
					}
					writeLife(bw, l)
				}
			}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			var lostChanges, lostFreed int
			var stopAt time.Time
			closed := make(chan time.Time)
			close(closed)
			for {
				if stopAt.IsZero() {
					var now <-chan time.Time
					if lw.Behind() {
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
					case <-sig:
						return nil
					case <-tick.C:
					}
				}
				ls, err := lw.Poll()
				if err != nil {
					return err
				}
				show(ls)
				for _, n := range lw.Notes() {
					say("%s", n)
				}
				c, fr := lw.Lost()
				if c > lostChanges {
					say("lost %d state changes (the trace buffer overflowed)", c-lostChanges)
					lostChanges = c
				}
				if fr > lostFreed {
					say("lost the final counts of some connections (%d overflows of the destroy events' buffer)", fr-lostFreed)
					lostFreed = fr
				}
				if err := bw.Flush(); err != nil {
					return err
				}
				// Once stopped, the connections that ended before are shown,
				// if the reader reaches them within 2 s.
				if !stopAt.IsZero() && (!lw.Through().Before(stopAt) && lw.Waiting() == 0 || time.Since(stopAt) > 2*time.Second) {
					show(lw.Flush())
					return bw.Flush()
				}
			}
		},
	}
	tf.Add(cmd)
	ff.addEnds(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "write one JSON object per connection")
	cmd.Flags().DurationVar(&interval, "interval", 250*time.Millisecond, "how often to read the trace, list the sockets and read the freed ones")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long (0: until interrupted)")
	return cmd
}

func writeLife(w io.Writer, l inspect.Life) {
	pid, comm := "-", "-"
	if len(l.Processes) > 0 {
		pid, comm = strconv.Itoa(l.Processes[0].PID), l.Processes[0].Comm
		if len(l.Processes) > 1 {
			comm += fmt.Sprintf(",+%d", len(l.Processes)-1)
		}
	}
	tx, rx := strconv.FormatUint(l.BytesSent, 10), strconv.FormatUint(l.BytesReceived, 10)
	switch l.Bytes {
	case "listed":
		tx, rx = tx+"+", rx+"+"
	case "":
		tx, rx = "?", "?"
	default:
		if l.ReceivedAtLeast {
			rx += "+"
		}
	}
	dur := "-"
	if l.Duration > 0 {
		dur = fmt.Sprintf("%.3fms", float64(l.Duration.Microseconds())/1000)
		if l.Duration >= 10*time.Second {
			dur = l.Duration.Round(100 * time.Millisecond).String()
		}
	}
	final, closed := "?", l.ClosedFirst
	if l.Final != 0 {
		final = l.Final.String()
	}
	if closed == "" {
		closed = "?"
	}
	fmt.Fprintf(w, "%-15s %-22s %-22s %7s %-15s %10s %10s %11s  %-11s %s\n", l.End.Format("15:04:05.000000"), l.Local, l.Remote, pid, comm, tx, rx, dur, final, closed)
}
