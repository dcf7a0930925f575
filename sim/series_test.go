package sim

// Differential tests of InjectSeries: one queue entry that re-arms itself
// must give the trace that count InjectAt calls give, made at the same
// point (the i-th segment at t + i*every from the first's source port plus
// i, wrapping within 1-65535). Two networks built alike run the same
// schedule, one with InjectSeries and one with the loop of InjectAt; their
// traces must be identical event for event. The schedules put series on
// the instants of other queue entries: two series at the same times, a
// series and InjectAt calls made after it for the same instants, a normal
// connection's packets, SYN-ACK retransmission timers, rules that delay,
// duplicate and drop (drawing from the network's RNG in processing
// order), a series from a host that also sends its own packets, and
// intervals equal to the link delay, so that a segment leaves at the very
// instant the previous one's answer arrives. A re-arm that took a fresh
// queue position (n.push) would put a segment after entries scheduled
// after the series for the same instant; the order within the reserved
// numbers (next.seq++) cannot show, since no other entry holds one.

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// seriesInjector schedules count segments from host, the first at t and
// the others every apart, the i-th from the first's source port plus i.
type seriesInjector func(n *Network, t, every time.Duration, count int, host string, seg wire.Segment) error

func viaSeries(n *Network, t, every time.Duration, count int, host string, seg wire.Segment) error {
	return n.InjectSeries(t, every, count, host, seg)
}

// viaLoop is the series spelled out: count InjectAt calls.
func viaLoop(n *Network, t, every time.Duration, count int, host string, seg wire.Segment) error {
	if count < 1 || count > 1 && every <= 0 {
		return fmt.Errorf("bad series")
	}
	for i := range count {
		s := seg
		p := int(seg.SrcPort) + i
		for p > 65535 {
			p -= 65535 // port 0 is skipped: 65535 is followed by 1
		}
		s.SrcPort = uint16(p)
		if err := n.InjectAt(t+time.Duration(i)*every, host, s); err != nil {
			return err
		}
	}
	return nil
}

var (
	seriesAttacker = netip.MustParseAddr("10.0.0.66")
	seriesSpoofed  = netip.MustParseAddr("192.0.2.1") // owned by no host
)

