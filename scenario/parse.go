package scenario

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tcplab/tcplab/sim"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Limits that keep a scenario (typed into a web page, say) bounded; a run's
// work is bounded by its Budget besides.
const (
	MaxSource     = 4 << 20 // bytes of scenario text
	MaxHosts      = 64
	MaxWord       = 256     // bytes of a word (a name, a number, an address); strings may be longer
	MaxRepeat     = 10000   // calls of one repeat line
	MaxRepeated   = 100_000 // calls of all repeat lines together
	MaxInject     = 100_000 // segments injected by all inject lines together
	MaxRules      = 1000    // rules installed at once
	MaxWrite      = 1 << 20
	MaxTime       = 24 * time.Hour
	DefaultWithin = 10 * time.Minute
	maxErrors     = 20
)

var keywords = []string{"title", "explain", "host", "profile", "set", "rule", "remove", "after", "at",
	"until", "expect", "note", "part", "repeat"}

type token struct {
	s      string
	col    int
	quoted bool
}

type nameKind uint8

const (
	nkSocket   nameKind = iota // socket(): not yet listening or connected
	nkListener                 // a listening socket
	nkConn                     // a connection
)

type parser struct {
	file     string
	sc       *Scenario
	errs     ErrorList
	line     int
	text     string
	toks     []token
	i        int
	names    map[string]map[string]nameKind
	rules    map[string]bool
	hosts    map[string]*HostDecl // by name (sc.Host is a linear search)
	addrs    map[netip.Addr]string
	injected int           // segments injected by the lines so far
	repeated int           // calls made by the repeat lines so far
	rulesIn  int           // rules installed at this point of the script
	body     bool          // a step has been seen: hosts can no longer be declared
	span     time.Duration // the latest virtual time the steps so far can reach
}

// reach records that a step can take the run to t, refusing a scenario
// that could run for more than MaxTime in all.
func (p *parser) reach(col int, t time.Duration) {
	if t > MaxTime {
		p.fail(col, fmt.Sprintf("the scenario could run for %v, more than the %v limit", t, MaxTime), "shorten the waits: the whole run must fit in a day of virtual time")
	}
	p.span = max(p.span, t)
}

// lineError aborts the current line.
type lineError struct{ e *Error }

// Parse reads a scenario. name is used in messages (a file name); the
// scenario's Name is its base name without extension. All errors are
// returned together as an ErrorList.
func Parse(name, src string) (*Scenario, error) {
	base := filepath.Base(name)
	sc := &Scenario{File: name, Name: strings.TrimSuffix(base, filepath.Ext(base)), Source: src}
	p := &parser{file: name, sc: sc, names: map[string]map[string]nameKind{}, rules: map[string]bool{},
		hosts: map[string]*HostDecl{}, addrs: map[netip.Addr]string{}}
	if len(src) > MaxSource {
		return nil, ErrorList{{Pos: Pos{name, 1, 1}, Msg: fmt.Sprintf("the scenario is %d bytes, more than the %d-byte limit", len(src), MaxSource),
			Hint: "split it into several scenarios"}}
	}
	var explain []string
	for i, raw := range strings.Split(src, "\n") {
		p.line = i + 1
		raw = strings.TrimRight(raw, "\r")
		if !p.tokenize(raw) {
			continue
		}
		if len(p.toks) == 0 {
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					le, ok := r.(lineError)
					if !ok {
						panic(r)
					}
					p.errs = append(p.errs, le.e)
				}
			}()
			if p.toks[0].s == "explain" && !p.toks[0].quoted {
				explain = append(explain, p.rest(1))
				return
			}
			p.parseLine()
		}()
		if len(p.errs) >= maxErrors {
			break
		}
	}
	sc.Explain = strings.Join(explain, "\n")
	if len(p.errs) == 0 {
		if len(sc.Hosts) == 0 {
			p.errs = append(p.errs, &Error{Pos: Pos{name, 1, 1}, Msg: "the scenario declares no host",
				Hint: "start with lines like `host client 10.0.0.1` and `host server 10.0.0.2`"})
		}
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	sc.Span = p.span
	return sc, nil
}

// tokenize splits a line into words and quoted strings, dropping a comment.
func (p *parser) tokenize(line string) bool {
	p.toks, p.i = p.toks[:0], 0
	p.text = line
	i := 0
	for i < len(line) {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '#':
			p.text = line[:i]
			return true
		case c == '"':
			j := i + 1
			for j < len(line) && line[j] != '"' {
				if line[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(line) {
				p.errs = append(p.errs, &Error{Pos: p.pos(i + 1), Msg: "string not closed", Hint: `end it with a double quote: "Hutu"`})
				return false
			}
			s, err := strconv.Unquote(line[i : j+1])
			if err != nil {
				p.errs = append(p.errs, &Error{Pos: p.pos(i + 1), Msg: "bad string " + clip(line[i:j+1]), Hint: `use Go escapes such as \n, \x00, \"`})
				return false
			}
			if len(s) > MaxWrite {
				p.errs = append(p.errs, &Error{Pos: p.pos(i + 1), Msg: fmt.Sprintf("a string of %d bytes, more than the %d-byte limit", len(s), MaxWrite), Hint: "write it in several parts"})
				return false
			}
			p.toks = append(p.toks, token{s: s, col: i + 1, quoted: true})
			i = j + 1
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '"' && line[j] != '#' {
				j++
			}
			if j-i > MaxWord {
				p.errs = append(p.errs, &Error{Pos: p.pos(i + 1), Msg: fmt.Sprintf("a word of %d bytes (%s), more than the %d-byte limit", j-i, clip(line[i:j]), MaxWord),
					Hint: "names, numbers and addresses are short; put text in double quotes"})
				return false
			}
			p.toks = append(p.toks, token{s: line[i:j], col: i + 1})
			i = j
		}
	}
	p.text = line
	return true
}

func (p *parser) pos(col int) Pos { return Pos{p.file, p.line, col} }

func (p *parser) fail(col int, msg, hint string) {
	// What is missing at the end of a line is shown at its last
	// character: a column is always within the line.
	if n := len(strings.TrimRight(p.text, " \t")); col > n && n > 0 { // columns count bytes
		col = n
	}
	panic(lineError{&Error{Pos: p.pos(col), Msg: clip(msg), Hint: clip(hint)}})
}

// hostDecl is a declared host, or nil.
func (p *parser) hostDecl(name string) *HostDecl { return p.hosts[name] }

// endCol is the column just after the line's last token.
func (p *parser) endCol() int {
	if len(p.toks) == 0 {
		return 1
	}
	t := p.toks[len(p.toks)-1]
	if t.quoted {
		return t.col + len(strconv.Quote(t.s))
	}
	return t.col + len(t.s)
}

func (p *parser) more() bool { return p.i < len(p.toks) }

func (p *parser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i].s
	}
	return ""
}

// next returns the next token or fails saying what was expected.
func (p *parser) next(what, hint string) token {
	if p.i >= len(p.toks) {
		p.fail(p.endCol(), "expected "+what+" at the end of the line", hint)
	}
	t := p.toks[p.i]
	p.i++
	return t
}

func (p *parser) word(what, hint string) token {
	t := p.next(what, hint)
	if t.quoted {
		p.fail(t.col, fmt.Sprintf("expected %s, found a string", what), hint)
	}
	return t
}

