package trace

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Host is one of a run's hosts, as pictures and captures name it: a
// capture interface, a lifeline.
type Host struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// Addr6 is a dual-stack host's IPv6 address, besides Addr.
	Addr6 string `json:"addr6,omitempty"`
}

// Addrs is the host's addresses, as text: "10.0.0.2" or "10.0.0.2 fd00::2".
func (h Host) Addrs() string {
	if h.Addr6 != "" {
		return h.Addr + " " + h.Addr6
	}
	return h.Addr
}

// PcapEpoch is when time zero of a run falls in a capture: the Unix epoch,
// so that `tcpdump -tt -r` prints the same seconds as tcplab's lines.
var PcapEpoch = time.Unix(0, 0).UTC()

// WritePcapng writes the packets of events as a pcapng capture with one
// interface per host, each packet on the interface of the host whose tap
// saw it, at the time of its event. A packet a host's own output rule
// dropped never reached its interface (tcpdump would not see it) and is
// left out; a packet dropped by the receiver's input rule was seen there
// and is kept. Each packet carries its direction, and a comment when a rule
// acted on it, the lab crafted it, or it was lost on the way. It returns
// the number of packets written.
//
// The blocks are written here rather than with gopacket's pcapgo: that
// would link gopacket's layers, whose initialisation every tcplab command
// would pay (0.12 ms and 29 KB of heap at start-up, measured); reading
// captures (package capture) keeps pcapgo.
func WritePcapng(w io.Writer, hosts []Host, events []Event) (int, error) {
	if len(hosts) == 0 {
		return 0, fmt.Errorf("pcapng: no hosts")
	}
	bw := bufio.NewWriter(w)
	var b ngBlock
	// Section header: byte-order magic, version 1.0, length unknown.
	b.begin(ngSHB)
	b.u32(0x1A2B3C4D)
	b.u16(1)
	b.u16(0)
	b.u64(^uint64(0))
	b.opt(4, []byte("tcplab")) // shb_userappl
	if _, err := bw.Write(b.end()); err != nil {
		return 0, fmt.Errorf("pcapng: %w", err)
	}
	// One interface per host. libpcap wants every interface of a file to
	// have the first's link type, and rejects a second RAW (101) one:
	// IPv4 captures are LINKTYPE_IPV4 (228); a capture with IPv6 packets
	// is Ethernet (1) throughout, each frame with made-up addresses
	// (02:00:00:00:00:NN, NN the owner's place among the hosts) and the
	// type of its IP version.
	eth := false
	for i := range events {
		if e := &events[i]; e.Kind == KindPacket && e.Packet != nil && e.Packet.Segment.IsIPv6() {
			eth = true
			break
		}
	}
	index := make(map[string]uint32, len(hosts))
	macOf := map[netip.Addr]byte{}
	for i, h := range hosts {
		index[h.Name] = uint32(i)
		for _, a := range []string{h.Addr, h.Addr6} {
			if ip, err := netip.ParseAddr(a); err == nil {
				macOf[ip] = byte(i + 1)
			}
		}
		b.begin(ngIDB)
		if eth {
			b.u16(1) // LINKTYPE_ETHERNET
		} else {
			b.u16(228) // LINKTYPE_IPV4
		}
		b.u16(0)
		b.u32(0) // no snap length
		b.opt(2, []byte(h.Name))
		b.opt(3, []byte(fmt.Sprintf("tcplab host %s (%s)", h.Name, h.Addrs())))
		b.opt(9, []byte{9}) // if_tsresol: nanoseconds
		if _, err := bw.Write(b.end()); err != nil {
			return 0, fmt.Errorf("pcapng: %w", err)
		}
	}
	var frame []byte
	n := 0
	for i := range events {
		e := &events[i]
		p := e.Packet
		if e.Kind != KindPacket || p == nil || (p.Dir == Out && !p.OnWire) {
			continue
		}
		id, ok := index[e.Host]
		if !ok {
			return n, fmt.Errorf("pcapng: a packet of host %q, which has no interface", e.Host)
		}
		data, err := p.Segment.Marshal()
		if err != nil {
			return n, fmt.Errorf("pcapng: packet %d: %w", p.ID, err)
		}
		if eth {
			typ := uint16(0x0800)
			if p.Segment.IsIPv6() {
				typ = 0x86dd
			}
			frame = append(frame[:0], 2, 0, 0, 0, 0, macOf[p.Segment.Dst], 2, 0, 0, 0, 0, macOf[p.Segment.Src])
			frame = binary.BigEndian.AppendUint16(frame, typ)
			data = append(frame, data...)
		}
		ts := uint64(PcapEpoch.Add(e.At).UnixNano())
		b.begin(ngEPB)
		b.u32(id)
		b.u32(uint32(ts >> 32))
		b.u32(uint32(ts))
		b.u32(uint32(len(data)))
		b.u32(uint32(len(data)))
		b.pad(data)
		for _, c := range pcapComments(p) {
			b.opt(1, []byte(c)) // opt_comment
		}
		flags := uint32(1) // epb_flags: inbound
		if p.Dir == Out {
			flags = 2 // outbound
		}
		b.opt(2, binary.LittleEndian.AppendUint32(nil, flags))
		if _, err := bw.Write(b.end()); err != nil {
			return n, fmt.Errorf("pcapng: %w", err)
		}
		n++
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("pcapng: %w", err)
	}
	return n, nil
}

