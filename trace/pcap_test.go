package trace

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcplab/tcplab/wire"
)

// The capture WritePcapng makes reads back with gopacket's pcapng reader
// (an implementation not ours): the section's application, one interface
// per host with its name, description and nanosecond stamps, and each
// packet with its bytes, time, interface, direction and comments.
func TestWritePcapngReadsBack(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	seg := wire.Segment{Src: a, Dst: b, SrcPort: 40000, DstPort: 80, Seq: 7, Flags: wire.SYN, Window: 64240, TTL: 64,
		Options: wire.Options{HasMSS: true, MSS: 1460}}
	data := wire.Segment{Src: a, Dst: b, SrcPort: 40000, DstPort: 80, Seq: 8, Ack: 9, Flags: wire.ACK | wire.PSH, Window: 502, TTL: 64,
		Payload: []byte("hello")} // 5 bytes: the block is padded
	hosts := []Host{{Name: "client", Addr: "10.0.0.1"}, {Name: "server", Addr: "10.0.0.2"}}
	events := []Event{
		{At: 1500 * time.Microsecond, Host: "client", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: Out, Segment: seg, Verdict: VerdictPass, OnWire: true}},
		{At: 2500 * time.Microsecond, Host: "server", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: In, Segment: seg, Verdict: VerdictDrop, Rule: "1", OnWire: true}},
		{At: 3 * time.Second, Host: "client", Kind: KindPacket, Packet: &Packet{ID: 2, Dir: Out, Segment: data, Verdict: VerdictDrop, Rule: "2"}}, // never on the wire
		{At: 4 * time.Second, Host: "server", Kind: KindPacket, Packet: &Packet{ID: 3, Dir: In, Segment: data, Verdict: VerdictPass, OnWire: true, Crafted: true}},
		{At: 5 * time.Second, Host: "client", Kind: KindState, State: &StateChange{From: "SYN_SENT", To: "ESTABLISHED"}},
	}
	var buf bytes.Buffer
	n, err := WritePcapng(&buf, hosts, events)
	if err != nil || n != 3 {
		t.Fatalf("wrote %d packets, %v", n, err)
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("%d bytes: pcapng blocks are 32-bit aligned", buf.Len())
	}
	r, err := pcapgo.NewNgReader(&buf, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	if app := r.SectionInfo().Application; app != "tcplab" {
		t.Errorf("application %q", app)
	}
	type want struct {
		iface    int
		at       time.Duration
		dir      pcapgo.NgEpbFlag
		comments []string
		seg      wire.Segment
	}
	wants := []want{
		{0, 1500 * time.Microsecond, pcapgo.NgEpbFlagDirectionOutbound, nil, seg},
		{1, 2500 * time.Microsecond, pcapgo.NgEpbFlagDirectionInbound, []string{"tcplab: drop by rule 1"}, seg},
		{1, 4 * time.Second, pcapgo.NgEpbFlagDirectionInbound, []string{"tcplab: crafted by the lab, not sent by a TCP stack"}, data},
	}
	for i, w := range wants {
		pkt, ci, opts, err := r.ReadPacketDataWithOptions()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		raw, _ := w.seg.Marshal()
		if !bytes.Equal(pkt, raw) || ci.CaptureLength != len(raw) || ci.Length != len(raw) {
			t.Errorf("packet %d: %d bytes, want %d", i, len(pkt), len(raw))
		}
		if ci.InterfaceIndex != w.iface || !ci.Timestamp.Equal(PcapEpoch.Add(w.at)) {
			t.Errorf("packet %d: interface %d at %v, want %d at %v", i, ci.InterfaceIndex, ci.Timestamp, w.iface, PcapEpoch.Add(w.at))
		}
		if opts.Flags == nil || opts.Flags.Direction != w.dir {
			t.Errorf("packet %d: flags %+v, want direction %v", i, opts.Flags, w.dir)
		}
		if len(opts.Comments) != len(w.comments) || (len(w.comments) > 0 && opts.Comments[0] != w.comments[0]) {
			t.Errorf("packet %d: comments %q, want %q", i, opts.Comments, w.comments)
		}
	}
	if _, _, err := r.ReadPacketData(); err != io.EOF {
		t.Errorf("after the packets: %v", err)
	}
	if r.NInterfaces() != 2 {
		t.Fatalf("%d interfaces", r.NInterfaces())
	}
	for i, h := range hosts {
		in, _ := r.Interface(i)
		if in.Name != h.Name || in.Description != "tcplab host "+h.Name+" ("+h.Addr+")" || in.LinkType != 228 || in.TimestampResolution != 9 {
			t.Errorf("interface %d: %+v", i, in)
		}
	}
}