// seriesTrace runs the fixed schedule and returns its trace.
func seriesTrace(t *testing.T, inject seriesInjector) []trace.Event {
	t.Helper()
	l := newLab(t, 3, tcp.Linux(), tcp.Linux())
	l.addHost("attacker", seriesAttacker, tcp.Linux())
	n := l.n
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const d = DefaultDelay // attacker <-> server, attacker <-> client
	must(n.SetDelay("client", "server", 2*d))
	lfd := l.listen("server", 80, 4)
	// A rule on the server's input that draws from the RNG: the order in
	// which packets reach it decides which ones it delays.
	l.addRule(Rule{Host: "server", Dir: trace.In, DstPort: 81, Probability: 0.5, Action: Delay, Delay: d})
	l.addRule(Rule{Host: "client", Dir: trace.In, FlagsMask: wire.RST, FlagsValue: wire.RST, Probability: 0.3, Action: Duplicate})

	// A normal connection: its SYN reaches the server at 2 ms, and its
	// packets keep arriving at even milliseconds.
	cfd, _ := l.connect("client", serverAP)

	syn := func(src netip.Addr, sport, dport uint16) wire.Segment {
		return wire.Segment{Src: src, Dst: serverAddr, SrcPort: sport, DstPort: dport, Seq: 1000, Flags: wire.SYN, Window: 1024}
	}
	ack := func(src netip.Addr, sport, dport uint16) wire.Segment {
		return wire.Segment{Src: src, Dst: serverAddr, SrcPort: sport, DstPort: dport, Seq: 5, Ack: 9, Flags: wire.ACK, Window: 1024}
	}
	// Two series at the same instants, every the link delay: SYNs from an
	// address nobody owns fill the SYN queue (cookies follow), SYNs
	// "from the client" draw SYN-ACKs that the client resets.
	must(inject(n, d, d, 30, "attacker", syn(seriesSpoofed, 1000, 80)))
	must(inject(n, d, d, 30, "attacker", syn(clientAddr, 50000, 80)))
	// InjectAt calls made after the series, for some of their instants.
	for i := range 8 {
		must(n.InjectAt(d+time.Duration(3*i)*d, "attacker", ack(seriesSpoofed, 7000+uint16(i), 81)))
	}
	// A series whose ports wrap past 65535, to a closed port (the server
	// resets; the rule delays half of them).
	must(inject(n, 2*d, d, 12, "attacker", ack(clientAddr, 65530, 81)))
	// Series of one, with and without an interval.
	must(inject(n, 4*d, 0, 1, "attacker", syn(seriesSpoofed, 65535, 80)))
	must(inject(n, 4*d, d, 1, "attacker", syn(seriesSpoofed, 1, 80)))
	// A series from the client itself, every its link delay, on the
	// instants its own packets leave and arrive.
	must(inject(n, 2*d, 2*d, 10, "client", ack(clientAddr, 30000, 81)))

	n.RunFor(20 * time.Millisecond)
	l.do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: []byte(strings.Repeat("x", 3000))})
	// Mid-run: packets are in flight; a series starts on their arrival
	// and goes on with every equal to their link delay.
	now := n.Now()
	must(inject(n, now+2*d, 2*d, 6, "attacker", ack(clientAddr, 40000, 81)))
	must(inject(n, now+2*d, 2*d, 6, "client", ack(clientAddr, 41000, 81)))
	must(n.InjectAt(now+4*d, "client", ack(clientAddr, 42000, 81)))
	n.RunFor(30 * time.Millisecond)

	// The flood's SYN-ACKs are retransmitted after 1 s: a series on the
	// instants of those timers (SYNs reached the server at 2..31 ms).
	must(inject(n, time.Second+2*d, d, 40, "attacker", syn(seriesSpoofed, 65500, 80)))
	must(inject(n, time.Second+2*d, d, 40, "attacker", ack(clientAddr, 20000, 81)))
	n.RunFor(3 * time.Second)
	if r := l.do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd, NonBlock: true}); r.Err == tcp.OK {
		l.do("server", tcp.Call{Op: tcp.OpRead, FD: tcp.FD(r.Ret), NonBlock: true})
		l.do("server", tcp.Call{Op: tcp.OpClose, FD: tcp.FD(r.Ret)})
	}
	l.do("client", tcp.Call{Op: tcp.OpClose, FD: cfd})
	n.RunFor(70 * time.Second)
	l.checkBugs()
	return l.rec.Events
}

func seriesLines(evs []trace.Event) []string {
	out := make([]string, len(evs))
	for i := range evs {
		out[i] = fmt.Sprintf("%d %s", evs[i].Seq, evs[i].String())
	}
	return out
}

// seriesCompare fails the test at the first event where the traces differ.
func seriesCompare(t *testing.T, what string, series, loop []string) {
	t.Helper()
	for i := 0; i < len(series) || i < len(loop); i++ {
		var a, b string
		if i < len(series) {
			a = series[i]
		}
		if i < len(loop) {
			b = loop[i]
		}
		if a == b {
			continue
		}
		from, to := max(0, i-6), i+4
		ctx := func(ls []string) string {
			return strings.Join(ls[min(from, len(ls)):min(to, len(ls))], "\n  ")
		}
		t.Fatalf("%s: traces differ at event %d of %d/%d:\nInjectSeries:\n  %s\nInjectAt loop:\n  %s",
			what, i, len(series), len(loop), ctx(series), ctx(loop))
	}
}

// seriesCrafted counts the crafted packets each host sent (not those a
// rule made), and lists the source ports of the attacker's segments from
// the client's address to port 81 near the top of the port space.
func seriesCrafted(evs []trace.Event) (map[string]int, []uint16) {
	count := map[string]int{}
	var ports []uint16
	for _, e := range evs {
		p := e.Packet
		if e.Kind != trace.KindPacket || p.Dir != trace.Out || !p.Crafted || p.Rule != "" || p.Verdict != trace.VerdictPass {
			continue
		}
		count[e.Host]++
		s := p.Segment
		if e.Host == "attacker" && s.Src == clientAddr && s.DstPort == 81 && (s.SrcPort >= 65530 || s.SrcPort <= 6) {
			ports = append(ports, s.SrcPort)
		}
	}
	return count, ports
}

