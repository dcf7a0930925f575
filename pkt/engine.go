package pkt

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Host names of a script run: the stack under test, and the script.
const (
	LocalHost  = "local"
	RemoteHost = "remote"
)

// Backend is what a script is played on: a scenario backend (the
// simulator's, the kernel's) on which a program can also play a host.
type Backend interface {
	scenario.Backend
	// AddPeer adds a host whose packets the program makes and whose
	// stack, if it has one, never answers; with no link delay to the
	// hosts added before it.
	AddPeer(name string, addr netip.Addr) error
}

// RunEngine plays a script against tcplab's engine (the linux profile) in
// the simulator, in virtual time: the script is the remote peer, with no
// link delay between them, as packetdrill's tun device has none.
func RunEngine(s *Script, opt Options) *Result {
	return Run(s, scenario.NewSim(opt.Seed), opt)
}

// Run plays a script on a backend: its host LocalHost is the stack under
// test, and the script plays RemoteHost.
func Run(s *Script, b Backend, opt Options) *Result {
	st, res := readSettings(s, opt)
	if res != nil {
		return res
	}
	r := &player{s: s, b: b, opt: opt, st: st, fds: map[int64]tcp.FD{}, nonblock: map[tcp.FD]bool{}, bound: map[tcp.FD]uint16{}, connFD: map[*conn]tcp.FD{},
		done: map[uint64]*trace.Event{}, states: map[[2]netip.AddrPort]string{}, nextPort: firstRemotePort}
	res = &Result{File: s.File, Status: Pass, Hosts: []trace.Host{
		{Name: LocalHost, Addr: st.local.String()}, {Name: RemoteHost, Addr: st.remote.String()}}}
	if err := r.setup(); err != nil {
		res.Status, res.Msg = Fail, err.Error()
		return res
	}
	r.os = osFor(b)
	defer r.closeOS()
	err := r.play()
	if r.overBudget {
		line := 0
		if err != nil {
			line = err.line
		}
		if r.events > r.maxEvents {
			err = failAt(line, "the run passed its budget of %d events (Options.MaxEvents)", r.maxEvents)
		} else {
			err = failAt(line, "the run's events passed their budget of %d bytes (Options.MaxBytes)", r.opt.MaxBytes)
		}
	}
	res.Ignored, res.End, res.Late = r.ignored, r.now(), r.late
	if err != nil {
		res.Status, res.Line, res.Msg = err.status, err.line, err.msg
		res.Stack = r.stackLine()
	}
	return res
}

// player plays one script on a backend.
type player struct {
	s   *Script
	opt Options
	st  settings
	b   Backend

	out      []sniffed // outbound packets not yet matched
	fds      map[int64]tcp.FD
	nonblock map[tcp.FD]bool
	bound    map[tcp.FD]uint16            // the port each socket was bound to
	done     map[uint64]*trace.Event      // the returns of calls, by ID
	states   map[[2]netip.AddrPort]string // the last state change of each connection
	conn     *conn
	nextPort uint16
	listen   uint16 // the port of the last listen()

	last            time.Duration // script time of the previous event
	lastInbound     bool          // the previous event was an inbound packet
	started         bool          // an event ran
	blocked         *blockedCall
	ignored         []string
	events          int
	maxEvents       int
	zeroBuf         []byte
	injectErr       string
	late            []Late
	shellLines      int
	shellRead       map[string]bool
	overBudget      bool
	os              osCalls
	ownCalls        uint64
	epolls          map[tcp.FD]int   // the runner's epoll descriptors
	lastFD          tcp.FD           // the socket of the last call: the one %{ }% reads (0: none)
	shellStop       *stop            // a shell command that makes the script unsupported
	lastInboundLine int              // the line of the last script packet sent
	bytes           int64            // what the run's events hold (Options.MaxBytes)
	connFD          map[*conn]tcp.FD // the descriptor each connection had when %{ }% last saw it
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
	call     tcp.Call
	fdResult bool
	local    *localWait // a call the runner makes itself (poll, epoll_wait)
	localFD  tcp.FD
}

