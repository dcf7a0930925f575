package capture

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcplab/tcplab/trace"
)

// Summary is what explain reports of one connection.
type Summary struct {
	Index        int            `json:"index"`
	Client       netip.AddrPort `json:"client"`
	Server       netip.AddrPort `json:"server"`
	First        time.Duration  `json:"first"` // from the capture's first packet
	Last         time.Duration  `json:"last"`
	FirstFrame   int            `json:"first_frame"`
	Packets      int            `json:"packets"`
	BytesToSrv   int64          `json:"bytes_to_server"`
	BytesToCli   int64          `json:"bytes_to_client"`
	ClientState  string         `json:"client_state"`
	ServerState  string         `json:"server_state"`
	ClientStates []StateLine    `json:"client_states"`
	ServerStates []StateLine    `json:"server_states"`
	Notes        []string       `json:"notes,omitempty"`
	DupPackets   int            `json:"duplicate_packets,omitempty"`
}

// StateLine is one inferred change, timed from the capture's start.
type StateLine struct {
	At       time.Duration `json:"at"`
	Frame    int           `json:"frame,omitempty"`
	From     string        `json:"from"`
	To       string        `json:"to"`
	Cause    string        `json:"cause"`
	Probably string        `json:"probably,omitempty"`
}

// Summarize reports a finished connection, its times counted from t0.
func Summarize(c *Conn, t0 time.Time) Summary {
	lines := func(e *End) []StateLine {
		out := make([]StateLine, 0, len(e.Changes))
		for _, ch := range e.Changes {
			out = append(out, StateLine{At: ch.At.Sub(t0), Frame: ch.Frame, From: ch.From, To: ch.To, Cause: ch.Cause, Probably: ch.Probably})
		}
		return out
	}
	return Summary{Index: c.Index, Client: c.Client.Addr, Server: c.Server.Addr,
		First: c.First.Sub(t0), Last: c.Last.Sub(t0), FirstFrame: c.FirstFrame, Packets: c.Packets,
		BytesToSrv: c.Bytes[0], BytesToCli: c.Bytes[1], ClientState: c.Client.State, ServerState: c.Server.State,
		ClientStates: lines(c.Client), ServerStates: lines(c.Server), Notes: c.Notes, DupPackets: c.Dups}
}

// Line is the summary's one line: index, endpoints, times, packets, bytes
// each way and both ends' last states.
func (s *Summary) Line() string {
	return fmt.Sprintf("#%-4d %v > %v  %s-%s  %d pkts  %d B > %d B <  client %s  server %s",
		s.Index, s.Client, s.Server, trace.FormatTime(s.First), trace.FormatTime(s.Last), s.Packets,
		s.BytesToSrv, s.BytesToCli, s.ClientState, s.ServerState)
}

// WriteTimeline writes both ends' state changes, in time order, and what
// the capture could not see.
func (s *Summary) WriteTimeline(w io.Writer) {
	fmt.Fprintln(w, s.Line())
	type row struct {
		who string
		l   StateLine
	}
	var rows []row
	ci, si := 0, 0
	for ci < len(s.ClientStates) || si < len(s.ServerStates) {
		if si >= len(s.ServerStates) || ci < len(s.ClientStates) && s.ClientStates[ci].At <= s.ServerStates[si].At {
			rows = append(rows, row{"client", s.ClientStates[ci]})
			ci++
		} else {
			rows = append(rows, row{"server", s.ServerStates[si]})
			si++
		}
	}
	for _, r := range rows {
		frame := "timer"
		if r.l.Frame > 0 {
			frame = "frame " + strconv.Itoa(r.l.Frame)
		}
		fmt.Fprintf(w, "  %-10s %-6s %s -> %s  (%s: %s)\n", trace.FormatTime(r.l.At), r.who, r.l.From, r.l.To, frame, r.l.Cause)
		if r.l.Probably != "" {
			fmt.Fprintf(w, "  %-10s %-6s   probably: %s\n", "", "", r.l.Probably)
		}
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// Match says whether a --conn filter picks this connection: its index,
// or an address, a port or an address:port of either end.
func (s *Summary) Match(spec string) bool {
	if n, err := strconv.Atoi(strings.TrimPrefix(spec, "#")); err == nil && !strings.Contains(spec, ".") && !strings.Contains(spec, ":") {
		return s.Index == n
	}
	for _, ap := range []netip.AddrPort{s.Client, s.Server} {
		if spec == ap.String() || spec == ap.Addr().String() || spec == ":"+strconv.Itoa(int(ap.Port())) {
			return true
		}
	}
	return false
}

// ReadFile explains a capture file: every connection is handed to each,
// in the order connections end (the rest at the end, by index). It
// returns the number of packets read and of frames skipped.
func ReadFile(path string, opt Options, each func(*Conn, time.Time)) (packets, skipped int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return Read(f, opt, each)
}

// Read explains a capture read from r (see ReadFile).
func Read(r io.Reader, opt Options, each func(*Conn, time.Time)) (packets, skipped int, err error) {
	rd, err := NewReader(r)
	if err != nil {
		return 0, 0, err
	}
	defer rd.Close()
	var t0 time.Time
	tr := NewTracker(opt, func(c *Conn) { each(c, t0) })
	for {
		p, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tr.Flush()
			return packets, rd.Skipped, err
		}
		if t0.IsZero() {
			t0 = p.Time
			tr.t0 = t0
		}
		packets++
		tr.Add(&p)
	}
	tr.Flush()
	return packets, rd.Skipped, nil
}
