package inspect

import (
	"io"
	"net"
	"os"
	"testing"
)

// benchConns holds n loopback connections open (2n sockets) inside a
// namespace of the benchmark's own when it runs as root, so that nothing
// else on the machine counts.
func benchConns(b *testing.B, n int) *Host {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: builds its sockets in a namespace of its own")
	}
	ns, target := watchNS(b)
	var ln net.Listener
	if err := InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	var conns []net.Conn
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		ln.Close()
	})
	accepted := make(chan net.Conn, n)
	go func() {
		for range n {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	err := InNetns(ns, func() error {
		for range n {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	for range n {
		conns = append(conns, <-accepted)
	}
	h, err := OpenHost(target)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

const benchN = 5000 // connections: 10,000 sockets and as many descriptors

func BenchmarkDumpAll(b *testing.B) {
	h := benchConns(b, benchN)
	for b.Loop() {
		socks, err := h.Sockets(Filter{})
		if err != nil || len(socks) != 2*benchN+1 {
			b.Fatalf("%d sockets, %v", len(socks), err)
		}
	}
}

func BenchmarkDumpAndTable(b *testing.B) {
	h := benchConns(b, benchN)
	for b.Loop() {
		socks, err := h.Sockets(Filter{})
		if err != nil {
			b.Fatal(err)
		}
		if err := WriteTable(io.Discard, socks, nil, TableOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDumpListening(b *testing.B) {
	h := benchConns(b, benchN)
	for b.Loop() {
		socks, err := h.Sockets(Filter{States: Mask(Listen)})
		if err != nil || len(socks) != 1 {
			b.Fatalf("%d sockets, %v", len(socks), err)
		}
	}
}

func BenchmarkDumpPortFilter(b *testing.B) {
	h := benchConns(b, benchN)
	for b.Loop() {
		socks, err := h.Sockets(Filter{States: Mask(Established), SPort: []PortRange{{22, 22}}})
		if err != nil || len(socks) != 0 {
			b.Fatalf("%d sockets, %v", len(socks), err)
		}
	}
}

func BenchmarkStats(b *testing.B) {
	h := benchConns(b, benchN)
	for b.Loop() {
		socks, err := h.Sockets(Filter{})
		if err != nil {
			b.Fatal(err)
		}
		st := Count(socks)
		st.NameOwners()
		if err := WriteStats(io.Discard, st); err != nil {
			b.Fatal(err)
		}
	}
}
