package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// sock_diag's multicast groups for sockets being freed
// (SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY), as nl_groups bits.
const (
	groupTCPDestroy  = 1 << (1 - 1)
	groupTCP6Destroy = 1 << (3 - 1)
)

// destroyRcvBuf is the receive buffer asked for: a burst of closes must not
// overflow it between two reads (each message is about 400 bytes).
const destroyRcvBuf = 8 << 20

// Destroys reads the kernel's sock_diag broadcasts of TCP sockets being
// freed in one namespace: each one's addresses, cookie and last tcp_info,
// the final byte counts included. The kernel sends them for sockets that
// user space made (not for its own), and only to a reader with
// CAP_NET_ADMIN in the namespace.
type Destroys struct {
	fd   int
	buf  []byte
	lost int
}

// OpenDestroys subscribes in the calling thread's namespace.
func OpenDestroys() (*Destroys, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	// As root the buffer may exceed net.core.rmem_max; without, the
	// kernel caps it.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, destroyRcvBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, destroyRcvBuf)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groupTCPDestroy | groupTCP6Destroy}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("sock_diag destroy events need CAP_NET_ADMIN: run as root")
		}
		return nil, fmt.Errorf("sock_diag destroy events: %w", err)
	}
	return &Destroys{fd: fd, buf: make([]byte, diagRecvBufSize)}, nil
}

// Close closes the subscription.
func (d *Destroys) Close() error { return unix.Close(d.fd) }

// Lost is how many times the kernel dropped messages because the buffer
// was full (each time, one or more sockets).
func (d *Destroys) Lost() int { return d.lost }

// Read calls fn for each socket freed since the last call, without
// waiting; s is reused between calls.
func (d *Destroys) Read(fn func(s *Socket)) error {
	var s Socket
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS): // overflowed; reading goes on
			d.lost++
			continue
		case err != nil:
			return fmt.Errorf("sock_diag destroy events: %w", err)
		}
		parseDestroys(d.buf[:n], &s, fn)
	}
}

// parseDestroys reads the messages of one datagram.
func parseDestroys(b []byte, s *Socket, fn func(s *Socket)) {
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:]))
		typ := binary.NativeEndian.Uint16(b[4:])
		if l < nlmsgHdrLen || l > len(b) {
			return
		}
		if typ == unix.SOCK_DIAG_BY_FAMILY && parseDiagMsg(b[nlmsgHdrLen:l], s) {
			fn(s)
		}
		b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
	}
}
