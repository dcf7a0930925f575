package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func linuxSYN() Segment {
	return Segment{
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
		SrcPort: 40000, DstPort: 80,
		Seq: 0xdeadbeef, Flags: SYN, Window: 64240,
		Options: Options{
			HasMSS: true, MSS: 1460, SACKPermitted: true,
			HasTimestamps: true, TSVal: 12345, TSEcr: 0,
			HasWScale: true, WScale: 7,
		},
		TTL: 64, ID: 0x1234, DF: true,
	}
}

func TestSYNOptionLayoutIsLinux(t *testing.T) {
	s := linuxSYN()
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	opts := b[40:60]
	want := []byte{
		2, 4, 0x05, 0xb4, // mss 1460
		4, 2, // sackOK
		8, 10, 0, 0, 0x30, 0x39, 0, 0, 0, 0, // TS val 12345 ecr 0
		1,       // nop
		3, 3, 7, // wscale 7
	}
	if !bytes.Equal(opts, want) {
		t.Fatalf("options\n got %v\nwant %v", opts, want)
	}
	if got := s.Options.String(); got != "mss 1460,sackOK,TS val 12345 ecr 0,nop,wscale 7" {
		t.Fatalf("String() = %q", got)
	}
	if len(b) != 60 || b[32]>>4 != 10 {
		t.Fatalf("length %d, data offset %d", len(b), b[32]>>4)
	}
}

func TestNonSYNTimestampLayout(t *testing.T) {
	s := linuxSYN()
	s.Flags = ACK
	s.Options = Options{HasTimestamps: true, TSVal: 1, TSEcr: 2}
	b, _ := s.Marshal()
	want := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	if !bytes.Equal(b[40:], want) {
		t.Fatalf("got %v want %v", b[40:], want)
	}
	s.Options = Options{HasMSS: true, MSS: 1460, SACKPermitted: true, HasWScale: true, WScale: 7}
	b, _ = s.Marshal()
	want = []byte{2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7}
	if !bytes.Equal(b[40:], want) {
		t.Fatalf("SYN without TS: got %v want %v", b[40:], want)
	}
}

// TestMarshalMatchesGopacket checks bytes and checksums against an
// independent serializer.
func TestMarshalMatchesGopacket(t *testing.T) {
	s := linuxSYN()
	s.Flags = PSH | ACK
	s.Ack = 0x01020304
	s.Options = Options{HasTimestamps: true, TSVal: 99, TSEcr: 77}
	s.Payload = []byte("Hutu!")
	ours, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: s.TOS, Id: s.ID, Flags: layers.IPv4DontFragment,
		TTL: s.TTL, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IP(s.Src.AsSlice()), DstIP: net.IP(s.Dst.AsSlice())}
	ts := make([]byte, 8)
	binary.BigEndian.PutUint32(ts, 99)
	binary.BigEndian.PutUint32(ts[4:], 77)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.SrcPort), DstPort: layers.TCPPort(s.DstPort),
		Seq: uint32(s.Seq), Ack: uint32(s.Ack), PSH: true, ACK: true, Window: s.Window,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts},
		}}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, tcp, gopacket.Payload(s.Payload)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, buf.Bytes()) {
		t.Fatalf("bytes differ\n ours %x\n gopk %x", ours, buf.Bytes())
	}
	if err := Verify(ours); err != nil {
		t.Fatal(err)
	}
}

func linuxSYN6() Segment {
	s := linuxSYN()
	s.Src, s.Dst = netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	s.ID, s.DF, s.FlowLabel, s.TOS = 0, false, 0xabcde, 0x2e
	s.Options.MSS = 1440
	return s
}

