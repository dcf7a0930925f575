package tcp

// A differential test of pickEphemeral's cache of full parities
// (Host.exhausted): two hosts built alike, one with the cache and one with
// noPortCache set, go through the same random sequence of calls, segments
// from a simulated peer, time and sysctl changes over a tiny ephemeral
// range, so that searches find the range full often. After every step both
// must have answered alike: the same call results, the same local port for
// every connect, the same segments and events. A cache that misses a
// change freeing a port (a bump of portsGen left out, a key part dropped)
// makes the cached host refuse a connect with EADDRNOTAVAIL, or pick
// another port, where the full scan finds one. Besides the connects, a
// search towards the destination a step is about (pickEphemeral itself,
// which takes no port) is compared before and after every step: it fills
// the cache when the range is full, so that whatever the step frees at the
// same instant is checked against a full scan at once.
//
// Of the three bumps of portsGen, those in Host.unbindPort (a port bound
// with bind() released) and in conn.setState (a move to TIME_WAIT that
// tcp_tw_reuse may take at once) are each the only one for some change;
// the one in conn.unhash never is today (a 4-tuple is unhashed only by
// finish, right after its setState(Closed), which bumps too), so that no
// test can see it go.
//
// The peer answers the host's SYNs with SYN-ACKs (with or without
// timestamps) or RSTs, acknowledges its data and FINs (or not), sends FINs
// (with or without timestamps: a FIN without them leaves the TIME_WAIT's
// timestamp age as it was, so that tcp_tw_reuse may let connect() take it
// over at once) and resets. Identifiers start with "pc".

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

var (
	pcAddr = netip.MustParseAddr("10.0.0.2")
	pcDsts = []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.1:80"),
		netip.MustParseAddrPort("10.0.0.1:81"),
		netip.MustParseAddrPort("10.0.0.3:80"),
		netip.MustParseAddrPort("127.0.0.1:80"), // tcp_tw_reuse 2 covers it
	}
	pcRanges = []string{"40000 40007", "40000 40003", "40002 40005", "40000 40001", "40001 40006"}
)

// pcPeer is the simulated remote end of one 4-tuple (seen from the host).
type pcPeer struct {
	t        tuple
	hostISS  wire.Seq
	hostNxt  wire.Seq // just past everything the host sent
	hostFin  bool     // the host sent its FIN
	hostTS   bool     // the host's SYN offered timestamps
	hostTSv  uint32   // the host's latest TSval
	answered bool     // the peer sent its SYN-ACK
	useTS    bool     // and it carried timestamps
	peerNxt  wire.Seq
	peerFin  bool
}

type pcWorld struct {
	r     *rand.Rand
	h     [2]*Host // h[0] keeps the cache, h[1] scans in full every time
	fds   []FD     // descriptors open on both
	peers []*pcPeer
	dsts  []netip.AddrPort
	last  netip.AddrPort // the destination of the latest connect
	low   uint16
	high  uint16
	log   []string
	fail  string

	// what the sequence reached, for the coverage check
	exhausted, twTaken   int
	probesFull, probesTW int
	twAtOnce             int // TIME_WAITs that tcp_tw_reuse could take at once
}

// pcTwReuse is a tcp_tw_reuse value, 1 (any destination) half the time.
func pcTwReuse(r *rand.Rand) string { return []string{"0", "1", "1", "2"}[r.IntN(4)] }

func pcNewWorld(seed uint64) *pcWorld {
	w := &pcWorld{r: rand.New(rand.NewPCG(seed, 0x706f72746361))}
	p := Linux()
	rng := pcRanges[w.r.IntN(len(pcRanges))]
	settings := [][2]string{
		{"ip_local_port_range", rng},
		{"tcp_tw_reuse", pcTwReuse(w.r)},
		{"tcp_time_wait", []string{"2", "3", "5", "60"}[w.r.IntN(4)]},
		{"tcp_syn_retries", []string{"1", "2", "6"}[w.r.IntN(3)]},
	}
	if w.r.IntN(6) == 0 {
		settings = append(settings, [2]string{"tcp_timestamps", "0"})
	}
	for _, s := range settings {
		if err := p.Set(s[0], s[1]); err != nil {
			panic(err)
		}
	}
	w.low, w.high = p.EphemeralLow, p.EphemeralHigh
	for i := range w.h {
		w.h[i] = NewHost(Config{Name: "us", Addr: pcAddr, Profile: p, Seed: seed})
	}
	w.h[1].noPortCache = true
	w.logf("profile %v", settings)
	// Two or three destinations, the loopback one in some sequences.
	perm := w.r.Perm(len(pcDsts))
	w.dsts = make([]netip.AddrPort, 2+w.r.IntN(2))
	for i := range w.dsts {
		w.dsts[i] = pcDsts[perm[i]]
	}
	w.last = w.dsts[0]
	return w
}

