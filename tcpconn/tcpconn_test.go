package tcpconn

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/internal/nstest"
	"github.com/vishvananda/netlink"
)

// pair makes a connected client and server on loopback.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// eventually polls f for up to a second.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if f() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within 1 s", what)
}

func TestPeerClosed(t *testing.T) {
	c, s := pair(t)
	if closed, err := PeerClosed(c); err != nil || closed {
		t.Fatalf("open connection: closed %v, %v", closed, err)
	}
	// The server writes, then closes: the FIN sits behind unread data.
	s.Write([]byte("bye"))
	s.Close()
	eventually(t, "PeerClosed after the server's FIN", func() bool { ok, _ := PeerClosed(c); return ok })
	if st, _ := StateOf(c); st != inspect.CloseWait {
		t.Errorf("state %v, want CLOSE_WAIT", st)
	}
	// Nothing was consumed.
	b, err := io.ReadAll(c)
	if string(b) != "bye" || err != nil {
		t.Errorf("read %q, %v after PeerClosed; want the peer's bytes", b, err)
	}
}

func TestPeerClosedByReset(t *testing.T) {
	c, s := pair(t)
	if err := Abort(s); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PeerClosed after the server's RST", func() bool { ok, _ := PeerClosed(c); return ok })
}

func TestInfo(t *testing.T) {
	c, s := pair(t)
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	io.ReadFull(s, make([]byte, 1000))
	eventually(t, "1000 bytes acknowledged", func() bool { i, _ := InfoOf(c); return i.BytesAcked >= 1000 })
	i, err := InfoOf(c)
	if err != nil || i.State != inspect.Established || i.RTO <= 0 || i.Unacked != 0 {
		t.Errorf("info %+v, %v", i, err)
	}
	if j, _ := InfoOf(s); j.BytesRecv != 1000 {
		t.Errorf("server received %d bytes, want 1000", j.BytesRecv)
	}
}

// Abort resets: the peer's read fails with ECONNRESET and the aborting
// side keeps no TIME_WAIT.
func TestAbort(t *testing.T) {
	c, s := pair(t)
	local, remote := c.LocalAddr().String(), c.RemoteAddr().String()
	if err := Abort(c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer read: %v, want ECONNRESET", err)
	}
	d, err := inspect.OpenDiag()
	if err != nil {
		t.Skip(err)
	}
	defer d.Close()
	lp, rp := netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote)
	socks, err := d.Dump(inspect.Filter{SPort: []inspect.PortRange{{Lo: lp.Port(), Hi: lp.Port()}}, DPort: []inspect.PortRange{{Lo: rp.Port(), Hi: rp.Port()}}})
	if err != nil || len(socks) != 0 {
		t.Errorf("after Abort the client's 4-tuple still has %v (%v)", socks, err)
	}
}

func TestCloseGracefully(t *testing.T) {
	c, s := pair(t)
	c.Write([]byte("request"))
	// The server answers, reads to the end and closes.
	go func() {
		io.ReadAll(s)
		s.Write(make([]byte, 5000))
		s.Close()
	}()
	res, err := CloseGracefully(c, time.Second)
	if err != nil || !res.PeerAcked || res.PeerReset || res.SentReset || res.Discarded != 5000 {
		t.Errorf("graceful close: %+v, %v; want all acked, no reset, 5000 discarded", res, err)
	}
}

// A peer that neither sends nor closes: at the deadline there is nothing
// unread, so the close needs no RST.
func TestCloseGracefullyIdlePeer(t *testing.T) {
	c, s := pair(t)
	c.Write([]byte("request"))
	io.ReadFull(s, make([]byte, 7))
	res, err := CloseGracefully(c, 100*time.Millisecond)
	if err != nil || !res.PeerAcked || res.SentReset || res.PeerReset || res.Discarded != 0 {
		t.Errorf("close against a quiet peer: %+v, %v; want acked, no reset", res, err)
	}
}

