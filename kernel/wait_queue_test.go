package kernel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcplab/tcplab/inspect"
)

// A request joins the queue of the listener that takes it: an IPv4 one
// the port's AF_INET listener when there is one, else the dual-stack
// AF_INET6 listener; an IPv6 one always the AF_INET6 listener.
func TestQueueOf(t *testing.T) {
	ap := netip.MustParseAddrPort
	shared := v4Listeners([]inspect.Socket{
		{State: inspect.Listen, Local: ap("0.0.0.0:80")},
		{State: inspect.Listen, Local: ap("[::]:80")},
		{State: inspect.Listen, Local: ap("[::]:81")},
		{State: inspect.NewSynRecv, Local: ap("10.0.0.2:82")},
	})
	if len(shared) != 1 || !shared[80] {
		t.Fatalf("AF_INET listeners: %v", shared)
	}
	for _, c := range []struct {
		local string
		want  lkey
	}{
		{"10.0.0.2:80", listenerQueue(ap("0.0.0.0:80"))},
		{"[::ffff:10.0.0.2]:80", listenerQueue(ap("0.0.0.0:80"))},
		{"[fd00::2]:80", listenerQueue(ap("[::]:80"))},
		{"10.0.0.2:81", listenerQueue(ap("[::]:81"))},
		{"[fd00::2]:81", listenerQueue(ap("[::]:81"))},
	} {
		if got := queueOf(ap(c.local), shared); got != c.want {
			t.Errorf("a request to %s joins %v, want %v", c.local, got, c.want)
		}
	}
	if listenerQueue(ap("0.0.0.0:80")) == listenerQueue(ap("[::]:80")) {
		t.Error("two listeners of one port share a queue")
	}
}

// A call waits for the injected packets due by its time (sent a link
// delay earlier), not for those still on their way.
func TestDueBy(t *testing.T) {
	ms := time.Millisecond
	owed := []time.Duration{10 * ms, 11 * ms, 11 * ms, 15 * ms}
	for _, c := range []struct {
		now  time.Duration
		want int
	}{{9 * ms, 0}, {10 * ms, 1}, {11 * ms, 3}, {14 * ms, 3}, {15 * ms, 4}, {time.Hour, 4}} {
		if got := dueBy(owed, c.now); got != c.want {
			t.Errorf("at %v: %d due, want %d", c.now, got, c.want)
		}
	}
	if dueBy(nil, time.Hour) != 0 {
		t.Error("nothing owed, something due")
	}
}