func (w *pcWorld) logf(format string, a ...any) {
	w.log = append(w.log, fmt.Sprintf("%v ", w.h[0].Now())+fmt.Sprintf(format, a...))
}

func (w *pcWorld) failf(format string, a ...any) {
	if w.fail == "" {
		w.fail = fmt.Sprintf(format, a...)
	}
}

// do makes the same call on both hosts and compares the results and, for a
// connect, the local port taken.
func (w *pcWorld) do(c Call) Result {
	var res [2]Result
	for i, h := range w.h {
		res[i] = h.Do(c)
	}
	a, b := res[0], res[1]
	w.logf("%v", &a)
	if a.Err != b.Err || a.Ret != b.Ret || a.Pending != b.Pending {
		w.failf("%v: cached host: %v, full scan: %v", c, &a, &b)
	}
	if c.Op == OpConnect {
		pa, pb := w.lport(0, c.FD), w.lport(1, c.FD)
		if pa != pb {
			w.failf("%v: cached host took port %d, full scan port %d", c, pa, pb)
		}
		if a.Err == EADDRNOTAVAIL {
			w.exhausted++
		}
	}
	w.sync()
	return a
}

func (w *pcWorld) lport(i int, fd FD) uint16 {
	if c := w.h[i].fds[fd]; c != nil {
		return c.lport
	}
	return 0
}

// sync compares what both hosts sent and reported, and lets the peer
// model learn from the segments.
func (w *pcWorld) sync() {
	var segs [2][]wire.Segment
	var evs [2][]Event
	for i, h := range w.h {
		segs[i] = h.PollSegments(nil)
		evs[i] = h.PollEvents(nil)
	}
	if !slices.EqualFunc(segs[0], segs[1], func(a, b wire.Segment) bool { return a.String() == b.String() }) {
		w.failf("segments differ:\ncached host:\n%s\nfull scan:\n%s", pcSegs(segs[0]), pcSegs(segs[1]))
	}
	if !slices.EqualFunc(evs[0], evs[1], func(a, b Event) bool { return a.String() == b.String() }) {
		w.failf("events differ:\ncached host:\n%s\nfull scan:\n%s", pcEvents(evs[0]), pcEvents(evs[1]))
	}
	for _, e := range evs[0] {
		if e.Kind == EvNote && strings.Contains(e.Note, "takes over the TIME_WAIT") {
			w.twTaken++
		}
	}
	for _, e := range evs[0] {
		if e.Kind == EvState && e.To == TimeWait {
			t := tuple{laddr: e.Local.Addr(), raddr: e.Remote.Addr(), lport: e.Local.Port(), rport: e.Remote.Port()}
			if c := w.h[0].conns[t]; c != nil && w.h[0].twReusable(c) {
				w.twAtOnce++
			}
		}
	}
	for i := range segs[0] {
		w.learn(&segs[0][i])
	}
}

func pcSegs(s []wire.Segment) string {
	var b strings.Builder
	for i := range s {
		b.WriteString("  " + s[i].String() + "\n")
	}
	return b.String()
}

func pcEvents(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString("  " + e.String() + "\n")
	}
	return b.String()
}

func (w *pcWorld) peerOf(t tuple) int {
	return slices.IndexFunc(w.peers, func(p *pcPeer) bool { return p.t == t })
}

// learn updates the peer model with a segment the host sent.
func (w *pcWorld) learn(s *wire.Segment) {
	t := tuple{laddr: s.Src, raddr: s.Dst, lport: s.SrcPort, rport: s.DstPort}
	i := w.peerOf(t)
	switch {
	case s.Flags&wire.RST != 0:
		if i >= 0 {
			w.peers = slices.Delete(w.peers, i, i+1)
		}
		return
	case s.Flags&wire.SYN != 0 && s.Flags&wire.ACK == 0:
		if i >= 0 && w.peers[i].hostISS == s.Seq {
			return // a retransmission
		}
		p := &pcPeer{t: t, hostISS: s.Seq, hostNxt: s.Seq.Add(1), hostTS: s.Options.HasTimestamps, hostTSv: s.Options.TSVal}
		if i >= 0 {
			w.peers[i] = p // a new incarnation of the 4-tuple
		} else {
			w.peers = append(w.peers, p)
		}
		return
	}
	if i < 0 {
		return
	}
	p := w.peers[i]
	if s.End().GreaterThan(p.hostNxt) {
		p.hostNxt = s.End()
	}
	if s.Flags&wire.FIN != 0 {
		p.hostFin = true
	}
	if s.Options.HasTimestamps {
		p.hostTSv = s.Options.TSVal
	}
}

