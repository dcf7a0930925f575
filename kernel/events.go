package kernel

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/procnet"
	"github.com/tcplab/tcplab/sim"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// rawItem is one observation from a source (capture, tracer, a blocked
// call), stamped on the run's clock, waiting to become events in time
// order.
type rawItem struct {
	at   time.Duration
	seq  int
	h    *host
	pkt  *capturedPacket
	st   *inspect.StateChange
	done *completion
}

// sentPkt is a packet seen leaving one host, waiting to be seen arriving
// at another so both lines carry the same packet ID.
type sentPkt struct {
	key string
	id  uint64
	at  time.Duration
}

type injection struct {
	at  time.Duration
	h   *host
	seg wire.Segment
}

// pktKey identifies a packet across the two taps it passes.
func pktKey(s *wire.Segment) string {
	return fmt.Sprintf("%v:%d>%v:%d %d %d %02x %d", s.Src, s.SrcPort, s.Dst, s.DstPort, uint32(s.Seq), uint32(s.Ack), uint8(s.Flags), len(s.Payload))
}

// flushUpTo gathers everything observed up to the horizon hz (a time on
// the run's clock), turns it into events in time order and sends them,
// then looks at the hosts' sockets and counters. What happened after hz
// waits for the next call.
func (b *Backend) flushUpTo(hz time.Duration) {
	if !b.started {
		return
	}
	b.endOpening(false) // an opening of rules, injects or snapshots ends too
	if err := b.tr.Sync(2 * time.Second); err != nil {
		b.warnOnce("trace", "state changes may be missing: "+err.Error())
	}
	seq := len(b.raw)
	b.realOff = realOffset()
	for _, h := range b.hosts {
		_ = h.cap.drain(func(p capturedPacket) {
			at := b.capAt(&p)
			pp := p
			seq++
			b.raw = append(b.raw, rawItem{at: at, seq: seq, h: h, pkt: &pp})
		})
	}
	traces, lost := b.tr.Take()
	if lost > 0 {
		b.emitAt(hz, trace.Event{Kind: trace.KindNote, Note: fmt.Sprintf("the tracer lost %d state changes (ring buffer full)", lost)})
	}
	for i := range traces {
		t := traces[i]
		seq++
		b.raw = append(b.raw, rawItem{at: t.At - b.t0, seq: seq, st: &t})
	}
	b.doneMu.Lock()
	done := b.doneQ
	b.doneQ = nil
	b.doneMu.Unlock()
	for i := range done {
		seq++
		b.raw = append(b.raw, rawItem{at: done[i].at - b.t0, seq: seq, h: done[i].h, done: &done[i]})
	}
	sort.SliceStable(b.raw, func(i, j int) bool { return b.raw[i].at < b.raw[j].at })
	n := 0
	for n < len(b.raw) && b.raw[n].at <= hz {
		n++
	}
	batch := b.raw[:n]
	for i := range batch {
		b.process(&batch[i], batch[i+1:])
	}
	b.raw = append([]rawItem(nil), b.raw[n:]...)
	b.poll(hz)
	if hz-b.countersAt >= counterEvery {
		b.countersAt = hz
	}
	b.forgetOld(hz)
}

func (b *Backend) warnOnce(key, text string) {
	if b.warned[key] {
		return
	}
	b.warned[key] = true
	b.emitAt(b.Now(), trace.Event{Kind: trace.KindNote, Note: text})
}

// emitAt sends an event stamped with time at.
func (b *Backend) emitAt(at time.Duration, e trace.Event) {
	e.At = at
	b.emit(e)
}

func (b *Backend) process(it *rawItem, rest []rawItem) {
	b.reqDue(it.at)
	switch {
	case it.pkt != nil:
		seg, err := wire.Parse(it.pkt.data)
		if err != nil {
			return // not TCP
		}
		b.onPacket(it.h, it.pkt.out, seg, it.at, rest)
	case it.st != nil:
		b.onTrace(it.st, it.at)
	case it.done != nil:
		b.onDone(it.done, it.at)
	}
}

