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
	"math"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
)

// State is a TCP state, named as the rest of tcplab names them
// (ESTABLISHED, CLOSE_WAIT ...).
type State = inspect.State

// The states, numbered as Linux numbers them.
const (
	Established = inspect.Established
	SynSent     = inspect.SynSent
	SynRecv     = inspect.SynRecv
	FinWait1    = inspect.FinWait1
	FinWait2    = inspect.FinWait2
	TimeWait    = inspect.TimeWait
	Closed      = inspect.Close
	CloseWait   = inspect.CloseWait
	LastAck     = inspect.LastAck
	Listening   = inspect.Listen
	Closing     = inspect.Closing
)

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
	BytesSent    uint64 // bytes sent, retransmissions included
	BytesRetrans uint64 // bytes retransmitted
	Cwnd         int    // congestion window, in segments
	MinRTT       time.Duration
	// SinceDataRecv is the time since data last arrived.
	SinceDataRecv time.Duration
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
		Lost: int(ti.Lost), BytesAcked: ti.Bytes_acked, BytesRecv: ti.Bytes_received, NotSent: int(ti.Notsent_bytes),
		BytesSent: ti.Bytes_sent, BytesRetrans: ti.Bytes_retrans, Cwnd: int(ti.Snd_cwnd), MinRTT: us(ti.Min_rtt),
		SinceDataRecv: time.Duration(ti.Last_data_recv) * time.Millisecond}, nil
}

// PeerClosed reports whether the peer has sent its FIN or a RST, without
// consuming data and without blocking. A client that only writes learns
// from it that its next write would go to a closed peer: that write would
// succeed, its bytes be answered by RST and lost, and only the write after
// it fail (EPIPE). It reads the connection's state from TCP_INFO: a FIN
// moves it to CLOSE_WAIT (or CLOSING, or on to CLOSED after our own FIN),
// even when unread data is in front of the FIN, and a RST to CLOSED. A
// peer that only half-closed may still read: PeerClosed says it sent FIN,
// not that it stopped reading.
func PeerClosed(c *net.TCPConn) (bool, error) {
	st, err := StateOf(c)
	if err != nil {
		return false, err
	}
	switch st {
	case CloseWait, LastAck, Closing, TimeWait, Closed:
		return true, nil
	}
	return false, nil
}

// CloseResult tells how a graceful close went.
type CloseResult struct {
	// PeerAcked: the peer's TCP acknowledged every byte written (unacked
	// reached zero) before the close.
	PeerAcked bool
	// Discarded is how many bytes of the peer's the drain threw away.
	Discarded int64
	// PeerReset: the peer reset the connection during the drain.
	PeerReset bool
	// SentReset: the close sent RST instead of letting the FIN finish,
	// because the deadline passed with unread bytes from the peer.
	SentReset bool
}

// CloseGracefully shuts down the write side (sending FIN), reads and
// discards what the peer still sends until its FIN or the deadline, gives
// the peer until the deadline to acknowledge every byte written, then
// closes. Closing with unread data sends RST on Linux and may destroy what
// the peer had not read yet; draining first avoids it. When the deadline
// passes with the peer still sending, the close sends RST (SO_LINGER 0),
// which is reported; a peer that is quiet but has not closed gets the
// normal close (our FIN is already out). No other goroutine should read
// the connection meanwhile.
func CloseGracefully(c *net.TCPConn, timeout time.Duration) (CloseResult, error) {
	var res CloseResult
	deadline := time.Now().Add(timeout)
	if err := c.CloseWrite(); err != nil {
		return res, errors.Join(err, c.Close())
	}
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 32<<10)
	var readErr error
	var lastData time.Time
	eof := false
	for {
		n, err := c.Read(buf)
		res.Discarded += int64(n)
		if n > 0 {
			lastData = time.Now()
		}
		if err == nil {
			continue
		}
		eof = errors.Is(err, io.EOF)
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, syscall.ECONNRESET):
			res.PeerReset = true
		default:
			readErr = err
		}
		break
	}
	for {
		ti, err := tcpInfo(c)
		if err != nil {
			break
		}
		if ti.Unacked == 0 && ti.Notsent_bytes == 0 {
			res.PeerAcked = true
			break
		}
		if !time.Now().Before(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	unread := 0
	_ = control(c, func(fd int) error {
		var err error
		unread, err = unix.IoctlGetInt(fd, unix.SIOCINQ)
		return err
	})
	// A peer still sending at the deadline (unread bytes, or data in its
	// last 50 ms) would be reset by the close anyway, as soon as its next
	// segment came: do it now, knowingly, and say so.
	talking := unread > 0 || !eof && time.Since(lastData) < 50*time.Millisecond
	if talking && !res.PeerReset {
		if err := c.SetLinger(0); err == nil {
			res.SentReset = true
		}
	}
	return res, errors.Join(readErr, c.Close())
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
// Go turns keepalive on by default (15 s idle, then 9 probes 15 s apart:
// about 2.5 minutes); without keepalive an idle connection to a vanished
// peer stays ESTABLISHED for ever, and one with data in flight retries for
// about 15 minutes. Linux counts keepalive times in whole seconds (at
// least 1); zero idle, interval or count mean Go's defaults. Once a user
// timeout is set the kernel uses it instead of the probe count to give up,
// so choose userTimeout >= idle + interval*count; zero leaves it unset.
func DetectDeadPeers(c *net.TCPConn, idle, interval time.Duration, count int, userTimeout time.Duration) error {
	if err := c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: interval, Count: count}); err != nil {
		return err
	}
	if userTimeout <= 0 {
		return nil
	}
	return control(c, func(fd int) error {
		ms := min(max(userTimeout.Milliseconds(), 1), math.MaxInt32)
		return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(ms))
	})
}

// Listen is net.Listen with the backlog chosen by the caller: Go's
// net.Listen always asks for net.core.somaxconn (4096 on current Linux), so
// an overloaded server queues thousands of connections its clients think
// are accepted. The kernel caps the backlog at somaxconn.
//
// The socket is made by net.ListenConfig and its backlog changed right
// after (a second listen(2) only changes the backlog), so for a moment it
// has Go's; on a busy fixed port a few more connections than backlog can
// be queued then.
func Listen(ctx context.Context, network, address string, backlog int) (*Listener, error) {
	if backlog < 1 {
		return nil, fmt.Errorf("backlog %d: want at least 1", backlog)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("network %q: want tcp, tcp4 or tcp6", network)
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
// of ss -l), in the calling thread's network namespace; a listener made in
// another one is read through TCP_INFO instead.
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
	// Not in this thread's network namespace: TCP_INFO on the listener
	// gives the same two numbers (unacked and sacked, for a listener).
	var ti *unix.TCPInfo
	rc, err := l.SyscallConn()
	if err != nil {
		return Queue{}, err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return Queue{}, err
	}
	if ierr != nil {
		return Queue{}, fmt.Errorf("listener %s: not found by sock_diag, and TCP_INFO: %w", ap, ierr)
	}
	return Queue{Len: int(ti.Unacked), Limit: int(ti.Sacked)}, nil
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
