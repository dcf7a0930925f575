package pkt

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// ParseFile reads and parses a script file.
func ParseFile(path string) (*Script, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxScriptBytes+1))
	if err != nil {
		return nil, err
	}
	return Parse(path, string(src))
}

// MaxScriptBytes bounds a script's size.
const MaxScriptBytes = 4 << 20

// Parse parses a script. name is used in error messages, which read
// "name:line:col: message". Parsing stops at the first error, as
// packetdrill's does: a script is a test, and a test that does not read
// as its author meant must not run.
func Parse(name, src string) (*Script, error) {
	if len(src) > MaxScriptBytes {
		return nil, &Error{File: name, Line: 1, Col: 1, Msg: fmt.Sprintf("script too large (%d bytes, at most %d)", len(src), MaxScriptBytes)}
	}
	toks, err := lex(name, src)
	if err != nil {
		return nil, err
	}
	p := &parser{name: name, toks: toks}
	return p.script()
}

type parser struct {
	name string
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) peekAt(n int) token {
	if p.i+n < len(p.toks) {
		return p.toks[p.i+n]
	}
	return p.toks[len(p.toks)-1]
}
func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errAt(t token, format string, a ...any) error {
	return &Error{File: p.name, Line: t.line, Col: t.col, Msg: fmt.Sprintf(format, a...)}
}

// is tells whether t is the punctuation or word s.
func is(t token, s string) bool {
	return (t.kind == tPunct || t.kind == tWord) && t.text == s
}

func (p *parser) expect(s, what string) (token, error) {
	t := p.next()
	if !is(t, s) {
		return t, p.errAt(t, "expected %q %s, found %s", s, what, t)
	}
	return t, nil
}

func (p *parser) script() (*Script, error) {
	s := &Script{File: p.name}
	for p.peek().kind == tOption {
		t := p.next()
		s.Options = append(s.Options, Option{Pos: Pos{t.line, t.col}, Name: t.text, Value: t.val})
	}
	for p.peek().kind != tEOF {
		t := p.peek()
		if t.kind == tOption {
			return nil, p.errAt(t, "option %s after the first event: options come first", t)
		}
		// A command without a time: the script's first (init) or last
		// (cleanup) line, run at once.
		if t.kind == tCommand {
			p.next()
			s.Events = append(s.Events, Event{Pos: Pos{t.line, t.col}, Time: Time{Kind: TimeRel}, Kind: EvCommand, Text: t.text, Untimed: true})
			continue
		}
		ev, err := p.event()
		if err != nil {
			return nil, err
		}
		s.Events = append(s.Events, ev)
	}
	return s, nil
}

func (p *parser) event() (Event, error) {
	start := p.peek()
	ev := Event{Pos: Pos{start.line, start.col}}
	tm, err := p.eventTime()
	if err != nil {
		return ev, err
	}
	ev.Time = tm
	t := p.peek()
	switch {
	case is(t, "<") || is(t, ">"):
		ev.Kind = EvPacket
		ev.Packet, err = p.packet()
	case t.kind == tCommand:
		p.next()
		ev.Kind, ev.Text = EvCommand, t.text
	case t.kind == tCode:
		p.next()
		ev.Kind, ev.Text = EvCode, t.text
	case t.kind == tEllipsis || t.kind == tWord && is(p.peekAt(1), "("):
		ev.Kind = EvSyscall
		ev.Syscall, err = p.syscall()
	default:
		return ev, p.errAt(t, "expected a packet (< or >), a system call, a `command` or a %%{ }%% block after the time, found %s", t)
	}
	if err != nil {
		return ev, err
	}
	outbound := ev.Kind == EvPacket && ev.Packet.Dir == Outbound
	switch ev.Time.Kind {
	case TimeAny:
		if !outbound {
			return ev, p.errAt(start, "event time * can only be used with outbound packets")
		}
	case TimeAbsRange, TimeRelRange:
		if !outbound {
			return ev, p.errAt(start, "event time range can only be used with outbound packets")
		}
	}
	return ev, nil
}

