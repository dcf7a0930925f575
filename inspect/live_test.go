package inspect_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/internal/nstest"
)

// liveNS is a network namespace of the test's own, with lo up.
type liveNS struct {
	h      netns.NsHandle
	target inspect.Target
}

// newLiveNS creates a network namespace for the test (see nstest.New).
func newLiveNS(t *testing.T) *liveNS {
	h, path := nstest.New(t)
	return &liveNS{h: h, target: inspect.Target{Netns: path}}
}

// do runs f inside the namespace.
func (ns *liveNS) do(t *testing.T, f func() error) {
	t.Helper()
	if err := inspect.InNetns(ns.h, f); err != nil {
		t.Fatal(err)
	}
}

func (ns *liveNS) sysctl(t *testing.T, name, value string) {
	t.Helper()
	ns.do(t, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), []byte(value), 0o644)
	})
}

func (ns *liveNS) host(t *testing.T) *inspect.Host {
	t.Helper()
	h, err := inspect.OpenHost(ns.target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// closeFD closes a raw socket at cleanup.
func closeFD(t *testing.T, fd int) { t.Cleanup(func() { unix.Close(fd) }) }

// rawListen makes a listener on 127.0.0.1:port with the given backlog.
func rawListen(t *testing.T, port, backlog int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Error(err)
		return -1
	}
	closeFD(t, fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Error(err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		t.Error(err)
	}
	return fd
}

// rawConnect starts a non-blocking connect to 127.0.0.1:port.
func rawConnect(t *testing.T, port int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Error(err)
		return -1
	}
	closeFD(t, fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		t.Errorf("connect: %v", err)
	}
	return fd
}

func sockets(t *testing.T, h *inspect.Host, f inspect.Filter) []inspect.Socket {
	t.Helper()
	s, err := h.Sockets(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sample(t *testing.T, h *inspect.Host) inspect.Sample {
	t.Helper()
	s, err := inspect.TakeSample(h)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func count(socks []inspect.Socket, keep func(s inspect.Socket) bool) int {
	n := 0
	for _, s := range socks {
		if keep(s) {
			n++
		}
	}
	return n
}

func describe(socks []inspect.Socket) string {
	var b strings.Builder
	for _, s := range socks {
		fmt.Fprintf(&b, "  %-11s %3d %3d %v %v\n", s.State, s.RecvQ, s.SendQ, s.Local, s.Remote)
	}
	return b.String()
}

func findings(fs []inspect.Finding, kind string) []inspect.Finding {
	var out []inspect.Finding
	for _, f := range fs {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

func describeFindings(fs []inspect.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s %s %q: %s %q\n", f.Level, f.Kind, f.Subject, f.Title, f.Evidence)
	}
	return b.String()
}

// TestLiveAcceptQueueOverflow: a listener with backlog 4 that never
// accepts, and 10 clients.
//
// Linux lets the accept queue hold backlog+1 connections
// (sk_acceptq_is_full is "sk_ack_backlog > sk_max_ack_backlog"), so
// 5 handshakes complete: the listener shows Recv-Q 5 against Send-Q 4 and
// there are 5 server-side ESTABLISHED children. Once the queue is full,
// tcp_conn_request drops every new SYN (ListenOverflows, ListenDrops), so
// the other 5 clients stay in SYN_SENT, retransmitting their SYN after
// 1 s, 3 s, 7 s... On loopback each handshake finishes inside its
// connect() call, so no SYN is answered and then refused at the ACK.
func TestLiveAcceptQueueOverflow(t *testing.T) {
	ns := newLiveNS(t)
	const port = 7001
	ns.do(t, func() error {
		rawListen(t, port, 4)
		for range 10 {
			rawConnect(t, port)
		}
		return nil
	})
	if t.Failed() {
		t.FailNow()
	}
	time.Sleep(300 * time.Millisecond)
	h := ns.host(t)
	a := sample(t, h)
	all := a.Sockets
	t.Logf("sockets:\n%s", describe(all))

	ls := sockets(t, h, inspect.Filter{States: inspect.Mask(inspect.Listen)})
	if len(ls) != 1 || ls[0].Local.Port() != port || ls[0].SendQ != 4 || ls[0].RecvQ != 5 {
		t.Fatalf("listeners: want one on :%d with Recv-Q 5, Send-Q 4:\n%s", port, describe(ls))
	}
	server := count(all, func(s inspect.Socket) bool { return s.State == inspect.Established && s.Local.Port() == port })
	clientEst := count(all, func(s inspect.Socket) bool { return s.State == inspect.Established && s.Remote.Port() == port })
	synSent := count(all, func(s inspect.Socket) bool { return s.State == inspect.SynSent && s.Remote.Port() == port })
	if server != 5 || clientEst != 5 || synSent != 5 || len(all) != 16 {
		t.Errorf("server ESTABLISHED %d, client ESTABLISHED %d, SYN_SENT %d, %d sockets; want 5, 5, 5, 16", server, clientEst, synSent, len(all))
	}

	// The kernel filters by port.
	bySport := sockets(t, h, inspect.Filter{SPort: []inspect.PortRange{{Lo: port, Hi: port}}})
	if len(bySport) != 6 || count(bySport, func(s inspect.Socket) bool { return s.State == inspect.Listen }) != 1 ||
		count(bySport, func(s inspect.Socket) bool { return s.State == inspect.Established && s.Local.Port() == port }) != 5 {
		t.Errorf("--sport %d: want the listener and its 5 connections:\n%s", port, describe(bySport))
	}
	synByDport := sockets(t, h, inspect.Filter{DPort: []inspect.PortRange{{Lo: port, Hi: port}}, States: inspect.Mask(inspect.SynSent)})
	if len(synByDport) != 5 || count(synByDport, func(s inspect.Socket) bool { return s.State == inspect.SynSent && s.Remote.Port() == port }) != 5 {
		t.Errorf("--dport %d --state syn-sent: want the 5 SYN_SENT:\n%s", port, describe(synByDport))
	}
	byDport := sockets(t, h, inspect.Filter{DPort: []inspect.PortRange{{Lo: port, Hi: port}}})
	if len(byDport) != 10 {
		t.Errorf("--dport %d: want the 10 clients:\n%s", port, describe(byDport))
	}
	none := sockets(t, h, inspect.Filter{SPort: []inspect.PortRange{{Lo: port + 1, Hi: 65535}}, DPort: []inspect.PortRange{{Lo: 0, Hi: port - 1}}})
	if len(none) != 0 {
		t.Errorf("a filter nothing matches chose:\n%s", describe(none))
	}

	// The SYNs retransmitted 1 s after the first ones hit the full queue
	// between the samples.
	time.Sleep(time.Second)
	b := sample(t, h)
	fs := inspect.Diagnose(a, b, nil, inspect.DefaultThresholds)
	t.Logf("findings:\n%s", describeFindings(fs))
	if over, _ := b.Counters.Get("TcpExt", "ListenOverflows"); over < 5 {
		t.Errorf("ListenOverflows %d, want at least 5", over)
	}
	acc := findings(fs, "accept-queue-overflow")
	if len(acc) != 1 || acc[0].Level != inspect.LevelError || acc[0].Subject != fmt.Sprintf("127.0.0.1:%d", port) ||
		!strings.Contains(strings.Join(acc[0].Evidence, "\n"), "Recv-Q 5 >= backlog 4") || acc[0].Scenario != "accept-overflow" {
		t.Errorf("accept-queue-overflow findings:\n%s", describeFindings(acc))
	}
	syn := findings(fs, "syn-sent-pileup")
	if len(syn) != 1 || syn[0].Subject != fmt.Sprintf("127.0.0.1:%d", port) || !strings.Contains(syn[0].Title, fmt.Sprintf("5 connections to 127.0.0.1:%d", port)) {
		t.Errorf("syn-sent-pileup findings:\n%s", describeFindings(syn))
	}
	if fs[0].Level != inspect.LevelError || inspect.Worst(fs) != inspect.LevelError {
		t.Errorf("the error does not come first:\n%s", describeFindings(fs))
	}
}

// closeWaitSetup: a server on port accepts n connections and never
// reads or closes them; the clients close, the first after sending
// "hello".
func closeWaitSetup(t *testing.T, ns *liveNS, port, n int) []netip.AddrPort {
	return nstest.CloseWait(t, func(f func() error) error { return inspect.InNetns(ns.h, f) }, port, n, []byte("hello"))
}

func TestLiveCloseWait(t *testing.T) {
	ns := newLiveNS(t)
	const port = 7002
	clients := closeWaitSetup(t, ns, port, 3)
	h := ns.host(t)
	a := sample(t, h)
	t.Logf("sockets:\n%s", describe(a.Sockets))

	cw := sockets(t, h, inspect.Filter{States: inspect.Mask(inspect.CloseWait)})
	var remotes []netip.AddrPort
	for _, s := range cw {
		if s.Local.Port() == port {
			remotes = append(remotes, s.Remote)
		}
	}
	slices.SortFunc(remotes, netip.AddrPort.Compare)
	slices.SortFunc(clients, netip.AddrPort.Compare)
	if len(cw) != 3 || !slices.Equal(remotes, clients) {
		t.Errorf("CLOSE_WAIT: want 3 on :%d from %v:\n%s", port, clients, describe(cw))
	}
	// The unread FIN counts one in Recv-Q (rcv_nxt - copied_seq): 5+1
	// for the client that wrote, 1 for the others.
	var rq []uint32
	for _, s := range cw {
		rq = append(rq, s.RecvQ)
	}
	if slices.Sort(rq); fmt.Sprint(rq) != "[1 1 6]" {
		t.Errorf("CLOSE_WAIT Recv-Q %v, want [1 1 6]", rq)
	}
	fw2 := sockets(t, h, inspect.Filter{States: inspect.Mask(inspect.FinWait2), DPort: []inspect.PortRange{{Lo: port, Hi: port}}})
	if len(fw2) != 3 {
		t.Errorf("FIN_WAIT2: want 3:\n%s", describe(fw2))
	}
	for _, s := range fw2 {
		if !slices.Contains(clients, s.Local) {
			t.Errorf("FIN_WAIT2 %v is not one of the clients %v", s.Local, clients)
		}
	}

	st := inspect.Count(a.Sockets)
	st.NameOwners()
	if len(st.Services) != 1 || st.Services[0].Port != port || st.Services[0].Total != 4 ||
		st.Services[0].States[inspect.CloseWait] != 3 || st.Services[0].States[inspect.Listen] != 1 {
		t.Errorf("services: %+v", st.Services)
	}
	if len(st.Outgoing) != 1 || st.Outgoing[0].Port != port || st.Outgoing[0].Total != 3 || st.Outgoing[0].States[inspect.FinWait2] != 3 {
		t.Errorf("outgoing: %+v", st.Outgoing)
	}
	if len(st.Services) == 1 && !slices.ContainsFunc(st.Services[0].Processes, func(p inspect.Proc) bool { return p.PID == os.Getpid() }) {
		t.Errorf("the service's processes %+v do not name this process (%d)", st.Services[0].Processes, os.Getpid())
	}

	time.Sleep(time.Second)
	b := sample(t, h)
	owners := inspect.FindOwners(inspect.CloseWaitInodes(b), false)
	if len(owners) != 3 {
		t.Errorf("owners of the CLOSE_WAIT sockets: %+v", owners)
	}
	fs := inspect.Diagnose(a, b, owners, inspect.DefaultThresholds)
	t.Logf("findings:\n%s", describeFindings(fs))
	leak := findings(fs, "close-wait-leak")
	if len(leak) != 1 {
		t.Fatalf("close-wait-leak findings:\n%s", describeFindings(fs))
	}
	f := leak[0]
	if !strings.Contains(f.Subject, fmt.Sprintf("port %d", port)) || !strings.Contains(f.Subject, fmt.Sprintf("pid %d", os.Getpid())) ||
		f.Level != inspect.LevelWarning || f.Scenario != "close-wait" ||
		len(f.Evidence) != 2 || !strings.HasPrefix(f.Evidence[0], "3 CLOSE_WAIT now, 3 in the first sample, 3 of them already there") ||
		f.Evidence[1] != "5 unread bytes in their receive queues" {
		t.Errorf("close-wait-leak: %+v", f)
	}
	if inspect.Worst(fs) == inspect.LevelError {
		t.Errorf("an error-level finding:\n%s", describeFindings(fs))
	}
}

// TestLivePortExhaustion: 20 short connections that the client closes
// first leave 20 TIME_WAIT on the client side, 20 of the namespace's 32
// ephemeral ports.
func TestLivePortExhaustion(t *testing.T) {
	ns := newLiveNS(t)
	const port = 7003
	ns.sysctl(t, "net.ipv4.ip_local_port_range", "40000 40031")
	// tcp_tw_reuse 2 (the default) lets connect() take over a loopback
	// TIME_WAIT port once a second has ticked; keep the count exact.
	ns.sysctl(t, "net.ipv4.tcp_tw_reuse", "0")
	var ln net.Listener
	ns.do(t, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	served := make(chan error, 20)
	go func() {
		for range 20 {
			c, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 64)
				for {
					if _, err := c.Read(buf); err != nil {
						if errors.Is(err, os.ErrDeadlineExceeded) {
							served <- err
						} else {
							served <- nil // EOF: the client closed first
						}
						return
					}
				}
			}()
		}
	}()
	ns.do(t, func() error {
		for range 20 {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				return err
			}
			c.Write([]byte("hello"))
			c.Close()
		}
		return nil
	})
	for range 20 {
		if err := <-served; err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	h := ns.host(t)
	a := sample(t, h)
	tw := count(a.Sockets, func(s inspect.Socket) bool {
		return s.State == inspect.TimeWait && s.Remote.Port() == port && s.Local.Port() >= 40000 && s.Local.Port() <= 40031
	})
	if tw != 20 || len(a.Sockets) != 21 {
		t.Errorf("want 20 client TIME_WAIT and the listener:\n%s", describe(a.Sockets))
	}
	st := inspect.Count(a.Sockets)
	if len(st.Outgoing) != 1 || st.Outgoing[0].Port != port || st.Outgoing[0].States[inspect.TimeWait] != 20 || st.Outgoing[0].Total != 20 {
		t.Errorf("outgoing: %+v", st.Outgoing)
	}
	if len(st.Services) != 1 || st.Services[0].Total != 1 {
		t.Errorf("services: %+v", st.Services)
	}
	twOnly := sockets(t, h, inspect.Filter{States: inspect.Mask(inspect.TimeWait), SPort: []inspect.PortRange{{Lo: 40000, Hi: 40031}}})
	if len(twOnly) != 20 {
		t.Errorf("--state time-wait --sport 40000-40031: %d sockets", len(twOnly))
	}

	time.Sleep(500 * time.Millisecond)
	b := sample(t, h)
	fs := inspect.Diagnose(a, b, nil, inspect.DefaultThresholds)
	t.Logf("findings:\n%s", describeFindings(fs))
	pe := findings(fs, "port-exhaustion")
	dest := fmt.Sprintf("127.0.0.1:%d", port)
	if len(pe) != 1 || pe[0].Subject != dest || pe[0].Level != inspect.LevelWarning ||
		!strings.Contains(pe[0].Title, "20 of 32 ephemeral ports") || !strings.Contains(pe[0].Title, dest) ||
		!strings.Contains(strings.Join(pe[0].Evidence, "\n"), "ip_local_port_range 40000-40031") ||
		!strings.Contains(strings.Join(pe[0].Evidence, "\n"), "20 TIME_WAIT") {
		t.Errorf("port-exhaustion findings:\n%s", describeFindings(pe))
	}
}

// TestLiveIPv6: a listener on [::1] is an IPv6 socket; a dual-stack
// listener's connection from 127.0.0.1 is an IPv6 socket with a
// v4-mapped address, which an IPv4 prefix still chooses.
func TestLiveIPv6(t *testing.T) {
	ns := newLiveNS(t)
	const port6, portDual = 7004, 7005
	var conns []net.Conn
	ns.do(t, func() error {
		ln, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port6))
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		dual, err := net.Listen("tcp", fmt.Sprintf(":%d", portDual))
		if err != nil {
			return err
		}
		t.Cleanup(func() { dual.Close() })
		c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", portDual))
		if err != nil {
			return err
		}
		conns = append(conns, c)
		s, err := dual.Accept()
		if err != nil {
			return err
		}
		conns = append(conns, s)
		return nil
	})
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	h := ns.host(t)
	ls := inspect.Mask(inspect.Listen)
	v6Loop := netip.AddrPortFrom(netip.IPv6Loopback(), port6)
	has := func(socks []inspect.Socket, ap netip.AddrPort, st inspect.State) bool {
		return slices.ContainsFunc(socks, func(s inspect.Socket) bool { return s.Local == ap && s.State == st })
	}
	if s := sockets(t, h, inspect.Filter{Family: 6, States: ls}); !has(s, v6Loop, inspect.Listen) {
		t.Errorf("Family 6 lacks [::1]:%d:\n%s", port6, describe(s))
	}
	if s := sockets(t, h, inspect.Filter{Src: []netip.Prefix{netip.MustParsePrefix("::1/128")}}); len(s) != 1 || !has(s, v6Loop, inspect.Listen) {
		t.Errorf("--src ::1/128: want only [::1]:%d:\n%s", port6, describe(s))
	}
	if s := sockets(t, h, inspect.Filter{Family: 4}); slices.ContainsFunc(s, func(s inspect.Socket) bool { return s.Local.Addr().Is6() }) || len(s) != 1 {
		t.Errorf("Family 4: want only the IPv4 client:\n%s", describe(s))
	}
	if s := sockets(t, h, inspect.Filter{Family: 4, Src: []netip.Prefix{netip.MustParsePrefix("::1/128")}}); len(s) != 0 {
		t.Errorf("Family 4 --src ::1: %d sockets:\n%s", len(s), describe(s))
	}
	// The accepted side of the IPv4 connection is an IPv6 socket with
	// ::ffff:127.0.0.1 at both ends; 127.0.0.0/8 chooses it.
	mapped := netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), portDual)
	s := sockets(t, h, inspect.Filter{Family: 6, Src: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if len(s) != 1 || !has(s, mapped, inspect.Established) {
		t.Errorf("Family 6 --src 127.0.0.0/8: want the v4-mapped server side:\n%s", describe(s))
	}
	s = sockets(t, h, inspect.Filter{Src: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if len(s) != 2 {
		t.Errorf("--src 127.0.0.0/8: want the client and the v4-mapped server side:\n%s", describe(s))
	}
	s = sockets(t, h, inspect.Filter{Dst: []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.1/128")}})
	if len(s) != 1 || !has(s, mapped, inspect.Established) {
		t.Errorf("--dst ::ffff:127.0.0.1: want the v4-mapped server side:\n%s", describe(s))
	}
}
