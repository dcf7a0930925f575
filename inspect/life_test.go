package inspect

import (
	"net/netip"
	"testing"
	"time"
)

// lifeClock hands out wall times a millisecond apart.
type lifeClock struct{ t time.Time }

func (c *lifeClock) next(d time.Duration) time.Time {
	c.t = c.t.Add(d)
	return c.t
}

var (
	lifeClient = netip.MustParseAddrPort("10.0.0.1:40000")
	lifeServer = netip.MustParseAddrPort("10.0.0.2:80")
)

func tr(at time.Time, old, new State, local, remote netip.AddrPort) Transition {
	return Transition{At: at, Old: old, New: new, Local: local, Remote: remote, Source: "trace"}
}

func freedSockAt(local, remote netip.AddrPort, cookie, sent, retrans, received uint64) *Socket {
	return &Socket{State: Close, Local: local, Remote: remote, Cookie: cookie,
		Info: &tcpInfo{Bytes_sent: sent, Bytes_retrans: retrans, Bytes_received: received}}
}

func newTestTracker() *lifeTracker {
	lt := newLifeTracker(Filter{})
	lt.comm = func(tid int) (Proc, bool) { return Proc{PID: tid + 1000, Comm: "client"}, true }
	return lt
}

// The client's end of a connection it closed first: connect() shows port
// 0 first; the freed socket's counts come after the changes are read.
func TestLifeActiveClose(t *testing.T) {
	for _, c := range []struct {
		name     string
		fin      int8
		rx       uint64
		atLeast  bool
		received uint64
		final    State
	}{
		{"fin taken by the socket", finTaken, 3000, false, 3001, TimeWait},
		{"fin taken by the timewait socket", finLater, 3000, false, 3000, FinWait2},
		{"too close to tell", finUnknown, 3000, true, 3001, TimeWait},
	} {
		t.Run(c.name, func(t *testing.T) {
			lt := newTestTracker()
			clk := &lifeClock{time.Unix(1000, 0)}
			start := clk.next(0)
			unbound := netip.AddrPortFrom(lifeClient.Addr(), 0)
			syn := tr(start, Close, SynSent, unbound, lifeServer)
			syn.pid = 42
			ts := []Transition{syn,
				tr(clk.next(time.Millisecond), SynSent, Established, lifeClient, lifeServer),
				tr(clk.next(time.Millisecond), Established, FinWait1, lifeClient, lifeServer),
				tr(clk.next(time.Millisecond), FinWait1, FinWait2, lifeClient, lifeServer),
				tr(clk.next(3*time.Millisecond), FinWait2, TimeWait, lifeClient, lifeServer)}
			ts[4].fin = c.fin
			now := clk.next(100 * time.Millisecond)
			lt.changes(ts, now)
			if got := lt.due(now, now, false, false); len(got) != 0 {
				t.Fatalf("told before its socket was freed or a second passed: %+v", got)
			}
			lt.freedSocket(freedSockAt(lifeClient, lifeServer, 7, 80, 3, c.received), now)
			got := lt.due(now, now, false, false)
			if len(got) != 1 {
				t.Fatalf("got %d lives, want 1: %+v", len(got), got)
			}
			l := got[0]
			if l.Local != lifeClient || l.Remote != lifeServer || l.Opened != "active" || l.Final != c.final || l.ClosedFirst != "local" {
				t.Errorf("life %+v", l)
			}
			if !l.Start.Equal(start) || l.Duration != 6*time.Millisecond {
				t.Errorf("start %v duration %v, want %v and 6ms", l.Start, l.Duration, start)
			}
			if l.Bytes != "final" || l.BytesSent != 77 || l.BytesReceived != c.rx || l.ReceivedAtLeast != c.atLeast || l.Cookie != 7 {
				t.Errorf("bytes %s sent %d received %d (at least %v) cookie %d, want final 77 %d (%v) 7", l.Bytes, l.BytesSent, l.BytesReceived, l.ReceivedAtLeast, l.Cookie, c.rx, c.atLeast)
			}
			if len(l.Processes) != 1 || l.Processes[0].PID != 1042 {
				t.Errorf("processes %+v, want the connect() thread's process", l.Processes)
			}
			// A late copy of the same socket's end is not told twice.
			lt.freedSocket(freedSockAt(lifeClient, lifeServer, 7, 80, 3, c.received), now)
			if got := lt.due(clk.next(time.Second), clk.t, false, false); len(got) != 0 {
				t.Errorf("told again: %+v", got)
			}
		})
	}
}

