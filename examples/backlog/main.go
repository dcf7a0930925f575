// Command backlog shows clients ESTABLISHED to a server that never accepted
// them: a listener with a backlog of 4 that does not call accept, and a
// burst of 20 clients. The accept queue holds backlog+1 completed
// connections (their clients see ESTABLISHED and may already send); the
// SYNs of the others are dropped and counted in ListenOverflows, and their
// clients wait in SYN_SENT, retrying after 1 s, 3 s, 7 s ...
// tcpconn.Listen sets the backlog (net.Listen always asks for somaxconn)
// and reports the queue as it fills.
//
//	go run ./examples/backlog
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/tcpconn"
)

// Report is what the burst did.
type Report struct {
	Backlog, Clients int
	Queue            []tcpconn.Queue // the accept queue after each connect
	Established      int             // clients ESTABLISHED, none accepted
	SynSent          int             // clients still waiting for an answer
	Overflows        int64           // ListenOverflows grew by this much
}

// Run makes the listener and the burst, and looks after wait.
func Run(backlog, clients int, wait time.Duration) (Report, error) {
	rep := Report{Backlog: backlog, Clients: clients}
	ln, err := tcpconn.Listen(context.Background(), "tcp4", "127.0.0.1:0", backlog)
	if err != nil {
		return rep, err
	}
	defer ln.Close()
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	h, err := inspect.OpenHost(inspect.Target{})
	if err != nil {
		return rep, err
	}
	defer h.Close()
	before, err := h.Counters()
	if err != nil {
		return rep, err
	}
	for range clients {
		// A non-blocking connect, so that a client whose SYN was dropped
		// stays in SYN_SENT instead of blocking the burst.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return rep, err
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}}); err != nil && err != unix.EINPROGRESS {
			return rep, err
		}
		// Wait (up to a second) for the handshake to reach the queue, or
		// for the SYN to be dropped once the queue is full.
		want := min(len(rep.Queue)+1, backlog+1)
		var q tcpconn.Queue
		for end := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
			if q, err = ln.Queue(); err != nil {
				return rep, err
			}
			if q.Len >= want || time.Now().After(end) {
				break
			}
		}
		rep.Queue = append(rep.Queue, q)
	}
	time.Sleep(wait)
	socks, err := h.Sockets(inspect.Filter{DPort: []inspect.PortRange{{Lo: port, Hi: port}},
		Dst: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if err != nil {
		return rep, err
	}
	for _, s := range socks {
		switch s.State {
		case inspect.Established:
			rep.Established++
		case inspect.SynSent:
			rep.SynSent++
		}
	}
	after, err := h.Counters()
	if err != nil {
		return rep, err
	}
	a, _ := before.Get("TcpExt", "ListenOverflows")
	b, _ := after.Get("TcpExt", "ListenOverflows")
	rep.Overflows = b - a
	return rep, nil
}

func main() {
	backlog := flag.Int("backlog", 4, "the listener's backlog")
	clients := flag.Int("clients", 20, "clients in the burst")
	flag.Parse()
	rep, err := Run(*backlog, *clients, 200*time.Millisecond)
	if err != nil {
		fmt.Fprintln(os.Stderr, "backlog:", err)
		os.Exit(1)
	}
	for i, q := range rep.Queue {
		fmt.Printf("after client %2d: accept queue %d of %d\n", i+1, q.Len, q.Limit)
	}
	fmt.Printf("%d clients ESTABLISHED that the server never accepted, %d in SYN_SENT; ListenOverflows +%d\n",
		rep.Established, rep.SynSent, rep.Overflows)
	fmt.Println("see `tcplab run accept-overflow` for the whole story, and `tcplab doctor` on a live host")
}
