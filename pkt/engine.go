package pkt

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcplab/tcplab/sim"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Host names of a script run: the stack under test, and the script.
const (
	LocalHost  = "local"
	RemoteHost = "remote"
)

// RunEngine plays a script against tcplab's engine (the linux profile) in
// the simulator, in virtual time: the script is the remote peer, with no
// link delay between them, as packetdrill's tun device has none.
func RunEngine(s *Script, opt Options) *Result {
	st, res := readSettings(s, opt)
	if res != nil {
		return res
	}
	r := &engineRun{s: s, opt: opt, st: st, fds: map[int64]tcp.FD{}, nonblock: map[tcp.FD]bool{}, bound: map[tcp.FD]uint16{},
		done: map[uint64]*trace.Call{}, states: map[[2]netip.AddrPort]string{}, nextPort: firstRemotePort}
	res = &Result{File: s.File, Status: Pass}
	if err := r.setup(); err != nil {
		res.Status, res.Msg = Fail, err.Error()
		return res
	}
	err := r.play()
	if r.overBudget {
		line := 0
		if err != nil {
			line = err.line
		}
		err = failAt(line, "the run passed its budget of %d events (Options.MaxEvents)", r.maxEvents)
	}
	res.Ignored, res.End = r.ignored, r.n.Now()
	if err != nil {
		res.Status, res.Line, res.Msg = err.status, err.line, err.msg
		res.Stack = r.stackLine()
	}
	return res
}

type engineRun struct {
	s   *Script
	opt Options
	st  settings
	n   *sim.Network

	out      []sniffed // outbound packets not yet matched
	fds      map[int64]tcp.FD
	nonblock map[tcp.FD]bool
	bound    map[tcp.FD]uint16      // the port each socket was bound to
	done     map[uint64]*trace.Call // completed blocked calls, by ID
	doneAt   map[uint64]time.Duration
	states   map[[2]netip.AddrPort]string // the last state change of each connection
	conn     *conn
	nextPort uint16
	listen   uint16 // the port of the last listen()

	last         time.Duration // script time of the previous event
	lastAnchored bool          // the previous event had a time of its own (not *)
	blocked      *blockedCall
	ignored      []string
	events       int
	maxEvents    int
	overBudget   bool
}

// blockedCall is a system call the script lets block (+0...0.2 accept):
// later events run while it waits, and its return is checked before the
// next system call, or at the end.
type blockedCall struct {
	ev       *Event
	id       uint64
	end      time.Duration // when the script says it returns
	startAt  time.Duration
	expected *Syscall
	fdResult bool
}

func (r *engineRun) setup() error {
	r.n = sim.New(sim.Config{Seed: r.opt.Seed})
	r.doneAt = map[uint64]time.Duration{}
	r.maxEvents = r.opt.MaxEvents
	if r.maxEvents <= 0 {
		r.maxEvents = DefaultMaxEvents
	}
	r.n.SetSink(func(e trace.Event) {
		if r.events++; r.events > r.maxEvents {
			if !r.overBudget {
				r.overBudget = true
				r.n.Halt()
			}
			return
		}
		r.observe(&e)
		if r.opt.Sink != nil {
			r.opt.Sink(e)
		}
	})
	if _, err := r.n.AddHost(LocalHost, r.st.local, tcp.Linux()); err != nil {
		return err
	}
	if _, err := r.n.AddPeer(RemoteHost, r.st.remote, func(s *wire.Segment) {
		r.out = append(r.out, sniffed{at: r.n.Now(), seg: *s})
	}); err != nil {
		return err
	}
	return r.n.SetDelay(LocalHost, RemoteHost, 0)
}

func (r *engineRun) observe(e *trace.Event) {
	switch {
	case e.Kind == trace.KindCall && !e.Call.Pending && e.Host == LocalHost:
		c := *e.Call
		r.done[c.ID] = &c
		r.doneAt[c.ID] = e.At
	case e.Kind == trace.KindState && e.Host == LocalHost:
		s := e.State
		text := fmt.Sprintf("%s since %s (%s: %s)", s.To, trace.FormatTime(e.At), s.CauseKind, s.Cause)
		r.states[[2]netip.AddrPort{e.Local, e.Remote}] = text
	}
}

// stackLine says what the local stack was doing, for a failure.
func (r *engineRun) stackLine() string {
	if r.conn != nil {
		if s, ok := r.states[[2]netip.AddrPort{r.conn.local, r.conn.remote}]; ok {
			return fmt.Sprintf("engine: %v > %v %s", r.conn.local, r.conn.remote, s)
		}
	}
	socks, _ := r.n.Snapshot(LocalHost)
	var parts []string
	for _, s := range socks {
		parts = append(parts, fmt.Sprintf("%v > %v %s", s.Local, s.Remote, s.State))
	}
	if len(parts) == 0 {
		return "engine: no socket"
	}
	return "engine: " + strings.Join(parts, "; ")
}

