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
	labels := map[netip.Addr]uint32{}
	for _, s := range segs {
		if !s.IsIPv6() || s.DF {
			t.Errorf("not an IPv6 segment: %v (DF %v)", s.String(), s.DF)
		}
		// Each end labels its flow once (auto_flowlabels), never 0.
		if l, ok := labels[s.Src]; s.FlowLabel == 0 || ok && l != s.FlowLabel {
			t.Errorf("flow label %#x from %v (before: %#x)", s.FlowLabel, s.Src, l)
		}
		labels[s.Src] = s.FlowLabel
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
	for _, si := range dual.Snapshot() {
		if si.Remote.Port() == 80 && si.Remote.Addr().Unmap() == propAddrs[1] &&
			(si.Remote.Addr() != netip.MustParseAddr("::ffff:10.0.0.2") || si.Local.Addr() != netip.MustParseAddr("::ffff:10.0.0.1")) {
			t.Errorf("mapped connect's ends: %v %v", si.Local, si.Remote)
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
	for c := range h.listens[listenKey{80, true}].lst.reqs {
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

// An AF_INET listener and an AF_INET6 one with IPV6_V6ONLY share a port,
// each taking its family (nginx's `listen 80; listen [::]:80
// ipv6only=on`); a dual-stack AF_INET6 listener cannot join them.
func TestListenersOfBothFamilies(t *testing.T) {
	p := dualPair(t)
	l4 := p.h[1].Socket()
	if r := p.do(1, Call{Op: OpListen, FD: l4, Port: 80, Backlog: 8}); r.Err != OK {
		t.Fatal(r.String())
	}
	l6 := p.socket6(1)
	p.do(1, Call{Op: OpSetOption, FD: l6, Option: Option{Kind: OptV6Only, On: true}})
	if r := p.do(1, Call{Op: OpListen, FD: l6, Port: 80, Backlog: 8}); r.Err != OK {
		t.Fatalf("v6only beside AF_INET: %v", r.String())
	}
	dual := p.socket6(1)
	if r := p.do(1, Call{Op: OpListen, FD: dual, Port: 80, Backlog: 8}); r.Err != EADDRINUSE {
		t.Errorf("a dual-stack listener beside them: %v", r.String())
	}
	c4 := p.h[0].Socket()
	p.do(0, Call{Op: OpConnect, FD: c4, Addr: netip.AddrPortFrom(propAddrs[1], 80), NonBlock: true})
	c6 := p.socket6(0)
	p.do(0, Call{Op: OpConnect, FD: c6, Addr: netip.AddrPortFrom(v6Addrs[1], 80), NonBlock: true})
	p.run(10 * time.Millisecond)
	for _, c := range []struct {
		l    FD
		peer netip.Addr
	}{{l4, propAddrs[0]}, {l6, v6Addrs[0]}} {
		r := p.do(1, Call{Op: OpAccept, FD: c.l, NonBlock: true})
		if r.Err != OK {
			t.Fatalf("accept on %d: %v", c.l, r.String())
		}
		if s := p.snapshotOf(1, FD(r.Ret)); s.Remote.Addr() != c.peer {
			t.Errorf("listener %d took %v, want %v", c.l, s.Remote, c.peer)
		}
	}
}

// A retransmission timeout draws a new flow label (sk_rethink_txhash): the
// resent SYN may take another path.
func TestFlowLabelAfterTimeout(t *testing.T) {
	h := NewHost(Config{Name: "c", Addr6: v6Addrs[0], Profile: Linux()})
	fd := FD(h.Do(Call{Op: OpSocket, V6: true}).Ret)
	h.Do(Call{Op: OpConnect, FD: fd, Addr: netip.AddrPortFrom(v6Addrs[1], 80), NonBlock: true})
	first := h.PollSegments(nil)
	h.Advance(1500 * time.Millisecond)
	again := h.PollSegments(nil)
	if len(first) != 1 || len(again) != 1 || first[0].FlowLabel == 0 || again[0].FlowLabel == 0 || first[0].FlowLabel == again[0].FlowLabel {
		t.Fatalf("SYN %v then %v", first, again)
	}
}

// A SYN for a TIME_WAIT 4-tuple reopens it only through a listener of its
// family: an IPV6_V6ONLY listener on the port leaves an IPv4 TIME_WAIT to
// answer with an ACK (tcp_timewait_state_process, then no listener).
func TestTimeWaitReopenFamily(t *testing.T) {
	p := dualPair(t)
	var segs []wire.Segment
	p.drop = func(from int, s *wire.Segment) bool {
		if from == 1 {
			segs = append(segs, *s)
		}
		return false
	}
	l4 := p.h[1].Socket()
	p.do(1, Call{Op: OpListen, FD: l4, Port: 80, Backlog: 8})
	c := p.h[0].Socket()
	p.do(0, Call{Op: OpSetOption, FD: c, Option: Option{Kind: OptReuseAddr, On: true}})
	p.do(0, Call{Op: OpBind, FD: c, Port: 3333})
	p.do(0, Call{Op: OpConnect, FD: c, Addr: netip.AddrPortFrom(propAddrs[1], 80), NonBlock: true})
	p.run(10 * time.Millisecond)
	s := FD(p.do(1, Call{Op: OpAccept, FD: l4, NonBlock: true}).Ret)
	p.do(1, Call{Op: OpClose, FD: s}) // the server closes first: its end goes to TIME_WAIT
	p.run(10 * time.Millisecond)
	p.do(0, Call{Op: OpClose, FD: c})
	p.run(10 * time.Millisecond)
	p.do(1, Call{Op: OpClose, FD: l4})
	l6 := p.socket6(1)
	p.do(1, Call{Op: OpSetOption, FD: l6, Option: Option{Kind: OptV6Only, On: true}})
	if r := p.do(1, Call{Op: OpListen, FD: l6, Port: 80, Backlog: 8}); r.Err != OK {
		t.Fatalf("v6only listen beside an IPv4 TIME_WAIT: %v", r.String())
	}
	tw := 0
	for _, si := range p.h[1].Snapshot() {
		if si.State == TimeWait {
			tw++
		}
	}
	if tw != 1 {
		t.Fatalf("%d TIME_WAIT on the server, want 1", tw)
	}
	segs = nil
	c2 := p.h[0].Socket()
	p.do(0, Call{Op: OpSetOption, FD: c2, Option: Option{Kind: OptReuseAddr, On: true}})
	p.do(0, Call{Op: OpBind, FD: c2, Port: 3333})
	p.do(0, Call{Op: OpConnect, FD: c2, Addr: netip.AddrPortFrom(propAddrs[1], 80), NonBlock: true})
	p.run(10 * time.Millisecond)
	for _, seg := range segs {
		if seg.Flags&wire.SYN != 0 {
			t.Errorf("the server answered the SYN with %v: a v6only listener took an IPv4 connection", seg.String())
		}
	}
	if r := p.do(1, Call{Op: OpAccept, FD: l6, NonBlock: true}); r.Err != EAGAIN {
		t.Errorf("v6only listener: %v", r.String())
	}
}
