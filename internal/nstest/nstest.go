// Package nstest makes throwaway network namespaces for tests.
package nstest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// New creates a network namespace with lo up and returns its handle and a
// path naming it (/proc/PID/fd/N, which the live commands take as --netns).
// It skips the test without root. The handle keeps the namespace alive
// until the test ends.
func New(t testing.TB) (netns.NsHandle, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates a network namespace")
	}
	h, err := Make()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, Path(h)
}

// Make creates a network namespace with lo up, for programs that are not
// tests (the caller closes the handle; the namespace goes with the last
// handle or thread in it). It is made on a thread that is never unlocked,
// so the thread dies with its goroutine and nothing else runs there.
func Make() (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		h, err := netns.New()
		if err != nil {
			ch <- result{netns.None(), fmt.Errorf("new network namespace: %w", err)}
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			h.Close()
			ch <- result{netns.None(), fmt.Errorf("lo up: %w", err)}
			return
		}
		ch <- result{h, nil}
	}()
	r := <-ch
	return r.h, r.err
}

// Path names a namespace handle of this process as the live commands take
// it (--netns /proc/PID/fd/N).
func Path(h netns.NsHandle) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(h))
}

// CloseWait makes a server on 127.0.0.1:port that accepts n connections
// and never reads or closes them; the clients close, the first after
// sending first (if any). in runs a function inside the namespace (a
// socket stays in the namespace it was made in). It returns the clients'
// addresses, once their FINs have had time to arrive.
func CloseWait(t testing.TB, in func(func() error) error, port, n int, first []byte) []netip.AddrPort {
	t.Helper()
	var clients []netip.AddrPort
	err := in(func() error {
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		for range n {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				return err
			}
			s, err := ln.Accept()
			if err != nil {
				c.Close()
				return err
			}
			t.Cleanup(func() { s.Close() })
			clients = append(clients, c.LocalAddr().(*net.TCPAddr).AddrPort())
			if len(clients) == 1 && len(first) > 0 {
				c.Write(first)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	return clients
}
