package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is one TCP socket as sock_diag reports it (struct inet_diag_msg and,
// when asked, its tcp_info).
type Socket struct {
	State  State          `json:"state"`
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	// RecvQ and SendQ are the bytes queued; on a listener, the accept
	// queue's length and its limit (the backlog).
	RecvQ uint32 `json:"recv_q"`
	SendQ uint32 `json:"send_q"`
	// Timer is the pending timer (see TimerName), Expires the time left on
	// it and Retrans the retransmissions or probes it has made.
	Timer   uint8         `json:"-"`
	Expires time.Duration `json:"-"`
	Retrans uint8         `json:"-"`
	UID     uint32        `json:"uid"`
	Inode   uint32        `json:"inode"`
	Cookie  uint64        `json:"cookie"`
	Info    *tcpInfo      `json:"-"`
	// Mem is the socket's memory when asked (Filter.Memory), as
	// INET_DIAG_SKMEMINFO gives it: rmem_alloc, rcvbuf, wmem_alloc,
	// sndbuf, fwd_alloc, wmem_queued, optmem, backlog, drops.
	Mem *[9]uint32 `json:"-"`
	// infoLen is how many bytes of tcp_info the kernel gave (older kernels
	// give fewer fields; the rest read zero).
	infoLen int
}

// TimerName names the pending timer as ss -o does.
func (s *Socket) TimerName() string {
	switch s.Timer {
	case 1:
		return "on"
	case 2:
		return "keepalive"
	case 3:
		return "timewait"
	case 4:
		return "persist"
	}
	return ""
}

// PortRange is a range of ports, both ends included.
type PortRange struct{ Lo, Hi uint16 }

// Filter chooses sockets. The kernel applies all of it: the states through
// the request's mask, ports and addresses through inet_diag bytecode.
// Conditions of one kind are alternatives (any may match); kinds combine
// (all must match).
type Filter struct {
	States StateMask   // zero means every state
	Family int         // 4, 6, or 0 for both
	SPort  []PortRange // local port
	DPort  []PortRange // remote port
	Src    []netip.Prefix
	Dst    []netip.Prefix
	Info   bool // ask for tcp_info too
	Memory bool // ask for the socket's memory too (ss -m)
}

const (
	inetDiagReqLen    = 56
	inetDiagMsgLen    = 72
	inetDiagInfo      = 2 // INET_DIAG_INFO
	inetDiagSkmeminfo = 7 // INET_DIAG_SKMEMINFO: SK_MEMINFO_VARS u32s
	inetDiagReqBC     = 1 // INET_DIAG_REQ_BYTECODE
	nlmsgHdrLen       = unix.NLMSG_HDRLEN
	diagRecvBufSize   = 64 << 10 // the kernel fills at most 32 KB per dump batch
)

// Diag is a NETLINK_SOCK_DIAG socket. It lists the sockets of the network
// namespace it was opened in (see InNetns), whatever the caller's namespace
// is later.
type Diag struct {
	fd  int
	seq uint32
	buf []byte
}

// OpenDiag opens a sock_diag socket in the calling thread's namespace.
func OpenDiag() (*Diag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag bind: %w", err)
	}
	return &Diag{fd: fd, buf: make([]byte, diagRecvBufSize)}, nil
}

// Close closes the socket.
func (d *Diag) Close() error { return unix.Close(d.fd) }

// Dump lists the sockets the filter chooses, IPv4 first, then IPv6.
func (d *Diag) Dump(f Filter) ([]Socket, error) {
	var out []Socket
	err := d.Each(f, func(s *Socket) { out = append(out, *s) })
	return out, err
}

// Each calls fn for every socket the filter chooses, without keeping them;
// s is reused between calls.
func (d *Diag) Each(f Filter, fn func(s *Socket)) error {
	bc, err := f.bytecode()
	if err != nil {
		return err
	}
	states := f.States
	if states == 0 {
		states = AllStates
	}
	if states.Has(SynRecv) {
		states |= Mask(NewSynRecv)
	}
	for _, fam := range []int{4, 6} {
		if f.Family != 0 && f.Family != fam {
			continue
		}
		af := uint8(unix.AF_INET)
		if fam == 6 {
			af = unix.AF_INET6
		}
		var ext uint8 // the extensions asked for (idiag_ext)
		if f.Info {
			ext |= 1 << (inetDiagInfo - 1)
		}
		if f.Memory {
			ext |= 1 << (inetDiagSkmeminfo - 1)
		}
		if err := d.dump(af, states, ext, bc, fn); err != nil {
			return err
		}
	}
	return nil
}

// Lookup asks for the one socket with these ends (a timewait socket
// included), as it is now. A dump of a table that changes meanwhile may
// miss sockets; a lookup does not.
func (d *Diag) Lookup(local, remote netip.AddrPort) (s Socket, found bool, err error) {
	af := uint8(unix.AF_INET)
	if !local.Addr().Is4() {
		af = unix.AF_INET6
	}
	err = d.request(af, AllStates, 0, nil, &lookupID{local, remote}, func(x *Socket) {
		s, found = *x, true
	})
	if errors.Is(err, unix.ENOENT) {
		return s, false, nil
	}
	return s, found, err
}

// lookupID names one socket in a request (struct inet_diag_sockid).
type lookupID struct{ local, remote netip.AddrPort }

