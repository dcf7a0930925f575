package sim

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

func TestActionNames(t *testing.T) {
	for a, want := range map[Action]string{Drop: "drop", Reject: "reject", Delay: "delay", Duplicate: "duplicate", Action(7): "Action(7)"} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", uint8(a), got, want)
		}
	}
	for _, a := range []Action{Drop, Reject, Delay, Duplicate} {
		got, ok := ParseAction(a.String())
		if !ok || got != a {
			t.Errorf("ParseAction(%q) = %v, %v; want %v, true", a.String(), got, ok, a)
		}
	}
	for _, s := range []string{"", "DROP", "accept", "Action(7)"} {
		if _, ok := ParseAction(s); ok {
			t.Errorf("ParseAction(%q) accepted", s)
		}
	}
}

func TestRuleMatches(t *testing.T) {
	seg := func(f wire.Flags, src string, sport uint16, dst string, dport uint16) *wire.Segment {
		return &wire.Segment{Src: netip.MustParseAddr(src), SrcPort: sport, Dst: netip.MustParseAddr(dst), DstPort: dport, Flags: f}
	}
	c2s := func(f wire.Flags) *wire.Segment { return seg(f, "10.0.0.1", 40000, "10.0.0.2", 80) }
	all := wire.Flags(0xff)
	tests := []struct {
		name string
		r    Rule
		seg  *wire.Segment
		want bool
	}{
		{"zero rule matches a SYN", Rule{}, c2s(wire.SYN), true},
		{"zero rule matches a flagless packet", Rule{}, c2s(0), true},
		{"zero rule matches a RST", Rule{}, c2s(wire.RST | wire.ACK), true},

		// --tcp-flags SYN,ACK SYN,ACK
		{"SYN,ACK/SYN,ACK vs SYN", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK}, c2s(wire.SYN), false},
		{"SYN,ACK/SYN,ACK vs SYN,ACK", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK}, c2s(wire.SYN | wire.ACK), true},
		{"SYN,ACK/SYN,ACK vs SYN,ACK,ECE (outside mask)", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK}, c2s(wire.SYN | wire.ACK | wire.ECE), true},
		{"SYN,ACK/SYN,ACK vs ACK", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK}, c2s(wire.ACK), false},
		// --tcp-flags SYN,ACK SYN: a first SYN, not a SYN-ACK (--syn is SYN,RST,ACK,FIN SYN)
		{"SYN/SYN,ACK vs SYN", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN}, c2s(wire.SYN), true},
		{"SYN/SYN,ACK vs SYN,ECE,CWR", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN}, c2s(wire.SYN | wire.ECE | wire.CWR), true},
		{"SYN/SYN,ACK vs SYN,ACK", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN}, c2s(wire.SYN | wire.ACK), false},
		// --tcp-flags SYN NONE: everything but SYNs
		{"NONE/SYN vs ACK", Rule{FlagsMask: wire.SYN}, c2s(wire.ACK), true},
		{"NONE/SYN vs SYN", Rule{FlagsMask: wire.SYN}, c2s(wire.SYN), false},
		{"RST/RST vs RST,ACK", Rule{FlagsMask: wire.RST, FlagsValue: wire.RST}, c2s(wire.RST | wire.ACK), true},
		// exact flags: --tcp-flags ALL X
		{"exact SYN vs SYN", Rule{FlagsMask: all, FlagsValue: wire.SYN}, c2s(wire.SYN), true},
		{"exact SYN vs SYN,ECE,CWR", Rule{FlagsMask: all, FlagsValue: wire.SYN}, c2s(wire.SYN | wire.ECE | wire.CWR), false},
		{"exact SYN vs SYN,ACK", Rule{FlagsMask: all, FlagsValue: wire.SYN}, c2s(wire.SYN | wire.ACK), false},
		{"exact ACK vs ACK", Rule{FlagsMask: all, FlagsValue: wire.ACK}, c2s(wire.ACK), true},
		{"exact ACK vs PSH,ACK", Rule{FlagsMask: all, FlagsValue: wire.ACK}, c2s(wire.PSH | wire.ACK), false},
		{"exact ACK vs FIN,ACK", Rule{FlagsMask: all, FlagsValue: wire.ACK}, c2s(wire.FIN | wire.ACK), false},
		{"exact NONE vs null scan", Rule{FlagsMask: all}, c2s(0), true},
		{"exact NONE vs ACK", Rule{FlagsMask: all}, c2s(wire.ACK), false},
		{"exact XMAS", Rule{FlagsMask: all, FlagsValue: wire.FIN | wire.PSH | wire.URG}, c2s(wire.FIN | wire.PSH | wire.URG), true},

		// ports
		{"sport 80 vs 80", Rule{SrcPort: 80}, seg(wire.ACK, "10.0.0.2", 80, "10.0.0.1", 40000), true},
		{"sport 80 vs 81", Rule{SrcPort: 80}, seg(wire.ACK, "10.0.0.2", 81, "10.0.0.1", 40000), false},
		{"sport 80 vs dport 80", Rule{SrcPort: 80}, c2s(wire.ACK), false},
		{"dport 80 vs 80", Rule{DstPort: 80}, c2s(wire.ACK), true},
		{"dport 80 vs 8080", Rule{DstPort: 80}, seg(wire.ACK, "10.0.0.1", 40000, "10.0.0.2", 8080), false},
		{"dport 80 vs sport 80", Rule{DstPort: 80}, seg(wire.ACK, "10.0.0.2", 80, "10.0.0.1", 40000), false},
		{"sport and dport", Rule{SrcPort: 40000, DstPort: 80}, c2s(wire.ACK), true},
		{"sport and dport, one wrong", Rule{SrcPort: 40001, DstPort: 80}, c2s(wire.ACK), false},

		// address prefixes
		{"src /24 inside", Rule{SrcAddr: netip.MustParsePrefix("10.0.0.0/24")}, c2s(wire.SYN), true},
		{"src /24 outside", Rule{SrcAddr: netip.MustParsePrefix("10.0.1.0/24")}, c2s(wire.SYN), false},
		{"src /32 exact", Rule{SrcAddr: netip.MustParsePrefix("10.0.0.1/32")}, c2s(wire.SYN), true},
		{"src /32 other", Rule{SrcAddr: netip.MustParsePrefix("10.0.0.3/32")}, c2s(wire.SYN), false},
		{"src /0", Rule{SrcAddr: netip.MustParsePrefix("0.0.0.0/0")}, c2s(wire.SYN), true},
		{"src /31 boundary", Rule{SrcAddr: netip.MustParsePrefix("10.0.0.2/31")}, c2s(wire.SYN), false},
		{"src /30 boundary", Rule{SrcAddr: netip.MustParsePrefix("10.0.0.0/30")}, c2s(wire.SYN), true},
		{"dst /24 inside", Rule{DstAddr: netip.MustParsePrefix("10.0.0.0/24")}, c2s(wire.SYN), true},
		{"dst /32 is the source", Rule{DstAddr: netip.MustParsePrefix("10.0.0.1/32")}, c2s(wire.SYN), false},
		{"dst /32 exact", Rule{DstAddr: netip.MustParsePrefix("10.0.0.2/32")}, c2s(wire.SYN), true},
		{"dst 192.168/16", Rule{DstAddr: netip.MustParsePrefix("192.168.0.0/16")}, c2s(wire.SYN), false},

		// everything at once
		{"all fields match", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN, SrcPort: 40000, DstPort: 80,
			SrcAddr: netip.MustParsePrefix("10.0.0.0/24"), DstAddr: netip.MustParsePrefix("10.0.0.2/32")}, c2s(wire.SYN), true},
		{"all fields but the flags match", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN, SrcPort: 40000, DstPort: 80,
			SrcAddr: netip.MustParsePrefix("10.0.0.0/24"), DstAddr: netip.MustParsePrefix("10.0.0.2/32")}, c2s(wire.SYN | wire.ACK), false},
		{"all fields but the destination match", Rule{FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN, SrcPort: 40000, DstPort: 80,
			SrcAddr: netip.MustParsePrefix("10.0.0.0/24"), DstAddr: netip.MustParsePrefix("10.0.0.3/32")}, c2s(wire.SYN), false},
	}
	for _, tc := range tests {
		if got := tc.r.Matches(tc.seg); got != tc.want {
			t.Errorf("%s: matches(%s) = %v, want %v", tc.name, tc.seg.String(), got, tc.want)
		}
	}
}