func (b *Backend) hostByAddr(a netip.Addr) *host {
	a = a.Unmap()
	for _, h := range b.hosts {
		if a.IsValid() && (h.addr == a || h.addr6 == a) {
			return h
		}
	}
	return nil
}

// onPacket reports a captured packet. An arrival gets the ID of the same
// packet's departure, and the verdict of the host's input rules, which
// the backend replays on the captured stream (nftables counts, but does
// not say which packet it dropped).
func (b *Backend) onPacket(h *host, out bool, seg wire.Segment, at time.Duration, rest []rawItem) {
	p := &trace.Packet{Segment: seg, Verdict: trace.VerdictPass, OnWire: true}
	key := pktKey(&seg)
	e := trace.Event{At: at, Host: h.name, Kind: trace.KindPacket, Packet: p}
	if out {
		p.Dir = trace.Out
		b.nextPkt++
		p.ID = b.nextPkt
		b.sent = append(b.sent, &sentPkt{key: key, id: p.ID, at: at})
		e.Local, e.Remote = netip.AddrPortFrom(seg.Src, seg.SrcPort), netip.AddrPortFrom(seg.Dst, seg.DstPort)
		d, twin := h.takeDupCopy(key, at)
		if twin {
			// The second of a packet a duplicate rule took and its copy
			// (the capture sees the copy first: nf_dup sends it from
			// inside the hook): no rule sees it, and it is what the first
			// was.
			p.Verdict, p.Rule, p.Crafted = trace.VerdictDup, d.rule.label, d.crafted
		} else {
			if in := b.injected[key]; in.n > 0 {
				if in.n--; in.n == 0 {
					delete(b.injected, key)
				} else {
					b.injected[key] = in
				}
				p.Crafted = true
			}
			if r := b.outputDup(h, &seg, at, rest); r != nil {
				p.Verdict, p.Rule = trace.VerdictDup, r.label
				h.dupCopies[key] = append(h.dupCopies[key], dupCopy{rule: r, at: at, crafted: p.Crafted})
			}
		}
		if b.hostByAddr(seg.Dst) == nil {
			p.Lost = "no host has address " + seg.Dst.String()
		}
		if seg.Flags&(wire.SYN|wire.ACK|wire.RST) == wire.SYN|wire.ACK && !p.Crafted && !twin {
			b.reqSYNACKSent(h, rk(e.Local, e.Remote), at)
		}
	} else {
		p.Dir = trace.In
		for i, s := range b.sent {
			if s.key == key {
				p.ID = s.id
				b.sent = append(b.sent[:i], b.sent[i+1:]...)
				break
			}
		}
		if p.ID == 0 {
			b.nextPkt++
			p.ID = b.nextPkt
		}
		e.Local, e.Remote = netip.AddrPortFrom(seg.Dst, seg.DstPort), netip.AddrPortFrom(seg.Src, seg.SrcPort)
		if r := b.inputVerdict(h, &seg, at); r != nil {
			p.Verdict, p.Rule = r.rule.Action.String(), r.label
		} else {
			h.lastIn[inKey(e.Local, e.Remote)] = lastIn{at: at, flags: seg.Flags}
		}
	}
	if s := h.find(e.Local, e.Remote); s != nil {
		e.Sock = s.id
	}
	b.emit(e)
	b.reqPacket(h, p, &seg, rk(e.Local, e.Remote), at)
}

// reqPacket lets a segment that reached the host's TCP, or left it, start
// or end a request sock.
func (b *Backend) reqPacket(h *host, p *trace.Packet, seg *wire.Segment, k reqKey, at time.Duration) {
	if p.Verdict != trace.VerdictPass || p.Crafted {
		return
	}
	switch f := seg.Flags; {
	case f&wire.RST != 0 && p.Dir == trace.In:
		b.reqSegment(h, k, at, "rcv RST")
	case f&wire.RST != 0:
		b.reqSegment(h, k, at, "snd RST")
	case f&(wire.SYN|wire.ACK) == wire.SYN && p.Dir == trace.In:
		b.reqSYNArrived(h, k[0], k[1], at)
	}
}

