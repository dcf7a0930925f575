package inspect

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/tcplab/tcplab/procnet"
	"github.com/vishvananda/netns"
)

// Target names the network namespace to look at: the caller's own (the
// zero Target), a named one (ip netns), or the one a process is in (a
// container's, by its PID).
type Target struct {
	Netns string
	PID   int
}

func (t Target) String() string {
	switch {
	case t.Netns != "":
		return "netns " + t.Netns
	case t.PID != 0:
		return "the network namespace of pid " + strconv.Itoa(t.PID)
	}
	return "this host"
}

func (t Target) handle() (netns.NsHandle, error) {
	switch {
	case t.Netns != "" && t.PID != 0:
		return netns.None(), fmt.Errorf("give a namespace name or a PID, not both")
	case t.Netns != "":
		if strings.ContainsRune(t.Netns, '/') {
			return netns.GetFromPath(t.Netns)
		}
		h, err := netns.GetFromName(t.Netns)
		if err != nil {
			return h, fmt.Errorf("network namespace %q: %w", t.Netns, err)
		}
		return h, nil
	case t.PID != 0:
		h, err := netns.GetFromPid(t.PID)
		if err != nil {
			return h, fmt.Errorf("network namespace of pid %d: %w", t.PID, err)
		}
		return h, nil
	}
	return netns.None(), nil
}

// InNetns runs f on a fresh OS thread inside ns. The thread is dropped
// afterwards (the goroutine ends locked), so no other goroutine ever runs
// in a namespace it did not choose.
func InNetns(ns netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			done <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		done <- f()
	}()
	return <-done
}

// Host is an open view of one namespace's TCP sockets and counters. It
// holds the namespace from the start, so that sockets, counters and
// settings all come from the one namespace even if its name or PID is
// reused meanwhile. A Host is not safe for concurrent use.
type Host struct {
	Target Target
	ns     netns.NsHandle // netns.None() for the caller's own
	diag   *Diag
}

// OpenHost opens a sock_diag socket in the target's namespace.
func OpenHost(t Target) (*Host, error) {
	ns, err := t.handle()
	if err != nil {
		return nil, err
	}
	h := &Host{Target: t, ns: ns}
	err = h.do(func() error {
		var err error
		h.diag, err = OpenDiag()
		return err
	})
	if err != nil {
		h.closeNS()
		return nil, err
	}
	return h, nil
}

// do runs f in the host's namespace.
func (h *Host) do(f func() error) error {
	if !h.ns.IsOpen() {
		return f()
	}
	return InNetns(h.ns, f)
}

func (h *Host) closeNS() {
	if h.ns.IsOpen() {
		h.ns.Close()
	}
}

// Close releases the host's socket and namespace.
func (h *Host) Close() error {
	h.closeNS()
	return h.diag.Close()
}

// Sockets lists the sockets the filter chooses.
func (h *Host) Sockets(f Filter) ([]Socket, error) {
	var out []Socket
	if (f.States == 0 || f.States == AllStates) && len(f.SPort)+len(f.DPort)+len(f.Src)+len(f.Dst) == 0 {
		// One allocation of about the right size: growing the slice step
		// by step allocates several times the table, and for a one-shot
		// listing every fresh page costs a fault.
		out = make([]Socket, 0, h.countHint())
	}
	err := h.diag.Each(f, func(s *Socket) { out = append(out, *s) })
	return out, err
}

// countHint is about how many TCP sockets the namespace has, from
// sockstat (in use, TIME_WAIT, IPv6 in use), or 0 when it cannot be read.
func (h *Host) countHint() int {
	n := 0
	_ = h.do(func() error {
		for _, name := range []string{"sockstat", "sockstat6"} {
			b, err := os.ReadFile(netFile(name))
			if err != nil {
				continue
			}
			c, err := procnet.ParseSockstat(b)
			if err != nil {
				continue
			}
			for _, g := range []string{"TCP", "TCP6"} {
				for _, k := range []string{"inuse", "tw"} {
					v, _ := c.Get(g, k)
					n += int(v)
				}
			}
		}
		return nil
	})
	return n + n/16 + 16
}

// Lookup finds the one socket with these ends, if there is one now.
func (h *Host) Lookup(local, remote netip.AddrPort) (Socket, bool, error) {
	return h.diag.Lookup(local, remote)
}

// Each calls fn for each socket the filter chooses (s is reused).
func (h *Host) Each(f Filter, fn func(s *Socket)) error { return h.diag.Each(f, fn) }

// netFile is where a /proc/net file of the current thread's namespace is.
func netFile(name string) string { return filepath.Join("/proc/thread-self/net", name) }

// Counters reads the namespace's TCP counters: /proc/net/netstat and snmp
// (groups TcpExt, IpExt, Tcp, Ip, ...) and sockstat and sockstat6 (groups
// TCP, TCP6, sockets, ...).
func (h *Host) Counters() (procnet.Counters, error) {
	c := procnet.Counters{}
	err := h.do(func() error {
		for _, name := range []string{"netstat", "snmp"} {
			b, err := os.ReadFile(netFile(name))
			if err != nil {
				return err
			}
			if err := procnet.ParseInto(c, b); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		for _, name := range []string{"sockstat", "sockstat6"} {
			b, err := os.ReadFile(netFile(name))
			if err != nil {
				if os.IsNotExist(err) { // no IPv6
					continue
				}
				return err
			}
			s, err := procnet.ParseSockstat(b)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			for g, m := range s {
				if c[g] == nil {
					c[g] = map[string]int64{}
				}
				for k, v := range m {
					c[g][k] = v
				}
			}
		}
		return nil
	})
	return c, err
}

// Sysctls reads integer settings from /proc/sys in the target's namespace;
// settings a namespace does not have (tcp_mem is global) are read outside
// it. Each value is the file's fields. A setting neither shows is left out:
// a process in a namespace of its own (a container's) sees no global
// settings at all.
func (h *Host) Sysctls(names ...string) (map[string][]int64, error) {
	out := map[string][]int64{}
	err := h.do(func() error {
		for _, n := range names {
			v, err := readSysctl(n)
			if os.IsNotExist(err) {
				continue // global, read below
			}
			if err != nil {
				return err
			}
			out[n] = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			v, err := readSysctl(n)
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out[n] = v
		}
	}
	return out, nil
}

func readSysctl(name string) ([]int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/")))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, err
		}
		return nil, fmt.Errorf("sysctl %s: %w", name, err)
	}
	var vals []int64
	for _, f := range strings.Fields(string(b)) {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("sysctl %s: %q is not a number", name, f)
		}
		vals = append(vals, v)
	}
	return vals, nil
}