func TestRuleValidate(t *testing.T) {
	ok := []Rule{
		{Host: "h"},
		{Host: "h", Dir: trace.Out, FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK, Action: Reject},
		{Host: "h", FlagsMask: 0xff, FlagsValue: wire.FIN | wire.PSH | wire.URG},
		{Host: "h", Skip: 2, Count: 1, Probability: 1, Action: Duplicate},
		{Host: "h", Probability: 0.5},
		{Host: "h", Action: Delay, Delay: time.Nanosecond},
	}
	for _, r := range ok {
		if err := r.Validate(); err != nil {
			t.Errorf("Validate(%s) = %v, want nil", r.Summary(), err)
		}
	}
	bad := []struct {
		r    Rule
		want string // a substring of the error
	}{
		{Rule{}, "no host"},
		{Rule{Host: "h", FlagsMask: wire.SYN, FlagsValue: wire.SYN | wire.ACK}, "outside the mask"},
		{Rule{Host: "h", FlagsValue: wire.RST}, "outside the mask"},
		{Rule{Host: "h", Skip: -1}, "negative"},
		{Rule{Host: "h", Count: -1}, "negative"},
		{Rule{Host: "h", Probability: -0.1}, "probability"},
		{Rule{Host: "h", Probability: 1.5}, "probability"},
		{Rule{Host: "h", Action: Delay}, "positive delay"},
		{Rule{Host: "h", Action: Delay, Delay: -time.Second}, "positive delay"},
		{Rule{Host: "h", Action: Action(4)}, "unknown action"},
		{Rule{Host: "h", Action: Action(200)}, "unknown action"},
	}
	for _, tc := range bad {
		err := tc.r.Validate()
		if err == nil {
			t.Errorf("Validate(%+v) = nil, want an error about %q", tc.r, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %q, want it to mention %q", tc.r, err, tc.want)
		}
	}
}

func TestRuleSummary(t *testing.T) {
	tests := []struct {
		r    Rule
		want string
	}{
		{Rule{Host: "server", Dir: trace.In, FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK, SrcPort: 80, Action: Drop},
			"server in flags SYN,ACK/SYN,ACK sport 80 drop"},
		{Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Reject},
			"client out flags SYN reject"},
		{Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, Action: Drop},
			"client out flags NONE drop"},
		{Rule{Host: "server", Dir: trace.In, FlagsMask: wire.SYN, Action: Drop},
			"server in flags NONE/SYN drop"},
		{Rule{Host: "server", Action: Duplicate}, "server in duplicate"},
		{Rule{Host: "server", DstPort: 80, Action: Drop}, "server in dport 80 drop"},
		{Rule{Host: "c", Dir: trace.Out, FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN,
			SrcAddr: netip.MustParsePrefix("10.0.0.0/24"), SrcPort: 1234,
			DstAddr: netip.MustParsePrefix("10.0.0.2/32"), DstPort: 80,
			Skip: 2, Count: 1, Probability: 0.5, Action: Delay, Delay: 250 * time.Millisecond},
			"c out flags SYN/SYN,ACK src 10.0.0.0/24 sport 1234 dst 10.0.0.2/32 dport 80 skip 2 count 1 probability 0.5 delay 250ms"},
		// A probability of 1 (or 0, the zero value) means every packet.
		{Rule{Host: "s", Probability: 1, Action: Drop}, "s in drop"},
		{Rule{Host: "s", Dir: trace.Out, Action: Delay, Delay: 2 * time.Second}, "s out delay 2s"},
		// The label does not change the summary.
		{Rule{Host: "s", Label: "my rule", Action: Reject}, "s in reject"},
	}
	for _, tc := range tests {
		if got := tc.r.Summary(); got != tc.want {
			t.Errorf("Summary() = %q, want %q", got, tc.want)
		}
	}
}