// TestMarshalMatchesGopacketIPv6 checks an IPv6 packet's bytes and TCP
// checksum (over RFC 8200's pseudo-header) against gopacket.
func TestMarshalMatchesGopacketIPv6(t *testing.T) {
	s := linuxSYN6()
	s.Flags = PSH | ACK
	s.Ack = 0x01020304
	s.Options = Options{}
	s.Payload = []byte("Hutu!")
	ours, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ip := &layers.IPv6{Version: 6, TrafficClass: s.TOS, FlowLabel: s.FlowLabel, NextHeader: layers.IPProtocolTCP,
		HopLimit: s.TTL, SrcIP: net.IP(s.Src.AsSlice()), DstIP: net.IP(s.Dst.AsSlice())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.SrcPort), DstPort: layers.TCPPort(s.DstPort),
		Seq: uint32(s.Seq), Ack: uint32(s.Ack), PSH: true, ACK: true, Window: s.Window}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, tcp, gopacket.Payload(s.Payload)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, buf.Bytes()) {
		t.Fatalf("bytes differ\n ours %x\n gopk %x", ours, buf.Bytes())
	}
	if err := Verify(ours); err != nil {
		t.Fatal(err)
	}
	// gopacket reads it back as IPv6 and TCP with a good checksum.
	p := gopacket.NewPacket(ours, layers.LayerTypeIPv6, gopacket.Default)
	if p.Layer(layers.LayerTypeTCP) == nil || p.ErrorLayer() != nil {
		t.Fatalf("gopacket: %v", p)
	}
	bad := append([]byte(nil), ours...)
	bad[len(bad)-1] ^= 1
	if err := Verify(bad); !errors.Is(err, ErrChecksum) {
		t.Errorf("a damaged IPv6 packet verifies: %v", err)
	}
}

// IPv6 extension headers before TCP are skipped; a fragment, another
// upper layer and bad lengths are refused.
func TestParseIPv6Headers(t *testing.T) {
	s := linuxSYN6()
	b, _ := s.Marshal()
	// Insert hop-by-hop (8 bytes) and destination options (16 bytes).
	ext := []byte{ipv6DestOpts, 0, 1, 4, 0, 0, 0, 0, protoTCP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	withExt := append(append(append([]byte(nil), b[:40]...), ext...), b[40:]...)
	withExt[6] = ipv6HopByHop
	binary.BigEndian.PutUint16(withExt[4:], uint16(len(withExt)-40))
	got, err := Parse(withExt)
	if err != nil {
		t.Fatal(err)
	}
	got.Options.Order = nil
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("with extension headers\n got %+v\nwant %+v", got, s)
	}
	if err := Verify(withExt); err != nil {
		t.Fatalf("verify with extension headers: %v", err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), withExt...)) }
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", b[:39], ErrTruncated},
		{"payload length 0", mut(func(b []byte) []byte { b[4], b[5] = 0, 0; return b }), ErrBadHeader},
		{"payload too long", mut(func(b []byte) []byte { b[4] = 0xff; return b }), ErrTruncated},
		{"fragment", mut(func(b []byte) []byte { b[6] = ipv6Fragment; return b }), ErrFragment},
		{"udp", mut(func(b []byte) []byte { b[40+8] = 17; return b }), ErrNotTCP},
		{"extension overruns", mut(func(b []byte) []byte { b[40+8+1] = 200; return b }), ErrTruncated},
	} {
		if _, err := Parse(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// An IPv4-mapped pair is IPv6 on the wire, as written (a dual-stack
	// socket's segments carry the unmapped addresses).
	m := linuxSYN()
	m.Src, m.Dst = netip.AddrFrom16(m.Src.As16()), netip.AddrFrom16(m.Dst.As16())
	mb, err := m.Marshal()
	if err != nil || mb[0]>>4 != 6 {
		t.Fatalf("mapped: %v, version %d", err, mb[0]>>4)
	}
	m.Src = netip.MustParseAddr("10.0.0.1")
	if _, err := m.Marshal(); !errors.Is(err, ErrFamily) {
		t.Errorf("an IPv4 and a mapped address: %v", err)
	}
	if v4 := linuxSYN(); !s.IsIPv6() || v4.IsIPv6() {
		t.Error("IsIPv6")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, s := range []Segment{
		linuxSYN(),
		{Src: netip.MustParseAddr("192.168.1.1"), Dst: netip.MustParseAddr("192.168.1.2"),
			SrcPort: 1, DstPort: 2, Seq: 1, Ack: 2, Flags: RST | ACK, TTL: 1},
		{Src: netip.MustParseAddr("1.2.3.4"), Dst: netip.MustParseAddr("5.6.7.8"),
			Flags: ACK, Options: Options{SACK: []SACKBlock{{10, 20}, {30, 40}}, HasTimestamps: true}, Payload: []byte{1}},
		linuxSYN6(),
		{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8:ffff::2"),
			SrcPort: 443, DstPort: 50000, Flags: FIN | ACK, TTL: 255, TOS: 0xff, FlowLabel: 0xfffff, Payload: []byte("bye")},
	} {
		b, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(b); err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		// Parsed options remember their wire order; compare everything else.
		got.Options.Order = nil
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, s)
		}
	}
}