func (p *parser) done(hint string) {
	if p.i < len(p.toks) {
		t := p.toks[p.i]
		p.fail(t.col, fmt.Sprintf("unexpected %q", t.s), hint)
	}
}

// rest is the raw text after token i.
func (p *parser) rest(i int) string {
	if i >= len(p.toks) {
		return ""
	}
	return strings.TrimSpace(p.text[p.toks[i].col-1:])
}

func (p *parser) step(kind StepKind) *Step {
	p.sc.Steps = append(p.sc.Steps, Step{Pos: p.pos(p.toks[0].col), Text: strings.TrimSpace(p.text), Kind: kind})
	p.body = true
	return &p.sc.Steps[len(p.sc.Steps)-1]
}

func (p *parser) hostNames() []string {
	out := make([]string, len(p.sc.Hosts))
	for i, h := range p.sc.Hosts {
		out[i] = h.Name
	}
	return out
}

// host reads a declared host's name.
func (p *parser) host(t token) string {
	if p.hostDecl(t.s) == nil {
		if len(p.sc.Hosts) == 0 {
			p.fail(t.col, fmt.Sprintf("unknown host %q", t.s), "declare hosts first: `host client 10.0.0.1`")
		}
		p.fail(t.col, fmt.Sprintf("unknown host %q", t.s), didYouMean(t.s, p.hostNames()))
	}
	return t.s
}