func TestAddRemoveRules(t *testing.T) {
	l := newLinuxLab(t)
	n := l.n
	r1 := Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Drop}
	id1, err := n.AddRule(r1)
	if err != nil || id1 != 1 {
		t.Fatalf("AddRule = %d, %v; want 1, nil", id1, err)
	}
	if r1.ID() != 0 {
		t.Errorf("AddRule changed the caller's rule: ID %d", r1.ID())
	}
	// Invalid rules and rules for unknown hosts are refused without using
	// an ID.
	if _, err := n.AddRule(Rule{Host: "nobody"}); err == nil {
		t.Error("AddRule for an unknown host succeeded")
	}
	if _, err := n.AddRule(Rule{Host: "server", Action: Delay}); err == nil {
		t.Error("AddRule of an invalid rule succeeded")
	}
	id2 := l.addRule(Rule{Host: "client", Dir: trace.Out, Label: "second", Action: Reject})
	if id2 != 2 {
		t.Errorf("second rule ID = %d, want 2", id2)
	}
	rules := n.Rules()
	if len(rules) != 2 || rules[0].ID() != 1 || rules[1].ID() != 2 || rules[1].Label != "second" || rules[0].Host != "server" {
		t.Fatalf("Rules() = %+v", rules)
	}
	// Rules returns copies.
	rules[0].Action = Duplicate
	if n.Rules()[0].Action != Drop {
		t.Error("Rules() exposes the installed rules")
	}
	if err := n.RemoveRule(1); err != nil {
		t.Fatalf("RemoveRule(1): %v", err)
	}
	if err := n.RemoveRule(1); err == nil {
		t.Error("RemoveRule(1) twice succeeded")
	}
	if err := n.RemoveRule(42); err == nil {
		t.Error("RemoveRule(42) succeeded")
	}
	if rules := n.Rules(); len(rules) != 1 || rules[0].ID() != 2 {
		t.Fatalf("after removal Rules() = %+v", rules)
	}
	id3 := l.addRule(Rule{Host: "server", Action: Drop})
	if id3 != 3 {
		t.Errorf("IDs are reused: got %d, want 3", id3)
	}

	got := l.rec.Filter(trace.KindRule)
	want := []string{
		"0.000000 server rule added #1 server in dport 80 drop",
		"0.000000 client rule added #2 client out reject",
		"0.000000 server rule removed #1 server in dport 80 drop",
		"0.000000 server rule added #3 server in drop",
	}
	if len(got) != len(want) {
		t.Fatalf("rule events = %v, want %v", got, want)
	}
	for i := range want {
		if s := got[i].String(); s != want[i] {
			t.Errorf("rule event %d = %q, want %q", i, s, want[i])
		}
	}
}

// TestFlagsRuleInNetwork drops only SYN-ACKs at the client (--tcp-flags
// SYN,ACK SYN,ACK), once: the client's SYN retransmission at 1 s gets a
// fresh SYN-ACK and the connection completes at 1.002 s.
func TestFlagsRuleInNetwork(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.In, FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN | wire.ACK, Count: 1, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(5 * time.Second)

	synacks := l.packets("client", trace.In, isFlags(wire.SYN|wire.ACK))
	// At 1.001 s the server's SYN-ACK timer and the retransmitted SYN
	// each send one (tcp_check_req resends on a duplicate SYN).
	if got, want := verdicts(synacks), []string{"drop", "pass", "pass"}; fmt.Sprint(got) != fmt.Sprint(want) {
		l.dump()
		t.Fatalf("SYN-ACK verdicts at the client = %v, want %v", got, want)
	}
	if got, want := times(synacks), secs(0.002, 1.002, 1.002); !eqDur(got, want) {
		t.Errorf("SYN-ACKs reached the client at %v, want %v", got, want)
	}
	for _, e := range l.packets("client", trace.In, nil) {
		if e.Packet.Segment.Flags != wire.SYN|wire.ACK && e.Packet.Verdict != trace.VerdictPass {
			t.Errorf("rule acted on a packet that is not a SYN-ACK: %s", e.String())
		}
	}
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].Call.Errno != "" || c[0].At != 1002*time.Millisecond {
		l.dump()
		t.Fatalf("connect = %v, want success at 1.002 s", c)
	}
	if h := l.n.Rules()[0].Hits(); h != 1 {
		t.Errorf("rule Hits = %d, want 1", h)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestExactFlagsRuleInNetwork drops the client's pure ACKs only (--tcp-flags
// ALL ACK): the data segment (PSH,ACK) still reaches the server and
// completes its handshake.
func TestExactFlagsRuleInNetwork(t *testing.T) {
	l := newLinuxLab(t)
	lfd := l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.ACK, Action: Drop})
	fd, _ := l.connect("client", serverAP)
	l.n.RunFor(10 * time.Millisecond)
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: fd, Data: []byte("hello")})
	l.n.RunFor(10 * time.Millisecond)

	for _, e := range l.packets("client", trace.Out, nil) {
		want := trace.VerdictPass
		if e.Packet.Segment.Flags == wire.ACK {
			want = trace.VerdictDrop
		}
		if e.Packet.Verdict != want {
			t.Errorf("verdict %q for %s, want %q", e.Packet.Verdict, e.String(), want)
		}
	}
	if n := len(l.packets("client", trace.Out, isFlags(wire.ACK))); n != 1 {
		t.Errorf("%d pure ACKs from the client, want 1 (the handshake's)", n)
	}
	data := l.packets("server", trace.In, hasData)
	if len(data) != 1 || data[0].Packet.Segment.Flags != wire.PSH|wire.ACK {
		l.dump()
		t.Fatalf("data at the server: %v", data)
	}
	a := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd, NonBlock: true})
	if a.Err != tcp.OK {
		t.Fatalf("accept after the data segment: %v", a.Err)
	}
	r := l.do("server", tcp.Call{Op: tcp.OpRead, FD: tcp.FD(a.Ret), NonBlock: true})
	if string(r.Data) != "hello" {
		t.Errorf("server read %q, want \"hello\"", r.Data)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestPortAndAddressRules installs non-matching and matching rules of every
// match field and checks which one acts on a handshake.
func TestPortAndAddressRules(t *testing.T) {
	type tc struct {
		name   string
		rule   Rule
		acts   bool // on the client's SYN (out) or the server's input
		client bool // the rule is on the client side (out) or the server (in)
	}
	tests := []tc{
		{"server dport 80", Rule{Host: "server", Dir: trace.In, DstPort: 80}, true, false},
		{"server dport 81", Rule{Host: "server", Dir: trace.In, DstPort: 81}, false, false},
		{"server sport 80 (its own port)", Rule{Host: "server", Dir: trace.In, SrcPort: 80}, false, false},
		{"client out dport 80", Rule{Host: "client", Dir: trace.Out, DstPort: 80}, true, true},
		{"client out sport 80", Rule{Host: "client", Dir: trace.Out, SrcPort: 80}, false, true},
		{"client in dport 80 (wrong direction)", Rule{Host: "client", Dir: trace.In, DstPort: 80}, false, true},
		{"server src 10.0.0.0/24", Rule{Host: "server", Dir: trace.In, SrcAddr: netip.MustParsePrefix("10.0.0.0/24")}, true, false},
		{"server src 10.0.0.1/32", Rule{Host: "server", Dir: trace.In, SrcAddr: netip.MustParsePrefix("10.0.0.1/32")}, true, false},
		{"server src 10.0.0.3/32", Rule{Host: "server", Dir: trace.In, SrcAddr: netip.MustParsePrefix("10.0.0.3/32")}, false, false},
		{"server src 10.1.0.0/16", Rule{Host: "server", Dir: trace.In, SrcAddr: netip.MustParsePrefix("10.1.0.0/16")}, false, false},
		{"client dst 10.0.0.2/32", Rule{Host: "client", Dir: trace.Out, DstAddr: netip.MustParsePrefix("10.0.0.2/32")}, true, true},
		{"client dst 10.0.0.128/25", Rule{Host: "client", Dir: trace.Out, DstAddr: netip.MustParsePrefix("10.0.0.128/25")}, false, true},
		{"client src and dst", Rule{Host: "client", Dir: trace.Out, SrcAddr: netip.MustParsePrefix("10.0.0.1/32"), DstAddr: netip.MustParsePrefix("10.0.0.0/8"), DstPort: 80}, true, true},
		{"client src and dst, wrong dport", Rule{Host: "client", Dir: trace.Out, SrcAddr: netip.MustParsePrefix("10.0.0.1/32"), DstAddr: netip.MustParsePrefix("10.0.0.0/8"), DstPort: 443}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLinuxLab(t)
			l.listen("server", 80, 5)
			r := tc.rule
			r.Action = Drop
			r.Label = "under test"
			l.addRule(r)
			l.connect("client", serverAP)
			l.n.RunFor(500 * time.Millisecond)
			var first trace.Event
			if tc.client {
				first = l.packets("client", trace.Out, nil)[0]
			} else {
				first = l.packets("server", trace.In, nil)[0]
			}
			if first.Packet.Segment.Flags != wire.SYN {
				t.Fatalf("first packet is not the SYN: %s", first.String())
			}
			acted := first.Packet.Verdict == trace.VerdictDrop
			if acted != tc.acts {
				t.Fatalf("rule %q acted on the SYN: %v, want %v (%s)", r.Summary(), acted, tc.acts, first.String())
			}
			if acted && first.Packet.Rule != "under test" {
				t.Errorf("packet names rule %q, want the label", first.Packet.Rule)
			}
			connected := len(l.calls("client", "connect")) == 1
			if connected == tc.acts {
				t.Errorf("connected within 500 ms: %v, want %v", connected, !tc.acts)
			}
			checkTaps(t, l.n, l.rec.Events)
		})
	}
}

