package inspect

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tcplab/tcplab/internal/nstest"
	"github.com/vishvananda/netns"
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
	oln, oc, os2 := dialIn(t, other, "127.0.0.1:7001")
	otherPort := netip.MustParseAddrPort(oln.Addr().String()).Port()
	oc.Close()
	os2.Close()
	oln.Close()

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
