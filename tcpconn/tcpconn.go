// Package tcpconn helps Go programs avoid the TCP states that hurt in
// production: it tells whether the peer has closed before a write is lost,
// reads a connection's state and counters, closes gracefully or
// abortively, listens with an explicit backlog and reports the accept
// queue, and detects dead peers in bounded time. Linux only.
package tcpconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
)

// State is a TCP state, named as the rest of tcplab names them
// (ESTABLISHED, CLOSE_WAIT ...).
type State = inspect.State

// Info is a connection's state and counters from TCP_INFO.
type Info struct {
	State        State
	RTT, RTTVar  time.Duration
	RTO          time.Duration
	Retransmits  int    // retransmissions of the current timeout episode
	TotalRetrans int    // retransmitted segments in all
	Unacked      int    // segments sent and not acknowledged
	Lost         int    // segments thought lost
	BytesAcked   uint64 // bytes the peer acknowledged
	BytesRecv    uint64 // bytes received
	NotSent      int    // bytes queued and not sent yet
}

// control runs f on the connection's descriptor without duplicating it
// (conn.File() would).
func control(c *net.TCPConn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, error) {
	var ti *unix.TCPInfo
	err := control(c, func(fd int) error {
		var err error
		ti, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("TCP_INFO: %w", err)
	}
	return ti, nil
}

// StateOf returns the connection's TCP state.
func StateOf(c *net.TCPConn) (State, error) {
	ti, err := tcpInfo(c)
	if err != nil {
		return 0, err
	}
	return State(ti.State), nil
}

// InfoOf returns the connection's state and counters.
func InfoOf(c *net.TCPConn) (Info, error) {
	ti, err := tcpInfo(c)
	if err != nil {
		return Info{}, err
	}
	us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
	return Info{State: State(ti.State), RTT: us(ti.Rtt), RTTVar: us(ti.Rttvar), RTO: us(ti.Rto),
		Retransmits: int(ti.Retransmits), TotalRetrans: int(ti.Total_retrans), Unacked: int(ti.Unacked),
		Lost: int(ti.Lost), BytesAcked: ti.Bytes_acked, BytesRecv: ti.Bytes_received, NotSent: int(ti.Notsent_bytes)}, nil
}

// PeerClosed reports whether the peer's FIN or RST has arrived, without
// consuming data and without blocking: after it, a write would be lost
// (the peer answers it with RST) instead of failing. It reads the state
// (CLOSE_WAIT or later means a FIN came, even behind unread data) and
// peeks one byte without waiting (0 bytes: end of stream; ECONNRESET: a
// RST).
func PeerClosed(c *net.TCPConn) (bool, error) {
	st, err := StateOf(c)
	if err != nil {
		return false, err
	}
	switch st {
	case inspect.CloseWait, inspect.LastAck, inspect.Closing, inspect.TimeWait, inspect.Close:
		return true, nil
	}
	closed := false
	err = control(c, func(fd int) error {
		var b [1]byte
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0
			return nil
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.ECONNRESET):
			closed = true
			return nil
		}
		return err
	})
	return closed, err
}

// CloseResult tells how a graceful close went.
type CloseResult struct {
	// PeerReadAll: every byte written was acknowledged by the peer's TCP
	// before the close (unacked reached zero).
	PeerReadAll bool
	// Discarded is how many bytes of the peer's the drain threw away.
	Discarded int64
	// Reset: the close sent RST instead of FIN (the deadline passed with
	// unread data, or the peer had reset).
	Reset bool
}