// The server's end, closed second; its socket freed before the changes
// that end it are read: the freed socket waits for them.
func TestLifePassiveCloseFreedFirst(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	start := clk.next(0)
	lt.changes([]Transition{
		tr(start, Listen, SynRecv, lifeServer, lifeClient),
		tr(clk.next(time.Millisecond), SynRecv, Established, lifeServer, lifeClient),
	}, clk.t)
	through := clk.t
	now := clk.next(10 * time.Millisecond)
	lt.freedSocket(freedSockAt(lifeServer, lifeClient, 9, 3000, 0, 78), now)
	if got := lt.due(now, through, false, false); len(got) != 0 {
		t.Fatalf("told before its changes were read: %+v", got)
	}
	end := clk.next(time.Millisecond)
	lt.changes([]Transition{
		tr(clk.next(-5*time.Millisecond), Established, CloseWait, lifeServer, lifeClient),
		tr(clk.next(time.Millisecond), CloseWait, LastAck, lifeServer, lifeClient),
		tr(end, LastAck, Close, lifeServer, lifeClient),
	}, clk.next(100*time.Millisecond))
	got := lt.due(clk.t, clk.t, false, false)
	if len(got) != 1 {
		t.Fatalf("got %d lives, want 1", len(got))
	}
	l := got[0]
	if l.Opened != "passive" || l.Final != LastAck || l.ClosedFirst != "remote" || l.BytesSent != 3000 || l.BytesReceived != 77 || l.ReceivedAtLeast {
		t.Errorf("life %+v", l)
	}
	if !l.Start.Equal(start) {
		t.Errorf("start %v, want the LISTEN to SYN_RECV change at %v", l.Start, start)
	}
}

// Resets and failed connects: the freed socket's remote port (and a failed
// connect's local address) are cleared by then.
func TestLifeResetClearedEnds(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	refused := netip.MustParseAddrPort("10.0.0.1:40001")
	rst := tr(clk.next(time.Millisecond), SynSent, Close, refused, lifeServer)
	rst.Reset = true
	abort := tr(clk.next(time.Millisecond), Established, Close, lifeServer, lifeClient)
	lt.changes([]Transition{
		tr(clk.next(0), Close, SynSent, netip.AddrPortFrom(refused.Addr(), 0), lifeServer),
		rst,
		tr(clk.next(0), Listen, SynRecv, lifeServer, lifeClient),
		tr(clk.next(time.Millisecond), SynRecv, Established, lifeServer, lifeClient),
		abort,
	}, clk.t)
	now := clk.next(time.Millisecond)
	lt.freedSocket(freedSockAt(netip.AddrPortFrom(netip.IPv4Unspecified(), refused.Port()), netip.AddrPortFrom(lifeServer.Addr(), 0), 1, 0, 0, 0), now)
	lt.freedSocket(freedSockAt(lifeServer, netip.AddrPortFrom(lifeClient.Addr(), 0), 2, 10, 0, 5), now)
	// A listener's and a cleared socket nobody knows are not lives.
	lt.freedSocket(freedSockAt(lifeServer, netip.AddrPortFrom(netip.IPv4Unspecified(), 0), 3, 0, 0, 0), now)
	lt.freedSocket(freedSockAt(netip.MustParseAddrPort("10.0.0.1:50000"), netip.AddrPortFrom(lifeServer.Addr(), 0), 4, 0, 0, 0), now)
	got := lt.due(now, now, false, false)
	if len(got) != 2 {
		t.Fatalf("got %d lives, want 2: %+v", len(got), got)
	}
	if l := got[0]; l.Local != refused || l.Final != SynSent || l.ClosedFirst != "reset" || !l.Reset || l.Bytes != "final" || l.Cookie != 1 {
		t.Errorf("refused connect: %+v", l)
	}
	// A disconnect zeroes the counts too: unknown, not zero.
	if l := got[1]; l.Local != lifeServer || l.Final != Established || l.ClosedFirst != "abort" || l.Reset || l.Bytes != "" || l.Cookie != 2 {
		t.Errorf("aborted connection: %+v", l)
	}
}

