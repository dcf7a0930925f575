package kernel

import (
	"os"
	"testing"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// The lab's link carries unicast only and IPv6 hosts send no router
// solicitations: the count of IPv6 packets taken in, which calls wait on
// after an inject, moves only with what the scenario sent.
func TestLinkCarriesNoMulticast(t *testing.T) {
	if err := Check(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("this kernel has no IPv6")
	}
	sc, err := scenario.Parse("idle.tcplab", "host a fd00::1\nhost b fd00::2\nhost c 10.0.0.3 fd00::3\nafter 2s\n")
	if err != nil {
		t.Fatal(err)
	}
	b := New(Options{})
	defer func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	if _, err := scenario.Run(sc, b, scenario.Options{Sink: func(trace.Event) {}}); err != nil {
		t.Fatal(err)
	}
	for _, h := range b.hosts {
		if n, ok := b.inReceives(h, 1); !ok || n != 0 {
			t.Errorf("host %s received %d unicast IPv6 packets in 2 s of silence (read: %v)", h.name, n, ok)
		}
	}
}
