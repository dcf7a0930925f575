// Package capture reads a packet capture (pcap or pcapng, gzip-compressed
// or not) into TCP connections, and infers both ends' states from what
// the capture point saw, as the same trace events a scenario run makes.
package capture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcplab/tcplab/wire"
)

// Packet is one TCP segment of a capture. Its payload is not kept: only
// its length, which the IP header gives even when the snap length cut the
// bytes.
type Packet struct {
	Frame   int       // the frame's number, counted from 1 as Wireshark does
	Time    time.Time // when the capture point saw it
	Iface   int       // the pcapng interface it was seen on (0 in pcap)
	Segment wire.Segment
	Len     int // payload bytes
}

// Reader streams the TCP packets of a capture; other frames (ARP, UDP,
// fragments) are counted and skipped.
type Reader struct {
	next    func() ([]byte, gopacket.CaptureInfo, error)
	link    func(ci gopacket.CaptureInfo) layers.LinkType
	closer  io.Closer
	frame   int
	Skipped int // frames that are not a TCP segment this reader can read
	order   [40]uint8
}

// Magic numbers at the start of the supported formats.
var (
	gzipMagic   = []byte{0x1f, 0x8b}
	pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}
)

// ErrFormat is returned for a file that is neither pcap nor pcapng.
var ErrFormat = errors.New("not a pcap or pcapng capture")

// NewReader reads a capture from r: pcap (any byte order, micro- or
// nanosecond times) or pcapng (interfaces of different link types
// allowed), each possibly gzip-compressed.
func NewReader(r io.Reader) (*Reader, error) { return newReader(r, 0) }

// newReader is NewReader with a bound on a gzip capture's uncompressed
// bytes (0: none).
func newReader(r io.Reader, maxUnzipped int64) (*Reader, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, _ := br.Peek(4)
	var closer io.Closer
	if bytes.HasPrefix(head, gzipMagic) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("capture: gzip: %w", err)
		}
		closer = zr
		var src io.Reader = zr
		if maxUnzipped > 0 {
			src = &unzipLimit{r: zr, left: maxUnzipped, max: maxUnzipped}
		}
		br = bufio.NewReaderSize(src, 1<<16)
		head, _ = br.Peek(4)
	}
	if len(head) < 4 {
		return nil, fmt.Errorf("capture: %w (the file has %d bytes)", ErrFormat, len(head))
	}
	rd := &Reader{closer: closer}
	if bytes.Equal(head, pcapngMagic) {
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("capture: pcapng: %w", err)
		}
		rd.next = ng.ZeroCopyReadPacketData
		rd.link = func(ci gopacket.CaptureInfo) layers.LinkType {
			if i, err := ng.Interface(ci.InterfaceIndex); err == nil {
				return i.LinkType
			}
			return ng.LinkType()
		}
		return rd, nil
	}
	switch binary.LittleEndian.Uint32(head) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
	default:
		return nil, fmt.Errorf("capture: %w (it starts with % x)", ErrFormat, head)
	}
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("capture: pcap: %w", err)
	}
	rd.next = pr.ZeroCopyReadPacketData
	lt := pr.LinkType()
	rd.link = func(gopacket.CaptureInfo) layers.LinkType { return lt }
	return rd, nil
}

// unzipLimit stops a gzip capture past a number of uncompressed bytes.
type unzipLimit struct {
	r         io.Reader
	left, max int64
}

func (u *unzipLimit) Read(p []byte) (int, error) {
	if u.left <= 0 {
		return 0, fmt.Errorf("the capture is larger than %d MiB uncompressed", u.max>>20)
	}
	if int64(len(p)) > u.left {
		p = p[:u.left]
	}
	n, err := u.r.Read(p)
	u.left -= int64(n)
	return n, err
}

// Close releases a gzip reader; the underlying file is the caller's.
func (r *Reader) Close() error {
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}

// Next returns the next TCP packet, or io.EOF at the end. An error in
// the file's structure (a truncated record) is returned with the frame
// number; a frame that is not TCP is skipped, not an error.
func (r *Reader) Next() (Packet, error) {
	for {
		data, ci, err := r.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Packet{}, io.EOF
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return Packet{}, fmt.Errorf("capture: frame %d: the file ends inside it: %w", r.frame+1, err)
			}
			return Packet{}, fmt.Errorf("capture: frame %d: %w", r.frame+1, err)
		}
		r.frame++
		p := Packet{Frame: r.frame, Time: ci.Timestamp, Iface: ci.InterfaceIndex}
		// The options' order is parsed into the reader's memory: valid
		// until the next call (a packet kept must clone it).
		p.Segment.Options.Order = r.order[:0]
		if !decode(r.link(ci), data, &p) {
			r.Skipped++
			continue
		}
		return p, nil
	}
}

