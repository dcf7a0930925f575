// Command closewait shows a CLOSE_WAIT leak and its fix. The leaky handler
// reads a request to its end and returns without closing the connection:
// the client's FIN has arrived, so the socket sits in CLOSE_WAIT until the
// process exits, one more per client. The fixed handler closes (defer
// conn.Close()). tcplab doctor names the leaking process and port.
//
//	go run ./examples/closewait            # leaks
//	go run ./examples/closewait -fixed     # does not
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/tcplab/tcplab/inspect"
)

// leaky forgets to close.
func leaky(c net.Conn) {
	io.Copy(io.Discard, c)
	// missing: c.Close()
}

// fixed closes on every path.
func fixed(c net.Conn) {
	defer c.Close()
	io.Copy(io.Discard, c)
}

// Server accepts and hands every connection to handle; it keeps the
// connections it was given so that a leak is not undone by the garbage
// collector (Go closes unreachable descriptors; a real leak keeps them
// reachable, in a map or a goroutine stuck elsewhere).
type Server struct {
	ln   net.Listener
	Port uint16
	kept []net.Conn
	done chan struct{}
}

// Start listens on loopback and serves with handle.
func Start(handle func(net.Conn)) (*Server, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, Port: netip.MustParseAddrPort(ln.Addr().String()).Port(), done: make(chan struct{})}
	conns := make(chan net.Conn)
	go func() {
		for c := range conns {
			s.kept = append(s.kept, c)
		}
		close(s.done)
	}()
	go func() {
		defer close(conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go handle(c)
		}
	}()
	return s, nil
}

// Stop closes the listener and every connection.
func (s *Server) Stop() {
	s.ln.Close()
	<-s.done
	for _, c := range s.kept {
		c.Close()
	}
}

// Clients makes n clients that each send a request and close.
func Clients(port uint16, n int) error {
	for range n {
		c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		c.Close()
	}
	time.Sleep(100 * time.Millisecond)
	return nil
}

// CloseWait counts the CLOSE_WAIT sockets on the server's port.
func CloseWait(port uint16) (int, error) {
	h, err := inspect.OpenHost(inspect.Target{})
	if err != nil {
		return 0, err
	}
	defer h.Close()
	socks, err := h.Sockets(inspect.Filter{States: inspect.Mask(inspect.CloseWait), SPort: []inspect.PortRange{{Lo: port, Hi: port}}})
	return len(socks), err
}

func main() {
	useFixed := flag.Bool("fixed", false, "use the handler that closes")
	n := flag.Int("clients", 10, "clients, each one request")
	flag.Parse()
	handle := leaky
	if *useFixed {
		handle = fixed
	}
	s, err := Start(handle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "closewait:", err)
		os.Exit(1)
	}
	defer s.Stop()
	if err := Clients(s.Port, *n); err != nil {
		fmt.Fprintln(os.Stderr, "closewait:", err)
		os.Exit(1)
	}
	cw, err := CloseWait(s.Port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "closewait:", err)
		os.Exit(1)
	}
	fmt.Printf("%d clients served; %d sockets in CLOSE_WAIT on port %d (pid %d)\n", *n, cw, s.Port, os.Getpid())
	if cw > 0 {
		fmt.Println("run `tcplab doctor` now, in another terminal, to see it named; `tcplab run close-wait` explains it")
		time.Sleep(10 * time.Second)
	}
}