// A peer that keeps sending past the deadline: the close resets.
func TestCloseGracefullyFallsBackToReset(t *testing.T) {
	c, s := pair(t)
	stop := make(chan struct{})
	started := make(chan struct{})
	go func() {
		b := make([]byte, 1000)
		s.Write(b)
		close(started)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Write(b); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	defer close(stop)
	<-started
	res, err := CloseGracefully(c, 100*time.Millisecond)
	if err != nil || !res.SentReset || res.Discarded == 0 {
		t.Errorf("close against a talking peer: %+v, %v; want a reset after discarding", res, err)
	}
	// The peer learns it: its writes fail with ECONNRESET or EPIPE.
	eventually(t, "the peer's write failing", func() bool {
		_, err := s.Write([]byte("x"))
		return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	})
}

func TestListenBacklogAndQueue(t *testing.T) {
	ln, err := Listen(context.Background(), "tcp4", "127.0.0.1:0", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	q, err := ln.Queue()
	if err != nil {
		t.Fatal(err)
	}
	if q.Len != 0 || q.Limit != 4 {
		t.Fatalf("queue %+v, want 0 of 4", q)
	}
	for range 3 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	eventually(t, "three connections queued", func() bool { q, _ = ln.Queue(); return q.Len == 3 })
	if _, err := Listen(context.Background(), "tcp4", "127.0.0.1:0", 0); err == nil {
		t.Error("backlog 0 accepted")
	}
}

// The options DetectDeadPeers sets read back from the socket.
func TestDetectDeadPeersSetsOptions(t *testing.T) {
	c, _ := pair(t)
	if err := DetectDeadPeers(c, 2*time.Second, time.Second, 3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	get := func(level, opt int) int {
		var v int
		control(c, func(fd int) error {
			var err error
			v, err = unix.GetsockoptInt(fd, level, opt)
			return err
		})
		return v
	}
	for name, got := range map[string][2]int{
		"SO_KEEPALIVE":     {get(unix.SOL_SOCKET, unix.SO_KEEPALIVE), 1},
		"TCP_KEEPIDLE":     {get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE), 2},
		"TCP_KEEPINTVL":    {get(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL), 1},
		"TCP_KEEPCNT":      {get(unix.IPPROTO_TCP, unix.TCP_KEEPCNT), 3},
		"TCP_USER_TIMEOUT": {get(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT), 5000},
	} {
		if got[0] != got[1] {
			t.Errorf("%s = %d, want %d", name, got[0], got[1])
		}
	}
}

// nsPair makes a connected pair on loopback inside a namespace of the
// test's own, and returns a function that takes lo down there: the peer
// vanishes without FIN or RST.
func nsPair(t *testing.T) (client, server *net.TCPConn, vanish func()) {
	t.Helper()
	ns, _ := nstest.New(t)
	var ln net.Listener
	var c net.Conn
	err := inspect.InNetns(ns, func() (err error) {
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		c, err = net.Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn), func() {
		err := inspect.InNetns(ns, func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return netlink.LinkSetDown(lo)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A vanished peer: with DetectDeadPeers an idle connection fails by
// keepalive (Linux counts it in whole seconds: probes after 1 s, 1 s
// apart), and one with data in flight by the user timeout; with Go's
// default keepalive (15 s idle) the third is still ESTABLISHED meanwhile.
func TestDetectDeadPeersOnTheKernel(t *testing.T) {
	idle, _, vanish := nsPair(t)
	busy, _, vanish2 := nsPair(t)
	plain, _, vanish3 := nsPair(t)
	if err := DetectDeadPeers(idle, time.Second, time.Second, 2, 0); err != nil {
		t.Fatal(err)
	}
	if err := DetectDeadPeers(busy, 10*time.Second, time.Second, 3, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	vanish()
	vanish2()
	vanish3()
	start := time.Now()
	idle.SetReadDeadline(time.Now().Add(6 * time.Second))
	_, err := idle.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ETIMEDOUT) || time.Since(start) > 4*time.Second {
		t.Errorf("idle connection: %v after %v; want ETIMEDOUT from keepalive within about 3 s", err, time.Since(start))
	}
	start = time.Now()
	busy.Write([]byte("data nobody will acknowledge"))
	busy.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = busy.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ETIMEDOUT) || time.Since(start) > 2*time.Second {
		t.Errorf("connection with data in flight: %v after %v; want ETIMEDOUT from the user timeout", err, time.Since(start))
	}
	if st, _ := StateOf(plain); st != inspect.Established {
		t.Errorf("without DetectDeadPeers the idle connection is %v, want still ESTABLISHED", st)
	}
}