func (p *parser) parseLine() {
	first := p.toks[0]
	if first.quoted {
		p.fail(first.col, "a line cannot start with a string", "lines start with a keyword or `HOST:`")
	}
	if strings.HasSuffix(first.s, ":") && len(first.s) > 1 {
		p.i = 1
		h := p.host(token{s: strings.TrimSuffix(first.s, ":"), col: first.col})
		p.parseCall(h, 0)
		return
	}
	p.i = 1
	switch first.s {
	case "title":
		if p.sc.Title != "" {
			p.fail(first.col, "a second title", "a scenario has one title line; use `explain` for more")
		}
		p.sc.Title = p.rest(1)
		if p.sc.Title == "" {
			p.fail(p.endCol(), "expected the title's text", "title Every state of a normal connection")
		}
	case "host":
		p.parseHost()
	case "profile":
		h := p.host(p.word("a host", "profile server windows-classic"))
		t := p.word("a profile name", "one of: "+strings.Join(tcp.ProfileNames(), ", "))
		p.checkProfile(t)
		p.done("`profile HOST NAME` takes nothing more")
		s := p.step(StepProfile)
		s.Host, s.Name = h, t.s
	case "set":
		p.parseSet()
	case "rule":
		p.parseRule()
	case "remove":
		t := p.word("`rule`", "remove rule NAME")
		if t.s != "rule" {
			p.fail(t.col, fmt.Sprintf("expected `rule`, found %q", t.s), "remove rule NAME")
		}
		n := p.word("the rule's name", "name a rule with `as NAME` at the end of its line")
		if !p.rules[n.s] {
			p.fail(n.col, fmt.Sprintf("no rule named %q", n.s), didYouMean(n.s, keysOf(p.rules)))
		}
		p.done("`remove rule NAME` takes nothing more")
		delete(p.rules, n.s)
		p.rulesIn--
		p.step(StepRemove).Name = n.s
	case "after", "at":
		t := p.word("a duration", "after 2s, after 500ms, at 1m30s")
		d := p.duration(t, false)
		p.done("`" + first.s + " DURATION` takes nothing more")
		if first.s == "after" {
			p.reach(t.col, p.span+d)
			p.step(StepAfter).Dur = d
		} else {
			p.reach(t.col, d)
			p.step(StepAt).Dur = d
		}
	case "until":
		s := p.step(StepUntil)
		s.Cond = p.parseCond(true)
		s.Host = s.Cond.Host
		s.Dur = DefaultWithin
		if p.more() {
			t := p.word("`within`", "until client: conn state ESTABLISHED within 5s")
			if t.s != "within" {
				p.fail(t.col, fmt.Sprintf("unexpected %q", t.s), "end an until line with `within DURATION`")
			}
			s.Dur = p.duration(p.word("a duration", "within 5s"), false)
			if s.Dur == 0 {
				p.fail(t.col, "within 0 can never be met", "give a positive bound: within 5s")
			}
		}
		p.done("an until line ends with `within DURATION`")
		p.reach(p.toks[0].col, p.span+s.Dur)
	case "expect":
		s := p.step(StepExpect)
		s.Cond = p.parseCond(false)
		s.Host = s.Cond.Host
		p.done("an expect line tests one thing")
	case "note", "part":
		txt := p.rest(1)
		if txt == "" {
			p.fail(p.endCol(), "expected text", first.s+" The client now closes.")
		}
		k := StepNote
		if first.s == "part" {
			k = StepPart
		}
		p.step(k).Note = txt
	case "repeat":
		t := p.word("a count", "repeat 20 client: connect server:80 as c{i}")
		n, err := strconv.Atoi(t.s)
		if err != nil || n < 1 || n > MaxRepeat {
			p.fail(t.col, fmt.Sprintf("repeat count %q is not a number from 1 to %d", t.s, MaxRepeat), "repeat 20 client: connect server:80 as c{i}")
		}
		if p.repeated+n > MaxRepeated {
			p.fail(t.col, fmt.Sprintf("this line brings the repeated calls to %d, more than the %d a scenario may make", p.repeated+n, MaxRepeated),
				"a few thousand connections show every effect")
		}
		p.repeated += n
		ht := p.word("`HOST:`", "repeat 20 client: connect server:80 as c{i}")
		if !strings.HasSuffix(ht.s, ":") {
			p.fail(ht.col, fmt.Sprintf("expected `HOST:`, found %q", ht.s), "repeat 20 client: connect server:80 as c{i}")
		}
		h := p.host(token{s: strings.TrimSuffix(ht.s, ":"), col: ht.col})
		p.parseCall(h, n)
	default:
		if p.hostDecl(first.s) != nil {
			p.fail(first.col, fmt.Sprintf("a host name alone starts no step"), fmt.Sprintf("write `%s: connect ...` with a colon", first.s))
		}
		cands := append([]string(nil), keywords...)
		for _, h := range p.sc.Hosts {
			cands = append(cands, h.Name+":")
		}
		p.fail(first.col, fmt.Sprintf("unknown step %q", first.s), didYouMean(first.s, cands))
	}
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (p *parser) checkProfile(t token) {
	if _, err := tcp.ProfileByName(t.s); err != nil {
		p.fail(t.col, fmt.Sprintf("unknown profile %q", t.s), didYouMean(t.s, tcp.ProfileNames()))
	}
}

func (p *parser) parseHost() {
	if p.body {
		p.fail(p.toks[0].col, "hosts are declared before the first step", "move the host line to the top")
	}
	const ex = "host client 10.0.0.1 [fd00::1] [profile linux]"
	n := p.word("a host name", ex)
	if !isIdent(n.s) {
		p.fail(n.col, fmt.Sprintf("%q is not a valid host name", n.s), "a name starts with a letter and holds letters, digits, - and _")
	}
	for _, k := range keywords {
		if n.s == k {
			p.fail(n.col, fmt.Sprintf("%q is a keyword and cannot name a host", n.s), "pick another name, such as client or server")
		}
	}
	if p.hostDecl(n.s) != nil {
		p.fail(n.col, fmt.Sprintf("host %q is declared twice", n.s), "each host has one line")
	}
	if len(p.sc.Hosts) >= MaxHosts {
		p.fail(n.col, fmt.Sprintf("more than %d hosts", MaxHosts), "a lab has at most 64 hosts")
	}
	// Whatever else fails on this line, the host is declared (with an
	// address standing in if need be: the scenario will not run), so that
	// later lines naming it do not each fail with "unknown host".
	declared := false
	defer func() {
		if r := recover(); r != nil {
			if !declared && p.hostDecl(n.s) == nil && isIdent(n.s) {
				p.declareHost(HostDecl{Pos: p.pos(n.col), Name: n.s, Addr: netip.AddrFrom4([4]byte{0, 0, 0, byte(len(p.sc.Hosts) + 1)})})
			}
			panic(r)
		}
	}()
	at := p.word("an IPv4 or IPv6 address", ex)
	a := p.hostAddr(at)
	hd := HostDecl{Pos: p.pos(n.col), Name: n.s, Addr: a}
	if t := p.peek(); t != "" && t != "profile" && looksLikeAddr(t) {
		// A second address, of the other family: a dual-stack host.
		at2 := p.word("an address", ex)
		a2 := p.hostAddr(at2)
		if a2.Is4() == a.Is4() {
			p.fail(at2.col, fmt.Sprintf("%v is a second address of the same family", a2), "a dual-stack host has one IPv4 and one IPv6 address: host client 10.0.0.1 fd00::1")
		}
		if a2.Is4() {
			a, a2 = a2, a
			hd.Addr = a
		}
		hd.Addr6 = a2
		p.addrs[a2] = n.s
	}
	if p.more() {
		k := p.word("`profile`", ex)
		if k.s != "profile" {
			p.fail(k.col, fmt.Sprintf("unexpected %q", k.s), ex)
		}
		t := p.word("a profile name", "one of: "+strings.Join(tcp.ProfileNames(), ", "))
		p.checkProfile(t)
		hd.Profile = t.s
	}
	p.done(ex)
	p.declareHost(hd)
	declared = true
	p.addrs[a] = n.s
}

// looksLikeAddr tells a word meant as an address: digits and dots, or a
// colon.
func looksLikeAddr(w string) bool {
	return strings.ContainsRune(w, ':') || w != "" && strings.Trim(w, "0123456789.") == ""
}

// hostAddr reads a host's address: IPv4, or IPv6 (in brackets or not),
// usable by a lab host.
func (p *parser) hostAddr(at token) netip.Addr {
	a, err := netip.ParseAddr(strings.Trim(at.s, "[]"))
	if err != nil || a.Is4In6() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.Is6() && (a.IsLinkLocalUnicast() || a.Zone() != "") {
		p.fail(at.col, fmt.Sprintf("%q is not a usable host address", at.s), "the lab's hosts use private addresses such as 10.0.0.1 or fd00::1 (not loopback, link-local or mapped)")
	}
	if owner, ok := p.addrs[a]; ok {
		p.fail(at.col, fmt.Sprintf("address %v already belongs to %s", a, owner), "give every host its own address")
	}
	return a
}

// declareHost adds a host to the scenario and its names.
func (p *parser) declareHost(hd HostDecl) {
	p.sc.Hosts = append(p.sc.Hosts, hd)
	// The map points into the slice, which append may move: rebuild it
	// (at most MaxHosts times).
	for i := range p.sc.Hosts {
		p.hosts[p.sc.Hosts[i].Name] = &p.sc.Hosts[i]
	}
	p.names[hd.Name] = map[string]nameKind{}
}

func (p *parser) parseSet() {
	const ex = "set server tcp_synack_retries 3"
	h := p.host(p.word("a host", ex))
	st := p.word("a setting", ex)
	if tcp.SettingHelp(st.s) == "" {
		p.fail(st.col, fmt.Sprintf("unknown setting %q", st.s), didYouMean(strings.TrimPrefix(st.s, "net.ipv4."), tcp.SettingNames()))
	}
	if !p.more() {
		p.fail(p.endCol(), "expected a value", ex)
	}
	val := p.rest(p.i)
	prof := tcp.Linux()
	if err := prof.Set(st.s, val); err != nil {
		p.fail(p.toks[p.i].col, err.Error(), tcp.SettingHelp(st.s))
	}
	s := p.step(StepSet)
	s.Host, s.Setting, s.Value = h, st.s, val
}

// duration reads a Go duration with a unit; whole numbers need one.
func (p *parser) duration(t token, allowZero bool) time.Duration {
	d, err := time.ParseDuration(t.s)
	if err != nil {
		hint := "durations carry a unit: 500ms, 2s, 1m30s"
		if _, e := strconv.ParseFloat(t.s, 64); e == nil {
			hint = fmt.Sprintf("add a unit: %ss", t.s)
		}
		p.fail(t.col, fmt.Sprintf("%q is not a duration", t.s), hint)
	}
	if d < 0 || d > MaxTime {
		p.fail(t.col, fmt.Sprintf("duration %v out of range", d), "between 0 and 24h")
	}
	_ = allowZero
	return d
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// fillData is the bytes of `write conn N bytes`: a through z over and
// over, one read-only buffer that every such write slices (a thousand
// writes of a megabyte cost a megabyte, not a gigabyte).
var fillData = sync.OnceValue(func() []byte {
	b := make([]byte, MaxWrite)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
})

// isName accepts identifiers, with {i} inside when repeating.
func isName(s string, repeat bool) bool {
	if repeat {
		s = strings.ReplaceAll(s, "{i}", "0")
	}
	return isIdent(s)
}

// names of a kind on a host.
func (p *parser) namesOf(host string, kinds ...nameKind) []string {
	var out []string
	for n, k := range p.names[host] {
		for _, want := range kinds {
			if k == want {
				out = append(out, n)
			}
		}
	}
	return out
}

// sockName reads an optional socket operand: a defined name, or nothing
// when the host has exactly one candidate.
func (p *parser) sockName(host string, verb Verb, repeat int, kinds ...nameKind) string {
	if p.more() && !p.toks[p.i].quoted {
		s := p.toks[p.i].s
		if isName(s, repeat > 0) && !isOption(s) {
			if repeat > 0 && strings.Contains(s, "{i}") {
				p.i++
				for i := 1; i <= repeat; i++ {
					n := strings.ReplaceAll(s, "{i}", strconv.Itoa(i))
					if _, ok := p.names[host][n]; !ok {
						p.fail(p.toks[p.i-1].col, fmt.Sprintf("no socket %q on %s", n, host), "define it earlier with `as`")
					}
				}
				return s
			}
			if _, ok := p.names[host][s]; ok {
				p.i++
				return s
			}
			if !looksLikeArg(verb, s) {
				p.fail(p.toks[p.i].col, fmt.Sprintf("no socket named %q on %s", s, host), didYouMean(s, keysOf(p.names[host])))
			}
		}
	}
	// Without a name: the only socket of the first kind that has any
	// (a connection before a plain socket before a listener).
	for _, k := range kinds {
		c := p.namesOf(host, k)
		switch len(c) {
		case 0:
			continue
		case 1:
			return c[0]
		}
		p.fail(p.toks[p.i-1].col+len(p.toks[p.i-1].s), fmt.Sprintf("%s on %s: which socket?", verb, host), "name one of: "+listOf(c))
	}
	p.fail(p.endCol(), fmt.Sprintf("%s on %s needs a socket, and none is defined yet", verb, host),
		"create one first: `listen 80`, `connect server:80` or `accept`")
	return ""
}

// looksLikeArg tells words that are arguments, not socket names.
func looksLikeArg(v Verb, s string) bool {
	switch v {
	case VShutdown:
		return s == "rd" || s == "wr" || s == "rdwr"
	case VLinger, VKeepalive:
		return s == "on" || s == "off" || s == "idle" || s == "interval" || s == "count" || strings.ContainsAny(s, "0123456789")
	}
	return false
}

func isOption(s string) bool {
	switch s {
	case "nonblock", "as", "peek", "backlog", "from", "reuseaddr", "bytes":
		return true
	}
	return false
}

// nameOnFailure is deferred by parseCall: when a call that names a socket
// fails to parse, its name (from `as NAME`, or the default) is defined all
// the same, so that the lines using it report their own errors rather
// than "no socket named ...". It passes the failure on.
func (p *parser) nameOnFailure(host string, v Verb, repeat int, c *CallStep) {
	r := recover()
	if r == nil {
		return
	}
	if c.As != "" {
		panic(r) // the name was defined before the line failed
	}
	def, kind := "", nkSocket
	switch {
	case v == VSocket:
		def = "sock"
	case v == VListen && c.Sock == "":
		def, kind = "listener", nkListener
	case v == VAccept, v == VConnect && c.Sock == "":
		def, kind = "conn", nkConn
	}
	if def != "" && p.names[host] != nil {
		name := def
		for k := 0; k+1 < len(p.toks); k++ {
			if p.toks[k].s == "as" && isName(p.toks[k+1].s, repeat > 0) {
				name = p.toks[k+1].s
			}
		}
		for i := 1; i <= max(repeat, 1); i++ {
			n := name
			if repeat > 0 {
				n = strings.ReplaceAll(name, "{i}", strconv.Itoa(i))
			}
			if _, taken := p.names[host][n]; !taken {
				p.names[host][n] = kind
			}
		}
	}
	panic(r)
}

// newName reads `as NAME` or gives the default, checking it is free.
func (p *parser) newName(host, def string, repeat int, kind nameKind) string {
	name, col := def, p.endCol()
	if p.peek() == "as" {
		p.i++
		t := p.word("a name", "as conn")
		name, col = t.s, t.col
		if !isName(name, repeat > 0) {
			p.fail(t.col, fmt.Sprintf("%q is not a valid name", name), "a name starts with a letter and holds letters, digits, - and _")
		}
		if isOption(name) || name == "count" || name == "counter" || name == "packets" {
			p.fail(t.col, fmt.Sprintf("%q is a keyword and cannot name a socket", name), "pick another name")
		}
	}
	if repeat > 0 && !strings.Contains(name, "{i}") {
		p.fail(col, "repeated calls need distinct names", fmt.Sprintf("put {i} in the name: as %s{i}", name))
	}
	if repeat == 0 && strings.Contains(name, "{i}") {
		p.fail(col, "{i} only makes sense in a repeat line", "repeat 10 client: connect server:80 as c{i}")
	}
	for i := 1; i <= max(repeat, 1); i++ {
		n := name
		if repeat > 0 {
			n = strings.ReplaceAll(name, "{i}", strconv.Itoa(i))
		}
		if _, ok := p.names[host][n]; ok {
			p.fail(col, fmt.Sprintf("socket name %q is already used on %s", n, host), "give the new socket another name with `as NAME`")
		}
		p.names[host][n] = kind
	}
	return name
}

// target reads ADDR:PORT, [IPv6]:PORT or HOST:PORT for a connect made on
// host from. A host name resolves as glibc's getaddrinfo would by
// default: its IPv6 address when both hosts have one, else its IPv4
// address.
func (p *parser) target(t token, from string) netip.AddrPort {
	return p.targetOf(t, from, 0, "")
}

// familyOf is the address of named host h that host from reaches it by,
// as glibc's getaddrinfo orders them by default: IPv6 when both have it,
// else IPv4; with family 4 or 6, that family's (zero if h has none).
func (p *parser) familyOf(h *HostDecl, from string, family int) netip.Addr {
	switch family {
	case 4:
		return h.V4()
	case 6:
		return h.V6()
	}
	if me := p.hostDecl(from); me != nil && me.V6().IsValid() && h.V6().IsValid() {
		return h.V6()
	}
	if h.V4().IsValid() {
		return h.V4()
	}
	return h.Addr
}

// targetOf is target for a known family (4 or 6; 0 any), which why
// explains in errors, with a hint.
func (p *parser) targetOf(t token, from string, family int, why string) netip.AddrPort {
	const hint = "give ADDRESS:PORT, [IPv6]:PORT or HOST:PORT, e.g. server:80, 10.0.0.2:80 or [fd00::2]:80"
	whyHint := "connect without naming the socket (a new one takes the destination's family)"
	if why == "" {
		why = "the socket is AF_INET" + map[int]string{4: "", 6: "6"}[family]
	} else {
		whyHint = "give two addresses of one family"
	}
	wrongFamily := func(a netip.Addr) {
		if family == 4 && a.Is6() || family == 6 && a.Is4() {
			p.fail(t.col, fmt.Sprintf("%v is not IPv%d: %s", a, family, why), whyHint)
		}
	}
	if strings.HasPrefix(t.s, "[") {
		ap, err := netip.ParseAddrPort(t.s)
		if err != nil || !ap.Addr().Is6() || ap.Port() == 0 {
			p.fail(t.col, fmt.Sprintf("%q is not an IPv6 address and port", t.s), hint)
		}
		wrongFamily(ap.Addr())
		return ap
	}
	i := strings.LastIndexByte(t.s, ':')
	if i <= 0 {
		p.fail(t.col, fmt.Sprintf("%q is not an address and port", t.s), hint)
	}
	port, err := strconv.ParseUint(t.s[i+1:], 10, 16)
	if err != nil || port == 0 {
		p.fail(t.col+i+1, fmt.Sprintf("%q is not a port from 1 to 65535", t.s[i+1:]), hint)
	}
	hostPart := t.s[:i]
	if h := p.hostDecl(hostPart); h != nil {
		a := p.familyOf(h, from, family)
		if !a.IsValid() {
			p.fail(t.col, fmt.Sprintf("%s has no IPv%d address: %s", h.Name, family, why), whyHint)
		}
		return netip.AddrPortFrom(a, uint16(port))
	}
	if strings.Contains(hostPart, ":") {
		p.fail(t.col, fmt.Sprintf("%q: an IPv6 address goes in brackets before its port", t.s), "[fd00::2]:80")
	}
	a, err := netip.ParseAddr(hostPart)
	if err != nil {
		p.fail(t.col, fmt.Sprintf("%q is neither a host nor an address", hostPart), didYouMean(hostPart, p.hostNames()))
	}
	wrongFamily(a)
	return netip.AddrPortFrom(a, uint16(port))
}

// sockFamily is the family of a socket a `socket` line made on host:
// AF_INET, but on a host without IPv4.
func (p *parser) sockFamily(host string) int {
	if h := p.hostDecl(host); h != nil && !h.V4().IsValid() {
		return 6
	}
	return 4
}

func (p *parser) port(t token) uint16 {
	v, err := strconv.ParseUint(t.s, 10, 16)
	if err != nil || v == 0 {
		p.fail(t.col, fmt.Sprintf("%q is not a port from 1 to 65535", t.s), "ports are numbers, e.g. 80")
	}
	return uint16(v)
}

func (p *parser) count(t token, lo, hi int64, what string) int64 {
	v, err := strconv.ParseInt(t.s, 10, 64)
	if err != nil || v < lo || v > hi {
		p.fail(t.col, fmt.Sprintf("%s %q is not a number from %d to %d", what, t.s, lo, hi), "")
	}
	return v
}

func (p *parser) parseCall(host string, repeat int) {
	vt := p.word("a call", "client: connect server:80")
	if vt.s == "inject" {
		if repeat > 0 {
			p.fail(vt.col, "inject is not repeated", "use `count N every D` on the inject line")
		}
		p.parseInject(host)
		return
	}
	v := Verb(vt.s)
	known := false
	for _, k := range verbs {
		if k == v {
			known = true
		}
	}
	if !known {
		cands := []string{"inject"}
		for _, k := range verbs {
			cands = append(cands, string(k))
		}
		p.fail(vt.col, fmt.Sprintf("unknown call %q", vt.s), didYouMean(vt.s, cands))
	}
	c := &CallStep{Verb: v, Repeat: repeat}
	defer p.nameOnFailure(host, v, repeat, c)
	switch v {
	case VSocket:
		c.As = p.newName(host, "sock", repeat, nkSocket)
	case VBind:
		c.Sock = p.sockName(host, v, repeat, nkSocket)
		c.Port = p.port(p.word("a port", "bind sock 3333"))
		if p.peek() == "reuseaddr" {
			p.i++
			c.Reuse = true
		}
	case VListen:
		c.Backlog = 128
		if t := p.peek(); t != "" && t[0] >= '0' && t[0] <= '9' {
			c.Port = p.port(p.word("a port", "listen 80"))
		} else {
			c.Sock = p.sockName(host, v, repeat, nkSocket)
		}
		p.options("listen PORT [backlog N] [reuseaddr] [v6only] [as NAME]", map[string]func(){
			"backlog":   func() { c.Backlog = int(p.count(p.word("a backlog", "backlog 5"), 0, 1<<20, "backlog")) },
			"reuseaddr": func() { c.Reuse = true },
			"v6only":    func() { c.V6Only = true },
		})
		if h := p.hostDecl(host); c.V6Only && h != nil && !h.V6().IsValid() {
			p.fail(p.toks[0].col, fmt.Sprintf("v6only on %s, which has no IPv6 address", host), "give the host an IPv6 address: host "+host+" 10.0.0.2 fd00::2")
		}
		if c.V6Only && c.Sock != "" && p.sockFamily(host) == 4 {
			p.fail(p.toks[0].col, fmt.Sprintf("v6only on %s, an AF_INET socket", c.Sock), "listen PORT v6only: a new socket on a host with IPv6 is AF_INET6")
		}
		if c.Sock == "" {
			c.As = p.newName(host, "listener", repeat, nkListener)
		} else {
			p.names[host][c.Sock] = nkListener
		}
	case VAccept:
		c.Sock = p.sockName(host, v, repeat, nkListener)
		c.NonBlock = p.flag("nonblock")
		c.As = p.newName(host, "conn", repeat, nkConn)
	case VConnect:
		t := p.word("a destination", "connect server:80")
		family := 0
		if _, ok := p.names[host][t.s]; ok && !strings.Contains(t.s, ":") {
			c.Sock = t.s
			t = p.word("a destination", "connect sock server:80")
			family = p.sockFamily(host) // a socket of a `socket` line
		}
		c.Target = p.targetOf(t, host, family, "")
		p.options("connect TARGET [from PORT] [reuseaddr] [nonblock] [as NAME]", map[string]func(){
			"from":      func() { c.From = p.port(p.word("a local port", "from 3333")) },
			"reuseaddr": func() { c.Reuse = true },
			"nonblock":  func() { c.NonBlock = true },
		})
		if c.Sock == "" {
			c.As = p.newName(host, "conn", repeat, nkConn)
		} else {
			if c.From != 0 {
				p.fail(p.toks[0].col, "`from` is for a new socket", "bind the named socket with `bind NAME PORT` first")
			}
			p.names[host][c.Sock] = nkConn
		}
	case VWrite:
		c.Sock = p.sockName(host, v, repeat, nkConn, nkSocket)
		t := p.next("the bytes to write", `write conn "Hutu" or write conn 1000 bytes`)
		if t.quoted {
			c.Data = []byte(t.s)
		} else {
			n := p.count(t, 1, MaxWrite, "byte count")
			b := p.word("`bytes`", "write conn 1000 bytes")
			if b.s != "bytes" {
				p.fail(b.col, fmt.Sprintf("expected `bytes`, found %q", b.s), "write conn 1000 bytes")
			}
			c.Data = fillData()[:n:n]
		}
		c.NonBlock = p.flag("nonblock")
	case VRead:
		c.Sock = p.sockName(host, v, repeat, nkConn, nkSocket)
		if t := p.peek(); t != "" && t[0] >= '0' && t[0] <= '9' {
			c.Max = int(p.count(p.word("a count", "read conn 100"), 1, MaxWrite, "read size"))
		}
		p.options("read [NAME] [MAX] [peek] [nonblock]", map[string]func(){
			"peek":     func() { c.Peek = true },
			"nonblock": func() { c.NonBlock = true },
		})
	case VShutdown:
		c.Sock = p.sockName(host, v, repeat, nkConn, nkSocket, nkListener)
		t := p.word("rd, wr or rdwr", "shutdown conn wr")
		switch t.s {
		case "rd":
			c.How = tcp.ShutRD
		case "wr":
			c.How = tcp.ShutWR
		case "rdwr":
			c.How = tcp.ShutRDWR
		default:
			p.fail(t.col, fmt.Sprintf("unknown direction %q", t.s), didYouMean(t.s, []string{"rd", "wr", "rdwr"}))
		}
	case VClose:
		c.Sock = p.sockName(host, v, repeat, nkConn, nkSocket, nkListener)
	case VLinger:
		c.Sock = p.sockName(host, v, repeat, nkConn, nkSocket, nkListener)
		t := p.word("off or a time in seconds", "linger conn 0s, linger conn 5s, linger conn off")
		o := tcp.Option{Kind: tcp.OptLinger}
		if t.s != "off" {
			d := p.duration(t, true)
			if d%time.Second != 0 {
				p.fail(t.col, "SO_LINGER counts whole seconds", "linger conn 5s")
			}
			o.On, o.Dur = true, d
		}
		c.Linger = &o
	case VKeepalive:
		c.Sock = p.sockName(host, v, repeat, nkConn, nkSocket, nkListener)
		const ex = "keepalive conn on idle 10s interval 5s count 3"
		t := p.word("on or off", ex)
		switch t.s {
		case "on":
			c.Keepalive = []tcp.Option{{Kind: tcp.OptKeepAlive, On: true}}
		case "off":
			c.Keepalive = []tcp.Option{{Kind: tcp.OptKeepAlive}}
		default:
			p.fail(t.col, fmt.Sprintf("expected on or off, found %q", t.s), ex)
		}
		for p.more() {
			o := p.word("idle, interval or count", ex)
			switch o.s {
			case "idle", "interval":
				d := p.duration(p.word("a duration", ex), false)
				if d < time.Second || d%time.Second != 0 {
					p.fail(o.col, o.s+" counts whole seconds, at least 1", ex)
				}
				k := tcp.OptKeepIdle
				if o.s == "interval" {
					k = tcp.OptKeepIntvl
				}
				c.Keepalive = append(c.Keepalive, tcp.Option{Kind: k, Dur: d})
			case "count":
				c.Keepalive = append(c.Keepalive, tcp.Option{Kind: tcp.OptKeepCnt, N: int(p.count(p.word("a count", ex), 1, 127, "probe count"))})
			default:
				p.fail(o.col, fmt.Sprintf("unexpected %q", o.s), ex)
			}
		}
	case VReuseAddr, VNoDelay, VNonBlock:
		c.Sock = p.sockName(host, v, repeat, nkConn, nkSocket, nkListener)
	}
	p.done(fmt.Sprintf("the form of %s is in docs/scenario-language.md", v))
	s := p.step(StepCall)
	s.Host, s.Call = host, c
}

// options reads option words up to the end of the line or `as NAME`, each
// handled by its entry; any other word is an error showing usage.
func (p *parser) options(usage string, opts map[string]func()) {
	for p.more() && p.peek() != "as" {
		o := p.word("an option", usage)
		f, ok := opts[o.s]
		if !ok {
			p.fail(o.col, fmt.Sprintf("unexpected %q", o.s), usage)
		}
		f()
	}
}

func (p *parser) flag(name string) bool {
	if p.peek() == name {
		p.i++
		return true
	}
	return false
}

// flags reads [S.] (tcpdump) or SYN,ACK (iptables) spelling.
func (p *parser) flags(t token) wire.Flags {
	if f, ok := parseFlagWord(t.s); ok {
		return f
	}
	p.fail(t.col, fmt.Sprintf("%q is not a set of TCP flags", t.s), "write them as tcpdump does, [S] [S.] [.] [P.] [F.] [R] [R.], or as SYN,ACK")
	return 0
}

// parseFlagWord reads tcpdump's bracketed letters or iptables' names.
func parseFlagWord(s string) (wire.Flags, bool) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return wire.ParseShort(s[1 : len(s)-1])
	}
	return wire.ParseFlags(s)
}

