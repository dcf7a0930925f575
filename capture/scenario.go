package capture

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Scenario writes a scenario that replays a connection's story in the
// simulator: its hosts, the calls its packets imply (listen, connect,
// writes, reads, close, SO_LINGER 0 for an abortive close, keepalive),
// rules that drop what the findings say was lost, and, as expectations,
// the states explain inferred for both ends, so that a run says whether
// the replay tells the same story. The connection must have been tracked
// with its events (Options.Events or EventsFor).
func Scenario(c *Conn, src string) string {
	g := scen{c: c, base: c.First.Sub(c.t0), sock: [2]time.Duration{-1, -1}}
	return g.build(src)
}

type scen struct {
	c     *Conn
	base  time.Duration // the connection's first packet, from the capture's start
	steps []scenStep
	// deaf is when a rule began to drop all that reached an end (from
	// the capture's start): its later states are not the capture's.
	deaf     [2]time.Duration
	deafLine [2]string
	attacker bool
	// sock is when each end's socket named conn exists (from the
	// capture's start; -1: none), so that no call comes before it.
	sock [2]time.Duration
	// shift moves the connection's steps later, after a preparation
	// (the connections that fill an accept queue).
	shift time.Duration
}

// call adds end i's call on its socket, no earlier than the socket; none
// when it has no socket.
func (g *scen) call(i int, at time.Duration, format string, a ...any) bool {
	if g.sock[i] < 0 {
		return false
	}
	g.at(max(at, g.sock[i]), "%s: "+format, append([]any{[2]string{"client", "server"}[i]}, a...)...)
	return true
}

// drop adds a rule that drops everything reaching end i from at on.
func (g *scen) drop(i int, at time.Duration, name string) {
	if g.deaf[i] != 0 {
		if at < g.deaf[i] {
			// An earlier rule: the first one's place.
			for j := range g.steps {
				if g.steps[j].line == g.deafLine[i] {
					g.steps[j].at = max(at-g.base, 0) + g.shift
				}
			}
			g.deaf[i] = at
		}
		return
	}
	host := [2]string{"client", "server"}[i]
	g.at(at, "rule %s in drop as %s-%s", host, name, host)
	g.deaf[i], g.deafLine[i] = at, g.steps[len(g.steps)-1].line
}

type scenStep struct {
	at   time.Duration
	prio int // at one time, lower first
	line string
}

func (g *scen) at(d time.Duration, format string, a ...any) {
	g.steps = append(g.steps, scenStep{max(d-g.base, 0) + g.shift, 2, fmt.Sprintf(format, a...)})
}

// setup is at for what makes sockets and rules: first at its time.
func (g *scen) setup(d time.Duration, format string, a ...any) {
	g.at(d, format, a...)
	g.steps[len(g.steps)-1].prio = 0
}

// first is at, after the setup and before the calls of its time.
func (g *scen) first(d time.Duration, format string, a ...any) {
	g.at(d, format, a...)
	g.steps[len(g.steps)-1].prio = 1
}

// linkHalf is half the replay's link delay (the simulator's is 1 ms):
// a rule made that long after a segment left drops it, and nothing the
// peer received before.
const linkHalf = 500 * time.Microsecond

func (g *scen) has(kind string) *Finding {
	for i := range g.c.Findings {
		if g.c.Findings[i].Kind == kind {
			return &g.c.Findings[i]
		}
	}
	return nil
}

func (g *scen) hasFor(kind, end string) bool {
	for i := range g.c.Findings {
		if g.c.Findings[i].Kind == kind && g.c.Findings[i].End == end {
			return true
		}
	}
	return false
}