func TestInjectSeriesMatchesInjectAt(t *testing.T) {
	series := seriesTrace(t, viaSeries)
	loop := seriesTrace(t, viaLoop)
	seriesCompare(t, "fixed schedule", seriesLines(series), seriesLines(loop))

	// The schedule did what it is meant to: every segment left, and the
	// wrapping series went 65530..65535, 1..6.
	count, ports := seriesCrafted(series)
	if count["attacker"] != 30+30+8+12+1+1+6+40+40 || count["client"] != 10+6+1 {
		t.Errorf("crafted segments sent: %v", count)
	}
	want := []uint16{65530, 65531, 65532, 65533, 65534, 65535, 1, 2, 3, 4, 5, 6}
	if fmt.Sprint(ports) != fmt.Sprint(want) {
		t.Errorf("wrapping series from ports %v, want %v", ports, want)
	}
	t.Logf("%d events", len(series))
}

// seriesRandomTrace runs a random schedule of series, InjectAt calls,
// writes on a normal connection and runs of the network, drawn from seed
// alone, so that both networks get the same calls.
func seriesRandomTrace(t *testing.T, seed uint64, inject seriesInjector) []trace.Event {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 0x736572696573))
	l := newLab(t, seed, tcp.Linux(), tcp.Linux())
	l.addHost("attacker", seriesAttacker, tcp.Linux())
	n := l.n
	ms := time.Millisecond
	delay := map[string]time.Duration{"client": time.Duration(1+r.IntN(3)) * ms, "attacker": time.Duration(1+r.IntN(2)) * ms}
	for _, h := range []string{"client", "attacker"} {
		if err := n.SetDelay(h, "server", delay[h]); err != nil {
			t.Fatal(err)
		}
	}
	l.listen("server", 80, 2+r.IntN(6))
	if r.IntN(2) == 0 {
		l.addRule(Rule{Host: "server", Dir: trace.In, Probability: 0.3, Action: Delay, Delay: delay["attacker"]})
	}
	if r.IntN(2) == 0 {
		l.addRule(Rule{Host: "attacker", Dir: trace.Out, Probability: 0.2, Action: Drop})
	}
	cfd, _ := l.connect("client", serverAP)
	srcs := []netip.Addr{seriesSpoofed, clientAddr, seriesAttacker}
	seg := func() wire.Segment {
		s := wire.Segment{Src: srcs[r.IntN(len(srcs))], Dst: serverAddr, DstPort: uint16(80 + r.IntN(2)),
			Seq: wire.Seq(r.Uint32()), Window: 1024}
		if r.IntN(2) == 0 {
			s.Flags = wire.SYN
		} else {
			s.Flags, s.Ack = wire.ACK, wire.Seq(r.Uint32())
		}
		if r.IntN(4) == 0 {
			s.SrcPort = uint16(65535 - r.IntN(20)) // wraps
		} else {
			s.SrcPort = uint16(1 + r.IntN(65535))
		}
		return s
	}
	for round := range 6 {
		if round == 4 {
			// On the instants of the SYN-ACK retransmission timers.
			n.RunUntil(time.Second)
		}
		now := n.Now()
		for range 4 + r.IntN(8) {
			at := now + time.Duration(r.IntN(12))*ms
			switch k := r.IntN(10); {
			case k < 6:
				host := []string{"attacker", "client"}[r.IntN(2)]
				count := 1 + r.IntN(40)
				if r.IntN(5) == 0 {
					count = 1
				}
				every := []time.Duration{delay[host], delay[host], ms, 2 * ms, 3 * ms, 250 * time.Microsecond}[r.IntN(6)]
				if count == 1 && r.IntN(2) == 0 {
					every = 0
				}
				if err := inject(n, at, every, count, host, seg()); err != nil {
					t.Fatal(err)
				}
			case k < 9:
				if err := n.InjectAt(at, []string{"attacker", "client"}[r.IntN(2)], seg()); err != nil {
					t.Fatal(err)
				}
			default:
				l.do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: []byte(strings.Repeat("y", 1+r.IntN(4000))), NonBlock: true})
			}
		}
		n.RunFor(time.Duration(r.IntN(40)) * ms)
	}
	n.RunFor(5 * time.Second)
	l.checkBugs()
	return l.rec.Events
}

func TestInjectSeriesRandomSchedules(t *testing.T) {
	runs := 40
	if testing.Short() {
		runs = 10
	}
	for seed := uint64(1); seed <= uint64(runs); seed++ {
		series := seriesRandomTrace(t, seed, viaSeries)
		loop := seriesRandomTrace(t, seed, viaLoop)
		seriesCompare(t, fmt.Sprintf("seed %d", seed), seriesLines(series), seriesLines(loop))
	}
}