// TestSkipCountThirdSYN drops only the third SYN a server receives (Skip 2,
// Count 1), with crafted SYNs from five source ports.
func TestSkipCountThirdSYN(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 16)
	l.addRule(Rule{Host: "server", Dir: trace.In, FlagsMask: wire.SYN | wire.ACK, FlagsValue: wire.SYN, Skip: 2, Count: 1, Action: Drop})
	for i := range 5 {
		seg := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: uint16(5000 + i), DstPort: 80, Seq: 1000, Flags: wire.SYN, Window: 1000}
		if err := l.n.InjectAt(time.Duration(i)*time.Millisecond, "client", seg); err != nil {
			t.Fatal(err)
		}
	}
	l.n.RunFor(100 * time.Millisecond)
	in := l.packets("server", trace.In, isFlags(wire.SYN))
	if got, want := fmt.Sprint(verdicts(in)), "[pass pass drop pass pass]"; got != want {
		l.dump()
		t.Fatalf("verdicts of the SYNs = %s, want %s", got, want)
	}
	if in[2].Packet.Segment.SrcPort != 5002 {
		t.Errorf("dropped SYN came from port %d, want 5002", in[2].Packet.Segment.SrcPort)
	}
	if h := l.n.Rules()[0].Hits(); h != 1 {
		t.Errorf("Hits = %d, want 1", h)
	}
	// The server answered the four others; the client has no socket and
	// resets them.
	synacks := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if len(synacks) != 4 {
		t.Errorf("%d SYN-ACKs, want 4", len(synacks))
	}
	for _, e := range synacks {
		if e.Packet.Segment.DstPort == 5002 {
			t.Errorf("SYN-ACK for the dropped SYN: %s", e.String())
		}
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestCountFirstTwoSYNs drops the first two SYNs (Count 2): the client's
// third SYN at 3 s gets through and connect returns at 3.002 s.
func TestCountFirstTwoSYNs(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "server", Dir: trace.In, FlagsMask: 0xff, FlagsValue: wire.SYN, Count: 2, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(10 * time.Second)
	in := l.packets("server", trace.In, isFlags(wire.SYN))
	if got, want := fmt.Sprint(verdicts(in)), "[drop drop pass]"; got != want {
		l.dump()
		t.Fatalf("SYN verdicts = %s, want %s", got, want)
	}
	if got, want := times(in), secs(0.001, 1.001, 3.001); !eqDur(got, want) {
		t.Errorf("SYNs at the server at %v, want %v", got, want)
	}
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].Call.Errno != "" || c[0].At != 3002*time.Millisecond {
		t.Fatalf("connect: %v, want success at 3.002 s", c)
	}
	checkTaps(t, l.n, l.rec.Events)
}

// TestSkipLetsFirstThrough drops every SYN but the first two (Skip 2, no
// Count) on the client's output.
func TestSkipLetsFirstThrough(t *testing.T) {
	l := newLinuxLab(t)
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Skip: 2, Action: Drop})
	// Nobody listens: the first two SYNs are answered by RST and fail
	// connect at once; use crafted SYNs to the unowned address instead.
	for i := range 6 {
		seg := wire.Segment{Src: clientAddr, Dst: netip.MustParseAddr("10.0.0.77"), SrcPort: uint16(6000 + i), DstPort: 80, Flags: wire.SYN}
		if err := l.n.Inject("client", seg); err != nil {
			t.Fatal(err)
		}
	}
	l.n.RunFor(time.Millisecond)
	out := l.packets("client", trace.Out, nil)
	if got, want := fmt.Sprint(verdicts(out)), "[pass pass drop drop drop drop]"; got != want {
		t.Fatalf("verdicts = %s, want %s", got, want)
	}
	for i, e := range out {
		if !e.Packet.Crafted {
			t.Errorf("packet %d not marked crafted", i)
		}
		if (i < 2) != e.Packet.OnWire {
			t.Errorf("packet %d OnWire = %v", i, e.Packet.OnWire)
		}
		if i < 2 && e.Packet.Lost == "" {
			t.Errorf("packet to 10.0.0.77 not marked Lost: %s", e.String())
		}
	}
	if h := l.n.Rules()[0].Hits(); h != 4 {
		t.Errorf("Hits = %d, want 4", h)
	}
}