// inputVerdict replays the host's input rules, in the order nftables
// has them, on one arriving packet.
func (b *Backend) inputVerdict(h *host, seg *wire.Segment, at time.Duration) *installed {
	ids := make([]int, 0, len(b.rules))
	for id, r := range b.rules {
		if in, _ := r.force(at); r.host == h && r.rule.Dir == trace.In && in {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	for _, id := range ids {
		r := b.rules[id]
		if !r.rule.Matches(seg) {
			continue
		}
		r.matched++
		if r.matched <= r.rule.Skip {
			continue
		}
		if r.rule.Count > 0 && r.acted >= r.rule.Count {
			continue
		}
		if r.rule.Probability > 0 && r.rule.Probability < 1 {
			b.warnOnce("prob", fmt.Sprintf("rule %s acts at random: nftables does not say which packets it took, so the trace marks none", r.label))
			continue
		}
		r.acted++
		if r.rule.Action == sim.Duplicate {
			continue
		}
		return r
	}
	return nil
}

// twinWindow bounds how soon after a duplicated packet its twin is
// captured (microseconds apart in practice).
const twinWindow = 5 * time.Millisecond

// hasTwin says whether the capture shows, within twinWindow after a
// departing packet, another one like it from the same host.
func hasTwin(h *host, seg *wire.Segment, at time.Duration, rest []rawItem) bool {
	key := pktKey(seg)
	for i := range rest {
		it := &rest[i]
		if it.at-at > twinWindow {
			break
		}
		if it.pkt == nil || it.h != h || !it.pkt.out {
			continue
		}
		if s, err := wire.Parse(it.pkt.data); err == nil && pktKey(&s) == key {
			return true
		}
	}
	return false
}

// dupCopy is a departing packet a duplicate rule took, whose copy (or
// original) the capture has still to show.
type dupCopy struct {
	rule    *installed
	at      time.Duration
	crafted bool
}

// dupWindow bounds how long after a duplicated packet its twin may be
// captured: nf_dup sends the copy within the same hook.
const dupWindow = 50 * time.Millisecond

// takeDupCopy takes the duplicated packet with this key captured within
// dupWindow before at, if there is one, forgetting older ones.
func (h *host) takeDupCopy(key string, at time.Duration) (dupCopy, bool) {
	cs := h.dupCopies[key]
	for len(cs) > 0 && at-cs[0].at > dupWindow {
		cs = cs[1:]
	}
	if len(cs) == 0 {
		delete(h.dupCopies, key)
		return dupCopy{}, false
	}
	d := cs[0]
	if cs = cs[1:]; len(cs) == 0 {
		delete(h.dupCopies, key)
	} else {
		h.dupCopies[key] = cs
	}
	return d, true
}

// outputDup replays the host's output rules on one departing packet, to
// tell whether a duplicate rule took it. The capture sees only what the
// output rules let go, and a packet that got this far passed every rule
// before the one that acts: their counts are not needed, the duplicate
// rule's own are (numgen counts only the packets that reach it).
//
// A packet captured while a duplicate rule's addition or removal was
// being committed may or may not have met it: the rule took it if the
// capture shows its twin right after it (in rest, the packets captured
// after it in this flush).
func (b *Backend) outputDup(h *host, seg *wire.Segment, at time.Duration, rest []rawItem) *installed {
	var dups []int
	for id, r := range b.rules {
		if in, maybe := r.force(at); r.host == h && r.rule.Dir == trace.Out && r.rule.Action == sim.Duplicate && (in || maybe) {
			dups = append(dups, id)
		}
	}
	if len(dups) == 0 {
		return nil
	}
	sort.Ints(dups)
	for _, id := range dups {
		r := b.rules[id]
		if !r.rule.Matches(seg) {
			continue
		}
		if _, maybe := r.force(at); maybe && !hasTwin(h, seg, at, rest) {
			continue // it was not in force yet, or no longer
		}
		r.matched++
		if r.matched <= r.rule.Skip {
			continue
		}
		if r.rule.Count > 0 && r.acted >= r.rule.Count {
			continue
		}
		if r.rule.Probability > 0 && r.rule.Probability < 1 {
			// Whether it took the packet, and so whether the rules after
			// it saw it, is unknown: stop here.
			b.warnOnce("prob", fmt.Sprintf("rule %s acts at random: nftables does not say which packets it took, so the trace marks none", r.label))
			return nil
		}
		r.acted++
		return r
	}
	return nil
}

// listenerOn is the listener that takes a connection to local: of its
// family, an AF_INET one first for IPv4, else a dual-stack AF_INET6 one
// (an IPV6_V6ONLY one takes IPv6 only), as Linux's lookup scores them.
func (h *host) listenerOn(local netip.AddrPort) *ksock {
	var dual *ksock
	v4 := local.Addr().Unmap().Is4()
	for i := len(h.socks) - 1; i >= 0; i-- {
		s := h.socks[i]
		if !s.listener || s.state != "LISTEN" || s.local.Port() != local.Port() {
			continue
		}
		switch {
		case !v4 && s.v6, v4 && !s.v6:
			return s
		case v4 && s.v6 && !s.v6only && dual == nil:
			dual = s
		}
	}
	return dual
}

// v6onlyOf says whether s has IPV6_V6ONLY: set on it, or, for a request
// or a connection a listener made, on its listener (as Linux copies it).
func (h *host) v6onlyOf(s *ksock) bool {
	if s.v6only {
		return true
	}
	if p := h.sockByID(s.parent); p != nil && p.listener {
		return p.v6only
	}
	return false
}

// stateEvent moves a socket to a new state and reports it.
func (b *Backend) stateEvent(h *host, s *ksock, to string, at time.Duration, kind, cause string) {
	from := s.state
	if s.req && from == "CLOSED" {
		from = "LISTEN" // a request is born of its listener, as the simulator says
	}
	if from == to {
		return
	}
	s.state = to
	remote := s.remote
	if s.listener && !remote.IsValid() {
		remote = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		if s.v6 {
			remote = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
	}
	b.emit(trace.Event{At: at, Host: h.name, Kind: trace.KindState, Sock: s.id, Parent: s.parent,
		Local: s.local, Remote: remote, V6Only: h.v6onlyOf(s),
		State: &trace.StateChange{From: from, To: to, CauseKind: kind, Cause: cause}})
}

// onTrace turns a tracepoint record into a state change of one of the
// run's sockets. The tracepoint sees every namespace, so a record is this
// run's only if its socket is known, or it happened in a system call of
// this run's threads, or it creates a connection this run's capture saw.
func (b *Backend) onTrace(ev *inspect.StateChange, at time.Duration) {
	var h *host
	var s *ksock
	var w *threadWin
	if !ev.Softirq {
		w = b.threadAt(ev.PID, ev.At)
	}
	for _, hh := range b.hosts {
		if x := hh.bySk[ev.Skaddr]; x != nil {
			h, s = hh, x
		}
	}
	if s == nil && w != nil {
		h = w.h
		if w.s != nil && w.s.skaddr == 0 {
			s = w.s
		} else if x := h.find(ev.Local, ev.Remote); x != nil && x.skaddr == 0 {
			s = x
		}
	}
	if s == nil && ev.New == inspect.SynRecv && (ev.Old == inspect.Listen || ev.Old == inspect.Close) {
		h = b.hostByAddr(ev.Local.Addr())
		if h == nil {
			return
		}
		if x := h.find(ev.Local, ev.Remote); x != nil && x.req && x.skaddr == 0 {
			// The request became a full socket: same connection.
			x.req = false
			h.req.spanEnd(x, at, 0, 0)
			x.skaddr = ev.Skaddr
			h.bySk[ev.Skaddr] = x
			return
		}
		l := h.listenerOn(ev.Local)
		if l == nil {
			return
		}
		// Another run may have a listener at the same address and port:
		// the connection is this run's only if this run's capture saw
		// the segment that completed it.
		if in, ok := h.lastIn[inKey(ev.Local, ev.Remote)]; !ok || at-in.at > time.Second {
			return
		}
		s = h.newSock(-1)
		s.parent, s.local, s.remote, s.state = l.id, ev.Local, ev.Remote, "LISTEN"
	}
	if s == nil {
		return
	}
	if s.skaddr != ev.Skaddr {
		if s.skaddr != 0 {
			delete(h.bySk, s.skaddr)
		}
		s.skaddr = ev.Skaddr
		h.bySk[ev.Skaddr] = s
	}
	if ev.Local.Port() != 0 && !s.listener {
		s.local = ev.Local
	}
	if ev.Remote.Port() != 0 {
		s.remote = ev.Remote
	}
	if s.listener && ev.Local.Port() != 0 {
		s.local = ev.Local
	}
	to := stateName(ev.New)
	kind, cause := b.cause(h, s, w, ev, at)
	if ev.New == inspect.Close {
		delete(h.bySk, ev.Skaddr)
		s.skaddr = 0
		switch ev.Old {
		case inspect.FinWait1, inspect.FinWait2, inspect.Closing:
			// The socket handed its connection to a TIME_WAIT remnant
			// (tcp_time_wait), which the tracepoint does not report.
			if d := h.lookup(s.local, s.remote, 1<<inspect.TimeWait|1<<inspect.FinWait2); d != nil {
				s.tw = true
				to = stateName(d.State)
			}
		}
	}
	b.stateEvent(h, s, to, at, kind, cause)
}

// appMade are the transitions an application call makes by itself.
var appMade = map[[2]inspect.State]bool{
	{inspect.Close, inspect.SynSent}: true, {inspect.Close, inspect.Listen}: true, {inspect.Listen, inspect.Close}: true,
	{inspect.Established, inspect.FinWait1}: true, {inspect.SynRecv, inspect.FinWait1}: true, {inspect.CloseWait, inspect.LastAck}: true,
}

// cause explains a traced change: the call that made it, the segment
// that just arrived for the connection, or else a timer.
func (b *Backend) cause(h *host, s *ksock, w *threadWin, ev *inspect.StateChange, at time.Duration) (string, string) {
	if w != nil && (appMade[[2]inspect.State{ev.Old, ev.New}] || ev.New == inspect.Close && (w.what == "close" || w.what == "shutdown")) {
		return "app", w.what + "()"
	}
	if in, ok := h.lastIn[inKey(s.local, s.remote)]; ok && at-in.at <= 5*time.Millisecond && at >= in.at {
		return "segment", "rcv " + in.flags.String()
	}
	if w != nil {
		return "app", w.what + "()"
	}
	return "timer", ""
}

// lookup finds one connection in the host's sock_diag listing.
func (h *host) lookup(local, remote netip.AddrPort, states inspect.StateMask) *inspect.Socket {
	socks, err := h.diag.dump(states)
	if err != nil {
		return nil
	}
	for i := range socks {
		if socks[i].Local == local && socks[i].Remote == remote {
			return &socks[i]
		}
	}
	return nil
}

func (b *Backend) onDone(c *completion, at time.Duration) {
	if c.made != nil {
		b.emit(*c.made)
		return
	}
	r := c.res
	h := c.h
	if r.Call.Op == tcp.OpAccept && r.Err == tcp.OK && c.newFd >= 0 {
		l := h.sockByID(uint64(r.Sock))
		r.Ret = int(b.adopt(h, l, c.newFd, &r))
	}
	if r.Call.Op == tcp.OpConnect {
		if s := h.sockByID(uint64(r.Sock)); s != nil && s.kfd >= 0 {
			s.local, s.remote = sockName(s.kfd)
		}
	}
	r.At = at
	b.callEvent(h, &r, at)
}

// poll looks at what only snapshots show: request socks and TIME_WAIT
// remnants that went away, and counters that moved.
func (b *Backend) poll(at time.Duration) {
	for _, h := range b.hosts {
		b.reqPoll(h, at)
		var watch []*ksock
		for _, s := range h.socks {
			if s.tw && s.state != "CLOSED" {
				watch = append(watch, s)
			}
		}
		if look := h.req.look; len(watch) > 0 && (look == nil || look.ok) {
			if look == nil {
				look = b.reqLookAt(h)
			}
			if look.ok {
				socks := look.socks
				for _, s := range watch {
					found := false
					for _, d := range socks {
						// A new connection may take the 4-tuple of an
						// ended one (a bound port, once TIME_WAIT is over).
						if d.Local != s.local || d.Remote != s.remote || d.State != inspect.TimeWait && d.State != inspect.FinWait2 {
							continue
						}
						found = true
						if stateName(d.State) != s.state {
							b.stateEvent(h, s, stateName(d.State), at, "timer", "")
						}
					}
					if !found {
						b.stateEvent(h, s, "CLOSED", at, "timer", "TIME_WAIT over")
					}
				}
			}
		}
		h.req.look = nil
		if at-b.countersAt < counterEvery {
			continue
		}
		for _, c := range b.readCounters(h) {
			old := h.counters[c.Name]
			if c.Value == old {
				continue
			}
			h.counters[c.Name] = c.Value
			if c.Name == "InSegs" || c.Name == "OutSegs" {
				continue
			}
			b.emit(trace.Event{At: at, Host: h.name, Kind: trace.KindCounter,
				Counter: &trace.Counter{Name: c.Name, Delta: c.Value - old, Value: c.Value}})
		}
	}
}

// counterEvery spaces the counter reads that report counter changes
// while time passes (a read of netstat and snmp takes about 0.2 ms);
// Counters always reads them afresh.
const counterEvery = 10 * time.Millisecond

// forgetOld drops bookkeeping that can no longer match anything.
func (b *Backend) forgetOld(hz time.Duration) {
	keep := b.sent[:0]
	for _, s := range b.sent {
		if hz-s.at < time.Second {
			keep = append(keep, s)
		}
	}
	b.sent = keep
	b.thMu.Lock()
	tw := b.threads[:0]
	for _, w := range b.threads {
		if w.to == 0 || b.t0+hz-w.to < 5*time.Second {
			tw = append(tw, w)
		}
	}
	b.threads = tw
	b.thMu.Unlock()
	// What is kept per connection or per crafted packet is looked up
	// within a second of its time: once a second, forget what is older
	// than 5 s (a flush may bring trace records up to 2 s late, the
	// tracer's sync timeout), so that a long run with many connections
	// does not keep them all.
	if hz-b.prunedAt < time.Second {
		return
	}
	b.prunedAt = hz
	for k, in := range b.injected {
		if hz-in.at > 5*time.Second { // dropped before the capture saw it
			delete(b.injected, k)
		}
	}
	for _, h := range b.hosts {
		for k, in := range h.lastIn {
			if hz-in.at > 5*time.Second {
				delete(h.lastIn, k)
			}
		}
	}
}

// Inject sends a crafted segment from a host's raw socket at time at.
func (b *Backend) Inject(hostName string, seg wire.Segment, at time.Duration) error {
	h, err := b.host(hostName)
	if err != nil {
		return err
	}
	if err := b.start(); err != nil {
		return err
	}
	if _, err := seg.Marshal(); err != nil {
		return err
	}
	// Kept in time order; a scenario's injections come in order, so this
	// is an append (a sort per call made 100k injections quadratic).
	in := injection{at: at, h: h, seg: seg}
	if n := len(b.injects); n == 0 || b.injects[n-1].at <= at {
		b.injects = append(b.injects, in)
	} else {
		i := sort.Search(n, func(i int) bool { return b.injects[i].at > at })
		b.injects = slices.Insert(b.injects, i, in)
	}
	b.sendDue()
	return nil
}

func (b *Backend) sendDue() {
	now := b.Now()
	for len(b.injects) > 0 && b.injects[0].at <= now {
		in := b.injects[0]
		b.injects = b.injects[1:]
		pkt, err := in.seg.Marshal()
		if err != nil {
			continue
		}
		var to unix.Sockaddr
		fd, fam := in.h.rawFd, 0
		if in.seg.IsIPv6() {
			to, fd, fam = &unix.SockaddrInet6{Addr: in.seg.Dst.As16()}, in.h.rawFd6, 1
		} else {
			to = &unix.SockaddrInet4{Addr: in.seg.Dst.As4()}
		}
		rx := b.hostByAddr(in.seg.Dst)
		if rx != nil && len(rx.inOwed[fam]) == 0 {
			if v, ok := b.inReceives(rx, fam); ok {
				rx.inBase[fam] = v
			} else {
				rx = nil
			}
		}
		key := pktKey(&in.seg)
		c := b.injected[key]
		c.n, c.at = c.n+1, now
		b.injected[key] = c
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			if c.n--; c.n == 0 {
				delete(b.injected, key)
			} else {
				b.injected[key] = c
			}
			b.emitAt(b.Now(), trace.Event{Host: in.h.name, Kind: trace.KindNote, Note: "injection failed: " + err.Error()})
		} else if rx != nil {
			// Due a link delay after it was meant to leave (the harness
			// may send it late; the simulator would have sent it then).
			rx.inOwed[fam] = append(rx.inOwed[fam], in.at+b.linkDelay)
		}
	}
}

// inReceives reads a host's Ip InReceives (fam 0), or Ip6InReceives less
// Ip6InMcastPkts (fam 1): the packets of the family its namespace took in,
// counted before its firewall and TCP see them. IPv6 leaves out multicast:
// the host's own MLD reports come back to it, and injected segments are
// unicast.
func (b *Backend) inReceives(h *host, fam int) (int64, bool) {
	if h.procBuf == nil {
		h.procBuf = make([]byte, 64<<10)
	}
	f := h.snmp
	if fam == 1 {
		f = h.snmp6
	}
	if f == nil {
		return 0, false
	}
	n, err := f.ReadAt(h.procBuf, 0)
	if err != nil && n == 0 {
		return 0, false
	}
	if fam == 1 {
		// snmp6 is one "name value" pair a line.
		var in, mcast int64
		found := 0
		for _, line := range strings.Split(string(h.procBuf[:n]), "\n") {
			name, v, _ := strings.Cut(line, " ")
			var to *int64
			switch name {
			case "Ip6InReceives":
				to = &in
			case "Ip6InMcastPkts":
				to = &mcast
			default:
				continue
			}
			x, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, false
			}
			*to = x
			found++
		}
		return in - mcast, found == 2
	}
	c := procnet.Counters{}
	if procnet.ParseInto(c, h.procBuf[:n]) != nil {
		return 0, false
	}
	return c.Get("Ip", "InReceives")
}

// injectWait bounds how long a call waits for the packets injected toward
// its host to arrive; one lost on the way costs a call this much once.
const injectWait = 100 * time.Millisecond

// awaitInjected waits until the packets injected toward h that are due
// by now (sent a link delay ago) have reached its IP layer, for at most
// injectWait: the script means the call to follow them, as in the
// simulator, where a packet arrives a link delay after it was sent. TCP
// handles a packet in the softirq that took it in. The count is the
// host's, not the injected packets' own: other packets the host takes in
// meanwhile can end a wait early (most likely when injections not yet due
// stay owed across calls, so that the base is not read again), which
// leaves the call as exposed to a late link as it was without the wait.
func (b *Backend) awaitInjected(h *host) {
	deadline := time.Now().Add(injectWait)
	now := b.Now()
	for fam := range h.inOwed {
		owed := h.inOwed[fam]
		n := dueBy(owed, now)
		if n == 0 {
			continue
		}
		h.inOwed[fam] = owed[:copy(owed, owed[n:])]
		want := h.inBase[fam] + int64(n)
		h.inBase[fam] = want
		for {
			v, ok := b.inReceives(h, fam)
			if !ok || v >= want {
				break
			}
			if time.Now().After(deadline) {
				// Count on from what arrived: a lost packet is waited
				// for once.
				h.inBase[fam] = v
				b.emitAt(b.Now(), trace.Event{Host: h.name, Kind: trace.KindNote,
					Note: fmt.Sprintf("%d injected packets had not arrived after %v: the call goes on", want-v, injectWait)})
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// dueBy counts the injected packets, owed in the order they are due,
// that are due by now.
func dueBy(owed []time.Duration, now time.Duration) int {
	n := 0
	for n < len(owed) && owed[n] <= now {
		n++
	}
	return n
}

// RunUntil lets real time pass until t, looking at the kernel every tick;
// stop is checked after each look.
func (b *Backend) RunUntil(t time.Duration, stop func() bool) bool {
	if err := b.start(); err != nil {
		b.emit(trace.Event{Kind: trace.KindNote, Note: "kernel backend: " + err.Error()})
		return false
	}
	b.endOpening(true)
	for b.interrupted() == nil {
		b.sendDue()
		b.reportLost()
		b.flushNow()
		if stop != nil && stop() {
			return true
		}
		now := b.Now()
		if now >= t {
			return false
		}
		next := min(t, now+b.opt.Tick)
		if len(b.injects) > 0 && b.injects[0].at < next {
			next = b.injects[0].at
		}
		if d := next - b.Now(); d > 0 {
			time.Sleep(d)
		}
	}
	return false
}

// Snapshot lists the host's sockets from sock_diag, each tied to the
// run's socket for it.
func (b *Backend) Snapshot(hostName string) ([]trace.Socket, error) {
	h, err := b.host(hostName)
	if err != nil {
		return nil, err
	}
	if err := b.start(); err != nil {
		return nil, err
	}
	ds, err := h.diag.dump(allStates)
	if err != nil {
		return nil, err
	}
	// The dump is the kernel now; report what led to it before the
	// caller sees it (a socket gone from the dump has its last state
	// change in the trace).
	b.flushUpTo(b.Now())
	cookies := map[uint64]*ksock{}
	for _, s := range h.socks {
		if s.kfd >= 0 {
			if c, err := unix.GetsockoptUint64(s.kfd, unix.SOL_SOCKET, unix.SO_COOKIE); err == nil {
				cookies[c] = s
			}
		}
	}
	synq, v4ports := map[lkey]int{}, v4Listeners(ds)
	for _, d := range ds {
		if d.State == inspect.NewSynRecv {
			synq[queueOf(d.Local, v4ports)]++
		}
	}
	out := make([]trace.Socket, 0, len(ds))
	for _, d := range ds {
		s := cookies[d.Cookie]
		if s == nil {
			s = h.find(d.Local, d.Remote)
		}
		x := trace.Socket{Host: h.name, FD: -1, State: stateName(d.State), Local: d.Local, Remote: d.Remote,
			RecvQ: int(d.RecvQ), SendQ: int(d.SendQ), Retransmits: int(d.Retrans)}
		if s != nil {
			x.V6Only = h.v6onlyOf(s)
		}
		x.Timer = d.TimerName()
		if x.Timer != "" {
			x.TimerLeft = d.Expires
		}
		if d.Info != nil {
			x.RTO = time.Duration(d.Info.Rto) * time.Microsecond
			x.RTT = time.Duration(d.Info.Rtt) * time.Microsecond
			x.Cwnd = int(d.Info.Snd_cwnd)
			x.RetransTotal = int(d.Info.Total_retrans)
		}
		if d.State == inspect.Listen {
			x.SynQueue = synq[listenerQueue(d.Local)]
		}
		if s != nil {
			x.Sock, x.Parent = s.id, s.parent
			if s.kfd >= 0 {
				x.FD = int(s.fd)
			}
			x.Orphan = s.kfd < 0 && s.fd != 0 && !s.tw && d.State != inspect.TimeWait
			x.Accepting = s.parent != 0 && !s.accepted && !s.req && d.State != inspect.NewSynRecv
		} else if d.State != inspect.NewSynRecv && d.State != inspect.TimeWait && d.State != inspect.Listen {
			// A connection the run has not seen yet: still in the accept queue.
			x.Accepting = true
		}
		out = append(out, x)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, c := out[i].Sock, out[j].Sock
		if a == 0 || c == 0 {
			return c == 0 && a != 0
		}
		return a < c
	})
	return out, nil
}

// reportLost notes the script packets the link could not hand to a TUN
// device: the run then fails where it sent them, not later on a packet
// that never came.
func (b *Backend) reportLost() {
	if b.lab == nil || b.lab.link == nil {
		return
	}
	for _, e := range b.lab.link.takeLost() {
		for _, h := range b.hosts {
			if h.peer {
				b.emitAt(b.Now(), trace.Event{Host: h.name, Kind: trace.KindNote, Note: "injection failed: " + e})
			}
		}
	}
}