// A connection whose owner keeps its socket after the end is told a
// second later with the counts of the last listing that showed it; one
// whose changes were lost is told from its freed socket alone; one gone
// from the listings without a change is told ended after goneAfter.
func TestLifeWithoutFreeOrChanges(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	lt.changes([]Transition{
		tr(clk.next(0), Close, SynSent, netip.AddrPortFrom(lifeClient.Addr(), 0), lifeServer),
		tr(clk.next(time.Millisecond), SynSent, Established, lifeClient, lifeServer),
	}, clk.t)
	l := &listing{info: map[tuple]listed{tupleOf(lifeClient, lifeServer): {cookie: 5, state: CloseWait, counts: byteCounts{sent: 100, received: 51}}}, tw: map[tuple]timewait{}}
	lt.listed(l, clk.next(time.Millisecond))
	rst := tr(clk.next(time.Millisecond), CloseWait, Close, lifeClient, lifeServer)
	rst.Reset = true
	lt.changes([]Transition{rst}, clk.t)
	if got := lt.due(clk.next(500*time.Millisecond), clk.t, false, false); len(got) != 0 {
		t.Fatalf("told before a second: %+v", got)
	}
	got := lt.due(clk.next(600*time.Millisecond), clk.t, false, false)
	if len(got) != 1 || got[0].Bytes != "listed" || got[0].BytesSent != 100 || got[0].BytesReceived != 50 || got[0].ClosedFirst != "reset" {
		t.Fatalf("kept socket: %+v", got)
	}

	other := netip.MustParseAddrPort("10.0.0.9:1234")
	lt.freedSocket(freedSockAt(lifeServer, other, 8, 5, 0, 6), clk.next(time.Millisecond))
	got = lt.due(clk.t, clk.t, false, false)
	// Whether the 6 bytes received count a FIN is not known: 5 at least.
	if len(got) != 1 || got[0].Final != 0 || !got[0].Start.IsZero() || got[0].Bytes != "final" || got[0].BytesReceived != 5 || !got[0].ReceivedAtLeast {
		t.Fatalf("freed alone: %+v", got)
	}

	gone := netip.MustParseAddrPort("10.0.0.1:40002")
	lt.changes([]Transition{tr(clk.next(time.Millisecond), SynSent, Established, gone, lifeServer)}, clk.t)
	empty := &listing{info: map[tuple]listed{}, tw: map[tuple]timewait{}}
	lt.listed(empty, clk.next(time.Millisecond))
	if got := lt.due(clk.next(goneAfter/2), clk.t, false, false); len(got) != 0 {
		t.Fatalf("told while it may be there: %+v", got)
	}
	lt.listed(empty, clk.t)
	got = lt.due(clk.next(goneAfter), clk.t, false, false)
	got = append(got, lt.due(clk.next(freeWait), clk.t, false, false)...)
	if len(got) != 1 || got[0].Local != gone || got[0].Final != Established || got[0].ClosedFirst != "" {
		t.Fatalf("gone unseen: %+v", got)
	}
	if len(lt.open) != 0 || len(lt.ended) != 0 || len(lt.byEnds) != 0 || len(lt.freed) != 0 {
		t.Errorf("left behind: %d open, %d ended, %d by ends, %d freed", len(lt.open), len(lt.ended), len(lt.byEnds), len(lt.freed))
	}
}

// A new connection on an ended one's 4-tuple (a timewait socket reused)
// does not swallow it; each is told with its own counts.
func TestLifeReusedTuple(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	lt.changes([]Transition{
		tr(clk.next(0), SynSent, Established, lifeClient, lifeServer),
		tr(clk.next(time.Millisecond), Established, FinWait1, lifeClient, lifeServer),
		tr(clk.next(time.Millisecond), FinWait1, TimeWait, lifeClient, lifeServer),
		tr(clk.next(time.Millisecond), Close, SynSent, lifeClient, lifeServer),
		tr(clk.next(time.Millisecond), SynSent, Established, lifeClient, lifeServer),
	}, clk.t)
	lt.freedSocket(freedSockAt(lifeClient, lifeServer, 1, 10, 0, 21), clk.t)
	got := lt.due(clk.t, clk.t, false, false)
	if len(got) != 1 || got[0].BytesSent != 10 || got[0].BytesReceived != 20 || got[0].Final != TimeWait || !got[0].Start.IsZero() {
		t.Fatalf("first: %+v", got)
	}
	if r := lt.open[tupleOf(lifeClient, lifeServer)]; r == nil || r.Start.IsZero() || r.state != Established {
		t.Fatalf("the new connection is not followed: %+v", r)
	}
}

