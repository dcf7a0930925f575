package tcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

func TestErrnoNames(t *testing.T) {
	for _, e := range Errnos() {
		p, ok := ParseErrno(e.Name())
		if !ok || p != e || e.Error() == "" {
			t.Fatalf("%d does not round-trip", e)
		}
	}
	if ECONNREFUSED != 111 || ETIMEDOUT != 110 || EADDRINUSE != 98 || EPIPE != 32 || EAGAIN != 11 {
		t.Fatal("errno values must be Linux's")
	}
	if OK.Name() != "" {
		t.Fatal("OK has no name")
	}
}

func TestBadDescriptor(t *testing.T) {
	f := newFx(t, Linux())
	for _, op := range []Op{OpRead, OpWrite, OpClose, OpAccept, OpConnect, OpListen, OpBind, OpShutdown, OpSetOption} {
		if r := f.do(Call{Op: op, FD: 42}); r.Err != EBADF || r.Ret != -1 {
			t.Fatalf("%v on fd 42: %+v", op, r)
		}
	}
}

func TestNonBlockingCalls(t *testing.T) {
	f := newFx(t, Linux())
	f.listen(5)
	if r := f.do(Call{Op: OpAccept, FD: f.lfd, NonBlock: true}); r.Err != EAGAIN {
		t.Fatalf("accept: %v", r.Err)
	}
	f2 := newFx(t, Linux())
	f2.passive()
	if r := f2.do(Call{Op: OpRead, FD: f2.fd, NonBlock: true}); r.Err != EAGAIN {
		t.Fatalf("read: %v", r.Err)
	}
	// O_NONBLOCK on the socket has the same effect.
	f2.do(Call{Op: OpSetOption, FD: f2.fd, Option: Option{Kind: OptNonBlock, On: true}})
	if r := f2.do(Call{Op: OpRead, FD: f2.fd}); r.Err != EAGAIN {
		t.Fatalf("read with O_NONBLOCK: %v", r.Err)
	}
	// A peek-like check tells a closed peer from a quiet one: EOF (0)
	// once the FIN is in.
	f2.send(wire.FIN|wire.ACK, "")
	if r := f2.do(Call{Op: OpRead, FD: f2.fd}); r.Err != OK || r.Ret != 0 {
		t.Fatalf("read after FIN: %+v", r)
	}
}

func TestConnectStates(t *testing.T) {
	f := newFx(t, Linux())
	fd := f.h.Socket()
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EINPROGRESS {
		t.Fatalf("first: %v", r.Err)
	}
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EALREADY {
		t.Fatalf("second: %v", r.Err)
	}
	f2 := newFx(t, Linux())
	f2.active()
	if r := f2.do(Call{Op: OpConnect, FD: f2.fd, Addr: dst}); r.Err != EISCONN {
		t.Fatalf("connected: %v", r.Err)
	}
	f3 := newFx(t, Linux())
	f3.listen(1)
	if r := f3.do(Call{Op: OpConnect, FD: f3.lfd, Addr: dst}); r.Err != EISCONN {
		t.Fatalf("listener: %v", r.Err)
	}
	if r := f3.do(Call{Op: OpConnect, FD: f3.h.Socket(), Addr: netip.MustParseAddrPort("10.0.0.1:0")}); r.Err != EINVAL {
		t.Fatalf("port 0: %v", r.Err)
	}
}

func TestUnconnectedSocketCalls(t *testing.T) {
	f := newFx(t, Linux())
	fd := f.h.Socket()
	if r := f.do(Call{Op: OpRead, FD: fd}); r.Err != ENOTCONN {
		t.Fatalf("read: %v", r.Err)
	}
	// Linux's tcp_sendmsg answers EPIPE on a socket that never connected.
	if r := f.do(Call{Op: OpWrite, FD: fd, Data: []byte("x")}); r.Err != EPIPE {
		t.Fatalf("write: %v", r.Err)
	}
	if r := f.do(Call{Op: OpShutdown, FD: fd, How: ShutWR}); r.Err != ENOTCONN {
		t.Fatalf("shutdown: %v", r.Err)
	}
	if r := f.do(Call{Op: OpAccept, FD: fd}); r.Err != EINVAL {
		t.Fatalf("accept: %v", r.Err)
	}
	if r := f.do(Call{Op: OpClose, FD: fd}); r.Err != OK {
		t.Fatalf("close: %v", r.Err)
	}
	f.expectNothing()
}

