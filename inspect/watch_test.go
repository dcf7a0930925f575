package inspect

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tcplab/tcplab/internal/nstest"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// watchNS makes a network namespace for the test (see nstest.New).
func watchNS(t testing.TB) (netns.NsHandle, Target) {
	h, path := nstest.New(t)
	return h, Target{Netns: path}
}

// dialIn makes a listener and a connection to it inside ns.
func dialIn(t *testing.T, ns netns.NsHandle, addr string) (net.Listener, net.Conn, net.Conn) {
	t.Helper()
	var ln net.Listener
	var c net.Conn
	err := InNetns(ns, func() error {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		c, err = net.Dial("tcp", ln.Addr().String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return ln, c, s
}

func TestWatchOneConnection(t *testing.T) {
	ns, target := watchNS(t)
	other, _ := watchNS(t)
	w, err := NewWatcher(target, Filter{}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Another namespace's connection must not show. Its server port is
	// fixed and differs from the watched one's: the same 4-tuple in two
	// namespaces (two loopback servers that happened to get one port)
	// cannot be told apart, since the tracepoint carries no namespace.
	// It is closed from a thread of that namespace: a change is placed by
	// the namespace of the thread that made it, read after the fact, and
	// Go may move this test's thread into the watched namespace (InNetns)
	// before the watch reads it.
	oln, oc, os2 := dialIn(t, other, "127.0.0.1:7001")
	otherPort := netip.MustParseAddrPort(oln.Addr().String()).Port()
	if err := InNetns(other, func() error {
		oc.Close()
		os2.Close()
		return oln.Close()
	}); err != nil {
		t.Fatal(err)
	}

	// Poll as watch does, while the connection lives.
	seq := map[netip.AddrPort][]Transition{}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			ts, err := w.Poll()
			if err != nil {
				done <- err
				return
			}
			for _, x := range ts {
				if x.Local.Port() == otherPort || x.Remote.Port() == otherPort {
					t.Errorf("a change from another namespace: %+v", x)
				}
				seq[x.Local] = append(seq[x.Local], x)
			}
			select {
			case <-stop:
				done <- nil
				return
			case <-time.After(30 * time.Millisecond):
			}
		}
	}()
	ln, c, s := dialIn(t, ns, "127.0.0.1:7002")
	server := netip.MustParseAddrPort(ln.Addr().String())
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	time.Sleep(100 * time.Millisecond)
	c.Close() // the client closes first: FIN_WAIT1, FIN_WAIT2 ...
	time.Sleep(100 * time.Millisecond)
	s.Close() // ... and TIME_WAIT once the server's FIN arrives
	time.Sleep(100 * time.Millisecond)
	ln.Close()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	states := func(ts []Transition) []string {
		var out []string
		for _, x := range ts {
			out = append(out, x.Old.String()+">"+x.New.String())
		}
		return out
	}
	// The connecting socket has no port until connect() picks one.
	pending := seq[netip.AddrPortFrom(client.Addr(), 0)]
	gotClient := append(pending, seq[client]...)
	wantClient := []string{"CLOSED>SYN_SENT", "SYN_SENT>ESTABLISHED", "ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>TIME_WAIT"}
	if fmt.Sprint(states(gotClient)) != fmt.Sprint(wantClient) {
		t.Errorf("client changes:\n got %v\nwant %v", states(gotClient), wantClient)
	}
	// Keyed by local address, the server's listener and its connection
	// share an entry.
	wantServer := []string{"CLOSED>LISTEN", "LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED", "ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSED", "LISTEN>CLOSED"}
	if fmt.Sprint(states(seq[server])) != fmt.Sprint(wantServer) {
		t.Errorf("server changes:\n got %v\nwant %v", states(seq[server]), wantServer)
	}
	// Times in the previous state: known for every change after the
	// first of each socket, and the sleeps above show in them.
	for _, x := range gotClient[1:] {
		if x.InOld <= 0 {
			t.Errorf("client %s>%s: no time in the previous state", x.Old, x.New)
		}
	}
	if len(gotClient) == 5 && gotClient[2].InOld < 100*time.Millisecond {
		t.Errorf("ESTABLISHED lasted %v, the test held it 100 ms", gotClient[2].InOld)
	}
	// Processes come from the socket's inode: the listener is still open
	// at the first poll only if the poll came in time, so only check that
	// any process named is this one.
	for _, ts := range seq {
		for _, x := range ts {
			for _, p := range x.Processes {
				if p.PID != os.Getpid() {
					t.Errorf("%s>%s names pid %d, not this test", x.Old, x.New, p.PID)
				}
			}
		}
	}
	if w.Lost() != 0 {
		t.Errorf("lost %d changes", w.Lost())
	}
}

func TestFilterMatch(t *testing.T) {
	ap := netip.MustParseAddrPort
	f := Filter{SPort: []PortRange{{80, 80}, {8000, 8080}}, Dst: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, c := range []struct {
		local, remote string
		family        int
		want          bool
	}{
		{"10.1.1.1:80", "10.2.2.2:5555", 0, true},
		{"10.1.1.1:8080", "10.2.2.2:5555", 0, true},
		{"10.1.1.1:8081", "10.2.2.2:5555", 0, false},
		{"10.1.1.1:80", "192.168.1.1:5555", 0, false},
		// An IPv4 prefix matches an IPv4-mapped address, as the bytecode does.
		{"[::ffff:10.1.1.1]:80", "[::ffff:10.2.2.2]:5555", 0, true},
		// A mapped address is an IPv6 socket, as the kernel lists it.
		{"[::ffff:10.1.1.1]:80", "[::ffff:10.2.2.2]:5555", 4, false},
		{"[::ffff:10.1.1.1]:80", "[::ffff:10.2.2.2]:5555", 6, true},
		{"10.1.1.1:80", "10.2.2.2:5555", 6, false},
	} {
		g := f
		g.Family = c.family
		if got := g.Match(ap(c.local), ap(c.remote)); got != c.want {
			t.Errorf("Match(%s, %s) family %d = %v, want %v", c.local, c.remote, c.family, got, c.want)
		}
	}
}

// reuseConn connects from 127.0.0.1:from to the listener inside ns with
// SO_REUSEADDR, so that the kernel takes over a TIME_WAIT of the same
// 4-tuple (a bound connect() may reuse one at once, as tcp_twsk_unique
// allows); the client closes first and the server after reading the end,
// so the client's end goes to TIME_WAIT. With reset, the client only
// shuts its sending side and the server resets the connection: the
// client goes from FIN_WAIT2 to CLOSED and leaves the 4-tuple free.
func reuseConn(t *testing.T, ns netns.NsHandle, ln net.Listener, from int, reset bool) {
	t.Helper()
	var c net.Conn
	err := InNetns(ns, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: from},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
				return errors.Join(err, serr)
			}}
		var err error
		c, err = d.Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if reset {
		c.(*net.TCPConn).CloseWrite()
	} else {
		c.Close()
	}
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read %v, want EOF", err)
	}
	if reset {
		s.(*net.TCPConn).SetLinger(0)
	}
	s.Close()
	time.Sleep(50 * time.Millisecond) // the client's end is in TIME_WAIT, or closed
	c.Close()
}

