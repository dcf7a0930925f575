package inspect

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Transition is one state change of one socket. Old is zero when the
// watch did not see the socket's previous state. New is Reused ("reused")
// when a timewait socket (Old TIME_WAIT, or FIN_WAIT2 of an orphan) gave
// its 4-tuple to a new connection, whose own changes follow.
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
	// A reuse is "trace" when the new connection's change showed it,
	// "snapshot" when only listings did (its changes were lost).
	Source    string `json:"source"`
	Processes []Proc `json:"processes,omitempty"`
	// Reset says a change to CLOSE came of a reset the socket received.
	Reset bool `json:"reset,omitempty"`
	// pid is the thread that made the change in process context: a
	// system call on the socket (connect, close, shutdown), or the
	// owner's processing of what came while it held the socket. In
	// softirq the tracepoint's PID means nothing.
	pid int
	// fin says, for a close into TIME_WAIT, whether the full socket took
	// the peer's FIN (finTaken; its bytes_received counts it) or its
	// timewait successor did (finLater); finUnknown when the two came too
	// close to tell.
	fin int8
	// sk is the socket's kernel address (the tracepoint's skaddr).
	sk uint64
}

const (
	finUnknown int8 = iota
	finTaken
	finLater
)

// timewaitLen is TCP_TIMEWAIT_LEN: a timewait socket's timer runs this
// long from the FIN that put it in TIME_WAIT.
const timewaitLen = 60 * time.Second

// finMargin is how much later than the full socket's end the FIN must
// have come, by its timewait socket's timer, to have come to the timewait
// socket (timers count in jiffies, 10 ms at HZ=100).
const finMargin = 25 * time.Millisecond

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

// syncWait bounds how long Poll waits for the trace reader to reach the
// end of its listing; a reader still behind then is waited for at the
// next Poll.
const syncWait = time.Second

// holdGone is how long a timewait socket that left before its timer ran
// out waits for the connection that took its 4-tuple to show in the
// trace; after it, it is reported closed (a reset, or lost changes).
const holdGone = 3 * time.Second

// earlyBy is how much sooner than its timer a timewait socket must leave
// to have left early (expiry times come in milliseconds, and timers fire
// late, never early).
const earlyBy = 250 * time.Millisecond

// maxLookups bounds the sockets one Poll looks up one by one (about
// 20 us each) when its listing does not show them.
const maxLookups = 5000

// tuple is a connection's two ends, in a form without pointers: maps of
// them hash fast and the garbage collector does not scan them.
type tuple struct{ local, remote end }

type end struct {
	ip   [16]byte
	port uint16
	v4   bool // IPv4, not IPv4-mapped IPv6 (an AF_INET6 socket)
}

func endOf(a netip.AddrPort) end {
	return end{ip: a.Addr().As16(), port: a.Port(), v4: a.Addr().Is4()}
}

func (e end) addrPort() netip.AddrPort {
	a := netip.AddrFrom16(e.ip)
	if e.v4 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, e.port)
}

func (e end) loopback() bool { return netip.AddrFrom16(e.ip).Unmap().IsLoopback() }

func tupleOf(local, remote netip.AddrPort) tuple { return tuple{endOf(local), endOf(remote)} }

// unbound is the tuple as the tracepoint shows it before connect() picks
// the local port: port 0.
func (k tuple) unbound() tuple {
	k.local.port = 0
	return k
}

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

// timewait is a timewait socket the watch knows.
type timewait struct {
	since                 // TIME_WAIT, or FIN_WAIT2 of an orphan, since when
	expires time.Duration // when its timer runs out, as last listed (monotonic); 0 unknown
	gone    time.Duration // the listing it was first missing from, before its timer ran out; 0 while listed
	goneBy  time.Duration // when it was sure to be gone
	// born is when the timewait socket began (its close on the trace), or
	// the earliest it can have (an orphan's FIN_WAIT2); negative when
	// not known.
	born time.Duration
}

// listing is one sock_diag listing of the namespace, taken between s0 and
// s1 (monotonic).
type listing struct {
	s0, s1 time.Duration
	table  map[tuple]uint32 // inodes
	tw     map[tuple]timewait
	info   map[tuple]listed // what the sockets carried (Watcher.info)
}