// input delivers a segment from the peer to both hosts.
func (w *pcWorld) input(s wire.Segment) {
	w.logf("peer: %s", s.String())
	for _, h := range w.h {
		c := s
		h.Input(&c)
	}
	w.sync()
}

func (w *pcWorld) peerSeg(p *pcPeer, flags wire.Flags, seq, ack wire.Seq, ts bool) wire.Segment {
	s := wire.Segment{Src: p.t.raddr, Dst: p.t.laddr, SrcPort: p.t.rport, DstPort: p.t.lport,
		Seq: seq, Ack: ack, Flags: flags, Window: 65535, TTL: 64}
	if ts {
		s.Options.HasTimestamps = true
		s.Options.TSVal = uint32(w.h[0].Now()/time.Millisecond) + 7
		s.Options.TSEcr = p.hostTSv
	}
	return s
}

// peerAct has the peer of a random 4-tuple do something.
func (w *pcWorld) peerAct() {
	if len(w.peers) == 0 {
		return
	}
	i := w.r.IntN(len(w.peers))
	p := w.peers[i]
	// The next connect likely goes where the peer is: a port this
	// segment frees is then sought at once.
	w.focus(netip.AddrPortFrom(p.t.raddr, p.t.rport))
	if !p.answered {
		if w.r.IntN(4) == 0 {
			w.peers = slices.Delete(w.peers, i, i+1)
			w.input(w.peerSeg(p, wire.RST|wire.ACK, 0, p.hostISS.Add(1), false))
			return
		}
		p.answered = true
		p.useTS = p.hostTS && w.r.IntN(5) != 0
		iss := wire.Seq(w.r.Uint32())
		p.peerNxt = iss.Add(1)
		s := w.peerSeg(p, wire.SYN|wire.ACK, iss, p.hostISS.Add(1), p.useTS)
		s.Options.HasMSS, s.Options.MSS = true, 1460
		w.input(s)
		return
	}
	ack := p.hostNxt
	if p.hostFin && w.r.IntN(4) == 0 {
		ack = ack.Add(-1) // the host's FIN not acknowledged yet
	}
	ts := p.useTS && w.r.IntN(2) == 0
	switch k := w.r.IntN(10); {
	case k < 4:
		w.input(w.peerSeg(p, wire.ACK, p.peerNxt, ack, p.useTS && w.r.IntN(4) != 0))
	case k < 9:
		seq := p.peerNxt
		if p.peerFin {
			seq = seq.Add(-1) // a retransmitted FIN
		} else {
			p.peerFin = true
			p.peerNxt = p.peerNxt.Add(1)
		}
		w.input(w.peerSeg(p, wire.FIN|wire.ACK, seq, ack, ts))
	default:
		w.peers = slices.Delete(w.peers, i, i+1)
		w.input(w.peerSeg(p, wire.RST, p.peerNxt, 0, false))
	}
}

// probe is a search for a port towards the destination of the latest
// connect (or the one a step is about to act on) on both hosts, compared:
// done before and after every step at the same instant, it fills the
// cache when the range is full and then checks it against a full scan
// once the step may have freed a port. A probe takes no port (it moves
// the perturbation table on, alike on both hosts).
func (w *pcWorld) probe() {
	d := w.last
	t := tuple{laddr: pcAddr, raddr: d.Addr(), rport: d.Port()}
	if d.Addr().IsLoopback() {
		t.laddr = d.Addr()
	}
	var port [2]uint16
	var tw [2]SockID
	var e [2]Errno
	for i, h := range w.h {
		var o *conn
		port[i], o, e[i] = h.pickEphemeral(t)
		if o != nil {
			tw[i] = o.id
		}
	}
	if port[0] != port[1] || tw[0] != tw[1] || e[0] != e[1] {
		w.failf("a search for a port towards %v: cached host: port %d (TIME_WAIT sock %d) %v, full scan: port %d (sock %d) %v",
			d, port[0], tw[0], pcErr(e[0]), port[1], tw[1], pcErr(e[1]))
	}
	if e[0] == EADDRNOTAVAIL {
		w.probesFull++
	} else if tw[0] != 0 {
		w.probesTW++
	}
}