func (p *parser) parseRule() {
	const ex = "rule server in flags SYN dport 80 drop as nosyn"
	// Every packet is matched against the rules in turn.
	if p.rulesIn >= MaxRules {
		p.fail(p.toks[0].col, fmt.Sprintf("more than %d rules at once", MaxRules), "a lab needs a few rules; remove one before adding another")
	}
	p.rulesIn++
	h := p.host(p.word("a host", ex))
	d := p.word("in or out", ex)
	r := sim.Rule{Host: h}
	switch d.s {
	case "in":
		r.Dir = trace.In
	case "out":
		r.Dir = trace.Out
	default:
		p.fail(d.col, fmt.Sprintf("expected in or out, found %q", d.s), ex)
	}
	haveAction := false
	name := ""
	for p.more() {
		t := p.word("a match or an action", ex)
		if haveAction && t.s != "as" {
			p.fail(t.col, fmt.Sprintf("unexpected %q after the action", t.s), "matches come before the action; `as NAME` ends the line")
		}
		switch t.s {
		case "flags":
			v := p.word("flags", "flags SYN (exactly SYN) or flags SYN/SYN,ACK (SYN set, ACK clear)")
			val, mask := v.s, ""
			if i := strings.IndexByte(v.s, '/'); i >= 0 {
				val, mask = v.s[:i], v.s[i+1:]
			}
			fv := p.flags(token{s: val, col: v.col})
			fm := wire.Flags(0xff)
			if mask != "" {
				fm = p.flags(token{s: mask, col: v.col + len(val) + 1})
			}
			if fv&^fm != 0 {
				p.fail(v.col, fmt.Sprintf("flags %s are not all inside the mask %s", fv, fm), "VALUE/MASK: flags SYN/SYN,ACK")
			}
			r.FlagsValue, r.FlagsMask = fv, fm
		case "sport", "dport":
			port := p.port(p.word("a port", t.s+" 80"))
			if t.s == "sport" {
				r.SrcPort = port
			} else {
				r.DstPort = port
			}
		case "src", "dst":
			a := p.word("an address or prefix", t.s+" 10.0.0.0/24")
			pf, err := netip.ParsePrefix(a.s)
			if err != nil {
				// A host names one address: the one it and the rule's host
				// talk by (IPv6 when both have it); name the other to
				// match it.
				if o := p.hostDecl(a.s); o != nil {
					// The address the rule's host and the named one talk
					// by, as connect picks it.
					ad := p.familyOf(o, h, 0)
					pf = netip.PrefixFrom(ad, ad.BitLen())
				} else if ad, err2 := netip.ParseAddr(strings.Trim(a.s, "[]")); err2 == nil && !ad.Is4In6() && ad.Zone() == "" {
					pf = netip.PrefixFrom(ad, ad.BitLen())
				} else {
					p.fail(a.col, fmt.Sprintf("%q is not an address, prefix or host", a.s), t.s+" 10.0.0.0/24, "+t.s+" fd00::/64 or "+t.s+" client")
				}
			}
			if t.s == "src" {
				r.SrcAddr = pf.Masked()
			} else {
				r.DstAddr = pf.Masked()
			}
		case "skip":
			r.Skip = int(p.count(p.word("a count", "skip 2"), 0, math.MaxInt32, "skip"))
		case "count":
			r.Count = int(p.count(p.word("a count", "count 1"), 1, math.MaxInt32, "count"))
		case "probability":
			v := p.word("a probability", "probability 0.3")
			f, err := strconv.ParseFloat(v.s, 64)
			if err != nil || !(f > 0 && f <= 1) {
				p.fail(v.col, fmt.Sprintf("%q is not a probability in (0, 1]", v.s), "probability 0.3")
			}
			r.Probability = f
		case "drop", "reject", "duplicate":
			r.Action, _ = sim.ParseAction(t.s)
			haveAction = true
		case "delay":
			r.Action = sim.Delay
			r.Delay = p.duration(p.word("a delay", "delay 200ms"), false)
			if r.Delay == 0 {
				p.fail(t.col, "a delay rule needs a positive delay", "delay 200ms")
			}
			haveAction = true
		case "as":
			if !haveAction {
				p.fail(t.col, "the rule has no action before `as`", "end the rule with drop, reject, delay D or duplicate")
			}
			n := p.word("a rule name", "as nosyn")
			if !isIdent(n.s) {
				p.fail(n.col, fmt.Sprintf("%q is not a valid name", n.s), "a name starts with a letter")
			}
			if p.rules[n.s] {
				p.fail(n.col, fmt.Sprintf("a rule named %q is already installed", n.s), "remove it first or pick another name")
			}
			name = n.s
		default:
			// A rule still without its action most likely misspells one:
			// an action as near as any word is suggested first (the line
			// stops at its first error, so it gets one).
			actions := []string{"drop", "reject", "delay", "duplicate"}
			words := []string{"flags", "sport", "dport", "src", "dst", "skip", "count", "probability", "as"}
			if c := suggest(t.s, actions); c != "" && !haveAction && editDistance(t.s, c) <= editDistance(t.s, cmp.Or(suggest(t.s, words), c)) {
				p.fail(t.col, fmt.Sprintf("unknown rule word %q", t.s), fmt.Sprintf("did you mean %q?", c))
			}
			p.fail(t.col, fmt.Sprintf("unknown rule word %q", t.s), didYouMean(t.s, append(words, actions...)))
		}
	}
	if !haveAction {
		p.fail(p.endCol(), "the rule has no action", "end it with drop, reject, delay D or duplicate")
	}
	if err := r.Validate(); err != nil {
		p.fail(p.toks[0].col, err.Error(), ex)
	}
	if name != "" {
		p.rules[name] = true
		r.Label = name
	}
	s := p.step(StepRule)
	s.Host = h
	s.Rule = &RuleStep{Rule: r, Name: name}
}