// listed is what a listing shows of a full socket for life: its cookie
// and byte counts.
type listed struct {
	cookie uint64
	state  State
	counts byteCounts
}

// Watcher reports live state changes of a namespace's sockets: the
// inet_sock_set_state tracepoint through a private tracefs instance, and
// sock_diag listings for what the tracepoint does not show (entering and
// leaving TIME_WAIT). The tracepoint fires for every namespace; a change
// is kept when its local address belongs to the target namespace, or its
// connection is in the namespace's socket table. The tracepoint's PID is
// whoever ran at that moment, so processes come from sock_diag inodes.
//
// Each Poll lists the namespace's sockets, then places the changes
// stamped before the listing began, once the reader has read past its
// end: a closing change is told from entering TIME_WAIT by the listing
// after it, and a timewait socket whose 4-tuple a later change uses was
// reused. A reader that falls behind delays the changes (and says so)
// rather than misplacing them; changes the kernel dropped are counted.
type Watcher struct {
	host   *Host
	tr     *Tracer
	filter Filter
	procs  bool
	info   bool   // listings keep the sockets' cookies and byte counts
	nsIno  uint64 // the target namespace's inode number
	own    bool   // the target is the caller's own namespace

	addrs      map[netip.Addr]bool      // the namespace's own non-loopback addresses
	known      map[tuple]time.Duration  // connections seen in the namespace's table, when (monotonic)
	last       map[tuple]since          // each socket's current state and since when
	tw         map[tuple]timewait       // timewait sockets (at -1: there before the watch)
	queue      []StateChange            // read, stamped after the last listing began
	pending    *listing                 // the listing the reader has not passed yet
	behind     bool                     // the last Poll found the reader behind
	lookups    int                      // sockets Poll may still look up one by one
	through    time.Duration            // the start of the last listing placed
	queueLost  int                      // the tracer's queue drops already noted
	swept      time.Duration            // when known was last rid of old entries
	reuseAfter time.Duration            // the youngest timewait socket connect() takes over
	connects   map[uint64]time.Duration // socket address -> when its connect() began
	notes      []string
	lost       int
	offset     time.Duration // wall clock minus monotonic clock
	placed     *listing      // the last listing whose earlier changes have all been placed
	// quiet are the full sockets' ends that show no change (an orphan's
	// FIN_WAIT2 that a timewait socket carries on), for life (with info).
	quiet []Transition
}

// takeQuiet returns the ends without a change since the last call.
func (w *Watcher) takeQuiet() []Transition {
	q := w.quiet
	w.quiet = nil
	return q
}