// An orphan's socket freed as FIN_WAIT2 begins (the watcher's quiet end):
// the life ends there, in FIN_WAIT2, and the FIN is not counted.
func TestLifeQuietEnd(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	quiet := tr(clk.next(2*time.Millisecond), FinWait2, Close, lifeClient, lifeServer)
	quiet.fin = finLater
	lt.changes([]Transition{
		tr(clk.t.Add(-2*time.Millisecond), Established, FinWait1, lifeClient, lifeServer),
		tr(clk.t.Add(-time.Millisecond), FinWait1, FinWait2, lifeClient, lifeServer),
		quiet,
	}, clk.t)
	// The timewait socket's later TIME_WAIT (a listing) is not this life's.
	lt.changes([]Transition{{At: clk.next(time.Second), Old: FinWait2, New: TimeWait, Local: lifeClient, Remote: lifeServer, Source: "snapshot"}}, clk.t)
	lt.freedSocket(freedSockAt(lifeClient, lifeServer, 3, 5, 0, 9), clk.t)
	got := lt.due(clk.t, clk.t, false, false)
	if len(got) != 1 || got[0].Final != FinWait2 || got[0].ClosedFirst != "local" || got[0].BytesReceived != 9 || got[0].ReceivedAtLeast || !got[0].End.Equal(quiet.At) {
		t.Fatalf("got %+v", got)
	}
}

// Two connects from one address to one server before either shows its
// port: each is followed by its socket, with its own start and thread;
// and one stuck in SYN_SENT longer than goneAfter is not told ended.
func TestLifeConcurrentConnects(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	unbound := netip.AddrPortFrom(lifeClient.Addr(), 0)
	a, b := netip.MustParseAddrPort("10.0.0.1:40010"), netip.MustParseAddrPort("10.0.0.1:40011")
	startA, startB := clk.next(0), clk.next(time.Millisecond)
	ts := []Transition{
		tr(startA, Close, SynSent, unbound, lifeServer),
		tr(startB, Close, SynSent, unbound, lifeServer),
	}
	ts[0].sk, ts[0].pid = 0xa, 1
	ts[1].sk, ts[1].pid = 0xb, 2
	lt.changes(ts, clk.t)
	empty := &listing{info: map[tuple]listed{}, tw: map[tuple]timewait{}}
	for range 3 {
		lt.listed(empty, clk.next(3*time.Second))
		if got := lt.due(clk.t, clk.t, false, false); len(got) != 0 {
			t.Fatalf("a connect still in SYN_SENT told: %+v", got)
		}
	}
	ts = []Transition{
		tr(clk.next(time.Millisecond), SynSent, Established, b, lifeServer),
		tr(clk.next(time.Millisecond), SynSent, Established, a, lifeServer),
		tr(clk.next(time.Millisecond), Established, Close, a, lifeServer),
		tr(clk.next(time.Millisecond), Established, Close, b, lifeServer),
	}
	ts[0].sk, ts[1].sk, ts[2].sk, ts[3].sk = 0xb, 0xa, 0xa, 0xb
	lt.changes(ts, clk.t)
	got := lt.due(clk.next(freeWait), clk.t, false, false)
	if len(got) != 2 {
		t.Fatalf("got %+v", got)
	}
	for _, l := range got {
		want, pid := startA, 1001
		if l.Local == b {
			want, pid = startB, 1002
		}
		if !l.Start.Equal(want) || len(l.Processes) != 1 || l.Processes[0].PID != pid {
			t.Errorf("%v: start %v processes %+v, want %v and pid %d", l.Local, l.Start, l.Processes, want, pid)
		}
	}
}

// A freed socket with cleared ends goes to a connection a change to CLOSE
// ended, not to one that closed normally with the same local port and
// peer address; the normal one keeps its own socket's counts.
func TestLifeClearedNotNormal(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	peerA, peerB := netip.MustParseAddrPort("10.0.0.1:41000"), netip.MustParseAddrPort("10.0.0.1:41001")
	lt.changes([]Transition{
		tr(clk.next(0), Listen, SynRecv, lifeServer, peerA),
		tr(clk.next(0), Listen, SynRecv, lifeServer, peerB),
		tr(clk.next(time.Millisecond), Established, FinWait1, lifeServer, peerA),
		tr(clk.next(time.Millisecond), FinWait1, TimeWait, lifeServer, peerA),
		tr(clk.next(time.Millisecond), Established, Close, lifeServer, peerB),
	}, clk.t)
	cleared := netip.AddrPortFrom(peerB.Addr(), 0)
	lt.freedSocket(freedSockAt(lifeServer, cleared, 22, 0, 0, 0), clk.t)
	got := lt.due(clk.t, clk.t, false, false)
	if len(got) != 1 || got[0].Remote != peerB || got[0].Cookie != 22 || got[0].Bytes != "" {
		t.Fatalf("got %+v, want the aborted connection, counts unknown", got)
	}
	lt.freedSocket(freedSockAt(lifeServer, peerA, 21, 500, 0, 301), clk.next(time.Millisecond))
	got = lt.due(clk.t, clk.t, false, false)
	if len(got) != 1 || got[0].Remote != peerA || got[0].BytesSent != 500 || got[0].BytesReceived != 300 || got[0].Bytes != "final" {
		t.Fatalf("got %+v, want the closed one with its counts", got)
	}
}

