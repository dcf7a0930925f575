// capgen writes a pcap of many short TCP connections, streamed to a file,
// for measuring tcplab explain on large captures (bench/explain.sh).
// Every connection is the same nine packets: handshake, a 100-byte
// request, a 200-byte answer, and the close (the client closes first and
// is left in TIME_WAIT). Addresses are 10.1.0.0/16 clients to 10.0.0.2:80;
// nothing is sent anywhere.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcplab/tcplab/wire"
)

func main() {
	out := flag.String("o", "", "the pcap file to write (must not exist)")
	size := flag.Int64("size", 1<<30, "stop once the file has at least this many bytes")
	gap := flag.Duration("gap", 10*time.Microsecond, "capture time between packets")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: capgen -o FILE [-size BYTES] [-gap D]")
		os.Exit(2)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(262144, layers.LinkTypeRaw); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := netip.MustParseAddr("10.0.0.2")
	t := time.Unix(1_700_000_000, 0)
	written := int64(24)
	ts := uint32(1)
	buf := make([]byte, 0, 512)
	conns, packets := 0, 0
	for i := 0; written < *size; i++ {
		// 65,536 client addresses, 50,000 ports each: a 4-tuple comes
		// back only after 3.2 billion connections.
		cli := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		port := uint16(10000 + (i>>16)%50000)
		c, s := wire.Seq(1000*i), wire.Seq(7000*i)
		seg := func(fromCli bool, flags wire.Flags, seq, ack wire.Seq, payload int) {
			x := wire.Segment{Src: cli, Dst: srv, SrcPort: port, DstPort: 80, Seq: seq, Ack: ack, Flags: flags, Window: 502, TTL: 64,
				Options: wire.Options{HasTimestamps: true, TSVal: ts, TSEcr: ts}, Payload: make([]byte, payload)}
			if !fromCli {
				x.Src, x.Dst, x.SrcPort, x.DstPort = srv, cli, 80, port
			}
			ts++
			data, err := x.AppendMarshal(buf[:0])
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			t = t.Add(*gap)
			if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: len(data)}, data); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			written += 16 + int64(len(data))
			packets++
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
		conns++
	}
	if err := bw.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s: %d bytes, %d packets, %d connections, %v of capture time\n", *out, written, packets, conns, time.Duration(packets)*(*gap))
}
