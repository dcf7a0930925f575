package kernel

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// link is the lab's wire: every host's eth0 is one end of a veth pair
// whose other end, a port, sits in the switch namespace. tcplab forwards
// frames between the ports itself, each after the one-way delay, because
// veth delivers in microseconds and this kernel has no netem to slow it.
// With the delay the real stacks see the same 1 ms link as the simulator,
// so the same states are visible for the same time.
//
// Frames are forwarded by destination MAC; a frame for a MAC no host has
// (the black-hole gateway) is dropped here, after the sender's capture saw
// it leave, as a packet to a missing host is lost in the simulator.
type link struct {
	delay  time.Duration
	ports  []*port
	byMAC  map[string]*port
	byAddr map[netip.Addr]*port // where a TUN port's packets go

	mu    sync.Mutex
	queue frameHeap
	wake  chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup
	seq   uint64
	err   error
	// lost are the write errors of TUN ports not yet reported: a packet
	// that did not reach the stack under test.
	lost []string
}

// takeLost returns and clears the unreported write errors.
func (l *link) takeLost() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lost
	l.lost = nil
	return out
}

// guard records a panic of a link goroutine as the link's failure.
func (l *link) guard() {
	if r := recover(); r != nil {
		l.mu.Lock()
		l.err = fmt.Errorf("kernel backend: the link failed: %v\n%s", r, debug.Stack())
		l.mu.Unlock()
	}
}

func (l *link) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

type port struct {
	fd    int
	wait  *os.File // a duplicate of fd in Go's network poller (receive)
	index int
	mac   net.HardwareAddr
	// tun: the port is a host's TUN device (wait is its descriptor, fd is
	// -1): it carries IP packets after a virtio_net_hdr, which the link
	// turns into Ethernet frames and back.
	tun bool
}

// vnetLen is the size of struct virtio_net_hdr.
const vnetLen = 10

// tunPort is the link's side of a host's TUN device.
func tunPort(f *os.File, h *nsHost) *port {
	return &port{fd: -1, wait: f, index: -1, mac: h.mac, tun: true}
}

type frame struct {
	due  time.Duration // CLOCK_MONOTONIC
	seq  uint64
	to   *port
	data []byte
}

type frameHeap []frame

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(frame)) }
func (h *frameHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	*h = old[:len(old)-1]
	return f
}

// openPort opens a raw packet socket on a switch port; it must run in
// the switch namespace.
func openPort(index int, mac net.HardwareAddr) (*port, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: index}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &port{fd: fd, wait: os.NewFile(uintptr(dup), "tcplab-port"), index: index, mac: mac}, nil
}

// gsoHeader is the virtio_net_hdr that makes an IPv4 TCP packet larger
// than Ethernet's a GSO packet of segments that fit 1500 bytes, with the
// checksum left to offload; it puts the pseudo-header sum in the
// packet's checksum field, as the offload expects.
func gsoHeader(ip []byte) (hdr [vnetLen]byte, ok bool) {
	if len(ip) < 40 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP {
		return hdr, false
	}
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+20 {
		return hdr, false
	}
	doff := int(ip[ihl+12]>>4) * 4
	if doff < 20 || len(ip) < ihl+doff {
		return hdr, false
	}
	hdr[0] = 1                                                   // VIRTIO_NET_HDR_F_NEEDS_CSUM
	hdr[1] = 1                                                   // VIRTIO_NET_HDR_GSO_TCPV4
	binary.LittleEndian.PutUint16(hdr[2:], uint16(ihl+doff))     // hdr_len
	binary.LittleEndian.PutUint16(hdr[4:], uint16(mtu-ihl-doff)) // gso_size
	binary.LittleEndian.PutUint16(hdr[6:], uint16(ihl))          // csum_start
	binary.LittleEndian.PutUint16(hdr[8:], 16)                   // csum_offset
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	sum += unix.IPPROTO_TCP + uint32(len(ip)-ihl)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[ihl+16:], uint16(sum))
	return hdr, true
}

// writeTun hands a frame's IP packet to the host behind a TUN port, as
// packetdrill writes a script packet: one larger than the MTU as a GSO
// packet of segments that fit it.
func (p *port) writeTun(data []byte) error {
	frame := make([]byte, vnetLen+len(data)-14)
	copy(frame[vnetLen:], data[14:])
	if len(frame)-vnetLen > mtu {
		if hdr, ok := gsoHeader(frame[vnetLen:]); ok {
			copy(frame, hdr[:])
		}
	}
	rc, err := p.wait.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := rc.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), frame)
		return !errors.Is(werr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	return werr
}

func newLink(delay time.Duration, ports []*port, addrs []netip.Addr) *link {
	l := &link{delay: delay, ports: ports, byMAC: map[string]*port{}, byAddr: map[netip.Addr]*port{}, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	for i, p := range ports {
		l.byMAC[string(p.mac)] = p
		if i < len(addrs) {
			l.byAddr[addrs[i]] = p
		}
	}
	for _, p := range ports {
		l.wg.Add(1)
		go l.receive(p)
	}
	l.wg.Add(1)
	go l.send()
	return l
}

// receive reads frames a host sent into its port and queues them for
// their destination. It waits in Go's network poller (p.wait, a duplicate
// of the port's descriptor), not in poll(2): a goroutine blocked in a
// system call holds one of the process's few Go processors, and with
// three such loops per run, other goroutines waited up to 10 ms for one.
// close ends it by closing p.wait.
func (l *link) receive(p *port) {
	defer l.wg.Done()
	defer l.guard()
	rc, err := p.wait.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 1<<17) // a TSO packet of a tso lab, with its Ethernet header
	_ = rc.Read(func(fd uintptr) bool {
		if p.tun {
			l.drainTun(p, int(fd), buf)
		} else {
			l.drain(p, buf)
		}
		return false // wait for more, until the descriptor is closed
	})
}

