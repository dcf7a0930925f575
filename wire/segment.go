package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Segment is one TCP segment together with the IP header fields that
// matter to a lab: addresses (IPv4 or IPv6), TTL (IPv6's hop limit), TOS
// (IPv6's traffic class), and IPv4's ID and don't-fragment bit or IPv6's
// flow label.
type Segment struct {
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	SrcPort  uint16     `json:"src_port"`
	DstPort  uint16     `json:"dst_port"`
	Seq      Seq        `json:"seq"`
	Ack      Seq        `json:"ack"`
	Flags    Flags      `json:"flags"`
	Window   uint16     `json:"window"` // the raw header value, before window scaling
	Urgent   uint16     `json:"urgent"`
	Reserved uint8      `json:"reserved"` // the four reserved header bits (AE/NS included)
	Options  Options    `json:"options"`
	Payload  []byte     `json:"payload"`

	TTL uint8  `json:"ttl"`
	ID  uint16 `json:"id"`
	TOS uint8  `json:"tos"`
	DF  bool   `json:"df"`
	// FlowLabel is IPv6's 20-bit flow label.
	FlowLabel uint32 `json:"flow_label,omitempty"`
}

// IsIPv6 says the segment travels in IPv6. A dual-stack socket's peer in
// IPv4 has an IPv4-mapped address; its segments carry the plain IPv4
// addresses (Unmap) on the wire.
func (s *Segment) IsIPv6() bool { return s.Src.Is6() }

// Len is the segment's length in sequence space: payload plus one for SYN
// and one for FIN (RFC 9293 SEG.LEN).
func (s *Segment) Len() int {
	n := len(s.Payload)
	if s.Flags&SYN != 0 {
		n++
	}
	if s.Flags&FIN != 0 {
		n++
	}
	return n
}

// End is the sequence number just past the segment (SEG.SEQ + SEG.LEN).
func (s *Segment) End() Seq { return s.Seq.Add(s.Len()) }

// Clone returns a deep copy: the payload and option slices are not shared.
func (s *Segment) Clone() *Segment {
	c := *s
	if s.Payload != nil {
		c.Payload = append([]byte(nil), s.Payload...)
	}
	if s.Options.SACK != nil {
		c.Options.SACK = append([]SACKBlock(nil), s.Options.SACK...)
	}
	if s.Options.Order != nil {
		c.Options.Order = append([]uint8(nil), s.Options.Order...)
	}
	if s.Options.Unknown != nil {
		c.Options.Unknown = make([]RawOption, len(s.Options.Unknown))
		for i, r := range s.Options.Unknown {
			c.Options.Unknown[i] = RawOption{Kind: r.Kind, Data: append([]byte(nil), r.Data...)}
		}
	}
	return &c
}

// String is a tcpdump-like one-line description with absolute numbers:
// "10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1, win 64240, options [...], length 0".
func (s *Segment) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s.%d > %s.%d: Flags [%s]", s.Src, s.SrcPort, s.Dst, s.DstPort, s.Flags.Short())
	if s.Flags&(SYN|FIN|RST) != 0 || len(s.Payload) > 0 {
		if len(s.Payload) > 0 {
			fmt.Fprintf(&b, ", seq %d:%d", uint32(s.Seq), uint32(s.Seq.Add(len(s.Payload))))
		} else {
			fmt.Fprintf(&b, ", seq %d", uint32(s.Seq))
		}
	}
	if s.Flags&ACK != 0 {
		fmt.Fprintf(&b, ", ack %d", uint32(s.Ack))
	}
	fmt.Fprintf(&b, ", win %d", s.Window)
	if !s.Options.Empty() {
		fmt.Fprintf(&b, ", options [%s]", s.Options.String())
	}
	fmt.Fprintf(&b, ", length %d", len(s.Payload))
	return b.String()
}

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	tcpHeaderLen  = 20
	protoTCP      = 6
	maxOptionLen  = 40
)