// A TIME_WAIT that a new connection takes over is shown as reused, and
// the new connection's own close as its own: when a poll came between
// the two connections, and when both are in one batch. A connection reset
// in FIN_WAIT2 leaves no TIME_WAIT: a new connection on its 4-tuple in the
// same batch reuses nothing.
func TestWatchReusedTimeWait(t *testing.T) {
	ns, target := watchNS(t)
	host, err := OpenHost(target)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	recycled := func() int64 {
		c, err := host.Counters()
		if err != nil {
			t.Fatal(err)
		}
		v, _ := c.Get("TcpExt", "TWRecycled")
		return v
	}
	var ln net.Listener
	if err := InNetns(ns, func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:7003"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i, c := range []struct {
		name           string
		between, reset bool
	}{
		{"poll between", true, false},
		{"one batch", false, false},
		{"reset", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			from := 20001 + i
			before := recycled()
			w, err := NewWatcher(target, Filter{}, false)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			var all []Transition
			poll := func() {
				ts, err := w.Poll()
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, ts...)
			}
			reuseConn(t, ns, ln, from, c.reset)
			if c.between {
				poll()
			}
			reuseConn(t, ns, ln, from, false)
			poll()
			poll() // the listing after the last change
			client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(from))
			var got []string
			for _, x := range all {
				if x.Local == client {
					got = append(got, x.Old.String()+">"+x.New.String())
					if x.New == Reused && (x.Old != TimeWait || x.InOld <= 0 || x.Source != "trace") {
						t.Errorf("reuse shown as %+v, want from TIME_WAIT, with its time, from the trace", x)
					}
				}
			}
			one := []string{"CLOSED>SYN_SENT", "SYN_SENT>ESTABLISHED", "ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>TIME_WAIT"}
			want := append(append(append([]string{}, one...), "TIME_WAIT>reused"), one...)
			reused := int64(1)
			alt := want
			if c.reset { // the reset may come before the ACK of the client's FIN
				want = append(append(append([]string{}, one[:4]...), "FIN_WAIT2>CLOSED"), one...)
				alt = append(append(append([]string{}, one[:3]...), "FIN_WAIT1>CLOSED"), one...)
				reused = 0
			}
			if fmt.Sprint(got) != fmt.Sprint(want) && fmt.Sprint(got) != fmt.Sprint(alt) {
				t.Errorf("client changes:\n got %v\nwant %v", got, want)
			}
			if d := recycled() - before; d != reused {
				t.Errorf("TcpExtTWRecycled grew by %d, want %d", d, reused)
			}
			if w.Lost() != 0 {
				t.Errorf("lost %d changes", w.Lost())
			}
		})
	}
}
