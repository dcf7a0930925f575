package capture_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcplab/tcplab/capture"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// explained is a capture's connections and capture-wide findings.
type explained struct {
	conns []capture.Summary
	stats capture.Stats
}

// kinds lists every finding kind, each once, sorted.
func (x *explained) kinds() []string {
	seen := map[string]bool{}
	for _, c := range x.conns {
		for _, f := range c.Findings {
			seen[f.Kind] = true
		}
	}
	for _, f := range x.stats.Findings {
		seen[f.Kind] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (x *explained) find(kind string) *capture.Finding {
	for i := range x.conns {
		for j := range x.conns[i].Findings {
			if x.conns[i].Findings[j].Kind == kind {
				return &x.conns[i].Findings[j]
			}
		}
	}
	for i := range x.stats.Findings {
		if x.stats.Findings[i].Kind == kind {
			return &x.stats.Findings[i]
		}
	}
	return nil
}

// pcapOf writes events as the capture of hosts' taps.
func pcapOf(t *testing.T, hosts []trace.Host, events []trace.Event) []byte {
	t.Helper()
	var pk []trace.Event
	keep := map[string]bool{}
	for _, h := range hosts {
		keep[h.Name] = true
	}
	for _, e := range events {
		if e.Kind == trace.KindPacket && keep[e.Host] {
			pk = append(pk, e)
		}
	}
	var buf bytes.Buffer
	if _, err := trace.WritePcapng(&buf, hosts, pk); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// explainCapture writes events as the capture of hosts' taps and
// explains it.
func explainCapture(t *testing.T, hosts []trace.Host, events []trace.Event) *explained {
	t.Helper()
	x := &explained{}
	st, err := capture.Read(bytes.NewReader(pcapOf(t, hosts, events)), capture.Options{}, func(c *capture.Conn, t0 time.Time) {
		x.conns = append(x.conns, capture.Summarize(c, t0))
	})
	if err != nil {
		t.Fatal(err)
	}
	x.stats = st
	sort.Slice(x.conns, func(i, j int) bool { return x.conns[i].Index < x.conns[j].Index })
	return x
}

func runSim(t *testing.T, sc *scenario.Scenario) ([]trace.Host, []trace.Event) {
	t.Helper()
	var rec trace.Recorder
	if _, err := scenario.Run(sc, scenario.NewSim(1), scenario.Options{Sink: rec.Sink()}); err != nil {
		t.Fatalf("%s: %v", sc.Name, err)
	}
	var hosts []trace.Host
	for _, h := range sc.Hosts {
		hosts = append(hosts, trace.Host{Name: h.Name, Addr: h.Addr.String()})
	}
	return hosts, rec.Events
}

func hostsOf(sc *scenario.Scenario) []trace.Host {
	var hosts []trace.Host
	for _, h := range sc.Hosts {
		hosts = append(hosts, trace.Host{Name: h.Name, Addr: h.Addr.String()})
	}
	return hosts
}

// findingsWanted are the findings each library scenario's capture (both
// hosts' taps) must give, and nothing else.
var findingsWanted = map[string][]string{
	"abortive-close":  {"abortive-close", "zero-window"},
	"accept-overflow": {"abortive-close", "accept-queue-full", "no-end", "syn-unanswered"},
	// The IPv6 and dual-stack variants tell the same stories.
	"accept-overflow-dual-stack": {"abortive-close", "accept-queue-full", "no-end", "syn-unanswered"},
	"handshake-ipv6":             {"no-end"},
	"rst-closed-port-ipv6":       {"no-end", "refused"},
	"time-wait-bind-ipv6":        {"no-end", "time-wait-reuse"},
	"blind-reset":                {"blind-reset"},
	"close-unread-rst":           {"abortive-close"},
	"close-wait-data-loss":       {"close-wait-data-loss", "no-end"},
	"close-wait":                 {"close-wait-held", "fin-wait-2-timeout"},
	"closing":                    {"simultaneous-close"},
	"fin-ack-direct":             nil,
	"fin-wait-1-server-restart":  {"fin-unanswered"},
	"fin-wait-1":                 {"fin-unanswered"},
	"half-close":                 nil,
	"handshake":                  {"no-end"},
	"hutu":                       nil,
	"isn-prediction":             {"blind-reset", "no-end"},
	"keepalive-dead-peer":        {"keepalive", "no-end"},
	"last-ack":                   {"last-ack-lost"},
	"linger-timeout":             {"fin-unanswered", "retransmissions-given-up"},
	"rst-closed-port":            {"no-end", "refused"},
	"simultaneous-open":          {"no-end", "simultaneous-open"},
	"syn-flood":                  {"no-end", "syn-flood", "syn-unanswered", "synack-unanswered"},
	"syn-recv-windows":           {"synack-unanswered"},
	"syn-recv":                   {"synack-unanswered"},
	"syn-sent":                   {"syn-unanswered"},
	"time-wait-bind":             {"no-end", "time-wait-reuse"},
	"time-wait":                  {"last-ack-lost"},
}

// Every library scenario's capture gives exactly the findings its story
// has, and every finding kind is made by some scenario.
func TestFindingsOnLibrary(t *testing.T) {
	lib, err := scenario.Library()
	if err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	for _, sc := range lib {
		want, ok := findingsWanted[sc.Name]
		if !ok {
			t.Errorf("%s: no findings listed for it in findingsWanted", sc.Name)
			continue
		}
		hosts, events := runSim(t, sc)
		x := explainCapture(t, hosts, events)
		got := x.kinds()
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: findings %v, want %v", sc.Name, got, want)
		}
		for _, k := range got {
			made[k] = true
		}
		for _, c := range x.conns {
			for _, f := range c.Findings {
				if len(f.Frames) == 0 || f.Summary == "" || len(f.Explain) < 80 || f.Scenario == "" {
					t.Errorf("%s #%d: finding %s lacks evidence, summary, explanation or scenario: %+v", sc.Name, c.Index, f.Kind, f)
				}
			}
		}
	}
	for _, k := range capture.Kinds {
		if !made[k.Kind] {
			t.Errorf("finding %s: no library scenario makes it", k.Kind)
		}
	}
}

// The scenario each finding names reproduces it: its capture gives that
// finding.
func TestFindingScenariosReproduce(t *testing.T) {
	for _, k := range capture.Kinds {
		sc, err := scenario.Load(k.Scenario)
		if err != nil {
			t.Fatalf("%s: %v", k.Kind, err)
		}
		hosts, events := runSim(t, sc)
		if explainCapture(t, hosts, events).find(k.Kind) == nil {
			t.Errorf("finding %s names scenario %s, whose capture does not show it", k.Kind, k.Scenario)
		}
	}
}

// Details the findings must get right.
func TestFindingDetails(t *testing.T) {
	get := func(name string, oneTap bool) *explained {
		sc, err := scenario.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		hosts, events := runSim(t, sc)
		if oneTap {
			hosts = hosts[:1]
		}
		return explainCapture(t, hosts, events)
	}
	// The SYN's timeline is Linux's; the Windows server's SYN-ACKs are
	// Windows'.
	if f := get("syn-sent", false).find("syn-unanswered"); f == nil || !strings.Contains(f.Explain, "follow linux's timeline") || len(f.Frames) < 7 {
		t.Errorf("syn-sent: %+v", f)
	}
	if f := get("syn-recv-windows", false).find("synack-unanswered"); f == nil || !strings.Contains(f.Explain, "follow windows-classic's timeline") || f.Scenario != "syn-recv-windows" {
		t.Errorf("syn-recv-windows: %+v", f)
	}
	if f := get("syn-recv", false).find("synack-unanswered"); f == nil || !strings.Contains(f.Explain, "follow linux's timeline") || f.Scenario != "syn-recv" {
		t.Errorf("syn-recv: %+v", f)
	}
	// The flood: 50 spoofed SYNs on each of two ports.
	x := get("syn-flood", false)
	if len(x.stats.Findings) != 2 || x.stats.Findings[0].Conns < 50 {
		t.Errorf("syn-flood: capture-wide findings %+v", x.stats.Findings)
	}
	// The forged RST that hit is told apart from the client's own.
	if f := get("blind-reset", false).find("blind-reset"); f == nil || !strings.Contains(f.Explain, "hit the exact number") {
		t.Errorf("blind-reset: %+v", f)
	}
	// close() with unread data names its own scenario.
	if f := get("close-unread-rst", false).find("abortive-close"); f == nil || f.Scenario != "close-unread-rst" || f.End != "server" {
		t.Errorf("close-unread-rst: %+v", f)
	}
	// The dead peer: probes unanswered, then the connection ends, and no
	// abortive close is claimed for keepalive's own RST.
	x = get("keepalive-dead-peer", false)
	if f := x.find("keepalive"); f == nil || !strings.Contains(f.Summary, "the peer is dead") {
		t.Errorf("keepalive-dead-peer: %+v", f)
	}
	// With the client's tap alone the stories still hold.
	for name, kind := range map[string]string{"syn-sent": "syn-unanswered", "rst-closed-port": "refused", "close-wait-data-loss": "close-wait-data-loss",
		"keepalive-dead-peer": "keepalive", "abortive-close": "zero-window", "accept-overflow": "accept-queue-full"} {
		if get(name, true).find(kind) == nil {
			t.Errorf("%s, client's tap alone: no %s finding", name, kind)
		}
	}
}

// A capture with neither findings nor connections says so; a stray
// packet alone is a connection with no end.
func TestFindingsEmpty(t *testing.T) {
	x := explainCapture(t, []trace.Host{{Name: "client", Addr: "10.0.0.1"}}, nil)
	if len(x.conns) != 0 || len(x.stats.Findings) != 0 {
		t.Errorf("empty capture: %+v", x)
	}
}

// --scenario: for every connection of every library scenario's capture,
// the scenario explain writes parses, runs in the simulator with every
// expectation held (the states explain inferred), and its own capture
// gives the connection's findings again.
func TestScenarioReplays(t *testing.T) {
	lib, err := scenario.Library()
	if err != nil {
		t.Fatal(err)
	}
	replayed, same := 0, 0
	for _, sc := range lib {
		hosts, events := runSim(t, sc)
		var conns []*capture.Conn
		if _, err := capture.Read(bytes.NewReader(pcapOf(t, hosts, events)), capture.Options{Events: true}, func(c *capture.Conn, _ time.Time) { conns = append(conns, c) }); err != nil {
			t.Fatal(err)
		}
		for _, c := range conns {
			src := capture.Scenario(c, sc.Name+".pcapng")
			name := fmt.Sprintf("%s-%d", sc.Name, c.Index)
			rsc, err := scenario.Parse(name, src)
			if err != nil {
				t.Errorf("%s: the scenario does not parse: %v\n%s", name, err, src)
				continue
			}
			var rec trace.Recorder
			if _, err := scenario.Run(rsc, scenario.NewSim(1), scenario.Options{Sink: rec.Sink()}); err != nil {
				t.Errorf("%s: the replay does not run: %v\n%s", name, err, src)
				continue
			}
			rh, rev := hostsOf(rsc), rec.Events
			var res struct{ failed []string }
			for _, e := range rev {
				if e.Kind == trace.KindCheck && !e.Check.OK {
					res.failed = append(res.failed, e.Check.Text+" (seen "+e.Check.Seen+")")
				}
			}
			replayed++
			if len(res.failed) > 0 {
				t.Errorf("%s: the replay does not tell the same story: %s\n%s", name, strings.Join(res.failed, "; "), src)
				continue
			}
			// The replayed connection is the one from the same client port.
			var want []string
			for _, f := range c.Findings {
				// A replay is one connection: the next one that reuses its
				// 4-tuple is not in it.
				if f.Kind != "no-end" && f.Kind != "time-wait-reuse" {
					want = append(want, f.Kind)
				}
			}
			sort.Strings(want)
			x := explainCapture(t, rh, rev)
			var got []string
			for _, rc := range x.conns {
				if rc.Client.Port() == c.Client.Addr.Port() && rc.Server.Port() == c.Server.Addr.Port() {
					for _, f := range rc.Findings {
						if f.Kind != "no-end" {
							got = append(got, f.Kind)
						}
					}
				}
			}
			sort.Strings(got)
			got = dedupeStrings(got)
			if strings.Join(got, " ") == strings.Join(dedupeStrings(want), " ") {
				same++
			} else {
				t.Logf("%s: replay findings %v, capture's %v", name, got, want)
			}
		}
	}
	t.Logf("%d connections replayed, every expectation held; %d gave the same findings", replayed, same)
	if same < replayed*9/10 {
		t.Errorf("only %d of %d replays gave the same findings", same, replayed)
	}
}

func dedupeStrings(xs []string) []string {
	var out []string
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// FuzzInference feeds the tracker arbitrary exchanges between two ends
// (flags, numbers near each end's own, lengths, taps, gaps): no panic,
// every connection summarized with its findings, and the scenario
// --scenario writes for it always parses (that it runs, and tells the
// same story, is TestScenarioReplays' on real exchanges).
func FuzzInference(f *testing.F) {
	f.Add([]byte{0x02, 0, 0, 0, 0, 0, 0, 1, 0x12, 1, 0, 0, 0, 1, 0, 1, 0x10, 0, 0, 1, 0, 1, 0, 1, 0x11, 0, 0, 1, 0, 1, 0, 200})
	f.Add([]byte{0x02, 2, 0, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 0, 0, 3, 0x04, 1, 0, 9, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		cli, srv := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80")
		var conns []*capture.Conn
		tr := capture.NewTracker(capture.Options{Events: true}, func(c *capture.Conn) { conns = append(conns, c) })
		at := time.Unix(1000, 0)
		for i := 0; i+8 <= len(b) && i < 8*2000; i += 8 {
			r := b[i : i+8]
			from, to, base := cli, srv, wire.Seq(1000)
			if r[1]&1 != 0 {
				from, to, base = srv, cli, wire.Seq(900000)
			}
			at = at.Add(time.Duration(r[7]) * time.Millisecond)
			p := capture.Packet{Frame: i/8 + 1, Time: at, Iface: int(r[1]>>1) & 1, Len: int(r[6]),
				Segment: wire.Segment{Src: from.Addr(), Dst: to.Addr(), SrcPort: from.Port(), DstPort: to.Port(),
					Seq:   base.Add(int(int16(binary.BigEndian.Uint16(r[2:4])))),
					Ack:   wire.Seq(1000 + 900000 - uint32(base)).Add(int(int16(binary.BigEndian.Uint16(r[4:6])))),
					Flags: wire.Flags(r[0]) & (wire.SYN | wire.ACK | wire.FIN | wire.RST | wire.PSH), Window: uint16(r[6]) * 8,
					ID: uint16(i)}}
			tr.Add(&p)
		}
		tr.Flush()
		_ = tr.Findings()
		for _, c := range conns {
			s := capture.Summarize(c, time.Unix(1000, 0))
			var out bytes.Buffer
			s.WriteTimeline(&out)
			src := capture.Scenario(c, "fuzz.pcap")
			sc, err := scenario.Parse("fuzz.tcplab", src)
			if err != nil {
				t.Fatalf("the scenario of connection #%d does not parse: %v\n%s", c.Index, err, src)
			}
			_ = sc
		}
	})
}

// A capture that starts mid-connection (hutu's without its handshake)
// replays: the connection is opened at the start, the server's calls wait
// for its accept, and the run has no error.
func TestScenarioMidConnection(t *testing.T) {
	sc, err := scenario.Load("hutu")
	if err != nil {
		t.Fatal(err)
	}
	hosts, events := runSim(t, sc)
	var pk []trace.Event
	skipped := 0
	for _, e := range events {
		if e.Kind == trace.KindPacket && e.Packet.Segment.Flags&wire.SYN != 0 {
			continue
		}
		if e.Kind == trace.KindPacket && e.Packet.Segment.Flags == wire.ACK && len(e.Packet.Segment.Payload) == 0 && skipped < 2 {
			skipped++ // the handshake's ACK, at both taps
			continue
		}
		pk = append(pk, e)
	}
	var conns []*capture.Conn
	if _, err := capture.Read(bytes.NewReader(pcapOf(t, hosts, pk)), capture.Options{Events: true}, func(c *capture.Conn, _ time.Time) { conns = append(conns, c) }); err != nil || len(conns) != 1 {
		t.Fatalf("%d connections, %v", len(conns), err)
	}
	src := capture.Scenario(conns[0], "mid.pcapng")
	rsc, err := scenario.Parse("mid.tcplab", src)
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	res, err := scenario.Run(rsc, scenario.NewSim(1), scenario.Options{})
	if err != nil || !strings.Contains(src, "mid-connection") {
		t.Fatalf("%v\n%s", err, src)
	}
	t.Logf("%d of %d expectations held", len(res.Checks)-res.Failed(), len(res.Checks))
}

// tcpdump -i any on loopback sees every packet twice on one interface:
// the copies are taken once, and the story is the same.
func TestSameInterfaceCopies(t *testing.T) {
	sc, err := scenario.Load("hutu")
	if err != nil {
		t.Fatal(err)
	}
	hosts, events := runSim(t, sc)
	hosts = hosts[:1]
	var once, twice []trace.Event
	for _, e := range events {
		if e.Kind == trace.KindPacket && e.Host == "client" {
			// Linux numbers its packets (IP ID): a copy has the same.
			pk := *e.Packet
			pk.Segment.ID = uint16(len(once) + 1)
			e.Packet = &pk
			once = append(once, e)
			twice = append(twice, e)
			c := e
			c.At += 10 * time.Microsecond
			twice = append(twice, c)
		}
	}
	a, b := explainCapture(t, hosts, once), explainCapture(t, hosts, twice)
	if len(a.conns) != 1 || len(b.conns) != 1 {
		t.Fatalf("%d and %d connections", len(a.conns), len(b.conns))
	}
	x, y := a.conns[0], b.conns[0]
	story := func(ls []capture.StateLine) string { // without frame numbers: the copies are frames too
		var b strings.Builder
		for _, l := range ls {
			fmt.Fprintf(&b, "%v %s>%s (%s); ", l.At, l.From, l.To, l.Cause)
		}
		return b.String()
	}
	if story(x.ClientStates)+story(x.ServerStates) != story(y.ClientStates)+story(y.ServerStates) || y.Packets != x.Packets || y.DupPackets != x.Packets {
		t.Errorf("once: %v %v (%d packets)\ntwice: %v %v (%d packets, %d copies)", x.ClientStates, x.ServerStates, x.Packets, y.ClientStates, y.ServerStates, y.Packets, y.DupPackets)
	}
}

// seg is one packet of a hand-made exchange between 10.0.0.1:40000
// (client) and 10.0.0.2:80: numbers are relative to ISNs 1000 (client)
// and 5000 (server).
type seg struct {
	at       time.Duration
	cli      bool
	flags    wire.Flags
	seq, ack uint32
	n        int
}

func handMade(t *testing.T, segs []seg) *explained {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriterNanos(&buf)
	if err := w.WriteFileHeader(65536, layers.LinkTypeRaw); err != nil {
		t.Fatal(err)
	}
	cli, srv := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80")
	for i, s := range segs {
		x := wire.Segment{Src: cli.Addr(), Dst: srv.Addr(), SrcPort: cli.Port(), DstPort: srv.Port(), Flags: s.flags, Window: 500, TTL: 64,
			ID: uint16(i + 1), Seq: wire.Seq(1000 + s.seq), Ack: wire.Seq(5000 + s.ack), Payload: make([]byte, s.n)}
		if !s.cli {
			x.Src, x.Dst, x.SrcPort, x.DstPort = srv.Addr(), cli.Addr(), srv.Port(), cli.Port()
			x.Seq, x.Ack = wire.Seq(5000+s.seq), wire.Seq(1000+s.ack)
		}
		if s.flags&wire.ACK == 0 {
			x.Ack = 0
		}
		b, err := x.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1000, 0).Add(s.at), CaptureLength: len(b), Length: len(b)}, b); err != nil {
			t.Fatal(err)
		}
	}
	x := &explained{}
	st, err := capture.Read(&buf, capture.Options{}, func(c *capture.Conn, t0 time.Time) { x.conns = append(x.conns, capture.Summarize(c, t0)) })
	if err != nil {
		t.Fatal(err)
	}
	x.stats = st
	return x
}