func (d *Diag) dump(af uint8, states StateMask, ext uint8, bc []byte, fn func(*Socket)) error {
	return d.request(af, states, ext, bc, nil, fn)
}

// request sends a dump request, or a request for one socket when id is
// given, and calls fn for each socket of the answer.
func (d *Diag) request(af uint8, states StateMask, ext uint8, bc []byte, id *lookupID, fn func(*Socket)) error {
	d.seq++
	n := nlmsgHdrLen + inetDiagReqLen
	if len(bc) > 0 {
		n += unix.NLA_HDRLEN + len(bc)
	}
	req := make([]byte, n)
	binary.NativeEndian.PutUint32(req[0:], uint32(n))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_DUMP)
	if id != nil {
		flags = unix.NLM_F_REQUEST
	}
	binary.NativeEndian.PutUint16(req[6:], flags)
	binary.NativeEndian.PutUint32(req[8:], d.seq)
	r := req[nlmsgHdrLen:]
	r[0] = af
	r[1] = unix.IPPROTO_TCP
	r[2] = ext
	binary.NativeEndian.PutUint32(r[4:], uint32(states))
	if id != nil {
		sid := r[8:56]
		binary.BigEndian.PutUint16(sid[0:], id.local.Port())
		binary.BigEndian.PutUint16(sid[2:], id.remote.Port())
		if af == unix.AF_INET {
			a, b := id.local.Addr().As4(), id.remote.Addr().As4()
			copy(sid[4:], a[:])
			copy(sid[20:], b[:])
		} else {
			a, b := id.local.Addr().As16(), id.remote.Addr().As16()
			copy(sid[4:], a[:])
			copy(sid[20:], b[:])
		}
		// INET_DIAG_NOCOOKIE: any socket with these ends.
		binary.NativeEndian.PutUint64(sid[40:], ^uint64(0))
	}
	if len(bc) > 0 {
		a := r[inetDiagReqLen:]
		binary.NativeEndian.PutUint16(a[0:], uint16(unix.NLA_HDRLEN+len(bc)))
		binary.NativeEndian.PutUint16(a[2:], inetDiagReqBC)
		copy(a[unix.NLA_HDRLEN:], bc)
	}
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	var s Socket
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("sock_diag read: %w", err)
		}
		b := d.buf[:n]
		for len(b) >= nlmsgHdrLen {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			typ := binary.NativeEndian.Uint16(b[4:])
			seq := binary.NativeEndian.Uint32(b[8:])
			if l < nlmsgHdrLen || l > len(b) {
				return fmt.Errorf("sock_diag: bad message length %d", l)
			}
			data := b[nlmsgHdrLen:l]
			b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
			if seq != d.seq {
				continue
			}
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(data)); e != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if parseDiagMsg(data, &s) {
					fn(&s)
				}
				if id != nil { // the one answer
					return nil
				}
			}
		}
	}
}

// parseDiagMsg reads one struct inet_diag_msg and its attributes into s.
func parseDiagMsg(b []byte, s *Socket) bool {
	if len(b) < inetDiagMsgLen || (b[0] != unix.AF_INET && b[0] != unix.AF_INET6) {
		return false
	}
	*s = Socket{State: State(b[1]), Timer: b[2], Retrans: b[3]}
	id := b[4:52]
	sport := binary.BigEndian.Uint16(id[0:])
	dport := binary.BigEndian.Uint16(id[2:])
	var src, dst netip.Addr
	if b[0] == unix.AF_INET {
		src = netip.AddrFrom4([4]byte(id[4:8]))
		dst = netip.AddrFrom4([4]byte(id[20:24]))
	} else {
		src = netip.AddrFrom16([16]byte(id[4:20]))
		dst = netip.AddrFrom16([16]byte(id[20:36]))
	}
	s.Local = netip.AddrPortFrom(src, sport)
	s.Remote = netip.AddrPortFrom(dst, dport)
	s.Cookie = uint64(binary.NativeEndian.Uint32(id[40:])) | uint64(binary.NativeEndian.Uint32(id[44:]))<<32
	s.Expires = time.Duration(binary.NativeEndian.Uint32(b[52:])) * time.Millisecond
	s.RecvQ = binary.NativeEndian.Uint32(b[56:])
	s.SendQ = binary.NativeEndian.Uint32(b[60:])
	s.UID = binary.NativeEndian.Uint32(b[64:])
	s.Inode = binary.NativeEndian.Uint32(b[68:])
	attrs := b[inetDiagMsgLen:]
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:]))
		t := binary.NativeEndian.Uint16(attrs[2:])
		if l < 4 || l > len(attrs) {
			break
		}
		if t == inetDiagInfo {
			ti := new(tcpInfo)
			dst := unsafe.Slice((*byte)(unsafe.Pointer(ti)), unsafe.Sizeof(*ti))
			s.infoLen = copy(dst, attrs[4:l])
			s.Info = ti
		}
		if t == inetDiagSkmeminfo && l >= 4+9*4 {
			m := new([9]uint32)
			for i := range m {
				m[i] = binary.NativeEndian.Uint32(attrs[4+4*i:])
			}
			s.Mem = m
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	return true
}

type tcpInfo = unix.TCPInfo
