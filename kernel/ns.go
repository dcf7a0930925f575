// Package kernel runs scenarios on the Linux kernel of this machine: each
// scenario host is a network namespace, the hosts are joined by veth, the
// lab's fault rules are nftables rules inside the namespaces, application
// calls are real sockets, and what happens is observed with AF_PACKET
// capture, sock_diag, the sock/inet_sock_set_state tracepoint and the
// namespaces' own counters. It reports the same trace events as the
// simulator, so the two can be compared.
//
// The root namespace and its firewall are never changed. Everything a run
// creates carries the prefix "tcplab-" and the process ID, so that Clean
// can find what a killed run left behind.
package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/tcplab/tcplab/inspect"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace and tracefs instance a run
// creates.
const Prefix = "tcplab-"

// netnsDir is where named namespaces are bind-mounted, as `ip netns` does.
const netnsDir = "/var/run/netns"

var labSeq atomic.Int64

// ErrUnsupported is returned when this machine or user cannot run the
// kernel backend (not root, no namespaces, no tracefs).
var ErrUnsupported = errors.New("the kernel backend is not available")

// Check reports whether the kernel backend can run here, and if not, why
// in one line.
func Check() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: it needs Linux, this is %s", ErrUnsupported, runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: it needs root (network namespaces, nftables and tracefs); run it with sudo, or leave out --kernel to use the simulator", ErrUnsupported)
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("%w: this kernel has no network namespaces (%v)", ErrUnsupported, err)
	}
	if _, err := inspect.TracefsRoot(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return nil
}

// nsWorker is a thread that stays in one namespace and runs functions
// there: creating a socket or writing a sysctl on it costs a channel send,
// where a fresh thread per call (inNS) costs a thread's creation and exit,
// which now and then takes 10 ms.
type nsWorker struct {
	jobs chan func()
}

func newNSWorker(ns netns.NsHandle) (*nsWorker, error) {
	w := &nsWorker{jobs: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := netns.Set(ns); err != nil {
			ready <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		ready <- nil
		for f := range w.jobs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return w, nil
}

// do runs f in the worker's namespace and waits for it.
func (w *nsWorker) do(f func() error) error {
	done := make(chan error, 1)
	w.jobs <- func() { done <- f() }
	return <-done
}

func (w *nsWorker) close() { close(w.jobs) }

// newNamedNS creates a network namespace mounted under /var/run/netns/name
// and returns a handle to it, without moving the caller's thread. With a
// parent, the namespace is created from inside it and so takes the
// parent's tcp_child_ehash_entries.
func newNamedNS(name string, parent netns.NsHandle) (netns.NsHandle, error) {
	var h netns.NsHandle
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread dies with the goroutine
		if parent.IsOpen() {
			if err := netns.Set(parent); err != nil {
				done <- err
				return
			}
		}
		var e error
		h, e = netns.NewNamed(name)
		done <- e
	}()
	if err := <-done; err != nil {
		return netns.None(), fmt.Errorf("create namespace %s: %w", name, err)
	}
	return h, nil
}

// deleteNamedNS unmounts and removes a named namespace. The kernel frees
// it once nothing (a socket, a thread) refers to it any more.
func deleteNamedNS(name string) error {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// runName is the name prefix of one lab: tcplab-PID-N.
func runName() string {
	return fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), labSeq.Add(1))
}

// ownerPID reads the process ID out of a name made by runName or by the
// tracer ("tcplab-PID" or "tcplab-PID-...").
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	p, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	return pid, err == nil && pid > 0
}

func alive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Leftover is something a run created and did not remove.
type Leftover struct {
	Kind string // "netns" or "tracefs"
	Name string
	PID  int
	Live bool // its process still runs
}

// Leftovers lists tcplab namespaces and tracefs instances on this machine.
func Leftovers() ([]Leftover, error) {
	var out []Leftover
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if pid, ok := ownerPID(e.Name()); ok {
			out = append(out, Leftover{Kind: "netns", Name: e.Name(), PID: pid, Live: alive(pid)})
		}
	}
	if root, err := inspect.TracefsRoot(); err == nil {
		ents, _ := os.ReadDir(filepath.Join(root, "instances"))
		for _, e := range ents {
			if pid, ok := ownerPID(e.Name()); ok {
				out = append(out, Leftover{Kind: "tracefs", Name: e.Name(), PID: pid, Live: alive(pid)})
			}
		}
	}
	return out, nil
}

// Clean removes leftovers whose process is gone, or all of them with
// force. It returns what it removed.
func Clean(force bool) ([]Leftover, error) {
	ls, err := Leftovers()
	if err != nil {
		return nil, err
	}
	var done []Leftover
	var errs []error
	for _, l := range ls {
		if l.Live && !force {
			continue
		}
		switch l.Kind {
		case "netns":
			err = deleteNamedNS(l.Name)
		case "tracefs":
			err = inspect.RemoveTraceInstance(l.Name)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", l.Kind, l.Name, err))
			continue
		}
		done = append(done, l)
	}
	return done, errors.Join(errs...)
}
