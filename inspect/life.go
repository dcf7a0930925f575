package inspect

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
	"unsafe"
)

// Life is one connection's life, told when it ends: when its socket
// leaves for TIME_WAIT or CLOSE, or is freed.
type Life struct {
	// Start is its first change (CLOSE to SYN_SENT or SYN_RECV); zero
	// when it began before the watch, or its first changes were lost.
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end"`
	// Duration is End less Start, zero when Start is not known.
	Duration time.Duration  `json:"duration_ns,omitempty"`
	Local    netip.AddrPort `json:"local"`
	Remote   netip.AddrPort `json:"remote"`
	// Opened is "active" (this end called connect) or "passive" (a
	// listener's), empty when not seen.
	Opened    string `json:"opened,omitempty"`
	Processes []Proc `json:"processes,omitempty"`
	// BytesSent are the data bytes this end sent (each once, not
	// counting retransmissions); BytesReceived those it received in
	// order. Neither counts SYN or FIN.
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	// Bytes says where the counts come from: "final" (the socket's
	// tcp_info as the kernel freed it), "listed" (the last listing that
	// showed the socket: at least that many), or "" (none known).
	Bytes string `json:"bytes,omitempty"`
	// ReceivedAtLeast says BytesReceived may be one short: the peer's FIN
	// came within milliseconds of the socket's end, and the kernel does
	// not tell whether the socket counted it or its timewait successor
	// took it.
	ReceivedAtLeast bool `json:"received_at_least,omitempty"`
	// Final is the last state the connection reached before it ended:
	// TIME_WAIT for the end that closed first, LAST_ACK for the other,
	// the state a reset found it in, SYN_SENT for a refused connect. Zero
	// when unknown (only the freed socket was seen).
	Final State `json:"final,omitempty"`
	// ClosedFirst says which end began the close: "local" (this end sent
	// the first FIN), "remote", "both" (simultaneous close), "reset" (a
	// reset from the peer ended it before any FIN) or "abort" (it ended
	// without FIN or reset received: this end reset it, or gave up
	// retransmitting). Empty when unknown.
	ClosedFirst string `json:"closed_first,omitempty"`
	// Reset says its end came of a reset it received.
	Reset  bool   `json:"reset,omitempty"`
	Cookie uint64 `json:"cookie,omitempty"`
}

// byteCounts are the tcp_info counts a life's bytes come from.
type byteCounts struct {
	sent, retrans, received uint64
}

func countsOf(ti *tcpInfo) byteCounts {
	return byteCounts{ti.Bytes_sent, ti.Bytes_retrans, ti.Bytes_received}
}

// How long the tracker waits: for the socket of a connection that ended
// to be freed (its final counts), and for the changes before a freed
// socket to be read.
const (
	freeWait   = time.Second
	changeWait = 3 * time.Second
	// goneAfter is how long an open connection may be missing from every
	// listing before it is told as ended unseen (its changes lost).
	goneAfter = 5 * time.Second
	// connectFor bounds how long a connect() that never showed its port
	// is followed (a SYN_SENT gives up after tcp_syn_retries, 127 s by
	// default).
	connectFor = 10 * time.Minute
	// doneFor is how long a told connection's cookie (or 4-tuple, when
	// its cookie was never seen) drops a late freed socket of its own.
	doneFor = 10 * time.Minute
	maxDone = 1 << 16
)

// lifeRec is a connection being followed.
type lifeRec struct {
	Life
	state   State      // its current state
	fin     int8       // whether bytes_received counts the peer's FIN (finTaken, ...)
	ended   time.Time  // when the tracker learned it ended (wall); zero while open
	closed  bool       // it ended by a change to CLOSE other than a close's last step: a disconnect may clear its freed socket's ends
	freed   bool       // its socket was freed
	counts  byteCounts // final, from the freed socket
	listed  listed     // as last listed
	pids    []int      // threads seen making its calls (connect, close)
	procs   []Proc     // their processes
	absent  time.Time  // first complete listing it was missing from, while open
	changed time.Time  // when its last change was learned
	sk      uint64     // its socket's kernel address, while connect() has not shown its port
}