func (r *player) setup() error {
	r.maxEvents = r.opt.MaxEvents
	if r.maxEvents <= 0 {
		r.maxEvents = DefaultMaxEvents
	}
	r.b.SetSink(func(e trace.Event) {
		r.bytes += scenario.EventCost + int64(len(e.Note))
		switch {
		case e.Packet != nil:
			r.bytes += int64(len(e.Packet.Segment.Payload))
		case e.Call != nil:
			r.bytes += int64(len(e.Call.Data) + len(e.Call.Text))
		}
		if r.events++; r.events > r.maxEvents || r.opt.MaxBytes > 0 && r.bytes > r.opt.MaxBytes {
			if !r.overBudget {
				r.overBudget = true
				if h, ok := r.b.(interface{ Halt() }); ok {
					h.Halt()
				}
			}
			return
		}
		r.observe(&e)
		if r.opt.Sink != nil {
			r.opt.Sink(e)
		}
	})
	if err := r.b.AddHost(LocalHost, r.st.local, "linux"); err != nil {
		return err
	}
	if r.b.Name() == "sim" {
		// As packetdrill's tun device takes them: TSO packets.
		if err := r.b.Set(LocalHost, "tso", "1"); err != nil {
			return err
		}
		// And Linux's charge of the send buffer, skb by skb: 832 bytes
		// of truesize besides the payload (Linux 6.18, x86_64).
		if err := r.b.Set(LocalHost, "skb_overhead", "832"); err != nil {
			return err
		}
	}
	return r.b.AddPeer(RemoteHost, r.st.remote)
}

func (r *player) now() time.Duration { return r.b.Now() }

// runUntil lets time pass to t. A blocked call the runner makes itself
// (poll) is looked at as time passes, and returns when it can.
func (r *player) runUntil(t time.Duration) { r.waitFor(func() bool { return false }, t) }

// waitFor lets time pass until cond holds or limit; it reports cond.
func (r *player) waitFor(cond func() bool, limit time.Duration) bool {
	for {
		if cond() {
			return true
		}
		deadline, ok := r.pendingLocal()
		if !ok {
			return r.b.RunUntil(limit, cond)
		}
		if r.localReady() {
			continue
		}
		until := min(limit, deadline)
		if !r.b.RunUntil(until, func() bool { return r.localReady() || cond() }) && until == limit {
			r.localReady()
			return cond()
		}
	}
}

func (r *player) observe(e *trace.Event) {
	switch {
	case e.Kind == trace.KindPacket && e.Host == LocalHost && e.Packet.Dir == trace.Out && e.Packet.OnWire:
		r.out = append(r.out, sniffed{at: e.At, seg: e.Packet.Segment})
	case e.Kind == trace.KindCall && !e.Call.Pending && e.Host == LocalHost:
		ev := *e
		r.done[e.Call.ID] = &ev
	case e.Kind == trace.KindNote && e.Host == RemoteHost && strings.HasPrefix(e.Note, "injection failed"):
		r.injectErr = e.Note // the kernel could not send a script packet
	case e.Kind == trace.KindState && e.Host == LocalHost:
		s := e.State
		text := fmt.Sprintf("%s since %s (%s: %s)", s.To, trace.FormatTime(e.At), s.CauseKind, s.Cause)
		r.states[[2]netip.AddrPort{e.Local, e.Remote}] = text
	}
}

// kernel says whether the stack under test is this machine's Linux.
func (r *player) kernel() bool { return r.b.Name() != "sim" }

// stackName names the stack under test in messages.
func (r *player) stackName() string {
	if r.b.Name() == "sim" {
		return "engine"
	}
	return r.b.Name()
}

// stackLine says what the local stack was doing, for a failure.
func (r *player) stackLine() string {
	if r.conn != nil {
		if s, ok := r.states[[2]netip.AddrPort{r.conn.local, r.conn.remote}]; ok {
			return fmt.Sprintf("%s: %v > %v %s", r.stackName(), r.conn.local, r.conn.remote, s)
		}
	}
	socks, _ := r.b.Snapshot(LocalHost)
	var parts []string
	for _, s := range socks {
		parts = append(parts, fmt.Sprintf("%v > %v %s", s.Local, s.Remote, s.State))
	}
	if len(parts) == 0 {
		return r.stackName() + ": no socket"
	}
	return r.stackName() + ": " + strings.Join(parts, "; ")
}

