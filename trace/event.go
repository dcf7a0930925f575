// Package trace is the event model every part of tcplab shares: the
// simulator and the kernel backend emit these events, the scenario runner
// checks them, and renderers draw them. It depends on nothing in tcplab but
// the segment model, so that both backends can report the same facts.
package trace

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// Kind tells what an Event reports.
type Kind uint8

const (
	KindPacket  Kind = iota // a segment seen by a host's capture tap
	KindState               // a connection changed state
	KindCall                // an application call blocked or returned
	KindCounter             // a host counter changed
	KindRule                // a fault rule was added or removed
	KindNote                // an explanation: a drop, a cookie, a challenge ACK
	KindCheck               // a scenario's expectation was checked
)

var kindNames = [...]string{"packet", "state", "call", "counter", "rule", "note", "check"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// MarshalText writes the kind's name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name.
func (k *Kind) UnmarshalText(b []byte) error {
	for i, n := range kindNames {
		if n == string(b) {
			*k = Kind(i)
			return nil
		}
	}
	return fmt.Errorf("unknown event kind %q", b)
}

// Dir is the direction of a packet at a host's tap.
type Dir uint8

const (
	In Dir = iota
	Out
)

func (d Dir) String() string {
	if d == Out {
		return "out"
	}
	return "in"
}

// MarshalText writes "in" or "out".
func (d Dir) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads "in" or "out".
func (d *Dir) UnmarshalText(b []byte) error {
	switch string(b) {
	case "in":
		*d = In
	case "out":
		*d = Out
	default:
		return fmt.Errorf("unknown direction %q", b)
	}
	return nil
}

// Verdicts a packet can get from the lab's firewall.
const (
	VerdictPass   = "pass"
	VerdictDrop   = "drop"
	VerdictReject = "reject"
	VerdictDelay  = "delay"
	VerdictDup    = "duplicate"
)

// Packet is a segment at one host's capture tap. The same packet has the
// same ID at its sender (Out) and its receiver (In).
type Packet struct {
	ID      uint64       `json:"id"`
	Dir     Dir          `json:"dir"`
	Segment wire.Segment `json:"segment"`
	// Verdict is what the host's firewall did with it, Rule the rule that
	// acted ("" when none did).
	Verdict string `json:"verdict"`
	Rule    string `json:"rule,omitempty"`
	// OnWire is false for a packet an output rule dropped before it left:
	// a tap on the interface (tcpdump) never sees it.
	OnWire bool `json:"on_wire"`
	// Crafted marks a packet injected by the lab itself (a spoofed SYN, a
	// blind RST, a firewall's reject) rather than sent by the TCP stack.
	Crafted bool `json:"crafted,omitempty"`
	// Lost says why a packet that left never arrived anywhere (no host
	// owns the destination address).
	Lost string `json:"lost,omitempty"`
}

// StateChange is a connection's move from one state to another.
type StateChange struct {
	From      string `json:"from"`
	To        string `json:"to"`
	CauseKind string `json:"cause_kind"` // segment, timer or app
	Cause     string `json:"cause"`
}

// Call is an application call: when it blocked, or what it returned.
type Call struct {
	ID      uint64        `json:"id"`
	Op      string        `json:"op"`
	Text    string        `json:"text"` // "connect(3, 10.0.0.2:80)"
	FD      int           `json:"fd"`
	Ret     int           `json:"ret"`
	Errno   string        `json:"errno,omitempty"`
	Data    []byte        `json:"data,omitempty"`
	NewSock uint64        `json:"new_sock,omitempty"`
	Pending bool          `json:"pending,omitempty"`
	Started time.Duration `json:"started"`
}

// Counter is a change of a host counter named like Linux's.
type Counter struct {
	Name  string `json:"name"`
	Delta int64  `json:"delta"`
	Value int64  `json:"value"`
}

// RuleChange records a fault rule being added or removed.
type RuleChange struct {
	ID      int    `json:"id"`
	Added   bool   `json:"added"`
	Summary string `json:"summary"`
}

// Check is the outcome of a scenario's `expect` or `until` line.
type Check struct {
	Line int    `json:"line"`
	Text string `json:"text"`
	OK   bool   `json:"ok"`
	Seen string `json:"seen,omitempty"` // what was found instead, when it failed
}

// Event is one observation. Which pointer field is set follows Kind.
type Event struct {
	Seq    int            `json:"seq"`
	At     time.Duration  `json:"at"`
	Host   string         `json:"host"`
	Kind   Kind           `json:"kind"`
	Sock   uint64         `json:"sock,omitempty"`
	Parent uint64         `json:"parent,omitempty"`
	Local  netip.AddrPort `json:"local,omitzero"`
	Remote netip.AddrPort `json:"remote,omitzero"`
	// V6Only: a state change of an AF_INET6 socket with IPV6_V6ONLY.
	V6Only bool `json:"v6only,omitempty"`

	Packet  *Packet      `json:"packet,omitempty"`
	State   *StateChange `json:"state,omitempty"`
	Call    *Call        `json:"call,omitempty"`
	Counter *Counter     `json:"counter,omitempty"`
	Rule    *RuleChange  `json:"rule,omitempty"`
	Note    string       `json:"note,omitempty"`
	Check   *Check       `json:"check,omitempty"`
}

// String is a compact one-line form, used in test failures and logs.
func (e *Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", FormatTime(e.At), e.Host, e.Kind)
	switch e.Kind {
	case KindPacket:
		p := e.Packet
		fmt.Fprintf(&b, " #%d %s %s", p.ID, p.Dir, p.Segment.String())
		if p.Verdict != VerdictPass {
			fmt.Fprintf(&b, " [%s by %s]", p.Verdict, p.Rule)
		}
		if p.Lost != "" {
			fmt.Fprintf(&b, " [lost: %s]", p.Lost)
		}
	case KindState:
		fmt.Fprintf(&b, " sock %d %v>%v %s -> %s (%s: %s)", e.Sock, e.Local, e.Remote, e.State.From, e.State.To, e.State.CauseKind, e.State.Cause)
	case KindCall:
		c := e.Call
		if c.Pending {
			fmt.Fprintf(&b, " %s blocks", c.Text)
		} else if c.Errno != "" {
			fmt.Fprintf(&b, " %s = -1 %s", c.Text, c.Errno)
		} else {
			fmt.Fprintf(&b, " %s = %d", c.Text, c.Ret)
		}
	case KindCounter:
		fmt.Fprintf(&b, " %s %+d = %d", e.Counter.Name, e.Counter.Delta, e.Counter.Value)
	case KindRule:
		verb := "removed"
		if e.Rule.Added {
			verb = "added"
		}
		fmt.Fprintf(&b, " %s #%d %s", verb, e.Rule.ID, e.Rule.Summary)
	case KindNote:
		fmt.Fprintf(&b, " %s", e.Note)
	case KindCheck:
		if e.Check.OK {
			fmt.Fprintf(&b, " ok: %s", e.Check.Text)
		} else {
			fmt.Fprintf(&b, " FAILED: %s (seen: %s)", e.Check.Text, e.Check.Seen)
		}
	}
	return b.String()
}

// FormatTime prints a virtual time as seconds with microseconds: "63.000000".
func FormatTime(d time.Duration) string {
	return fmt.Sprintf("%d.%06d", d/time.Second, (d%time.Second)/time.Microsecond)
}

// Socket is one socket in a host's snapshot, as `ss -tanoi` shows it.
type Socket struct {
	Host   string         `json:"host"`
	Sock   uint64         `json:"sock"`
	Parent uint64         `json:"parent,omitempty"`
	FD     int            `json:"fd"`
	State  string         `json:"state"`
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	RecvQ  int            `json:"recv_q"`
	SendQ  int            `json:"send_q"`
	// Timer is "on", "persist", "keepalive", "timewait" or "".
	Timer        string        `json:"timer,omitempty"`
	TimerLeft    time.Duration `json:"timer_left,omitempty"`
	Retransmits  int           `json:"retransmits,omitempty"`
	RTO          time.Duration `json:"rto,omitempty"`
	RTT          time.Duration `json:"rtt,omitempty"`
	Cwnd         int           `json:"cwnd,omitempty"`
	RetransTotal int           `json:"retrans_total,omitempty"`
	Orphan       bool          `json:"orphan,omitempty"`
	Accepting    bool          `json:"accepting,omitempty"`
	// V6Only marks an AF_INET6 socket with IPV6_V6ONLY: ss spells its
	// wildcard [::], a dual-stack socket's *.
	V6Only   bool `json:"v6only,omitempty"`
	SynQueue int  `json:"syn_queue,omitempty"`
}

// Sink receives events as they happen.
type Sink func(Event)

// Recorder keeps every event it is given.
type Recorder struct {
	Events []Event
}

// Sink returns the recorder's sink.
func (r *Recorder) Sink() Sink { return func(e Event) { r.Events = append(r.Events, e) } }

// Filter returns the recorded events of one kind, in order.
func (r *Recorder) Filter(k Kind) []Event {
	var out []Event
	for _, e := range r.Events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}