// freedSock is a socket the kernel freed, waiting for its changes to be
// read.
type freedSock struct {
	local, remote netip.AddrPort
	cookie        uint64
	counts        byteCounts
	known         bool      // counts holds what the kernel counted
	at            time.Time // read (wall)
}

// partEnds is what a freed socket keeps of its ends in every case.
type partEnds struct {
	lport uint16
	raddr [16]byte
}

func partOf(local, remote netip.AddrPort) partEnds {
	return partEnds{local.Port(), remote.Addr().Unmap().As16()}
}

// lifeTracker turns transitions and freed sockets into lives. It is the
// logic of LifeWatcher without the kernel, so that tests can drive it.
type lifeTracker struct {
	filter Filter
	open   map[tuple]*lifeRec   // connections not ended, by their ends
	pend   map[uint64]*lifeRec  // connects not showing their port yet, by socket
	ended  map[tuple][]*lifeRec // ended, waiting for their sockets to be freed
	// byEnds finds ended connections by their local port and remote
	// address: a socket freed after a disconnect or a failed connect has
	// its remote port, and maybe its local address, cleared.
	byEnds  map[partEnds][]*lifeRec
	freed   []freedSock          // freed, waiting for their changes
	cookies map[uint64]time.Time // told connections' cookies: their freed sockets are dropped
	tuples  map[tuple]time.Time  // told connections without a cookie, likewise
	swept   time.Time
	comm    func(tid int) (Proc, bool)
}

func newLifeTracker(f Filter) *lifeTracker {
	return &lifeTracker{filter: f, open: map[tuple]*lifeRec{}, pend: map[uint64]*lifeRec{}, ended: map[tuple][]*lifeRec{},
		byEnds: map[partEnds][]*lifeRec{}, cookies: map[uint64]time.Time{}, tuples: map[tuple]time.Time{}, comm: procOfThread}
}