// TestFirstRuleDecides: rules of a host are tried in order; the first that
// acts decides, and later rules do not count the packet.
func TestFirstRuleDecides(t *testing.T) {
	l := newLinuxLab(t)
	l.addRule(Rule{Host: "client", Dir: trace.Out, Count: 2, Label: "first", Action: Drop})
	l.addRule(Rule{Host: "client", Dir: trace.Out, Skip: 1, Count: 1, Label: "second", Action: Drop})
	for i := range 5 {
		seg := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: uint16(7000 + i), DstPort: 9, Flags: wire.ACK, Ack: 1}
		if err := l.n.Inject("client", seg); err != nil {
			t.Fatal(err)
		}
	}
	l.n.RunFor(time.Millisecond)
	out := l.packets("client", trace.Out, nil)
	var got []string
	for _, e := range out {
		got = append(got, e.Packet.Verdict+":"+e.Packet.Rule)
	}
	// Packets 1 and 2 go to "first"; "second" sees packet 3 first (skipped)
	// and drops packet 4; packet 5 passes.
	want := "[drop:first drop:first pass: drop:second pass:]"
	if fmt.Sprint(got) != want {
		t.Fatalf("verdicts = %v, want %s", got, want)
	}
	rules := l.n.Rules()
	if rules[0].Hits() != 2 || rules[1].Hits() != 1 {
		t.Errorf("Hits = %d, %d; want 2, 1", rules[0].Hits(), rules[1].Hits())
	}
}

// probabilityRun sends count crafted packets through an output rule of
// probability p and returns the verdicts.
func probabilityRun(t *testing.T, seed uint64, p float64, count int) []bool {
	t.Helper()
	n := New(Config{Seed: seed})
	if _, err := n.AddHost("a", clientAddr, tcp.Linux()); err != nil {
		t.Fatal(err)
	}
	var dropped []bool
	n.SetSink(func(e trace.Event) {
		if e.Kind == trace.KindPacket && e.Packet.Dir == trace.Out {
			dropped = append(dropped, e.Packet.Verdict == trace.VerdictDrop)
		}
	})
	if _, err := n.AddRule(Rule{Host: "a", Dir: trace.Out, Probability: p, Action: Drop}); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddr("10.0.0.200")
	for i := range count {
		seg := wire.Segment{Src: clientAddr, Dst: dst, SrcPort: 1000, DstPort: 80, Seq: wire.Seq(i), Flags: wire.ACK}
		if err := n.InjectAt(time.Duration(i)*time.Microsecond, "a", seg); err != nil {
			t.Fatal(err)
		}
	}
	n.RunFor(time.Duration(count) * time.Microsecond)
	if len(dropped) != count {
		t.Fatalf("%d packets seen, want %d", len(dropped), count)
	}
	return dropped
}

func TestProbability(t *testing.T) {
	const count = 20000
	for _, p := range []float64{0.1, 0.25, 0.5, 0.9} {
		a := probabilityRun(t, 7, p, count)
		b := probabilityRun(t, 7, p, count)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("p=%v: the same seed dropped different packets", p)
		}
		c := probabilityRun(t, 8, p, count)
		if fmt.Sprint(a) == fmt.Sprint(c) {
			t.Errorf("p=%v: seeds 7 and 8 dropped exactly the same packets", p)
		}
		drops := 0
		for _, d := range a {
			if d {
				drops++
			}
		}
		share := float64(drops) / count
		// The standard deviation of the share is at most 0.0036 here;
		// allow five of them.
		if share < p-0.018 || share > p+0.018 {
			t.Errorf("p=%v: share dropped %.4f", p, share)
		}
	}
	// 0 (the zero value) and 1 mean every packet.
	for _, p := range []float64{0, 1} {
		for i, d := range probabilityRun(t, 7, p, 500) {
			if !d {
				t.Fatalf("p=%v: packet %d passed", p, i)
			}
		}
	}
}

// TestProbabilityWithCount: Count counts the packets the rule acted on, not
// those the dice spared.
func TestProbabilityWithCount(t *testing.T) {
	n := New(Config{Seed: 3})
	n.AddHost("a", clientAddr, tcp.Linux())
	n.AddRule(Rule{Host: "a", Dir: trace.Out, Probability: 0.5, Count: 10, Action: Drop})
	for i := range 1000 {
		seg := wire.Segment{Src: clientAddr, Dst: netip.MustParseAddr("10.0.0.200"), SrcPort: 1, DstPort: 2, Seq: wire.Seq(i), Flags: wire.ACK}
		n.Inject("a", seg)
	}
	n.RunFor(time.Millisecond)
	if h := n.Rules()[0].Hits(); h != 10 {
		t.Errorf("Hits = %d, want 10", h)
	}
}

