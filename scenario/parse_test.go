package scenario

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

const hosts = "host client 10.0.0.1\nhost server 10.0.0.2\n"

func TestParseSteps(t *testing.T) {
	src := hosts + `title t
explain one
explain two
set server tcp_synack_retries 2   # a comment
profile server windows-classic
rule client in flags [S.] sport 80 drop as nosynack
server: listen 80 backlog 2
server: accept
client: connect server:80 from 3333 nonblock as c
client: write c "Hu\x74u"
client: write c 100 bytes
repeat 3 client: connect 10.0.0.2:80 as d{i}
after 1500ms
remove rule nosynack
until client: c state ESTABLISHED within 5s
expect client: c connect = EINPROGRESS at 0s
expect server: counter TcpExt:ListenOverflows delta >= 1
expect client: packets out SYN at 0s 1s
client: inject [R] spoofing client:c seq +10
client: read c 10 peek nonblock
client: linger c 0s
client: keepalive c on idle 10s interval 5s count 3
note a note
part a part
expect client: c path SYN_SENT ESTABLISHED
`
	sc, err := Parse("t.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "t" || sc.Title != "t" || sc.Explain != "one\ntwo" || len(sc.Hosts) != 2 {
		t.Fatalf("header %+v", sc)
	}
	kinds := []StepKind{StepSet, StepProfile, StepRule, StepCall, StepCall, StepCall, StepCall, StepCall, StepCall,
		StepAfter, StepRemove, StepUntil, StepExpect, StepExpect, StepExpect, StepInject, StepCall, StepCall, StepCall,
		StepNote, StepPart, StepExpect}
	if len(sc.Steps) != len(kinds) {
		t.Fatalf("%d steps, want %d", len(sc.Steps), len(kinds))
	}
	for i, k := range kinds {
		if sc.Steps[i].Kind != k {
			t.Errorf("step %d (%s): kind %d, want %d", i, sc.Steps[i].Text, sc.Steps[i].Kind, k)
		}
	}
	s := sc.Steps
	if s[0].Value != "2" || s[0].Text != "set server tcp_synack_retries 2" {
		t.Errorf("set: %+v", s[0])
	}
	r := s[2].Rule
	if r.Rule.FlagsValue != wire.SYN|wire.ACK || r.Rule.FlagsMask != 0xff || r.Rule.SrcPort != 80 || r.Rule.Dir != trace.In || r.Name != "nosynack" {
		t.Errorf("rule %+v", r)
	}
	c := s[5].Call
	if c.Verb != VConnect || c.From != 3333 || !c.NonBlock || c.As != "c" || c.Target.String() != "10.0.0.2:80" {
		t.Errorf("connect %+v", c)
	}
	if string(s[6].Call.Data) != "Hutu" || len(s[7].Call.Data) != 100 {
		t.Errorf("writes %q %d", s[6].Call.Data, len(s[7].Call.Data))
	}
	if s[8].Call.Repeat != 3 || s[8].Call.As != "d{i}" {
		t.Errorf("repeat %+v", s[8].Call)
	}
	if s[9].Dur != 1500*time.Millisecond || s[11].Dur != 5*time.Second {
		t.Errorf("durations %v %v", s[9].Dur, s[11].Dur)
	}
	if e := s[12].Cond; e.Kind != CondCall || e.Op != tcp.OpConnect || e.Errno != "EINPROGRESS" || len(e.Times) != 1 {
		t.Errorf("expect call %+v", e)
	}
	if e := s[13].Cond; e.Counter != "ListenOverflows" || !e.Delta || e.Cmp != ">=" || e.N != 1 {
		t.Errorf("expect counter %+v", e)
	}
	if e := s[14].Cond; e.Flags != wire.SYN || len(e.Times) != 2 || e.Times[1] != time.Second {
		t.Errorf("expect packets %+v", e)
	}
	if in := s[15].Inject; in.Flags != wire.RST || in.SpoofHost != "client" || in.Seq.Offset != 10 {
		t.Errorf("inject %+v", in)
	}
	if c := s[16].Call; c.Max != 10 || !c.Peek || !c.NonBlock {
		t.Errorf("read %+v", c)
	}
	if c := s[18].Call; len(c.Keepalive) != 4 {
		t.Errorf("keepalive %+v", c.Keepalive)
	}
}

