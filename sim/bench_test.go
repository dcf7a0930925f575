package sim

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// benchLab is a client and a server with a listener on port 80.
func benchLab(b *testing.B, sink trace.Sink) (*Network, tcp.FD) {
	n := New(Config{Seed: 1})
	n.SetSink(sink)
	if _, err := n.AddHost("client", netip.MustParseAddr("10.0.0.1"), tcp.Linux()); err != nil {
		b.Fatal(err)
	}
	if _, err := n.AddHost("server", netip.MustParseAddr("10.0.0.2"), tcp.Linux()); err != nil {
		b.Fatal(err)
	}
	l, _ := n.Do("server", tcp.Call{Op: tcp.OpSocket})
	if r, _ := n.Do("server", tcp.Call{Op: tcp.OpListen, FD: tcp.FD(l.Ret), Port: 80, Backlog: 128}); r.Err != tcp.OK {
		b.Fatal(r.Err)
	}
	return n, tcp.FD(l.Ret)
}

// connected connects the client to the server's listener and accepts the
// connection: the two ends' descriptors.
func connected(b *testing.B, n *Network, lfd tcp.FD) (cfd, sfd tcp.FD) {
	c, _ := n.Do("client", tcp.Call{Op: tcp.OpSocket})
	cfd = tcp.FD(c.Ret)
	n.Do("client", tcp.Call{Op: tcp.OpConnect, FD: cfd, Addr: netip.MustParseAddrPort("10.0.0.2:80"), NonBlock: true})
	n.RunFor(5 * time.Millisecond)
	a, _ := n.Do("server", tcp.Call{Op: tcp.OpAccept, FD: lfd, NonBlock: true})
	if a.Err != tcp.OK {
		b.Fatalf("accept: %v", a.Err)
	}
	return cfd, tcp.FD(a.Ret)
}

// lifecycle runs one connection from connect to the end of TIME_WAIT:
// handshake, 4 bytes, the client closes, the server reads EOF and closes,
// TIME_WAIT expires.
func lifecycle(b *testing.B, n *Network, lfd tcp.FD) {
	cfd, sfd := connected(b, n, lfd)
	if w, _ := n.Do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: []byte("Hutu")}); w.Ret != 4 {
		b.Fatalf("write: %+v", w)
	}
	n.RunFor(5 * time.Millisecond)
	if r, _ := n.Do("server", tcp.Call{Op: tcp.OpRead, FD: sfd, NonBlock: true}); r.Ret != 4 {
		b.Fatalf("read: %+v", r)
	}
	n.Do("client", tcp.Call{Op: tcp.OpClose, FD: cfd})
	n.RunFor(5 * time.Millisecond)
	if r, _ := n.Do("server", tcp.Call{Op: tcp.OpRead, FD: sfd, NonBlock: true}); r.Ret != 0 || r.Err != tcp.OK {
		b.Fatalf("EOF: %+v", r)
	}
	n.Do("server", tcp.Call{Op: tcp.OpClose, FD: sfd})
	n.RunFor(61 * time.Second) // TIME_WAIT ends
}

// BenchmarkLifecycle measures whole connection lifecycles per second, with
// the trace off (the engine and the network alone) and with every event
// built and handed to a sink.
func BenchmarkLifecycle(b *testing.B) {
	for _, tc := range []struct {
		name string
		sink trace.Sink
	}{{"trace-off", nil}, {"trace-on", func(trace.Event) {}}} {
		b.Run(tc.name, func(b *testing.B) {
			n, lfd := benchLab(b, tc.sink)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lifecycle(b, n, lfd)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lifecycles/s")
			if snap, _ := n.Snapshot("client"); len(snap) != 0 {
				b.Fatalf("client keeps %d sockets", len(snap))
			}
		})
	}
}