// TestRejectInputRefusesConnect: an input REJECT on the server answers the
// SYN with RST,ACK (nf_send_reset); the client's blocking connect fails
// with ECONNREFUSED when the reset arrives, and the server's stack never
// sees the SYN.
func TestRejectInputRefusesConnect(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Reject})
	_, r := l.connect("client", serverAP)
	if !r.Pending {
		t.Fatalf("connect did not block: %v", r.String())
	}
	l.n.RunFor(time.Second)

	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].Call.Errno != "ECONNREFUSED" || c[0].Call.Ret != -1 || c[0].At != 2*time.Millisecond {
		l.dump()
		t.Fatalf("connect completions = %v, want ECONNREFUSED at 0.002", c)
	}
	syn := l.packets("client", trace.Out, isFlags(wire.SYN))
	if len(syn) != 1 {
		t.Fatalf("%d SYNs, want 1", len(syn))
	}
	in := l.packets("server", trace.In, nil)
	if len(in) != 1 || in[0].Packet.Verdict != trace.VerdictReject || in[0].Packet.Rule != "#1 server in dport 80 reject" {
		t.Fatalf("server input = %v", in)
	}
	out := l.packets("server", trace.Out, nil)
	if len(out) != 1 {
		t.Fatalf("server output = %v, want one RST", out)
	}
	rst := out[0].Packet
	s := rst.Segment
	want := syn[0].Packet.Segment
	if s.Flags != wire.RST|wire.ACK || s.Seq != 0 || s.Ack != want.Seq.Add(1) ||
		s.Src != serverAddr || s.Dst != clientAddr || s.SrcPort != 80 || s.DstPort != want.SrcPort {
		t.Errorf("reject answer = %s, want RST,ACK ack %d to the client", s.String(), uint32(want.Seq.Add(1)))
	}
	if !rst.Crafted || !rst.OnWire || rst.Rule != "#1 server in dport 80 reject" || rst.Verdict != trace.VerdictPass {
		t.Errorf("reject answer packet = %+v", rst)
	}
	if out[0].At != time.Millisecond {
		t.Errorf("RST sent at %v, want 1ms", out[0].At)
	}
	// The listener never saw anything.
	if st := l.states("server"); len(st) != 1 {
		t.Errorf("server state changes: %v, want only LISTEN", st)
	}
	if v := counter(t, l.n, "server", "InSegs"); v != 0 {
		t.Errorf("server InSegs = %d, want 0", v)
	}
	if v := counter(t, l.n, "client", "AttemptFails"); v != 1 {
		t.Errorf("client AttemptFails = %d, want 1", v)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestRejectInputResetsConnection: a REJECT of a data segment answers with
// a RST at the segment's ACK number, which is exactly the sender's
// RCV.NXT: the sender's connection is reset (ECONNRESET).
func TestRejectInputResetsConnection(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	fd, _ := l.connect("client", serverAP)
	l.n.RunFor(10 * time.Millisecond)
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, FlagsMask: wire.PSH, FlagsValue: wire.PSH, Action: Reject})
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: fd, Data: []byte("data")})
	rd := l.do("client", tcp.Call{Op: tcp.OpRead, FD: fd})
	if !rd.Pending {
		t.Fatalf("read did not block")
	}
	l.n.RunFor(time.Second)
	out := l.packets("server", trace.Out, func(s *wire.Segment) bool { return s.Flags&wire.RST != 0 })
	if len(out) != 1 {
		l.dump()
		t.Fatalf("RSTs from the server: %v", out)
	}
	data := l.packets("client", trace.Out, hasData)[0].Packet.Segment
	if s := out[0].Packet.Segment; s.Flags != wire.RST || s.Seq != data.Ack {
		t.Errorf("reject answer %s, want RST seq %d", s.String(), uint32(data.Ack))
	}
	reads := l.calls("client", "read")
	if len(reads) != 1 || reads[0].Call.Errno != "ECONNRESET" || reads[0].At != 10*time.Millisecond+2*time.Millisecond {
		l.dump()
		t.Fatalf("read = %v, want ECONNRESET at 0.012", reads)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestRejectOutput: an OUTPUT reject never puts the SYN on the wire and
// hands a RST to the local stack at once; connect fails with ECONNREFUSED
// at time 0.
func TestRejectOutput(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.Out, DstPort: 80, Label: "block web", Action: Reject})
	l.connect("client", serverAP)
	l.n.RunFor(time.Second)

	out := l.packets("client", trace.Out, nil)
	if len(out) != 1 {
		t.Fatalf("client output %v", out)
	}
	p := out[0].Packet
	if p.Segment.Flags != wire.SYN || p.Verdict != trace.VerdictReject || p.OnWire || p.Rule != "block web" {
		t.Errorf("SYN packet = %s %+v", out[0].String(), p)
	}
	in := l.packets("client", trace.In, nil)
	if len(in) != 1 {
		t.Fatalf("client input %v, want the local RST", in)
	}
	rst := in[0]
	if s := rst.Packet.Segment; s.Flags != wire.RST|wire.ACK || s.Ack != p.Segment.Seq.Add(1) ||
		s.Src != serverAddr || s.SrcPort != 80 || s.Dst != clientAddr || s.DstPort != p.Segment.SrcPort {
		t.Errorf("local RST = %s", s.String())
	}
	if !rst.Packet.Crafted || rst.Packet.Rule != "block web" || rst.At != 0 {
		t.Errorf("local RST event %s %+v", rst.String(), rst.Packet)
	}
	if rst.Packet.ID == p.ID {
		t.Errorf("the RST reuses the SYN's ID %d", p.ID)
	}
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].Call.Errno != "ECONNREFUSED" || c[0].At != 0 {
		t.Fatalf("connect = %v, want ECONNREFUSED at 0", c)
	}
	if got := l.packets("server", trace.In, nil); len(got) != 0 {
		t.Errorf("server saw %v", got)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestRejectDoesNotAnswerRST: REJECT never answers a RST with a RST.
func TestRejectDoesNotAnswerRST(t *testing.T) {
	l := newLinuxLab(t)
	l.addRule(Rule{Host: "server", Dir: trace.In, Action: Reject})
	l.addRule(Rule{Host: "client", Dir: trace.Out, Action: Reject})
	rst := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: 1, DstPort: 2, Seq: 5, Flags: wire.RST}
	if err := l.n.Inject("client", rst); err != nil {
		t.Fatal(err)
	}
	l.n.RunFor(time.Millisecond)
	l.n.RemoveRule(2)
	if err := l.n.Inject("client", rst); err != nil {
		t.Fatal(err)
	}
	l.n.RunFor(time.Second)
	if got := l.packets("server", trace.Out, nil); len(got) != 0 {
		t.Errorf("server answered a RST: %v", got)
	}
	if got := l.packets("client", trace.In, nil); len(got) != 0 {
		t.Errorf("client got an answer to a RST: %v", got)
	}
	if v := verdicts(l.packets("client", trace.Out, nil)); fmt.Sprint(v) != "[reject pass]" {
		t.Errorf("client verdicts %v", v)
	}
	if v := verdicts(l.packets("server", trace.In, nil)); fmt.Sprint(v) != "[reject]" {
		t.Errorf("server verdicts %v", v)
	}
}

