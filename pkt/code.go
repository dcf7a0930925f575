package pkt

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// %{ }% blocks. packetdrill hands them to Python with the TCP_INFO of the
// socket under test. tcplab evaluates, without Python, the form the
// scripts use to check it: statements separated by ";" or lines, each
// "assert EXPR" or "assert EXPR, MESSAGE" (print(...) is allowed and
// does nothing). EXPR has integers, tcpi_* fields, the TCP_*, TCPI_OPT_*
// and TCP_CA_* constants, + - * / % & |, comparisons (chained, as in
// Python: a <= b <= c), "and", "or", "not" and parentheses. Anything else
// makes the script unsupported, never passed.

// tcpiStates are Linux's TCP state numbers (tcpi_state).
var tcpiStates = map[string]int64{
	"ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "FIN_WAIT1": 4, "FIN_WAIT2": 5, "TIME_WAIT": 6,
	"CLOSED": 7, "CLOSE_WAIT": 8, "LAST_ACK": 9, "LISTEN": 10, "CLOSING": 11,
}

// codeConstants are the names scripts compare TCP_INFO fields with.
var codeConstants = map[string]int64{
	"TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4, "TCP_FIN_WAIT2": 5,
	"TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8, "TCP_LAST_ACK": 9, "TCP_LISTEN": 10, "TCP_CLOSING": 11,
	"TCP_CA_Open": 0, "TCP_CA_Disorder": 1, "TCP_CA_CWR": 2, "TCP_CA_Recovery": 3, "TCP_CA_Loss": 4,
	"TCPI_OPT_TIMESTAMPS": 1, "TCPI_OPT_SACK": 2, "TCPI_OPT_WSCALE": 4, "TCPI_OPT_ECN": 8,
	"TCPI_OPT_ECN_SEEN": 16, "TCPI_OPT_SYN_DATA": 32, "TCP_INFINITE_SSTHRESH": 0x7fffffff,
	"True": 1, "False": 0,
}

// tcpInfo is the TCP_INFO fields the backends give, from a socket's
// snapshot.
func tcpInfo(s *trace.Socket) map[string]int64 {
	m := map[string]int64{
		"tcpi_state":         tcpiStates[s.State],
		"tcpi_retransmits":   int64(s.Retransmits),
		"tcpi_total_retrans": int64(s.RetransTotal),
		"tcpi_rto":           s.RTO.Microseconds(),
		"tcpi_rtt":           s.RTT.Microseconds(),
	}
	if s.Cwnd > 0 {
		m["tcpi_snd_cwnd"] = int64(s.Cwnd)
	}
	return m
}

// codeErr is why a block cannot be evaluated (unsupported) or failed.
type codeErr struct {
	unsupported bool
	msg         string
}

// evalCode runs a block against the fields; it returns nil when every
// assertion held.
func evalCode(src string, fields map[string]int64) *codeErr {
	// Python joins a line ending in a backslash with the next.
	src = strings.ReplaceAll(strings.ReplaceAll(src, "\\\r\n", " "), "\\\n", " ")
	src = strings.TrimSuffix(strings.TrimSpace(src), "\\") // a backslash before the closing }%
	vars := map[string]int64{}
	for k, v := range fields {
		vars[k] = v
	}
	fields = vars
	for _, stmt := range splitStatements(src) {
		stmt = strings.TrimSpace(stmt)
		if name, expr, ok := assignment(stmt); ok {
			// NAME = EXPR: a constant the later statements use
			// (TCP_INFINITE_SSTHRESH = 0x7fffffff).
			e := &codeParser{src: expr, fields: fields}
			v, err := e.parse()
			if err != nil {
				return err
			}
			fields[name] = v
			continue
		}
		switch {
		case stmt == "" || strings.HasPrefix(stmt, "#"):
		case strings.HasPrefix(stmt, "print(") && strings.HasSuffix(stmt, ")"):
		case strings.HasPrefix(stmt, "assert ") || strings.HasPrefix(stmt, "assert("):
			cond := strings.TrimSpace(strings.TrimPrefix(stmt, "assert"))
			if i := topLevelComma(cond); i >= 0 {
				cond = cond[:i] // the message: packetdrill prints it
			}
			e := &codeParser{src: cond, fields: fields}
			v, err := e.parse()
			if err != nil {
				return err
			}
			if v == 0 {
				return &codeErr{msg: fmt.Sprintf("assertion failed: %s (%s)", strings.TrimSpace(cond), e.describe())}
			}
		default:
			return &codeErr{unsupported: true, msg: fmt.Sprintf("%%{ }%% statement %q: only assert and print are evaluated (no Python here)", stmt)}
		}
	}
	return nil
}

