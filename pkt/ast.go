// Package pkt reads packetdrill scripts: the language in which Linux's
// TCP tests are written. A script plays the remote peer of one local TCP
// stack: "<" lines are segments it sends to the stack, ">" lines are
// segments the stack must send, and system-call lines are made by the
// local program, each with its expected result.
//
// This file holds the script's syntax tree; lex.go and parse.go read it.
package pkt

import (
	"strconv"
	"strings"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// Script is a parsed packetdrill script.
type Script struct {
	File    string
	Options []Option // --name=value lines before the first event
	Events  []Event
}

// Option is a --name=value line (for example --tolerance_usecs=10000).
type Option struct {
	Pos   Pos
	Name  string
	Value string
}

// Option returns the value of the last option of that name.
func (s *Script) Option(name string) (string, bool) {
	for i := len(s.Options) - 1; i >= 0; i-- {
		if s.Options[i].Name == name {
			return s.Options[i].Value, true
		}
	}
	return "", false
}

// Pos is a place in a script: 1-based line and column.
type Pos struct{ Line, Col int }

// TimeKind is how an event's time is written.
type TimeKind uint8

const (
	TimeAbs      TimeKind = iota // 0.100: since the script's start
	TimeRel                      // +0.1: since the previous event
	TimeAny                      // *: any time (outbound packets only)
	TimeAbsRange                 // 0.1~0.2 (outbound packets only)
	TimeRelRange                 // +0.1~+0.2 (outbound packets only)
)

// Time is an event's time. At is the time (or the start of a range),
// End the end of a range; both in microseconds as packetdrill counts.
type Time struct {
	Kind    TimeKind
	At, End time.Duration
}

func (t Time) String() string {
	f := func(d time.Duration) string {
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
	}
	switch t.Kind {
	case TimeRel:
		return "+" + f(t.At)
	case TimeAny:
		return "*"
	case TimeAbsRange:
		return f(t.At) + "~" + f(t.End)
	case TimeRelRange:
		return "+" + f(t.At) + "~+" + f(t.End)
	}
	return f(t.At)
}

// EventKind is what an event line does.
type EventKind uint8

const (
	EvPacket  EventKind = iota // < or >
	EvSyscall                  // name(args) = result
	EvCommand                  // `shell command`
	EvCode                     // %{ code }%
)

// Event is one timed line of a script (a syscall may span lines).
type Event struct {
	Pos     Pos
	Time    Time
	Kind    EventKind
	Packet  *Packet
	Syscall *Syscall
	Text    string // the command, or the code
	// Untimed: a command with no time of its own, the script's first
	// lines (set-up) or last (clean-up): run when reached, not timed.
	Untimed bool
}

// Direction of a packet, from the local stack's point of view.
type Direction uint8

const (
	Inbound  Direction = iota // <: the script sends it to the stack
	Outbound                  // >: the stack must send it
)

// Packet is a packet line. Only TCP is played; UDP and ICMP lines are
// parsed so that a script using them is reported as such.
type Packet struct {
	Dir   Direction
	Proto string // "tcp", "udp" or "icmp"
	// IP fields: TOS/ECN ("ect0", "ect1", "ce", "noecn", "ect01" or
	// "tos 0x.."), flow label, TTL. Zero values: not given.
	ECN       string
	TOS       int // -1 when not given
	FlowLabel int // -1 when not given
	TTL       int
	// Ports, when the line gives them (sport > dport); zero otherwise.
	SrcPort, DstPort uint16

	// Flags as written ("S.", ".", "P.", "" for "-") and as bits.
	FlagText string
	Flags    wire.Flags
	// ACE is an AccECN ACE field written after the flags (S.2), or -1.
	ACE int

	Seq, End uint32 // start:end(len)
	Len      int
	Ack      uint32
	HasAck   bool // "ack N" was written
	Win      int  // -1 when not written
	Urg      int  // -1 when not written
	// Options are the TCP options in order; OptionsAny is "<...>"
	// (options not checked); HasOptions is false without an option list
	// (an outbound packet must then have none).
	Options    []TCPOption
	OptionsAny bool
	HasOptions bool

	// ICMP: type and code words (unreachable, frag_needed), the MTU, and
	// the echoed TCP segment, if given.
	ICMPType, ICMPCode string
	MTU                int
	Echoed             *Packet

	// UDP payload length.
	UDPLen int
}

// TCPOption is one TCP option of a packet line.
type TCPOption struct {
	Kind string // "nop", "eol", "mss", "wscale", "sackOK", "sack", "TS", "md5", "FO", "FOEXP", "ECN"
	// Values: mss, wscale; TS val and ecr.
	Val, Ecr uint32
	// SACK blocks as start:end pairs.
	Blocks [][2]uint32
	// Cookie: a FO/FOEXP cookie or an md5 key, as written.
	Cookie string
}

func (o TCPOption) String() string {
	switch o.Kind {
	case "mss", "wscale":
		return o.Kind + " " + strconv.FormatUint(uint64(o.Val), 10)
	case "TS":
		return "TS val " + strconv.FormatUint(uint64(o.Val), 10) + " ecr " + strconv.FormatUint(uint64(o.Ecr), 10)
	case "sack":
		var b strings.Builder
		b.WriteString("sack")
		for _, s := range o.Blocks {
			b.WriteString(" " + strconv.FormatUint(uint64(s[0]), 10) + ":" + strconv.FormatUint(uint64(s[1]), 10))
		}
		return b.String()
	case "FO", "FOEXP", "md5":
		if o.Cookie != "" {
			return o.Kind + " " + o.Cookie
		}
	}
	return o.Kind
}

// Syscall is a system-call line: name(args) = result [ERRNO] [(note)].
type Syscall struct {
	Name string
	Args []Expr
	// End is the end of a blocking call's time ("...0.2"), or -1.
	End    time.Duration
	Result Expr
	Errno  string // EAGAIN, or ""
	Note   string // the text in parentheses after the result
}

// ExprKind is the kind of an expression.
type ExprKind uint8

const (
	ExInt      ExprKind = iota // 3, -1, 0x10
	ExWord                     // SOCK_STREAM, O_NONBLOCK
	ExString                   // "abc" (Ellipsis: "abc"...)
	ExEllipsis                 // ...
	ExList                     // [a, b]
	ExStruct                   // {a, b} or {name=v, ...}
	ExBinary                   // a | b, name = v
	ExCall                     // htons(80), inet_addr("1.2.3.4"), msg_iov(1)
)

// Expr is an argument or a result of a system call.
type Expr struct {
	Pos   Pos
	Kind  ExprKind
	Int   int64
	Hex   bool
	Text  string // a word, a string, a call's name, a binary's operator
	Elems []Expr // a list's or struct's elements, a call's arguments
	// Binary: L and R.
	L, R     *Expr
	Ellipsis bool // a string followed by "..."
}

func (e *Expr) String() string {
	switch e.Kind {
	case ExInt:
		if e.Hex {
			return "0x" + strconv.FormatInt(e.Int, 16)
		}
		return strconv.FormatInt(e.Int, 10)
	case ExWord:
		return e.Text
	case ExString:
		s := strconv.Quote(e.Text)
		if e.Ellipsis {
			s += "..."
		}
		return s
	case ExEllipsis:
		return "..."
	case ExList, ExStruct, ExCall:
		parts := make([]string, len(e.Elems))
		for i := range e.Elems {
			parts[i] = e.Elems[i].String()
		}
		switch e.Kind {
		case ExList:
			return "[" + strings.Join(parts, ", ") + "]"
		case ExStruct:
			return "{" + strings.Join(parts, ", ") + "}"
		}
		return e.Text + "(" + strings.Join(parts, ", ") + ")"
	case ExBinary:
		if e.Text == "=" {
			return e.L.String() + "=" + e.R.String()
		}
		return e.L.String() + e.Text + e.R.String()
	}
	return "?"
}

// Field returns the value of a struct's field (name=value), or nil.
func (e *Expr) Field(name string) *Expr {
	if e == nil || e.Kind != ExStruct {
		return nil
	}
	for i := range e.Elems {
		f := &e.Elems[i]
		if f.Kind != ExBinary || f.Text != "=" {
			continue
		}
		l := f.L
		if (l.Kind == ExWord || l.Kind == ExCall) && l.Text == name {
			return f.R
		}
	}
	return nil
}

func (p *Packet) String() string {
	var b strings.Builder
	if p.Dir == Inbound {
		b.WriteString("<")
	} else {
		b.WriteString(">")
	}
	var ip []string
	if p.ECN != "" {
		ip = append(ip, p.ECN)
	}
	if p.TOS >= 0 {
		ip = append(ip, "tos 0x"+strconv.FormatInt(int64(p.TOS), 16))
	}
	if p.FlowLabel >= 0 {
		ip = append(ip, "flowlabel 0x"+strconv.FormatInt(int64(p.FlowLabel), 16))
	}
	if p.TTL > 0 {
		ip = append(ip, "ttl "+strconv.Itoa(p.TTL))
	}
	if len(ip) > 0 {
		b.WriteString(" [" + strings.Join(ip, ",") + "]")
	}
	ports := func() {
		if p.SrcPort != 0 || p.DstPort != 0 {
			b.WriteString(" " + strconv.Itoa(int(p.SrcPort)) + ">" + strconv.Itoa(int(p.DstPort)))
		}
	}
	seq := func(q *Packet) string {
		return strconv.FormatUint(uint64(q.Seq), 10) + ":" + strconv.FormatUint(uint64(q.End), 10) + "(" + strconv.Itoa(q.Len) + ")"
	}
	switch p.Proto {
	case "icmp":
		b.WriteString(" icmp " + p.ICMPType)
		if p.ICMPCode != "" {
			b.WriteString(" " + p.ICMPCode)
		}
		if p.MTU > 0 {
			b.WriteString(" mtu " + strconv.Itoa(p.MTU))
		}
		if e := p.Echoed; e != nil {
			if e.Proto == "udp" {
				b.WriteString(" [udp (" + strconv.Itoa(e.UDPLen) + ")]")
			} else {
				b.WriteString(" [" + seq(e) + "]")
			}
		}
		return b.String()
	case "udp":
		b.WriteString(" udp")
		ports()
		b.WriteString(" (" + strconv.Itoa(p.UDPLen) + ")")
		return b.String()
	}
	ports()
	f := p.FlagText
	if f == "" {
		f = "-"
	}
	if p.ACE >= 0 {
		f += strconv.Itoa(p.ACE)
	}
	b.WriteString(" " + f + " " + seq(p))
	if p.HasAck {
		b.WriteString(" ack " + strconv.FormatUint(uint64(p.Ack), 10))
	}
	if p.Win >= 0 {
		b.WriteString(" win " + strconv.Itoa(p.Win))
	}
	if p.Urg >= 0 {
		b.WriteString(" urg " + strconv.Itoa(p.Urg))
	}
	switch {
	case p.OptionsAny:
		b.WriteString(" <...>")
	case p.HasOptions:
		o := make([]string, len(p.Options))
		for i := range p.Options {
			o[i] = p.Options[i].String()
		}
		b.WriteString(" <" + strings.Join(o, ",") + ">")
	}
	return b.String()
}

func (s *Syscall) String() string {
	var b strings.Builder
	if s.End >= 0 {
		b.WriteString("..." + strconv.FormatFloat(s.End.Seconds(), 'f', -1, 64) + " ")
	}
	args := make([]string, len(s.Args))
	for i := range s.Args {
		args[i] = s.Args[i].String()
	}
	b.WriteString(s.Name + "(" + strings.Join(args, ", ") + ") = " + s.Result.String())
	if s.Errno != "" {
		b.WriteString(" " + s.Errno)
	}
	if s.Note != "" {
		b.WriteString(" (" + s.Note + ")")
	}
	return b.String()
}

// String writes the event back as a script line.
func (e *Event) String() string {
	if e.Untimed {
		return "`" + e.Text + "`"
	}
	t := e.Time.String()
	if e.Kind == EvSyscall && e.Syscall.End >= 0 {
		t += e.Syscall.String() // "+0...0.2 accept(...)"
		return t
	}
	switch e.Kind {
	case EvPacket:
		return t + " " + e.Packet.String()
	case EvSyscall:
		return t + " " + e.Syscall.String()
	case EvCommand:
		return t + " `" + e.Text + "`"
	}
	return t + " %{ " + e.Text + " }%"
}
