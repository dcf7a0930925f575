package sim

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

func TestAddHostErrors(t *testing.T) {
	n := New(Config{Seed: 1})
	if _, err := n.AddHost("a", clientAddr, tcp.Linux()); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		addr netip.Addr
		want string
	}{
		{"", serverAddr, "name"},
		{"a", serverAddr, "already exists"},
		{"b", clientAddr, "already belongs"},
		{"c", netip.MustParseAddr("fe80::1"), "usable"},
		{"d", netip.MustParseAddr("::ffff:10.0.0.9"), "usable"},
		{"e", netip.Addr{}, "usable"},
		{"f", netip.IPv4Unspecified(), "usable"},
		{"g", netip.IPv6Unspecified(), "usable"},
	}
	for _, tc := range bad {
		h, err := n.AddHost(tc.name, tc.addr, tcp.Linux())
		if err == nil || h != nil {
			t.Errorf("AddHost(%q, %v) = %v, %v; want an error", tc.name, tc.addr, h, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddHost(%q, %v) error %q does not mention %q", tc.name, tc.addr, err, tc.want)
		}
	}
	if hs := n.Hosts(); len(hs) != 1 || hs[0].Name != "a" {
		t.Errorf("failed AddHost calls left hosts behind: %v", n.HostNames())
	}
	if n.Host("b") != nil || n.Host("") != nil {
		t.Error("Host finds a host that was refused")
	}
	// A refused address is free for a later host.
	if _, err := n.AddHost("g", serverAddr, tcp.Linux()); err != nil {
		t.Errorf("AddHost after refusals: %v", err)
	}
}

func TestHostsAndNames(t *testing.T) {
	n := New(Config{Seed: 1})
	names := []string{"zeta", "alpha", "mid"}
	for i, name := range names {
		h, err := n.AddHost(name, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), tcp.Profile{})
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != name || h.Addr != netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}) || h.Stack == nil {
			t.Errorf("host %+v", h)
		}
		if h.Stack.Name() != name || h.Stack.Addr() != h.Addr {
			t.Errorf("stack of %s is %s %v", name, h.Stack.Name(), h.Stack.Addr())
		}
		if n.Host(name) != h {
			t.Errorf("Host(%q) is not the added host", name)
		}
	}
	// A zero profile means Linux.
	if p := n.Host("zeta").Stack.Profile(); p.Name != "linux" {
		t.Errorf("zero profile became %q", p.Name)
	}
	var got []string
	for _, h := range n.Hosts() {
		got = append(got, h.Name)
	}
	if fmt.Sprint(got) != "[zeta alpha mid]" {
		t.Errorf("Hosts() order %v, want the order of AddHost", got)
	}
	if fmt.Sprint(n.HostNames()) != "[alpha mid zeta]" {
		t.Errorf("HostNames() = %v, want sorted", n.HostNames())
	}
	// Hosts returns a copy.
	hs := n.Hosts()
	hs[0] = nil
	if n.Hosts()[0] == nil {
		t.Error("Hosts() exposes the network's slice")
	}
	if n.Host("nobody") != nil {
		t.Error("Host(nobody) != nil")
	}
}

func TestUnknownHostErrors(t *testing.T) {
	l := newLinuxLab(t)
	n := l.n
	seg := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: 1, DstPort: 2, Flags: wire.SYN}
	checks := map[string]error{}
	_, checks["Do"] = n.Do("nobody", tcp.Call{Op: tcp.OpSocket})
	checks["Inject"] = n.Inject("nobody", seg)
	checks["InjectAt"] = n.InjectAt(time.Second, "nobody", seg)
	_, checks["Snapshot"] = n.Snapshot("nobody")
	_, checks["Counters"] = n.Counters("nobody")
	checks["SetDelay a"] = n.SetDelay("nobody", "server", time.Second)
	checks["SetDelay b"] = n.SetDelay("client", "nobody", time.Second)
	_, checks["AddRule"] = n.AddRule(Rule{Host: "nobody"})
	checks["RemoveRule"] = n.RemoveRule(1)
	for what, err := range checks {
		if err == nil {
			t.Errorf("%s on an unknown host (or rule) succeeded", what)
		}
	}
	for what, err := range checks {
		if err != nil && what != "RemoveRule" && !strings.Contains(err.Error(), "nobody") {
			t.Errorf("%s error %q does not name the host", what, err)
		}
	}
	if err := n.SetDelay("client", "server", -time.Millisecond); err == nil {
		t.Error("negative delay accepted")
	}
	if !n.Idle() || len(l.rec.Events) != 0 {
		t.Errorf("failed calls left work or events: idle %v, %v", n.Idle(), l.rec.Events)
	}
}

func TestInjectErrors(t *testing.T) {
	l := newLinuxLab(t)
	n := l.n
	v6 := wire.Segment{Src: netip.MustParseAddr("fe80::1"), Dst: serverAddr, Flags: wire.SYN}
	if err := n.Inject("client", v6); err == nil {
		t.Error("IPv6 source accepted")
	}
	v6 = wire.Segment{Src: clientAddr, Dst: netip.MustParseAddr("::1"), Flags: wire.SYN}
	if err := n.Inject("client", v6); err == nil {
		t.Error("IPv6 destination accepted")
	}
	if err := n.Inject("client", wire.Segment{Flags: wire.SYN}); err == nil {
		t.Error("segment without addresses accepted")
	}
	n.RunFor(time.Second)
	ok := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: 1, DstPort: 2, Flags: wire.SYN}
	if err := n.InjectAt(999*time.Millisecond, "client", ok); err == nil {
		t.Error("InjectAt in the past accepted")
	} else if !strings.Contains(err.Error(), "past") {
		t.Errorf("InjectAt in the past: %v", err)
	}
	if err := n.InjectAt(0, "client", ok); err == nil {
		t.Error("InjectAt(0) at 1 s accepted")
	}
	if err := n.InjectAt(time.Second, "client", ok); err != nil {
		t.Errorf("InjectAt(now): %v", err)
	}
	n.RunFor(time.Second)
	if got := len(l.packets("client", trace.Out, nil)); got != 1 {
		t.Errorf("%d packets sent, want only the valid one", got)
	}
}