// pcapng block types.
const (
	ngSHB = 0x0A0D0D0A
	ngIDB = 1
	ngEPB = 6
)

// ngBlock builds one pcapng block, little-endian: its type and length,
// its body, options (then the end of options), and its length again.
type ngBlock struct {
	buf  []byte
	opts bool
}

func (b *ngBlock) begin(typ uint32) {
	b.buf = binary.LittleEndian.AppendUint32(b.buf[:0], typ)
	b.buf = binary.LittleEndian.AppendUint32(b.buf, 0) // length, set by end
	b.opts = false
}

func (b *ngBlock) u16(v uint16) { b.buf = binary.LittleEndian.AppendUint16(b.buf, v) }
func (b *ngBlock) u32(v uint32) { b.buf = binary.LittleEndian.AppendUint32(b.buf, v) }
func (b *ngBlock) u64(v uint64) { b.buf = binary.LittleEndian.AppendUint64(b.buf, v) }

// pad appends p and zeros up to a multiple of 4 bytes.
func (b *ngBlock) pad(p []byte) {
	b.buf = append(b.buf, p...)
	for len(b.buf)%4 != 0 {
		b.buf = append(b.buf, 0)
	}
}

// opt appends an option: code, length, value padded to 4 bytes.
func (b *ngBlock) opt(code uint16, v []byte) {
	b.u16(code)
	b.u16(uint16(len(v)))
	b.pad(v)
	b.opts = true
}

// end closes the options and the block and returns its bytes.
func (b *ngBlock) end() []byte {
	if b.opts {
		b.u32(0) // opt_endofopt
	}
	n := uint32(len(b.buf) + 4)
	b.u32(n)
	binary.LittleEndian.PutUint32(b.buf[4:], n)
	return b.buf
}

// pcapComments says what the lab did with a packet, for Wireshark's
// packet comments.
func pcapComments(p *Packet) []string {
	var c []string
	if p.Verdict != VerdictPass && p.Verdict != "" {
		c = append(c, fmt.Sprintf("tcplab: %s by rule %s", p.Verdict, p.Rule))
	}
	if p.Crafted {
		c = append(c, "tcplab: crafted by the lab, not sent by a TCP stack")
	}
	if p.Lost != "" {
		c = append(c, "tcplab: lost: "+p.Lost)
	}
	return c
}
