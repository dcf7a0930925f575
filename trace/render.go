package trace

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Text renders events as the lines of a lab notebook: time first (seconds
// since the start, six decimals), the host, then what happened. Packets
// are printed once, as they leave their sender, in tcpdump's style; a
// packet is printed again where it arrives only when the receiver's
// firewall acted on it. Counter changes are left out unless asked for.
type Text struct {
	Absolute  bool // absolute sequence numbers (tcpdump -S)
	AllTaps   bool // print every packet at every tap
	Counters  bool // print counter changes
	HostWidth int  // width of the host column (default 8)
	// TimeWidth is the width of the time column (default 9: up to
	// 99.999999 s); a run that lasts longer sets it from its end, so
	// that the columns after it stay in place.
	TimeWidth int
	rel       Relative
}

// Line renders one event; ok is false for an event this view leaves out.
func (t *Text) Line(e *Event) (line string, ok bool) {
	hw := t.HostWidth
	if hw <= 0 {
		hw = 8
	}
	tw := max(t.TimeWidth, 9)
	tag, text, ok := t.Parts(e)
	if !ok {
		return "", false
	}
	if tag == "" { // a part heading
		return "\n" + FormatTime(e.At) + " " + text, true
	}
	if e.Kind == KindCheck && !e.Check.OK {
		text = strings.Replace(text, "\n", "\n"+strings.Repeat(" ", tw+hw+9), 1)
	}
	return fmt.Sprintf("%-*s %-*s %-6s ", tw, FormatTime(e.At), hw, e.Host, tag) + text, true
}

// Parts renders one event without its time and host: the tag ("out",
// "state", "call" ...; "" for a part heading) and the text. ok is false
// for an event this view leaves out.
func (t *Text) Parts(e *Event) (tag, text string, ok bool) {
	t.rel.Absolute = t.Absolute
	switch e.Kind {
	case KindPacket:
		p := e.Packet
		if !t.AllTaps && p.Dir == In && p.Verdict == VerdictPass && p.Rule == "" {
			// An arrival nothing happened to adds nothing: the same
			// packet was printed as it left.
			return "", "", false
		}
		return p.Dir.String(), t.packet(p), true
	case KindState:
		s := e.State
		return "state", fmt.Sprintf("%s > %s  %s -> %s  (%s)", e.Local, remoteText(e.Remote), s.From, s.To, s.Cause), true
	case KindCall:
		return "call", CallText(e.Call), true
	case KindCounter:
		if !t.Counters {
			return "", "", false
		}
		return "count", fmt.Sprintf("%s %+d = %d", e.Counter.Name, e.Counter.Delta, e.Counter.Value), true
	case KindRule:
		verb := "removed"
		if e.Rule.Added {
			verb = "added"
		}
		return "rule", fmt.Sprintf("%s %s", verb, e.Rule.Summary), true
	case KindNote:
		if e.Host == "" && strings.HasPrefix(e.Note, "== ") {
			return "", e.Note, true
		}
		return "note", e.Note, true
	case KindCheck:
		c := e.Check
		if c.OK {
			return "check", "ok      " + c.Text, true
		}
		return "check", "FAILED  " + c.Text + "\nseen: " + c.Seen, true
	}
	return "", "", false
}

func (t *Text) packet(p *Packet) string {
	var b strings.Builder
	b.WriteString(t.rel.Segment(&p.Segment))
	switch {
	case p.Verdict != VerdictPass && !p.OnWire:
		fmt.Fprintf(&b, "  [%s before the wire by %s]", p.Verdict, p.Rule)
	case p.Verdict != VerdictPass:
		fmt.Fprintf(&b, "  [%s by %s]", p.Verdict, p.Rule)
	case p.Rule != "":
		fmt.Fprintf(&b, "  [made by %s]", p.Rule)
	}
	if p.Crafted && p.Rule == "" {
		b.WriteString("  [crafted]")
	}
	if p.Lost != "" {
		fmt.Fprintf(&b, "  [lost: %s]", p.Lost)
	}
	return b.String()
}

func remoteText(a netip.AddrPort) string {
	if !a.IsValid() || a.Port() == 0 {
		return "*"
	}
	return a.String()
}

// CallText is a call's line: "connect(3, 10.0.0.2:80) = -1 ECONNREFUSED".
func CallText(c *Call) string {
	if c.Pending {
		return c.Text + " blocks"
	}
	var b strings.Builder
	b.WriteString(c.Text)
	if c.Errno != "" {
		fmt.Fprintf(&b, " = -1 %s", c.Errno)
	} else {
		fmt.Fprintf(&b, " = %d", c.Ret)
		if c.Op == "read" && len(c.Data) > 0 {
			if len(c.Data) <= 24 {
				b.WriteString(" " + strconv.Quote(string(c.Data)))
			} else {
				b.WriteString(" " + strconv.Quote(string(c.Data[:24])) + "...")
			}
		}
	}
	return b.String()
}

// WriteText renders events with a Text view, one per line.
func WriteText(w io.Writer, events []Event, t *Text) error {
	for i := range events {
		if line, ok := t.Line(&events[i]); ok {
			if _, err := fmt.Fprintln(w, line); err != nil {
				return err
			}
		}
	}
	return nil
}

// SSState is a state's name as ss prints it ("ESTAB", "SYN-SENT").
func SSState(s string) string {
	switch s {
	case "ESTABLISHED":
		return "ESTAB"
	case "CLOSED":
		return "UNCONN"
	}
	return strings.ReplaceAll(strings.Replace(strings.Replace(s, "FIN_WAIT1", "FIN-WAIT-1", 1), "FIN_WAIT2", "FIN-WAIT-2", 1), "_", "-")
}

// WriteSS prints a host's sockets like `ss -tano`: State, Recv-Q, Send-Q,
// local and peer address, timer.
func WriteSS(w io.Writer, socks []Socket) error {
	if _, err := fmt.Fprintf(w, "%-11s %6s %6s  %-21s %-21s %s\n", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Timer"); err != nil {
		return err
	}
	for _, s := range socks {
		timer := ""
		if s.Timer != "" {
			timer = fmt.Sprintf("timer:(%s,%s,%d)", s.Timer, SSDuration(s.TimerLeft), s.Retransmits)
		}
		local, peer := SSEnds(s.Local, s.Remote, s.State == "LISTEN", s.V6Only)
		extra := ""
		if s.FD == 0 && s.State != "TIME_WAIT" && s.Parent != 0 {
			extra = " (not accepted)"
		} else if s.Orphan {
			extra = " (orphan: closed by its program)"
		}
		if _, err := fmt.Fprintf(w, "%-11s %6d %6d  %-21s %-21s %s%s\n", SSState(s.State), s.RecvQ, s.SendQ, local, peer, timer, extra); err != nil {
			return err
		}
	}
	return nil
}

// SSEnds spells a socket's two ends as ss does: a wildcard is 0.0.0.0, or
// [::] for an AF_INET6 socket with IPV6_V6ONLY and * for a dual-stack one;
// a peer not yet known is that with port *.
func SSEnds(local, remote netip.AddrPort, listening, v6only bool) (string, string) {
	l := local.String()
	if listening || !local.IsValid() {
		l = wildcardOr(local.Addr()) + ":" + strconv.Itoa(int(local.Port()))
	}
	any := "0.0.0.0"
	if local.Addr().Is6() {
		any = "[::]"
	}
	if local.Addr().Is6() && local.Addr().IsUnspecified() && !v6only {
		any = "*"
		l = "*:" + strconv.Itoa(int(local.Port()))
	}
	r := remoteText(remote)
	if r == "*" {
		r = any + ":*"
	}
	return l, r
}

// wildcardOr is an address as ss prints it: an IPv6 one in brackets, and
// none (a socket bound to a port only, in the IPv4 simulator) as 0.0.0.0.
func wildcardOr(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "0.0.0.0"
	case a.Is6():
		return "[" + a.String() + "]"
	}
	return a.String()
}

// SSDuration prints a timer as ss's print_ms_timer does: "204ms",
// "1.200ms" (1.2 s), "59sec", "1min2sec", "12min".
func SSDuration(d time.Duration) string {
	ms := int64(d / time.Millisecond)
	secs, msecs := ms/1000, ms%1000
	minutes := secs / 60
	secs %= 60
	var b strings.Builder
	if minutes > 0 {
		msecs = 0
		fmt.Fprintf(&b, "%dmin", minutes)
		if minutes > 9 {
			secs = 0
		}
	}
	if secs > 0 {
		if secs > 9 {
			msecs = 0
		}
		sep := "sec"
		if msecs > 0 {
			sep = "."
		}
		fmt.Fprintf(&b, "%d%s", secs, sep)
	}
	if msecs > 0 {
		fmt.Fprintf(&b, "%03dms", msecs)
	}
	if b.Len() == 0 {
		return "0ms"
	}
	return b.String()
}