func TestDefaultDelay(t *testing.T) {
	if DefaultDelay != time.Millisecond {
		t.Fatalf("DefaultDelay = %v", DefaultDelay)
	}
	for _, d := range []time.Duration{0, -5 * time.Millisecond} {
		n := New(Config{Seed: 1, Delay: d})
		if n.delay != time.Millisecond {
			t.Errorf("Config.Delay %v: link delay %v, want 1ms", d, n.delay)
		}
	}
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.connect("client", serverAP)
	l.n.RunFor(time.Second)
	// SYN 0 -> 1 ms, SYN-ACK 1 -> 2 ms, ACK 2 -> 3 ms.
	var got []string
	for _, e := range l.rec.Filter(trace.KindPacket) {
		got = append(got, fmt.Sprintf("%s %s %s %s", trace.FormatTime(e.At), e.Host, e.Packet.Dir, e.Packet.Segment.Flags.Short()))
	}
	want := []string{
		"0.000000 client out S",
		"0.001000 server in S",
		"0.001000 server out S.",
		"0.002000 client in S.",
		"0.002000 client out .",
		"0.003000 server in .",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("packets:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestConfigDelay(t *testing.T) {
	n := New(Config{Seed: 1, Delay: 25 * time.Millisecond})
	rec := &trace.Recorder{}
	n.SetSink(rec.Sink())
	l := &lab{t: t, n: n, rec: rec}
	l.addHost("client", clientAddr, tcp.Linux())
	l.addHost("server", serverAddr, tcp.Linux())
	l.listen("server", 80, 5)
	l.connect("client", serverAP)
	n.RunFor(time.Second)
	c := l.calls("client", "connect")
	if len(c) != 1 || c[0].At != 50*time.Millisecond {
		t.Errorf("connect %v, want completion after one RTT of 50 ms", c)
	}
	if st := l.states("server"); st[len(st)-1].State.To != "ESTABLISHED" || st[len(st)-1].At != 75*time.Millisecond {
		t.Errorf("server ESTABLISHED: %v", st[len(st)-1].String())
	}
}

// TestSetDelay sets one pair's delay (both ways) and leaves the others at
// the default.
func TestSetDelay(t *testing.T) {
	l := newLinuxLab(t)
	l.addHost("far", netip.MustParseAddr("10.0.0.3"), tcp.Linux())
	if err := l.n.SetDelay("client", "far", 40*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	l.listen("server", 80, 5)
	l.listen("far", 80, 5)
	l.connect("client", serverAP)
	l.connect("client", netip.MustParseAddrPort("10.0.0.3:80"))
	l.connect("far", serverAP)
	l.n.RunFor(time.Second)
	want := map[string]time.Duration{
		"client connect(3, 10.0.0.2:80)": 2 * time.Millisecond,
		"client connect(4, 10.0.0.3:80)": 80 * time.Millisecond,
		"far connect(4, 10.0.0.2:80)":    2 * time.Millisecond,
	}
	got := map[string]time.Duration{}
	for _, e := range l.rec.Filter(trace.KindCall) {
		if e.Call.Op == "connect" && !e.Call.Pending {
			if e.Call.Errno != "" {
				t.Errorf("%s", e.String())
			}
			got[e.Host+" "+e.Call.Text] = e.At
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("connect completions %v, want %v", got, want)
	}
	// Both ways: the far host's SYN-ACK to the client also takes 40 ms.
	for _, e := range l.packets("client", trace.In, isFlags(wire.SYN|wire.ACK)) {
		if e.Remote.Addr() == netip.MustParseAddr("10.0.0.3") && e.At != 80*time.Millisecond {
			t.Errorf("SYN-ACK from far at %v", e.At)
		}
	}
	checkTaps(t, l.n, l.rec.Events)

	// A zero delay delivers at the same instant; the network still
	// settles.
	z := newLinuxLab(t)
	if err := z.n.SetDelay("server", "client", 0); err != nil {
		t.Fatal(err)
	}
	z.listen("server", 80, 5)
	z.connect("client", serverAP)
	z.n.RunFor(time.Second)
	if c := z.calls("client", "connect"); len(c) != 1 || c[0].At != 0 || c[0].Call.Errno != "" {
		t.Errorf("connect over a zero-delay link: %v", c)
	}
	// Changing a delay later affects packets sent after the change.
	if err := z.n.SetDelay("client", "server", 7*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	seg := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: 999, DstPort: 80, Flags: wire.SYN}
	z.n.Inject("client", seg)
	z.n.RunFor(time.Second)
	in := z.packets("server", trace.In, func(s *wire.Segment) bool { return s.SrcPort == 999 && s.Flags == wire.SYN })
	if len(in) != 1 || in[0].At != time.Second+7*time.Millisecond {
		t.Errorf("after SetDelay 7ms: %v", in)
	}
}

// TestTapInputDrop: a packet an INPUT rule drops was on the wire; the
// receiver's tap reports it with the verdict and the rule, under the
// sender's ID; the stack never gets it.
func TestTapInputDrop(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 80, Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(2 * time.Second)
	out := l.packets("client", trace.Out, nil)
	in := l.packets("server", trace.In, nil)
	if len(out) != 2 || len(in) != 2 {
		t.Fatalf("out %v in %v", out, in)
	}
	for i := range out {
		o, r := out[i], in[i]
		if o.Packet.Verdict != trace.VerdictPass || !o.Packet.OnWire || o.Packet.Rule != "" {
			t.Errorf("sender side %s %+v", o.String(), o.Packet)
		}
		if r.Packet.Verdict != trace.VerdictDrop || !r.Packet.OnWire || r.Packet.Rule != "#1 server in dport 80 drop" {
			t.Errorf("receiver side %s %+v", r.String(), r.Packet)
		}
		if r.Packet.ID != o.Packet.ID || r.At != o.At+time.Millisecond {
			t.Errorf("ID/time: out %s, in %s", o.String(), r.String())
		}
		if r.Local != serverAP || r.Remote != o.Local || o.Remote != serverAP {
			t.Errorf("endpoints: out %v>%v in %v>%v", o.Local, o.Remote, r.Local, r.Remote)
		}
	}
	if s := in[0].String(); !strings.HasSuffix(s, "[drop by #1 server in dport 80 drop]") {
		t.Errorf("event text %q", s)
	}
	if v := counter(t, l.n, "server", "InSegs"); v != 0 {
		t.Errorf("server InSegs = %d", v)
	}
	if st := l.states("server"); len(st) != 1 {
		t.Errorf("server states %v", st)
	}
	checkTaps(t, l.n, l.rec.Events)
}

// TestTapOutputDrop: a packet an OUTPUT rule drops shows at the sender with
// OnWire false and never arrives.
func TestTapOutputDrop(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.addRule(Rule{Host: "client", Dir: trace.Out, DstPort: 80, Label: "no web", Action: Drop})
	l.connect("client", serverAP)
	l.n.RunFor(4 * time.Second)
	out := l.packets("client", trace.Out, nil)
	if len(out) != 3 {
		t.Fatalf("client out %v, want SYNs at 0, 1, 3", out)
	}
	for _, o := range out {
		if o.Packet.Verdict != trace.VerdictDrop || o.Packet.OnWire || o.Packet.Rule != "no web" || o.Packet.Lost != "" {
			t.Errorf("%s %+v", o.String(), o.Packet)
		}
	}
	if in := l.packets("server", trace.In, nil); len(in) != 0 {
		t.Errorf("server received %v", in)
	}
	// The stack did send them: one new segment and two retransmissions.
	if v := counter(t, l.n, "client", "OutSegs"); v != 1 {
		t.Errorf("client OutSegs = %d, want 1", v)
	}
	if v := counter(t, l.n, "client", "RetransSegs"); v != 2 {
		t.Errorf("client RetransSegs = %d, want 2", v)
	}
	checkTaps(t, l.n, l.rec.Events)
}

// TestTapIDsFullConnection: over a whole connection life every packet has
// the same ID at sender and receiver, and IDs count up from 1.
func TestTapIDsFullConnection(t *testing.T) {
	l := newLinuxLab(t)
	runHutu(l)
	checkTaps(t, l.n, l.rec.Events)
	checkSeqs(t, l.rec.Events)
	l.checkBugs()
	seen := map[uint64]bool{}
	for _, e := range l.rec.Filter(trace.KindPacket) {
		seen[e.Packet.ID] = true
	}
	for id := uint64(1); id <= uint64(len(seen)); id++ {
		if !seen[id] {
			t.Errorf("packet IDs are not 1..%d: %d missing", len(seen), id)
		}
	}
	if len(seen) != 9 {
		t.Errorf("%d packets, want 9", len(seen))
	}
}

// runHutu is a whole connection: handshake, data, active close by the
// client, passive close by the server, TIME_WAIT on the client.
func runHutu(l *lab) {
	l.t.Helper()
	lfd := l.listen("server", 80, 5)
	l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd})
	cfd, _ := l.connect("client", serverAP)
	l.n.RunFor(100 * time.Millisecond)
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: []byte("Hutu")})
	l.n.RunFor(100 * time.Millisecond)
	l.do("server", tcp.Call{Op: tcp.OpRead, FD: lfd + 1})
	l.do("client", tcp.Call{Op: tcp.OpClose, FD: cfd})
	l.n.RunFor(time.Second)
	l.do("server", tcp.Call{Op: tcp.OpRead, FD: lfd + 1})
	l.do("server", tcp.Call{Op: tcp.OpClose, FD: lfd + 1})
	l.n.RunFor(2 * time.Minute)
}