// NewWatcher starts watching; procs asks for owning processes.
func NewWatcher(t Target, f Filter, procs bool) (*Watcher, error) {
	h, err := OpenHost(t)
	if err != nil {
		return nil, err
	}
	w := &Watcher{host: h, filter: f, procs: procs, own: t.Netns == "" && t.PID == 0,
		known: map[tuple]time.Duration{}, last: map[tuple]since{}, tw: map[tuple]timewait{}, connects: map[uint64]time.Duration{}}
	if err := w.readAddrs(); err != nil {
		h.Close()
		return nil, err
	}
	// Connections already there place their later changes here.
	now := MonoNow()
	err = h.Each(Filter{}, func(s *Socket) { w.known[tupleOf(s.Local, s.Remote)] = now })
	if err != nil {
		h.Close()
		return nil, err
	}
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	w.offset = time.Duration(time.Now().UnixNano()) - time.Duration(ts.Nano())
	// How old a timewait socket must be for connect() to take it over
	// (tcp_tw_reuse_delay, 1 s before Linux 6.13), less a margin.
	w.reuseAfter = time.Second
	_ = h.do(func() error {
		if v, err := readSysctl("net.ipv4.tcp_tw_reuse_delay"); err == nil && len(v) == 1 {
			w.reuseAfter = time.Duration(v[0]) * time.Millisecond
		}
		return nil
	})
	w.reuseAfter -= 50 * time.Millisecond
	// TIME_WAIT sockets already there: their end is reported, their start
	// is not known.
	l, err := w.list()
	if err != nil {
		h.Close()
		return nil, err
	}
	for k, tw := range l.tw {
		tw.at, tw.born = -1, -1
		w.tw[k] = tw
	}
	if w.tr, err = NewTracer(fmt.Sprintf("tcplab-%d-watch", os.Getpid()), TraceBinary); err != nil {
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

// Lost is how many state changes were dropped (the kernel's ring buffer
// full, or the reader's queue), in all.
func (w *Watcher) Lost() int { return w.lost }

// Behind says the last Poll found the trace reader behind the kernel:
// call Poll again without waiting.
func (w *Watcher) Behind() bool { return w.behind }

// Through is the time up to which Poll has returned every change (those
// still to come were stamped later); zero before the first.
func (w *Watcher) Through() time.Time {
	if w.through == 0 {
		return time.Time{}
	}
	return w.wall(w.through)
}

// Notes returns what the watcher has had to say since the last call: the
// trace reader falling behind, and catching up.
func (w *Watcher) Notes() []string {
	n := w.notes
	w.notes = nil
	return n
}

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

// list lists the namespace's sockets (the filter's, in every state), with
// the timewait sockets among them: those in TIME_WAIT, and orphans whose
// FIN_WAIT2 a timewait socket carries on (sock_diag reports that
// substate as their state).
func (w *Watcher) list() (*listing, error) {
	l := &listing{table: map[tuple]uint32{}, tw: map[tuple]timewait{}}
	f := w.filter
	f.States, f.Info = AllStates, w.info
	if w.info {
		l.info = map[tuple]listed{}
	}
	l.s0 = MonoNow()
	err := w.host.Each(f, func(s *Socket) {
		k := tupleOf(s.Local, s.Remote)
		l.table[k] = s.Inode
		if s.Info != nil && l.info != nil {
			l.info[k] = listed{s.Cookie, s.State, countsOf(s.Info)}
		}
		if isTimewait(s) {
			tw := timewait{since: since{s.State, -1}, born: -1}
			if s.Timer == 3 { // the timewait timer
				tw.expires = l.s0 + s.Expires
			}
			l.tw[k] = tw
		}
	})
	l.s1 = MonoNow()
	return l, err
}

// isTimewait tells a timewait socket: TIME_WAIT, or an orphan's FIN_WAIT2
// that a timewait socket carries on (its timer is the timewait timer; an
// orphan still a full socket, caught while its close was in progress, has
// the keepalive timer and changes on the tracepoint).
func isTimewait(s *Socket) bool {
	return s.State == TimeWait || s.State == FinWait2 && s.Inode == 0 && s.Timer == 3
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

func (w *Watcher) note(format string, args ...any) {
	w.notes = append(w.notes, fmt.Sprintf(format, args...))
}

// Poll returns the changes since the last call, oldest first. It waits
// for the reader at most a second; changes the reader has not read yet
// come with a later call.
func (w *Watcher) Poll() ([]Transition, error) {
	if w.pending == nil {
		l, err := w.list()
		if err != nil {
			return nil, err
		}
		w.pending = l
	}
	l := w.pending
	wait := syncWait
	if w.behind { // there is work to do meanwhile
		wait = 50 * time.Millisecond
	}
	caught := w.tr.WaitPast(l.s1, wait)
	if !caught {
		if err := w.tr.Err(); err != nil {
			return nil, err
		}
	}
	horizon := w.tr.Horizon()
	evs, lost := w.tr.Take()
	w.lost += lost
	if q := w.tr.QueueLost(); q > w.queueLost {
		w.note("watch fell behind and dropped %d changes it had read (its queue holds %d)", q-w.queueLost, maxQueue)
		w.queueLost = q
	}
	if len(w.queue) == 0 {
		w.queue = evs
	} else {
		w.queue = append(w.queue, evs...)
	}
	byAt := func(a, b StateChange) int { return cmp.Compare(a.At, b.At) }
	if !slices.IsSortedFunc(w.queue, byAt) {
		slices.SortStableFunc(w.queue, byAt)
	}
	// Changes before the listing are placed once read; what only the
	// listing shows, once the reader has passed its end.
	cut := l.s0
	if !caught {
		cut = min(cut, horizon)
	}
	n := sort.Search(len(w.queue), func(i int) bool { return w.queue[i].At >= cut })
	w.lookups = maxLookups
	out := w.place(w.queue[:n], w.queue[n:], l)
	if caught {
		// Changes during the listing explain what it shows of them.
		during := map[tuple]bool{}
		for _, ev := range w.queue[n:] {
			if ev.At >= l.s1 {
				break
			}
			during[tupleOf(ev.Local, ev.Remote)] = true
		}
		out = w.reconcile(out, l, during)
		w.pending = nil
		w.placed = l
		w.through = l.s0
	} else if cut > w.through {
		w.through = cut
	}
	if w.lookups <= 0 {
		w.note("more than %d sockets to look up one by one: some TIME_WAIT starts and ends come from the listing only", maxLookups)
	}
	w.queue = append([]StateChange(nil), w.queue[n:]...)
	switch {
	case !caught && !w.behind:
		w.note("the trace reader is %v behind the kernel: changes will come late", (MonoNow() - horizon).Round(time.Millisecond))
		w.behind = true
	case caught && w.behind:
		w.note("the trace reader has caught up")
		w.behind = false
	}
	return w.finish(out, l), nil
}

// place turns changes stamped before listing l into transitions. after
// are the changes read since: they may place earlier ones.
func (w *Watcher) place(evs, after []StateChange, l *listing) []Transition {
	// The batch's connections, each once: which are the namespace's (each
	// on its own, then every connection another change places here, in
	// this batch or read after it: a connect() made by a thread that has
	// exited since; changes in softirq before the owner's close() in
	// process context), and how many changes each has left.
	type batchConn struct {
		k             tuple
		local, remote netip.AddrPort
		evidence      uint8
		placed        bool
		rest          int32
	}
	idx := make(map[tuple]int32, len(evs)/4+1)
	var conns []batchConn
	ent := make([]int32, len(evs))
	pidNS := map[int]uint64{}
	evidence := func(ev *StateChange) uint8 {
		switch ino := threadNS(ev, pidNS); ino {
		case 0:
			return 0
		case w.nsIno:
			return inThis
		}
		return inOther
	}
	for i := range evs {
		k := tupleOf(evs[i].Local, evs[i].Remote)
		j, ok := idx[k]
		if !ok {
			j = int32(len(conns))
			idx[k] = j
			conns = append(conns, batchConn{k: k, local: evs[i].Local, remote: evs[i].Remote})
		}
		ent[i] = j
		conns[j].evidence |= evidence(&evs[i])
	}
	// A loopback connection's two ends are in one namespace: their
	// evidence is shared.
	mirror := func(k tuple) (int32, bool) {
		if !k.local.loopback() || !k.remote.loopback() {
			return 0, false
		}
		j, ok := idx[tuple{k.remote, k.local}]
		return j, ok
	}
	var later map[tuple]bool // connections after the batch that may place its connects
	for i := range after {
		ev := &after[i]
		e := evidence(ev)
		k := tupleOf(ev.Local, ev.Remote)
		if j, ok := idx[k]; ok {
			conns[j].evidence |= e
		} else if _, ok := idx[k.unbound()]; ok && k.local.port != 0 {
			if later == nil {
				later = map[tuple]bool{}
			}
			later[k] = later[k] || w.mine(k, ev.Local, l.table, e)
		}
		if j, ok := mirror(k); ok {
			conns[j].evidence |= e
		}
	}
	placedUnbound := map[tuple]bool{}
	for k, mine := range later {
		if mine {
			placedUnbound[k.unbound()] = true
		}
	}
	for j := range conns {
		c := &conns[j]
		e := c.evidence
		if m, ok := mirror(c.k); ok {
			e |= conns[m].evidence
		}
		if c.placed = w.mine(c.k, c.local, l.table, e); c.placed && c.k.local.port != 0 {
			placedUnbound[c.k.unbound()] = true
		}
	}
	for j := range conns {
		c := &conns[j]
		c.placed = (c.placed || c.k.local.port == 0 && placedUnbound[c.k]) && w.filter.Match(c.local, c.remote)
	}
	for _, j := range ent {
		if conns[j].placed {
			conns[j].rest++
		}
	}
	out := make([]Transition, 0, len(evs)+len(evs)/8)
	for i, ev := range evs {
		c := &conns[ent[i]]
		if !c.placed {
			continue
		}
		k := c.k
		c.rest--
		closing := ev.New == Close && (ev.Old == FinWait1 || ev.Old == FinWait2 || ev.Old == Closing)
		if tw, ok := w.tw[k]; ok {
			if tw.at >= 0 && ev.At <= tw.at {
				// Stamped before the timewait socket began, read late: its
				// close was shown from a listing already.
				if closing {
					continue
				}
			} else {
				// A new socket has the 4-tuple: the timewait socket is
				// gone. connect() takes one over only once it is
				// tcp_tw_reuse_delay old, unless bound to its port first
				// (its first change then shows the port); a SYN to a
				// listener may take one at any age. A younger one had
				// ended already: a reset ends a timewait socket and fires
				// nothing. And connect() takes one over as it starts: one
				// that a listing missed before the connect() had ended.
				delete(w.tw, k)
				end, at := Reused, ev.At
				connectAt, connecting := w.connects[ev.Skaddr]
				switch {
				case ev.Old == SynSent && tw.born >= 0 && ev.At-tw.born < w.reuseAfter:
					end = Close
				case tw.gone != 0 && connecting && connectAt > tw.goneBy:
					end, at = Close, tw.gone
				}
				out = append(out, Transition{At: w.wall(at), Old: tw.state, New: end, Local: ev.Local, Remote: ev.Remote,
					InOld: tw.in(at), Source: "trace"})
			}
		}
		// When each connect() began, by socket, until its first change
		// with its port.
		if ev.Skaddr != 0 {
			switch {
			case ev.Old == Close && ev.New == SynSent:
				if len(w.connects) > 1<<16 { // connects never seen again
					clear(w.connects)
				}
				w.connects[ev.Skaddr] = ev.At
			case ev.Old == SynSent: // read above, for a reuse
				delete(w.connects, ev.Skaddr)
			}
		}
		t := Transition{At: w.wall(ev.At), Old: ev.Old, New: ev.New, Local: ev.Local, Remote: ev.Remote, Source: "trace", Reset: ev.Reset, sk: ev.Skaddr}
		if !ev.Softirq && ev.PID > 0 {
			t.pid = ev.PID
		}
		// Before connect() picks a port the tracepoint shows port 0.
		pending := k.unbound()
		if l, ok := w.last[k]; ok && l.state == ev.Old {
			t.InOld = ev.At - l.at
		} else if l, ok := w.last[pending]; ok && l.state == ev.Old {
			t.InOld = ev.At - l.at
			delete(w.last, pending)
		}
		// Entering TIME_WAIT, or an orphan's FIN_WAIT2, the full socket
		// goes to CLOSE and a timewait socket carries on in its place:
		// the listing after says so, or a later connection on the same
		// 4-tuple before it, which only reusing the timewait socket
		// allows, unless the close was a reset.
		cur, listed := l.tw[k]
		if closing && !listed && c.rest == 0 && !ev.Reset {
			// A listing of a changing table can miss a socket: ask for
			// it. A full socket there now took a 4-tuple left free.
			cur, listed = w.lookup(k)
			listed = listed && cur.state != 0
		}
		if closing && !ev.Reset && (c.rest > 0 || listed) {
			switch {
			case c.rest > 0:
				w.tw[k] = timewait{since: since{TimeWait, ev.At}, born: ev.At}
				t.New = TimeWait
			case cur.state == FinWait2 && ev.Old == FinWait2: // no change to show yet; no FIN taken
				at := ev.At
				if l, ok := w.last[k]; ok && l.state == FinWait2 {
					at = l.at
				}
				w.tw[k] = timewait{since: since{FinWait2, at}, expires: cur.expires, born: at}
				if w.info && len(w.quiet) < 1<<16 {
					// For life: the full socket ended here.
					t.New, t.fin = Close, finLater
					w.quiet = append(w.quiet, t)
				}
				continue
			default:
				w.tw[k] = timewait{since: since{cur.state, ev.At}, expires: cur.expires, born: ev.At}
				t.New = cur.state
				// A timewait socket born in FIN_WAIT2 took the FIN
				// later, and its timer restarted then.
				// A full socket that stayed in FIN_WAIT2 was not an
				// orphan (those end as FIN_WAIT2 begins): it waited for
				// the FIN, and took it.
				switch {
				case cur.state == FinWait2:
					t.fin = finLater
				case cur.expires > 0 && cur.expires-timewaitLen > ev.At+finMargin:
					t.fin = finLater
				case ev.Old == FinWait2 && t.InOld >= finMargin:
					t.fin = finTaken
				}
			}
		}
		if t.New == Close {
			delete(w.last, k)
		} else {
			w.last[k] = since{t.New, ev.At}
		}
		out = append(out, t)
	}
	return out
}

// reconcile adds to out what only listing l shows, once every change
// before it has been placed: timewait sockets the trace did not explain,
// FIN_WAIT2 turning into TIME_WAIT, and their ends. during are the
// connections that changed while it was taken.
func (w *Watcher) reconcile(out []Transition, l *listing, during map[tuple]bool) []Transition {
	now := l.s0
	// Timewait sockets place their 4-tuples through w.tw.
	for k := range l.table {
		if _, tw := l.tw[k]; !tw {
			w.known[k] = now
		}
	}
	if now-w.swept > 10*time.Second {
		w.swept = now
		for k, seen := range w.known {
			if now-seen > knownFor {
				delete(w.known, k)
			}
		}
	}
	for k, cur := range l.tw {
		if during[k] {
			continue // changed during the listing: the next batch explains it
		}
		old, seen := w.tw[k]
		if seen && old.gone != 0 {
			// Gone and back: a connection took the 4-tuple and ended in
			// TIME_WAIT again, its changes lost.
			delete(w.tw, k)
			out = append(out, w.snapshot(k, old.state, Reused, old.gone, old.in(old.gone)))
			seen = false
		}
		switch {
		case !seen && cur.state == FinWait2 && w.last[k].state == FinWait2:
			// An orphan's FIN_WAIT2 that a timewait socket carries on, its
			// close not seen: no change to show.
			w.tw[k] = timewait{since: w.last[k], expires: cur.expires, born: w.last[k].at}
		case !seen:
			// Its change was lost, or not placed here.
			w.tw[k] = timewait{since: since{cur.state, now}, expires: cur.expires, born: -1}
			out = append(out, w.snapshot(k, 0, cur.state, now, 0))
		case old.state != cur.state:
			w.tw[k] = timewait{since: since{cur.state, now}, expires: cur.expires, born: old.born}
			out = append(out, w.snapshot(k, old.state, cur.state, now, old.in(now)))
		default:
			old.expires = cur.expires
			w.tw[k] = old
		}
	}
	for k, old := range w.tw {
		if _, ok := l.tw[k]; ok || during[k] {
			continue // still there, or taken during the listing: the next batch says
		}
		if cur, there := w.lookup(k); there {
			// Missed by the listing; or a full socket that took the
			// 4-tuple, whose changes come with the next batch.
			if cur.state != 0 {
				old.expires = cur.expires
				w.tw[k] = old
			}
			continue
		}
		at := now
		if old.expires > 0 && l.s1 < old.expires-earlyBy {
			// Gone before its timer ran out: reused, by a connection whose
			// first change on the 4-tuple may come later (a SYN_SENT
			// answered after a round trip), or reset.
			if old.gone == 0 {
				// Missing from the listing and from a lookup after it: gone
				// by the time of the lookup, at the latest.
				old.gone, old.goneBy = now, MonoNow()
				w.tw[k] = old
				continue
			}
			if now-old.gone < holdGone {
				continue
			}
			at = old.gone
		}
		delete(w.tw, k)
		delete(w.last, k)
		out = append(out, w.snapshot(k, old.state, Close, at, old.in(at)))
	}
	return out
}

// finish applies the state filter, orders the changes and names their
// processes.
func (w *Watcher) finish(out []Transition, l *listing) []Transition {
	if w.filter.States != 0 {
		kept := out[:0]
		for _, t := range out {
			if w.filter.States.Has(t.Old) || w.filter.States.Has(t.New) {
				kept = append(kept, t)
			}
		}
		out = kept
	}
	byAt := func(a, b Transition) int { return a.At.Compare(b.At) }
	if !slices.IsSortedFunc(out, byAt) {
		slices.SortStableFunc(out, byAt)
	}
	if w.procs {
		inodes := map[uint32]bool{}
		for _, t := range out {
			if s, ok := l.table[tupleOf(t.Local, t.Remote)]; ok && s != 0 {
				inodes[s] = true
			}
		}
		if len(inodes) > 0 {
			owners := FindOwners(inodes, false)
			for i := range out {
				if s, ok := l.table[tupleOf(out[i].Local, out[i].Remote)]; ok {
					out[i].Processes = owners[s]
				}
			}
		}
	}
	return out
}

// lookup asks sock_diag for the socket with k's ends: there says whether
// there is one, and tw is its timewait state (zero for a full socket).
func (w *Watcher) lookup(k tuple) (tw timewait, there bool) {
	if w.lookups <= 0 {
		return tw, false
	}
	w.lookups--
	s, found, err := w.host.Lookup(k.local.addrPort(), k.remote.addrPort())
	if err != nil || !found {
		return tw, false
	}
	if isTimewait(&s) {
		tw = timewait{since: since{s.State, -1}, born: -1}
		if s.Timer == 3 {
			tw.expires = MonoNow() + s.Expires
		}
	}
	return tw, true
}

func (w *Watcher) snapshot(k tuple, old, new State, at, in time.Duration) Transition {
	return Transition{At: w.wall(at), Old: old, New: new, Local: k.local.addrPort(), Remote: k.remote.addrPort(), InOld: in, Source: "snapshot"}
}

// Evidence a connection's changes give of its namespace: the namespace
// of the thread that made a change in process context.
const (
	inThis  = 1 << iota // a thread of the watched namespace
	inOther             // a thread of another namespace
)

// threadNS is the namespace of the thread that made a change in process
// context, 0 when unknown. A thread's namespace is read after the fact,
// and threads move (a Go program's do, and its runtime reuses them), so
// it counts only when the thread is there now and was in the same
// namespace when the reader read the record.
func threadNS(ev *StateChange, pidNS map[int]uint64) uint64 {
	if ev.Softirq || ev.PID <= 0 {
		return 0
	}
	ino, ok := pidNS[ev.PID]
	if !ok {
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", ev.PID), &st) == nil {
			ino = st.Ino
		}
		pidNS[ev.PID] = ino
	}
	if ev.NetNS != 0 && ev.NetNS != ino {
		return 0
	}
	return ino
}

// mine decides whether a traced change belongs to the target namespace:
// its connection is in the namespace's table (now or in the last two
// minutes) or was followed here before, its local address is one of the
// namespace's own, or the threads that changed it in process context
// (evidence; a loopback connection's two ends share it) were all of that
// namespace (see threadNS; a
// connection that threads of two namespaces changed is placed by the
// table only). The same 4-tuple in two namespaces cannot be told apart.
// A loopback connection that comes and goes between two polls, changed
// in softirq context or by threads gone since, cannot be placed:
// watching one's own namespace it is shown, watching another it is left
// out.
func (w *Watcher) mine(k tuple, local netip.AddrPort, table map[tuple]uint32, evidence uint8) bool {
	if _, ok := table[k]; ok {
		return true
	}
	if _, ok := w.known[k]; ok {
		return true
	}
	if _, ok := w.tw[k]; ok {
		return true
	}
	if _, ok := w.last[k]; ok {
		return true
	}
	if _, ok := w.last[k.unbound()]; ok {
		return true
	}
	if w.addrs[local.Addr().Unmap()] {
		return true
	}
	switch evidence {
	case inThis:
		return true
	case 0:
		// Nothing places it: a loopback socket whose thread has already
		// gone. Watching one's own namespace, take it as its own.
		a := local.Addr().Unmap()
		return w.own && (a.IsLoopback() || a.IsUnspecified())
	}
	return false
}