func TestDescriptorsReuseLowest(t *testing.T) {
	f := newFx(t, Linux())
	a, b, c := f.h.Socket(), f.h.Socket(), f.h.Socket()
	if a != 3 || b != 4 || c != 5 {
		t.Fatalf("fds %d %d %d", a, b, c)
	}
	f.do(Call{Op: OpClose, FD: b})
	f.do(Call{Op: OpClose, FD: a})
	if d := f.h.Socket(); d != 3 {
		t.Fatalf("next fd %d, want 3", d)
	}
}

func TestBindConflicts(t *testing.T) {
	f := newFx(t, Linux())
	a := f.h.Socket()
	if r := f.do(Call{Op: OpBind, FD: a, Port: 3333}); r.Err != OK {
		t.Fatal(r.Err)
	}
	if r := f.do(Call{Op: OpBind, FD: a, Port: 3334}); r.Err != EINVAL {
		t.Fatalf("bind twice: %v", r.Err)
	}
	b := f.h.Socket()
	if r := f.do(Call{Op: OpBind, FD: b, Port: 3333}); r.Err != EADDRINUSE {
		t.Fatalf("second bind: %v", r.Err)
	}
	// bind(0) picks a free ephemeral port.
	r := f.do(Call{Op: OpBind, FD: b, Port: 0})
	if r.Err != OK || f.h.fds[b].lport < 32768 {
		t.Fatalf("bind(0): %v port %d", r.Err, f.h.fds[b].lport)
	}
	// Two listeners on one port, even with SO_REUSEADDR: EADDRINUSE.
	l1, _ := f.h.ListenOn(8080, 5)
	_ = l1
	s := f.h.Socket()
	f.do(Call{Op: OpSetOption, FD: s, Option: Option{Kind: OptReuseAddr, On: true}})
	if r := f.do(Call{Op: OpListen, FD: s, Port: 8080, Backlog: 5}); r.Err != EADDRINUSE {
		t.Fatalf("second listener: %v", r.Err)
	}
}

// time-wait-bind: a client bound to a fixed port closes first, then wants
// the same port again at once.
func TestTimeWaitBlocksBind(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		f := newFx(t, Linux())
		f.active() // from port 5555 to the peer's port 80
		if reuse {
			f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptReuseAddr, On: true}})
		}
		f.do(Call{Op: OpClose, FD: f.fd})
		f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
		f.send(wire.FIN|wire.ACK, "")
		f.expect(exp{wire.ACK, 2, 2, 0})
		f.wantState(TimeWait)

		fd := f.h.Socket()
		if reuse {
			f.do(Call{Op: OpSetOption, FD: fd, Option: Option{Kind: OptReuseAddr, On: true}})
		}
		r := f.do(Call{Op: OpBind, FD: fd, Port: 5555})
		if !reuse {
			if r.Err != EADDRINUSE {
				t.Fatalf("bind during TIME_WAIT: %v", r.Err)
			}
			if !f.hasNote("TIME_WAIT") {
				t.Fatal("no explanation")
			}
			f.at(sec(60))
			if r := f.do(Call{Op: OpBind, FD: fd, Port: 5555}); r.Err != OK {
				t.Fatalf("bind after TIME_WAIT: %v", r.Err)
			}
			continue
		}
		// SO_REUSEADDR lets the bind through, but the very same 4-tuple
		// is still taken: connect fails.
		if r.Err != OK {
			t.Fatalf("bind with SO_REUSEADDR: %v", r.Err)
		}
		c := f.do(Call{Op: OpConnect, FD: fd, Addr: f.peer})
		if c.Err != EADDRNOTAVAIL {
			t.Fatalf("connect to the same peer: %v", c.Err)
		}
		c = f.do(Call{Op: OpConnect, FD: fd, Addr: netip.MustParseAddrPort("10.0.0.9:80"), NonBlock: true})
		if c.Err != EINPROGRESS {
			t.Fatalf("connect elsewhere: %v", c.Err)
		}
	}
}