// BenchmarkSynFlood measures spoofed SYNs against one listener with SYN
// cookies on (tcp_syncookies=1): once the SYN queue is full, every SYN is
// answered statelessly. One op is one SYN; run it with -benchtime=1000000x
// for a million. It reports the requests held and the heap growth over the
// second half of the run, which stay flat once cookies take over: the
// listener and a full SYN queue of backlog+1 requests.
func BenchmarkSynFlood(b *testing.B) {
	for _, tc := range []struct {
		name string
		sink trace.Sink
	}{{"trace-off", nil}, {"trace-on", func(trace.Event) {}}} {
		b.Run(tc.name, func(b *testing.B) {
			n, _ := benchLab(b, tc.sink)
			if _, err := n.AddHost("attacker", netip.MustParseAddr("10.0.0.66"), tcp.Linux()); err != nil {
				b.Fatal(err)
			}
			dst := netip.MustParseAddr("10.0.0.2")
			var half runtime.MemStats
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Sources from 198.18.0.0/15, nobody's address.
				src := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
				syn := wire.Segment{Src: src, Dst: dst, SrcPort: uint16(1024 + i%60000), DstPort: 80,
					Seq: wire.Seq(uint32(i) * 2654435761), Flags: wire.SYN, Window: 64240, TTL: 64,
					Options: wire.Options{HasMSS: true, MSS: 1460}}
				if err := n.Inject("attacker", syn); err != nil {
					b.Fatal(err)
				}
				n.RunFor(time.Microsecond)
				if i == b.N/2 {
					b.StopTimer()
					runtime.GC()
					runtime.ReadMemStats(&half)
					b.StartTimer()
				}
			}
			b.StopTimer()
			n.RunFor(time.Millisecond)
			var end runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&end)
			srv := n.Host("server").Stack
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "SYNs/s")
			b.ReportMetric(float64(int64(end.HeapAlloc)-int64(half.HeapAlloc))/(1<<20), "heap-growth-MB")
			snap, _ := n.Snapshot("server")
			b.ReportMetric(float64(len(snap)), "sockets")
			if b.N >= 1000 && srv.Counter(tcp.SyncookiesSent) == 0 {
				b.Fatal("no cookies sent")
			}
			if len(snap) > 1+128+1 { // the listener and a SYN queue of backlog+1 (inet_csk_reqsk_queue_is_full)
				b.Fatalf("%d sockets on the server: the SYN queue grew past the backlog", len(snap))
			}
		})
	}
}

// bulkBytes is what one BenchmarkBulk op moves through one connection.
const bulkBytes = 100 << 20

// bulk moves bulkBytes from a client to a server over one fresh connection
// on a 1 ms link: the client writes without blocking whatever the send
// buffer takes, the server reads whatever has arrived into one buffer, and
// the network runs half a millisecond between the two. It returns the
// segments the two hosts sent.
func bulk(b *testing.B, n *Network, lfd tcp.FD, src, dst []byte) int64 {
	cli, srv := n.Host("client").Stack, n.Host("server").Stack
	before := cli.Counter(tcp.OutSegs) + srv.Counter(tcp.OutSegs)
	cfd, sfd := connected(b, n, lfd)
	sent, got := 0, 0
	for got < bulkBytes {
		if sent < bulkBytes {
			chunk := src[:min(len(src), bulkBytes-sent)]
			if w, _ := n.Do("client", tcp.Call{Op: tcp.OpWrite, FD: cfd, Data: chunk, NonBlock: true}); w.Ret > 0 {
				sent += w.Ret
			}
		}
		for {
			r, _ := n.Do("server", tcp.Call{Op: tcp.OpRead, FD: sfd, Buf: dst, NonBlock: true})
			if r.Ret <= 0 {
				break
			}
			got += r.Ret
		}
		n.RunFor(500 * time.Microsecond)
		if n.Now() > time.Hour {
			b.Fatalf("bulk stalled: %d of %d bytes read", got, bulkBytes)
		}
	}
	n.Do("client", tcp.Call{Op: tcp.OpClose, FD: cfd})
	n.Do("server", tcp.Call{Op: tcp.OpClose, FD: sfd})
	n.RunFor(61 * time.Second)
	return cli.Counter(tcp.OutSegs) + srv.Counter(tcp.OutSegs) - before
}

// BenchmarkBulk measures one connection's bulk path: 100 MB per op from a
// client to a server over a 1 ms link, with the trace off and with every
// event built and handed to a sink. It reports payload MB/s (of wall
// time), segments/s (both directions) and the bytes allocated per byte
// moved.
func BenchmarkBulk(b *testing.B) {
	for _, tc := range []struct {
		name string
		sink trace.Sink
	}{{"trace-off", nil}, {"trace-on", func(trace.Event) {}}} {
		b.Run(tc.name, func(b *testing.B) {
			n, lfd := benchLab(b, tc.sink)
			src, dst := make([]byte, 256<<10), make([]byte, 256<<10)
			for i := range src {
				src[i] = byte(i * 7)
			}
			bulk(b, n, lfd, src, dst) // warm up: buffers at their size
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.SetBytes(bulkBytes)
			b.ReportAllocs()
			b.ResetTimer()
			var segs int64
			for i := 0; i < b.N; i++ {
				segs += bulk(b, n, lfd, src, dst)
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(segs)/b.Elapsed().Seconds(), "segments/s")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/bulkBytes, "alloc-B/byte")
		})
	}
}