// assignment reads "NAME = EXPR" (not ==, <=, >=, !=).
func assignment(stmt string) (name, expr string, ok bool) {
	i := strings.IndexByte(stmt, '=')
	if i <= 0 || i+1 < len(stmt) && stmt[i+1] == '=' || strings.ContainsAny(stmt[i-1:i], "<>!=") {
		return "", "", false
	}
	name = strings.TrimSpace(stmt[:i])
	if name == "" || strings.HasPrefix(name, "tcpi_") {
		return "", "", false
	}
	for j := 0; j < len(name); j++ {
		if !isWordByte(name[j]) {
			return "", "", false
		}
	}
	return name, strings.TrimSpace(stmt[i+1:]), true
}

// splitStatements splits at ";" and line ends outside parentheses.
func splitStatements(src string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(src); i++ {
		switch src[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ';', '\n':
			if depth <= 0 {
				out = append(out, src[start:i])
				start = i + 1
			}
		}
	}
	return append(out, src[start:])
}

func topLevelComma(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// codeParser evaluates one expression by recursive descent.
type codeParser struct {
	src    string
	pos    int
	depth  int
	fields map[string]int64
	used   []string // the fields read, for the failure message
}

func (p *codeParser) describe() string {
	var parts []string
	for _, n := range p.used {
		parts = append(parts, fmt.Sprintf("%s = %d", n, p.fields[n]))
	}
	return strings.Join(parts, ", ")
}

func (p *codeParser) unsupported(format string, a ...any) *codeErr {
	return &codeErr{unsupported: true, msg: "%{ }% expression " + strconv.Quote(p.src) + ": " + fmt.Sprintf(format, a...)}
}

func (p *codeParser) parse() (int64, *codeErr) {
	v, err := p.or()
	if err != nil {
		return 0, err
	}
	p.space()
	if p.pos < len(p.src) {
		return 0, p.unsupported("unexpected %q", p.src[p.pos:])
	}
	return v, nil
}

func (p *codeParser) space() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t') {
		p.pos++
	}
}

// word reads a keyword if it is next.
func (p *codeParser) word(w string) bool {
	p.space()
	if strings.HasPrefix(p.src[p.pos:], w) {
		end := p.pos + len(w)
		if end == len(p.src) || !isWordByte(p.src[end]) {
			p.pos = end
			return true
		}
	}
	return false
}