func TestParseKeepsWireOrderAndUnknown(t *testing.T) {
	s := linuxSYN()
	b, _ := s.Marshal()
	// Rewrite the options by hand: nop, unknown kind 30 len 4, mss, eol, pad.
	b = append(b[:40:40], 1, 30, 4, 0xaa, 0xbb, 2, 4, 1, 0, 0, 0, 0)
	b[32] = (20 + 12) / 4 << 4
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Options.HasMSS || p.Options.MSS != 256 || len(p.Options.Unknown) != 1 || p.Options.Unknown[0].Kind != 30 {
		t.Fatalf("options %+v", p.Options)
	}
	again, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Checksums differ (we did not fix them above); the rest must match.
	again[10], again[11], again[36], again[37] = b[10], b[11], b[36], b[37]
	if !bytes.Equal(again, b) {
		t.Fatalf("re-marshal differs\n got %v\nwant %v", again, b)
	}
	if got := p.Options.String(); got != "nop,unknown-30 0xaabb,mss 256,eol" {
		t.Fatalf("String %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	g := linuxSYN()
	good, _ := g.Marshal()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 5", mut(func(b []byte) []byte { b[0] = 0x55; return b }), ErrNotIP},
		{"udp", mut(func(b []byte) []byte { b[9] = 17; return b }), ErrNotTCP},
		{"short ihl", mut(func(b []byte) []byte { b[0] = 0x44; return b }), ErrBadHeader},
		{"total too big", mut(func(b []byte) []byte { b[2] = 0xff; return b }), ErrTruncated},
		{"fragment", mut(func(b []byte) []byte { b[6] |= 0x20; return b }), ErrFragment},
		{"data offset", mut(func(b []byte) []byte { b[32] = 0x40; return b }), ErrBadHeader},
		{"option overrun", mut(func(b []byte) []byte { b[41] = 40; return b }), ErrBadHeader},
		{"option len 1", mut(func(b []byte) []byte { b[41] = 1; return b }), ErrBadHeader},
	}
	for _, c := range cases {
		if _, err := Parse(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	bad := mut(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b })
	if err := Verify(bad); !errors.Is(err, ErrChecksum) {
		t.Errorf("verify: got %v", err)
	}
}

func TestLinkPaddingIgnored(t *testing.T) {
	syn := linuxSYN()
	b, _ := syn.Marshal()
	b = append(b, 0, 0, 0, 0, 0, 0)
	s, err := Parse(b)
	if err != nil || len(s.Payload) != 0 {
		t.Fatalf("err %v payload %d", err, len(s.Payload))
	}
	if err := Verify(b); err != nil {
		t.Fatal(err)
	}
}

func TestMarshalErrors(t *testing.T) {
	s := linuxSYN()
	s.Src = netip.MustParseAddr("::1")
	if _, err := s.Marshal(); !errors.Is(err, ErrFamily) {
		t.Fatalf("got %v", err)
	}
	s = linuxSYN()
	s.Options.SACK = make([]SACKBlock, 4)
	if _, err := s.Marshal(); !errors.Is(err, ErrOptionsLong) {
		t.Fatalf("got %v", err)
	}
}

func TestFlags(t *testing.T) {
	for f, want := range map[Flags]string{SYN: "S", SYN | ACK: "S.", FIN | PSH | ACK: "FP.", RST | ACK: "R.", ACK: ".", 0: "none"} {
		if got := f.Short(); got != want {
			t.Errorf("%v.Short() = %q want %q", uint8(f), got, want)
		}
	}
	f, ok := ParseFlags("syn, ack")
	if !ok || f != SYN|ACK || f.String() != "SYN,ACK" {
		t.Fatalf("ParseFlags: %v %v", f, ok)
	}
	if _, ok := ParseFlags("SYNN"); ok {
		t.Fatal("SYNN accepted")
	}
}

func TestSeqWraps(t *testing.T) {
	a := Seq(0xfffffff0)
	b := a.Add(0x20)
	if !a.LessThan(b) || !b.GreaterThan(a) || b.Diff(a) != 0x20 || uint32(b) != 0x10 {
		t.Fatal("wrap-around comparison failed")
	}
	if !Seq(5).InWindow(a, 0x20) || Seq(0x10).InWindow(a, 0x20) {
		t.Fatal("InWindow across wrap")
	}
	if a.Max(b) != b || b.Max(a) != b {
		t.Fatal("Max")
	}
}

func TestSegmentString(t *testing.T) {
	s := linuxSYN()
	want := "10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 3735928559, win 64240, options [mss 1460,sackOK,TS val 12345 ecr 0,nop,wscale 7], length 0"
	if got := s.String(); got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
	// tcpdump prints an IPv6 address and port with a dot between.
	s = linuxSYN6()
	want = "fd00::1.40000 > fd00::2.80: Flags [S], seq 3735928559, win 64240, options [mss 1440,sackOK,TS val 12345 ecr 0,nop,wscale 7], length 0"
	if got := s.String(); got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
}

// FuzzParse: Parse never panics, and anything it accepts survives
// Marshal and a second Parse unchanged.
func FuzzParse(f *testing.F) {
	s := linuxSYN()
	b, _ := s.Marshal()
	f.Add(b)
	s.Flags, s.Payload = ACK|PSH, []byte("data")
	s.Options = Options{SACK: []SACKBlock{{1, 2}}}
	b, _ = s.Marshal()
	f.Add(b)
	f.Add([]byte{0x45, 0, 0, 20})
	s6 := linuxSYN6()
	b, _ = s6.Marshal()
	f.Add(b)
	s6.Flags, s6.Payload, s6.Options = ACK|PSH, []byte("data"), Options{HasTimestamps: true}
	b, _ = s6.Marshal()
	f.Add(b)
	f.Add(append([]byte{0x60, 0, 0, 0, 0, 8, ipv6HopByHop, 64}, make([]byte, 40)...))
	m6 := linuxSYN()
	m6.Src, m6.Dst = netip.AddrFrom16(m6.Src.As16()), netip.AddrFrom16(m6.Dst.As16())
	b, _ = m6.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		seg, err := Parse(b)
		if err != nil {
			return
		}
		_ = seg.String()
		out, err := seg.Marshal()
		if err != nil {
			// Only length limits may refuse a parsed segment.
			if !errors.Is(err, ErrOptionsLong) && !errors.Is(err, ErrTooLong) {
				t.Fatalf("marshal of parsed segment: %v", err)
			}
			return
		}
		if err := Verify(out); err != nil {
			t.Fatalf("marshalled packet fails verification: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !reflect.DeepEqual(seg, again) {
			t.Fatalf("round trip changed the segment\n%+v\n%+v", seg, again)
		}
	})
}

func TestResetFor(t *testing.T) {
	syn := linuxSYN()
	r, ok := ResetFor(&syn)
	if !ok || r.Flags != RST|ACK || r.Ack != syn.Seq.Add(1) || r.Seq != 0 ||
		r.Src != syn.Dst || r.Dst != syn.Src || r.SrcPort != syn.DstPort || r.DstPort != syn.SrcPort {
		t.Fatalf("reset for a SYN: %s", r.String())
	}
	data := linuxSYN()
	data.Flags, data.Ack, data.Payload = ACK|PSH|FIN, 777, []byte("abc")
	r, _ = ResetFor(&data)
	if r.Flags != RST || r.Seq != 777 {
		t.Fatalf("reset for data: %s", r.String())
	}
	rst := linuxSYN()
	rst.Flags = RST
	if _, ok := ResetFor(&rst); ok {
		t.Fatal("a reset answered with a reset")
	}
}

func TestParseShortRoundTrip(t *testing.T) {
	for f := Flags(0); ; f++ {
		got, ok := ParseShort(f.Short())
		if !ok || got != f {
			t.Fatalf("ParseShort(%q) = %v, %v; want %v", f.Short(), got, ok, f)
		}
		if f == 0xff {
			break
		}
	}
	for _, bad := range []string{"", "X", "S.X", "[S]"} {
		if _, ok := ParseShort(bad); ok {
			t.Errorf("ParseShort(%q) accepted", bad)
		}
	}
}

func TestOptionsLayout(t *testing.T) {
	o := Options{HasMSS: true, MSS: 1460, SACKPermitted: true, HasTimestamps: true, HasWScale: true, WScale: 7}
	if got := fmt.Sprint(o.Layout()); got != "[2 4 8 1 3]" {
		t.Errorf("Linux SYN layout %s, want [2 4 8 1 3] (mss, sackOK, TS, nop, wscale)", got)
	}
	o = Options{HasMSS: true, MSS: 1000, HasWScale: true, WScale: 7}
	if got := fmt.Sprint(o.Layout()); got != "[2 1 3]" {
		t.Errorf("mss and wscale %s, want [2 1 3]", got)
	}
	o = Options{HasMSS: true, MSS: 1000, Order: []uint8{OptMSS, OptNOP, OptEOL}}
	if got := fmt.Sprint(o.Layout()); got != "[2 1 0]" {
		t.Errorf("ordered %s, want [2 1 0]: an EOL written by the sender stays", got)
	}
}