func (r *player) play() *stop {
	for i := range r.s.Events {
		ev := &r.s.Events[i]
		if err := r.event(ev); err != nil {
			return err
		}
		if inboundPacket(ev) {
			r.lastInboundLine = ev.Pos.Line
		}
		if err := r.lostInjection(); err != nil {
			return err
		}
	}
	if err := r.finishBlocked(nil, r.now()); err != nil {
		return err
	}
	r.runUntil(r.now()) // the backend's last news (a packet the kernel's link could not deliver)
	return r.lostInjection()
}

// lostInjection fails the run when a script packet did not reach the
// stack, at the line of the last one sent: the backend learns it after
// the fact (the kernel's link writes to the TUN device on its own).
func (r *player) lostInjection() *stop {
	if r.injectErr == "" {
		return nil
	}
	return failAt(r.lastInboundLine, "error handling packet: %s", r.injectErr)
}

// inboundPacket tells whether an event is a packet the script sends.
func inboundPacket(ev *Event) bool { return ev.Kind == EvPacket && ev.Packet.Dir == Inbound }

// times resolves an event's script time (and a range's end), as
// packetdrill's adjust_relative_event_times: a relative time counts from
// the previous event's script time when both are inbound packets (such
// chains are anchored), else from now; * is now.
func (r *player) times(ev *Event) (at, end time.Duration) {
	base := time.Duration(0)
	if ev.Time.Kind == TimeRel || ev.Time.Kind == TimeRelRange || ev.Time.Kind == TimeAny {
		if r.lastInbound && inboundPacket(ev) {
			base = r.last
		} else {
			base = r.now()
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

// anyTimeout is how long a packet at time * is waited for.
const anyTimeout = 10 * time.Second

// maxScriptTime bounds a run's virtual time.
const maxScriptTime = 30 * 24 * time.Hour

// eventNames are packetdrill's names of events in timing errors.
func eventName(ev *Event) string {
	switch ev.Kind {
	case EvPacket:
		if ev.Packet.Dir == Inbound {
			return "inbound packet"
		}
		return "outbound packet"
	case EvSyscall:
		return "system call start"
	case EvCommand:
		return "command"
	}
	return "data collection for code"
}

func (r *player) event(ev *Event) *stop {
	if ev.Untimed { // set-up or clean-up: not an event of the timeline
		return r.command(ev)
	}
	at, end := r.times(ev)
	line := ev.Pos.Line
	if end > maxScriptTime {
		return failAt(line, "event time %s s is past the longest run (%s)", trace.FormatTime(end), maxScriptTime)
	}
	// Only an absolute time can go backward: a relative one counts from
	// when the previous event happened, which may be before its script
	// time (a packet that came early, within the tolerance).
	if (ev.Time.Kind == TimeAbs || ev.Time.Kind == TimeAbsRange) && r.started && at < r.last {
		return failAt(line, "time goes backward in script (%s s after %s s)", trace.FormatTime(at), trace.FormatTime(r.last))
	}
	prev := r.last
	var err *stop
	if ev.Kind == EvSyscall {
		// A call waits for the one the script let block.
		if err = r.finishBlocked(ev, at); err != nil {
			return err
		}
	}
	if !(ev.Kind == EvPacket && ev.Packet.Dir == Outbound) {
		// Everything but an expected packet happens at its time. One the
		// run reaches late is not failed, as packetdrill's
		// check_event_time would: what made it late is checked where it
		// happened (a call's return, a packet's time), and on the kernel
		// the rest is the harness's own latency, which says nothing of
		// TCP. It is counted, and the times that follow count from when
		// it happened.
		r.runUntil(at)
		if msg := r.st.verifyTime(ev.Time.Kind, at, end, r.now(), prev, eventName(ev)); msg != "" {
			r.late = append(r.late, Late{Line: line, By: r.now() - at})
		}
	}
	switch ev.Kind {
	case EvCommand:
		err = r.command(ev)
	case EvCode:
		err = r.code(ev)
	case EvSyscall:
		err = r.syscall(ev, at, prev)
	case EvPacket:
		if ev.Packet.Proto != "tcp" {
			return unsupportedAt(line, "%s packets are not supported", ev.Packet.Proto)
		}
		if ev.Packet.Dir == Inbound {
			err = r.inbound(ev, r.now())
		} else {
			err = r.outbound(ev, at, end, prev)
		}
	}
	if err != nil {
		return err
	}
	r.last, r.lastInbound, r.started = at, inboundPacket(ev), true
	return nil
}

// inbound sends the script's packet to the stack at time at.
func (r *player) inbound(ev *Event, at time.Duration) *stop {
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
	if what := ipFields(p, r.kernel()); what != "" {
		return unsupportedAt(line, "packets with %s are not supported by the %s", what, r.stackName())
	}
	seq := p.Seq + c.remoteISN
	if p.Flags&wire.SYN != 0 {
		c.remoteISN, seq = p.Seq, p.Seq // the remote's ISN: later numbers count from it
	}
	seg := wire.Segment{Src: c.remote.Addr(), Dst: c.local.Addr(), SrcPort: c.remote.Port(), DstPort: c.local.Port(),
		Seq: wire.Seq(seq), Flags: p.Flags, Window: uint16(p.Win), TTL: 64, TOS: scriptTOS(p)}
	if p.TTL > 0 {
		seg.TTL = uint8(p.TTL)
	}
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
	unmapped := false
	seg.Options, why = inboundOptions(p.Options, func(ecr uint32) uint32 {
		v, ok := r.liveEcr(c, ecr, p.Flags&wire.ACK != 0)
		unmapped = unmapped || !ok
		return v
	}, c.toLive)
	if why != "" {
		return unsupportedAt(line, "%s", why)
	}
	if unmapped {
		return failAt(line, "error handling packet: unable to infer live TS ecr for script TS ecr %d; no matching or preceding outbound TS val", tsEcr(p))
	}
	if err := r.b.Inject(RemoteHost, seg, at); err != nil {
		return failAt(line, "error handling packet: %v", err)
	}
	r.runUntil(at)
	if r.injectErr != "" {
		return failAt(line, "error handling packet: %s", r.injectErr)
	}
	return nil
}

// liveEcr maps a script TS ecr (of a packet with an ACK) to the live TS
// val it echoes: the outbound TS val the script wrote with that value, as
// packetdrill maps it (without --tcp_ts_ecr_scaled, there is no other).
func (r *player) liveEcr(c *conn, ecr uint32, ack bool) (uint32, bool) {
	if !ack {
		return ecr, true
	}
	v, ok := c.tsVals[ecr]
	return v, ok
}

// tsEcr is a packet line's TS ecr.
func tsEcr(p *Packet) uint32 {
	for _, o := range p.Options {
		if o.Kind == "TS" {
			return o.Ecr
		}
	}
	return 0
}

// ipFields says what of a packet line's IP and AccECN fields the backend
// cannot send or check, or "". The kernel's packets carry the TOS byte
// (ECN codepoints too) and the TTL as the script gives them; the engine
// models neither.
func ipFields(p *Packet, kernel bool) string {
	switch {
	case kernel && p.FlowLabel < 0 && p.ACE < 0:
		return ""
	case p.ECN != "" && p.ECN != "noecn":
		return "ECN codepoints (" + p.ECN + ")"
	case p.TOS >= 0:
		return "the TOS byte"
	case p.FlowLabel >= 0:
		return "flow labels"
	case p.TTL > 0:
		return "the TTL"
	case p.ACE >= 0:
		return "the AccECN ACE field"
	}
	return ""
}

// ecnBits are the IP ECN codepoints by their script names.
var ecnBits = map[string]uint8{"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3}

// scriptTOS is the TOS byte of an inbound packet line: its TOS, with its
// ECN codepoint in the low bits.
func scriptTOS(p *Packet) uint8 {
	var tos uint8
	if p.TOS >= 0 {
		tos = uint8(p.TOS)
	}
	if b, ok := ecnBits[p.ECN]; ok {
		tos = tos&^3 | b
	}
	return tos
}

// ipCheck is packetdrill's check of an outbound packet's TOS byte (or
// only its ECN bits) and TTL, "" when they match.
func ipCheck(want *Packet, live *wire.Segment) string {
	ecn := live.TOS & 3
	switch {
	case want.ECN == "ect01":
		if ecn != 1 && ecn != 2 {
			return fmt.Sprintf("live packet field ip_ecn: expected: 0x1 or 0x2 vs actual: 0x%x", ecn)
		}
	case want.ECN != "":
		if b := ecnBits[want.ECN]; b != ecn {
			return fieldErr("ip_ecn", uint64(b), uint64(ecn))
		}
	case want.TOS >= 0:
		if uint8(want.TOS) != live.TOS {
			return fieldErr("tos", uint64(want.TOS), uint64(live.TOS))
		}
	}
	if want.TTL > 0 && uint8(want.TTL) != live.TTL {
		return fieldErr("ttl", uint64(want.TTL), uint64(live.TTL))
	}
	return ""
}

// outbound waits for the stack's next packet and checks it against the
// script's.
func (r *player) outbound(ev *Event, at, end, prev time.Duration) *stop {
	p := ev.Packet
	line := ev.Pos.Line
	if what := ipFields(p, r.kernel()); what != "" {
		return unsupportedAt(line, "checking %s is not supported by the %s", what, r.stackName())
	}
	limit := max(at, end) + sniffTimeout
	if ev.Time.Kind == TimeAny {
		// packetdrill waits for ever; a run waits anyTimeout.
		limit = r.now() + anyTimeout
	}
	var got []sniffed
	payload := 0
	for {
		if len(r.out) == 0 && !r.waitFor(func() bool { return len(r.out) > 0 }, limit) {
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
		if len(got) > 0 {
			if msg := fragmentErr(&got[len(got)-1].seg, &s.seg, payload, p.Len); msg != "" {
				return failAt(line, "error handling packet: %s", msg)
			}
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
	// The aggregate, as packetdrill's aggregate_packets: the first's
	// header with the last's FIN and PSH, and the last's time.
	seg := first.seg
	last := got[len(got)-1]
	seg.Flags = seg.Flags&^(wire.FIN|wire.PSH) | last.seg.Flags&(wire.FIN|wire.PSH)
	if msg := r.st.verifyTime(ev.Time.Kind, at, end, last.at, prev, "outbound packet"); msg != "" {
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
	msg := ipCheck(p, &seg)
	if msg == "" {
		msg = r.st.checkOutbound(c, p, &seg, payload, at)
	}
	if msg != "" {
		return failAt(line, "error handling packet: %s\n  script packet: %s\n  actual packet: %s", msg, p, r.scriptView(c, &seg, payload))
	}
	return nil
}

// fragmentErr is packetdrill's verify_packet_fragments: a fragment joins
// the one before it when their headers agree (flags but FIN, PSH and CWR;
// ack, window) and it follows it in sequence; every fragment but the
// last has the first's size.
func fragmentErr(prev, cur *wire.Segment, sniffed, want int) string {
	fixed := ^(wire.FIN | wire.PSH | wire.CWR)
	switch {
	case prev.Flags&fixed != cur.Flags&fixed:
		return fmt.Sprintf("fragment flags: expected %s vs actual %s", prev.Flags.Short(), cur.Flags.Short())
	case cur.Seq != prev.Seq.Add(len(prev.Payload)):
		return fieldErr("tcp_seq", uint64(prev.Seq.Add(len(prev.Payload))), uint64(cur.Seq)) + " (fragments)"
	case cur.Ack != prev.Ack:
		return fieldErr("tcp_ack_seq", uint64(prev.Ack), uint64(cur.Ack)) + " (fragments)"
	case cur.Window != prev.Window:
		return fieldErr("tcp_window", uint64(prev.Window), uint64(cur.Window)) + " (fragments)"
	case len(cur.Payload) < want-sniffed && len(cur.Payload) != len(prev.Payload):
		return fmt.Sprintf("fragment payload: expected %d bytes vs actual %d bytes; total payload: expected %d bytes vs actual %d bytes",
			len(prev.Payload), len(cur.Payload), want, sniffed+len(cur.Payload))
	}
	return ""
}

// scriptView writes a live segment as the script would.
func (r *player) scriptView(c *conn, s *wire.Segment, payload int) string {
	q := newPacket(Outbound)
	q.FlagText, q.Flags, q.Seq, q.Len, q.Win = s.Flags.Short(), s.Flags, c.toScript(uint32(s.Seq)), payload, int(s.Window)
	q.HasOptions, q.Options = !s.Options.Empty(), liveOptions(s)
	q.End = q.Seq + uint32(payload)
	if s.Flags&wire.ACK != 0 {
		q.Ack, q.HasAck = uint32(s.Ack)-c.remoteISN, true
		if s.Flags&wire.SYN != 0 {
			q.Ack = uint32(s.Ack)
		}
	}
	if q.FlagText == "" {
		q.FlagText = "-"
	}
	return q.String()
}
