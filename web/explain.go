package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tcplab/tcplab/capture"
	"github.com/tcplab/tcplab/draw"
	"github.com/tcplab/tcplab/trace"
)

// Limits of one capture upload.
const (
	MaxCapture   = 64 << 20 // bytes of capture
	MaxConnLines = 500      // connections listed in the answer
	// MaxCaptureUnzipped bounds a gzip upload once decompressed.
	MaxCaptureUnzipped = 256 << 20
	// candidates: without ?conn, the report shows the first of the
	// capture's first connections that has a finding (else the first).
	candidates = 8
	// MaxOpenConns bounds the connections a page's capture holds open at
	// once (a SYN flood packed into a second would hold one each).
	MaxOpenConns = 50_000
)

// ExplainResult is a capture's answer: one connection's report (its
// ladder, state diagram, events and findings as a run's), and the list of
// the capture's connections to pick another.
type ExplainResult struct {
	RunResult
	Conn        int               `json:"conn"` // the connection the report shows
	Connections []ConnLine        `json:"connections"`
	Total       int               `json:"total"` // connections in the capture (the list stops at MaxConnLines)
	Packets     int               `json:"packets"`
	Findings    []capture.Finding `json:"capture_findings,omitempty"`
}

// ConnLine is one connection of a capture, as explain's summary line.
type ConnLine struct {
	Index    int    `json:"index"`
	Line     string `json:"line"`
	Findings int    `json:"findings"`
}

// explain reads an uploaded capture (the request's body, pcap or pcapng,
// gzip or not) and answers with one connection's report: ?conn=SPEC
// picks it (as tcplab explain --conn), else the first with a finding,
// else the first.
func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// A page posts the file's bytes; a form from another site cannot
	// post this type without a preflight the server does not answer.
	if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" && ct != "application/vnd.tcpdump.pcap" {
		http.Error(w, "post the capture's bytes as application/octet-stream", http.StatusUnsupportedMediaType)
		return
	}
	spec := r.URL.Query().Get("conn")
	if spec != "" {
		if err := capture.CheckSpec(spec); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	s.inSimSlot(w, func() (int, []byte) {
		body := &deadlineReader{http.MaxBytesReader(w, r.Body, MaxCapture), start.Add(s.o.SimTimeout)}
		return s.explainAnswer(body, spec, start)
	})
}

// deadlineReader stops reading at a deadline.
type deadlineReader struct {
	r        io.Reader
	deadline time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if time.Now().After(d.deadline) {
		return 0, fmt.Errorf("the capture took longer than the page's limit to read (tcplab explain has none)")
	}
	return d.r.Read(p)
}

// maxUnzipped is MaxCaptureUnzipped (a test makes it smaller).
var maxUnzipped int64 = MaxCaptureUnzipped

func (s *Server) explainAnswer(body io.Reader, spec string, start time.Time) (int, []byte) {
	out := ExplainResult{}
	var chosen, firstFound, first *capture.Conn
	var t0 time.Time
	// Events are kept for the connections the report may show: the one
	// ?conn picks, or the first candidates.
	matched := false
	keep := func(index int, cl, sv netip.AddrPort) bool {
		if spec != "" {
			// The first match only (connections start in index order).
			if !matched && capture.Match(spec, index, cl, sv) {
				matched = true
				return true
			}
			return false
		}
		return index <= candidates
	}
	st, err := capture.Read(body, capture.Options{EventsFor: keep, MaxEvents: s.o.Budget.MaxEvents, MaxOpen: MaxOpenConns, MaxUnzipped: maxUnzipped}, func(c *capture.Conn, start time.Time) {
		t0 = start
		out.Total++
		sum := capture.Summarize(c, start)
		out.Connections = append(out.Connections, ConnLine{Index: c.Index, Line: sum.Line(), Findings: len(c.Findings)})
		if len(out.Connections) >= 2*MaxConnLines {
			// Keep the first by index (they end in another order).
			sort.Slice(out.Connections, func(i, j int) bool { return out.Connections[i].Index < out.Connections[j].Index })
			out.Connections = out.Connections[:MaxConnLines]
		}
		if c.Events == nil {
			return
		}
		// Only the best candidate so far keeps its events.
		best := &first
		switch {
		case spec != "":
			best = &chosen
		case len(c.Findings) > 0:
			best = &firstFound
		}
		if *best == nil || c.Index < (*best).Index {
			if *best != nil {
				(*best).Events = nil
			}
			*best = c
		} else {
			c.Events = nil
		}
		if firstFound != nil && first != nil {
			first.Events, first = nil, nil
		}
	})
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, []byte(fmt.Sprintf("the capture is larger than %d MiB (tcplab explain reads any size)", MaxCapture>>20))
		}
		return http.StatusOK, mustJSON(ExplainResult{RunResult: RunResult{Errors: []ErrorAt{{Msg: err.Error()}}}})
	}
	sort.Slice(out.Connections, func(i, j int) bool { return out.Connections[i].Index < out.Connections[j].Index })
	out.Connections = out.Connections[:min(len(out.Connections), MaxConnLines)]
	out.Packets, out.Findings = st.Packets, st.Findings
	c := chosen
	if c == nil && spec == "" {
		c = firstFound
		if c == nil {
			c = first
		}
	}
	if c == nil {
		msg := "the capture has no TCP connection"
		if spec != "" {
			msg = "no connection matches " + spec
		}
		return http.StatusOK, mustJSON(ExplainResult{RunResult: RunResult{Errors: []ErrorAt{{Msg: msg}}}, Connections: out.Connections, Total: out.Total, Packets: out.Packets})
	}
	out.Conn = c.Index
	events := c.Events
	sum := capture.Summarize(c, t0)
	var text strings.Builder
	for _, f := range sum.Findings {
		fmt.Fprintf(&text, "%s: %s. %s", f.Kind, f.Summary, f.Explain)
		if f.Scenario != "" {
			fmt.Fprintf(&text, " (the %s scenario reproduces it)", f.Scenario)
		}
		text.WriteString("\n\n")
	}
	for _, n := range sum.Notes {
		text.WriteString("Note: " + n + "\n")
	}
	if c.EventsCut {
		fmt.Fprintf(&text, "Note: the page shows the connection's first %d events (tcplab explain --conn %d --html shows all).\n", len(events), c.Index)
	}
	if text.Len() == 0 {
		text.WriteString("No findings: an ordinary connection.")
	}
	hosts := []trace.Host{{Name: "client", Addr: c.Client.Addr.String()}, {Name: "server", Addr: c.Server.Addr.String()}}
	end := c.Last.Sub(t0)
	for _, e := range events {
		end = max(end, e.At)
	}
	title := fmt.Sprintf("connection #%d, %v > %v", c.Index, c.Client.Addr, c.Server.Addr)
	out.Report = draw.NewTraceReport(title, strings.TrimSpace(text.String()), "capture", hosts, nil, end, events, draw.ReportOptions{})
	out.Took = float64(time.Since(start).Microseconds()) / 1000
	return http.StatusOK, mustJSON(out)
}

func mustJSON(v any) []byte {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return []byte(`{"errors":[{"msg":"` + err.Error() + `"}]}`)
	}
	return buf.Bytes()
}