// Stories an ordinary network tells, which must not be read as
// failures, and failures that must not be missed (from two reviews).
func TestHandMadeStories(t *testing.T) {
	ms := time.Millisecond
	S, SA, A, PA, FA := wire.SYN, wire.SYN|wire.ACK, wire.ACK, wire.PSH|wire.ACK, wire.FIN|wire.ACK
	hs := []seg{{0, true, S, 0, 0, 0}, {ms, false, SA, 0, 1, 0}, {2 * ms, true, A, 1, 1, 0}}
	cases := []struct {
		name      string
		segs      []seg
		want, not []string
	}{
		{"the first SYN dropped at a full queue, then the ACK too", []seg{{0, true, S, 0, 0, 0}, {time.Second, true, S, 0, 0, 0},
			{time.Second + ms, false, SA, 0, 1, 0}, {time.Second + 2*ms, true, A, 1, 1, 0}, {2*time.Second + ms, false, SA, 0, 1, 0},
			{2*time.Second + 2*ms, true, A, 1, 1, 0}, {10 * time.Second, true, A, 1, 1, 0}}, []string{"accept-queue-full"}, nil},
		{"a second SYN-ACK answers a second SYN", []seg{{0, true, S, 0, 0, 0}, {time.Second, true, S, 0, 0, 0},
			{time.Second + 200*ms, false, SA, 0, 1, 0}, {time.Second + 201*ms, true, A, 1, 1, 0}, {time.Second + 202*ms, false, SA, 0, 1, 0},
			{time.Second + 203*ms, true, A, 1, 1, 0}}, nil, []string{"accept-queue-full"}},
		{"data retried four times, the capture cut", append(append([]seg{}, hs...), seg{10 * ms, true, PA, 1, 1, 100},
			seg{210 * ms, true, PA, 1, 1, 100}, seg{610 * ms, true, PA, 1, 1, 100}, seg{1410 * ms, true, PA, 1, 1, 100}), nil, []string{"retransmissions-given-up"}},
		{"a half-close, the server still sending", append(append([]seg{}, hs...), seg{10 * ms, true, FA, 1, 1, 0}, seg{11 * ms, false, A, 1, 2, 0},
			seg{20 * time.Second, false, PA, 1, 2, 1000}, seg{20*time.Second + ms, true, A, 2, 1001, 0}), nil, []string{"close-wait-held"}},
		{"a handshake cut by the capture's end", []seg{{0, true, S, 0, 0, 0}}, nil, []string{"syn-unanswered"}},
		{"a SYN unanswered for 3 s", []seg{{0, true, S, 0, 0, 0}, {time.Second, true, S, 0, 0, 0}, {3 * time.Second, true, S, 0, 0, 0}}, []string{"syn-unanswered"}, nil},
	}
	for _, c := range cases {
		x := handMade(t, c.segs)
		got := strings.Join(x.kinds(), " ")
		for _, k := range c.want {
			if x.find(k) == nil {
				t.Errorf("%s: no %s (findings: %s)", c.name, k, got)
			}
		}
		for _, k := range c.not {
			if x.find(k) != nil {
				t.Errorf("%s: %s (findings: %s)", c.name, k, got)
			}
		}
	}
	// SYNs at 0, 1 and 3 s, the capture ending there: Linux's connect()
	// gives up at 127 s, not when the next retry was due.
	x := handMade(t, []seg{{0, true, S, 0, 0, 0}, {time.Second, true, S, 0, 0, 0}, {3 * time.Second, true, S, 0, 0, 0}})
	if cs := x.conns[0].ClientStates; cs[len(cs)-1].At != 127*time.Second {
		t.Errorf("the client gives up at %v", cs[len(cs)-1].At)
	}
}