// A connection seen only in its last change (older than the watch) is
// told, what its state said kept.
func TestLifeOnlyItsEnd(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	lt.changes([]Transition{tr(clk.next(0), LastAck, Close, lifeServer, lifeClient)}, clk.t)
	lt.freedSocket(freedSockAt(lifeServer, lifeClient, 4, 10, 0, 8), clk.t)
	got := lt.due(clk.t, clk.t, false, false)
	if len(got) != 1 || got[0].Final != LastAck || got[0].ClosedFirst != "remote" || got[0].BytesReceived != 7 || got[0].ReceivedAtLeast || !got[0].Start.IsZero() {
		t.Fatalf("got %+v", got)
	}
}

// A new connection on the 4-tuple of one still waiting for its socket:
// each told once, the new one with its start; the old one's late freed
// socket, once it is told, goes nowhere.
func TestLifeNewOnEndedTuple(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	lt.changes([]Transition{
		tr(clk.next(0), Listen, SynRecv, lifeServer, lifeClient),
		tr(clk.next(time.Millisecond), SynRecv, Established, lifeServer, lifeClient),
	}, clk.t)
	l := &listing{info: map[tuple]listed{tupleOf(lifeServer, lifeClient): {cookie: 1, state: Established, counts: byteCounts{sent: 7}}}, tw: map[tuple]timewait{}}
	lt.listed(l, clk.next(time.Millisecond))
	rst := tr(clk.next(time.Millisecond), Established, Close, lifeServer, lifeClient)
	rst.Reset = true
	second := clk.next(time.Millisecond)
	lt.changes([]Transition{rst,
		tr(second, Listen, SynRecv, lifeServer, lifeClient),
		tr(clk.next(time.Millisecond), SynRecv, Established, lifeServer, lifeClient),
	}, clk.t)
	got := lt.due(clk.next(freeWait), clk.t, false, false)
	if len(got) != 1 || got[0].Cookie != 1 || got[0].Bytes != "listed" || got[0].BytesSent != 7 {
		t.Fatalf("first: %+v", got)
	}
	// The first's socket, freed late, is not the second's end.
	lt.freedSocket(freedSockAt(lifeServer, lifeClient, 1, 9, 0, 0), clk.t)
	if got := lt.due(clk.next(time.Millisecond), clk.t, false, false); len(got) != 0 {
		t.Fatalf("told again: %+v", got)
	}
	if r := lt.open[tupleOf(lifeServer, lifeClient)]; r == nil || !r.Start.Equal(second) {
		t.Fatalf("the second connection: %+v", r)
	}
}

// While the trace reader is behind, a freed socket waits for its changes
// and an absent connection is not given up on.
func TestLifeBehind(t *testing.T) {
	lt := newTestTracker()
	clk := &lifeClock{time.Unix(1000, 0)}
	lt.changes([]Transition{tr(clk.next(0), Listen, SynRecv, lifeServer, lifeClient)}, clk.t)
	empty := &listing{info: map[tuple]listed{}, tw: map[tuple]timewait{}}
	lt.listed(empty, clk.next(time.Millisecond))
	lt.freedSocket(freedSockAt(lifeServer, lifeClient, 3, 1, 0, 1), clk.t)
	through := clk.t.Add(-time.Second)
	if got := lt.due(clk.next(time.Minute), through, true, false); len(got) != 0 {
		t.Fatalf("told while behind: %+v", got)
	}
	lt.changes([]Transition{
		tr(clk.t.Add(-50*time.Second), SynRecv, Established, lifeServer, lifeClient),
		tr(clk.t.Add(-40*time.Second), Established, CloseWait, lifeServer, lifeClient),
		tr(clk.t.Add(-39*time.Second), CloseWait, LastAck, lifeServer, lifeClient),
		tr(clk.t.Add(-38*time.Second), LastAck, Close, lifeServer, lifeClient),
	}, clk.t)
	got := lt.due(clk.next(time.Millisecond), clk.t, false, false)
	if len(got) != 1 || got[0].Final != LastAck || got[0].ClosedFirst != "remote" || got[0].BytesReceived != 0 || got[0].Bytes != "final" {
		t.Fatalf("got %+v", got)
	}
}
