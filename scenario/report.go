package scenario

import (
	"fmt"
	"io"
	"strings"

	"github.com/tcplab/tcplab/trace"
)

// ReportOptions choose the views of a run's text report.
type ReportOptions struct {
	// Backend describes where the run happened ("simulator, seed 1").
	Backend  string
	Profile  string // the --profile override, "" if none
	Ladder   bool   // the ladder diagram instead of event lines
	Absolute bool
	Counters bool
	AllTaps  bool
	// Colour marks FAILED in bold red (a terminal's ANSI codes).
	Colour bool
}

// WriteReport prints a run as `tcplab run` shows it: the title and
// explanation, the events (or the ladder), the snapshots asked for, the
// states each host reached, its counters, and the expectations.
func WriteReport(w io.Writer, res *Result, events []trace.Event, o ReportOptions) error {
	sc := res.Scenario
	if o.Backend == "" {
		o.Backend = res.Backend
	}
	view := WriteReportHead(w, sc, o)
	view.TimeWidth = max(view.TimeWidth, len(trace.FormatTime(res.End)))
	if o.Ladder {
		if err := trace.WriteLadder(w, sc.HostNames(), events, o.Absolute); err != nil {
			return err
		}
		return writeTail(w, res, o, res.Snapshots)
	}
	// Each snapshot comes where its time falls among the events: after
	// those of its instant, before the first later one.
	snaps := res.Snapshots
	for i := range events {
		for len(snaps) > 0 && events[i].At > snaps[0].At {
			if err := writeSnapshot(w, snaps[0]); err != nil {
				return err
			}
			snaps = snaps[1:]
		}
		if line, ok := view.Line(&events[i]); ok {
			if _, err := fmt.Fprintln(w, line); err != nil {
				return err
			}
		}
	}
	return writeTail(w, res, o, snaps)
}

// WriteReportHead prints the report's head: the title, the explanation and
// the hosts. It returns the view that prints its event lines, for a report
// whose events are printed as they happen (a kernel run).
func WriteReportHead(w io.Writer, sc *Scenario, o ReportOptions) *trace.Text {
	fmt.Fprintf(w, "%s: %s\n", sc.Name, sc.Title)
	if sc.Explain != "" {
		for _, l := range strings.Split(sc.Explain, "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	var hs []string
	hw := 6
	for _, h := range sc.Hosts {
		p := h.Profile
		if o.Profile != "" {
			p = o.Profile
		}
		addrs := h.Addr.String()
		if h.Addr6.IsValid() {
			addrs += " " + h.Addr6.String()
		}
		hs = append(hs, fmt.Sprintf("%s %s (%s)", h.Name, addrs, profileOr(p)))
		hw = max(hw, len(h.Name))
	}
	fmt.Fprintf(w, "  hosts: %s; %s\n\n", strings.Join(hs, ", "), o.Backend)
	// The time column is as wide as the script's latest time needs.
	return &trace.Text{Absolute: o.Absolute, Counters: o.Counters, AllTaps: o.AllTaps, HostWidth: hw,
		TimeWidth: len(trace.FormatTime(sc.Span))}
}

// WriteReportTail prints what follows the events: the snapshots asked
// for, the states each host reached, its counters and the expectations.
func WriteReportTail(w io.Writer, res *Result, o ReportOptions) error {
	return writeTail(w, res, o, res.Snapshots)
}

// writeSnapshot prints the sockets of every host at one time, as ss does.
func writeSnapshot(w io.Writer, s Snapshot) error {
	fmt.Fprintf(w, "\nsockets at %s", trace.FormatTime(s.At))
	if s.PastEnd {
		fmt.Fprint(w, " (after the scenario's last step)")
	}
	fmt.Fprintln(w)
	for _, h := range s.Hosts {
		fmt.Fprintf(w, "%s:\n", h.Host)
		var b strings.Builder
		if err := trace.WriteSS(&b, h.Sockets); err != nil {
			return err
		}
		for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	return nil
}

// writeTail prints the snapshots not yet printed, the states reached, the
// counters and the expectations.
func writeTail(w io.Writer, res *Result, o ReportOptions, snaps []Snapshot) error {
	sc := res.Scenario
	hw := 6
	for _, h := range sc.Hosts {
		hw = max(hw, len(h.Name))
	}
	for _, s := range snaps {
		if err := writeSnapshot(w, s); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nstates reached:")
	for _, h := range res.States {
		st := strings.Join(h.States, " ")
		if st == "" {
			st = "(no connection)"
		}
		fmt.Fprintf(w, "  %-*s %s\n", hw, h.Host, st)
	}
	fmt.Fprintln(w, "counters:")
	for _, h := range sc.Hosts {
		var parts []string
		for _, c := range res.Counters[h.Name] {
			parts = append(parts, fmt.Sprintf("%s=%d", c.Name, c.Value))
		}
		if len(parts) == 0 {
			parts = []string{"(all zero)"}
		}
		fmt.Fprintf(w, "  %-*s %s\n", hw, h.Name, strings.Join(parts, " "))
	}
	failed := res.Failed()
	clock := "virtual time" // the simulator's
	if res.Backend == "kernel" {
		clock = "wall time" // the kernel runs in real time
	}
	fmt.Fprintf(w, "\n%d of %d expectations held; %s %ss\n", len(res.Checks)-failed, len(res.Checks), clock, trace.FormatTime(res.End))
	for _, c := range res.Checks {
		if !c.OK {
			mark := "FAILED"
			if o.Colour {
				mark = ansiFailed
			}
			fmt.Fprintf(w, "%s %s: %s\n  seen: %s\n", mark, c.Pos, c.Text, c.Seen)
		}
	}
	return nil
}

// TraceHosts lists the hosts, names and addresses, in declaration order.
func (s *Scenario) TraceHosts() []trace.Host {
	out := make([]trace.Host, len(s.Hosts))
	for i, h := range s.Hosts {
		out[i] = trace.Host{Name: h.Name, Addr: h.Addr.String()}
		if h.Addr6.IsValid() {
			out[i].Addr6 = h.Addr6.String()
		}
	}
	return out
}

// HostNames lists the hosts in declaration order.
func (s *Scenario) HostNames() []string {
	out := make([]string, len(s.Hosts))
	for i, h := range s.Hosts {
		out[i] = h.Name
	}
	return out
}

// ansiFailed is FAILED in bold red, for a terminal.
const ansiFailed = "\033[1;31mFAILED\033[0m"

// ColourFailed marks every FAILED of text in bold red, for a terminal
// (after a table is aligned: the codes take no room on the screen).
func ColourFailed(text string) string { return strings.ReplaceAll(text, "FAILED", ansiFailed) }