// TestParseErrors: each error names the line and column, says what was
// expected, and suggests the nearest valid name.
func TestParseErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{hosts + "client: conect server:80", `t:3:9: unknown call "conect" (hint: did you mean "connect"?)`},
		{hosts + "clinet: connect server:80", `t:3:1: unknown host "clinet" (hint: did you mean "client"?)`},
		{hosts + "set server tcp_synack_retry 3", `t:3:12: unknown setting "tcp_synack_retry" (hint: did you mean "tcp_synack_retries"?)`},
		{hosts + "set server tcp_synack_retries x", `t:3:31: tcp_synack_retries takes an integer`},
		{hosts + "after 2", `t:3:7: "2" is not a duration (hint: add a unit: 2s)`},
		{hosts + "client: write \"abc", `t:3:15: string not closed`},
		{hosts + "client: connect server:80\nexpect client: conn state ESTABLISHD", `t:4:27: unknown state "ESTABLISHD" (hint: did you mean "ESTABLISHED"?)`},
		{hosts + "expect server: counter ListenOverflow = 1", `t:3:24: unknown counter "ListenOverflow" (hint: did you mean "ListenOverflows"?)`},
		{hosts + "client: connect server:80\nexpect client: conn connect = ECONNREFUSE", `t:4:31: unknown errno "ECONNREFUSE" (hint: did you mean "ECONNREFUSED"?)`},
		{hosts + "client: connect server:80\nclient: connect server:81", `t:4:25: socket name "conn" is already used on client`},
		{hosts + "client: connect server:80 as a\nclient: connect server:80 as b\nclient: close", `t:5:13: close on client: which socket? (hint: name one of: a, b)`},
		{hosts + "client: close", `needs a socket, and none is defined yet`},
		{hosts + "rule server in dport 80", `t:3:23: the rule has no action`},
		{hosts + "rule server in dport 80 drop\nremove rule x", `t:4:13: no rule named "x"`},
		{hosts + "after 1s\nhost late 10.0.0.3", `t:4:1: hosts are declared before the first step`},
		{hosts + "expect client conn state CLOSED", `t:3:14: expected a colon after the host`},
		{hosts + "repeat 3 client: connect server:80", `repeated calls need distinct names (hint: put {i} in the name: as conn{i})`},
		{hosts + "expcet client: x", `t:3:1: unknown step "expcet" (hint: did you mean "expect"?)`},
		{hosts + "client: connect nowhere:80", `t:3:17: "nowhere" is neither a host nor an address`},
		{hosts + "client: connect server:0", `is not a port from 1 to 65535`},
		{"host a 10.0.0.1\nhost b 10.0.0.1", `t:2:8: address 10.0.0.1 already belongs to a`},
		{"host a 127.0.0.1", `is not a usable host address`},
		{"host a 10.0.0.1 profile windows-clasic", `t:1:25: unknown profile "windows-clasic" (hint: did you mean "windows-classic"?)`},
		{"# nothing\n", `the scenario declares no host`},
		{hosts + "rule server in flags SYN/ACK drop", `flags SYN are not all inside the mask ACK`},
		{hosts + "client: inject [S] count 3", `inject needs either`},
		{hosts + "client: inject [S] from client:1 to server:80 count 3", `a count of segments needs`},
		{hosts + "client: connect server:80\nclient: linger 1500ms", `t:4:16: SO_LINGER counts whole seconds`},
		{hosts + "server: listen 80\nserver: accept\nexpect server: conn read = \"x\" junk", `t:5:32: unexpected "junk"`},
		{hosts + "until client: count all = 0 within 0s", `within 0 can never be met`},
		{hosts + "after 20h\nuntil client: count all = 1 within 5h", `t:4:1: the scenario could run for 25h0m0s, more than the 24h0m0s limit`},
		{hosts + "client: connect server:80\nclient: inject [R] spoofing client:conn count 2 every 1ms", `a spoofed segment is sent once`},
		{hosts + "client: inject [S] from client:1 to server:80 count 100000 every 1h", `more than the 24h0m0s limit`},
	}
	for _, c := range cases {
		_, err := Parse("t", c.src)
		if err == nil {
			t.Errorf("%q: no error, want %s", c.src, c.want)
			continue
		}
		var el ErrorList
		if !errors.As(err, &el) || len(el) == 0 {
			t.Errorf("%q: error %T is not an ErrorList", c.src, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.src, err, c.want)
		}
	}
}

// TestParseManyErrors: the parser goes on after an error and reports every
// broken line.
// TestParseIndented: leading blanks change nothing.
func TestParseIndented(t *testing.T) {
	sc, err := Parse("t", "  host client 10.0.0.1\n\ttitle Hello world\n    note x\n  set client tcp_syn_retries 12 # c\n")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Title != "Hello world" || sc.Steps[0].Note != "x" || sc.Steps[1].Value != "12" || sc.Steps[1].Text != "set client tcp_syn_retries 12" {
		t.Fatalf("%q %+v", sc.Title, sc.Steps)
	}
}

func TestParseManyErrors(t *testing.T) {
	_, err := Parse("t", hosts+"bogus\nclient: nope\nafter 1\nafter 1s\n")
	var el ErrorList
	if !errors.As(err, &el) || len(el) != 3 {
		t.Fatalf("want 3 errors, got %v", err)
	}
	if el[0].Pos.Line != 3 || el[1].Pos.Line != 4 || el[2].Pos.Line != 5 {
		t.Fatalf("lines %v", err)
	}
}

