package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux's TCP states as sock_diag and the tracepoint number them
// (include/net/tcp_states.h).
const (
	tcpEstablished uint8 = 1 + iota
	tcpSynSent
	tcpSynRecv
	tcpFinWait1
	tcpFinWait2
	tcpTimeWait
	tcpClose
	tcpCloseWait
	tcpLastAck
	tcpListen
	tcpClosing
	tcpNewSynRecv
)

// stateNames are tcplab's names for Linux's states; a request sock
// (TCP_NEW_SYN_RECV) is SYN_RECV, as ss shows it.
var stateNames = [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSED", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "SYN_RECV"}

func stateName(s uint8) string {
	if int(s) < len(stateNames) && s > 0 {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE%d", s)
}

// allStates asks sock_diag for sockets in every state.
const allStates = 0xfff &^ 1

// diagSock is one socket as sock_diag reports it (struct inet_diag_msg and
// its tcp_info attribute).
type diagSock struct {
	state, timer, retrans uint8
	local, remote         netip.AddrPort
	expires               uint32 // ms until the timer fires
	rqueue, wqueue        uint32
	inode                 uint32
	cookie                uint64
	info                  *unix.TCPInfo
}

const (
	inetDiagReqLen = 56
	inetDiagMsgLen = 72
	inetDiagInfo   = 2 // INET_DIAG_INFO
)

// diagConn is a NETLINK_SOCK_DIAG socket opened inside one namespace, so
// that it lists that namespace's sockets.
type diagConn struct {
	fd  int
	seq uint32
	buf []byte
}

func openDiag() (*diagConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag bind: %w", err)
	}
	return &diagConn{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (d *diagConn) close() error { return unix.Close(d.fd) }

// dump lists the IPv4 TCP sockets whose state is in the mask (bit n for
// state n), with tcp_info. The state filter is applied by the kernel.
func (d *diagConn) dump(states uint32) ([]diagSock, error) {
	d.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], d.seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_INET
	r[1] = unix.IPPROTO_TCP
	r[2] = 1 << (inetDiagInfo - 1)
	binary.NativeEndian.PutUint32(r[4:], states)
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []diagSock
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("sock_diag read: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(d.buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != d.seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return out, nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if s, ok := parseDiagMsg(m.Data); ok {
					out = append(out, s)
				}
			}
		}
	}
}

func parseDiagMsg(b []byte) (diagSock, bool) {
	var s diagSock
	if len(b) < inetDiagMsgLen || b[0] != unix.AF_INET {
		return s, false
	}
	s.state, s.timer, s.retrans = b[1], b[2], b[3]
	id := b[4:52]
	sport := binary.BigEndian.Uint16(id[0:])
	dport := binary.BigEndian.Uint16(id[2:])
	s.local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[4:8])), sport)
	s.remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[20:24])), dport)
	s.cookie = uint64(binary.NativeEndian.Uint32(id[40:])) | uint64(binary.NativeEndian.Uint32(id[44:]))<<32
	s.expires = binary.NativeEndian.Uint32(b[52:])
	s.rqueue = binary.NativeEndian.Uint32(b[56:])
	s.wqueue = binary.NativeEndian.Uint32(b[60:])
	s.inode = binary.NativeEndian.Uint32(b[68:])
	attrs := b[inetDiagMsgLen:]
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:]))
		t := binary.NativeEndian.Uint16(attrs[2:])
		if l < 4 || l > len(attrs) {
			break
		}
		if t == inetDiagInfo {
			var ti unix.TCPInfo
			dst := unsafe.Slice((*byte)(unsafe.Pointer(&ti)), unsafe.Sizeof(ti))
			copy(dst, attrs[4:l])
			s.info = &ti
		}
		attrs = attrs[(l+3)&^3:]
	}
	return s, true
}