func (p *codeParser) op(ops ...string) string {
	p.space()
	for _, o := range ops {
		if strings.HasPrefix(p.src[p.pos:], o) {
			p.pos += len(o)
			return o
		}
	}
	return ""
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func (p *codeParser) or() (int64, *codeErr) {
	v, err := p.and()
	for err == nil && p.word("or") {
		var r int64
		r, err = p.and()
		v = b2i(v != 0 || r != 0)
	}
	return v, err
}

func (p *codeParser) and() (int64, *codeErr) {
	v, err := p.not()
	for err == nil && p.word("and") {
		var r int64
		r, err = p.not()
		v = b2i(v != 0 && r != 0)
	}
	return v, err
}

func (p *codeParser) not() (int64, *codeErr) {
	if p.word("not") {
		v, err := p.not()
		return b2i(v == 0), err
	}
	return p.compare()
}

// compare evaluates a chain a OP b OP c, true when every link holds.
func (p *codeParser) compare() (int64, *codeErr) {
	l, err := p.bitOr()
	if err != nil {
		return 0, err
	}
	result, chained := int64(1), false
	for {
		o := p.op("==", "!=", "<=", ">=", "<", ">")
		if o == "" {
			break
		}
		r, err := p.bitOr()
		if err != nil {
			return 0, err
		}
		ok := map[string]bool{"==": l == r, "!=": l != r, "<=": l <= r, ">=": l >= r, "<": l < r, ">": l > r}[o]
		result, chained, l = result&b2i(ok), true, r
	}
	if chained {
		return result, nil
	}
	return l, nil
}

// bitOr and bitAnd are a|b|c and a&b&c, left to right.
func (p *codeParser) bitOr() (int64, *codeErr) {
	return p.leftAssoc(p.bitAnd, "|", func(a, b int64) int64 { return a | b })
}

func (p *codeParser) bitAnd() (int64, *codeErr) {
	return p.leftAssoc(p.sum, "&", func(a, b int64) int64 { return a & b })
}

// leftAssoc evaluates operands of next joined by op, left to right.
func (p *codeParser) leftAssoc(next func() (int64, *codeErr), op string, apply func(a, b int64) int64) (int64, *codeErr) {
	v, err := next()
	for err == nil && p.op(op) != "" {
		var r int64
		r, err = next()
		v = apply(v, r)
	}
	return v, err
}

func (p *codeParser) sum() (int64, *codeErr) {
	v, err := p.product()
	for err == nil {
		o := p.op("+", "-")
		if o == "" {
			break
		}
		var r int64
		if r, err = p.product(); o == "+" {
			v += r
		} else {
			v -= r
		}
	}
	return v, err
}

func (p *codeParser) product() (int64, *codeErr) {
	v, err := p.unary()
	for err == nil {
		o := p.op("*", "//", "/", "%")
		if o == "" {
			break
		}
		var r int64
		if r, err = p.unary(); err != nil {
			break
		}
		if o != "*" && r == 0 {
			return 0, p.unsupported("division by zero")
		}
		switch o {
		case "*":
			v *= r
		case "%":
			v %= r
		default:
			v /= r
		}
	}
	return v, err
}

func (p *codeParser) unary() (int64, *codeErr) {
	if p.op("-") != "" {
		v, err := p.unary()
		return -v, err
	}
	return p.atom()
}

func (p *codeParser) atom() (int64, *codeErr) {
	p.space()
	if p.pos >= len(p.src) {
		return 0, p.unsupported("expression ends early")
	}
	if p.depth++; p.depth > maxDepth {
		return 0, p.unsupported("nested too deeply")
	}
	defer func() { p.depth-- }()
	c := p.src[p.pos]
	switch {
	case c == '(':
		p.pos++
		v, err := p.or()
		if err != nil {
			return 0, err
		}
		if p.op(")") == "" {
			return 0, p.unsupported("missing )")
		}
		return v, nil
	case isDigit(c):
		start := p.pos
		for p.pos < len(p.src) && (isWordByte(p.src[p.pos])) {
			p.pos++
		}
		v, err := strconv.ParseInt(p.src[start:p.pos], 0, 64)
		if err != nil {
			return 0, p.unsupported("number %q", p.src[start:p.pos])
		}
		return v, nil
	case isWordByte(c):
		start := p.pos
		for p.pos < len(p.src) && isWordByte(p.src[p.pos]) {
			p.pos++
		}
		name := p.src[start:p.pos]
		if v, ok := codeConstants[name]; ok {
			return v, nil
		}
		if v, ok := p.fields[name]; ok {
			p.used = append(p.used, name)
			return v, nil
		}
		if strings.HasPrefix(name, "tcpi_") {
			return 0, p.unsupported("the backend does not give %s", name)
		}
		return 0, p.unsupported("unknown name %s (variables need Python)", name)
	}
	return 0, p.unsupported("unexpected %q", p.src[p.pos:])
}

// code runs a %{ }% block against the socket under test.
func (r *player) code(ev *Event) *stop {
	socks, err := r.b.Snapshot(LocalHost)
	if err != nil {
		return failAt(ev.Pos.Line, "runtime error in code: %v", err)
	}
	var under *trace.Socket
	for i := range socks {
		s := &socks[i]
		if r.conn != nil && s.Local == r.conn.local && s.Remote == r.conn.remote {
			under = s
		}
	}
	if under == nil && r.conn == nil { // no connection yet: the listener
		for i := range socks {
			if socks[i].State == "LISTEN" {
				under = &socks[i]
			}
		}
	}
	info := map[string]int64{"tcpi_state": tcpiStates["CLOSED"]}
	if under != nil {
		info = tcpInfo(under)
		// A socket with a descriptor: its full TCP_INFO, as packetdrill
		// reads it (getsockopt on the kernel, the engine's state).
		if under.FD > 0 {
			if r.conn != nil {
				r.connFD[r.conn] = tcp.FD(under.FD)
			}
			if full := r.os.tcpInfo(tcp.FD(under.FD)); full != nil {
				info = full
			}
		}
	} else if fd := r.underFD(); fd > 0 {
		// Gone from the socket table (CLOSED), its descriptor still
		// answers, as packetdrill's getsockopt on it does.
		if full := r.os.tcpInfo(fd); full != nil {
			info = full
		}
	}
	if e := evalCode(ev.Text, info); e != nil {
		if e.unsupported {
			return unsupportedAt(ev.Pos.Line, "%s", e.msg)
		}
		return failAt(ev.Pos.Line, "runtime error in code: %s", e.msg)
	}
	return nil
}

// underFD is the descriptor of the connection under test once it is gone
// from the socket table: the one it had when last seen, else the socket
// of the last call.
func (r *player) underFD() tcp.FD {
	if r.conn != nil {
		if fd, ok := r.connFD[r.conn]; ok {
			return fd
		}
		return 0
	}
	return r.lastFD
}