// TestInjectSpoofedSYNs: SYNs from addresses no host owns fill the server's
// SYN queue; its SYN-ACKs are marked Lost, the SYNs Crafted, and the
// requests die after tcp_synack_retries.
func TestInjectSpoofedSYNs(t *testing.T) {
	l := newLinuxLab(t)
	l.addHost("attacker", netip.MustParseAddr("10.0.0.66"), tcp.Linux())
	l.listen("server", 80, 5)
	for i := range 3 {
		src := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		seg := wire.Segment{Src: src, Dst: serverAddr, SrcPort: 1024, DstPort: 80, Seq: wire.Seq(1000 * i), Flags: wire.SYN, Window: 512}
		if err := l.n.Inject("attacker", seg); err != nil {
			t.Fatal(err)
		}
	}
	l.n.RunFor(10 * time.Millisecond)

	out := l.packets("attacker", trace.Out, nil)
	in := l.packets("server", trace.In, nil)
	if len(out) != 3 || len(in) != 3 {
		t.Fatalf("attacker out %d, server in %d", len(out), len(in))
	}
	for i := range 3 {
		if !out[i].Packet.Crafted || !in[i].Packet.Crafted || in[i].Packet.ID != out[i].Packet.ID {
			t.Errorf("crafted SYN %d: %+v / %+v", i, out[i].Packet, in[i].Packet)
		}
		if out[i].Packet.Segment.TTL != 64 {
			t.Errorf("crafted SYN TTL %d, want the default 64", out[i].Packet.Segment.TTL)
		}
		if out[i].Local != netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), 1024) {
			t.Errorf("event Local %v: the spoofed source", out[i].Local)
		}
	}
	sa := l.packets("server", trace.Out, nil)
	if len(sa) != 3 {
		t.Fatalf("server answers %v", sa)
	}
	for i, e := range sa {
		p := e.Packet
		dst := fmt.Sprintf("192.0.2.%d", 10+i)
		if p.Segment.Flags != wire.SYN|wire.ACK || p.Crafted || !p.OnWire || p.Lost != "no host has address "+dst {
			t.Errorf("SYN-ACK %s %+v", e.String(), p)
		}
		if p.Segment.Ack != wire.Seq(1000*i).Add(1) {
			t.Errorf("SYN-ACK acks %d", uint32(p.Segment.Ack))
		}
		if !strings.Contains(e.String(), "[lost: no host has address "+dst+"]") {
			t.Errorf("event text %q", e.String())
		}
	}
	socks, _ := l.n.Snapshot("server")
	if len(socks) != 4 || socks[0].State != "LISTEN" || socks[0].SynQueue != 3 {
		t.Fatalf("server sockets %+v", socks)
	}
	for _, s := range socks[1:] {
		if s.State != "SYN_RECV" || s.Timer != "on" || s.Parent != socks[0].Sock || s.FD != -1 {
			t.Errorf("request %+v", s)
		}
	}
	// Linux: SYN-ACKs at 0, 1, 3, 7, 15, 31 s; gone at 63 s.
	l.n.RunFor(62*time.Second + 990*time.Millisecond)
	if socks, _ := l.n.Snapshot("server"); len(socks) != 4 {
		t.Fatalf("requests gone early: %+v", socks)
	}
	l.n.RunFor(10 * time.Millisecond)
	socks, _ = l.n.Snapshot("server")
	if len(socks) != 1 || socks[0].SynQueue != 0 {
		t.Fatalf("requests left after 63 s: %+v", socks)
	}
	if n := len(l.packets("server", trace.Out, nil)); n != 18 {
		t.Errorf("%d SYN-ACKs, want 3 x 6", n)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// TestInjectAtSchedules: InjectAt sends at the given time; a TTL set in the
// segment is kept.
func TestInjectAtSchedules(t *testing.T) {
	l := newLinuxLab(t)
	seg := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: 4000, DstPort: 80, Seq: 77, Flags: wire.SYN, TTL: 7}
	if err := l.n.InjectAt(2500*time.Millisecond, "client", seg); err != nil {
		t.Fatal(err)
	}
	if l.n.Idle() {
		t.Error("Idle with a packet scheduled")
	}
	if next, ok := l.n.NextTime(); !ok || next != 2500*time.Millisecond {
		t.Errorf("NextTime = %v, %v", next, ok)
	}
	l.n.RunFor(2 * time.Second)
	if len(l.rec.Events) != 0 {
		t.Fatalf("events before the injection time: %v", l.rec.Events)
	}
	l.n.RunFor(time.Second)
	out := l.packets("client", trace.Out, nil)
	in := l.packets("server", trace.In, nil)
	if len(out) != 1 || out[0].At != 2500*time.Millisecond || out[0].Packet.Segment.TTL != 7 {
		t.Fatalf("injected %v", out)
	}
	if len(in) != 1 || in[0].At != 2501*time.Millisecond || !in[0].Packet.Crafted {
		t.Fatalf("received %v", in)
	}
	// Nobody listens: the server resets, and the reset reaches the
	// client's stack, which has no socket for it and stays silent.
	rst := l.packets("server", trace.Out, nil)
	if len(rst) != 1 || rst[0].Packet.Segment.Flags != wire.RST|wire.ACK || rst[0].Packet.Segment.Ack != 78 || rst[0].Packet.Crafted {
		t.Errorf("server answer %v", rst)
	}
	if n := len(l.packets("client", trace.Out, nil)); n != 1 {
		t.Errorf("client answered a RST")
	}
	checkTaps(t, l.n, l.rec.Events)
}