func pcErr(e Errno) string {
	if e == OK {
		return "OK"
	}
	return e.Name()
}

// focus makes d the destination of interest, probed at once.
func (w *pcWorld) focus(d netip.AddrPort) {
	w.last = d
	w.probe()
}

// focusFD focuses on the destination of a connected descriptor.
func (w *pcWorld) focusFD(fd FD) {
	if c := w.h[0].fds[fd]; c != nil && c.hashed {
		w.focus(c.remoteAP())
	}
}

func (w *pcWorld) dst() netip.AddrPort {
	if w.r.IntN(2) == 0 {
		return w.last // often the same one: searches after a full one
	}
	w.last = w.dsts[w.r.IntN(len(w.dsts))]
	return w.last
}

func (w *pcWorld) socket() FD {
	r := w.do(Call{Op: OpSocket})
	fd := FD(r.Ret)
	w.fds = append(w.fds, fd)
	return fd
}

func (w *pcWorld) someFD() (FD, bool) {
	if len(w.fds) == 0 {
		return 0, false
	}
	if w.r.IntN(2) == 0 {
		// Half the time an open connection: its close starts the way to
		// FIN_WAIT2 and TIME_WAIT.
		var open []FD
		for _, fd := range w.fds {
			if c := w.h[0].fds[fd]; c != nil && (c.state == Established || c.state == CloseWait) {
				open = append(open, fd)
			}
		}
		if len(open) > 0 {
			return open[w.r.IntN(len(open))], true
		}
	}
	return w.fds[w.r.IntN(len(w.fds))], true
}

func (w *pcWorld) dropFD(fd FD) {
	if i := slices.Index(w.fds, fd); i >= 0 {
		w.fds = slices.Delete(w.fds, i, i+1)
	}
}

func (w *pcWorld) set(name, value string) {
	w.logf("sysctl %s = %s", name, value)
	for _, h := range w.h {
		if err := h.Set(name, value); err != nil {
			w.failf("Set(%s, %s): %v", name, value, err)
		}
	}
}

func (w *pcWorld) advance(d time.Duration) {
	w.logf("time +%v", d)
	now := w.h[0].Now() + d
	for _, h := range w.h {
		h.Advance(now)
	}
	w.sync()
}

// step does one random thing.
func (w *pcWorld) step() {
	switch k := w.r.IntN(40); {
	case k < 7: // connect a new socket
		fd := w.socket()
		w.do(Call{Op: OpConnect, FD: fd, Addr: w.dst(), NonBlock: true})
	case k < 9: // connect until the range is full for a destination
		dst := w.dst()
		for range int(w.high-w.low) + 2 {
			fd := w.socket()
			if w.do(Call{Op: OpConnect, FD: fd, Addr: dst, NonBlock: true}).Err == EADDRNOTAVAIL {
				break
			}
		}
	case k < 11: // connect a socket again: failed, refused, connected, bound
		if fd, ok := w.someFD(); ok {
			w.do(Call{Op: OpConnect, FD: fd, Addr: w.dst(), NonBlock: true})
		}
	case k < 15:
		if fd, ok := w.someFD(); ok {
			w.focusFD(fd)
			w.do(Call{Op: OpClose, FD: fd})
			w.dropFD(fd)
		}
	case k < 16: // abort: SO_LINGER 0, close
		if fd, ok := w.someFD(); ok {
			w.focusFD(fd)
			w.do(Call{Op: OpSetOption, FD: fd, Option: Option{Kind: OptLinger, On: true}})
			w.do(Call{Op: OpClose, FD: fd})
			w.dropFD(fd)
		}
	case k < 17:
		if fd, ok := w.someFD(); ok {
			w.focusFD(fd)
			w.do(Call{Op: OpShutdown, FD: fd, How: ShutWR})
		}
	case k < 18: // bind() a port of the range (or 0), sometimes SO_REUSEADDR
		fd := w.socket()
		if w.r.IntN(2) == 0 {
			w.do(Call{Op: OpSetOption, FD: fd, Option: Option{Kind: OptReuseAddr, On: true}})
		}
		port := uint16(0)
		if w.r.IntN(4) != 0 {
			port = w.low + uint16(w.r.IntN(int(w.high-w.low)+1))
		}
		w.do(Call{Op: OpBind, FD: fd, Port: port})
	case k < 30:
		w.peerAct()
	case k < 31:
		w.set("tcp_tw_reuse", pcTwReuse(w.r))
	case k < 32: // now and then another range
		if w.r.IntN(3) != 0 {
			w.set("tcp_tw_reuse", pcTwReuse(w.r))
			break
		}
		rng := pcRanges[w.r.IntN(len(pcRanges))]
		w.set("ip_local_port_range", rng)
		f := strings.Fields(rng)
		lo, _ := strconv.Atoi(f[0])
		hi, _ := strconv.Atoi(f[1])
		w.low, w.high = uint16(lo), uint16(hi)
	default:
		var d time.Duration
		switch w.r.IntN(6) {
		case 0:
			d = time.Duration(w.r.IntN(200)) * time.Millisecond
		case 1, 2:
			d = time.Second + time.Duration(w.r.IntN(1000))*time.Millisecond
		case 3: // to the next timer exactly: a TIME_WAIT's end, say
			if at, ok := w.h[0].NextDeadline(); ok && at > w.h[0].Now() {
				d = at - w.h[0].Now()
			}
		case 4:
			d = w.h[0].Profile().TimeWait + time.Duration(w.r.IntN(3)-1)*time.Millisecond
		default:
			d = time.Duration(5+w.r.IntN(120)) * time.Second
		}
		w.advance(d)
	}
}

