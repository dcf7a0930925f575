package kernel_test

import (
	"os"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// IPv6 and dual-stack hosts on Linux: a handshake, data and close in IPv6;
// an IPv4 client of a dual-stack listener, whose connection the server
// sees IPv4-mapped and which travels in IPv4; a v6only listener that an
// IPv4 client finds closed; and a firewall rule on an IPv6 prefix. Every
// expectation written for the simulator holds on the kernel.
func TestKernelIPv6(t *testing.T) {
	needKernel(t)
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("this kernel has no IPv6")
	}
	src := `host client fd00::1
host old 10.0.0.3
host server 10.0.0.2 fd00::2
host strict 10.0.0.5 fd00::5
server: listen 80
strict: listen 80 v6only
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: accept as conn2
old: connect server:80
until server: conn2 accept returned within 1s
old: connect strict:80 as refused
until old: refused connect returned within 1s
client: write conn "hi"
old: write conn "hello"
after 100ms
server: read conn
server: read conn2
client: close conn
old: close conn
after 100ms
server: close conn
server: close conn2
rule strict in src fd00::/64 flags SYN drop
client: connect [fd00::5]:80 nonblock as dropped
rule server in dport 81 flags SYN drop
client: connect server:81 nonblock as silent
client: inject [S] from client:7000 to server:80
after 200ms
expect client: silent state SYN_SENT
expect client: packets out [R] = 1
expect client: conn path SYN_SENT ESTABLISHED FIN_WAIT1 FIN_WAIT2 TIME_WAIT
expect server: conn path SYN_RECV ESTABLISHED CLOSE_WAIT LAST_ACK CLOSED
expect server: conn read = 2
expect old: conn path SYN_SENT ESTABLISHED FIN_WAIT1 FIN_WAIT2 TIME_WAIT
expect server: conn2 path SYN_RECV ESTABLISHED CLOSE_WAIT LAST_ACK CLOSED
expect server: conn2 read = 5
expect old: refused connect = ECONNREFUSED
expect client: dropped state SYN_SENT
expect client: packets out [S] = 4
`
	sc, err := scenario.Parse("ipv6.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	res, events := play(t, sc, kernel.Options{})
	if res.Failed() > 0 {
		t.Errorf("%d of %d expectations failed on the kernel:%s\nthe run:\n%s", res.Failed(), len(res.Checks), failures(res), textOf(events, 80))
	}
	var v6, v4, mapped int
	for _, e := range events {
		switch {
		case e.Kind == trace.KindPacket && e.Packet.Segment.IsIPv6():
			v6++
		case e.Kind == trace.KindPacket:
			v4++
		case e.Kind == trace.KindState && e.Host == "server" && strings.HasPrefix(e.Local.Addr().String(), "::ffff:"):
			mapped++
		}
	}
	if v6 == 0 || v4 == 0 || mapped == 0 {
		t.Errorf("%d IPv6 packets, %d IPv4, %d state changes of a mapped connection", v6, v4, mapped)
	}
}