// TestInjectPassesOutputRules: crafted packets go through the sender's
// output rules like any packet.
func TestInjectPassesOutputRules(t *testing.T) {
	l := newLinuxLab(t)
	l.addRule(Rule{Host: "client", Dir: trace.Out, DstPort: 80, Action: Drop})
	seg := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: 4000, DstPort: 80, Flags: wire.SYN}
	l.n.Inject("client", seg)
	seg.DstPort = 81
	l.n.Inject("client", seg)
	l.n.RunFor(time.Second)
	out := l.packets("client", trace.Out, nil)
	if len(out) != 2 {
		t.Fatalf("%v", out)
	}
	if p := out[0].Packet; p.Verdict != trace.VerdictDrop || p.OnWire || !p.Crafted {
		t.Errorf("port 80: %+v", p)
	}
	if p := out[1].Packet; p.Verdict != trace.VerdictPass || !p.OnWire || !p.Crafted {
		t.Errorf("port 81: %+v", p)
	}
	in := l.packets("server", trace.In, nil)
	if len(in) != 1 || in[0].Packet.Segment.DstPort != 81 {
		t.Errorf("server got %v", in)
	}
	checkTaps(t, l.n, l.rec.Events)
}

// TestBlindRST: a third host spoofs the client and resets the server's
// connection with a RST at exactly RCV.NXT (RFC 5961 3.2); one off by one
// only draws a challenge ACK.
func TestBlindRST(t *testing.T) {
	l := newLinuxLab(t)
	l.addHost("attacker", netip.MustParseAddr("10.0.0.66"), tcp.Linux())
	lfd := l.listen("server", 80, 5)
	cfd, _ := l.connect("client", serverAP)
	l.n.RunFor(10 * time.Millisecond)
	a := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd})
	l.do("server", tcp.Call{Op: tcp.OpRead, FD: tcp.FD(a.Ret)})
	syn := l.packets("client", trace.Out, isFlags(wire.SYN))[0].Packet.Segment
	rst := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: syn.SrcPort, DstPort: 80, Seq: syn.Seq.Add(2), Flags: wire.RST}
	l.n.Inject("attacker", rst)
	l.n.RunFor(10 * time.Millisecond)
	if reads := l.calls("server", "read"); len(reads) != 0 {
		t.Fatalf("off-by-one RST ended the read: %v", reads)
	}
	if n := len(l.packets("client", trace.In, isFlags(wire.ACK))); n != 1 {
		t.Errorf("client got %d challenge ACKs, want 1", n)
	}
	rst.Seq = syn.Seq.Add(1)
	l.n.Inject("attacker", rst)
	l.n.RunFor(10 * time.Millisecond)
	reads := l.calls("server", "read")
	if len(reads) != 1 || reads[0].Call.Errno != "ECONNRESET" || reads[0].At != 21*time.Millisecond {
		l.dump()
		t.Fatalf("server read %v, want ECONNRESET at 0.021", reads)
	}
	// The client knows nothing; its next write draws a RST from the
	// server.
	w := l.do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: []byte("x")})
	if w.Err != tcp.OK {
		t.Errorf("client write %v", w.Err)
	}
	l.n.RunFor(10 * time.Millisecond)
	if n := len(l.packets("server", trace.Out, func(s *wire.Segment) bool { return s.Flags&wire.RST != 0 })); n != 1 {
		t.Errorf("server sent %d RSTs, want 1", n)
	}
	checkTaps(t, l.n, l.rec.Events)
	l.checkBugs()
}

// scenario runs a busy lab with one seed: handshakes, data, a lossy rule
// with a probability, spoofed SYNs, a listener closed with requests
// pending, closes and TIME_WAIT.
func scenario(t *testing.T, seed uint64) []trace.Event {
	l := newLab(t, seed, tcp.Linux(), tcp.Linux())
	l.addHost("c2", netip.MustParseAddr("10.0.0.3"), tcp.WindowsClassic())
	l.n.SetDelay("c2", "server", 3*time.Millisecond)
	lfd := l.listen("server", 80, 8)
	l.listen("server", 81, 8)
	l.addRule(Rule{Host: "server", Dir: trace.In, Probability: 0.2, Action: Drop})
	l.addRule(Rule{Host: "client", Dir: trace.In, Probability: 0.1, Action: Delay, Delay: 30 * time.Millisecond})
	var fds []tcp.FD
	for i := range 3 {
		fd, _ := l.connect("client", serverAP)
		fds = append(fds, fd)
		l.connect("c2", netip.AddrPortFrom(serverAddr, uint16(80+i%2)))
	}
	for i := range 20 {
		seg := wire.Segment{Src: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Dst: serverAddr, SrcPort: 2000, DstPort: 81, Flags: wire.SYN}
		l.n.InjectAt(time.Duration(i)*time.Millisecond, "client", seg)
	}
	l.n.RunFor(5 * time.Second)
	for _, fd := range fds {
		l.do("client", tcp.Call{Op: tcp.OpWrite, FD: fd, Data: []byte(strings.Repeat("x", 3000))})
	}
	l.n.RunFor(5 * time.Second)
	for range 3 {
		a := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd, NonBlock: true})
		if a.Err == tcp.OK {
			l.do("server", tcp.Call{Op: tcp.OpRead, FD: tcp.FD(a.Ret), NonBlock: true})
			l.do("server", tcp.Call{Op: tcp.OpClose, FD: tcp.FD(a.Ret)})
		}
	}
	for _, fd := range fds {
		l.do("client", tcp.Call{Op: tcp.OpClose, FD: fd})
	}
	l.do("server", tcp.Call{Op: tcp.OpClose, FD: lfd + 1})
	l.n.RunFor(5 * time.Minute)
	return l.rec.Events
}

func TestDeterminism(t *testing.T) {
	a := scenario(t, 42)
	if len(a) < 200 {
		t.Fatalf("scenario too small: %d events", len(a))
	}
	for run := range 3 {
		b := scenario(t, 42)
		if !reflect.DeepEqual(a, b) {
			for i := range min(len(a), len(b)) {
				if !reflect.DeepEqual(a[i], b[i]) {
					t.Fatalf("run %d differs at event %d:\n%s\n%s", run, i, a[i].String(), b[i].String())
				}
			}
			t.Fatalf("run %d: %d events vs %d", run, len(b), len(a))
		}
	}
	c := scenario(t, 43)
	if reflect.DeepEqual(a, c) {
		t.Error("seeds 42 and 43 give the same trace")
	}
}