// A broken line does not make the lines after it fail for its sake: a
// call that names a socket defines the name anyway, a host with a bad
// address is declared anyway, and an unknown word in a rule without its
// action is taken for the action it most likely misspells. Each broken
// line gives one error, at a column within it.
func TestParseNoCascade(t *testing.T) {
	for _, c := range []struct {
		src  string
		want []string
	}{
		{hosts + "server: listen 80\nclient: connect server\nuntil client: conn connect returned within 3s\nclient: write conn 10 bytes\nclient: close",
			[]string{`t:4:17: "server" is not an address and port`}},
		{hosts + "client: connect serve:80 as web\nclient: close web", []string{`t:3:17: "serve" is neither a host nor an address (hint: did you mean "server"?)`}},
		{"host client 10.0.0.1\nhost server 10.0.0.300\nserver: listen 80\nclient: connect server:80\nuntil client: conn connect returned within 3s",
			[]string{`t:2:13: "10.0.0.300" is not a usable host address`}},
		{hosts + "rule server in dport 80 dorp", []string{`t:3:25: unknown rule word "dorp" (hint: did you mean "drop"?)`}},
		{hosts + "rule server in dprot 80 drop", []string{`t:3:16: unknown rule word "dprot" (hint: did you mean "dport"?)`}},
		{hosts + "server: listen 80\nclient: connect server:80 as c1 bogus\nclient: connect server:81\nclient: close c1",
			[]string{`t:4:33: unexpected "bogus"`}},
		{"host client 10.0.0.1 profile linx\nhost server 10.0.0.2\nserver: listen 80\nclient: connect server:80\nclient: close",
			[]string{`t:1:30: unknown profile "linx"`}},
		{"host client 10.0.0.2\nhost server 10.0.0.2\nserver: listen 80\nclient: connect server:80\nclient: close",
			[]string{`t:2:13: address 10.0.0.2 already belongs to client`}},
		{"host client 10.0.0.1 extra\nhost server 10.0.0.2\nserver: listen 80\nclient: connect server:80",
			[]string{`t:1:22: unexpected "extra"`}},
		{hosts + "client: connect server:80\nclient: write \"ééééééééé\" x y",
			[]string{`t:4:36: unexpected "x"`}},
	} {
		_, err := Parse("t", c.src)
		var el ErrorList
		if !errors.As(err, &el) {
			t.Errorf("%q: %v", c.src, err)
			continue
		}
		if len(el) != len(c.want) {
			t.Errorf("%q: %d errors, want %d:\n%v", c.src, len(el), len(c.want), err)
			continue
		}
		for i, w := range c.want {
			if !strings.Contains(el[i].Error(), w) {
				t.Errorf("%q: error %d is %v, want %s", c.src, i, el[i], w)
			}
			line := strings.Split(c.src, "\n")[el[i].Pos.Line-1]
			if el[i].Pos.Col < 1 || el[i].Pos.Col > len(line) {
				t.Errorf("%q: column %d outside line %q", c.src, el[i].Pos.Col, line)
			}
		}
	}
}

func TestSuggest(t *testing.T) {
	for _, c := range [][3]string{
		{"conect", "connect", ""}, {"ListenOverflow", "ListenOverflows", ""}, {"zzzzzz", "", ""},
		{"overflows", "ListenOverflows", ""}, {"lsiten", "listen", ""}, {"cloes", "close", ""},
	} {
		got := suggest(c[0], []string{"connect", "close", "ListenOverflows", "listen"})
		if got != c[1] {
			t.Errorf("suggest(%q) = %q, want %q", c[0], got, c[1])
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, n := range Names() {
		src, _ := BuiltinSource(n)
		f.Add(src)
	}
	f.Add(hosts + "client: inject [S] from 10.0.0.9:65535 to server:80 count 3 every 1ms")
	f.Add(hosts + "expect client: x.y.z seq ack attacker:probe.peer_isn+-1")
	f.Add(hosts + "client: inject [R] seq client:conn.isn+99999999999999999999")
	f.Add("host a 10.0.0.1\nrepeat 2 a: connect a:1 as x{i}{i}\nrepeat 2 a: close x{i}{i}\n\"")
	f.Fuzz(func(t *testing.T, src string) {
		sc, err := Parse("fuzz", src)
		if err != nil {
			var el ErrorList
			if !errors.As(err, &el) || len(el) == 0 {
				t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
			}
			for _, e := range el {
				if e.Pos.Line < 1 || e.Pos.Col < 1 || e.Msg == "" {
					t.Fatalf("error without a place or a message: %+v", e)
				}
			}
			return
		}
		lines := strings.Count(src, "\n") + 1
		for _, s := range sc.Steps {
			if s.Pos.Line < 1 || s.Pos.Line > lines {
				t.Fatalf("step at line %d of %d", s.Pos.Line, lines)
			}
		}
	})
}