func (r *engineRun) play() *stop {
	for i := range r.s.Events {
		ev := &r.s.Events[i]
		if err := r.event(ev); err != nil {
			return err
		}
	}
	return r.finishBlocked(nil)
}

// times resolves an event's script time (and a range's end): relative
// times count from the previous event's time if it had one, else from
// now, as packetdrill's adjust_relative_event_times.
func (r *engineRun) times(ev *Event) (at, end time.Duration) {
	base := time.Duration(0)
	if ev.Time.Kind == TimeRel || ev.Time.Kind == TimeRelRange || ev.Time.Kind == TimeAny {
		if r.lastAnchored {
			base = r.last
		} else {
			base = r.n.Now()
		}
	}
	switch ev.Time.Kind {
	case TimeAny:
		return base, base
	case TimeAbsRange, TimeRelRange:
		return base + ev.Time.At, base + ev.Time.End
	}
	return base + ev.Time.At, base + ev.Time.At
}

func (r *engineRun) event(ev *Event) *stop {
	at, end := r.times(ev)
	prev := r.last
	if at < r.n.Now() && ev.Kind != EvPacket {
		// The script's time is already past (an earlier event came
		// late): run it now, as packetdrill does.
		at = r.n.Now()
	}
	var err *stop
	switch ev.Kind {
	case EvCommand:
		r.n.RunUntil(at)
		err = r.command(ev)
	case EvCode:
		err = unsupportedAt(ev.Pos.Line, "%%{ }%% blocks are not supported by the engine backend yet")
	case EvSyscall:
		if err = r.finishBlocked(ev); err != nil {
			return err
		}
		r.n.RunUntil(at)
		err = r.syscall(ev, at, prev)
	case EvPacket:
		if ev.Packet.Proto != "tcp" {
			return unsupportedAt(ev.Pos.Line, "%s packets are not supported", ev.Packet.Proto)
		}
		if ev.Packet.Dir == Inbound {
			if at > r.n.Now() {
				r.n.RunUntil(at)
			}
			err = r.inbound(ev, max(at, r.n.Now()))
		} else {
			err = r.outbound(ev, at, end, prev)
		}
	}
	if err != nil {
		return err
	}
	r.last, r.lastAnchored = at, ev.Time.Kind != TimeAny
	if ev.Time.Kind == TimeAny {
		r.last = r.n.Now()
	}
	return nil
}

// inbound sends the script's packet to the stack at time at.
func (r *engineRun) inbound(ev *Event, at time.Duration) *stop {
	p := ev.Packet
	line := ev.Pos.Line
	c := r.conn
	switch {
	case p.SrcPort != 0 || p.DstPort != 0:
		local := netip.AddrPortFrom(r.st.local, p.DstPort)
		remote := netip.AddrPortFrom(r.st.remote, p.SrcPort)
		if c == nil || c.local != local || c.remote != remote {
			c = &conn{local: local, remote: remote}
			r.conn = c
		}
	case p.Flags&(wire.SYN|wire.ACK) == wire.SYN && (c == nil || c.local.Port() != r.listen):
		// A SYN to the listener: a new connection from a new port.
		if r.listen == 0 {
			return failAt(line, "error handling packet: no listening socket for an inbound SYN")
		}
		c = &conn{local: netip.AddrPortFrom(r.st.local, r.listen), remote: netip.AddrPortFrom(r.st.remote, r.nextPort)}
		r.nextPort++
		r.conn = c
	case c == nil:
		return failAt(line, "error handling packet: no connection for an inbound packet")
	}
	if p.Win < 0 {
		return failAt(line, "error handling packet: window must be specified for inbound packets")
	}
	seg := wire.Segment{Src: c.remote.Addr(), Dst: c.local.Addr(), SrcPort: c.remote.Port(), DstPort: c.local.Port(),
		Seq: wire.Seq(p.Seq), Flags: p.Flags, Window: uint16(p.Win), TTL: 64}
	if p.Flags&wire.ACK != 0 {
		seg.Ack = wire.Seq(c.toLive(p.Ack))
	}
	if p.Len > 0 {
		seg.Payload = make([]byte, p.Len)
	}
	if p.Urg > 0 {
		return unsupportedAt(line, "inbound urgent data is not supported")
	}
	var why string
	seg.Options, why = inboundOptions(p.Options, func(ecr uint32) uint32 { return r.liveEcr(c, ecr, p.Flags&wire.ACK != 0) }, c.toLive)
	if why != "" {
		return unsupportedAt(line, "%s", why)
	}
	if err := r.n.InjectAt(at, RemoteHost, seg); err != nil {
		return failAt(line, "error handling packet: %v", err)
	}
	r.n.RunUntil(at)
	return nil
}

