package kernel_test

import (
	"os"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// A call made a link delay after an injection sees what the injected
// segment did, in IPv6 and in IPv4 (here to a dual-stack server): the
// call waits until the host has taken the segment in, counted per
// family, and never times out waiting for one that did arrive.
func TestKernelCallAfterInjection(t *testing.T) {
	needKernel(t)
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("this kernel has no IPv6")
	}
	src := `host client fd00::1
host server 10.0.0.2 fd00::2
host old 10.0.0.3
server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: accept as conn2
old: connect server:80
until server: conn2 accept returned within 1s
after 50ms
client: inject [R] spoofing client:conn
old: inject [R] spoofing old:conn
after 2ms
server: read conn nonblock
server: read conn2 nonblock
after 10ms
expect server: conn read = ECONNRESET
expect server: conn2 read = ECONNRESET
`
	sc, err := scenario.Parse("inject-wait.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := scenario.Run(sc, scenario.NewSim(1), scenario.Options{Sink: func(trace.Event) {}}); err != nil || res.Failed() > 0 {
		t.Fatalf("simulator: %v, %d failed%s", err, res.Failed(), failures(res))
	}
	for i := 0; i < 3; i++ {
		res, events := play(t, sc, kernel.Options{})
		if res.Failed() > 0 {
			t.Errorf("run %d: %d of %d expectations failed on the kernel:%s\n%s", i, res.Failed(), len(res.Checks), failures(res), textOf(events, 30))
		}
		for _, e := range events {
			if e.Kind == trace.KindNote && strings.Contains(e.Note, "injected packets had not arrived") {
				t.Errorf("run %d: %s: %s", i, e.Host, e.Note)
			}
		}
	}
}
