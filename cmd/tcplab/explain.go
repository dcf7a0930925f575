package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/capture"
)

func newExplain(stdout io.Writer) *cobra.Command {
	var (
		conns  []string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "explain CAPTURE",
		Short: "Infer both ends' TCP states from a pcap or pcapng capture",
		Long: `explain reads a capture (pcap or pcapng, gzip-compressed or not; Ethernet
with VLAN tags, Linux cooked v1 and v2, raw IP and BSD loopback; IPv4 and
IPv6), groups its TCP packets into connections (a 4-tuple used again after
a close is a new connection) and infers, for each, both ends' states: each
change with the packet that caused it (frame numbers as Wireshark counts
them) and its time from the capture's first packet.

Where the capture cannot know, the change says "probably" and why: a
capture that starts mid-connection, a packet the capture point never saw,
what Linux's timers do after the last packet (TIME_WAIT's 60 s, an
orphaned FIN_WAIT2's tcp_fin_timeout, giving up when the next
retransmission was due). A packet seen on two interfaces of one capture
(both hosts' taps) is taken once.

Memory follows the connections still open, not the file's size.

By default one line per connection: index, client and server, first and
last time, packets, payload bytes each way, and both ends' last states.
--conn picks connections (by index, address, :port or address:port; the
flag may repeat) and prints their timelines; --json writes one object per
connection with its timeline.`,
		Example: `  tcplab explain server.pcap
  tcplab explain --conn 3 server.pcapng.gz
  tcplab explain --conn :8080 --json capture.pcap`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []capture.Summary
			opt := capture.Options{}
			pk, skipped, err := capture.ReadFile(args[0], opt, func(c *capture.Conn, t0 time.Time) {
				s := capture.Summarize(c, t0)
				if len(conns) > 0 {
					keep := false
					for _, spec := range conns {
						keep = keep || s.Match(spec)
					}
					if !keep {
						return
					}
				}
				out = append(out, s)
			})
			if err != nil {
				return fmt.Errorf("explain %s: %w", args[0], err)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
			if asJSON {
				enc := json.NewEncoder(stdout)
				for i := range out {
					if err := enc.Encode(&out[i]); err != nil {
						return err
					}
				}
				return nil
			}
			for i := range out {
				if len(conns) > 0 {
					out[i].WriteTimeline(stdout)
				} else {
					fmt.Fprintln(stdout, out[i].Line())
				}
			}
			plural := "s"
			if len(out) == 1 {
				plural = ""
			}
			fmt.Fprintf(stdout, "%d connection%s, %d TCP packets", len(out), plural, pk)
			if skipped > 0 {
				fmt.Fprintf(stdout, " (%d other frames skipped)", skipped)
			}
			fmt.Fprintln(stdout)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&conns, "conn", nil, "show these connections' timelines: an index, an address, :port or address:port")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per connection, with both ends' timelines")
	return cmd
}