func (p *parser) parseInject(host string) {
	const ex = "attacker: inject [S] from 10.0.0.66:1000 to server:80 count 100 every 10ms"
	in := &InjectStep{Window: -1, Count: 1}
	in.Flags = p.flags(p.word("TCP flags", ex))
	explicit := false
	var fromTok, toTok *token
	for p.more() {
		t := p.word("from, to, spoofing, seq, ack, win, data, count or every", ex)
		switch t.s {
		case "from", "to":
			w := p.word("ADDRESS:PORT", ex)
			if t.s == "from" {
				fromTok = &w
			} else {
				toTok = &w
			}
			explicit = true
		case "spoofing":
			v := p.word("HOST:NAME", "spoofing client:conn")
			h, n, ok := strings.Cut(v.s, ":")
			if !ok {
				p.fail(v.col, fmt.Sprintf("%q is not HOST:NAME", v.s), "spoofing client:conn sends as client's socket conn")
			}
			h = p.host(token{s: h, col: v.col})
			if _, ok := p.names[h][n]; !ok {
				p.fail(v.col+len(h)+1, fmt.Sprintf("no socket %q on %s", n, h), didYouMean(n, keysOf(p.names[h])))
			}
			in.SpoofHost, in.SpoofSock = h, n
		case "seq", "ack":
			v := p.value(p.word("a number or HOST:NAME.FIELD[+N]", "seq +1000, seq 12345, ack server:conn.isn+1"), in)
			if t.s == "seq" {
				in.Seq = v
			} else {
				in.Ack = v
			}
		case "win":
			in.Window = int(p.count(p.word("a window", "win 1024"), 0, 65535, "window"))
		case "data":
			d := p.next("a string", `data "x"`)
			if !d.quoted {
				p.fail(d.col, "expected a quoted string", `data "x"`)
			}
			in.Data = []byte(d.s)
		case "count":
			in.Count = int(p.count(p.word("a count", "count 100"), 1, MaxInject, "count"))
		case "every":
			in.Every = p.duration(p.word("a duration", "every 10ms"), false)
		default:
			p.fail(t.col, fmt.Sprintf("unexpected %q", t.s), ex)
		}
	}
	if explicit == (in.SpoofHost != "") {
		p.fail(p.toks[1].col, "inject needs either `from ADDR:PORT to ADDR:PORT` or `spoofing HOST:NAME`", ex)
	}
	if explicit && (fromTok == nil || toTok == nil) {
		p.fail(p.endCol(), "inject needs both `from` and `to`", ex)
	}
	if explicit {
		// The pair takes one family: IPv6 when every host named has it
		// and no IPv4 address is written, else IPv4.
		family := 6
		for _, w := range []*token{fromTok, toTok} {
			hostPart, _, _ := strings.Cut(w.s, ":")
			if h := p.hostDecl(hostPart); h != nil && !h.V6().IsValid() ||
				!strings.HasPrefix(w.s, "[") && p.hostDecl(hostPart) == nil {
				family = 4
			}
		}
		const why = "from and to take one address family"
		in.Src, in.Dst = p.targetOf(*fromTok, host, family, why), p.targetOf(*toTok, host, family, why)
		if me := p.hostDecl(host); me != nil && (in.Src.Addr().Is6() && !me.V6().IsValid() || in.Src.Addr().Is4() && !me.V4().IsValid()) {
			p.fail(fromTok.col, fmt.Sprintf("%s has no IPv%d address to send %v from", host, map[bool]int{true: 6, false: 4}[in.Src.Addr().Is6()], in.Src),
				"inject from a host of the packet's family")
		}
	}
	if in.Count > 1 && in.Every == 0 {
		p.fail(p.endCol(), "a count of segments needs `every D` with D above 0", "count 100 every 10ms")
	}
	if in.Count > 1 {
		p.reach(p.toks[0].col, p.span+time.Duration(in.Count-1)*in.Every)
	}
	if p.injected+in.Count > MaxInject {
		p.fail(p.toks[0].col, fmt.Sprintf("this line brings the segments injected to %d, more than the %d a scenario may inject", p.injected+in.Count, MaxInject),
			"a flood of a few thousand segments shows every effect")
	}
	p.injected += in.Count
	if in.SpoofHost != "" && in.Count > 1 {
		p.fail(p.toks[0].col, "a spoofed segment is sent once", "repeat the inject line, or use from/to for a flood")
	}
	s := p.step(StepInject)
	s.Host, s.Inject = host, in
}