// Errors returned by Parse, Marshal and Verify.
var (
	ErrTruncated   = errors.New("packet truncated")
	ErrNotIP       = errors.New("not an IPv4 or IPv6 packet")
	ErrFamily      = errors.New("source and destination of different address families")
	ErrNotTCP      = errors.New("not a TCP packet")
	ErrFragment    = errors.New("IP fragment (reassembly is not supported)")
	ErrBadHeader   = errors.New("malformed header")
	ErrChecksum    = errors.New("checksum mismatch")
	ErrTooLong     = errors.New("segment too long")
	ErrOptionsLong = errors.New("TCP options exceed 40 bytes")
)

// Parse reads an IPv4 or IPv6 packet carrying TCP. It checks structure
// (lengths, version, protocol, option layout) but not checksums: packets
// captured on the sending side of an interface often carry a checksum the
// NIC has yet to fill in. Use Verify for checksums. IPv6 extension headers
// (hop-by-hop, routing, destination options) are skipped; a fragment is
// refused. The returned segment does not share memory with b. Parse never
// panics, whatever the input.
func Parse(b []byte) (Segment, error) {
	var s Segment
	t, err := parseIP(b, &s)
	if err != nil {
		return s, err
	}
	doff, err := ParseTCPHeader(t, &s)
	if err != nil {
		return s, err
	}
	if len(t) > doff {
		s.Payload = append([]byte(nil), t[doff:]...)
	}
	return s, nil
}

// parseIP reads the IP header into s and returns the TCP part of b (link
// padding dropped).
func parseIP(b []byte, s *Segment) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrTruncated)
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b, s)
	case 6:
		return parseIPv6(b, s)
	}
	return nil, fmt.Errorf("%w: version %d", ErrNotIP, b[0]>>4)
}