// changes applies a Poll's transitions, learned at now.
func (lt *lifeTracker) changes(ts []Transition, now time.Time) {
	for i := range ts {
		t := &ts[i]
		k := tupleOf(t.Local, t.Remote)
		var r *lifeRec
		switch {
		case t.Local.Port() == 0 && t.sk != 0:
			// Before connect() picks the port: followed by socket.
			r = lt.pend[t.sk]
		case t.Old == SynSent && t.sk != 0 && lt.pend[t.sk] != nil:
			// connect() picked the port after its first change.
			r = lt.pend[t.sk]
			delete(lt.pend, t.sk)
			r.Local, r.sk = t.Local, 0
			if o := lt.open[k]; o != nil {
				lt.end(o, o.state, t.At, now) // its end was lost
			}
			lt.open[k] = r
		case t.Old == SynSent && t.sk == 0 && t.Local.Port() != 0 && lt.open[k] == nil && lt.open[k.unbound()] != nil:
			// The same, without the socket's address: by its ends.
			r = lt.open[k.unbound()]
			delete(lt.open, k.unbound())
			r.Local = t.Local
			lt.open[k] = r
		default:
			r = lt.open[k]
		}
		if t.Source != "trace" {
			// Listings only show timewait sockets coming and going: a
			// connection still open here went to TIME_WAIT unseen.
			if r != nil && t.New == TimeWait {
				lt.end(r, TimeWait, t.At, now)
			}
			continue
		}
		if t.New == Listen || t.New == Reused || t.Old == TimeWait || t.Remote.Port() == 0 {
			continue // listeners; timewait sockets
		}
		born := t.Old == Close || t.Old == Listen // a listener's new connection shows its parent's LISTEN, copied
		if r != nil && born {
			lt.end(r, r.state, t.At, now) // a new socket on the 4-tuple: the old one's end was lost
			r = nil
		}
		if r == nil {
			if !born && len(lt.ended[k]) > 0 {
				continue // a late change of an ended connection
			}
			r = &lifeRec{Life: Life{Local: t.Local, Remote: t.Remote}, state: t.Old}
			if born {
				r.Start, r.state = t.At, 0
			} else {
				// Begun before the watch, or its changes lost: what its
				// state says of the close so far.
				switch t.Old {
				case FinWait1, FinWait2:
					r.ClosedFirst = "local"
				case CloseWait, LastAck:
					r.ClosedFirst, r.fin = "remote", finTaken
				case Closing:
					r.ClosedFirst, r.fin = "both", finTaken
				}
			}
			delete(lt.tuples, k)
			if t.Local.Port() == 0 && t.sk != 0 {
				r.sk = t.sk
				if len(lt.pend) >= maxDone {
					lt.sweepPending(now, true)
				}
				lt.pend[t.sk] = r
			} else {
				lt.open[k] = r
			}
		}
		r.changed = now
		r.absent = time.Time{}
		switch {
		case t.New == SynSent || t.Old == SynSent:
			r.Opened = "active"
		case t.New == SynRecv || t.Old == SynRecv:
			if r.Opened == "" {
				r.Opened = "passive"
			}
		}
		if len(t.Processes) > 0 && len(r.Processes) == 0 {
			r.Processes = t.Processes
		}
		if t.pid > 0 && !slices.Contains(r.pids, t.pid) && len(r.pids) < 4 {
			// Named now, while the thread is likely still there.
			r.pids = append(r.pids, t.pid)
			if p, ok := lt.comm(t.pid); ok && !slices.ContainsFunc(r.procs, func(q Proc) bool { return q.PID == p.PID }) {
				r.procs = append(r.procs, p)
			}
		}
		switch t.New {
		case FinWait1:
			r.closedFirst("local")
		case CloseWait:
			r.closedFirst("remote")
			r.fin = finTaken
		case Closing:
			r.ClosedFirst = "both"
			r.fin = finTaken
		case TimeWait:
			// From FIN_WAIT1 straight: the peer's FIN came with its ACK
			// of ours.
			r.closedFirst("local")
			if r.fin != finTaken {
				r.fin = t.fin
			}
		case LastAck:
			r.fin = finTaken
		}
		switch t.New {
		case Close:
			if t.Old == FinWait2 && t.fin == finLater {
				// An orphan's socket freed as FIN_WAIT2 began, its
				// timewait successor waiting for the peer's FIN.
				r.closedFirst("local")
				r.fin = finLater
				lt.end(r, FinWait2, t.At, now)
				continue
			}
			if t.Reset {
				r.Reset = true
				r.closedFirst("reset")
			} else {
				r.closedFirst("abort")
			}
			r.closed = t.Old != LastAck && t.Old != Closing && t.Old != FinWait2
			lt.end(r, t.Old, t.At, now)
		case TimeWait:
			final := TimeWait
			if r.fin == finLater {
				// The socket ended as FIN_WAIT2 began; its timewait
				// successor took the FIN: told alike however soon the
				// listing came.
				final = FinWait2
			}
			lt.end(r, final, t.At, now)
		default:
			r.state = t.New
		}
	}
}

func (r *lifeRec) closedFirst(who string) {
	if r.ClosedFirst == "" {
		r.ClosedFirst = who
	}
}

// end moves a connection to those waiting for their sockets to be freed.
func (lt *lifeTracker) end(r *lifeRec, final State, at, now time.Time) {
	k := tupleOf(r.Local, r.Remote)
	if r.sk != 0 {
		delete(lt.pend, r.sk)
		r.sk = 0
	} else if lt.open[k] == r {
		delete(lt.open, k)
	}
	r.Final, r.End, r.ended = final, at, now
	lt.ended[k] = append(lt.ended[k], r)
	p := partOf(r.Local, r.Remote)
	lt.byEnds[p] = append(lt.byEnds[p], r)
}

// forget drops a told connection from byEnds.
func (lt *lifeTracker) forget(r *lifeRec) {
	p := partOf(r.Local, r.Remote)
	rs := slices.DeleteFunc(lt.byEnds[p], func(x *lifeRec) bool { return x == r })
	if len(rs) == 0 {
		delete(lt.byEnds, p)
	} else {
		lt.byEnds[p] = rs
	}
}