func TestEphemeralPortsRunOut(t *testing.T) {
	p := Linux()
	if err := p.Set("ip_local_port_range", "40000 40003"); err != nil {
		t.Fatal(err)
	}
	f := newFx(t, p)
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	ports := map[uint16]bool{}
	for i := 0; i < 4; i++ {
		fd := f.h.Socket()
		if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EINPROGRESS {
			t.Fatalf("connect %d: %v", i, r.Err)
		}
		ports[f.h.fds[fd].lport] = true
	}
	if len(ports) != 4 {
		t.Fatalf("ports %v", ports)
	}
	fd := f.h.Socket()
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EADDRNOTAVAIL {
		t.Fatalf("fifth connect: %v", r.Err)
	}
	// Searches after a full one skip the taken ports until one is freed:
	// closing a connection gives its port to the next connect.
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EADDRNOTAVAIL {
		t.Fatalf("sixth connect: %v", r.Err)
	}
	var freed uint16
	for cfd, c := range f.h.fds {
		if c.state == SynSent && c.lport%2 == 1 {
			freed = c.lport
			f.do(Call{Op: OpClose, FD: cfd})
			break
		}
	}
	if freed == 0 {
		t.Fatal("no odd port in use")
	}
	fd2 := f.h.Socket()
	if r := f.do(Call{Op: OpConnect, FD: fd2, Addr: dst, NonBlock: true}); r.Err != EINPROGRESS || f.h.fds[fd2].lport != freed {
		t.Fatalf("connect after port %d was freed: %v, port %d", freed, r.Err, f.h.fds[fd2].lport)
	}
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}); r.Err != EADDRNOTAVAIL {
		t.Fatalf("connect with every port taken again: %v", r.Err)
	}
	// Another destination can reuse the ports.
	if r := f.do(Call{Op: OpConnect, FD: fd, Addr: netip.MustParseAddrPort("10.0.0.1:81"), NonBlock: true}); r.Err != EINPROGRESS {
		t.Fatalf("other destination: %v", r.Err)
	}
}

// close-wait-data-loss, seen from the writer: the peer closed (we are in
// CLOSE_WAIT), our first write succeeds yet the peer answers with RST, the
// second write fails with EPIPE.
func TestWriteAfterPeerClosed(t *testing.T) {
	f := newFx(t, Linux())
	f.closeWait()
	w := f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("data1")})
	if w.Err != OK || w.Ret != 5 {
		t.Fatalf("first write: %+v", w)
	}
	f.expect(exp{wire.PSH | wire.ACK, 1, 2, 5})
	// The peer's socket is closed: its kernel resets.
	f.recv(f.mk(wire.RST, f.pNxt, 0, ""))
	f.wantState(Closed)
	w = f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("data2")})
	if w.Err != EPIPE {
		t.Fatalf("second write: %+v", w)
	}
	if r := f.do(Call{Op: OpRead, FD: f.fd}); r.Err != OK || r.Ret != 0 {
		t.Fatalf("read: %+v", r)
	}
}

func TestCloseWithUnreadDataResets(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.send(wire.PSH|wire.ACK, "unread")
	f.out = nil
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expect(exp{wire.RST | wire.ACK, 1, 7, 0})
	f.wantState(Closed)
	f.wantCounter(TCPAbortOnClose, 1)
	f.wantCounter(EstabResets, 1)
}

