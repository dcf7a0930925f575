package draw

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// ReportOptions tune the HTML report.
type ReportOptions struct {
	Backend  string // "simulator", or the kernel's description
	Absolute bool   // absolute sequence numbers
}

// EventRow is one event as the report's table shows it.
type EventRow struct {
	At    time.Duration `json:"at"`
	Time  string        `json:"time"`
	Host  string        `json:"host"`
	Tag   string        `json:"tag"` // out, in, state, call, note, check; "" for a part heading
	Text  string        `json:"text"`
	Class string        `json:"class"` // the event kind, "failed" added to a failed check
}

// EventRows renders the events a notebook shows (packets once, as they
// leave), one row each.
func EventRows(events []trace.Event, absolute bool) []EventRow {
	view := &trace.Text{Absolute: absolute}
	var out []EventRow
	for i := range events {
		e := &events[i]
		tag, text, ok := view.Parts(e)
		if !ok {
			continue
		}
		class := e.Kind.String()
		if e.Kind == trace.KindCheck && !e.Check.OK {
			class += " failed"
		}
		if tag == "" {
			class = "heading"
		}
		out = append(out, EventRow{At: e.At, Time: trace.FormatTime(e.At), Host: e.Host, Tag: tag, Text: text, Class: class})
	}
	return out
}

