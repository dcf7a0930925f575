package sim

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// A lab with an IPv6-only client, a dual-stack server and an IPv4-only
// client: each reaches the server's dual-stack listener in its own family,
// a rule on an IPv6 prefix acts on IPv6 packets only, and a host cannot
// reach a family it has no address of.
func TestDualStackLab(t *testing.T) {
	l := newEmptyLab(t, 1)
	l.addHost("c6", netip.MustParseAddr("fd00::1"), tcp.Linux())
	l.addHost("c4", netip.MustParseAddr("10.0.0.1"), tcp.Linux())
	l.addHost("server", netip.MustParseAddr("10.0.0.2"), tcp.Linux())
	if err := l.n.AddAddr("server", netip.MustParseAddr("fd00::2")); err != nil {
		t.Fatal(err)
	}
	if err := l.n.AddAddr("server", netip.MustParseAddr("fd00::3")); err == nil {
		t.Error("a second IPv6 address was taken")
	}
	if err := l.n.AddAddr("c4", netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("another host's address was taken")
	}
	lfd := tcp.FD(l.do("server", tcp.Call{Op: tcp.OpSocket, V6: true}).Ret)
	l.do("server", tcp.Call{Op: tcp.OpListen, FD: lfd, Port: 80, Backlog: 8})
	// An IPv6 rule delays IPv6 SYNs only.
	l.addRule(Rule{Host: "server", Dir: trace.In, SrcAddr: netip.MustParsePrefix("fd00::/64"), Action: Delay, Delay: 100 * time.Millisecond})
	f6 := tcp.FD(l.do("c6", tcp.Call{Op: tcp.OpSocket, V6: true}).Ret)
	l.do("c6", tcp.Call{Op: tcp.OpConnect, FD: f6, Addr: netip.MustParseAddrPort("[fd00::2]:80"), NonBlock: true})
	f4, _ := l.connect("c4", netip.MustParseAddrPort("10.0.0.2:80"))
	l.n.RunFor(time.Second)
	var seen6, seen4 bool
	for _, e := range l.rec.Filter(trace.KindPacket) {
		s := e.Packet.Segment
		switch {
		case s.Src == netip.MustParseAddr("fd00::1"):
			seen6 = true
		case s.Src == netip.MustParseAddr("10.0.0.1"):
			seen4 = true
		}
		// The rule on fd00::/64 delays the IPv6 SYN by 100 ms on its way
		// into the server; the IPv4 one is answered at once.
		if e.Host == "server" && e.Packet.Dir == trace.Out && s.Flags&wire.SYN != 0 {
			want := time.Millisecond
			if s.IsIPv6() {
				want += 100 * time.Millisecond
			}
			if e.At != want {
				t.Errorf("%v sent at %v, want %v", s.String(), e.At, want)
			}
		}
		if s.Src.Is4() != s.Dst.Is4() {
			t.Errorf("a packet of two families: %v", s.String())
		}
	}
	if !seen6 || !seen4 {
		t.Errorf("packets from the IPv6 client %v, from the IPv4 one %v", seen6, seen4)
	}
	socks, _ := l.n.Snapshot("server")
	var peers []string
	for _, s := range socks {
		if s.State == tcp.Established.String() || s.State == "ESTABLISHED" {
			peers = append(peers, s.Remote.Addr().String())
		}
	}
	if len(peers) != 2 {
		t.Fatalf("server sockets %+v", socks)
	}
	_ = f4
	// c4 has no IPv6 address.
	fd := tcp.FD(l.do("c4", tcp.Call{Op: tcp.OpSocket, V6: true}).Ret)
	if r := l.do("c4", tcp.Call{Op: tcp.OpConnect, FD: fd, Addr: netip.MustParseAddrPort("[fd00::2]:80"), NonBlock: true}); r.Err != tcp.ENETUNREACH {
		t.Errorf("c4 to IPv6: %v", r.String())
	}
	if err := l.n.InjectAt(l.n.Now(), "c4", l.rec.Filter(trace.KindPacket)[0].Packet.Segment); err != nil {
		t.Errorf("an IPv6 crafted segment: %v", err)
	}
}
