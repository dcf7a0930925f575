package sim

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// Handshake runs the built-in first lesson: a server listens on port 80, a
// client connects, and the three-way handshake completes. It returns the
// network after the handshake so callers can look at snapshots. The
// scenario library replaces this with a scenario file.
func Handshake(cfg Config, sink trace.Sink) (*Network, error) {
	n := New(cfg)
	n.SetSink(sink)
	if _, err := n.AddHost("client", netip.MustParseAddr("10.0.0.1"), tcp.Linux()); err != nil {
		return nil, err
	}
	if _, err := n.AddHost("server", netip.MustParseAddr("10.0.0.2"), tcp.Linux()); err != nil {
		return nil, err
	}
	lfd, _ := n.Do("server", tcp.Call{Op: tcp.OpSocket})
	if r, _ := n.Do("server", tcp.Call{Op: tcp.OpListen, FD: tcp.FD(lfd.Ret), Port: 80, Backlog: 128}); r.Err != tcp.OK {
		return nil, fmt.Errorf("listen: %v", r.Err)
	}
	acc, _ := n.Do("server", tcp.Call{Op: tcp.OpAccept, FD: tcp.FD(lfd.Ret)})
	cfd, _ := n.Do("client", tcp.Call{Op: tcp.OpSocket})
	conn, _ := n.Do("client", tcp.Call{Op: tcp.OpConnect, FD: tcp.FD(cfd.Ret), Addr: netip.MustParseAddrPort("10.0.0.2:80")})
	done := func() bool {
		snap, _ := n.Snapshot("server")
		for _, s := range snap {
			if s.State == "ESTABLISHED" && !s.Accepting {
				return true
			}
		}
		return false
	}
	if !n.RunUntilCond(done, n.Now()+time.Second) {
		return nil, fmt.Errorf("handshake did not complete (connect call %d, accept call %d)", conn.ID, acc.ID)
	}
	return n, nil
}
