// Command oneway shows the data a one-way client loses when its server has
// closed, and how tcpconn.PeerClosed avoids the loss.
//
// The server only reads, and closes a connection after it has been idle
// for -idle. The client only writes, one message every -every, and halfway
// pauses longer than -idle (a quiet period). Once the
// server has closed, the client's connection is in CLOSE_WAIT: its next
// write succeeds (the bytes go out) but the server's TCP answers them with
// RST, and the write after that fails with EPIPE. The bytes of the first
// write are lost without an error. With -check the client asks PeerClosed
// before each write, sees the FIN, reconnects, and every byte arrives.
//
//	go run ./examples/oneway           # loses a message
//	go run ./examples/oneway -check    # loses nothing
package main

import (
	"errors"
	"flag"
	"fmt"

	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/tcplab/tcplab/tcpconn"
)

// Config is one run of the demonstration.
type Config struct {
	Check    bool          // ask PeerClosed before each write, reconnect when closed
	Messages int           // messages the client sends
	Every    time.Duration // pause between messages
	Idle     time.Duration // the server closes a connection idle this long
}

// Write is one client write and its outcome.
type Write struct {
	N     int   // bytes the write call reported
	Err   error // its error
	Conn  int   // which connection (reconnects count up)
	After bool  // the server had already closed that connection
}

// Report is what happened.
type Report struct {
	Sent     int     // bytes the client's write calls accepted without error
	Received int     // bytes the server read
	Writes   []Write // every write, in order
	Reconn   int     // reconnections (with Check)
}

// server reads every connection until EOF or idle, then closes it.
type server struct {
	ln       net.Listener
	mu       sync.Mutex
	received int
	closed   map[string]bool // clients whose connection the server closed
	wg       sync.WaitGroup
	served   chan struct{} // closed when serve has returned
}

func (s *server) serve(idle time.Duration) {
	defer close(s.served)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 4096)
			for {
				c.SetReadDeadline(time.Now().Add(idle))
				n, err := c.Read(buf)
				s.mu.Lock()
				s.received += n
				s.mu.Unlock()
				if err != nil {
					break
				}
			}
			s.mu.Lock()
			s.closed[c.RemoteAddr().String()] = true
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *server) hasClosed(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed[c.LocalAddr().String()]
}

// Run plays the demonstration on loopback.
func Run(cfg Config) (Report, error) {
	var rep Report
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return rep, err
	}
	s := &server{ln: ln, closed: map[string]bool{}, served: make(chan struct{})}
	go s.serve(cfg.Idle)
	dial := func() (*net.TCPConn, error) {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
	c, err := dial()
	if err != nil {
		ln.Close()
		return rep, err
	}
	conn := 1
	for i := 0; i < cfg.Messages; i++ {
		time.Sleep(cfg.Every)
		if i == cfg.Messages/2 {
			time.Sleep(2 * cfg.Idle) // quiet: the server closes
		}
		if cfg.Check {
			if closed, err := tcpconn.PeerClosed(c); err == nil && closed {
				c.Close()
				if c, err = dial(); err != nil {
					break
				}
				conn++
				rep.Reconn++
			}
		}
		msg := fmt.Appendf(nil, "message %d\n", i)
		after := s.hasClosed(c)
		n, err := c.Write(msg)
		rep.Writes = append(rep.Writes, Write{N: n, Err: err, Conn: conn, After: after})
		if err == nil {
			rep.Sent += n
		}
	}
	c.Close()
	time.Sleep(50 * time.Millisecond) // let the server read what is in flight
	ln.Close()
	<-s.served // no handler is added after this
	s.wg.Wait()
	rep.Received = s.received
	return rep, nil
}

func main() {
	var cfg Config
	flag.BoolVar(&cfg.Check, "check", false, "ask tcpconn.PeerClosed before each write and reconnect when the server has closed")
	flag.IntVar(&cfg.Messages, "messages", 6, "messages to send")
	flag.DurationVar(&cfg.Every, "every", 400*time.Millisecond, "pause between messages")
	flag.DurationVar(&cfg.Idle, "idle", time.Second, "the server closes a connection idle this long")
	flag.Parse()
	rep, err := Run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "oneway:", err)
		os.Exit(1)
	}
	for i, w := range rep.Writes {
		note := ""
		if w.After {
			note = "  (the server had closed this connection)"
		}
		fmt.Printf("write %d on connection %d: %d bytes, error %v%s\n", i, w.Conn, w.N, w.Err, note)
	}
	fmt.Printf("client: %d bytes written without error; server: %d bytes received; %d reconnections\n", rep.Sent, rep.Received, rep.Reconn)
	if lost := rep.Sent - rep.Received; lost > 0 {
		fmt.Printf("lost without an error: %d bytes (see `tcplab run close-wait-data-loss`)\n", lost)
	}
}

// isPipe tells the error of a write after the peer's RST.
func isPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}