// A capture with IPv6 packets is Ethernet throughout (libpcap wants one
// link type per file): each frame carries the IP version's type, and
// tcpdump's and gopacket's decoders read IPv4 and IPv6 alike.
func TestWritePcapngIPv6(t *testing.T) {
	v4 := wire.Segment{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 80, Flags: wire.SYN, TTL: 64}
	v6 := wire.Segment{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2"), SrcPort: 2, DstPort: 80, Flags: wire.SYN, TTL: 64, FlowLabel: 5}
	hosts := []Host{{Name: "client", Addr: "10.0.0.1", Addr6: "fd00::1"}, {Name: "server", Addr: "10.0.0.2", Addr6: "fd00::2"}}
	events := []Event{
		{At: time.Millisecond, Host: "client", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: Out, Segment: v6, OnWire: true}},
		{At: 2 * time.Millisecond, Host: "client", Kind: KindPacket, Packet: &Packet{ID: 2, Dir: Out, Segment: v4, OnWire: true}},
		{At: 3 * time.Millisecond, Host: "server", Kind: KindPacket, Packet: &Packet{ID: 1, Dir: In, Segment: v6, OnWire: true}},
	}
	var buf bytes.Buffer
	if n, err := WritePcapng(&buf, hosts, events); err != nil || n != 3 {
		t.Fatalf("wrote %d, %v", n, err)
	}
	r, err := pcapgo.NewNgReader(&buf, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		iface int
		typ   uint16
		seg   wire.Segment
	}{{0, 0x86dd, v6}, {0, 0x0800, v4}, {1, 0x86dd, v6}} {
		pkt, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := want.seg.Marshal()
		if ci.InterfaceIndex != want.iface || len(pkt) != 14+len(raw) || !bytes.Equal(pkt[14:], raw) {
			t.Fatalf("packet %d: interface %d, %d bytes", i, ci.InterfaceIndex, len(pkt))
		}
		if typ := uint16(pkt[12])<<8 | uint16(pkt[13]); typ != want.typ {
			t.Errorf("packet %d: type %#x, want %#x", i, typ, want.typ)
		}
		// The frame's addresses name the hosts that own the IP addresses.
		if pkt[5] != 2 || pkt[11] != 1 {
			t.Errorf("packet %d: MACs %x", i, pkt[:12])
		}
		ifc, err := r.Interface(ci.InterfaceIndex)
		if err != nil || ifc.LinkType != 1 {
			t.Errorf("packet %d: link type %v, %v", i, ifc.LinkType, err)
		}
	}
}

// ss spells a dual-stack listener's wildcard *, an IPV6_V6ONLY one's [::],
// an IPv4 one's 0.0.0.0; an IPv4 peer of a dual-stack socket is mapped.
func TestSSEnds(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		local, remote  string
		listen, v6only bool
		want           string
	}{
		{"[::]:80", "[::]:0", true, false, "*:80 *:*"},
		{"[::]:80", "[::]:0", true, true, "[::]:80 [::]:*"},
		{"0.0.0.0:80", "0.0.0.0:0", true, false, "0.0.0.0:80 0.0.0.0:*"},
		{"[::ffff:10.0.0.2]:80", "[::ffff:10.0.0.3]:5000", false, false, "[::ffff:10.0.0.2]:80 [::ffff:10.0.0.3]:5000"},
		{"[fd00::2]:80", "[fd00::1]:5000", false, false, "[fd00::2]:80 [fd00::1]:5000"},
	} {
		l, r := SSEnds(ap(c.local), ap(c.remote), c.listen, c.v6only)
		if got := l + " " + r; got != c.want {
			t.Errorf("%s %s: %q, want %q", c.local, c.remote, got, c.want)
		}
	}
}
