// Package nstest makes throwaway network namespaces for tests.
package nstest

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// New creates a network namespace with lo up and returns its handle and a
// path naming it (/proc/PID/fd/N, which the live commands take as --netns).
// It skips the test without root. The namespace is made on a thread that
// is never unlocked, so the thread dies with its goroutine and nothing else
// runs there; the handle keeps the namespace alive until the test ends.
func New(t testing.TB) (netns.NsHandle, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates a network namespace")
	}
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
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.h.Close() })
	return r.h, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(r.h))
}