// sweepPending drops connects followed for longer than connectFor (their
// later changes lost), or the oldest half when all is set.
func (lt *lifeTracker) sweepPending(now time.Time, all bool) {
	for sk, r := range lt.pend {
		if now.Sub(r.changed) > connectFor || all && len(lt.pend) > maxDone/2 {
			delete(lt.pend, sk)
		}
	}
}

// listed updates open connections from a listing whose earlier changes
// have all been applied: their cookies and counts so far, and whether
// they are still there.
func (lt *lifeTracker) listed(l *listing, now time.Time) {
	if l == nil || l.info == nil {
		return
	}
	for k, r := range lt.open {
		if k.local.port == 0 {
			continue // a connect() not showing its port: no listing has it so
		}
		s, ok := l.info[k]
		if _, tw := l.tw[k]; !ok && !tw {
			if r.absent.IsZero() && r.changed.Before(now) {
				r.absent = now
			}
			continue
		}
		r.absent = time.Time{}
		if ok && (r.Cookie == 0 || r.Cookie == s.cookie) { // else another socket took the 4-tuple
			r.Cookie, r.listed, r.Bytes = s.cookie, s, "listed"
		}
	}
}

// tcpInfoCounted is how much of tcp_info holds the counts (Linux 4.19
// added bytes_sent and bytes_retrans).
var tcpInfoCounted = int(unsafe.Offsetof(tcpInfo{}.Bytes_retrans) + unsafe.Sizeof(tcpInfo{}.Bytes_retrans))

// freedSocket notes a socket the kernel freed, read at now.
func (lt *lifeTracker) freedSocket(s *Socket, now time.Time) {
	if s.Info == nil || s.Remote.Addr().Unmap().IsUnspecified() || s.Local.Port() == 0 {
		return // a listener, or a socket that never connected
	}
	if s.Remote.Port() != 0 && !lt.filter.Match(s.Local, s.Remote) {
		return // (a cleared one is matched against connections that passed)
	}
	f := freedSock{local: s.Local, remote: s.Remote, cookie: s.Cookie, at: now}
	// A disconnect (an abort with SO_LINGER 0, a failed connect) clears the
	// remote port and zeroes the counts as well.
	if s.Remote.Port() != 0 && (s.infoLen == 0 || s.infoLen >= tcpInfoCounted) {
		f.counts, f.known = countsOf(s.Info), true
	}
	lt.freed = append(lt.freed, f)
}

