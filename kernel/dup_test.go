package kernel_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Duplicate rules on output, in IPv4 and in IPv6, on both backends:
//   - the client's SYN reaches the server twice; the rule after the
//     duplicate one, which would drop every SYN, sees neither the SYN
//     (the first rule that acts decides) nor its copy;
//   - a SYN-ACK to a spoofed address no host has goes out twice, both
//     lost;
//   - a crafted SYN and its copy are both crafted.
//
// The trace marks each packet and its copy with the rule.
func TestKernelDuplicateRule(t *testing.T) {
	needKernel(t)
	for _, c := range []struct {
		name, dupHost, src string
		dups               int // departures the rule marks
	}{
		{"IPv4", "client", `host client 10.0.0.1
host server 10.0.0.2
server: listen 80
server: accept
rule client out flags [S] count 1 duplicate
rule client out flags [S] drop
client: connect server:80
until server: conn accept returned within 1s
after 100ms
expect server: packets in [S] = 2
expect client: packets out [S] = 2
expect server: conn state ESTABLISHED
expect client: conn state ESTABLISHED
`, 2},
		{"IPv6", "client", `host client fd00::1
host server fd00::2
server: listen 80
server: accept
rule client out flags [S] count 1 duplicate
rule client out flags [S] drop
client: connect server:80
until server: conn accept returned within 1s
after 100ms
expect server: packets in [S] = 2
expect client: packets out [S] = 2
expect server: conn state ESTABLISHED
expect client: conn state ESTABLISHED
`, 2},
		{"lost", "server", `host attacker 10.0.0.3
host server 10.0.0.2
server: listen 80
rule server out flags [S.] count 1 duplicate
attacker: inject [S] from 10.0.9.1:1000 to server:80
after 100ms
expect server: packets out [S.] = 2
`, 2},
		{"crafted", "attacker", `host attacker 10.0.0.3 fd00::3
host server 10.0.0.2 fd00::2
server: listen 80
rule attacker out flags [S] duplicate
attacker: inject [S] from attacker:1000 to server:80
attacker: inject [S] from [fd00::3]:1001 to [fd00::2]:80
after 100ms
expect server: packets in [S] = 4
expect server: packets out [S.] = 4
`, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil && strings.Contains(c.src, "fd00::") {
				t.Skip("this kernel has no IPv6")
			}
			sc, err := scenario.Parse("dup.tcplab", c.src)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, b := range []scenario.Backend{scenario.NewSim(1), nil} {
				var events []trace.Event
				var res *scenario.Result
				if b == nil {
					res, events = play(t, sc, kernel.Options{})
				} else {
					var rec trace.Recorder
					if res, err = scenario.Run(sc, b, scenario.Options{Sink: rec.Sink()}); err != nil {
						t.Fatal(err)
					}
					events = rec.Events
				}
				if res.Failed() > 0 {
					t.Errorf("%s: %d of %d expectations failed:%s\n%s", res.Backend, res.Failed(), len(res.Checks), failures(res), textOf(events, 40))
				}
				var got []string
				for _, e := range events {
					if e.Kind == trace.KindPacket && e.Host == c.dupHost && e.Packet.Dir == trace.Out {
						p := e.Packet
						got = append(got, strings.Join([]string{p.Segment.Flags.String(), p.Verdict, p.Rule,
							map[bool]string{true: "crafted"}[p.Crafted], map[bool]string{true: "lost"}[p.Lost != ""]}, " "))
					}
				}
				if want == nil {
					want = got
					dups, crafted, lost := 0, 0, 0
					for _, g := range got {
						if strings.Contains(g, " duplicate #1 ") {
							dups++
						}
						if strings.HasSuffix(g, " crafted ") {
							crafted++
						}
						if strings.HasSuffix(g, " lost") {
							lost++
						}
					}
					wantCrafted, wantLost := 0, 0
					switch c.name {
					case "crafted":
						wantCrafted = 4
					case "lost":
						wantLost = 2
					}
					if dups != c.dups || crafted != wantCrafted || lost != wantLost {
						t.Errorf("%s: %d departures marked duplicate (want %d), %d crafted (want %d), %d lost (want %d): %q",
							res.Backend, dups, c.dups, crafted, wantCrafted, lost, wantLost, got)
					}
				} else if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("the %s's departures:\nsimulator %q\n%s %q", c.dupHost, want, res.Backend, got)
				}
			}
		})
	}
}

// A duplicate rule added, and one removed, while a SYN flood goes on:
// the trace marks exactly the SYN-ACKs Linux copied (those that left
// twice), though the packets captured around each change are read after
// it.
func TestKernelDuplicateRuleChanges(t *testing.T) {
	needKernel(t)
	src := `host server 10.0.0.2
host attacker 10.0.0.3
set server tcp_syncookies 2
server: listen 80
rule server out flags [S.] dst 10.0.9.2 duplicate as d
attacker: inject [S] from 10.0.9.1:1000 to server:80 count 300 every 50us
attacker: inject [S] from 10.0.9.2:2000 to server:80 count 300 every 50us
after 8ms
rule server out flags [S.] dst 10.0.9.1 count 3 duplicate
remove rule d
after 30ms
`
	sc, err := scenario.Parse("dup-changes.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	for run := 0; run < 2; run++ {
		res, events := play(t, sc, kernel.Options{})
		if res.Failed() > 0 {
			t.Fatalf("%d expectations failed:%s", res.Failed(), failures(res))
		}
		sent, marked := map[netip.AddrPort]int{}, map[netip.AddrPort]int{}
		for _, e := range events {
			if e.Kind == trace.KindPacket && e.Host == "server" && e.Packet.Dir == trace.Out && e.Packet.Segment.Flags == wire.SYN|wire.ACK {
				port := netip.AddrPortFrom(e.Packet.Segment.Dst, e.Packet.Segment.DstPort)
				sent[port]++
				if e.Packet.Verdict == trace.VerdictDup {
					marked[port]++
				}
			}
		}
		twice, wrong := 0, 0
		for port, n := range sent {
			if n > 2 || n == 2 && marked[port] != 2 || n == 1 && marked[port] != 0 {
				wrong++
				if wrong <= 5 {
					t.Errorf("run %d: to %v: %d SYN-ACKs, %d marked duplicate", run, port, n, marked[port])
				}
			}
			if n == 2 {
				twice++
			}
		}
		if twice == 0 || wrong > 0 {
			t.Errorf("run %d: %d ports got two SYN-ACKs, %d marked wrong, of %d", run, twice, wrong, len(sent))
		}
	}
}