// SocketRow is one socket of a snapshot.
type SocketRow struct {
	Host   string `json:"host"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
	State  string `json:"state"`
}

// Snapshot is every socket of the run right after one state change, as
// the events tell them (state and addresses), hosts in the order given.
type Snapshot struct {
	At      time.Duration `json:"at"`
	Time    string        `json:"time"`
	What    string        `json:"what"` // the change
	Sockets []SocketRow   `json:"sockets"`
}

// MaxSnapshotRows bounds the socket rows of all snapshots together: a
// run with thousands of sockets would otherwise make a table of every
// socket for every one of its state changes (10,000 connections: 10^8
// rows). The snapshots past it are left out, and a last one says how many.
const MaxSnapshotRows = 100_000

// Snapshots lists the sockets after each state change, up to
// MaxSnapshotRows rows in all.
func Snapshots(hosts []string, events []trace.Event) []Snapshot {
	type sockKey struct {
		host string
		sock uint64
	}
	live := map[sockKey]SocketRow{}
	var out []Snapshot
	rows, left := 0, 0
	for i := range events {
		e := &events[i]
		if e.Kind != trace.KindState {
			continue
		}
		if left > 0 || rows+len(live)+1 > MaxSnapshotRows {
			left++
			continue
		}
		k := sockKey{e.Host, e.Sock}
		if e.State.To == "CLOSED" {
			delete(live, k)
		} else {
			// As ss spells states and addresses (ESTAB, TIME-WAIT; a peer not
			// yet known is 0.0.0.0:*), as every ss-like table of tcplab.
			local, remote := trace.SSEnds(e.Local, e.Remote, e.State.To == "LISTEN", e.V6Only)
			live[k] = SocketRow{e.Host, local, remote, trace.SSState(e.State.To)}
		}
		snap := Snapshot{At: e.At, Time: trace.FormatTime(e.At), Sockets: make([]SocketRow, 0, len(live)),
			What: fmt.Sprintf("%s %s: %s -> %s", e.Host, e.Local, e.State.From, e.State.To)}
		keys := make([]sockKey, 0, len(live))
		for k := range live {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].host != keys[j].host {
				return hostIndex(hosts, keys[i].host) < hostIndex(hosts, keys[j].host)
			}
			return keys[i].sock < keys[j].sock
		})
		for _, k := range keys {
			snap.Sockets = append(snap.Sockets, live[k])
		}
		rows += len(snap.Sockets)
		out = append(out, snap)
	}
	if left > 0 {
		last := events[len(events)-1].At
		out = append(out, Snapshot{At: last, Time: trace.FormatTime(last), Sockets: []SocketRow{},
			What: fmt.Sprintf("(%d later state changes are not shown: the tables would hold more than %d sockets)", left, MaxSnapshotRows)})
	}
	return out
}

// Report is everything a report shows of a run: the HTML page and the web
// page draw it.
type Report struct {
	Title     string        `json:"title"`
	Explain   string        `json:"explain,omitempty"`
	Backend   string        `json:"backend"`
	Hosts     []trace.Host  `json:"hosts"`
	Held      int           `json:"held"`
	Total     int           `json:"total"`
	Checks    []trace.Check `json:"checks,omitempty"`
	Ladder    string        `json:"ladder"`
	States    string        `json:"states"`
	End       time.Duration `json:"end"`
	Events    []EventRow    `json:"events,omitempty"`
	Snapshots []Snapshot    `json:"snapshots,omitempty"`
}

// NewReport gathers a run's report.
func NewReport(res *scenario.Result, events []trace.Event, o ReportOptions) Report {
	sc := res.Scenario
	r := Report{Title: sc.Name + ": " + sc.Title, Explain: sc.Explain, Backend: o.Backend, Hosts: sc.TraceHosts(), End: res.End}
	if r.Backend == "" {
		r.Backend = res.Backend
	}
	for _, c := range res.Checks {
		r.Total++
		if c.OK {
			r.Held++
		}
		r.Checks = append(r.Checks, trace.Check{Line: c.Pos.Line, Text: c.Text, Seen: c.Seen, OK: c.OK})
	}
	r.fill(sc.HostNames(), events, o)
	return r
}

// fill draws a report's ladder, state diagram, event table and socket
// tables from the run's events.
func (r *Report) fill(hostNames []string, events []trace.Event, o ReportOptions) {
	r.Ladder = Ladder(r.Hosts, events, LadderOptions{Absolute: o.Absolute})
	r.States = States(hostNames, events, "")
	r.Events = EventRows(events, o.Absolute)
	r.Snapshots = Snapshots(hostNames, events)
}

// NewTraceReport gathers the report of a run that is not a scenario's (a
// packetdrill script's): its title, what to say of it, its verdicts as
// checks, and the same pictures and tables from its events.
func NewTraceReport(title, explain, backend string, hosts []trace.Host, checks []trace.Check, end time.Duration,
	events []trace.Event, o ReportOptions) Report {
	r := Report{Title: title, Explain: explain, Backend: backend, Hosts: hosts, Checks: checks, End: end}
	for _, c := range checks {
		r.Total++
		if c.OK {
			r.Held++
		}
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	r.fill(names, events, o)
	return r
}

// HTML writes a run as one self-contained HTML page (no external
// resources): the title and explanation, the expectations and their
// outcome, the ladder and the state diagram, the table of every event, and
// an ss-style table of every socket after each state change (its state
// and addresses, as the run's events tell them).
func HTML(w io.Writer, res *scenario.Result, events []trace.Event, o ReportOptions) error {
	return ReportHTML(w, NewReport(res, events, o))
}

// ReportHTML writes a report as HTML (see HTML).
func ReportHTML(w io.Writer, r Report) error {
	var hostText []string
	for _, h := range r.Hosts {
		hostText = append(hostText, h.Name+" "+h.Addrs())
	}
	return writeReport(w, r, strings.Join(hostText, ", "))
}

// hostIndex orders hosts as declared; an unknown one goes last.
func hostIndex(names []string, h string) int {
	if i := slices.Index(names, h); i >= 0 {
		return i
	}
	return len(names)
}

// reportHead is the report's head and style, up to its title.
const reportHead = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>`

// reportStyle follows the title.
const reportStyle = `</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
pre, td.text, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
.explain { white-space: pre-wrap; background: #f6f6f6; padding: .8em; border-radius: 4px; }
.pic { overflow-x: auto; border: 1px solid #ddd; padding: .5em; }
table { border-collapse: collapse; } td, th { padding: 1px 8px; text-align: left; vertical-align: top; }
tr.state td { background: #fff4d6; } tr.call td { color: #2e7d32; } tr.note td { color: #555; }
tr.check td { color: #1f5fbf; } tr.failed td { color: #c0392b; font-weight: bold; }
tr.heading td { font-weight: bold; padding-top: .8em; }
td.text { white-space: pre-wrap; }
.ok { color: #2e7d32; } .bad { color: #c0392b; font-weight: bold; }
details { margin: .2em 0; } summary { cursor: pointer; font-family: monospace; font-size: 12px; }
</style></head>
<body>
`

// writeReport writes the report page. It is written by hand rather than
// with html/template, whose initialisation every tcplab command would pay
// at start-up (0.09 ms and 18 KB of heap, measured): every value goes into
// element text or a quoted attribute, and esc escapes it for both.
func writeReport(w io.Writer, r Report, hostList string) error {
	bw := bufio.NewWriter(w)
	esc := func(s string) { bw.WriteString(html.EscapeString(s)) }
	raw := func(s string) { bw.WriteString(s) }
	raw(reportHead)
	esc(r.Title)
	raw(reportStyle)
	raw("<h1>")
	esc(r.Title)
	raw("</h1>\n<p class=\"mono\">hosts: ")
	esc(hostList)
	raw("; ")
	esc(r.Backend)
	raw("</p>\n")
	if r.Explain != "" {
		raw(`<div class="explain">`)
		esc(r.Explain)
		raw("</div>")
	}
	raw("\n")
	if r.Total != 0 {
		fmt.Fprintf(bw, "<h2>Expectations: %d of %d held</h2>\n<table>", r.Held, r.Total)
		for _, c := range r.Checks {
			if c.OK {
				raw(`<tr><td class="ok">ok</td>`)
			} else {
				raw(`<tr><td class="bad">FAILED</td>`)
			}
			fmt.Fprintf(bw, `<td class="mono">line %d</td><td class="mono">`, c.Line)
			esc(c.Text)
			if !c.OK {
				raw("<br>seen: ")
				esc(c.Seen)
			}
			raw("</td></tr>\n")
		}
		raw("</table>")
	}
	// The ladder and the state diagram are this package's own SVG:
	// trusted markup, written as it is.
	raw("\n<h2>Ladder</h2>\n<div class=\"pic\">")
	raw(r.Ladder)
	raw("</div>\n<h2>States</h2>\n<div class=\"pic\">")
	raw(r.States)
	raw("</div>\n<h2>Events</h2>\n<table class=\"events\">\n<tr><th>time</th><th>host</th><th></th><th>what</th></tr>\n")
	for _, e := range r.Events {
		raw(`<tr class="`)
		esc(e.Class)
		raw(`"><td class="mono">`)
		esc(e.Time)
		raw(`</td><td class="mono">`)
		esc(e.Host)
		raw(`</td><td class="mono">`)
		esc(e.Tag)
		raw(`</td><td class="text">`)
		esc(e.Text)
		raw("</td></tr>\n")
	}
	raw("</table>\n<h2>Sockets after each state change</h2>\n")
	for _, sn := range r.Snapshots {
		raw("<details><summary>")
		esc(sn.Time)
		raw("  ")
		esc(sn.What)
		raw("</summary>\n<table class=\"mono\"><tr><th>host</th><th>State</th><th>Local Address:Port</th><th>Peer Address:Port</th></tr>\n")
		for _, k := range sn.Sockets {
			raw("<tr><td>")
			esc(k.Host)
			raw("</td><td>")
			esc(k.State)
			raw("</td><td>")
			esc(k.Local)
			raw("</td><td>")
			esc(k.Remote)
			raw("</td></tr>\n")
		}
		raw("</table></details>\n")
	}
	raw("\n<p class=\"mono\" style=\"color:#888\">written by tcplab</p>\n</body></html>\n")
	return bw.Flush()
}