// due returns the lives that can be told at now, the changes through
// through applied. While behind (the trace reader late), nothing is given
// up on for lack of changes. With flush, nothing waits any longer.
func (lt *lifeTracker) due(now, through time.Time, behind, flush bool) []Life {
	var out []Life
	// Freed sockets, once the changes before them are in (or waited for
	// long enough): a socket is freed after its end, so an ended
	// connection takes it first.
	keep := lt.freed[:0]
	for _, f := range lt.freed {
		if !flush && through.Before(f.at) && (behind || now.Sub(f.at) < changeWait) {
			keep = append(keep, f)
			continue
		}
		if _, told := lt.cookies[f.cookie]; told && f.cookie != 0 {
			continue // freed long after its end, told already
		}
		k := tupleOf(f.local, f.remote)
		r := lt.freedOf(f, k)
		if r == nil && f.remote.Port() != 0 {
			if o := lt.open[k]; o != nil && o.state == FinWait2 && (o.Cookie == 0 || o.Cookie == f.cookie) {
				// Freed before ending on the trace: an orphan's FIN_WAIT2
				// that a timewait socket carries on, the listing that
				// shows it missed.
				r = o
				lt.end(r, FinWait2, f.at, now)
			}
		}
		if r == nil {
			if _, told := lt.tuples[k]; told || f.remote.Port() == 0 {
				continue // told already; or cleared and not known: its ends are lost
			}
			// Only the freed socket was seen: its changes were lost, or it
			// made none while watched.
			r = &lifeRec{Life: Life{Local: f.local, Remote: f.remote}}
			lt.end(r, 0, f.at, now)
		}
		r.Cookie, r.freed = f.cookie, true
		if f.known {
			r.counts, r.Bytes = f.counts, "final"
		} else if r.Final == SynSent {
			// Never connected: nothing sent or received.
			r.counts, r.Bytes = byteCounts{}, "final"
		}
	}
	lt.freed = keep
	for _, r := range lt.open {
		if !flush && !behind && !r.absent.IsZero() && now.Sub(r.absent) >= goneAfter {
			// Gone from the listings, its end not seen.
			lt.end(r, r.state, r.absent, now)
		}
	}
	if len(lt.pend) > 0 && now.Sub(lt.swept) > 10*time.Second {
		lt.sweepPending(now, false)
	}
	for k, rs := range lt.ended {
		left := rs[:0]
		for _, r := range rs {
			if !flush && !r.freed && now.Sub(r.ended) < freeWait {
				left = append(left, r)
				continue
			}
			if r.Cookie != 0 {
				lt.cookies[r.Cookie] = now
			} else {
				lt.tuples[k] = now
			}
			lt.forget(r)
			out = append(out, lt.told(r))
		}
		if len(left) == 0 {
			delete(lt.ended, k)
		} else {
			lt.ended[k] = left
		}
	}
	if len(lt.cookies)+len(lt.tuples) > maxDone || now.Sub(lt.swept) > 10*time.Second {
		lt.swept = now
		for c, at := range lt.cookies {
			if now.Sub(at) > doneFor || len(lt.cookies) > maxDone/2 {
				delete(lt.cookies, c)
			}
		}
		for k, at := range lt.tuples {
			if now.Sub(at) > doneFor || len(lt.tuples) > maxDone/2 {
				delete(lt.tuples, k)
			}
		}
	}
	slices.SortFunc(out, func(a, b Life) int { return a.End.Compare(b.End) })
	return out
}

// freedOf finds the ended connection a freed socket was: its own cookie
// first, then one without a cookie. A socket with cleared ends is one
// that a change to CLOSE ended (a disconnect), matched by what is left of
// its ends.
func (lt *lifeTracker) freedOf(f freedSock, k tuple) *lifeRec {
	rs := lt.ended[k]
	cleared := f.remote.Port() == 0
	if cleared {
		rs = lt.byEnds[partOf(f.local, f.remote)]
	}
	var loose *lifeRec
	for _, e := range rs {
		if e.freed || cleared && (!e.closed || !f.local.Addr().IsUnspecified() && f.local.Addr() != e.Local.Addr()) {
			continue
		}
		switch e.Cookie {
		case f.cookie:
			return e
		case 0:
			if loose == nil {
				loose = e
			}
		}
	}
	return loose
}

// told completes a life for telling.
func (lt *lifeTracker) told(r *lifeRec) Life {
	l := r.Life
	if !l.Start.IsZero() && l.End.After(l.Start) {
		l.Duration = l.End.Sub(l.Start)
	}
	c, fin := r.counts, r.fin
	if l.Bytes == "listed" {
		c, fin = r.listed.counts, finLater
		if finReceived(r.listed.state) {
			fin = finTaken
		}
	}
	if l.Bytes != "" {
		l.BytesSent = c.sent - min(c.retrans, c.sent)
		l.BytesReceived = c.received
		// The FIN takes a sequence number: bytes_received counts it when
		// the socket took it.
		switch {
		case fin == finTaken && c.received > 0:
			l.BytesReceived--
		case fin == finUnknown && (r.Final == TimeWait || r.Final == 0) && c.received > 0:
			// Taken by the socket or by its timewait successor, within
			// milliseconds (or no change seen): the lower count, marked.
			l.BytesReceived--
			l.ReceivedAtLeast = true
		}
	}
	if len(l.Processes) == 0 {
		l.Processes = r.procs
	}
	return l
}

// finReceived tells the states a socket reaches only once the peer's FIN
// has come.
func finReceived(s State) bool {
	return s == CloseWait || s == LastAck || s == Closing || s == TimeWait
}