func fmtAt(d time.Duration) string {
	s := strconv.FormatFloat(d.Seconds(), 'f', 6, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + "s"
}

func scenarioAddrs(c *Conn) (cl, sv string, replaced bool) {
	a, b := c.Client.Addr.Addr(), c.Server.Addr.Addr()
	ok := func(x netip.Addr) bool {
		return x.Is4() && !x.IsLoopback() && !x.IsUnspecified() && !x.IsMulticast() && x != netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	if ok(a) && ok(b) && a != b {
		return a.String(), b.String(), false
	}
	return "10.0.0.1", "10.0.0.2", true
}

func (g *scen) build(src string) string {
	c := g.c
	var b strings.Builder
	cport, sport := c.Client.Addr.Port(), c.Server.Addr.Port()
	ca, sa, replaced := scenarioAddrs(c)
	fmt.Fprintf(&b, "# Written by `tcplab explain --scenario` from %s, connection #%d (%v > %v).\n", src, c.Index, c.Client.Addr, c.Server.Addr)
	b.WriteString("# The calls are inferred from the packets, the rules drop what the capture shows was lost,\n")
	b.WriteString("# and the expectations at the end are the states explain inferred: the run says whether\n")
	b.WriteString("# the replay tells the same story. Change it and run it: tcplab run FILE (--kernel: on Linux).\n")
	if replaced {
		fmt.Fprintf(&b, "# The capture's addresses (%v, %v) are replaced: scenario hosts have distinct IPv4 addresses.\n", c.Client.Addr.Addr(), c.Server.Addr.Addr())
	}
	var kinds []string
	for _, f := range c.Findings {
		kinds = append(kinds, f.Kind)
	}
	title := fmt.Sprintf("Connection #%d of %s", c.Index, src)
	if len(kinds) > 0 {
		title += ": " + strings.Join(kinds, ", ")
	}
	fmt.Fprintf(&b, "title %s\n", oneLine(title))
	for _, f := range c.Findings {
		fmt.Fprintf(&b, "explain %s: %s.\n", f.Kind, oneLine(f.Summary))
	}
	fmt.Fprintf(&b, "\nhost client %s\nhost server %s\n", ca, sa)
	head := b.String()
	b.Reset()

	midway := c.Client.State != "" && len(c.Events) > 0 && !c.startedWithSyn()
	simOpen := g.has("simultaneous-open") != nil
	refused := g.has("refused") != nil
	queueFull := g.has("accept-queue-full") != nil
	accepted := !refused && !simOpen && !queueFull
	switch {
	case refused:
		g.setup(g.base, "# nothing listens on port %d: the SYN is refused", sport)
	case simOpen:
	case queueFull:
		// Backlog 2: three connections fit in the accept queue. Two
		// are made first; then a third and this one at once, both in
		// the SYN queue (two fit): the third's ACK fills the accept
		// queue, this one's is dropped.
		g.setup(g.base, "# the accept queue is full: backlog 2 holds three connections; nothing accepts them")
		g.setup(g.base, "server: listen %d backlog 2", sport)
		g.setup(g.base, "client: connect server:%d as filler1", sport)
		g.setup(g.base, "client: connect server:%d as filler2", sport)
		g.setup(g.base, "until client: filler2 connect returned within 1s")
		g.shift = 10 * time.Millisecond
		g.setup(g.base, "client: connect server:%d as filler3", sport)
	default:
		g.setup(g.base, "server: listen %d", sport)
		g.setup(g.base, "server: accept as conn")
		// Its calls come once accept() has returned (below).
		if ch := reachedState(c.Server, Established); ch != nil {
			g.sock[1] = ch.At.Sub(c.t0)
		} else if midway {
			g.sock[1] = g.base
		}
	}
	if c.synLost() && !midway {
		g.setup(g.base, "rule server in dport %d drop as lost-syn", sport)
	}
	if c.synackLost() && !simOpen && !midway {
		g.setup(g.base, "rule client in flags [S.] sport %d drop as lost-synack", sport)
	}
	if midway {
		g.setup(g.base, "# the capture starts mid-connection: the replay opens it at its start")
	}

	// The packets each end sent, in order.
	var sent [2]wire.Seq
	var hasSent [2]bool
	var lastWrite [2]time.Duration
	var pendingWrite [2]int
	var pendingAt [2]time.Duration
	closed := [2]bool{}
	side := func(host string) int {
		if host == "server" {
			return 1
		}
		return 0
	}
	names := [2]string{"client", "server"}
	flush := func(i int) {
		n := pendingWrite[i]
		for n > 0 {
			w := min(n, 1<<20)
			g.call(i, pendingAt[i], "write conn %d bytes", w)
			n -= w
		}
		pendingWrite[i] = 0
	}
	stuck := [2]bool{}
	for i, name := range names {
		for _, f := range c.Findings {
			if f.Kind == "zero-window" && f.End == name && strings.Contains(f.Summary, "never reopened") {
				stuck[i] = true
			}
		}
	}
	connected := false
	for _, e := range c.Events {
		if e.Kind != trace.KindPacket || e.Packet.Dir != trace.Out {
			continue
		}
		i := side(e.Host)
		s := &e.Packet.Segment
		n := len(s.Payload)
		switch {
		case s.Flags&wire.SYN != 0 && s.Flags&wire.ACK == 0 && g.sock[i] < 0 && (i == 0 || simOpen):
			if i == 0 {
				g.setup(e.At, "client: connect server:%d from %d as conn", sport, cport)
			} else {
				g.setup(e.At, "server: connect client:%d from %d as conn", cport, sport)
			}
			g.sock[i] = e.At
		case !connected && g.sock[0] < 0:
			// Its first packet is not the client's SYN (the capture
			// starts mid-connection): the replay connects at the start.
			g.setup(g.base, "client: connect server:%d from %d as conn", sport, cport)
			g.sock[0] = g.base
		}
		connected = true
		if !hasSent[i] {
			sent[i], hasSent[i] = s.Seq, true
			if s.Flags&wire.SYN != 0 {
				sent[i] = sent[i].Add(1)
			}
		}
		if n > 0 && s.Seq.Add(n).GreaterThan(sent[i]) {
			if pendingWrite[i] > 0 && e.At-lastWrite[i] > 10*time.Millisecond {
				flush(i)
			}
			if pendingWrite[i] == 0 {
				pendingAt[i] = e.At
				if !stuck[1-i] && !closed[1-i] {
					g.call(1-i, e.At, "read conn")
				}
			}
			pendingWrite[i] += int(s.Seq.Add(n).Diff(sent[i]))
			lastWrite[i] = e.At
			sent[i] = s.Seq.Add(n)
		}
		if s.Flags&wire.FIN != 0 && !closed[i] {
			flush(i)
			closed[i] = true
			if g.hasFor("fin-unanswered", names[i]) {
				g.drop(1-i, e.At+linkHalf, "deaf")
			}
			if g.hasFor("last-ack-lost", names[i]) {
				g.at(e.At-time.Microsecond, "rule %s out flags [.] count 1 drop as lost-ack", names[1-i])
			}
			if g.hasFor("close-wait-held", names[1-i]) {
				g.call(1-i, e.At, "read conn")
			}
			if c.peerSentDataAfter(i, e.At) && !g.hasFor("close-wait-data-loss", names[1-i]) && !g.hasFor("fin-wait-2-timeout", names[i]) {
				g.call(i, e.At, "shutdown conn wr")
			} else {
				g.call(i, e.At, "close conn")
			}
		}
		if s.Flags&wire.RST != 0 && !closed[i] && g.hasFor("abortive-close", names[i]) {
			flush(i)
			closed[i] = true
			if g.call(i, e.At, "linger conn 0s") {
				g.steps[len(g.steps)-1].prio = 3
				g.call(i, e.At, "close conn")
				g.steps[len(g.steps)-1].prio = 3
			}
		}
	}
	for i := range names {
		flush(i)
	}
	// An end retransmitting until it gave up, or probing a dead peer:
	// its peer dropped everything from the first lost segment on.
	for i, name := range names {
		e := c.Client
		if i == 1 {
			e = c.Server
		}
		if g.hasFor("retransmissions-given-up", name) && e.ev.retx.n > 0 {
			at := c.firstSent(name, e.ev.retx.first[0].frame)
			g.drop(1-i, at+linkHalf, "lost-data")
		}
		if g.hasFor("keepalive", name) && e.ev.probes.n > 0 {
			up := c.handshakeDone(name)
			idle := max(e.ev.probeIdle.Round(time.Second), time.Second)
			interval := time.Second
			if len(e.ev.probes.first) > 1 {
				interval = max(e.ev.probes.first[1].time().Sub(e.ev.probes.first[0].time()).Round(time.Second), time.Second)
			}
			g.call(i, up, "keepalive conn on idle %s interval %s count %d", fmtAt(idle), fmtAt(interval), max(e.ev.probes.n-e.ev.answered, 1))
			if e.ev.answered < e.ev.probes.n {
				first := e.ev.probes.first[min(e.ev.answered, len(e.ev.probes.first)-1)].time().Sub(c.t0)
				g.drop(1-i, first-time.Millisecond, "vanished")
				g.at(first-time.Millisecond, "rule %s out drop as vanished-out-%s", names[1-i], names[1-i])
			}
		}
	}
	if accepted && g.sock[1] >= 0 {
		// The server's socket exists once accept() returns: at its
		// ESTABLISHED, or (mid-connection) right after the connect.
		at := g.base
		for _, ch := range c.Server.Changes {
			if ch.To == Established {
				at = ch.At.Sub(c.t0)
				break
			}
		}
		g.first(at, "until server: conn accept returned within 5s")
	}
	// RSTs forged in an end's name (the capture has both taps): an
	// attacker sends them again, at the same distance from the number
	// their receiver expected.
	for i, e := range c.Ends() {
		for _, f := range e.ev.forgedOff {
			g.attacker = true
			g.first(f.at.Sub(c.t0)-2*linkHalf, "attacker: inject [R] spoofing %s:conn seq %+d", names[1-i], f.off)
		}
	}

	// Run until the last change explain inferred within the capture
	// (timers included).
	end := c.Last.Sub(c.t0)
	for _, e := range c.Ends() {
		for _, ch := range e.Changes {
			if !strings.HasSuffix(ch.Probably, "after the capture's end") {
				end = max(end, ch.At.Sub(c.t0))
			}
		}
	}
	b.WriteString(head)
	if g.attacker {
		attacker := "10.0.0.66"
		if attacker == ca || attacker == sa {
			attacker = "10.0.0.67"
		}
		fmt.Fprintf(&b, "host attacker %s\n", attacker)
	}
	b.WriteString("\n")
	sort.SliceStable(g.steps, func(i, j int) bool {
		return g.steps[i].at < g.steps[j].at || g.steps[i].at == g.steps[j].at && g.steps[i].prio < g.steps[j].prio
	})
	now := time.Duration(0)
	for _, s := range g.steps {
		if s.at > now {
			// after, not at: a step that waits (until) may end later
			// than the next one's time on the kernel.
			fmt.Fprintf(&b, "after %s\n", fmtAt(s.at-now))
			now = s.at
		}
		b.WriteString(s.line + "\n")
	}
	// Until the capture saw no more (its findings are made up to then),
	// and 10 ms for the last packets' answers.
	end = max(end, c.seenUntil.Sub(c.t0))
	fmt.Fprintf(&b, "after %s\n", fmtAt(max(end-g.base+g.shift-now, 0)+10*time.Millisecond))
	if !midway {
		b.WriteString("\n# the states explain inferred from the capture\n")
		for i, e := range c.Ends() {
			if i == 1 && !simOpen && (!accepted || reachedState(e, Established) == nil) {
				continue // no accept() returned: no socket to name
			}
			var path []string
			for _, ch := range e.Changes {
				if ch.To == Listen || strings.HasPrefix(ch.Cause, "TIME_WAIT ended by a new SYN") && !c.twNearEnd ||
					strings.HasSuffix(ch.Probably, "after the capture's end") {
					continue // the next connection's doing, or a guess past the capture
				}
				if g.deaf[i] != 0 && ch.At.Sub(c.t0) > g.deaf[i] {
					break // a rule drops all it receives: the capture's later states are its tap's
				}
				path = append(path, ch.To)
			}
			again := false
			for j := 1; j < len(path); j++ {
				again = again || path[j-1] == Closed
			}
			switch {
			case again:
				fmt.Fprintf(&b, "# the %s's states go on after CLOSED (%s): one socket cannot, so they are not checked\n", names[i], strings.Join(path, " "))
			case len(path) > 0:
				fmt.Fprintf(&b, "expect %s: conn path %s\n", names[i], strings.Join(path, " "))
			}
		}
	}
	return b.String()
}

func reachedState(e *End, state string) *Change {
	for i := range e.Changes {
		if e.Changes[i].To == state {
			return &e.Changes[i]
		}
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// startedWithSyn says whether the capture saw the connection's first SYN.
func (c *Conn) startedWithSyn() bool { return c.Client.ev.syn.n > 0 || c.Server.ev.syn.n > 0 }

// peerSentDataAfter says whether the peer of end i sent new data after t
// (then i only shut down its sending side).
func (c *Conn) peerSentDataAfter(i int, t time.Duration) bool {
	peer := "server"
	if i == 1 {
		peer = "client"
	}
	for _, e := range c.Events {
		if e.At > t && e.Kind == trace.KindPacket && e.Packet.Dir == trace.Out && e.Host == peer && len(e.Packet.Segment.Payload) > 0 &&
			e.Packet.Segment.Flags&wire.RST == 0 {
			return true
		}
	}
	return false
}

// firstSent is when the end first sent the segment it sent again in
// frame (from the capture's start).
func (c *Conn) firstSent(end string, frame int) time.Duration {
	var seq wire.Seq
	found := false
	for _, e := range c.Ends() {
		if e.Name == end {
			for _, m := range e.ev.retx.first {
				if m.frame == frame {
					found = true
					at := m.time().Sub(c.t0)
					for _, ev := range c.Events {
						if ev.Kind == trace.KindPacket && ev.Packet.Dir == trace.Out && ev.Host == end && ev.At == at {
							seq = ev.Packet.Segment.Seq
							break
						}
					}
				}
			}
		}
	}
	if found {
		for _, ev := range c.Events {
			if ev.Kind == trace.KindPacket && ev.Packet.Dir == trace.Out && ev.Host == end && ev.Packet.Segment.Seq == seq && len(ev.Packet.Segment.Payload) > 0 {
				return ev.At
			}
		}
	}
	return c.First.Sub(c.t0)
}

// handshakeDone is when the end became ESTABLISHED (from the capture's
// start), or the connection's first packet.
func (c *Conn) handshakeDone(end string) time.Duration {
	for _, e := range c.Ends() {
		if e.Name != end {
			continue
		}
		for _, ch := range e.Changes {
			if ch.To == Established {
				return ch.At.Sub(c.t0) + time.Millisecond
			}
		}
	}
	return c.First.Sub(c.t0)
}