// firstISNs returns the ISNs of the client's SYN and the server's SYN-ACK
// in a plain handshake with seed.
func firstISNs(t *testing.T, seed uint64) (wire.Seq, wire.Seq, uint16) {
	l := newLab(t, seed, tcp.Linux(), tcp.Linux())
	l.listen("server", 80, 5)
	l.connect("client", serverAP)
	l.n.RunFor(time.Second)
	syn := l.packets("client", trace.Out, isFlags(wire.SYN))[0].Packet.Segment
	sa := l.packets("server", trace.Out, isFlags(wire.SYN|wire.ACK))[0].Packet.Segment
	return syn.Seq, sa.Seq, syn.SrcPort
}

func TestSeedChangesISNs(t *testing.T) {
	c1, s1, p1 := firstISNs(t, 1)
	c1b, s1b, p1b := firstISNs(t, 1)
	if c1 != c1b || s1 != s1b || p1 != p1b {
		t.Errorf("seed 1 twice: %d/%d/%d vs %d/%d/%d", c1, s1, p1, c1b, s1b, p1b)
	}
	c2, s2, _ := firstISNs(t, 2)
	if c1 == c2 || s1 == s2 {
		t.Errorf("seeds 1 and 2: client ISN %d/%d, server ISN %d/%d", c1, c2, s1, s2)
	}
	if c1 == s1 {
		t.Errorf("client and server share the ISN %d", c1)
	}
	// Hosts with different names get different randomness from one seed.
	n := New(Config{Seed: 1})
	a, _ := n.AddHost("a", clientAddr, tcp.Linux())
	b, _ := n.AddHost("b", serverAddr, tcp.Linux())
	a.Stack.Dial(netip.MustParseAddrPort("10.9.9.9:80"))
	b.Stack.Dial(netip.MustParseAddrPort("10.9.9.9:80"))
	sa := a.Stack.PollSegments(nil)
	sb := b.Stack.PollSegments(nil)
	if len(sa) != 1 || len(sb) != 1 || sa[0].Seq == sb[0].Seq {
		t.Errorf("hosts a and b: SYNs %v %v", sa, sb)
	}
}

func TestSnapshotListener(t *testing.T) {
	l := newLinuxLab(t)
	l.addHost("c2", netip.MustParseAddr("10.0.0.3"), tcp.Linux())
	lfd := l.listen("server", 80, 5)
	big := l.listen("server", 81, 100000)
	l.connect("client", serverAP)
	l.connect("c2", serverAP)
	l.n.RunFor(time.Second)

	socks, err := l.n.Snapshot("server")
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 4 {
		t.Fatalf("server sockets %+v", socks)
	}
	lst := socks[0]
	if lst.State != "LISTEN" || lst.RecvQ != 2 || lst.SendQ != 5 || lst.FD != int(lfd) || lst.Host != "server" ||
		lst.Local != netip.MustParseAddrPort("0.0.0.0:80") || lst.Remote != netip.MustParseAddrPort("0.0.0.0:0") || lst.SynQueue != 0 {
		t.Errorf("listener %+v, want Recv-Q 2 (accept queue), Send-Q 5 (backlog)", lst)
	}
	if b := socks[1]; b.State != "LISTEN" || b.SendQ != 4096 || b.RecvQ != 0 || b.FD != int(big) {
		t.Errorf("listener with backlog 100000: %+v, want Send-Q capped at somaxconn 4096", b)
	}
	for _, s := range socks[2:] {
		if s.State != "ESTABLISHED" || !s.Accepting || s.FD != -1 || s.Parent != lst.Sock || s.Local != serverAP {
			t.Errorf("queued connection %+v", s)
		}
	}
	if socks[2].Remote.Addr() != clientAddr || socks[3].Remote.Addr() != netip.MustParseAddr("10.0.0.3") {
		t.Errorf("queued connections from %v and %v", socks[2].Remote, socks[3].Remote)
	}
	a := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd})
	socks, _ = l.n.Snapshot("server")
	if socks[0].RecvQ != 1 {
		t.Errorf("after accept Recv-Q = %d, want 1", socks[0].RecvQ)
	}
	if socks[2].FD != a.Ret || socks[2].Accepting || socks[2].Parent != socks[0].Sock {
		t.Errorf("accepted socket %+v", socks[2])
	}
	// The client side.
	cs, _ := l.n.Snapshot("client")
	if len(cs) != 1 || cs[0].State != "ESTABLISHED" || cs[0].FD != 3 || cs[0].Remote != serverAP || cs[0].Host != "client" || cs[0].Parent != 0 {
		t.Errorf("client sockets %+v", cs)
	}
}

// TestSnapshotQueues: Recv-Q counts unread bytes, Send-Q unacknowledged
// ones; an unanswered retransmission shows the "on" timer.
func TestSnapshotQueues(t *testing.T) {
	l := newLinuxLab(t)
	lfd := l.listen("server", 80, 5)
	cfd, _ := l.connect("client", serverAP)
	l.n.RunFor(10 * time.Millisecond)
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: []byte("hello")})
	l.n.RunFor(10 * time.Millisecond)
	ss, _ := l.n.Snapshot("server")
	if len(ss) != 2 || ss[1].RecvQ != 5 || ss[1].SendQ != 0 {
		t.Errorf("server sockets %+v, want Recv-Q 5", ss)
	}
	cs, _ := l.n.Snapshot("client")
	if cs[0].SendQ != 0 || cs[0].Timer != "" {
		t.Errorf("client after the ACK: %+v", cs[0])
	}
	l.addRule(Rule{Host: "server", Dir: trace.In, Action: Drop})
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: make([]byte, 100)})
	l.n.RunFor(time.Millisecond)
	cs, _ = l.n.Snapshot("client")
	if cs[0].SendQ != 100 || cs[0].Timer != "on" || cs[0].TimerLeft <= 0 || cs[0].TimerLeft > cs[0].RTO {
		t.Errorf("client with 100 bytes in flight: %+v", cs[0])
	}
	_ = lfd
}

