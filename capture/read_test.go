package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcplab/tcplab/wire"
)

// ipv4Frame is an IPv4 TCP packet (SYN from 10.0.0.1:1234 to
// 10.0.0.2:80 with an MSS option) and a payload of n bytes.
func ipv4Frame(t testing.TB, n int) []byte {
	s := wire.Segment{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1234, DstPort: 80,
		Seq: 1000, Flags: wire.SYN, Window: 64240, TTL: 64, ID: 7, Options: wire.Options{HasMSS: true, MSS: 1460},
		Payload: make([]byte, n)}
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ipv6Frame carries the same TCP segment in IPv6, after a hop-by-hop
// extension header.
func ipv6Frame(t testing.TB) []byte {
	tcp := ipv4Frame(t, 0)[20:]
	b := make([]byte, 40+8)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(8+len(tcp)))
	b[6], b[7] = 0, 64 // hop-by-hop first
	copy(b[8:24], netip.MustParseAddr("fd00::1").AsSlice())
	copy(b[24:40], netip.MustParseAddr("fd00::2").AsSlice())
	b[40] = 6 // then TCP
	return append(b, tcp...)
}

func writePcap(t testing.TB, lt layers.LinkType, frames ...[]byte) []byte {
	var buf bytes.Buffer
	w := pcapgo.NewWriterNanos(&buf)
	if err := w.WriteFileHeader(65536, lt); err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(100, int64(i)*1000), CaptureLength: len(f), Length: len(f)}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// Every link type a capture may come in, IPv4 and IPv6.
func TestReaderLinkTypes(t *testing.T) {
	v4, v6 := ipv4Frame(t, 0), ipv6Frame(t)
	eth := func(et uint16, vlans int, ip []byte) []byte {
		b := make([]byte, 12)
		for range vlans {
			b = binary.BigEndian.AppendUint16(b, 0x8100)
			b = binary.BigEndian.AppendUint16(b, 5)
		}
		b = binary.BigEndian.AppendUint16(b, et)
		return append(b, ip...)
	}
	sll := func(et uint16, ip []byte) []byte {
		b := make([]byte, 14)
		b = binary.BigEndian.AppendUint16(b, et)
		return append(b, ip...)
	}
	sll2 := func(et uint16, ip []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, et)
		return append(append(b, make([]byte, 18)...), ip...)
	}
	null := func(ip []byte) []byte { return append([]byte{2, 0, 0, 0}, ip...) }
	for _, c := range []struct {
		name  string
		lt    layers.LinkType
		frame []byte
		src   string
	}{
		{"ethernet", layers.LinkTypeEthernet, eth(0x0800, 0, v4), "10.0.0.1:1234"},
		{"ethernet, two VLAN tags", layers.LinkTypeEthernet, eth(0x0800, 2, v4), "10.0.0.1:1234"},
		{"ethernet, IPv6", layers.LinkTypeEthernet, eth(0x86dd, 0, v6), "[fd00::1]:1234"},
		{"linux cooked", layers.LinkTypeLinuxSLL, sll(0x0800, v4), "10.0.0.1:1234"},
		{"linux cooked v2", layers.LinkType(linkSLL2), sll2(0x86dd, v6), "[fd00::1]:1234"},
		{"raw", layers.LinkTypeRaw, v4, "10.0.0.1:1234"},
		{"raw IPv6", layers.LinkType(linkIPv6), v6, "[fd00::1]:1234"},
		{"BSD loopback", layers.LinkTypeNull, null(v4), "10.0.0.1:1234"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(writePcap(t, c.lt, c.frame)))
			if err != nil {
				t.Fatal(err)
			}
			p, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			got := netip.AddrPortFrom(p.Segment.Src, p.Segment.SrcPort).String()
			if got != c.src || p.Segment.Flags != wire.SYN || p.Segment.Seq != 1000 || !p.Segment.Options.HasMSS || p.Frame != 1 {
				t.Errorf("got %s %v seq %d frame %d", got, p.Segment.Flags, p.Segment.Seq, p.Frame)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("after the last frame: %v", err)
			}
		})
	}
}