func (w *pcWorld) run(steps int) {
	for range steps {
		w.probe()
		w.step()
		w.probe()
		if w.fail != "" {
			return
		}
		// Keep the descriptor table small, as a program would.
		for len(w.fds) > 24 && w.fail == "" {
			fd := w.fds[0]
			w.do(Call{Op: OpClose, FD: fd})
			w.dropFD(fd)
		}
	}
	a, b := w.h[0].Bugs(), w.h[1].Bugs()
	if !slices.Equal(a, b) {
		w.failf("engine bugs differ: cached %v, full scan %v", a, b)
	}
	if !slices.Equal(w.h[0].CounterValues(), w.h[1].CounterValues()) {
		w.failf("counters differ")
	}
}

// TestPortCacheDifferential runs many random sequences; TCPLAB_PC_RUNS and
// TCPLAB_PC_SEED make it a longer search.
func TestPortCacheDifferential(t *testing.T) {
	runs, seed0 := 500, uint64(1)
	if testing.Short() {
		runs = 100
	}
	if v, err := strconv.Atoi(os.Getenv("TCPLAB_PC_RUNS")); err == nil && v > 0 {
		runs = v
	}
	if v, err := strconv.ParseUint(os.Getenv("TCPLAB_PC_SEED"), 10, 64); err == nil {
		seed0 = v
	}
	const steps = 200
	var failed []uint64
	var exhausted, twTaken, twAtOnce, probesFull, probesTW int
	for seed := seed0; seed < seed0+uint64(runs); seed++ {
		w := pcNewWorld(seed)
		w.run(steps)
		exhausted += w.exhausted
		twTaken += w.twTaken
		twAtOnce += w.twAtOnce
		probesFull += w.probesFull
		probesTW += w.probesTW
		if w.fail == "" {
			continue
		}
		failed = append(failed, seed)
		if len(failed) == 1 {
			tail := w.log[max(0, len(w.log)-60):]
			t.Errorf("seed %d: %s\nlast steps (cached host):\n  %s", seed, w.fail, strings.Join(tail, "\n  "))
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d sequences diverged (seeds %v)", len(failed), runs, failed[:min(len(failed), 20)])
	}
	t.Logf("%d sequences of %d steps: %d connects and %d probes found the range full, %d connects and %d probes "+
		"found a TIME_WAIT to take over, %d TIME_WAITs could be taken at once", runs, steps,
		exhausted, probesFull, twTaken, probesTW, twAtOnce)
	// The sequences must reach what the cache is about: full ranges, and
	// TIME_WAITs that tcp_tw_reuse lets connect() take (the moves to
	// TIME_WAIT that free a port at once: a FIN without timestamps).
	if exhausted < runs || twTaken < runs/10 || twAtOnce < runs/10 {
		t.Errorf("too few full ranges (%d), TIME_WAIT reuses (%d) or TIME_WAITs reusable at once (%d) to test the cache",
			exhausted, twTaken, twAtOnce)
	}
}