// eventTime reads: time | +time | * | time~time | +time~+time.
func (p *parser) eventTime() (Time, error) {
	t := p.peek()
	if is(t, "*") {
		p.next()
		return Time{Kind: TimeAny}, nil
	}
	rel := false
	if is(t, "+") {
		p.next()
		rel = true
	}
	at, err := p.seconds()
	if err != nil {
		return Time{}, err
	}
	tm := Time{Kind: TimeAbs, At: at}
	if rel {
		tm.Kind = TimeRel
	}
	if !is(p.peek(), "~") {
		return tm, nil
	}
	p.next()
	if rel {
		if _, err := p.expect("+", "after ~ in a relative time range (+a~+b)"); err != nil {
			return tm, err
		}
	}
	end, err := p.seconds()
	if err != nil {
		return tm, err
	}
	tm.End = end
	tm.Kind = TimeAbsRange
	if rel {
		tm.Kind = TimeRelRange
	}
	if end < at {
		return tm, p.errAt(t, "time range is backwards")
	}
	return tm, nil
}

// maxSeconds bounds a script's times (a day), so that no time overflows.
const maxSeconds = 86400

// seconds reads a time in seconds (12, .5, 0.200) as a duration in whole
// microseconds, as packetdrill counts (it truncates).
func (p *parser) seconds() (time.Duration, error) {
	t := p.next()
	if t.kind != tInt && t.kind != tFloat {
		return 0, p.errAt(t, "expected a time in seconds, found %s", t)
	}
	if strings.HasPrefix(t.text, "-") {
		return 0, p.errAt(t, "negative time")
	}
	whole, frac, _ := strings.Cut(t.text, ".")
	if whole == "" {
		whole = "0"
	}
	s, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || s > maxSeconds {
		return 0, p.errAt(t, "time %s out of range (at most %d s)", t.text, maxSeconds)
	}
	us := int64(0)
	for i := 0; i < 6; i++ {
		us *= 10
		if i < len(frac) {
			us += int64(frac[i] - '0')
		}
	}
	return time.Duration(s)*time.Second + time.Duration(us)*time.Microsecond, nil
}

