package full

import (
	"bytes"
	"container/heap"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tcplab/tcplab/internal/cli"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/capture"
	"github.com/tcplab/tcplab/draw"
	"github.com/tcplab/tcplab/internal/outfile"
	"github.com/tcplab/tcplab/trace"
)

// explainHold is how many finished connections explain holds back to
// print them in the order they started; past it, the oldest held one is
// printed (a connection open through a long capture comes when it ends).
const explainHold = 10000

type explainFlags struct {
	conns            []string
	asJSON, ladder   bool
	svg, html, scene string
}

func newExplain(stdout io.Writer) *cobra.Command {
	var f explainFlags
	cmd := &cobra.Command{
		Use:   "explain CAPTURE",
		Short: cli.FullCommandShort("explain"),
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

Findings name what the packets show, each with its evidence frames, an
explanation and the built-in scenario that reproduces it: an unanswered
SYN (and whose retransmission timeline it follows), a refused port, a
full accept queue, a SYN flood, data lost after the peer's FIN, CLOSE_WAIT
held, an unanswered FIN, an orphaned FIN_WAIT2 timed out, TIME_WAIT reuse,
simultaneous open and close, an abortive close, blind resets and
challenge ACKs, keepalive and a dead peer, retransmissions given up, a
zero window, a connection with no end.

Memory follows the connections still open, not the file's size; lines are
printed as connections end, in the order they started.

By default one line per connection: index, client and server, first and
last time, packets, payload bytes each way, both ends' last states and
the kinds of its findings, then the capture-wide findings. --conn picks
connections (by index, address, :port or address:port; it may repeat)
and prints their timelines and findings in full; --json writes one object
per connection, then one of kind "capture".

--ladder, --svg, --html and --scenario show one connection: pick it with
--conn when the capture has several. --scenario writes a scenario that
replays the connection's story in the simulator (tcplab run FILE; add
--kernel to replay it on Linux).`,
		Example: `  tcplab explain server.pcap
  tcplab explain --conn 3 server.pcapng.gz
  tcplab explain --conn :8080 --json capture.pcap
  tcplab explain --conn 10.0.0.1:41000 --ladder --html story.html capture.pcap
  tcplab explain --conn 2 --scenario story.tcplab capture.pcap && tcplab run story.tcplab`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cli.Apart(cmd, "--json writes the connections, --ladder draws one (--svg draws it to a file beside the JSON)", "json", "ladder"); err != nil {
				return err
			}
			return runExplain(stdout, args[0], &f)
		},
	}
	fl := cmd.Flags()
	cli.RepeatVar(fl, &f.conns, "conn", "conn", "show these connections' timelines: an index, an address, :port or address:port")
	fl.BoolVar(&f.asJSON, "json", false, "one JSON object per connection, with both ends' timelines and findings")
	fl.BoolVar(&f.ladder, "ladder", false, "draw the connection's ladder diagram")
	fl.StringVar(&f.svg, "svg", "", "draw the connection's ladder diagram as SVG to this file")
	fl.StringVar(&f.html, "html", "", "write the connection as one HTML page to this file (findings, ladder, state diagram, events)")
	fl.StringVar(&f.scene, "scenario", "", "write a scenario that replays the connection in the simulator to this file")
	return cmd
}

func runExplain(stdout io.Writer, path string, f *explainFlags) error {
	for _, spec := range f.conns {
		if err := capture.CheckSpec(spec); err != nil {
			return err
		}
	}
	if f.asJSON && f.ladder {
		return fmt.Errorf("--json and --ladder both write to standard output: choose one")
	}
	one := f.ladder || f.svg != "" || f.html != "" || f.scene != ""
	picked := func(index int, cl, sv netip.AddrPort) bool {
		if len(f.conns) == 0 {
			return !one || index == 1
		}
		for _, spec := range f.conns {
			if capture.Match(spec, index, cl, sv) {
				return true
			}
		}
		return false
	}
	files := map[string]*outfile.File{}
	for _, p := range []string{f.svg, f.html, f.scene} {
		if p == "" {
			continue
		}
		if files[p] != nil {
			return fmt.Errorf("%s is given to two of --svg, --html and --scenario", p)
		}
		of, err := outfile.Create(p)
		if err != nil {
			return err
		}
		defer of.Abort()
		files[p] = of
	}
	opt := capture.Options{}
	if one {
		opt.EventsFor = picked
	}
	enc := json.NewEncoder(stdout)
	var chosen []*capture.Conn
	var t0 time.Time
	count := map[string]int{}
	shown := 0
	emit := func(s *capture.Summary) {
		shown++
		for _, fd := range s.Findings {
			count[fd.Kind]++
		}
		switch {
		case f.asJSON:
			_ = enc.Encode(s)
		case one && !f.ladder:
		case one || len(f.conns) > 0:
			s.WriteTimeline(stdout)
		default:
			fmt.Fprintln(stdout, s.Line())
		}
	}
	// Print in the order connections started, holding back at most
	// explainHold finished ones.
	next := 1
	held := map[int]*capture.Summary{}
	var order indexHeap // the held indices, least first
	hold := func(i int, s *capture.Summary) {
		held[i] = s
		heap.Push(&order, i)
	}
	release := func(all bool) {
		for len(held) > 0 {
			s, ok := held[next]
			if !ok {
				if !all && len(held) <= explainHold {
					return
				}
				for order.Len() > 0 {
					if _, ok := held[order[0]]; ok {
						break
					}
					heap.Pop(&order) // printed already
				}
				next = order[0]
				continue
			}
			delete(held, next)
			next++
			for order.Len() > 0 {
				if _, ok := held[order[0]]; ok {
					break
				}
				heap.Pop(&order) // printed
			}
			if s != nil {
				emit(s)
			}
		}
	}
	total := 0
	st, err := capture.ReadFile(path, opt, func(c *capture.Conn, start time.Time) {
		total++
		t0 = start
		if !picked(c.Index, c.Client.Addr, c.Server.Addr) {
			if c.Index == next {
				next++
			} else {
				hold(c.Index, nil)
			}
			release(false)
			return
		}
		if one {
			chosen = append(chosen, c)
		}
		s := capture.Summarize(c, start)
		hold(c.Index, &s)
		release(false)
	})
	release(true)
	if err != nil {
		return fmt.Errorf("explain %s: %w", path, err)
	}
	if one {
		what := ""
		switch {
		case len(f.conns) == 0 && total > 1:
			what = fmt.Sprintf("the capture has %d connections", total)
		case len(chosen) == 0:
			what = "no connection matches --conn"
		case len(chosen) > 1:
			what = fmt.Sprintf("%d connections match --conn", len(chosen))
		}
		if what != "" {
			return fmt.Errorf("--ladder, --svg, --html and --scenario show one connection: %s (pick one with --conn N)", what)
		}
		if err := explainViews(stdout, path, chosen[0], t0, f, files); err != nil {
			return err
		}
	}
	if f.asJSON {
		return enc.Encode(map[string]any{"kind": "capture", "file": path, "packets": st.Packets, "skipped_frames": st.Skipped,
			"connections": total, "findings": st.Findings})
	}
	if one && !f.ladder {
		return nil
	}
	for i := range st.Findings {
		if i == 0 {
			fmt.Fprintln(stdout, "capture-wide:")
		}
		capture.WriteFinding(stdout, &st.Findings[i], "  ")
	}
	plural := "s"
	if total == 1 {
		plural = ""
	}
	fmt.Fprintf(stdout, "%d connection%s, %d TCP packets", total, plural, st.Packets)
	if shown != total {
		fmt.Fprintf(stdout, " (%d shown)", shown)
	}
	if st.Skipped > 0 {
		fmt.Fprintf(stdout, " (%d other frames skipped)", st.Skipped)
	}
	fmt.Fprintln(stdout)
	if len(count) > 0 {
		kinds := make([]string, 0, len(count))
		for k := range count {
			kinds = append(kinds, k)
		}
		sort.Slice(kinds, func(i, j int) bool {
			return count[kinds[i]] > count[kinds[j]] || count[kinds[i]] == count[kinds[j]] && kinds[i] < kinds[j]
		})
		var parts []string
		for _, k := range kinds {
			parts = append(parts, fmt.Sprintf("%d %s", count[k], k))
		}
		fmt.Fprintf(stdout, "findings: %s\n", strings.Join(parts, ", "))
	}
	return nil
}

// indexHeap is a min-heap of connection indices.
type indexHeap []int

func (h indexHeap) Len() int           { return len(h) }
func (h indexHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h indexHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *indexHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *indexHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// explainViews draws one connection: the ladder, the SVG, the page and
// the scenario.
func explainViews(stdout io.Writer, path string, c *capture.Conn, t0 time.Time, f *explainFlags, files map[string]*outfile.File) error {
	hosts := []trace.Host{{Name: "client", Addr: c.Client.Addr.String()}, {Name: "server", Addr: c.Server.Addr.String()}}
	title := fmt.Sprintf("%s: connection #%d, %v > %v", path, c.Index, c.Client.Addr, c.Server.Addr)
	if f.ladder {
		if err := trace.WriteLadder(stdout, []string{"client", "server"}, c.Events, false); err != nil {
			return err
		}
	}
	if f.svg != "" {
		if err := cli.WriteCommit(files[f.svg], draw.Ladder(hosts, c.Events, draw.LadderOptions{Title: title})); err != nil {
			return err
		}
	}
	if f.html != "" {
		s := capture.Summarize(c, t0)
		var text strings.Builder
		for i := range s.Findings {
			fd := &s.Findings[i]
			fmt.Fprintf(&text, "%s: %s. %s", fd.Kind, fd.Summary, fd.Explain)
			if fd.Scenario != "" {
				fmt.Fprintf(&text, " (tcplab run %s)", fd.Scenario)
			}
			text.WriteString("\n\n")
		}
		for _, n := range s.Notes {
			text.WriteString("Note: " + n + "\n")
		}
		if text.Len() == 0 {
			text.WriteString("No findings: an ordinary connection.")
		}
		end := c.Last.Sub(t0)
		for _, e := range c.Events {
			end = max(end, e.At)
		}
		r := draw.NewTraceReport("explain "+title, strings.TrimSpace(text.String()), "capture "+path, hosts, nil, end, c.Events, draw.ReportOptions{})
		var b bytes.Buffer
		if err := draw.ReportHTML(&b, r); err != nil {
			return err
		}
		if err := cli.WriteCommit(files[f.html], b.String()); err != nil {
			return err
		}
	}
	if f.scene != "" {
		doc := capture.Scenario(c, path)
		if err := cli.WriteCommit(files[f.scene], doc); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: tcplab run %s replays connection #%d in the simulator\n", f.scene, f.scene, c.Index)
	}
	return nil
}
