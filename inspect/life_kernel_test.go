package inspect

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLifeKernel follows three connections of a namespace to their ends,
// as the kernel makes them: one closed by the client first (the server
// closes 100 ms later, so the client's FIN_WAIT2 socket is freed before
// the server's FIN comes), one the server aborts (a reset), and a connect
// to a closed port; and one in another namespace that must not show.
func TestLifeKernel(t *testing.T) {
	ns, target := watchNS(t)
	other, _ := watchNS(t)
	lw, err := NewLifeWatcher(target, Filter{})
	if err != nil {
		t.Fatal(err)
	}

	type ends struct{ local, remote netip.AddrPort }
	told := make(chan Life, 64)
	stop := make(chan struct{})
	done := make(chan error, 1)
	// The poller stops before the watcher closes, on every path.
	var once sync.Once
	finish := func() error {
		var err error
		once.Do(func() {
			close(stop)
			err = <-done
			lw.Close()
		})
		return err
	}
	t.Cleanup(func() { finish() })
	go func() {
		for {
			ls, err := lw.Poll()
			if err != nil {
				done <- err
				return
			}
			for _, l := range ls {
				select {
				case told <- l:
				case <-stop:
				}
			}
			select {
			case <-stop:
				done <- nil
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	oln, oc, os2 := dialIn(t, other, "127.0.0.1:7011")
	if err := InNetns(other, func() error {
		oc.Close()
		os2.Close()
		return oln.Close()
	}); err != nil {
		t.Fatal(err)
	}

	// Every call is made from a thread inside the namespace, as a
	// process of the namespace would: a change is placed there by its
	// thread's namespace when its socket never shows in a listing.
	var server, client1, client2, refused netip.AddrPort
	release := make(chan struct{})
	made := make(chan error, 1)
	go func() {
		made <- InNetns(ns, func() error {
			ln, err := net.Listen("tcp", "127.0.0.1:7012")
			if err != nil {
				return err
			}
			defer ln.Close()
			server = netip.MustParseAddrPort(ln.Addr().String())
			// 1: 77 bytes up, 3000 down; the client closes first, and the
			// server closes 300 ms later, after its delayed ACK of the
			// client's FIN (at most 200 ms): the client's socket is freed
			// when the ACK comes, and its timewait socket takes the server's
			// FIN.
			c, err := net.Dial("tcp", server.String())
			if err != nil {
				return err
			}
			s, err := ln.Accept()
			if err != nil {
				return err
			}
			client1 = netip.MustParseAddrPort(c.LocalAddr().String())
			if _, err := c.Write(make([]byte, 77)); err != nil {
				return err
			}
			if _, err := io.ReadFull(s, make([]byte, 77)); err != nil {
				return err
			}
			if _, err := s.Write(make([]byte, 3000)); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, make([]byte, 3000)); err != nil {
				return err
			}
			c.Close()
			time.Sleep(300 * time.Millisecond)
			s.Close()

			// 2: the server aborts (SO_LINGER 0): the client reads a reset.
			c2, err := net.Dial("tcp", server.String())
			if err != nil {
				return err
			}
			s2, err := ln.Accept()
			if err != nil {
				return err
			}
			client2 = netip.MustParseAddrPort(c2.LocalAddr().String())
			// 10 bytes up and 20 down first.
			if _, err := c2.Write(make([]byte, 10)); err != nil {
				return err
			}
			if _, err := io.ReadFull(s2, make([]byte, 10)); err != nil {
				return err
			}
			if _, err := s2.Write(make([]byte, 20)); err != nil {
				return err
			}
			if _, err := io.ReadFull(c2, make([]byte, 20)); err != nil {
				return err
			}
			s2.(*net.TCPConn).SetLinger(0)
			s2.Close()
			if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				return fmt.Errorf("the client read %v, not a reset", err)
			}
			c2.Close()

			// 3: a connect to a port nobody listens on.
			if _, err := net.Dial("tcp", "127.0.0.1:7013"); !errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("a connect to a closed port: %v", err)
			}
			// The thread stays in the namespace until the lives are in: the
			// changes of a connection no listing showed are placed by the
			// namespace of the thread that made them, looked up as they are
			// read.
			<-release
			return nil
		})
	}()

	// Five ends; then a moment for any told twice or from elsewhere.
	lives := map[ends]Life{}
	more := time.After(15 * time.Second)
collect:
	for {
		select {
		case l := <-told:
			k := ends{l.Local, l.Remote}
			if _, twice := lives[k]; twice {
				t.Errorf("%v told twice", k)
			}
			lives[k] = l
			if len(lives) == 5 {
				more = time.After(time.Second)
			}
		case <-more:
			break collect
		}
	}
	close(release)
	if err := <-made; err != nil {
		t.Fatal(err)
	}
	if err := finish(); err != nil {
		t.Fatal(err)
	}
	for k, l := range lives {
		if k.local.Port() == 7011 || k.remote.Port() == 7011 {
			t.Errorf("a connection of another namespace: %+v", l)
		}
		if l.Remote.Port() == 7013 {
			refused = l.Local
		}
		if len(l.Processes) == 0 {
			t.Errorf("%v names no process", k)
		}
		for _, p := range l.Processes {
			if p.PID != os.Getpid() {
				t.Errorf("%v names pid %d %s, not this test", k, p.PID, p.Comm)
			}
		}
		// A disconnect (the abort) zeroes the freed socket's counts:
		// they are not known then, or from a listing.
		if l.Bytes != "final" && !(l.ClosedFirst == "abort" && l.Bytes != "final") {
			t.Errorf("%v: counts %q, want the freed socket's", k, l.Bytes)
		}
		if l.Start.IsZero() || l.Duration <= 0 {
			t.Errorf("%v: start %v duration %v", k, l.Start, l.Duration)
		}
	}
	want := func(name string, local, remote netip.AddrPort, opened string, final State, closed string, sent, received uint64) {
		t.Helper()
		l, ok := lives[ends{local, remote}]
		if !ok {
			t.Errorf("%s (%v to %v) not told; told %v", name, local, remote, lives)
			return
		}
		if l.Opened != opened || l.Final != final || l.ClosedFirst != closed || l.ReceivedAtLeast ||
			l.Bytes != "" && (l.BytesSent != sent || l.BytesReceived != received) {
			t.Errorf("%s: %s %s %s sent %d received %d (at least %v), want %s %s %s %d %d", name, l.Opened, l.Final, l.ClosedFirst,
				l.BytesSent, l.BytesReceived, l.ReceivedAtLeast, opened, final, closed, sent, received)
		}
	}
	want("client 1", client1, server, "active", FinWait2, "local", 77, 3000)
	if l, ok := lives[ends{client1, server}]; ok && l.Duration > 290*time.Millisecond {
		t.Errorf("client 1 lived %v: its socket ended when the ACK of its FIN came, before the server's close", l.Duration)
	}
	want("server 1", server, client1, "passive", LastAck, "remote", 3000, 77)
	want("client 2", client2, server, "active", Established, "reset", 10, 20)
	if l := lives[ends{server, client2}]; l.Opened != "passive" || l.Final != Established || l.ClosedFirst != "abort" {
		t.Errorf("server 2: %+v", l)
	}
	if l := lives[ends{server, client2}]; l.Bytes == "listed" && (l.BytesSent > 20 || l.BytesReceived > 10) || l.Bytes == "" && (l.BytesSent != 0 || l.BytesReceived != 0) {
		t.Errorf("server 2: %+v", l)
	}
	if refused.IsValid() {
		want("refused", refused, netip.MustParseAddrPort("127.0.0.1:7013"), "active", SynSent, "reset", 0, 0)
		if !lives[ends{refused, netip.MustParseAddrPort("127.0.0.1:7013")}].Reset {
			t.Errorf("refused: no reset")
		}
	} else {
		t.Errorf("the refused connect is not told: %v", lives)
	}
	if n := len(lives); n != 5 {
		t.Errorf("told %d connections, want 5", n)
	}
}