// value reads 1234, +N / -N (relative to the spoofed socket's own next
// number), or HOST:NAME.FIELD[+N].
func (p *parser) value(t token, in *InjectStep) Value {
	s := t.s
	if s[0] == '+' || s[0] == '-' {
		off, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			p.fail(t.col, fmt.Sprintf("%q is not an offset", s), "+1000")
		}
		if in.SpoofHost == "" {
			p.fail(t.col, "a relative number needs `spoofing HOST:NAME` before it", "spoofing client:conn seq +1000")
		}
		return Value{Set: true, Host: in.SpoofHost, Sock: in.SpoofSock, Offset: off, Field: ""}
	}
	if s[0] >= '0' && s[0] <= '9' {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			p.fail(t.col, fmt.Sprintf("%q is not a 32-bit number", s), "")
		}
		return Value{Set: true, Const: uint32(v)}
	}
	ref, off := s, int64(0)
	if i := strings.IndexAny(s, "+-"); i > 0 {
		o, err := strconv.ParseInt(s[i:], 10, 64)
		if err != nil {
			p.fail(t.col+i, fmt.Sprintf("%q is not an offset", s[i:]), "server:conn.isn+1")
		}
		ref, off = s[:i], o
	}
	hn, rest, ok := strings.Cut(ref, ":")
	name, field, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		p.fail(t.col, fmt.Sprintf("%q is not HOST:NAME.FIELD", ref), "fields: isn, peer_isn, next, ack; e.g. attacker:probe.peer_isn+64001")
	}
	h := p.host(token{s: hn, col: t.col})
	if _, ok := p.names[h][name]; !ok {
		p.fail(t.col+len(hn)+1, fmt.Sprintf("no socket %q on %s", name, h), didYouMean(name, keysOf(p.names[h])))
	}
	fields := []string{"isn", "peer_isn", "next", "ack"}
	okf := false
	for _, f := range fields {
		okf = okf || f == field
	}
	if !okf {
		p.fail(t.col+len(hn)+len(name)+2, fmt.Sprintf("unknown field %q", field), didYouMean(field, fields))
	}
	return Value{Set: true, Host: h, Sock: name, Field: field, Offset: off}
}