// CloseGracefully shuts down the write side (sending FIN), reads and
// discards what the peer still sends until its FIN or the deadline, waits
// for the peer to acknowledge every byte written, then closes. A close
// with unread data sends RST on Linux; draining first avoids it. When the
// deadline passes with data still arriving, the close falls back to RST
// (SO_LINGER 0), which is reported.
func CloseGracefully(c *net.TCPConn, timeout time.Duration) (CloseResult, error) {
	var res CloseResult
	deadline := time.Now().Add(timeout)
	if err := c.CloseWrite(); err != nil {
		res.Reset = true
		return res, errors.Join(err, c.Close())
	}
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 32<<10)
	eof := false
	for {
		n, err := c.Read(buf)
		res.Discarded += int64(n)
		if err == nil {
			continue
		}
		if errors.Is(err, syscall.ECONNRESET) {
			res.Reset = true
		}
		eof = errors.Is(err, io.EOF)
		break
	}
	for time.Now().Before(deadline) {
		ti, err := tcpInfo(c)
		if err != nil {
			break
		}
		if ti.Unacked == 0 && ti.Notsent_bytes == 0 {
			res.PeerReadAll = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !eof && !res.Reset {
		// Data may still come: close now would reset anyway; say so.
		_ = c.SetLinger(0)
		res.Reset = true
	}
	return res, c.Close()
}

// Abort closes the connection with RST (SO_LINGER 0): queued data is
// dropped and the peer's next read or write fails with ECONNRESET. No
// TIME_WAIT is left behind.
func Abort(c *net.TCPConn) error {
	if err := c.SetLinger(0); err != nil {
		c.Close()
		return err
	}
	return c.Close()
}

// DetectDeadPeers makes a vanished peer (no FIN, no RST: a crash, a cable,
// a NAT that forgot) show up as an error in bounded time. Keepalive probes
// an idle connection after idle, every interval, count times; the user
// timeout fails the connection when sent data stays unacknowledged that
// long (keepalive alone does not cover a connection with data in flight).
// Without either, such a connection stays ESTABLISHED for ever when idle,
// and for about 15 minutes of retransmissions when not. Linux counts
// keepalive times in whole seconds (at least 1); a zero userTimeout leaves
// the user timeout unset.
func DetectDeadPeers(c *net.TCPConn, idle, interval time.Duration, count int, userTimeout time.Duration) error {
	if err := c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: interval, Count: count}); err != nil {
		return err
	}
	if userTimeout <= 0 {
		return nil
	}
	return control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
	})
}

// Listen is net.Listen with the backlog chosen by the caller: Go's
// net.Listen always asks for net.core.somaxconn (4096 on current Linux), so
// an overloaded server queues thousands of connections its clients think
// are accepted. The kernel caps the backlog at somaxconn.
func Listen(ctx context.Context, network, address string, backlog int) (*Listener, error) {
	if backlog < 1 {
		return nil, fmt.Errorf("backlog %d: want at least 1", backlog)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tl := ln.(*net.TCPListener)
	// listen(2) again on a listening socket only changes its backlog.
	rc, err := tl.SyscallConn()
	if err == nil {
		var lerr error
		err = rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) })
		if err == nil {
			err = lerr
		}
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen backlog %d: %w", backlog, err)
	}
	return &Listener{TCPListener: tl}, nil
}

// Listener is a TCP listener that can report its accept queue.
type Listener struct {
	*net.TCPListener
}

// Queue is a listener's accept queue: connections the kernel has
// completed (the clients see ESTABLISHED) and the program has not
// accepted, and the limit past which new handshakes are dropped.
type Queue struct {
	Len, Limit int
}

// Queue asks sock_diag for the listener's accept queue (Recv-Q and Send-Q
// of ss -l).
func (l *Listener) Queue() (Queue, error) {
	ap, err := netip.ParseAddrPort(l.Addr().String())
	if err != nil {
		return Queue{}, err
	}
	d, err := inspect.OpenDiag()
	if err != nil {
		return Queue{}, err
	}
	defer d.Close()
	f := inspect.Filter{States: inspect.Mask(inspect.Listen), SPort: []inspect.PortRange{{Lo: ap.Port(), Hi: ap.Port()}}}
	if !ap.Addr().IsUnspecified() {
		f.Src = []netip.Prefix{netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen())}
	}
	socks, err := d.Dump(f)
	if err != nil {
		return Queue{}, err
	}
	ino, err := l.inode()
	if err != nil {
		return Queue{}, err
	}
	for _, s := range socks {
		if s.Inode == ino {
			return Queue{Len: int(s.RecvQ), Limit: int(s.SendQ)}, nil
		}
	}
	return Queue{}, fmt.Errorf("listener %s not found by sock_diag", ap)
}

func (l *Listener) inode() (uint32, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, err
	}
	return uint32(st.Ino), serr
}