// The payload's length comes from the IP header even when the snap
// length cut the bytes; other frames are skipped and counted; gzip and
// pcapng are recognised.
func TestReaderSnapGzipPcapng(t *testing.T) {
	full := ipv4Frame(t, 1000)
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(96, layers.LinkTypeRaw); err != nil {
		t.Fatal(err)
	}
	arp := []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8} // a UDP header only
	for _, f := range [][]byte{arp, full} {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: min(len(f), 96), Length: len(f)}
		if err := w.WritePacket(ci, f[:min(len(f), 96)]); err != nil {
			t.Fatal(err)
		}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(buf.Bytes())
	zw.Close()
	r, err := NewReader(&gz)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Next()
	if err != nil || p.Len != 1000 || p.Frame != 2 || r.Skipped != 1 {
		t.Fatalf("payload %d frame %d skipped %d: %v", p.Len, p.Frame, r.Skipped, err)
	}

	var ng bytes.Buffer
	nw, err := pcapgo.NewNgWriterInterface(&ng, pcapgo.NgInterface{LinkType: layers.LinkTypeIPv4, SnapLength: 0}, pcapgo.NgWriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := nw.AddInterface(pcapgo.NgInterface{LinkType: layers.LinkTypeEthernet})
	if err != nil {
		t.Fatal(err)
	}
	nw.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(full), Length: len(full)}, full)
	e := append(append(make([]byte, 12), 8, 0), full...)
	nw.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(2, 0), CaptureLength: len(e), Length: len(e), InterfaceIndex: id}, e)
	nw.Flush()
	r, err = NewReader(&ng)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		p, err := r.Next()
		if err != nil || p.Iface != i || p.Len != 1000 {
			t.Fatalf("pcapng packet %d: iface %d len %d: %v", i, p.Iface, p.Len, err)
		}
	}
}

// Bad input: a clear error, never a panic.
func TestReaderErrors(t *testing.T) {
	if _, err := NewReader(strings.NewReader("hello, world")); !errors.Is(err, ErrFormat) {
		t.Errorf("text: %v", err)
	}
	if _, err := NewReader(strings.NewReader("")); !errors.Is(err, ErrFormat) {
		t.Errorf("empty: %v", err)
	}
	b := writePcap(t, layers.LinkTypeRaw, ipv4Frame(t, 10), ipv4Frame(t, 10))
	r, err := NewReader(bytes.NewReader(b[:len(b)-5]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "frame 2") {
		t.Errorf("a truncated last record: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(writePcap(f, layers.LinkTypeRaw, ipv4Frame(f, 10)))
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		tr := NewTracker(Options{Events: true}, nil)
		for range 1000 {
			p, err := r.Next()
			if err != nil {
				break
			}
			tr.Add(&p)
		}
		tr.Flush()
	})
}

// shortConns writes a capture of n short connections (handshake, a
// request, an answer, both FINs: 9 packets each) on raw IPv4, as a busy
// server's capture looks.
func shortConns(b testing.TB, n int) []byte {
	var buf bytes.Buffer
	w := pcapgo.NewWriterNanos(&buf)
	if err := w.WriteFileHeader(262144, layers.LinkTypeRaw); err != nil {
		b.Fatal(err)
	}
	cli, srv := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	t := time.Unix(1000, 0)
	ts := uint32(1)
	for i := range n {
		port := uint16(10000 + i%50000)
		c, s := wire.Seq(1000*i), wire.Seq(7000*i)
		seg := func(fromCli bool, flags wire.Flags, seq, ack wire.Seq, payload int) {
			x := wire.Segment{Src: cli, Dst: srv, SrcPort: port, DstPort: 80, Seq: seq, Ack: ack, Flags: flags, Window: 502, TTL: 64,
				Options: wire.Options{HasTimestamps: true, TSVal: ts, TSEcr: ts}, Payload: make([]byte, payload)}
			if !fromCli {
				x.Src, x.Dst, x.SrcPort, x.DstPort = srv, cli, 80, port
			}
			ts++
			data, err := x.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			t = t.Add(10 * time.Microsecond)
			if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: len(data)}, data); err != nil {
				b.Fatal(err)
			}
		}
		seg(true, wire.SYN, c, 0, 0)
		seg(false, wire.SYN|wire.ACK, s, c+1, 0)
		seg(true, wire.ACK, c+1, s+1, 0)
		seg(true, wire.ACK|wire.PSH, c+1, s+1, 100)
		seg(false, wire.ACK|wire.PSH, s+1, c+101, 200)
		seg(true, wire.ACK|wire.FIN, c+101, s+201, 0)
		seg(false, wire.ACK|wire.FIN, s+201, c+102, 0)
		seg(true, wire.ACK, c+102, s+202, 0)
		seg(false, wire.ACK, s+202, c+102, 0)
	}
	return buf.Bytes()
}

// BenchmarkExplain reads and explains a capture of 10,000 short
// connections (90,000 packets); it reports packets per second.
func BenchmarkExplain(b *testing.B) {
	data := shortConns(b, 10000)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	pk := 0
	for range b.N {
		st, err := Read(bytes.NewReader(data), Options{}, func(*Conn, time.Time) {})
		if err != nil {
			b.Fatal(err)
		}
		pk += st.Packets
	}
	b.ReportMetric(float64(pk)/b.Elapsed().Seconds(), "packets/s")
}
