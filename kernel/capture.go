package kernel

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// capture is an AF_PACKET socket on one host's eth0: it sees every IPv4
// packet the interface receives (before the host's input rules) and every
// packet it sends (after the output rules), as tcpdump would.
type capture struct {
	fd  int
	buf []byte
	oob []byte
}

// capturedPacket is one packet with the kernel's receive timestamp.
type capturedPacket struct {
	at   time.Time // CLOCK_REALTIME, converted by the caller
	out  bool
	data []byte
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openCapture must run inside the host's namespace.
func openCapture(ifindex int) (*capture, error) {
	// Only ETH_P_ALL taps see outgoing packets (dev_queue_xmit_nit);
	// other protocols are skipped while reading.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	c := &capture{fd: fd, buf: make([]byte, 1<<16), oob: make([]byte, 128)}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		c.close()
		return nil, fmt.Errorf("bind packet socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		c.close()
		return nil, fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	// A flood of 1,000 SYNs between two drains must not be lost.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	return c, nil
}

func (c *capture) close() error { return unix.Close(c.fd) }

// drain reads every packet waiting on the socket without blocking.
func (c *capture) drain(f func(capturedPacket)) error {
	for {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, c.buf, c.oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return nil
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("capture: %w", err)
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil || ll.Protocol != htons(unix.ETH_P_IP) && ll.Protocol != htons(unix.ETH_P_IPV6) {
			continue
		}
		switch ll.Pkttype {
		case unix.PACKET_HOST, unix.PACKET_OUTGOING:
		default:
			continue // frames for other MACs (the black-hole gateway) and broadcasts
		}
		p := capturedPacket{out: ll.Pkttype == unix.PACKET_OUTGOING, data: append([]byte(nil), c.buf[:n]...)}
		p.at = time.Now()
		if msgs, err := unix.ParseSocketControlMessage(c.oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					p.at = time.Unix(ts.Sec, ts.Nsec)
				}
			}
		}
		f(p)
	}
}