// Link-layer types, by their LINKTYPE_ numbers.
const (
	linkNull     = 0   // BSD loopback: the address family in host byte order
	linkEthernet = 1   // Ethernet, VLAN tags allowed
	linkRaw      = 101 // raw IPv4 or IPv6
	linkLoop     = 108 // OpenBSD loopback: the family in network byte order
	linkSLL      = 113 // Linux cooked v1
	linkIPv4     = 228
	linkIPv6     = 229
	linkSLL2     = 276 // Linux cooked v2
)

// sll2Iface marks a Linux cooked v2 packet's interface index, kept with
// the pcapng interface it was read from (two hosts' captures merged).
const sll2Iface = 1 << 31

// decode finds the IP packet in a frame and reads its TCP segment.
func decode(lt layers.LinkType, b []byte, p *Packet) bool {
	ip, ok := network(lt, b)
	if !ok || len(ip) < 1 {
		return false
	}
	if lt == linkSLL2 {
		// tcpdump -i any: the interface the packet was seen on, so
		// that its copies on two interfaces are told apart.
		p.Iface = p.Iface<<32 | sll2Iface | int(binary.BigEndian.Uint32(b[4:8]))
	}
	switch ip[0] >> 4 {
	case 4:
		return decode4(ip, p)
	case 6:
		return decode6(ip, p)
	}
	return false
}

// network strips the link layer of a frame.
func network(lt layers.LinkType, b []byte) ([]byte, bool) {
	switch int(lt) {
	case linkEthernet:
		if len(b) < 14 {
			return nil, false
		}
		et := binary.BigEndian.Uint16(b[12:14])
		b = b[14:]
		for et == 0x8100 || et == 0x88a8 || et == 0x9100 { // VLAN tags, stacked too
			if len(b) < 4 {
				return nil, false
			}
			et = binary.BigEndian.Uint16(b[2:4])
			b = b[4:]
		}
		return b, et == 0x0800 || et == 0x86dd
	case linkRaw, linkIPv4, linkIPv6:
		return b, true
	case linkNull, linkLoop:
		if len(b) < 4 {
			return nil, false
		}
		return b[4:], true // the family is checked by the IP version
	case linkSLL:
		if len(b) < 16 {
			return nil, false
		}
		et := binary.BigEndian.Uint16(b[14:16])
		return b[16:], et == 0x0800 || et == 0x86dd
	case linkSLL2:
		if len(b) < 20 {
			return nil, false
		}
		et := binary.BigEndian.Uint16(b[0:2])
		return b[20:], et == 0x0800 || et == 0x86dd
	}
	return nil, false
}

// decode4 reads an IPv4 packet's TCP segment; the payload length comes
// from the IP header, whatever the snap length kept.
func decode4(b []byte, p *Packet) bool {
	if len(b) < 20 || b[9] != 6 {
		return false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	frag := binary.BigEndian.Uint16(b[6:8])
	if ihl < 20 || len(b) < ihl || frag&0x1fff != 0 || frag&0x2000 != 0 {
		return false
	}
	s := &p.Segment
	s.TOS, s.ID, s.DF, s.TTL = b[1], binary.BigEndian.Uint16(b[4:6]), frag&0x4000 != 0, b[8]
	s.Src = netip.AddrFrom4([4]byte(b[12:16]))
	s.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	if total == 0 {
		total = len(b) // TSO on the sending host: the length is not filled in
	}
	return tcpSegment(b[ihl:], total-ihl, p)
}

// decode6 reads an IPv6 packet's TCP segment, past extension headers.
func decode6(b []byte, p *Packet) bool {
	if len(b) < 40 {
		return false
	}
	next := b[6]
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	s := &p.Segment
	s.TTL = b[7]
	s.TOS = b[0]<<4 | b[1]>>4
	s.Src = netip.AddrFrom16([16]byte(b[8:24]))
	s.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	t := b[40:]
	if plen == 0 {
		plen = len(t) // a jumbogram or TSO: take what was captured
	}
	for hops := 0; next != 6; hops++ {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(t) < 8 || hops > 8 {
				return false
			}
			n := (int(t[1]) + 1) * 8
			if len(t) < n {
				return false
			}
			next, t, plen = t[0], t[n:], plen-n
		default:
			return false // a fragment, ESP or another protocol
		}
	}
	return tcpSegment(t, plen, p)
}

// tcpSegment reads the TCP header of t, whose length on the wire (header
// and payload) was wireLen.
func tcpSegment(t []byte, wireLen int, p *Packet) bool {
	hl, err := wire.ParseTCPHeader(t, &p.Segment)
	if err != nil {
		return false
	}
	p.Len = max(wireLen-hl, 0)
	return true
}
