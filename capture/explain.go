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
	Kind         string         `json:"kind"` // "connection"
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
	Findings     []Finding      `json:"findings,omitempty"`
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
	return Summary{Kind: "connection", Index: c.Index, Client: c.Client.Addr, Server: c.Server.Addr,
		First: c.First.Sub(t0), Last: c.Last.Sub(t0), FirstFrame: c.FirstFrame, Packets: c.Packets,
		BytesToSrv: c.Bytes[0], BytesToCli: c.Bytes[1], ClientState: c.Client.State, ServerState: c.Server.State,
		ClientStates: lines(c.Client), ServerStates: lines(c.Server), Notes: c.Notes, DupPackets: c.Dups,
		Findings: c.Findings}
}

// Line is the summary's one line: index, endpoints, times, packets, bytes
// each way and both ends' last states.
func (s *Summary) Line() string {
	line := fmt.Sprintf("#%-4d %v > %v  %s-%s  %d pkts  %d B > %d B <  client %s  server %s",
		s.Index, s.Client, s.Server, trace.FormatTime(s.First), trace.FormatTime(s.Last), s.Packets,
		s.BytesToSrv, s.BytesToCli, s.ClientState, s.ServerState)
	for i, f := range s.Findings {
		if i == 0 {
			line += "  !"
		} else {
			line += ","
		}
		line += " " + f.Kind
	}
	return line
}

// WriteFinding writes a finding: its summary, evidence, explanation
// (wrapped) and the scenario that reproduces it.
func WriteFinding(w io.Writer, f *Finding, indent string) {
	fmt.Fprintf(w, "%s[%s] %s\n", indent, f.Kind, f.Summary)
	if len(f.Frames) > 0 {
		fr := make([]string, len(f.Frames))
		for i, n := range f.Frames {
			fr[i] = strconv.Itoa(n)
		}
		fmt.Fprintf(w, "%s  evidence: frame %s\n", indent, strings.Join(fr, ", "))
	}
	for _, l := range wrap(f.Explain, 76) {
		fmt.Fprintf(w, "%s  %s\n", indent, l)
	}
	if f.Scenario != "" {
		fmt.Fprintf(w, "%s  reproduce: tcplab run %s\n", indent, f.Scenario)
	}
}

func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
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
	for i := range s.Findings {
		WriteFinding(w, &s.Findings[i], "  ")
	}
}

// Match says whether a --conn filter picks this connection: its index,
// or an address, a port or an address:port of either end.
func (s *Summary) Match(spec string) bool { return Match(spec, s.Index, s.Client, s.Server) }

// CheckSpec says whether a --conn filter is well formed: an index, an
// address, :port or address:port.
func CheckSpec(spec string) error {
	if n, err := strconv.Atoi(strings.TrimPrefix(spec, "#")); err == nil {
		if n < 1 {
			return fmt.Errorf("--conn %q: connections are numbered from 1", spec)
		}
		return nil
	}
	if p, ok := strings.CutPrefix(spec, ":"); ok {
		if n, err := strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
			return nil
		}
	}
	if _, err := netip.ParseAddr(spec); err == nil {
		return nil
	}
	if _, err := netip.ParseAddrPort(spec); err == nil {
		return nil
	}
	return fmt.Errorf("--conn %q: want an index (3), an address (10.0.0.1), a port (:80) or address:port (10.0.0.1:80, [fd00::1]:80)", spec)
}

// Match says whether a --conn filter picks the connection with this
// index, client and server (see Summary.Match).
func Match(spec string, index int, client, server netip.AddrPort) bool {
	if n, err := strconv.Atoi(strings.TrimPrefix(spec, "#")); err == nil && !strings.Contains(spec, ".") && !strings.Contains(spec, ":") {
		return index == n
	}
	for _, ap := range []netip.AddrPort{client, server} {
		if spec == ap.String() || spec == ap.Addr().String() || spec == ":"+strconv.Itoa(int(ap.Port())) {
			return true
		}
	}
	return false
}

// Stats is what a whole capture gave.
type Stats struct {
	Packets int // TCP packets read
	Skipped int // other frames
	// Findings are the capture-wide findings (a SYN flood).
	Findings []Finding
}

// ReadFile explains a capture file: every connection is handed to each,
// in the order connections end (the rest at the end, by index).
func ReadFile(path string, opt Options, each func(*Conn, time.Time)) (Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return Stats{}, err
	}
	defer f.Close()
	return Read(f, opt, each)
}

// Read explains a capture read from r (see ReadFile).
func Read(r io.Reader, opt Options, each func(*Conn, time.Time)) (Stats, error) {
	rd, err := newReader(r, opt.MaxUnzipped)
	if err != nil {
		return Stats{}, err
	}
	defer rd.Close()
	packets := 0
	var t0 time.Time
	tr := NewTracker(opt, func(c *Conn) { each(c, t0) })
	for {
		p, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tr.Flush()
			return Stats{packets, rd.Skipped, tr.Findings()}, err
		}
		if t0.IsZero() {
			t0 = p.Time
			tr.t0 = t0
		}
		packets++
		tr.Add(&p)
	}
	tr.Flush()
	return Stats{packets, rd.Skipped, tr.Findings()}, nil
}