// TestDelayOutput holds the client's SYN 250 ms before it leaves: the tap
// sees it at 0 with verdict delay, the server at 0.251.
func TestDelayOutput(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Delay, Delay: 250 * time.Millisecond})
	l.connect("client", serverAP)
	l.n.RunFor(time.Second)
	out := l.packets("client", trace.Out, isFlags(wire.SYN))
	in := l.packets("server", trace.In, isFlags(wire.SYN))
	if len(out) != 1 || len(in) != 1 {
		t.Fatalf("SYNs out %v in %v", out, in)
	}
	if out[0].At != 0 || out[0].Packet.Verdict != trace.VerdictDelay || !out[0].Packet.OnWire {
		t.Errorf("SYN at the client: %s %+v", out[0].String(), out[0].Packet)
	}
	if in[0].At != 251*time.Millisecond || in[0].Packet.Verdict != trace.VerdictPass || in[0].Packet.ID != out[0].Packet.ID {
		t.Errorf("SYN at the server: %s", in[0].String())
	}
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].At != 252*time.Millisecond || c[0].Call.Errno != "" {
		t.Errorf("connect %v, want success at 0.252", c)
	}
	// Other packets are not delayed.
	for _, e := range l.packets("server", trace.In, nil)[1:] {
		if e.Packet.Verdict != trace.VerdictPass {
			t.Errorf("%s", e.String())
		}
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestDelayInput holds the SYN 250 ms after the server's tap saw it: the
// tap reports it on arrival (0.001, verdict delay), the stack handles it at
// 0.251.
func TestDelayInput(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "server", Dir: trace.In, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Delay, Delay: 250 * time.Millisecond})
	l.connect("client", serverAP)
	l.n.RunFor(time.Second)
	in := l.packets("server", trace.In, isFlags(wire.SYN))
	if len(in) != 1 || in[0].At != time.Millisecond || in[0].Packet.Verdict != trace.VerdictDelay || !in[0].Packet.OnWire {
		t.Fatalf("SYN at the server's tap: %v", in)
	}
	st := l.states("server")
	if len(st) < 2 || st[1].State.To != "SYN_RECV" || st[1].At != 251*time.Millisecond {
		l.dump()
		t.Fatalf("server states %v, want SYN_RECV at 0.251", st)
	}
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if len(sa) != 1 || sa[0].At != 251*time.Millisecond {
		t.Errorf("SYN-ACKs %v, want one at 0.251", sa)
	}
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].At != 252*time.Millisecond {
		t.Errorf("connect %v, want success at 0.252", c)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestDuplicateOutput sends the client's SYN twice: two packets with their
// own IDs reach the server, which answers the second as a retransmitted SYN
// (a second SYN-ACK, one request).
func TestDuplicateOutput(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Duplicate})
	l.connect("client", serverAP)
	l.n.RunFor(time.Second)
	out := l.packets("client", trace.Out, isFlags(wire.SYN))
	in := l.packets("server", trace.In, isFlags(wire.SYN))
	if len(out) != 2 || len(in) != 2 {
		l.dump()
		t.Fatalf("SYNs out %d in %d, want 2 and 2", len(out), len(in))
	}
	if out[0].Packet.ID == out[1].Packet.ID {
		t.Errorf("both copies have ID %d", out[0].Packet.ID)
	}
	for i := range 2 {
		if out[i].At != 0 || in[i].At != time.Millisecond || out[i].Packet.Verdict != trace.VerdictDup || !out[i].Packet.OnWire {
			t.Errorf("copy %d: %s / %s", i, out[i].String(), in[i].String())
		}
		if in[i].Packet.ID != out[i].Packet.ID {
			t.Errorf("copy %d: ID %d at the sender, %d at the receiver", i, out[i].Packet.ID, in[i].Packet.ID)
		}
	}
	if !reflectEqualSeg(out[0].Packet.Segment, out[1].Packet.Segment) {
		t.Errorf("copies differ")
	}
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if len(sa) != 2 {
		t.Errorf("%d SYN-ACKs, want 2", len(sa))
	}
	n := 0
	for _, e := range l.states("server") {
		if e.State.To == "SYN_RECV" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if v := counter(t, l.n, "server", "InSegs"); v < 3 {
		t.Errorf("server InSegs %d", v)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestDuplicateInput delivers one packet twice to the stack: the tap sees it
// once (verdict duplicate), the stack twice.
func TestDuplicateInput(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "server", Dir: trace.In, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Duplicate})
	l.connect("client", serverAP)
	l.n.RunUntil(time.Millisecond)
	in := l.packets("server", trace.In, nil)
	if len(in) != 1 || in[0].Packet.Verdict != trace.VerdictDup {
		t.Fatalf("server tap %v", in)
	}
	if v := counter(t, l.n, "server", "InSegs"); v != 2 {
		t.Errorf("server InSegs = %d, want 2", v)
	}
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))
	if len(sa) != 2 || sa[0].At != time.Millisecond || sa[1].At != time.Millisecond {
		t.Errorf("SYN-ACKs %v, want two at 0.001", sa)
	}
	l.n.RunFor(time.Second)
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestDuplicateData: duplicated data is read once.
func TestDuplicateData(t *testing.T) {
	l := newLinuxLab(t)
	lfd := l.listen("server", 80, 5)
	fd, _ := l.connect("client", serverAP)
	l.n.RunFor(10 * time.Millisecond)
	l.addRule(Rule{Host: "client", Dir: trace.Out, FlagsMask: wire.PSH, FlagsValue: wire.PSH, Action: Duplicate})
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: fd, Data: []byte("hello")})
	l.n.RunFor(10 * time.Millisecond)
	if n := len(l.packets("server", trace.In, hasData)); n != 2 {
		t.Fatalf("%d data packets at the server, want 2", n)
	}
	a := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd})
	r := l.do("server", tcp.Call{Op: tcp.OpRead, FD: tcp.FD(a.Ret), NonBlock: true})
	if string(r.Data) != "hello" {
		t.Errorf("read %q, want \"hello\" once", r.Data)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestRulesChangeDuringRun cuts the client's data path at 1 s and restores
// it at 3 s: data written at 1 s is dropped until then and is read after.
func TestRulesChangeDuringRun(t *testing.T) {
	l := newLinuxLab(t)
	lfd := l.listen("server", 80, 5)
	fd, _ := l.connect("client", serverAP)
	l.n.RunUntil(time.Second)
	id := l.addRule(Rule{Host: "client", Dir: trace.Out, DstPort: 80, Label: "cut", Action: Drop})
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: fd, Data: []byte("late")})
	l.n.RunUntil(3 * time.Second)
	if err := l.n.RemoveRule(id); err != nil {
		t.Fatal(err)
	}
	l.n.RunUntil(20 * time.Second)

	rev := l.rec.Filter(trace.KindRule)
	if len(rev) != 2 || rev[0].At != time.Second || !rev[0].Rule.Added || rev[1].At != 3*time.Second || rev[1].Rule.Added || rev[1].Rule.ID != id {
		t.Fatalf("rule events %v", rev)
	}
	data := l.packets("client", trace.Out, hasData)
	if len(data) < 3 {
		l.dump()
		t.Fatalf("only %d data transmissions", len(data))
	}
	sawPass := false
	for _, e := range data {
		want := trace.VerdictDrop
		if e.At >= 3*time.Second {
			want = trace.VerdictPass
		}
		if e.Packet.Verdict != want {
			t.Errorf("%s: verdict %q, want %q", e.String(), e.Packet.Verdict, want)
		}
		if want == trace.VerdictPass {
			sawPass = true
		}
	}
	if !sawPass || data[0].At != time.Second {
		t.Errorf("data transmissions at %v", times(data))
	}
	a := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd})
	r := l.do("server", tcp.Call{Op: tcp.OpRead, FD: tcp.FD(a.Ret), NonBlock: true})
	if string(r.Data) != "late" {
		t.Errorf("server read %q", r.Data)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestRuleRemovedFromSink: a one-shot rule removed by the sink the first
// time it acts, in the middle of a run.
func TestRuleRemovedFromSink(t *testing.T) {
	n := New(Config{Seed: 1})
	n.AddHost("client", clientAddr, tcp.Linux())
	n.AddHost("server", serverAddr, tcp.Linux())
	var evs []trace.Event
	n.SetSink(func(e trace.Event) {
		evs = append(evs, e)
		if e.Kind == trace.KindPacket && e.Packet.Verdict == trace.VerdictDrop {
			if err := n.RemoveRule(1); err != nil {
				t.Errorf("RemoveRule from the sink: %v", err)
			}
		}
	})
	n.AddRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Drop})
	l, _ := n.Do("server", tcp.Call{Op: tcp.OpSocket})
	n.Do("server", tcp.Call{Op: tcp.OpListen, FD: tcp.FD(l.Ret), Port: 80, Backlog: 1})
	s, _ := n.Do("client", tcp.Call{Op: tcp.OpSocket})
	n.Do("client", tcp.Call{Op: tcp.OpConnect, FD: tcp.FD(s.Ret), Addr: serverAP})
	ok := n.RunUntilCond(func() bool {
		for _, e := range evs {
			if e.Kind == trace.KindCall && e.Call.Op == "connect" && !e.Call.Pending {
				return true
			}
		}
		return false
	}, 10*time.Second)
	if !ok || n.Now() != 1002*time.Millisecond {
		t.Fatalf("connected %v at %v, want at 1.002 s", ok, n.Now())
	}
	if len(n.Rules()) != 0 {
		t.Errorf("rules left: %v", n.Rules())
	}
}