var cmps = []string{"=", "!=", "<", "<=", ">", ">="}

func (p *parser) cmp(def string) string {
	for _, c := range cmps {
		if p.peek() == c {
			p.i++
			return c
		}
	}
	return def
}

func stateNames() []string {
	var out []string
	for _, s := range tcp.States() {
		out = append(out, s.String())
	}
	return out
}

func (p *parser) state(t token) string {
	st, ok := tcp.ParseState(t.s)
	if !ok {
		p.fail(t.col, fmt.Sprintf("unknown state %q", t.s), didYouMean(t.s, stateNames()))
	}
	return st.String()
}

func opByName(s string) (tcp.Op, bool) {
	for o := tcp.OpSocket; o <= tcp.OpSetOption; o++ {
		if o.String() == s {
			return o, true
		}
	}
	return 0, false
}

func (p *parser) parseCond(until bool) *Cond {
	const ex = "expect client: conn state ESTABLISHED"
	ht := p.word("`HOST:`", ex)
	if !strings.HasSuffix(ht.s, ":") {
		if p.hostDecl(ht.s) != nil {
			p.fail(ht.col+len(ht.s), "expected a colon after the host", fmt.Sprintf("%s: ...", ht.s))
		}
		p.fail(ht.col, fmt.Sprintf("expected `HOST:`, found %q", ht.s), ex)
	}
	c := &Cond{Pos: p.pos(ht.col), Host: p.host(token{s: strings.TrimSuffix(ht.s, ":"), col: ht.col}), Cmp: "="}
	subj := p.word("a socket name, count, counter or packets", ex)
	switch subj.s {
	case "count":
		c.Kind = CondCount
		st := p.word("a state or all", "count ESTABLISHED = 3")
		if st.s == "all" {
			c.State = "all"
		} else {
			c.State = p.state(st)
		}
		c.Cmp = p.cmp("=")
		c.N = p.count(p.word("a number", "count ESTABLISHED >= 3"), 0, math.MaxInt32, "count")
		return c
	case "counter":
		c.Kind = CondCounter
		n := p.word("a counter name", "counter ListenOverflows >= 1")
		ctr, ok := tcp.ParseCounter(n.s)
		if !ok {
			var names []string
			for _, k := range tcp.Counters() {
				names = append(names, k.String())
			}
			p.fail(n.col, fmt.Sprintf("unknown counter %q", n.s), didYouMean(n.s, names))
		}
		c.Counter = ctr.String()
		if p.peek() == "delta" {
			p.i++
			c.Delta = true
		}
		c.Cmp = p.cmp("=")
		c.N = p.count(p.word("a number", "counter ListenOverflows >= 1"), math.MinInt32, math.MaxInt64, "value")
		return c
	case "packets":
		c.Kind = CondPackets
		d := p.word("in or out", "packets out [S] = 7")
		switch d.s {
		case "in":
			c.Dir = trace.In
		case "out":
			c.Dir = trace.Out
		default:
			p.fail(d.col, fmt.Sprintf("expected in or out, found %q", d.s), "packets out [S] = 7")
		}
		c.Flags = p.flags(p.word("TCP flags", "packets out [S.] >= 3"))
		if p.peek() == "at" {
			if until {
				p.fail(p.toks[p.i].col, "`at` belongs on expect lines", "until waits for a count: until server: packets out [R] >= 1")
			}
			p.i++
			for p.more() {
				c.Times = append(c.Times, p.duration(p.word("a time", "at 0s 1s 3s"), true))
			}
			if len(c.Times) == 0 {
				p.fail(p.endCol(), "expected times", "packets out [S] at 0s 1s 3s 7s")
			}
			return c
		}
		c.Cmp = p.cmp("=")
		c.N = p.count(p.word("a number", "packets out [S] = 7"), 0, math.MaxInt32, "count")
		return c
	}
	// A socket.
	if _, ok := p.names[c.Host][subj.s]; !ok {
		cands := append(keysOf(p.names[c.Host]), "count", "counter", "packets")
		p.fail(subj.col, fmt.Sprintf("no socket named %q on %s", subj.s, c.Host), didYouMean(subj.s, cands))
	}
	c.Sock = subj.s
	what := p.word("state, path, entered, received or a call name", "conn state ESTABLISHED, conn connect = ETIMEDOUT")
	switch what.s {
	case "state":
		c.Kind = CondState
		c.State = p.state(p.word("a state", "state TIME_WAIT"))
		return c
	case "path":
		if until {
			p.fail(what.col, "path belongs on expect lines", "until client: conn state TIME_WAIT")
		}
		c.Kind = CondPath
		for p.more() {
			c.Path = append(c.Path, p.state(p.word("a state", "")))
		}
		if len(c.Path) == 0 {
			p.fail(p.endCol(), "expected the states", "path SYN_SENT ESTABLISHED FIN_WAIT1 FIN_WAIT2 TIME_WAIT")
		}
		return c
	case "entered":
		if until {
			p.fail(what.col, "entered belongs on expect lines", "until client: conn state CLOSED")
		}
		c.Kind = CondEntered
		c.State = p.state(p.word("a state", "entered CLOSED at 105s"))
		at := p.word("`at`", "entered CLOSED at 105s")
		if at.s != "at" {
			p.fail(at.col, fmt.Sprintf("expected `at`, found %q", at.s), "entered CLOSED at 105s")
		}
		c.Times = []time.Duration{p.duration(p.word("a time", "at 105s"), true)}
		return c
	case "received":
		c.Kind = CondReceived
		if p.more() && p.toks[p.i].quoted {
			s := p.toks[p.i].s
			c.Text = &s
			p.i++
			return c
		}
		c.Cmp = p.cmp("=")
		c.N = p.count(p.word("a byte count or a string", `received 4 or received "Hutu"`), 0, math.MaxInt64, "bytes")
		return c
	}
	op, ok := opByName(what.s)
	if !ok {
		var ops []string
		for o := tcp.OpSocket; o <= tcp.OpSetOption; o++ {
			ops = append(ops, o.String())
		}
		p.fail(what.col, fmt.Sprintf("unknown test %q", what.s), didYouMean(what.s, append([]string{"state", "path", "entered", "received"}, ops...)))
	}
	c.Kind, c.Op = CondCall, op
	const cex = "conn connect = ETIMEDOUT, conn write = 4, conn read = \"Hutu\", conn accept pending"
	t := p.word("= RESULT, pending or returned", cex)
	switch t.s {
	case "pending":
		c.Pending = true
		return c
	case "returned":
		c.Returned = true
		return c
	case "=":
	default:
		p.fail(t.col, fmt.Sprintf("unexpected %q", t.s), cex)
	}
	r := p.next("a result", cex)
	switch {
	case r.quoted:
		s := r.s
		c.Text = &s
	case r.s == "ok":
		// success, whatever the return value
	case r.s[0] == 'E':
		if _, ok := tcp.ParseErrno(r.s); !ok {
			var names []string
			for _, e := range tcp.Errnos() {
				names = append(names, e.Name())
			}
			p.fail(r.col, fmt.Sprintf("unknown errno %q", r.s), didYouMean(r.s, names))
		}
		c.Errno = r.s
	default:
		c.HasRet = true
		c.Ret = p.count(r, -1, math.MaxInt64, "result")
	}
	if p.peek() == "at" {
		p.i++
		c.Times = []time.Duration{p.duration(p.word("a time", "at 127s"), true)}
	}
	return c
}