func parseIPv4(b []byte, s *Segment) ([]byte, error) {
	if len(b) < ipv4HeaderLen {
		return nil, fmt.Errorf("%w: %d bytes, an IPv4 header needs 20", ErrTruncated, len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4HeaderLen {
		return nil, fmt.Errorf("%w: IPv4 header length %d", ErrBadHeader, ihl)
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl {
		return nil, fmt.Errorf("%w: IPv4 total length %d below header length %d", ErrBadHeader, total, ihl)
	}
	if total > len(b) {
		return nil, fmt.Errorf("%w: IPv4 total length %d, have %d bytes", ErrTruncated, total, len(b))
	}
	b = b[:total] // drop link-layer padding
	if b[9] != protoTCP {
		return nil, fmt.Errorf("%w: protocol %d", ErrNotTCP, b[9])
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&0x1fff != 0 || frag&0x2000 != 0 {
		return nil, ErrFragment
	}
	s.TOS = b[1]
	s.ID = binary.BigEndian.Uint16(b[4:6])
	s.DF = frag&0x4000 != 0
	s.TTL = b[8]
	s.Src = netip.AddrFrom4([4]byte(b[12:16]))
	s.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	return b[ihl:], nil
}

// IPv6 next-header values parseIPv6 knows.
const (
	ipv6HopByHop  = 0
	ipv6Routing   = 43
	ipv6Fragment  = 44
	ipv6NoNext    = 59
	ipv6DestOpts  = 60
	ipv6HeaderMax = 8 // extension headers followed at most
)

func parseIPv6(b []byte, s *Segment) ([]byte, error) {
	if len(b) < ipv6HeaderLen {
		return nil, fmt.Errorf("%w: %d bytes, an IPv6 header needs 40", ErrTruncated, len(b))
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if plen == 0 {
		return nil, fmt.Errorf("%w: IPv6 payload length 0 (a jumbogram, or nothing)", ErrBadHeader)
	}
	total := ipv6HeaderLen + plen
	if total > len(b) {
		return nil, fmt.Errorf("%w: IPv6 payload length %d, have %d bytes", ErrTruncated, plen, len(b)-ipv6HeaderLen)
	}
	b = b[:total]
	s.TOS = b[0]<<4 | b[1]>>4
	s.FlowLabel = uint32(b[1]&0x0f)<<16 | uint32(binary.BigEndian.Uint16(b[2:4]))
	s.TTL = b[7]
	s.Src = netip.AddrFrom16([16]byte(b[8:24]))
	s.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next, off := b[6], ipv6HeaderLen
	for range ipv6HeaderMax {
		switch next {
		case protoTCP:
			return b[off:], nil
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
			if off+8 > total {
				return nil, fmt.Errorf("%w: IPv6 extension header %d", ErrTruncated, next)
			}
			n := (int(b[off+1]) + 1) * 8
			if off+n > total {
				return nil, fmt.Errorf("%w: IPv6 extension header %d of %d bytes", ErrTruncated, next, n)
			}
			next, off = b[off], off+n
		case ipv6Fragment:
			return nil, ErrFragment
		default:
			return nil, fmt.Errorf("%w: IPv6 next header %d", ErrNotTCP, next)
		}
	}
	return nil, fmt.Errorf("%w: more than %d IPv6 extension headers", ErrBadHeader, ipv6HeaderMax)
}

// ParseTCPHeader reads a TCP header and its options from t into s (ports,
// numbers, flags, window, options), leaving addresses and payload alone,
// and returns the header's length. Captures use it on packets whose
// payload was cut by the snap length. It never panics. The memory of
// s.Options.Order, if any, is used again for the options' order (a
// reader parsing packet after packet allocates nothing for it).
func ParseTCPHeader(t []byte, s *Segment) (int, error) {
	if len(t) < tcpHeaderLen {
		return 0, fmt.Errorf("%w: %d bytes of TCP, the header needs 20", ErrTruncated, len(t))
	}
	doff := int(t[12]>>4) * 4
	if doff < tcpHeaderLen {
		return 0, fmt.Errorf("%w: TCP data offset %d", ErrBadHeader, doff)
	}
	if doff > len(t) {
		return 0, fmt.Errorf("%w: TCP data offset %d, have %d bytes", ErrTruncated, doff, len(t))
	}
	s.SrcPort = binary.BigEndian.Uint16(t[0:2])
	s.DstPort = binary.BigEndian.Uint16(t[2:4])
	s.Seq = Seq(binary.BigEndian.Uint32(t[4:8]))
	s.Ack = Seq(binary.BigEndian.Uint32(t[8:12]))
	s.Reserved = t[12] & 0x0f
	s.Flags = Flags(t[13])
	s.Window = binary.BigEndian.Uint16(t[14:16])
	s.Urgent = binary.BigEndian.Uint16(t[18:20])
	// Order's memory, if the caller gave some, is used again.
	s.Options = Options{Order: s.Options.Order[:0]}
	if err := parseOptions(t[tcpHeaderLen:doff], &s.Options); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadHeader, err)
	}
	return doff, nil
}

// Marshal returns the segment as an IPv4 or IPv6 packet (by its
// addresses' family) with correct checksums.
func (s *Segment) Marshal() ([]byte, error) {
	return s.AppendMarshal(make([]byte, 0, ipv6HeaderLen+tcpHeaderLen+maxOptionLen+len(s.Payload)))
}

// AppendMarshal appends the packet bytes to dst.
func (s *Segment) AppendMarshal(dst []byte) ([]byte, error) {
	src, to := s.Src, s.Dst
	v6 := src.Is6()
	if !src.IsValid() || !to.IsValid() || v6 != to.Is6() {
		return dst, fmt.Errorf("%w: %v and %v", ErrFamily, s.Src, s.Dst)
	}
	start := len(dst)
	if v6 {
		dst = append(dst, 0x60|s.TOS>>4, s.TOS<<4|byte(s.FlowLabel>>16)&0x0f)
		dst = binary.BigEndian.AppendUint16(dst, uint16(s.FlowLabel))
		dst = append(dst, 0, 0, protoTCP, s.TTL) // payload length filled below
		a, b := src.As16(), to.As16()
		dst = append(dst, a[:]...)
		dst = append(dst, b[:]...)
	} else {
		// IPv4 header, checksum filled below.
		dst = append(dst, 0x45, s.TOS, 0, 0)
		dst = binary.BigEndian.AppendUint16(dst, s.ID)
		var frag uint16
		if s.DF {
			frag = 0x4000
		}
		dst = binary.BigEndian.AppendUint16(dst, frag)
		dst = append(dst, s.TTL, protoTCP, 0, 0)
		a, b := src.As4(), to.As4()
		dst = append(dst, a[:]...)
		dst = append(dst, b[:]...)
	}

	tcpStart := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, s.SrcPort)
	dst = binary.BigEndian.AppendUint16(dst, s.DstPort)
	dst = binary.BigEndian.AppendUint32(dst, uint32(s.Seq))
	dst = binary.BigEndian.AppendUint32(dst, uint32(s.Ack))
	dst = append(dst, 0, byte(s.Flags)) // data offset filled below
	dst = binary.BigEndian.AppendUint16(dst, s.Window)
	dst = append(dst, 0, 0) // checksum
	dst = binary.BigEndian.AppendUint16(dst, s.Urgent)
	if !s.Options.Empty() {
		dst = s.Options.appendOptions(dst)
	}
	optLen := len(dst) - tcpStart - tcpHeaderLen
	if optLen > maxOptionLen {
		return dst[:start], fmt.Errorf("%w: %d bytes", ErrOptionsLong, optLen)
	}
	dst[tcpStart+12] = byte((tcpHeaderLen+optLen)/4)<<4 | s.Reserved&0x0f
	dst = append(dst, s.Payload...)
	if v6 {
		plen := len(dst) - tcpStart
		if plen > 0xffff {
			return dst[:start], fmt.Errorf("%w: %d bytes", ErrTooLong, plen)
		}
		binary.BigEndian.PutUint16(dst[start+4:], uint16(plen))
	} else {
		total := len(dst) - start
		if total > 0xffff {
			return dst[:start], fmt.Errorf("%w: %d bytes", ErrTooLong, total)
		}
		binary.BigEndian.PutUint16(dst[start+2:], uint16(total))
		binary.BigEndian.PutUint16(dst[start+10:], ^checksum(dst[start:tcpStart], 0))
	}
	binary.BigEndian.PutUint16(dst[tcpStart+16:], ^checksum(dst[tcpStart:], pseudoHeaderSum(src, to, len(dst)-tcpStart)))
	return dst, nil
}

// Verify checks the checksums of a packet that Parse accepts: IPv4's
// header checksum, and TCP's over its pseudo-header (IPv4's or IPv6's).
func Verify(b []byte) error {
	var s Segment
	t, err := parseIP(b, &s)
	if err != nil {
		return err
	}
	if _, err := ParseTCPHeader(t, &s); err != nil {
		return err
	}
	if !s.Src.Is6() {
		ihl := int(b[0]&0x0f) * 4
		if checksum(b[:ihl], 0) != 0xffff {
			return fmt.Errorf("%w: IPv4 header", ErrChecksum)
		}
	}
	if checksum(t, pseudoHeaderSum(s.Src, s.Dst, len(t))) != 0xffff {
		return fmt.Errorf("%w: TCP", ErrChecksum)
	}
	return nil
}

// pseudoHeaderSum sums TCP's pseudo-header: RFC 9293's for IPv4, RFC
// 8200's for IPv6 (addresses, upper-layer length, next header).
func pseudoHeaderSum(src, dst netip.Addr, tcpLen int) uint32 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	if src.Is6() {
		a, b := src.As16(), dst.As16()
		add(a[:])
		add(b[:])
	} else {
		a, b := src.As4(), dst.As4()
		add(a[:])
		add(b[:])
	}
	return sum + protoTCP + uint32(tcpLen)>>16 + uint32(tcpLen)&0xffff
}

// checksum is the Internet checksum (RFC 1071) folded to 16 bits, not yet
// complemented, starting from a partial sum.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// ResetFor builds the reset that answers seg, addressed back to its sender,
// as RFC 9293 section 3.10.7.1 and Linux's tcp_v4_send_reset (and a
// firewall's REJECT) build it: an ACK-less segment gets RST,ACK
// acknowledging all of it, any other a bare RST at its ACK number. A reset
// is never answered: ok is false for one. The caller sets TTL.
func ResetFor(seg *Segment) (r Segment, ok bool) {
	if seg.Flags&RST != 0 {
		return Segment{}, false
	}
	r = Segment{Src: seg.Dst, Dst: seg.Src, SrcPort: seg.DstPort, DstPort: seg.SrcPort, DF: !seg.Src.Is6()}
	if seg.Flags&ACK != 0 {
		r.Seq, r.Flags = seg.Ack, RST
	} else {
		r.Ack, r.Flags = seg.End(), RST|ACK
	}
	return r, true
}
