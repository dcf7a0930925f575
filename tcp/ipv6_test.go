package tcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

var (
	v6Addrs = [2]netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")}
)

// dualPair is propPair with both hosts dual-stack: 10.0.0.x and fd00::x.
func dualPair(t *testing.T) *propPair {
	p := &propPair{t: t, delay: time.Millisecond}
	for i := range p.h {
		p.h[i] = NewHost(Config{Name: propHostNames[i], Addr: propAddrs[i], Addr6: v6Addrs[i], Profile: Linux(), Seed: uint64(i + 1)})
	}
	return p
}

func (p *propPair) socket6(i int) FD {
	return FD(p.do(i, Call{Op: OpSocket, V6: true}).Ret)
}

func (p *propPair) snapshotOf(i int, fd FD) SocketInfo {
	id := p.conn(i, fd).id
	for _, s := range p.h[i].Snapshot() {
		if s.Sock == id {
			return s
		}
	}
	p.t.Fatalf("no socket %d on host %d", fd, i)
	return SocketInfo{}
}

// An IPv6 connection: IPv6 segments (no DF), an MSS of 1440 offered, data
// both ways, the ends in IPv6.
func TestIPv6Connection(t *testing.T) {
	p := dualPair(t)
	var segs []wire.Segment
	p.drop = func(from int, s *wire.Segment) bool { segs = append(segs, *s); return false }
	lfd := p.socket6(1)
	if r := p.do(1, Call{Op: OpListen, FD: lfd, Port: 80, Backlog: 8}); r.Err != OK {
		t.Fatal(r.String())
	}
	cfd := p.socket6(0)
	dst := netip.AddrPortFrom(v6Addrs[1], 80)
	p.do(0, Call{Op: OpConnect, FD: cfd, Addr: dst, NonBlock: true})
	p.run(10 * time.Millisecond)
	r := p.do(1, Call{Op: OpAccept, FD: lfd, NonBlock: true})
	if r.Err != OK {
		t.Fatal(r.String())
	}
	sfd := FD(r.Ret)
	p.do(0, Call{Op: OpWrite, FD: cfd, Data: []byte("hello")})
	p.run(10 * time.Millisecond)
	if r := p.do(1, Call{Op: OpRead, FD: sfd, NonBlock: true}); string(r.Data) != "hello" {
		t.Fatalf("read %v", r.String())
	}
	if len(segs) < 4 {
		t.Fatalf("%d segments", len(segs))
	}
	for _, s := range segs {
		if !s.IsIPv6() || s.DF {
			t.Errorf("not an IPv6 segment: %v (DF %v)", s.String(), s.DF)
		}
		if s.Flags&wire.SYN != 0 && (!s.Options.HasMSS || s.Options.MSS != 1440) {
			t.Errorf("SYN offers %v, want MSS 1440", s.Options.String())
		}
		if _, err := s.Marshal(); err != nil {
			t.Errorf("marshal: %v", err)
		}
	}
	c := p.snapshotOf(0, cfd)
	if c.Local.Addr() != v6Addrs[0] || c.Remote != dst || c.State != Established {
		t.Errorf("client %v %v %v", c.Local, c.Remote, c.State)
	}
	if l := p.snapshotOf(1, lfd); l.Local != netip.MustParseAddrPort("[::]:80") {
		t.Errorf("listener %v", l.Local)
	}
	// 1440 offered, less 12 for timestamps.
	if m := p.conn(0, cfd).mss; m != 1428 {
		t.Errorf("mss %d", m)
	}
}