// TestSnapshotTimeWait: after the active close the client keeps a
// TIME_WAIT socket with the "timewait" timer for 60 s.
func TestSnapshotTimeWait(t *testing.T) {
	l := newLinuxLab(t)
	lfd := l.listen("server", 80, 5)
	l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd})
	cfd, _ := l.connect("client", serverAP)
	l.n.RunFor(100 * time.Millisecond)
	l.do("client", tcp.Call{Op: tcp.OpClose, FD: cfd})
	l.n.RunFor(100 * time.Millisecond)
	l.do("server", tcp.Call{Op: tcp.OpClose, FD: lfd + 1})
	// The server's FIN leaves at 0.2 and reaches the client at 0.201.
	l.n.RunUntil(10*time.Second + 201*time.Millisecond)
	cs, _ := l.n.Snapshot("client")
	if len(cs) != 1 {
		t.Fatalf("client sockets %+v", cs)
	}
	s := cs[0]
	if s.State != "TIME_WAIT" || s.Timer != "timewait" || s.TimerLeft != 50*time.Second || s.FD != -1 || s.Remote != serverAP || s.Orphan {
		t.Errorf("TIME_WAIT socket %+v, want timer timewait with 50 s left", s)
	}
	l.n.RunUntil(60*time.Second + 200*time.Millisecond)
	if cs, _ := l.n.Snapshot("client"); len(cs) != 1 || cs[0].TimerLeft != time.Millisecond {
		t.Errorf("1 ms before the end: %+v", cs)
	}
	l.n.RunFor(time.Millisecond)
	if cs, _ := l.n.Snapshot("client"); len(cs) != 0 {
		t.Errorf("TIME_WAIT outlived 60 s: %+v", cs)
	}
	st := l.states("client")
	last := st[len(st)-1]
	if last.State.From != "TIME_WAIT" || last.State.To != "CLOSED" || last.At != 60*time.Second+201*time.Millisecond || last.State.CauseKind != "timer" {
		t.Errorf("last client state change %s", last.String())
	}
	if ss, _ := l.n.Snapshot("server"); len(ss) != 1 || ss[0].State != "LISTEN" {
		t.Errorf("server sockets %+v", ss)
	}
	if !l.n.Idle() {
		t.Errorf("not idle after everything closed; next at %v", func() time.Duration { d, _ := l.n.NextTime(); return d }())
	}
	if v := counter(t, l.n, "client", "TW"); v != 1 {
		t.Errorf("client TW = %d", v)
	}
}

func TestCounters(t *testing.T) {
	l := newLinuxLab(t)
	fresh, err := l.n.Counters("client")
	if err != nil {
		t.Fatal(err)
	}
	all := tcp.Counters()
	if len(fresh) != len(all) {
		t.Fatalf("%d counters, want %d", len(fresh), len(all))
	}
	for i, c := range fresh {
		if c.Name != all[i].String() || c.Value != 0 || c.Delta != 0 {
			t.Errorf("counter %d = %+v, want %s = 0", i, c, all[i])
		}
	}
	lfd := l.listen("server", 80, 5)
	l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd})
	l.connect("client", serverAP)
	l.n.RunFor(time.Second)
	want := map[string][2]int64{ // client, server
		"ActiveOpens":  {1, 0},
		"PassiveOpens": {0, 1},
		"CurrEstab":    {1, 1},
		"AttemptFails": {0, 0},
		"OutSegs":      {2, 1},
		"InSegs":       {1, 2},
		"RetransSegs":  {0, 0},
		"OutRsts":      {0, 0},
	}
	for name, v := range want {
		if got := counter(t, l.n, "client", name); got != v[0] {
			t.Errorf("client %s = %d, want %d", name, got, v[0])
		}
		if got := counter(t, l.n, "server", name); got != v[1] {
			t.Errorf("server %s = %d, want %d", name, got, v[1])
		}
	}
	// Counter events carry the same values as Counters.
	var evs []string
	for _, e := range l.rec.Filter(trace.KindCounter) {
		if e.Counter.Name == "ActiveOpens" || e.Counter.Name == "PassiveOpens" || e.Counter.Name == "CurrEstab" {
			evs = append(evs, e.String())
		}
	}
	wantEvs := []string{
		"0.000000 client counter ActiveOpens +1 = 1",
		"0.002000 client counter CurrEstab +1 = 1",
		"0.003000 server counter PassiveOpens +1 = 1",
		"0.003000 server counter CurrEstab +1 = 1",
	}
	if fmt.Sprint(evs) != fmt.Sprint(wantEvs) {
		t.Errorf("counter events\n%s\nwant\n%s", strings.Join(evs, "\n"), strings.Join(wantEvs, "\n"))
	}
	// The names are in the fixed order on every host.
	a, _ := l.n.Counters("client")
	b, _ := l.n.Counters("server")
	for i := range a {
		if a[i].Name != b[i].Name {
			t.Errorf("counter %d: %s vs %s", i, a[i].Name, b[i].Name)
		}
	}
}

// TestCountersMatchTaps: the stack's segment counters agree with what the
// taps saw over a whole connection life.
func TestCountersMatchTaps(t *testing.T) {
	l := newLinuxLab(t)
	runHutu(l)
	for _, h := range []string{"client", "server"} {
		out := int64(len(l.packets(h, trace.Out, nil)))
		in := int64(len(l.packets(h, trace.In, nil)))
		if v := counter(t, l.n, h, "OutSegs"); v != out {
			t.Errorf("%s OutSegs %d, tap saw %d", h, v, out)
		}
		if v := counter(t, l.n, h, "InSegs"); v != in {
			t.Errorf("%s InSegs %d, tap saw %d", h, v, in)
		}
		if v := counter(t, l.n, h, "CurrEstab"); v != 0 {
			t.Errorf("%s CurrEstab %d after the close", h, v)
		}
	}
}

func TestRunUntilCond(t *testing.T) {
	l := newLinuxLab(t)
	l.listen("server", 80, 5)
	l.connect("client", serverAP)
	connected := func() bool { return len(l.calls("client", "connect")) > 0 }
	calls := 0
	ok := l.n.RunUntilCond(func() bool { calls++; return connected() }, time.Second)
	if !ok || l.n.Now() != 2*time.Millisecond {
		t.Fatalf("RunUntilCond = %v at %v, want true at 2ms", ok, l.n.Now())
	}
	if calls != 3 { // before 0.001, before 0.002, after 0.002
		t.Errorf("cond called %d times", calls)
	}
	// The server's ACK has not been processed yet.
	if st := l.states("server"); st[len(st)-1].State.To != "SYN_RECV" {
		t.Errorf("ran past the instant: %s", st[len(st)-1].String())
	}
	// Already true: no time passes.
	if !l.n.RunUntilCond(connected, time.Hour) || l.n.Now() != 2*time.Millisecond {
		t.Errorf("true condition moved the clock to %v", l.n.Now())
	}
	// Never true: false, and the clock at the limit.
	if l.n.RunUntilCond(func() bool { return false }, 5*time.Second) {
		t.Error("RunUntilCond(false) = true")
	}
	if l.n.Now() != 5*time.Second {
		t.Errorf("clock at %v, want the limit 5s", l.n.Now())
	}
	// True only at the limit itself, with nothing due: checked once more.
	if !l.n.RunUntilCond(func() bool { return l.n.Now() >= 6*time.Second }, 6*time.Second) {
		t.Error("condition true at the limit not reported")
	}
	// A limit in the past leaves the clock alone.
	if l.n.RunUntilCond(func() bool { return false }, time.Second) || l.n.Now() != 6*time.Second {
		t.Errorf("limit in the past: clock at %v", l.n.Now())
	}
}

