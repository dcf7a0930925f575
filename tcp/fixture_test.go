package tcp

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// The fixtures here follow smoltcp's style: one host under test ("us",
// 10.0.0.2), a peer the test plays by hand (10.0.0.1:40000), segments sent
// at a given time and the exact segments expected back.

var (
	usAddr   = netip.MustParseAddr("10.0.0.2")
	peerAddr = netip.MustParseAddr("10.0.0.1")
)

const (
	peerPort = 40000
	usPort   = 80
	peerISS  = wire.Seq(1000)
)

// covered records every state transition the fixture tests make, so that
// TestMain can insist that every entry of the transition table is exercised.
var covered = map[[2]State]bool{}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" &&
		flag.Lookup("test.skip").Value.String() == "" {
		var missing []string
		for _, t := range transitions {
			if !covered[[2]State{t.From, t.To}] {
				missing = append(missing, fmt.Sprintf("%v -> %v (%s)", t.From, t.To, t.Event))
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			fmt.Fprintf(os.Stderr, "transitions never exercised by the fixture tests:\n  %s\n", strings.Join(missing, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

type fx struct {
	t      *testing.T
	h      *Host
	out    []wire.Segment
	ev     []Event
	peer   netip.AddrPort
	us     netip.AddrPort
	usISS  wire.Seq // our ISN once known
	pNxt   wire.Seq // the peer's next sequence number
	fd     FD       // the connection's descriptor
	lfd    FD       // the listener's descriptor
	opts   bool     // peer's SYN carries Linux options
	tsPeer uint32
}

func newFx(t *testing.T, p Profile) *fx {
	t.Helper()
	f := &fx{t: t, h: NewHost(Config{Name: "us", Addr: usAddr, Profile: p, Seed: 7}),
		peer: netip.AddrPortFrom(peerAddr, peerPort), us: netip.AddrPortFrom(usAddr, usPort),
		pNxt: peerISS, fd: -1, lfd: -1}
	t.Cleanup(func() {
		if b := f.h.Bugs(); len(b) > 0 {
			t.Errorf("engine bugs: %v", b)
		}
	})
	return f
}

func (f *fx) collect() {
	f.out = f.h.PollSegments(f.out)
	n := len(f.ev)
	f.ev = f.h.PollEvents(f.ev)
	for _, e := range f.ev[n:] {
		if e.Kind == EvState {
			covered[[2]State{e.From, e.To}] = true
		}
	}
}

// at moves time to d (absolute) and fires due timers.
func (f *fx) at(d time.Duration) {
	f.t.Helper()
	if d < f.h.Now() {
		f.t.Fatalf("time goes backwards: %v < %v", d, f.h.Now())
	}
	f.h.Advance(d)
	f.collect()
}

func (f *fx) after(d time.Duration) { f.at(f.h.Now() + d) }

// mk builds a segment from the peer.
func (f *fx) mk(flags wire.Flags, seq, ack wire.Seq, payload string) wire.Segment {
	s := wire.Segment{Src: f.peer.Addr(), Dst: f.us.Addr(), SrcPort: f.peer.Port(), DstPort: f.us.Port(),
		Seq: seq, Ack: ack, Flags: flags, Window: 65535, TTL: 64}
	if payload != "" {
		s.Payload = []byte(payload)
	}
	return s
}

func (f *fx) recv(s wire.Segment) {
	f.t.Helper()
	f.h.Input(&s)
	f.collect()
}

// send has the peer send a segment at its current sequence number and
// advances it.
func (f *fx) send(flags wire.Flags, payload string) {
	f.t.Helper()
	s := f.mk(flags, f.pNxt, f.ourNxt(), payload)
	f.recv(s)
	f.pNxt = s.End()
}

// ourNxt is what the peer acknowledges: everything we sent so far.
func (f *fx) ourNxt() wire.Seq {
	if c := f.conn(); c != nil {
		return c.sndMax
	}
	return f.usISS.Add(1)
}

// exp is an expected segment; seq and ack are relative to the ISNs
// (0 is the SYN), as tcpdump shows them.
type exp struct {
	flags wire.Flags
	seq   int // relative to our ISN
	ack   int // relative to the peer's ISN
	len   int
}

func (f *fx) expect(want ...exp) []wire.Segment {
	f.t.Helper()
	if len(f.out) != len(want) {
		f.t.Fatalf("at %v: got %d segments, want %d:\n%s", f.h.Now(), len(f.out), len(want), f.dump())
	}
	got := f.out
	f.out = nil
	for i, w := range want {
		s := got[i]
		if s.Flags != w.flags || int(s.Seq.Diff(f.usISS)) != w.seq || len(s.Payload) != w.len ||
			(s.Flags&wire.ACK != 0 && int(s.Ack.Diff(peerISS)) != w.ack) {
			f.t.Fatalf("at %v: segment %d is\n  %s (rel seq %d ack %d len %d)\nwant flags [%s] seq %d ack %d len %d",
				f.h.Now(), i, s.String(), s.Seq.Diff(f.usISS), s.Ack.Diff(peerISS), len(s.Payload),
				w.flags.Short(), w.seq, w.ack, w.len)
		}
		if s.Src != f.us.Addr() || s.Dst != f.peer.Addr() || s.DstPort != f.peer.Port() {
			f.t.Fatalf("segment %d addressed %v:%d > %v:%d", i, s.Src, s.SrcPort, s.Dst, s.DstPort)
		}
	}
	return got
}

func (f *fx) expectNothing() {
	f.t.Helper()
	if len(f.out) != 0 {
		f.t.Fatalf("at %v: expected no segment, got:\n%s", f.h.Now(), f.dump())
	}
}

func (f *fx) dump() string {
	var b strings.Builder
	for _, s := range f.out {
		fmt.Fprintf(&b, "  %s (rel seq %d ack %d)\n", s.String(), s.Seq.Diff(f.usISS), s.Ack.Diff(peerISS))
	}
	return b.String()
}

func (f *fx) do(c Call) Result {
	f.t.Helper()
	r := f.h.Do(c)
	f.collect()
	return r
}

// conn is the connection under test: the one with the peer's 4-tuple.
func (f *fx) conn() *conn {
	return f.h.conns[tuple{laddr: f.us.Addr(), raddr: f.peer.Addr(), lport: f.us.Port(), rport: f.peer.Port()}]
}

func (f *fx) state() State {
	f.t.Helper()
	if c := f.conn(); c != nil {
		return c.state
	}
	if c := f.h.fds[f.fd]; c != nil {
		return c.state
	}
	return Closed
}

func (f *fx) wantState(s State) {
	f.t.Helper()
	if got := f.state(); got != s {
		f.t.Fatalf("at %v: state %v, want %v", f.h.Now(), got, s)
	}
}

// lastCall returns the last completion event of a call.
func (f *fx) callDone(id uint64) *Result {
	for i := len(f.ev) - 1; i >= 0; i-- {
		e := f.ev[i]
		if e.Kind == EvCall && e.Result.ID == id && !e.Result.Pending {
			return e.Result
		}
	}
	return nil
}

func (f *fx) counter(c Counter) int64 { return f.h.Counter(c) }

func (f *fx) wantCounter(c Counter, v int64) {
	f.t.Helper()
	if got := f.h.Counter(c); got != v {
		f.t.Fatalf("%v = %d, want %d", c, got, v)
	}
}

func (f *fx) hasNote(sub string) bool {
	for _, e := range f.ev {
		if e.Kind == EvNote && strings.Contains(e.Note, sub) {
			return true
		}
	}
	return false
}

// transitionsOf lists the state changes of one socket, "A->B".
func (f *fx) transitionsOf(id SockID) []string {
	var out []string
	for _, e := range f.ev {
		if e.Kind == EvState && e.Sock == id {
			out = append(out, e.From.String()+"->"+e.To.String())
		}
	}
	return out
}

// listen makes us listen on port 80.
func (f *fx) listen(backlog int) {
	f.t.Helper()
	fd, e := f.h.ListenOn(usPort, backlog)
	if e != OK {
		f.t.Fatalf("listen: %v", e)
	}
	f.lfd = fd
	f.collect()
}

// synRecv: we listen, the peer's SYN arrives, our SYN-ACK goes out.
func (f *fx) synRecv() {
	f.t.Helper()
	f.listen(8)
	syn := f.mk(wire.SYN, f.pNxt, 0, "")
	if f.opts {
		syn.Options = wire.Options{HasMSS: true, MSS: 1460, SACKPermitted: true, HasTimestamps: true, TSVal: 100, HasWScale: true, WScale: 7}
	}
	f.recv(syn)
	f.pNxt = f.pNxt.Add(1)
	if len(f.out) != 1 {
		f.t.Fatalf("no SYN-ACK:\n%s", f.dump())
	}
	f.usISS = f.out[0].Seq
	f.expect(exp{wire.SYN | wire.ACK, 0, 1, 0})
	f.wantState(SynRecv)
}

// passive: a connection accepted from our listener.
func (f *fx) passive() {
	f.t.Helper()
	f.synRecv()
	f.send(wire.ACK, "")
	f.expectNothing()
	f.wantState(Established)
	r := f.do(Call{Op: OpAccept, FD: f.lfd})
	if r.Err != OK {
		f.t.Fatalf("accept: %v", r.Err)
	}
	f.fd = FD(r.Ret)
}

// connectFrom binds our port 5555, connects to the peer's port and checks
// that our SYN goes out; it returns the connect call's result.
func (f *fx) connectFrom(peerPort uint16, nonBlock bool) Result {
	f.t.Helper()
	f.us = netip.AddrPortFrom(usAddr, 5555)
	f.peer = netip.AddrPortFrom(peerAddr, peerPort)
	f.fd = f.h.Socket()
	f.do(Call{Op: OpBind, FD: f.fd, Port: 5555})
	r := f.do(Call{Op: OpConnect, FD: f.fd, Addr: f.peer, NonBlock: nonBlock})
	if len(f.out) == 0 {
		f.t.Fatalf("connect sent nothing: %+v", r)
	}
	f.usISS = f.out[0].Seq
	f.expect(exp{wire.SYN, 0, 0, 0})
	return r
}

// active: we connect to the peer.
func (f *fx) active() {
	f.t.Helper()
	r := f.connectFrom(80, false)
	if !r.Pending {
		f.t.Fatalf("connect did not block: %+v", r)
	}
	f.wantState(SynSent)
	f.recv(f.mk(wire.SYN|wire.ACK, f.pNxt, f.usISS.Add(1), ""))
	f.pNxt = f.pNxt.Add(1)
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.wantState(Established)
	if d := f.callDone(r.ID); d == nil || d.Err != OK {
		f.t.Fatalf("connect did not complete: %+v", d)
	}
}

// finWait1: we close an established connection.
func (f *fx) finWait1() {
	f.t.Helper()
	f.passive()
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
	f.wantState(FinWait1)
}

func (f *fx) finWait2() {
	f.t.Helper()
	f.finWait1()
	f.send(wire.ACK, "")
	f.expectNothing()
	f.wantState(FinWait2)
}

func (f *fx) timeWait() {
	f.t.Helper()
	f.finWait2()
	f.send(wire.FIN|wire.ACK, "")
	f.expect(exp{wire.ACK, 2, 2, 0})
	f.wantState(TimeWait)
}

func (f *fx) closeWait() {
	f.t.Helper()
	f.passive()
	f.send(wire.FIN|wire.ACK, "")
	f.after(0) // no data was received: the delayed ACK is due at once
	f.expect(exp{wire.ACK, 1, 2, 0})
	f.wantState(CloseWait)
}

func (f *fx) lastAck() {
	f.t.Helper()
	f.closeWait()
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expect(exp{wire.FIN | wire.ACK, 1, 2, 0})
	f.wantState(LastAck)
}

func (f *fx) closing() {
	f.t.Helper()
	f.finWait1()
	// The peer's FIN crosses ours: it does not acknowledge our FIN.
	f.recv(f.mk(wire.FIN|wire.ACK, f.pNxt, f.usISS.Add(1), ""))
	f.pNxt = f.pNxt.Add(1)
	f.expect(exp{wire.ACK, 2, 2, 0})
	f.wantState(Closing)
}

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }
