package inspect

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Transition is one state change of one socket.
type Transition struct {
	At     time.Time      `json:"at"`
	Old    State          `json:"old"`
	New    State          `json:"new"`
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	// InOld is how long the socket was in Old; zero when the watch did
	// not see it enter Old.
	InOld time.Duration `json:"in_old_ns"`
	// Source says where the change was seen: "trace" (the tracepoint) or
	// "snapshot" (sock_diag: TIME_WAIT's start and end fire no tracepoint).
	Source    string `json:"source"`
	Processes []Proc `json:"processes,omitempty"`
}

// Match reports whether a connection's ends pass the filter's family,
// ports and addresses (the Go twin of the bytecode).
func (f Filter) Match(local, remote netip.AddrPort) bool {
	fam := 4 // an IPv4-mapped address is an AF_INET6 socket, as the kernel lists it
	if local.Addr().Is6() {
		fam = 6
	}
	if f.Family != 0 && f.Family != fam {
		return false
	}
	inPorts := func(p uint16, rs []PortRange) bool {
		if len(rs) == 0 {
			return true
		}
		for _, r := range rs {
			if p >= r.Lo && p <= r.Hi {
				return true
			}
		}
		return false
	}
	inPrefixes := func(a netip.Addr, ps []netip.Prefix) bool {
		if len(ps) == 0 {
			return true
		}
		for _, p := range ps {
			if p.Contains(a) || a.Is4In6() && p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return inPorts(local.Port(), f.SPort) && inPorts(remote.Port(), f.DPort) &&
		inPrefixes(local.Addr(), f.Src) && inPrefixes(remote.Addr(), f.Dst)
}

// knownFor is how long a connection seen in the namespace's table still
// places later changes of the same addresses there.
const knownFor = 2 * time.Minute

type tuple struct{ local, remote netip.AddrPort }

type since struct {
	state State
	at    time.Duration // monotonic; negative when unknown
}

// in is the time from s.at to now, zero when s.at is unknown.
func (s since) in(now time.Duration) time.Duration {
	if s.at < 0 {
		return 0
	}
	return now - s.at
}

// Watcher reports live state changes of a namespace's sockets: the
// inet_sock_set_state tracepoint through a private tracefs instance, and
// sock_diag snapshots for what the tracepoint does not show (entering and
// leaving TIME_WAIT). The tracepoint fires for every namespace; a change
// is kept when its local address belongs to the target namespace, or its
// connection is in the namespace's socket table. The tracepoint's PID is
// whoever ran at that moment, so processes come from sock_diag inodes.
type Watcher struct {
	host   *Host
	tr     *Tracer
	filter Filter
	procs  bool
	nsIno  uint64 // the target namespace's inode number
	own    bool   // the target is the caller's own namespace

	addrs  map[netip.Addr]bool // the namespace's own non-loopback addresses
	known  map[tuple]time.Time // connections seen in the namespace's table
	last   map[tuple]since     // each socket's current state and since when
	tw     map[tuple]since     // timewait sockets: FIN_WAIT2 or TIME_WAIT, since when (-1: before the watch)
	lost   int
	offset time.Duration // wall clock minus monotonic clock
}

// NewWatcher starts watching; procs asks for owning processes.
func NewWatcher(t Target, f Filter, procs bool) (*Watcher, error) {
	h, err := OpenHost(t)
	if err != nil {
		return nil, err
	}
	w := &Watcher{host: h, filter: f, procs: procs, own: t.Netns == "" && t.PID == 0,
		known: map[tuple]time.Time{}, last: map[tuple]since{}, tw: map[tuple]since{}}
	if err := w.readAddrs(); err != nil {
		h.Close()
		return nil, err
	}
	// Connections already there place their later changes here.
	err = h.Each(Filter{}, func(s *Socket) { w.known[tuple{s.Local, s.Remote}] = time.Now() })
	if err != nil {
		h.Close()
		return nil, err
	}
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	w.offset = time.Duration(time.Now().UnixNano()) - time.Duration(ts.Nano())
	// TIME_WAIT sockets already there: their end is reported, their start
	// is not known.
	if err := w.eachTimeWait(func(k tuple, sub State) { w.tw[k] = since{sub, -1} }); err != nil {
		h.Close()
		return nil, err
	}
	if w.tr, err = NewTracer(fmt.Sprintf("tcplab-%d-watch", os.Getpid()), TraceText); err != nil {
		h.Close()
		return nil, err
	}
	return w, nil
}

// Close stops the tracer and removes its instance.
func (w *Watcher) Close() error {
	err := w.tr.Close()
	w.host.Close()
	return err
}

// Lost is how many state changes the tracer dropped (ring buffer full).
func (w *Watcher) Lost() int { return w.lost }

func (w *Watcher) readAddrs() error {
	w.addrs = map[netip.Addr]bool{}
	return w.host.do(func() error {
		list, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return fmt.Errorf("network namespace: %w", err)
		}
		w.nsIno = st.Ino
		for _, a := range list {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLoopback() {
				w.addrs[ip.Unmap()] = true
			}
		}
		return nil
	})
}

// eachTimeWait lists the timewait sockets: those in TIME_WAIT, and
// orphans whose FIN_WAIT2 a timewait socket carries on (sock_diag reports
// that substate as their state).
// sock_diag filters a timewait socket by its substate, so FIN_WAIT2 is
// asked too; orphans (inode 0) of it are kept.
func (w *Watcher) eachTimeWait(fn func(tuple, State)) error {
	f := w.filter
	f.States = Mask(TimeWait, FinWait2)
	f.Info = false
	return w.host.Each(f, func(s *Socket) {
		if isTimewait(s) {
			fn(tuple{s.Local, s.Remote}, s.State)
		}
	})
}

// isTimewait tells a timewait socket: TIME_WAIT, or an orphan in FIN_WAIT2.
func isTimewait(s *Socket) bool {
	return s.State == TimeWait || s.State == FinWait2 && s.Inode == 0
}

func (w *Watcher) wall(mono time.Duration) time.Time {
	return time.Unix(0, int64(mono+w.offset))
}

// MonoNow reads CLOCK_MONOTONIC, the clock of the tracer's records.
func MonoNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// Poll returns the changes since the last call, oldest first.
func (w *Watcher) Poll() ([]Transition, error) {
	// Timewait sockets before the trace is read: every one of them was
	// made before the marker, so the change that made it is in this batch
	// or an earlier one. The second listing, after, is the newest word.
	before := map[tuple]State{}
	if err := w.eachTimeWait(func(k tuple, sub State) { before[k] = sub }); err != nil {
		return nil, err
	}
	if err := w.tr.Sync(2 * time.Second); err != nil {
		return nil, err
	}
	now := MonoNow()
	evs, lost := w.tr.Take()
	w.lost += lost
	// The namespace's table now: which connections are its own, and
	// their inodes for naming processes.
	table := map[tuple]Socket{}
	if len(evs) > 0 {
		f := w.filter
		f.States, f.Info = AllStates, false
		if err := w.host.Each(f, func(s *Socket) { table[tuple{s.Local, s.Remote}] = *s }); err != nil {
			return nil, err
		}
		for k := range table {
			w.known[k] = time.Now()
		}
	}
	for k, seen := range w.known {
		if time.Since(seen) > knownFor {
			delete(w.known, k)
		}
	}
	tw := map[tuple]State{}
	if len(evs) > 0 { // the table just listed holds them
		for k, s := range table {
			if isTimewait(&s) {
				tw[k] = s.State
			}
		}
	} else if err := w.eachTimeWait(func(k tuple, sub State) { tw[k] = sub }); err != nil {
		return nil, err
	}
	// Which changes are the namespace's: each on its own, then any change
	// of a connection that a later change in the batch places here (a
	// connect() made by a thread that has exited since).
	keep := make([]bool, len(evs))
	pidNS := map[int]uint64{}
	for i := range evs {
		keep[i] = w.mine(&evs[i], table, pidNS)
	}
	conns := map[tuple]bool{}
	for i := len(evs) - 1; i >= 0; i-- {
		k := tuple{evs[i].Local, evs[i].Remote}
		unbound := tuple{netip.AddrPortFrom(k.local.Addr(), 0), k.remote}
		if !keep[i] && (conns[k] || k.local.Port() == 0 && conns[unbound]) {
			keep[i] = true
		}
		if keep[i] {
			conns[k], conns[unbound] = true, true
		}
	}
	var out []Transition
	inodes := map[uint32]bool{}
	for i, ev := range evs {
		k := tuple{ev.Local, ev.Remote}
		if !keep[i] || !w.filter.Match(ev.Local, ev.Remote) {
			continue
		}
		t := Transition{At: w.wall(ev.At), Old: ev.Old, New: ev.New, Local: ev.Local, Remote: ev.Remote, Source: "trace"}
		// Before connect() picks a port the tracepoint shows port 0.
		pending := tuple{netip.AddrPortFrom(ev.Local.Addr(), 0), ev.Remote}
		if l, ok := w.last[k]; ok && l.state == ev.Old {
			t.InOld = ev.At - l.at
		} else if l, ok := w.last[pending]; ok && l.state == ev.Old {
			t.InOld = ev.At - l.at
			delete(w.last, pending)
		}
		// Entering TIME_WAIT, or an orphan's FIN_WAIT2, the full socket
		// goes to CLOSE and a timewait socket carries on in its place.
		if sub, ok := tw[k]; ok && ev.New == Close && (ev.Old == FinWait1 || ev.Old == FinWait2 || ev.Old == Closing) {
			if _, seen := w.tw[k]; !seen {
				if sub == FinWait2 && ev.Old == FinWait2 { // no change to show yet
					at := ev.At
					if l, ok := w.last[k]; ok && l.state == FinWait2 {
						at = l.at
					}
					w.tw[k] = since{FinWait2, at}
					continue
				}
				w.tw[k] = since{sub, ev.At}
				t.New = sub
			}
		}
		if t.New == Close {
			delete(w.last, k)
		} else {
			w.last[k] = since{t.New, ev.At}
		}
		if w.filter.States != 0 && !w.filter.States.Has(t.Old) && !w.filter.States.Has(t.New) {
			continue
		}
		if s, ok := table[k]; ok && s.Inode != 0 {
			inodes[s.Inode] = true
		}
		out = append(out, t)
	}
	// What only the snapshots show: timewait sockets the trace did not
	// explain, FIN_WAIT2 turning into TIME_WAIT, and their ends.
	for k, sub := range tw {
		old, seen := w.tw[k]
		switch {
		case !seen && before[k] == 0:
			// Made after the marker: its change comes with the next batch.
		case !seen && sub == FinWait2 && w.last[k].state == FinWait2:
			// An orphan in FIN_WAIT2, full socket or timewait: no change.
			w.tw[k] = w.last[k]
		case !seen:
			w.tw[k] = since{sub, now}
			out = append(out, w.snapshot(k, 0, sub, now, 0))
		case old.state != sub:
			w.tw[k] = since{sub, now}
			out = append(out, w.snapshot(k, old.state, sub, now, old.in(now)))
		}
	}
	for k, old := range w.tw {
		if _, ok := tw[k]; ok {
			continue
		}
		delete(w.tw, k)
		delete(w.last, k)
		out = append(out, w.snapshot(k, old.state, Close, now, old.in(now)))
	}
	if w.filter.States != 0 {
		kept := out[:0]
		for _, t := range out {
			if t.Source == "trace" || w.filter.States.Has(t.Old) || w.filter.States.Has(t.New) {
				kept = append(kept, t)
			}
		}
		out = kept
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	if w.procs && len(inodes) > 0 {
		owners := FindOwners(inodes, false)
		for i := range out {
			if s, ok := table[tuple{out[i].Local, out[i].Remote}]; ok {
				out[i].Processes = owners[s.Inode]
			}
		}
	}
	return out, nil
}

func (w *Watcher) snapshot(k tuple, old, new State, at, in time.Duration) Transition {
	return Transition{At: w.wall(at), Old: old, New: new, Local: k.local, Remote: k.remote, InOld: in, Source: "snapshot"}
}

// mine decides whether a traced change belongs to the target namespace:
// its connection is in the namespace's table (now or in the last two
// minutes) or was followed here before, its local address is one of the
// namespace's own, or it happened in process context in a process of
// that namespace. The same 4-tuple in two namespaces cannot be told
// apart. The PID only ever excludes: it is the task that ran,
// which in process context is the one making the call. A loopback
// connection in softirq context that comes and goes between two polls
// cannot be placed: watching one's own namespace it is shown, watching
// another it is left out.
func (w *Watcher) mine(ev *StateChange, table map[tuple]Socket, pidNS map[int]uint64) bool {
	k := tuple{ev.Local, ev.Remote}
	if _, ok := table[k]; ok {
		return true
	}
	if _, ok := w.known[k]; ok {
		return true
	}
	if _, ok := w.last[k]; ok {
		return true
	}
	if _, ok := w.last[tuple{netip.AddrPortFrom(k.local.Addr(), 0), k.remote}]; ok {
		return true
	}
	if w.addrs[k.local.Addr().Unmap()] {
		return true
	}
	var ino uint64
	if !ev.Softirq && ev.PID > 0 {
		var ok bool
		if ino, ok = pidNS[ev.PID]; !ok {
			var st unix.Stat_t
			if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", ev.PID), &st) == nil {
				ino = st.Ino
			}
			pidNS[ev.PID] = ino
		}
		if ino != 0 {
			return ino == w.nsIno
		}
	}
	// Nothing places it: a loopback socket whose thread has already gone.
	// Watching one's own namespace, take it as its own.
	a := k.local.Addr().Unmap()
	return w.own && (a.IsLoopback() || a.IsUnspecified())
}