// procOfThread names the process a thread belongs to: its thread group
// and name from /proc, or, once it has exited, the name tracefs saved for
// the thread when it made a traced change.
func procOfThread(tid int) (Proc, bool) {
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status"); err == nil {
		p := Proc{PID: tid}
		for _, line := range bytes.Split(b, []byte("\n")) {
			k, v, _ := bytes.Cut(line, []byte(":"))
			v = bytes.TrimSpace(v)
			switch string(k) {
			case "Name":
				p.Comm = string(v)
			case "Tgid":
				if n, err := strconv.Atoi(string(v)); err == nil {
					p.PID = n
				}
			}
		}
		return p, p.Comm != ""
	}
	root, err := TracefsRoot()
	if err != nil {
		return Proc{}, false
	}
	f, err := os.Open(filepath.Join(root, "saved_cmdlines"))
	if err != nil {
		return Proc{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	want := strconv.Itoa(tid) + " "
	for sc.Scan() {
		if c, ok := bytes.CutPrefix(sc.Bytes(), []byte(want)); ok {
			return Proc{PID: tid, Comm: string(c)}, true
		}
	}
	return Proc{}, false
}

// LifeWatcher reports connections of a namespace as they end, like bcc's
// tcplife: the state changes come from a Watcher (the tracepoint and
// sock_diag listings), the final byte counts from sock_diag's broadcast
// of each socket the kernel frees.
type LifeWatcher struct {
	w  *Watcher
	d  *Destroys
	lt *lifeTracker
}

// NewLifeWatcher starts watching (as root).
func NewLifeWatcher(t Target, f Filter) (*LifeWatcher, error) {
	f.States = 0
	w, err := NewWatcher(t, f, true)
	if err != nil {
		return nil, err
	}
	w.info = true
	lw := &LifeWatcher{w: w, lt: newLifeTracker(f)}
	if err := w.host.do(func() error {
		var err error
		lw.d, err = OpenDestroys()
		return err
	}); err != nil {
		w.Close()
		return nil, err
	}
	return lw, nil
}

// Close stops watching.
func (lw *LifeWatcher) Close() error {
	lw.d.Close()
	return lw.w.Close()
}

// Poll returns the connections that ended and can be told, oldest end
// first. A connection is told about a second after its end, once the
// kernel has freed its socket (its final counts), or without them when
// its owner keeps it open.
func (lw *LifeWatcher) Poll() ([]Life, error) {
	ts, err := lw.w.Poll()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if q := lw.w.takeQuiet(); len(q) > 0 {
		ts = append(ts, q...)
		slices.SortStableFunc(ts, func(a, b Transition) int { return a.At.Compare(b.At) })
	}
	lw.lt.changes(ts, now)
	lw.lt.listed(lw.w.placed, now)
	if err := lw.d.Read(func(s *Socket) { lw.lt.freedSocket(s, now) }); err != nil {
		return nil, err
	}
	return lw.lt.due(now, lw.w.Through(), lw.w.Behind(), false), nil
}

// Flush returns the connections that ended and still wait to be told
// (their sockets not freed yet), as at the end of a watch.
func (lw *LifeWatcher) Flush() []Life { return lw.lt.due(time.Now(), time.Now(), false, true) }

// Behind, Through, Notes and Lost are the Watcher's.
func (lw *LifeWatcher) Behind() bool       { return lw.w.Behind() }
func (lw *LifeWatcher) Through() time.Time { return lw.w.Through() }
func (lw *LifeWatcher) Notes() []string    { return lw.w.Notes() }

// Lost is how many state changes the trace dropped, and how many times
// the kernel dropped freed sockets' messages.
func (lw *LifeWatcher) Lost() (changes, freed int) { return lw.w.Lost(), lw.d.Lost() }

// Waiting is how many connections have ended and wait to be told.
func (lw *LifeWatcher) Waiting() int {
	n := len(lw.lt.freed)
	for _, rs := range lw.lt.ended {
		n += len(rs)
	}
	return n
}