// packet reads a packet line after its time.
func (p *parser) packet() (*Packet, error) {
	d := p.next()
	pk := newPacket(Inbound)
	if d.text == ">" {
		pk.Dir = Outbound
	}
	if t := p.peek(); is(t, "(") || is(t, "[") {
		if err := p.ipInfo(pk); err != nil {
			return nil, err
		}
	}
	if t := p.peek(); is(t, "encap") {
		return nil, p.errAt(t, "encapsulated packets (encap psp) are not supported")
	}
	switch t := p.peek(); {
	case is(t, "icmp"):
		p.next()
		pk.Proto = "icmp"
		return pk, p.icmp(pk)
	case is(t, "udp"):
		p.next()
		pk.Proto = "udp"
		if err := p.ports(pk); err != nil {
			return nil, err
		}
		return pk, p.udpLen(pk)
	}
	if err := p.ports(pk); err != nil {
		return nil, err
	}
	if err := p.flags(pk); err != nil {
		return nil, err
	}
	if err := p.seqRange(&pk.Seq, &pk.End, &pk.Len); err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		var err error
		switch {
		case is(t, "ack"):
			p.next()
			var v uint64
			v, err = p.uint("ack number", math.MaxUint32)
			pk.Ack, pk.HasAck = uint32(v), true
		case is(t, "win"):
			p.next()
			var v uint64
			v, err = p.uint("window", math.MaxUint16)
			pk.Win = int(v)
		case is(t, "urg"):
			p.next()
			var v uint64
			v, err = p.uint("urgent pointer", math.MaxUint16)
			pk.Urg = int(v)
		case is(t, "<"):
			return pk, p.tcpOptions(pk)
		default:
			return pk, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// newPacket is a TCP packet line with no field given yet.
func newPacket(d Direction) *Packet {
	return &Packet{Dir: d, Proto: "tcp", TOS: -1, FlowLabel: -1, ACE: -1, Win: -1, Urg: -1}
}

// udpLen reads a UDP payload length: (N).
func (p *parser) udpLen(pk *Packet) error {
	if _, err := p.expect("(", "before a UDP payload length"); err != nil {
		return err
	}
	n, err := p.uint("UDP payload length", math.MaxUint16)
	if err != nil {
		return err
	}
	pk.UDPLen = int(n)
	_, err = p.expect(")", "after a UDP payload length")
	return err
}

// ipInfo reads (ect0), [tos 0x10], (flowlabel 0x12345), (ttl 64), or a
// TOS spec and a flow label separated by a comma.
func (p *parser) ipInfo(pk *Packet) error {
	open := p.next()
	closing := ")"
	if open.text == "[" {
		closing = "]"
	}
	for {
		t := p.next()
		switch {
		case is(t, "noecn") || is(t, "ect0") || is(t, "ect1") || is(t, "ce") || is(t, "ect01"):
			pk.ECN = t.text
		case is(t, "tos"):
			v, err := p.uint("TOS", math.MaxUint8)
			if err != nil {
				return err
			}
			pk.TOS = int(v)
		case is(t, "flowlabel"):
			v, err := p.uint("flow label", 1<<20-1)
			if err != nil {
				return err
			}
			pk.FlowLabel = int(v)
		case is(t, "ttl"):
			v, err := p.uint("TTL", math.MaxUint8)
			if err != nil {
				return err
			}
			pk.TTL = int(v)
		default:
			return p.errAt(t, "expected ect0, ect1, ce, noecn, ect01, tos, flowlabel or ttl in an IP spec, found %s", t)
		}
		t = p.next()
		if is(t, closing) {
			return nil
		}
		if !is(t, ",") {
			return p.errAt(t, "expected %q or \",\" in an IP spec, found %s", closing, t)
		}
	}
}

// ports reads an optional "sport>dport".
func (p *parser) ports(pk *Packet) error {
	if p.peek().kind != tInt || !is(p.peekAt(1), ">") {
		return nil
	}
	s, err := p.uint("source port", math.MaxUint16)
	if err != nil {
		return err
	}
	p.next() // >
	d, err := p.uint("destination port", math.MaxUint16)
	pk.SrcPort, pk.DstPort = uint16(s), uint16(d)
	return err
}

// flagLetters are the TCP flags as packetdrill writes them.
var flagLetters = map[byte]wire.Flags{'F': wire.FIN, 'S': wire.SYN, 'R': wire.RST, 'P': wire.PSH,
	'.': wire.ACK, 'U': wire.URG, 'E': wire.ECE, 'W': wire.CWR}

// flags reads S, S., ., P., SEW, - (no flags), or letters followed by an
// AccECN ACE value (S.2 or .2).
func (p *parser) flags(pk *Packet) error {
	t := p.next()
	switch {
	case is(t, "-"):
		return nil
	case is(t, "."):
		pk.FlagText = "."
	case t.kind == tWord:
		pk.FlagText = t.text
		if n := p.peek(); !n.spaced && is(n, ".") {
			p.next()
			pk.FlagText += "."
		}
	case t.kind != tFloat:
		return p.errAt(t, "expected TCP flags (S, S., ., P., F., R, -), found %s", t)
	}
	// An ACE value: ".2" right after the letters, or alone.
	if n := p.peek(); t.kind == tFloat || n.kind == tFloat && !n.spaced && strings.HasPrefix(n.text, ".") {
		f := t
		if t.kind != tFloat {
			f = p.next()
		}
		if !strings.HasPrefix(f.text, ".") {
			return p.errAt(f, "expected TCP flags, found %s", f)
		}
		v, err := strconv.Atoi(f.text[1:])
		if err != nil || v > 7 {
			return p.errAt(f, "AccECN ACE value %s out of range (0 to 7)", f.text[1:])
		}
		if !strings.HasSuffix(pk.FlagText, ".") {
			pk.FlagText += "."
		}
		pk.ACE = v
	}
	for i := 0; i < len(pk.FlagText); i++ {
		f, ok := flagLetters[pk.FlagText[i]]
		if !ok {
			return p.errAt(t, "unknown TCP flag %q in %q (flags are F S R P . U E W)", pk.FlagText[i], pk.FlagText)
		}
		pk.Flags |= f
	}
	return nil
}

// seqRange reads start:end(len), checking that end = start + len.
func (p *parser) seqRange(start, end *uint32, n *int) error {
	first := p.peek()
	s, err := p.uint("start sequence number", math.MaxUint32)
	if err != nil {
		return err
	}
	if _, err := p.expect(":", "in start:end(length)"); err != nil {
		return err
	}
	e, err := p.uint("end sequence number", math.MaxUint32)
	if err != nil {
		return err
	}
	if _, err := p.expect("(", "in start:end(length)"); err != nil {
		return err
	}
	l, err := p.uint("payload length", math.MaxUint16)
	if err != nil {
		return err
	}
	if _, err := p.expect(")", "in start:end(length)"); err != nil {
		return err
	}
	if e != s+l {
		return p.errAt(first, "inconsistent TCP sequence numbers and payload size: %d:%d(%d)", s, e, l)
	}
	*start, *end, *n = uint32(s), uint32(e), int(l)
	return nil
}

// uint reads a non-negative integer (decimal or hex) of at most max.
func (p *parser) uint(what string, max uint64) (uint64, error) {
	t := p.next()
	if t.kind != tInt && t.kind != tHex {
		return 0, p.errAt(t, "expected %s (an integer), found %s", what, t)
	}
	v, err := parseUint(t)
	if err != nil || v > max {
		return 0, p.errAt(t, "%s %s out of range (0 to %d)", what, t.text, max)
	}
	return v, nil
}

// parseUint reads an integer token: decimal (leading zeros are not
// octal, as packetdrill's atoll reads them) or 0x hex.
func parseUint(t token) (uint64, error) {
	if t.kind == tHex {
		return strconv.ParseUint(t.text[2:], 16, 64)
	}
	return strconv.ParseUint(t.text, 10, 64)
}

// tcpOptions reads <...> or <opt, opt, ...>.
func (p *parser) tcpOptions(pk *Packet) error {
	p.next() // <
	pk.HasOptions = true
	if p.peek().kind == tEllipsis {
		p.next()
		pk.OptionsAny = true
		_, err := p.expect(">", "after <...")
		return err
	}
	for {
		o, err := p.tcpOption()
		if err != nil {
			return err
		}
		pk.Options = append(pk.Options, o)
		if len(pk.Options) > 40 {
			return p.errAt(p.peek(), "TCP option list too long")
		}
		t := p.next()
		if is(t, ">") {
			return nil
		}
		if !is(t, ",") {
			return p.errAt(t, "expected \",\" or \">\" in a TCP option list, found %s", t)
		}
	}
}

func (p *parser) tcpOption() (TCPOption, error) {
	t := p.next()
	o := TCPOption{Kind: t.text}
	if t.kind != tWord {
		return o, p.errAt(t, "expected a TCP option (nop, eol, mss, wscale, sackOK, sack, TS, md5, FO, FOEXP), found %s", t)
	}
	var err error
	var v uint64
	switch t.text {
	case "nop", "eol", "sackOK":
	case "mss":
		v, err = p.uint("mss value", math.MaxUint16)
		o.Val = uint32(v)
	case "wscale":
		v, err = p.uint("window scale shift count", math.MaxUint8)
		o.Val = uint32(v)
	case "sack":
		for p.peek().kind == tInt {
			var l, r uint64
			if l, err = p.uint("SACK left edge", math.MaxUint32); err != nil {
				return o, err
			}
			if _, err = p.expect(":", "in a SACK block"); err != nil {
				return o, err
			}
			if r, err = p.uint("SACK right edge", math.MaxUint32); err != nil {
				return o, err
			}
			o.Blocks = append(o.Blocks, [2]uint32{uint32(l), uint32(r)})
		}
		if len(o.Blocks) == 0 {
			err = p.errAt(p.peek(), "expected SACK blocks (left:right) after sack, found %s", p.peek())
		} else if len(o.Blocks) > 4 {
			err = p.errAt(t, "at most 4 SACK blocks fit in a TCP header, found %d", len(o.Blocks))
		}
	case "TS":
		if _, err = p.expect("val", "in TS val N ecr N"); err != nil {
			return o, err
		}
		if v, err = p.uint("ts val", math.MaxUint32); err != nil {
			return o, err
		}
		o.Val = uint32(v)
		if _, err = p.expect("ecr", "in TS val N ecr N"); err != nil {
			return o, err
		}
		v, err = p.uint("ecr val", math.MaxUint32)
		o.Ecr = uint32(v)
	case "md5", "FO", "FOEXP":
		// A key or cookie: hex digits, as a word or a number.
		if n := p.peek(); n.kind == tWord || n.kind == tInt || n.kind == tHex {
			o.Cookie = p.next().text
		} else if t.text == "md5" {
			err = p.errAt(n, "expected an MD5 key after md5, found %s", n)
		}
	case "ECN":
		// AccECN option: e0b N, e1b N, ceb N in some order.
		var parts []string
		for is(p.peek(), "e0b") || is(p.peek(), "e1b") || is(p.peek(), "ceb") {
			k := p.next().text
			if v, err = p.uint("AccECN field", 1<<24-1); err != nil {
				return o, err
			}
			parts = append(parts, k+" "+strconv.FormatUint(v, 10))
		}
		o.Cookie = strings.Join(parts, " ")
	default:
		err = p.errAt(t, "unknown TCP option %q (nop, eol, mss, wscale, sackOK, sack, TS, md5, FO, FOEXP, ECN)", t.text)
	}
	return o, err
}

// icmp reads the rest of an ICMP packet line: type [code] [mtu N]
// [echoed segment].
func (p *parser) icmp(pk *Packet) error {
	t := p.next()
	if t.kind != tWord {
		return p.errAt(t, "expected an ICMP type after icmp, found %s", t)
	}
	pk.ICMPType = t.text
	if n := p.peek(); n.kind == tWord && !is(n, "mtu") {
		pk.ICMPCode = p.next().text
	}
	if is(p.peek(), "mtu") {
		p.next()
		v, err := p.uint("MTU", math.MaxUint32)
		if err != nil {
			return err
		}
		pk.MTU = int(v)
	}
	if is(p.peek(), "[") {
		p.next()
		e := newPacket(pk.Dir)
		if is(p.peek(), "udp") {
			p.next()
			e.Proto = "udp"
		}
		if err := p.ports(e); err != nil {
			return err
		}
		if e.Proto == "tcp" {
			if err := p.seqRange(&e.Seq, &e.End, &e.Len); err != nil {
				return err
			}
		} else if err := p.udpLen(e); err != nil {
			return err
		}
		if _, err := p.expect("]", "after an ICMP's echoed segment"); err != nil {
			return err
		}
		pk.Echoed = e
	}
	return nil
}

// syscall reads [...end] name(args) = result [ERRNO] [(note)].
func (p *parser) syscall() (*Syscall, error) {
	sc := &Syscall{End: -1}
	if p.peek().kind == tEllipsis {
		p.next()
		end, err := p.seconds()
		if err != nil {
			return nil, err
		}
		sc.End = end
	}
	name := p.next()
	if name.kind != tWord {
		return nil, p.errAt(name, "expected a system call name, found %s", name)
	}
	sc.Name = name.text
	if _, err := p.expect("(", "after the system call's name"); err != nil {
		return nil, err
	}
	args, err := p.exprList(")", 0)
	if err != nil {
		return nil, err
	}
	sc.Args = args
	if _, err := p.expect("=", "and the expected result after the call's arguments"); err != nil {
		return nil, err
	}
	res, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	sc.Result = res
	if t := p.peek(); t.kind == tWord {
		p.next()
		sc.Errno = t.text
	}
	if t := p.peek(); is(t, "(") {
		note, err := p.note()
		if err != nil {
			return nil, err
		}
		sc.Note = note
	}
	return sc, nil
}

// note reads the text in parentheses after a result: (Operation now in
// progress), (flags O_RDWR). Nested parentheses are kept.
func (p *parser) note() (string, error) {
	open := p.next()
	depth := 1
	var words []string
	for {
		t := p.next()
		switch {
		case t.kind == tEOF:
			return "", p.errAt(open, "( not closed")
		case is(t, "("):
			depth++
		case is(t, ")"):
			if depth--; depth == 0 {
				return strings.Join(words, " "), nil
			}
		}
		words = append(words, t.text)
	}
}

// maxDepth bounds the nesting of expressions, maxOperands the terms of
// an a|b|c expression.
const (
	maxDepth    = 64
	maxOperands = 64
)

// exprList reads expressions separated by commas up to the closing
// punctuation (which it consumes), at a nesting depth.
func (p *parser) exprList(closing string, depth int) ([]Expr, error) {
	var out []Expr
	if is(p.peek(), closing) {
		p.next()
		return out, nil
	}
	for {
		e, err := p.element(depth)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		t := p.next()
		if is(t, closing) {
			return out, nil
		}
		if !is(t, ",") {
			return nil, p.errAt(t, "expected \",\" or %q, found %s", closing, t)
		}
	}
}

// element reads an expression that may be a field: name=value.
func (p *parser) element(depth int) (Expr, error) {
	e, err := p.expr(depth)
	if err != nil {
		return e, err
	}
	if t := p.peek(); is(t, "=") && (e.Kind == ExWord || e.Kind == ExCall) {
		p.next()
		r, err := p.expr(depth)
		if err != nil {
			return e, err
		}
		l := e
		return Expr{Pos: l.Pos, Kind: ExBinary, Text: "=", L: &l, R: &r}, nil
	}
	return e, nil
}

// expr reads a primary expression, or several joined by |.
func (p *parser) expr(depth int) (Expr, error) {
	e, err := p.primary(depth)
	if err != nil {
		return e, err
	}
	for n := 0; is(p.peek(), "|"); n++ {
		if n >= maxOperands {
			return e, p.errAt(p.peek(), "too many | operands (at most %d)", maxOperands)
		}
		p.next()
		r, err := p.primary(depth)
		if err != nil {
			return e, err
		}
		l := e
		e = Expr{Pos: l.Pos, Kind: ExBinary, Text: "|", L: &l, R: &r}
	}
	return e, nil
}

func (p *parser) primary(depth int) (Expr, error) {
	t := p.next()
	e := Expr{Pos: Pos{t.line, t.col}}
	if depth > maxDepth {
		return e, p.errAt(t, "expression nested too deeply")
	}
	switch {
	case t.kind == tEllipsis:
		e.Kind = ExEllipsis
	case t.kind == tInt || t.kind == tHex:
		e.Kind, e.Hex = ExInt, t.kind == tHex
		if e.Hex {
			v, err := parseUint(t)
			if err != nil {
				return e, p.errAt(t, "integer %s out of range", t.text)
			}
			e.Int = int64(v)
		} else {
			v, err := strconv.ParseInt(t.text, 10, 64)
			if err != nil {
				return e, p.errAt(t, "integer %s out of range", t.text)
			}
			e.Int = v
		}
	case t.kind == tString:
		e.Kind, e.Text = ExString, t.text
		if p.peek().kind == tString { // "a" "b" is "ab"
			var b strings.Builder
			b.WriteString(t.text)
			for p.peek().kind == tString {
				b.WriteString(p.next().text)
			}
			e.Text = b.String()
		}
		if p.peek().kind == tEllipsis {
			p.next()
			e.Ellipsis = true
		}
	case is(t, "["), is(t, "{"):
		closing := "]"
		e.Kind = ExList
		if t.text == "{" {
			closing, e.Kind = "}", ExStruct
		}
		elems, err := p.exprList(closing, depth+1)
		if err != nil {
			return e, err
		}
		e.Elems = elems
	case t.kind == tWord:
		e.Kind, e.Text = ExWord, t.text
		if is(p.peek(), "(") {
			p.next()
			args, err := p.exprList(")", depth+1)
			if err != nil {
				return e, err
			}
			e.Kind, e.Elems = ExCall, args
		}
	default:
		return e, p.errAt(t, "expected an expression, found %s", t)
	}
	return e, nil
}