// TestRunUntilCondTimer stops at a timer instant: the first SYN
// retransmission at exactly 1 s.
func TestRunUntilCondTimer(t *testing.T) {
	l := newLinuxLab(t)
	l.addRule(Rule{Host: "server", Dir: trace.In, Action: Drop})
	l.connect("client", serverAP)
	syns := func() int { return len(l.packets("client", trace.Out, isFlags(wire.SYN))) }
	if !l.n.RunUntilCond(func() bool { return syns() == 3 }, time.Minute) || l.n.Now() != 3*time.Second {
		t.Errorf("third SYN: now %v", l.n.Now())
	}
	if l.n.RunUntilCond(func() bool { return syns() == 4 }, 6999*time.Millisecond) || l.n.Now() != 6999*time.Millisecond {
		t.Errorf("fourth SYN before 7 s: now %v", l.n.Now())
	}
	if !l.n.RunUntilCond(func() bool { return syns() == 4 }, 7*time.Second) || l.n.Now() != 7*time.Second {
		t.Errorf("fourth SYN at 7 s: now %v", l.n.Now())
	}
}

func TestIdleStepNextTime(t *testing.T) {
	l := newLinuxLab(t)
	n := l.n
	if !n.Idle() {
		t.Error("new network not idle")
	}
	if _, ok := n.NextTime(); ok {
		t.Error("NextTime on an idle network")
	}
	if n.Step() {
		t.Error("Step on an idle network")
	}
	l.listen("server", 80, 5)
	if !n.Idle() {
		t.Error("a listener alone keeps the network busy")
	}
	l.connect("client", serverAP)
	if n.Idle() {
		t.Error("idle with a SYN in flight")
	}
	var at []time.Duration
	for n.Now() < 10*time.Millisecond && n.Step() {
		at = append(at, n.Now())
	}
	// 1, 2, 3 ms: the handshake; then the delayed timers of the
	// connections (none for a quiet ESTABLISHED pair).
	if len(at) < 3 || at[0] != time.Millisecond || at[1] != 2*time.Millisecond || at[2] != 3*time.Millisecond {
		t.Errorf("Step instants %v", at)
	}
	if !n.Idle() {
		next, _ := n.NextTime()
		t.Errorf("established idle pair still has work at %v", next)
	}
	// RunFor on an idle network just moves the clock.
	before := len(l.rec.Events)
	n.RunFor(time.Hour)
	if n.Now() != time.Hour+3*time.Millisecond || len(l.rec.Events) != before {
		t.Errorf("RunFor(1h) on an idle network: now %v, %d new events", n.Now(), len(l.rec.Events)-before)
	}
	for _, h := range n.Hosts() {
		if h.Stack.Now() != n.Now() {
			t.Errorf("host %s clock %v, network %v", h.Name, h.Stack.Now(), n.Now())
		}
	}
}

func TestRunUntilLeavesClock(t *testing.T) {
	l := newLinuxLab(t)
	l.n.RunUntil(1500 * time.Millisecond)
	if l.n.Now() != 1500*time.Millisecond {
		t.Errorf("Now = %v", l.n.Now())
	}
	l.n.RunUntil(time.Second) // the past: no effect
	if l.n.Now() != 1500*time.Millisecond {
		t.Errorf("RunUntil in the past moved the clock to %v", l.n.Now())
	}
	l.n.RunFor(500 * time.Millisecond)
	if l.n.Now() != 2*time.Second {
		t.Errorf("Now = %v", l.n.Now())
	}
	// A host added later starts at the network's time.
	h := l.addHost("late", netip.MustParseAddr("10.0.0.9"), tcp.Linux())
	if h.Stack.Now() != 2*time.Second {
		t.Errorf("late host clock %v", h.Stack.Now())
	}
	l.listen("server", 80, 5)
	l.connect("late", serverAP)
	l.n.RunFor(time.Second)
	c := l.calls("late", "connect")
	if len(c) != 1 || c[0].At != 2*time.Second+2*time.Millisecond || c[0].Call.Started != 2*time.Second {
		t.Errorf("late host connect %v", c)
	}
}

// TestSinkOff: without a sink nothing is reported but the network runs the
// same; a sink set later sees what happens from then on.
func TestSinkOff(t *testing.T) {
	n := New(Config{Seed: 1})
	n.AddHost("client", clientAddr, tcp.Linux())
	n.AddHost("server", serverAddr, tcp.Linux())
	l, _ := n.Do("server", tcp.Call{Op: tcp.OpSocket})
	n.Do("server", tcp.Call{Op: tcp.OpListen, FD: tcp.FD(l.Ret), Port: 80, Backlog: 5})
	s, _ := n.Do("client", tcp.Call{Op: tcp.OpSocket})
	n.Do("client", tcp.Call{Op: tcp.OpConnect, FD: tcp.FD(s.Ret), Addr: serverAP})
	n.RunFor(time.Second)
	if cs, _ := n.Snapshot("client"); len(cs) != 1 || cs[0].State != "ESTABLISHED" {
		t.Fatalf("client without a sink: %+v", cs)
	}
	rec := &trace.Recorder{}
	n.SetSink(rec.Sink())
	n.Do("client", tcp.Call{Op: tcp.OpClose, FD: tcp.FD(s.Ret)})
	n.RunFor(10 * time.Millisecond)
	if len(rec.Events) == 0 || rec.Events[0].Seq != 1 || rec.Events[0].At != time.Second {
		t.Fatalf("events after SetSink: %v", rec.Events)
	}
	checkSeqs(t, rec.Events)
	n.SetSink(nil)
	before := len(rec.Events)
	n.RunFor(time.Minute)
	if len(rec.Events) != before {
		t.Errorf("events after SetSink(nil)")
	}
}