// A dual-stack listener (AF_INET6 on ::, IPV6_V6ONLY off) takes an IPv4
// client: the connection travels in IPv4 and its ends read IPv4-mapped on
// the server; with IPV6_V6ONLY the IPv4 SYN finds no socket.
func TestDualStackListener(t *testing.T) {
	for _, v6only := range []bool{false, true} {
		p := dualPair(t)
		var segs []wire.Segment
		p.drop = func(from int, s *wire.Segment) bool { segs = append(segs, *s); return false }
		lfd := p.socket6(1)
		if v6only {
			p.do(1, Call{Op: OpSetOption, FD: lfd, Option: Option{Kind: OptV6Only, On: true}})
		}
		p.do(1, Call{Op: OpListen, FD: lfd, Port: 80, Backlog: 8})
		cfd := p.h[0].Socket() // AF_INET
		p.do(0, Call{Op: OpConnect, FD: cfd, Addr: netip.AddrPortFrom(propAddrs[1], 80), NonBlock: true})
		p.run(10 * time.Millisecond)
		r := p.do(1, Call{Op: OpAccept, FD: lfd, NonBlock: true})
		if v6only {
			if r.Err != EAGAIN || len(segs) != 2 || segs[1].Flags&wire.RST == 0 {
				t.Errorf("v6only: accept %v, segments %v", r.String(), segs)
			}
			continue
		}
		if r.Err != OK {
			t.Fatal(r.String())
		}
		s := p.snapshotOf(1, FD(r.Ret))
		if s.Local != netip.MustParseAddrPort("[::ffff:10.0.0.2]:80") || s.Remote.Addr() != netip.MustParseAddr("::ffff:10.0.0.1") {
			t.Errorf("server end %v %v, want IPv4-mapped", s.Local, s.Remote)
		}
		for _, seg := range segs {
			if seg.IsIPv6() || !seg.DF || seg.Flags&wire.SYN != 0 && seg.Options.MSS != 1460 {
				t.Errorf("not IPv4 with MSS 1460: %v", seg.String())
			}
		}
		// The server's reply reaches the client: IPv4 through the v6 socket.
		p.do(1, Call{Op: OpWrite, FD: FD(r.Ret), Data: []byte("hi")})
		p.run(10 * time.Millisecond)
		if got := p.do(0, Call{Op: OpRead, FD: cfd, NonBlock: true}); string(got.Data) != "hi" {
			t.Errorf("client read %v", got.String())
		}
	}
}

// connect() refuses what its socket's family cannot reach, as Linux does.
func TestConnectFamilies(t *testing.T) {
	v4only := NewHost(Config{Name: "a", Addr: propAddrs[0], Profile: Linux()})
	dual := NewHost(Config{Name: "b", Addr: propAddrs[0], Addr6: v6Addrs[0], Profile: Linux()})
	mapped := netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.2"), 80)
	v6 := netip.AddrPortFrom(v6Addrs[1], 80)
	v4 := netip.AddrPortFrom(propAddrs[1], 80)
	for _, c := range []struct {
		name   string
		h      *Host
		v6     bool
		v6only bool
		dst    netip.AddrPort
		want   Errno
	}{
		{"AF_INET to IPv6", dual, false, false, v6, EAFNOSUPPORT},
		{"AF_INET6 to plain IPv4", dual, true, false, v4, EAFNOSUPPORT},
		{"AF_INET6 v6only to mapped", dual, true, true, mapped, ENETUNREACH},
		{"AF_INET6 to mapped", dual, true, false, mapped, EINPROGRESS},
		{"AF_INET6 without an IPv6 address", v4only, true, false, v6, ENETUNREACH},
		{"AF_INET6 to IPv6", dual, true, false, v6, EINPROGRESS},
	} {
		fd := FD(c.h.Do(Call{Op: OpSocket, V6: c.v6}).Ret)
		if c.v6only {
			c.h.Do(Call{Op: OpSetOption, FD: fd, Option: Option{Kind: OptV6Only, On: true}})
		}
		if r := c.h.Do(Call{Op: OpConnect, FD: fd, Addr: c.dst, NonBlock: true}); r.Err != c.want {
			t.Errorf("%s: %v, want %v", c.name, r.String(), c.want)
		}
	}
	fd := v4only.Socket()
	if r := v4only.Do(Call{Op: OpSetOption, FD: fd, Option: Option{Kind: OptV6Only, On: true}}); r.Err != ENOPROTOOPT {
		t.Errorf("IPV6_V6ONLY on AF_INET: %v", r.String())
	}
	// A mapped connect sends IPv4, and the socket reads mapped ends.
	for _, s := range dual.PollSegments(nil) {
		if s.IsIPv6() != (s.Dst == v6Addrs[1]) {
			t.Errorf("segment %v", s.String())
		}
	}
}

// An IPv6 peer that offers no MSS is assumed to take 1220 bytes (the
// minimum MTU less headers), an IPv4 one 536.
func TestIPv6DefaultMSS(t *testing.T) {
	h := NewHost(Config{Name: "s", Addr6: v6Addrs[1], Profile: Linux()})
	lfd := FD(h.Do(Call{Op: OpSocket, V6: true}).Ret)
	h.Do(Call{Op: OpListen, FD: lfd, Port: 80, Backlog: 8})
	h.Input(&wire.Segment{Src: v6Addrs[0], Dst: v6Addrs[1], SrcPort: 4000, DstPort: 80, Seq: 1, Flags: wire.SYN, Window: 65535, TTL: 64})
	var child *conn
	for c := range h.listens[80].lst.reqs {
		child = c
	}
	if child == nil || child.peerMSS != 1220 {
		t.Fatalf("child %+v", child)
	}
	out := h.PollSegments(nil)
	if len(out) != 1 || out[0].Options.MSS != 1440 || !out[0].IsIPv6() {
		t.Fatalf("SYN-ACK %v", out)
	}
}