// drainTun queues every packet the host behind a TUN port sent, as an
// Ethernet frame from its MAC to the host that owns the destination.
func (l *link) drainTun(p *port, fd int, buf []byte) {
	for {
		n, err := unix.Read(fd, buf[14-vnetLen:])
		if err != nil || n <= vnetLen {
			return
		}
		now := monoNow()
		ip := buf[14 : 14+n-vnetLen]
		if len(ip) < 20 || ip[0]>>4 != 4 {
			continue // the lab speaks IPv4 only
		}
		fixChecksum(ip)
		to := l.byAddr[netip.AddrFrom4([4]byte(ip[16:20]))]
		if to == nil {
			continue // no host has it: lost, as a packet to the black-hole gateway
		}
		data := make([]byte, 14+len(ip))
		copy(data[0:6], to.mac)
		copy(data[6:12], p.mac)
		binary.BigEndian.PutUint16(data[12:14], unix.ETH_P_IP)
		copy(data[14:], ip)
		l.mu.Lock()
		l.seq++
		heap.Push(&l.queue, frame{due: now + l.delay, seq: l.seq, to: to, data: data})
		l.mu.Unlock()
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// drain queues every frame waiting on a port.
func (l *link) drain(p *port, buf []byte) {
	for {
		m, from, err := unix.Recvfrom(p.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
		now := monoNow()
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil || ll.Pkttype == unix.PACKET_OUTGOING || m < 14 {
			continue // what this link itself sent out of the port
		}
		data := append([]byte(nil), buf[:m]...)
		if t := binary.BigEndian.Uint16(data[12:14]); t != unix.ETH_P_IP && t != unix.ETH_P_IPV6 {
			continue // the lab speaks IP only (no ARP, no neighbour discovery: neighbours are static)
		}
		fixChecksum(data[14:])
		dst := net.HardwareAddr(data[0:6])
		// Unicast only: a host's broadcast and multicast (IPv6's router
		// solicitations and MLD reports) carry nothing the lab needs, and
		// would move the Ip6InReceives counts that calls wait on.
		var outs []*port
		if to := l.byMAC[string(dst)]; to != nil {
			outs = []*port{to}
		}
		l.mu.Lock()
		for _, o := range outs {
			l.seq++
			heap.Push(&l.queue, frame{due: now + l.delay, seq: l.seq, to: o, data: data})
		}
		l.mu.Unlock()
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// send delivers queued frames when they are due.
func (l *link) send() {
	defer l.wg.Done()
	defer l.guard()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		l.mu.Lock()
		now := monoNow()
		var due []frame
		for len(l.queue) > 0 && l.queue[0].due <= now {
			due = append(due, heap.Pop(&l.queue).(frame))
		}
		wait := time.Hour
		if len(l.queue) > 0 {
			wait = l.queue[0].due - now
		}
		l.mu.Unlock()
		for _, f := range due {
			f.to.write(l, f.data)
		}
		t.Reset(wait)
		select {
		case <-l.stop:
			return
		case <-l.wake:
		case <-t.C:
		}
	}
}

// write sends a frame into a port. The port's socket is non-blocking:
// when its buffer is full, the write waits in the network poller for
// room rather than dropping the frame (a blocking socket used to wait in
// the write). A closed port ends it.
func (p *port) write(l *link, data []byte) {
	if p.tun {
		if err := p.writeTun(data); err != nil && l != nil {
			l.mu.Lock()
			if len(l.lost) < 100 {
				l.lost = append(l.lost, err.Error())
			}
			l.mu.Unlock()
		}
		return
	}
	rc, err := p.wait.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Write(func(fd uintptr) bool {
		_, err := unix.Write(int(fd), data)
		return !errors.Is(err, unix.EAGAIN)
	})
}

func (l *link) close() {
	close(l.stop)
	for _, p := range l.ports {
		p.wait.Close()
	}
	l.wg.Wait()
	for _, p := range l.ports {
		if p.fd >= 0 {
			unix.Close(p.fd)
		}
	}
}

// fixChecksum completes a TCP checksum a sender left to offload (veth
// passes packets with only the pseudo-header sum filled in); written out
// of another port as is, the packet would be dropped as corrupt.
func fixChecksum(ip []byte) {
	if len(ip) >= 40 && ip[0]>>4 == 6 && ip[6] == unix.IPPROTO_TCP {
		// IPv6 with TCP right after the header (the lab's stacks add no
		// extension header): the pseudo-header holds both addresses.
		plen := int(binary.BigEndian.Uint16(ip[4:6]))
		if 40+plen > len(ip) || plen < 20 {
			return
		}
		seg := ip[40 : 40+plen]
		seg[16], seg[17] = 0, 0
		var sum uint32
		for i := 8; i < 40; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		sum += unix.IPPROTO_TCP + uint32(len(seg))
		for i := 0; i+1 < len(seg); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(seg[i:]))
		}
		if len(seg)%2 == 1 {
			sum += uint32(seg[len(seg)-1]) << 8
		}
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(seg[16:], ^uint16(sum))
		return
	}
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP {
		return
	}
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ihl < 20 || total > len(ip) || total < ihl+20 {
		return
	}
	seg := ip[ihl:total]
	seg[16], seg[17] = 0, 0
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	for i := 0; i+1 < len(seg); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(seg[i:]))
	}
	if len(seg)%2 == 1 {
		sum += uint32(seg[len(seg)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(seg[16:], ^uint16(sum))
}