func TestLingerZeroResets(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptLinger, On: true, Dur: 0}})
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expect(exp{wire.RST | wire.ACK, 1, 1, 0})
	f.wantState(Closed)
	if len(f.h.conns) != 0 {
		t.Fatal("no TIME_WAIT after an abortive close")
	}
}

func TestLingerWaitsForAck(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptLinger, On: true, Dur: 5 * time.Second}})
	r := f.do(Call{Op: OpClose, FD: f.fd})
	if !r.Pending {
		t.Fatal("close did not linger")
	}
	if rd := f.do(Call{Op: OpRead, FD: f.fd}); rd.Err != EBADF {
		t.Fatalf("read on a descriptor being closed: %+v", rd)
	}
	f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
	f.at(sec(1))
	f.send(wire.ACK, "")
	d := f.callDone(r.ID)
	if d == nil || d.Err != OK || d.At != sec(1) {
		t.Fatalf("close: %+v", d)
	}
	f.wantState(FinWait2)
	if f.h.fds[f.fd] != nil {
		t.Fatal("descriptor survives close")
	}
}

func TestLingerTimeout(t *testing.T) {
	for _, tc := range []struct {
		prof  Profile
		reset bool
	}{{Linux(), false}, {WindowsClassic(), true}} {
		t.Run(tc.prof.Name, func(t *testing.T) {
			f := newFx(t, tc.prof)
			f.passive()
			f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptLinger, On: true, Dur: 2 * time.Second}})
			r := f.do(Call{Op: OpClose, FD: f.fd})
			f.out = nil
			f.at(sec(2))
			d := f.callDone(r.ID)
			if d == nil || d.Err != OK {
				t.Fatalf("close after linger: %+v", d)
			}
			var rst bool
			for _, s := range f.out {
				rst = rst || s.Flags&wire.RST != 0
			}
			if rst != tc.reset {
				t.Fatalf("RST sent: %v, want %v\n%s", rst, tc.reset, f.dump())
			}
			if tc.reset {
				f.wantState(Closed)
			} else {
				f.wantState(FinWait1) // the kernel keeps retransmitting the FIN
			}
		})
	}
}

func TestKeepalive(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	for _, o := range []Option{{Kind: OptKeepIdle, Dur: 10 * time.Second}, {Kind: OptKeepIntvl, Dur: 5 * time.Second},
		{Kind: OptKeepCnt, N: 3}, {Kind: OptKeepAlive, On: true}} {
		if r := f.do(Call{Op: OpSetOption, FD: f.fd, Option: o}); r.Err != OK {
			t.Fatalf("%v: %v", o, r.Err)
		}
	}
	rd := f.do(Call{Op: OpRead, FD: f.fd})
	f.at(sec(10))
	f.expect(exp{wire.ACK, 0, 1, 0}) // a probe: one byte below SND.UNA
	f.send(wire.ACK, "")             // answered: the connection is alive
	f.at(sec(20))
	f.expect(exp{wire.ACK, 0, 1, 0})
	f.at(sec(25))
	f.expect(exp{wire.ACK, 0, 1, 0})
	f.at(sec(30))
	f.expect(exp{wire.ACK, 0, 1, 0})
	f.at(sec(35))
	f.expect(exp{wire.RST | wire.ACK, 1, 1, 0})
	f.wantState(Closed)
	d := f.callDone(rd.ID)
	if d == nil || d.Err != ETIMEDOUT {
		t.Fatalf("blocked read: %+v", d)
	}
	f.wantCounter(TCPKeepAlive, 4)
	if r := f.do(Call{Op: OpSetOption, FD: f.fd, Option: Option{Kind: OptKeepCnt, N: 0}}); r.Err != EINVAL {
		t.Fatalf("bad option: %v", r.Err)
	}
}

