package kernel_test

import (
	"os"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// A duplicate rule on output, in IPv4 and in IPv6: the SYN it takes
// reaches the server twice. The rule after it, which would drop every
// SYN, sees neither the SYN (the first rule that acts decides) nor its
// copy. The trace marks both the packet and its copy with the rule, as
// the simulator does.
func TestKernelDuplicateRule(t *testing.T) {
	needKernel(t)
	for _, fam := range []struct{ name, client, server string }{
		{"IPv4", "10.0.0.1", "10.0.0.2"},
		{"IPv6", "fd00::1", "fd00::2"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil && fam.name == "IPv6" {
				t.Skip("this kernel has no IPv6")
			}
			src := `host client ` + fam.client + `
host server ` + fam.server + `
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
`
			sc, err := scenario.Parse("dup.tcplab", src)
			if err != nil {
				t.Fatal(err)
			}
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
				dups := 0
				for _, e := range events {
					if e.Kind == trace.KindPacket && e.Host == "client" && e.Packet.Dir == trace.Out && e.Packet.Verdict == trace.VerdictDup {
						if !strings.HasPrefix(e.Packet.Rule, "#1 ") {
							t.Errorf("%s: the copy is marked by %q", res.Backend, e.Packet.Rule)
						}
						dups++
					}
				}
				if dups != 2 {
					t.Errorf("%s: %d departures marked duplicate, want the SYN and its copy", res.Backend, dups)
				}
			}
		})
	}
}