// TestHandshake: the first lesson ends right after the handshake
// (3 ms with the default delay) with the connection accepted.
func TestHandshake(t *testing.T) {
	rec := &trace.Recorder{}
	n, err := handshake(Config{Seed: 1}, rec.Sink())
	if err != nil {
		t.Fatal(err)
	}
	if n.Now() != 3*time.Millisecond {
		t.Errorf("handshake ended at %v, want 3ms", n.Now())
	}
	cs, _ := n.Snapshot("client")
	ss, _ := n.Snapshot("server")
	if len(cs) != 1 || cs[0].State != "ESTABLISHED" {
		t.Errorf("client %+v", cs)
	}
	if len(ss) != 2 || ss[0].State != "LISTEN" || ss[0].SendQ != 128 || ss[1].State != "ESTABLISHED" || ss[1].Accepting || ss[1].FD != 4 {
		t.Errorf("server %+v", ss)
	}
	var calls []string
	for _, e := range rec.Filter(trace.KindCall) {
		calls = append(calls, e.String())
	}
	want := []string{
		"0.000000 server call socket() = 3",
		"0.000000 server call listen(3, 128) = 0",
		"0.000000 server call accept(3) blocks",
		"0.000000 client call socket() = 3",
		"0.000000 client call connect(3, 10.0.0.2:80) blocks",
		"0.002000 client call connect(3, 10.0.0.2:80) = 0",
		"0.003000 server call accept(3) = 4",
	}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("calls\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	checkTaps(t, n, rec.Events)
	checkSeqs(t, rec.Events)
	// Same seed, same trace.
	rec2 := &trace.Recorder{}
	if _, err := handshake(Config{Seed: 1}, rec2.Sink()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec.Events, rec2.Events) {
		t.Error("handshake is not deterministic")
	}
}

// handshake sets up the first lesson by hand: a server listens on port 80,
// a client connects, and the three-way handshake completes.
func handshake(cfg Config, sink trace.Sink) (*Network, error) {
	n := New(cfg)
	n.SetSink(sink)
	if _, err := n.AddHost("client", netip.MustParseAddr("10.0.0.1"), tcp.Linux()); err != nil {
		return nil, err
	}
	if _, err := n.AddHost("server", netip.MustParseAddr("10.0.0.2"), tcp.Linux()); err != nil {
		return nil, err
	}
	lfd, _ := n.Do("server", tcp.Call{Op: tcp.OpSocket})
	if r, _ := n.Do("server", tcp.Call{Op: tcp.OpListen, FD: tcp.FD(lfd.Ret), Port: 80, Backlog: 128}); r.Err != tcp.OK {
		return nil, fmt.Errorf("listen: %v", r.Err)
	}
	acc, _ := n.Do("server", tcp.Call{Op: tcp.OpAccept, FD: tcp.FD(lfd.Ret)})
	cfd, _ := n.Do("client", tcp.Call{Op: tcp.OpSocket})
	conn, _ := n.Do("client", tcp.Call{Op: tcp.OpConnect, FD: tcp.FD(cfd.Ret), Addr: netip.MustParseAddrPort("10.0.0.2:80")})
	done := func() bool {
		snap, _ := n.Snapshot("server")
		for _, s := range snap {
			if s.State == "ESTABLISHED" && !s.Accepting {
				return true
			}
		}
		return false
	}
	if !n.RunUntilCond(done, n.Now()+time.Second) {
		return nil, fmt.Errorf("handshake did not complete (connect call %d, accept call %d)", conn.ID, acc.ID)
	}
	return n, nil
}

// A peer receives what reaches it and sends with InjectAt; it has no
// stack, so it makes no calls and answers nothing by itself.
func TestPeer(t *testing.T) {
	l := newEmptyLab(t, 1)
	l.addHost("server", serverAddr, tcp.Linux())
	var got []wire.Segment
	var at []time.Duration
	peer, err := l.n.AddPeer("script", clientAddr, func(s *wire.Segment) {
		got, at = append(got, *s), append(at, l.n.Now())
	})
	if err != nil || !peer.IsPeer() || l.n.Host("server").IsPeer() {
		t.Fatalf("AddPeer: %v", err)
	}
	if _, err := l.n.AddPeer("again", clientAddr, func(*wire.Segment) {}); err == nil {
		t.Error("a second host took the peer's address")
	}
	if _, err := l.n.Do("script", tcp.Call{Op: tcp.OpSocket}); err == nil || !strings.Contains(err.Error(), "peer") {
		t.Errorf("a call on a peer: %v", err)
	}
	if err := l.n.SetDelay("script", "server", 0); err != nil {
		t.Fatal(err)
	}
	l.listen("server", 80, 5)
	syn := wire.Segment{Src: clientAddr, Dst: serverAddr, SrcPort: 4000, DstPort: 80, Seq: 1000, Flags: wire.SYN, Window: 1000}
	if err := l.n.InjectAt(100*time.Millisecond, "script", syn); err != nil {
		t.Fatal(err)
	}
	l.n.RunFor(200 * time.Millisecond)
	if len(got) != 1 || got[0].Flags != wire.SYN|wire.ACK || got[0].Ack != 1001 || at[0] != 100*time.Millisecond {
		t.Fatalf("the peer received %v at %v; want the SYN-ACK at once (no link delay)", got, at)
	}
	if len(l.n.Hosts()) != 1 {
		t.Errorf("Hosts() = %d, want the server only", len(l.n.Hosts()))
	}
}

// Segments own their payloads once anything could make the engines'
// aliasing wrong: a sink (it keeps them), a crafted segment or a peer (an
// ACK that did not come from the receiver). Those already on their way get
// a copy then too.
func TestPayloadsOwnedWhenNeeded(t *testing.T) {
	for _, how := range []string{"sink", "inject", "peer", "none"} {
		t.Run(how, func(t *testing.T) {
			n := New(Config{Seed: 1})
			if _, err := n.AddHost("a", netip.MustParseAddr("10.0.0.1"), tcp.Linux()); err != nil {
				t.Fatal(err)
			}
			if _, err := n.AddHost("b", netip.MustParseAddr("10.0.0.2"), tcp.Linux()); err != nil {
				t.Fatal(err)
			}
			l, _ := n.Do("b", tcp.Call{Op: tcp.OpSocket})
			n.Do("b", tcp.Call{Op: tcp.OpListen, FD: tcp.FD(l.Ret), Port: 80, Backlog: 8})
			c, _ := n.Do("a", tcp.Call{Op: tcp.OpSocket})
			n.Do("a", tcp.Call{Op: tcp.OpConnect, FD: tcp.FD(c.Ret), Addr: netip.MustParseAddrPort("10.0.0.2:80")})
			n.RunFor(10 * time.Millisecond)
			n.Do("a", tcp.Call{Op: tcp.OpWrite, FD: tcp.FD(c.Ret), Data: []byte("in flight")})
			var onWay *item
			for i := range n.q.slots {
				if len(n.q.slots[i].seg.Payload) > 0 {
					onWay = &n.q.slots[i]
				}
			}
			if onWay == nil {
				t.Fatal("no data segment on its way")
			}
			before := &onWay.seg.Payload[0]
			switch how {
			case "sink":
				n.SetSink(func(trace.Event) {})
			case "inject":
				if err := n.Inject("a", wire.Segment{Src: netip.MustParseAddr("10.0.0.66"), Dst: netip.MustParseAddr("10.0.0.2"),
					SrcPort: 1, DstPort: 9, Flags: wire.ACK, TTL: 64}); err != nil {
					t.Fatal(err)
				}
			case "peer":
				if _, err := n.AddPeer("p", netip.MustParseAddr("10.0.0.9"), func(*wire.Segment) {}); err != nil {
					t.Fatal(err)
				}
			}
			want := how != "none"
			if n.owned != want || (&onWay.seg.Payload[0] != before) != want {
				t.Fatalf("owned %v, payload on its way copied %v; want %v", n.owned, &onWay.seg.Payload[0] != before, want)
			}
			if string(onWay.seg.Payload) != "in flight" {
				t.Fatalf("payload %q", onWay.seg.Payload)
			}
		})
	}
}