func TestShutdownReadReturnsEOF(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	rd := f.do(Call{Op: OpRead, FD: f.fd})
	f.do(Call{Op: OpShutdown, FD: f.fd, How: ShutRD})
	d := f.callDone(rd.ID)
	if d == nil || d.Ret != 0 || d.Err != OK {
		t.Fatalf("blocked read after SHUT_RD: %+v", d)
	}
	f.expectNothing()
}

func TestBlockingWriteWaitsForRoom(t *testing.T) {
	p := Linux()
	p.SndBuf = 1000
	f := newFx(t, p)
	f.passive()
	data := make([]byte, 2500)
	r := f.do(Call{Op: OpWrite, FD: f.fd, Data: data})
	if !r.Pending {
		t.Fatal("write of 2500 bytes into a 1000-byte buffer did not block")
	}
	for i := 0; i < 10 && f.callDone(r.ID) == nil; i++ {
		f.pNxt = peerISS.Add(1)
		f.recv(f.mk(wire.ACK, f.pNxt, f.conn().sndMax, ""))
	}
	d := f.callDone(r.ID)
	if d == nil || d.Ret != 2500 {
		t.Fatalf("write: %+v", d)
	}
	f.recv(f.mk(wire.ACK, f.pNxt, f.conn().sndMax, "")) // everything acknowledged
	if q := f.conn().snd.Len(); q != 0 {
		t.Fatalf("%d bytes still queued", q)
	}
	nb := f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, 5000), NonBlock: true})
	if nb.Err != OK || nb.Ret != 1000 {
		t.Fatalf("non-blocking write returns what fits: %+v", nb)
	}
	if nb := f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("x"), NonBlock: true}); nb.Err != EAGAIN {
		t.Fatalf("full buffer: %+v", nb)
	}
}

func TestReadMax(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.send(wire.PSH|wire.ACK, "abcdef")
	r := f.do(Call{Op: OpRead, FD: f.fd, Max: 4})
	if string(r.Data) != "abcd" || r.Ret != 4 {
		t.Fatalf("read %+v", r)
	}
	r = f.do(Call{Op: OpRead, FD: f.fd})
	if string(r.Data) != "ef" {
		t.Fatalf("read %+v", r)
	}
}