func reflectEqualSeg(a, b wire.Segment) bool {
	return a.String() == b.String() && a.TTL == b.TTL && a.ID == b.ID
}

// TestRejectSpoofedSource: a REJECT answering a SYN from an address no host
// owns sends its RST into the void, marked Lost.
func TestRejectSpoofedSource(t *testing.T) {
	l := newLinuxLab(t)
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Reject})
	spoof := netip.MustParseAddr("192.0.2.1")
	l.n.Inject("client", wire.Segment{Src: spoof, Dst: serverAddr, SrcPort: 3333, DstPort: 80, Seq: 41, Flags: wire.SYN})
	l.n.RunFor(time.Second)
	out := l.packets("server", trace.Out, nil)
	if len(out) != 1 {
		t.Fatalf("server output %v", out)
	}
	p := out[0].Packet
	if p.Segment.Dst != spoof || p.Segment.Ack != 42 || p.Segment.Flags != wire.RST|wire.ACK ||
		p.Lost != "no host has address 192.0.2.1" || !p.Crafted || !p.OnWire {
		t.Errorf("reject answer %s %+v", out[0].String(), p)
	}
	if n := len(l.packets("client", trace.In, nil)); n != 0 {
		t.Errorf("the client received %d packets", n)
	}
	checkTaps(t, l.n, l.rec.Events)
}

// TestRulesWithoutSink: with no sink the network skips building events;
// every action must still act the same.
func TestRulesWithoutSink(t *testing.T) {
	setup := func(r Rule) *Network {
		t.Helper()
		n := New(Config{Seed: 1})
		n.AddHost("client", clientAddr, tcp.Linux())
		n.AddHost("server", serverAddr, tcp.Linux())
		l, _ := n.Do("server", tcp.Call{Op: tcp.OpSocket})
		n.Do("server", tcp.Call{Op: tcp.OpListen, FD: tcp.FD(l.Ret), Port: 80, Backlog: 5})
		if _, err := n.AddRule(r); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Without events, connect without blocking and watch the snapshot
	// until the socket is established or gone.
	connect := func(n *Network) (tcp.Result, bool) {
		s, _ := n.Do("client", tcp.Call{Op: tcp.OpSocket})
		r, _ := n.Do("client", tcp.Call{Op: tcp.OpConnect, FD: tcp.FD(s.Ret), Addr: serverAP, NonBlock: true})
		ok := n.RunUntilCond(func() bool {
			cs, _ := n.Snapshot("client")
			return len(cs) == 0 || cs[0].State == "ESTABLISHED"
		}, 10*time.Second)
		cs, _ := n.Snapshot("client")
		return r, ok && len(cs) == 1
	}

	n := setup(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Reject})
	if _, ok := connect(n); ok || n.Now() != 2*time.Millisecond {
		t.Errorf("input reject without a sink: connected %v, at %v", ok, n.Now())
	}
	n = setup(Rule{Host: "client", Dir: trace.Out, DstPort: 80, Action: Reject})
	if _, ok := connect(n); ok || n.Now() != 0 {
		t.Errorf("output reject without a sink: connected %v, at %v", ok, n.Now())
	}
	n = setup(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Delay, Delay: 100 * time.Millisecond})
	if _, ok := connect(n); !ok || n.Now() != 102*time.Millisecond {
		t.Errorf("output delay without a sink: connected %v at %v, want at 0.102", ok, n.Now())
	}
	n = setup(Rule{Host: "server", Dir: trace.In, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Delay, Delay: 100 * time.Millisecond})
	if _, ok := connect(n); !ok || n.Now() != 102*time.Millisecond {
		t.Errorf("input delay without a sink: connected %v at %v, want at 0.102", ok, n.Now())
	}
	n = setup(Rule{Host: "server", Dir: trace.In, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Duplicate})
	if _, ok := connect(n); !ok {
		t.Errorf("input duplicate without a sink: not connected")
	}
	if v := counter(t, n, "server", "InSegs"); v != 2 {
		t.Errorf("input duplicate without a sink: server InSegs %d, want 2 by 2 ms", v)
	}
	n = setup(Rule{Host: "client", Dir: trace.Out, FlagsMask: 0xff, FlagsValue: wire.SYN, Action: Duplicate})
	connect(n)
	if v := counter(t, n, "server", "InSegs"); v != 2 {
		t.Errorf("output duplicate without a sink: server InSegs %d, want 2", v)
	}
	n = setup(Rule{Host: "server", Dir: trace.In, FlagsMask: 0xff, FlagsValue: wire.SYN, Count: 1, Action: Drop})
	if _, ok := connect(n); !ok || n.Now() != 1002*time.Millisecond {
		t.Errorf("drop of the first SYN without a sink: connected %v at %v, want at 1.002", ok, n.Now())
	}
	if h := n.Rules()[0].Hits(); h != 1 {
		t.Errorf("Hits without a sink = %d", h)
	}
}