// liveEcr maps a script TS ecr to the live TS val it echoes: the exact
// outbound value the script wrote, or, past it, by the offset of the
// connection's first timestamp.
func (r *engineRun) liveEcr(c *conn, ecr uint32, ack bool) uint32 {
	if !ack || !c.haveTS {
		return ecr
	}
	if v, ok := c.tsVals[ecr]; ok {
		return v
	}
	return ecr - c.firstScriptTS + c.firstLiveTS
}

// outbound waits for the stack's next packet and checks it against the
// script's.
func (r *engineRun) outbound(ev *Event, at, end, prev time.Duration) *stop {
	p := ev.Packet
	line := ev.Pos.Line
	limit := max(at, end) + sniffTimeout
	if ev.Time.Kind == TimeAny {
		limit = r.n.Now() + 10*time.Minute
	}
	var got []sniffed
	payload := 0
	for {
		if len(r.out) == 0 && !r.n.RunUntilCond(func() bool { return len(r.out) > 0 }, limit) {
			if len(got) == 0 {
				return failAt(line, "error handling packet: timed out waiting for packet (expected %s by %s s)", p, trace.FormatTime(limit))
			}
			break
		}
		s := r.out[0]
		r.out = r.out[1:]
		if len(got) > 0 && (s.seg.SrcPort != got[0].seg.SrcPort || s.seg.DstPort != got[0].seg.DstPort) {
			r.out = append([]sniffed{s}, r.out...)
			break
		}
		got = append(got, s)
		payload += len(s.seg.Payload)
		// Without --strict_segments, consecutive packets are one as the
		// script counts its payload (TSO/GSO segments).
		if r.st.strict || payload >= p.Len {
			break
		}
	}
	first := got[0]
	c := r.conn
	local := netip.AddrPortFrom(first.seg.Src, first.seg.SrcPort)
	remote := netip.AddrPortFrom(first.seg.Dst, first.seg.DstPort)
	if c == nil || c.local != local || c.remote != remote {
		if first.seg.Flags&wire.SYN == 0 {
			return failAt(line, "error handling packet: packet is not for expected socket: %s", first.seg.String())
		}
		c = &conn{local: local, remote: remote}
		r.conn = c
	}
	if first.seg.Flags&wire.SYN != 0 && p.Flags&wire.SYN != 0 {
		c.scriptISN, c.liveISN, c.haveISN = p.Seq, uint32(first.seg.Seq), true
	}
	seg := first.seg
	if len(got) > 1 { // the aggregate: the first's header, all the payload
		last := got[len(got)-1].seg
		seg.Flags |= last.Flags & (wire.FIN | wire.PSH)
	}
	if msg := r.st.verifyTime(ev.Time.Kind, at, end, first.at, prev, "outbound packet"); msg != "" {
		return failAt(line, "error handling packet: %s", msg)
	}
	// Remember the TS val mapping before checking, as packetdrill does.
	for _, o := range p.Options {
		if o.Kind == "TS" && seg.Options.HasTimestamps {
			if c.tsVals == nil {
				c.tsVals = map[uint32]uint32{}
			}
			c.tsVals[o.Val] = seg.Options.TSVal
			if !c.haveTS {
				c.firstScriptTS, c.firstLiveTS, c.haveTS = o.Val, seg.Options.TSVal, true
			}
		}
	}
	if msg := r.st.checkOutbound(c, p, &seg, payload); msg != "" {
		return failAt(line, "error handling packet: %s\n  script packet: %s\n  actual packet: %s", msg, p, r.scriptView(c, &seg, payload))
	}
	return nil
}

// scriptView writes a live segment as the script would.
func (r *engineRun) scriptView(c *conn, s *wire.Segment, payload int) string {
	q := Packet{Dir: Outbound, Proto: "tcp", FlagText: s.Flags.Short(), Flags: s.Flags, TOS: -1, FlowLabel: -1, ACE: -1, Urg: -1,
		Seq: c.toScript(uint32(s.Seq)), Len: payload, Win: int(s.Window), HasOptions: !s.Options.Empty(), Options: liveOptions(s)}
	q.End = q.Seq + uint32(payload)
	if s.Flags&wire.ACK != 0 {
		q.Ack, q.HasAck = uint32(s.Ack), true
	}
	if q.FlagText == "" {
		q.FlagText = "-"
	}
	return q.String()
}