func TestProfileSettings(t *testing.T) {
	p := Linux()
	for _, name := range SettingNames() {
		v, ok := p.Get(name)
		if !ok || SettingHelp(name) == "" {
			t.Fatalf("%s: no value or help", name)
		}
		if err := p.Set(name, v); err != nil {
			t.Fatalf("%s: setting its own value %q: %v", name, v, err)
		}
	}
	for _, bad := range [][2]string{{"tcp_syncookies", "3"}, {"tcp_syn_retries", "x"}, {"tcp_nope", "1"},
		{"ip_local_port_range", "5 4"}, {"tcp_abort_on_overflow", "2"}} {
		if err := p.Set(bad[0], bad[1]); err == nil {
			t.Fatalf("Set(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if err := p.Set("tcp_synack_retries", "2"); err != nil || p.SynAckRetries != 2 {
		t.Fatal("tcp_synack_retries")
	}
	if err := p.Set("tcp_fin_timeout", "30"); err != nil || p.FinTimeout != 30*time.Second {
		t.Fatal("tcp_fin_timeout")
	}
	// tcp_rmem's max sets the window scale, as tcp_select_initial_window
	// (ilog2 of the larger of it and rmem_max, less 15).
	for _, c := range []struct {
		rmem string
		ws   int
	}{{"4096 131072 6291456", 7}, {"4096 540000 15728640", 8}, {"4096 131072 33554432", 10}, {"4096 4096 4096", 2}} {
		if err := p.Set("tcp_rmem", c.rmem); err != nil || p.WScale != c.ws {
			t.Errorf("tcp_rmem %q: wscale %d (%v), want %d", c.rmem, p.WScale, err, c.ws)
		}
	}
	if err := p.Set("tcp_window_scaling", "0"); err != nil || p.WScale != -1 {
		t.Errorf("tcp_window_scaling 0: wscale %d", p.WScale)
	}
	if err := p.Set("tcp_rmem", "4096 131072 33554432"); err != nil || p.WScale != -1 {
		t.Errorf("tcp_rmem turned window scaling back on: %d", p.WScale)
	}
	if err := p.Set("tcp_window_scaling", "1"); err != nil || p.WScale != 10 {
		t.Errorf("tcp_window_scaling 1: wscale %d, want 10", p.WScale)
	}
	for _, bad := range []string{"1 2", "3 2 1", "a b c", "0 1 2"} {
		if err := p.Set("tcp_rmem", bad); err == nil {
			t.Errorf("tcp_rmem %q accepted", bad)
		}
	}
	for _, n := range ProfileNames() {
		if _, err := ProfileByName(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ProfileByName("solaris"); err == nil {
		t.Fatal("unknown profile accepted")
	}
}

func TestPredictableISN(t *testing.T) {
	f := newFx(t, PredictableISN())
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	isn := func() wire.Seq {
		fd := f.h.Socket()
		f.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true})
		s := f.out[len(f.out)-1].Seq
		f.out = nil
		return s
	}
	a, b := isn(), isn()
	f.at(sec(1))
	c := isn()
	if b-a != 64000 || c-b != 64000+2*64000 {
		t.Fatalf("ISNs %d %d %d: not the 4.4BSD sequence", a, b, c)
	}
	g := newFx(t, Linux())
	fd := g.h.Socket()
	g.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true})
	fd2 := g.h.Socket()
	g.do(Call{Op: OpConnect, FD: fd2, Addr: dst, NonBlock: true})
	if d := g.out[1].Seq - g.out[0].Seq; d == 64000 || d == 0 {
		t.Fatalf("keyed ISNs look predictable: difference %d", d)
	}
}

func TestCounterNamesAndTable(t *testing.T) {
	for _, c := range Counters() {
		for _, name := range []string{c.String(), c.Group() + ":" + c.String()} {
			if p, ok := ParseCounter(name); !ok || p != c {
				t.Fatalf("ParseCounter(%q) = %v %v", name, p, ok)
			}
		}
	}
	if _, ok := ParseCounter("ListenOverflow"); ok {
		t.Fatal("a misspelt counter parsed")
	}
	if c, _ := ParseCounter("TcpExt:ListenOverflows"); c.Group() != "TcpExt" {
		t.Fatal("group")
	}
	tr := Transitions()
	if len(tr) != len(transitions) {
		t.Fatal("Transitions")
	}
	figure := 0
	for _, x := range tr {
		if !Legal(x.From, x.To) || x.Event == "" {
			t.Fatalf("%+v", x)
		}
		if x.Figure {
			figure++
		}
	}
	if figure != 18 { // RFC 9293 figure 5 draws 19 edges; LISTEN -> SYN_SENT has no socket call
		t.Fatalf("%d figure edges", figure)
	}
}

func TestReadPeekLeavesData(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.send(wire.PSH|wire.ACK, "Hutu")
	r := f.do(Call{Op: OpRead, FD: f.fd, Peek: true, NonBlock: true})
	if r.Err != OK || string(r.Data) != "Hutu" {
		t.Fatalf("peek: %+v", r)
	}
	if r := f.do(Call{Op: OpRead, FD: f.fd, Max: 2}); string(r.Data) != "Hu" {
		t.Fatalf("read after peek: %+v", r)
	}
	// With the bytes gone and a FIN in, a non-blocking peek sees EOF.
	f.do(Call{Op: OpRead, FD: f.fd})
	f.send(wire.FIN|wire.ACK, "")
	if r := f.do(Call{Op: OpRead, FD: f.fd, Peek: true, NonBlock: true}); r.Err != OK || r.Ret != 0 {
		t.Fatalf("peek after FIN: %+v", r)
	}
}
