package scenario

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Options change how a scenario runs.
type Options struct {
	// Profile, when set, replaces every host's profile (a `profile` step
	// still changes it later).
	Profile string
	// At lists times at which to take a snapshot of every host.
	At []time.Duration
	// Sink receives every event as it happens, the runner's own (notes,
	// checks) included, numbered in one sequence.
	Sink trace.Sink
	// Context, when set, stops the run once it is done (a signal, a page's
	// request that ended or timed out): the run ends at its next event or
	// step with a *StoppedError carrying the context's cause.
	Context context.Context
	// Budget bounds the run's work; zero fields take DefaultBudget's.
	Budget Budget
}

// Budget bounds what one run may produce, so that no scenario text can
// make a run grow without limit: a run that reaches a limit stops there
// with a *StoppedError, and the events up to it are kept.
type Budget struct {
	// MaxEvents is the number of events a run may produce.
	MaxEvents int
	// MaxBytes bounds the memory the events hold, estimated as a fixed
	// cost per event (EventCost) plus the bytes of payloads, data and
	// texts they carry.
	MaxBytes int64
	// MaxWork bounds the sockets that until and expect conditions list
	// (an until is tested after every change): the CPU a run may spend
	// besides its events.
	MaxWork int64
}

// DefaultBudget is a run's budget unless the caller sets another: 250
// times the largest built-in run (syn-flood, 815 events), a memory bound
// that keeps a capped run's process under about 400 MB, and a few seconds
// of condition tests (docs/reliability.md has the measurements).
var DefaultBudget = Budget{MaxEvents: 200_000, MaxBytes: 128 << 20, MaxWork: 5_000_000}

// Or fills the fields of b that are not set (zero or less) from d.
func (b Budget) Or(d Budget) Budget {
	if b.MaxEvents <= 0 {
		b.MaxEvents = d.MaxEvents
	}
	if b.MaxBytes <= 0 {
		b.MaxBytes = d.MaxBytes
	}
	if b.MaxWork <= 0 {
		b.MaxWork = d.MaxWork
	}
	return b
}

// EventCost is the memory an event is counted for before the bytes it
// carries: the event, its packet or call, and the runner's record of it.
const EventCost = 400

// StoppedError is a run that ended before its last step: a budget limit
// was reached or the run was interrupted. The Result returned with it
// holds what happened up to then.
type StoppedError struct {
	Pos    Pos           // the step the run was at
	At     time.Duration // the run's time when it stopped
	Reason string
	Cause  error // the context's cause, or nil for a budget limit
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("%s: the run stopped at %ss: %s", e.Pos, trace.FormatTime(e.At), e.Reason)
}

func (e *StoppedError) Unwrap() error { return e.Cause }

// Snapshot is every host's sockets at one moment.
type Snapshot struct {
	At    time.Duration
	Hosts []HostSockets
	// PastEnd is set when the time lies after the scenario's last step
	// and the run went on to reach it.
	PastEnd bool
}

// HostSockets is one host's sockets.
type HostSockets struct {
	Host    string         `json:"host"`
	Sockets []trace.Socket `json:"sockets"`
}

// Check is an expectation's outcome.
type Check struct {
	Pos  Pos
	Text string
	OK   bool
	Seen string
	At   time.Duration
}

// Result is what a run produced.
type Result struct {
	Scenario  *Scenario
	Backend   string
	Checks    []Check
	Snapshots []Snapshot
	End       time.Duration
	// States lists, per host in declaration order, the states its
	// connections reached, in the order a connection passes through them
	// (lifecycleOrder), whichever connection reached them first.
	States   []HostStates
	Counters map[string][]trace.Counter // final non-zero counters per host
	// Steps says when each step of the script started on the backend's
	// clock, in script order (a stopped run has fewer).
	Steps []StepTime
}

// StepTime is when one step of the script started. Due is when the
// script wanted it: the end of the wait before it (the script's own
// timeline, which a late step does not shift), or the time of the event
// that met the until before it. In the simulator Start is Due; on the
// kernel Start-Due is how late the harness was (Late).
type StepTime struct {
	Pos   Pos
	Start time.Duration
	// Last is when the step's last call began (a connect after its
	// socket and bind, the last of a repeat's): Start for a step of one
	// call, or none.
	Last time.Duration
	Due  time.Duration
	// Seq is the Seq of the last event seen before the step started:
	// events at the step's own instant are the step's when their Seq is
	// greater.
	Seq int
}

// Late is how much later than the script wanted the step did what it
// does: its last call, for a step that makes several.
func (s StepTime) Late() time.Duration { return max(0, max(s.Start, s.Last)-s.Due) }

// HostStates is the states one host's connections went through.
type HostStates struct {
	Host   string
	States []string
}

// Failed counts the checks that did not hold.
func (r *Result) Failed() int {
	n := 0
	for _, c := range r.Checks {
		if !c.OK {
			n++
		}
	}
	return n
}

// RunError is a problem found while running a scenario (not an
// expectation that failed): a call on a socket that does not exist yet, a
// backend that refused a rule.
type RunError struct {
	Pos Pos
	Err error
}

func (e *RunError) Error() string { return fmt.Sprintf("%s: %v", e.Pos, e.Err) }
func (e *RunError) Unwrap() error { return e.Err }

type hostSock struct {
	host string
	sock uint64
}

type callKey struct {
	host string
	id   uint64
}

type flowKey struct{ src, dst netip.AddrPort }

type flowInfo struct {
	isn     wire.Seq
	haveISN bool
	next    wire.Seq
	seen    bool
}

// sockRec is a named socket of the scenario.
type sockRec struct {
	host, name string
	fd         tcp.FD
	sock       uint64
	open       bool     // the name has a socket (accept may still be blocked)
	waiting    *callRec // the accept that will give it its socket
	last       map[tcp.Op]*callRec
	received   int64
	data       []byte
}

type callRec struct {
	op      tcp.Op
	name    string // the socket name the call acts on
	as      *sockRec
	res     tcp.Result
	pending bool
	doneAt  time.Duration
	peek    bool
}

type runner struct {
	sc *Scenario
	b  Backend
	// v4 and v6 say which families each host has addresses of.
	v4, v6 map[string]bool
	opt    Options
	res    *Result
	seq    int
	now    time.Duration
	step   *Step
	// due is the script's own clock: when the next step is due. Waits
	// add to it (not to the backend's clock), so that a step the kernel
	// harness started late does not delay every later one.
	due time.Duration
	// lastAt is the time of the latest event the backend reported.
	lastAt time.Duration
	acted  bool // the current step's action was seen (stepBegan)

	socks map[string]map[string]*sockRec
	calls map[callKey]*callRec
	// early holds the completions that came before their call was
	// recorded: on the kernel a call that blocks can return, and be
	// reported, in the flush its own Call makes.
	early    map[callKey]*trace.Event
	addrs    map[hostSock][2]netip.AddrPort
	paths    map[hostSock][]string
	entered  map[hostSock]map[string]time.Duration // last time each socket entered each state
	flows    map[flowKey]*flowInfo
	packets  []pktRec
	pktCount map[pktKey]int64 // packets on the wire by host, direction and flags
	rules    map[string]int
	counter  map[string]int64 // host/counter -> value last checked
	states   map[string][]string
	stSeen   map[string]map[string]bool
	atLeft   []time.Duration

	budget  Budget
	events  int
	bytes   int64
	work    int64
	stop    atomic.Pointer[StoppedError] // why the run is stopping, once it is
	injects []injectLoad
}

// injectLoad is an inject step's share of the run, named when a budget
// limit is reached.
type injectLoad struct {
	pos   Pos
	count int
	last  time.Duration // when its last segment is sent
}

type pktKey struct {
	host  string
	dir   trace.Dir
	flags wire.Flags
}

type pktRec struct {
	host   string
	dir    trace.Dir
	flags  wire.Flags
	at     time.Duration
	onWire bool
}

// Run plays a scenario on a backend. A non-nil error is a problem with the
// scenario or the backend; failed expectations are in the result.
func Run(sc *Scenario, b Backend, opt Options) (*Result, error) {
	r := &runner{sc: sc, b: b, opt: opt,
		res:   &Result{Scenario: sc, Backend: b.Name(), Counters: map[string][]trace.Counter{}},
		socks: map[string]map[string]*sockRec{},
		v4:    map[string]bool{}, v6: map[string]bool{},
		calls:    map[callKey]*callRec{},
		early:    map[callKey]*trace.Event{},
		addrs:    map[hostSock][2]netip.AddrPort{},
		paths:    map[hostSock][]string{},
		entered:  map[hostSock]map[string]time.Duration{},
		flows:    map[flowKey]*flowInfo{},
		pktCount: map[pktKey]int64{},
		rules:    map[string]int{},
		counter:  map[string]int64{},
		states:   map[string][]string{},
		stSeen:   map[string]map[string]bool{},
	}
	r.atLeft = append([]time.Duration(nil), opt.At...)
	sort.Slice(r.atLeft, func(i, j int) bool { return r.atLeft[i] < r.atLeft[j] })
	r.budget = opt.Budget
	r.budget = r.budget.Or(DefaultBudget)
	if ctx := opt.Context; ctx != nil {
		// Seen at once by an event (observe), or, when none comes (a
		// kernel run waiting), by this.
		defer context.AfterFunc(ctx, r.haltContext)()
	}
	b.SetSink(r.observe)
	for _, h := range sc.Hosts {
		prof := h.Profile
		if opt.Profile != "" {
			prof = opt.Profile
		}
		if err := b.AddHost(h.Name, h.Addr, prof); err != nil {
			return nil, &RunError{h.Pos, err}
		}
		if h.Addr6.IsValid() {
			a, ok := b.(AddrAdder)
			if !ok {
				return nil, &RunError{h.Pos, fmt.Errorf("the %s backend gives a host one address: %s cannot be dual-stack here", b.Name(), h.Name)}
			}
			if err := a.AddAddr(h.Name, h.Addr6); err != nil {
				return nil, &RunError{h.Pos, err}
			}
		}
		r.v6[h.Name] = h.V6().IsValid()
		r.v4[h.Name] = h.V4().IsValid()
		r.socks[h.Name] = map[string]*sockRec{}
		r.stSeen[h.Name] = map[string]bool{}
	}
	for i := range sc.Steps {
		if r.stopped() {
			break
		}
		r.step = &sc.Steps[i]
		now := b.Now()
		r.res.Steps = append(r.res.Steps, StepTime{Pos: r.step.Pos, Start: now, Last: now, Due: r.due, Seq: r.seq})
		r.acted = false
		if err := r.do(r.step); err != nil {
			if r.stopped() {
				break // the step failed because the backend was interrupted
			}
			return nil, &RunError{r.step.Pos, err}
		}
	}
	end := b.Now()
	for len(r.atLeft) > 0 && !r.stopped() {
		r.step = nil
		t := r.atLeft[0]
		if t > end {
			r.emitNote("", fmt.Sprintf("the scenario ended at %ss; running on to %ss for a snapshot", trace.FormatTime(end), trace.FormatTime(t)))
		}
		r.advance(t, nil)
		if t > end && len(r.res.Snapshots) > 0 {
			r.res.Snapshots[len(r.res.Snapshots)-1].PastEnd = true
		}
	}
	stopErr := r.stopError()
	if stopErr != nil {
		end = b.Now()
	}
	r.step = nil
	r.res.End = end
	for _, h := range sc.Hosts {
		r.res.States = append(r.res.States, HostStates{Host: h.Name, States: lifecycleOrder(r.states[h.Name])})
		cs, err := b.Counters(h.Name)
		if err != nil {
			if stopErr != nil {
				continue // an interrupted kernel backend may have no lab left
			}
			return nil, err
		}
		var nz []trace.Counter
		for _, c := range cs {
			if c.Value != 0 {
				nz = append(nz, c)
			}
		}
		r.res.Counters[h.Name] = nz
	}
	if stopErr != nil {
		return r.res, stopErr
	}
	return r.res, nil
}

// stopped reports whether the run is stopping (a budget limit, or the
// context).
func (r *runner) stopped() bool { return r.stop.Load() != nil }

// halt stops the run for a reason, once: the backend stops at its next
// change (the simulator through advance's stop function, the kernel
// through Interrupt).
func (r *runner) halt(reason string, cause error) {
	e := &StoppedError{Reason: reason, Cause: cause}
	if !r.stop.CompareAndSwap(nil, e) {
		return
	}
	if i, ok := r.b.(interface{ Interrupt(error) }); ok {
		if cause == nil {
			cause = errors.New(reason)
		}
		i.Interrupt(cause)
	}
}

// haltContext stops the run for its context's cause.
func (r *runner) haltContext() {
	cause := context.Cause(r.opt.Context)
	reason := "interrupted"
	if cause != nil {
		reason = cause.Error()
	}
	r.halt(reason, cause)
}

// stopError is the StoppedError of a stopped run, placed at the step it
// was at, with a note ending its events.
func (r *runner) stopError() error {
	e := r.stop.Load()
	if e == nil {
		return nil
	}
	switch {
	case r.step != nil:
		e.Pos = r.step.Pos
	case len(r.sc.Steps) > 0: // running on for a snapshot after the last step
		e.Pos = r.sc.Steps[len(r.sc.Steps)-1].Pos
	default:
		e.Pos = Pos{File: r.sc.File, Line: 1, Col: 1}
	}
	e.At = r.b.Now()
	r.observe(trace.Event{At: e.At, Kind: trace.KindNote, Note: "the run stopped here: " + e.Reason})
	return e
}

// snapshotOf lists a host's sockets for a condition, charging each to
// the budget's MaxWork: an until is tested after every change, and each
// test of a host with 100,000 sockets lists them all.
func (r *runner) snapshotOf(host string) ([]trace.Socket, error) {
	snap, err := r.b.Snapshot(host)
	r.charge(int64(len(snap))+1, host)
	return snap, err
}

// charge counts n sockets or packets that a condition on host went
// through against the budget's MaxWork.
func (r *runner) charge(n int64, host string) {
	r.work += n
	if r.work > r.budget.MaxWork && !r.stopped() {
		line := 0
		if r.step != nil {
			line = r.step.Pos.Line
		}
		r.halt(fmt.Sprintf("its conditions went through more than %d sockets and packets, the most a run may (the condition on line %d is tested after every change, and went through %d on %s)",
			r.budget.MaxWork, line, n, host), nil)
	}
}

// count charges an event to the budget and reports whether it fits.
func (r *runner) count(e *trace.Event) bool {
	r.events++
	r.bytes += EventCost + int64(len(e.Note)+len(e.Host))
	switch {
	case e.Packet != nil:
		r.bytes += int64(len(e.Packet.Segment.Payload))
	case e.Call != nil:
		r.bytes += int64(len(e.Call.Data) + len(e.Call.Text))
	case e.Check != nil:
		r.bytes += int64(len(e.Check.Text) + len(e.Check.Seen))
	case e.State != nil:
		r.bytes += int64(len(e.State.Cause))
	}
	if r.events > r.budget.MaxEvents {
		r.halt(fmt.Sprintf("it made %d events, the most a run may make%s", r.budget.MaxEvents, r.busiest()), nil)
		return false
	}
	return !r.overBytes("events", r.busiest)
}

// overBytes stops the run when what it holds passes MaxBytes, saying
// what holds it and, from more, what else may explain it.
func (r *runner) overBytes(what string, more func() string) bool {
	if r.bytes <= r.budget.MaxBytes {
		return false
	}
	if !r.stopped() {
		r.halt(fmt.Sprintf("its %s hold more than %d MB, the most a run may hold%s", what, r.budget.MaxBytes>>20, more()), nil)
	}
	return true
}

// busiest names the inject step still sending with the most segments,
// the likely cause of a run over its budget.
func (r *runner) busiest() string {
	var best *injectLoad
	now := r.b.Now()
	for i := range r.injects {
		in := &r.injects[i]
		if in.last >= now && in.count > 1 && (best == nil || in.count > best.count) {
			best = in
		}
	}
	if best == nil {
		return ""
	}
	return fmt.Sprintf("; line %d injects %d segments", best.pos.Line, best.count)
}

// observe sees every event before it goes to the caller's sink.
func (r *runner) observe(e trace.Event) {
	if !r.stopped() && r.opt.Context != nil && r.opt.Context.Err() != nil {
		r.haltContext()
	}
	if r.stopped() && e.Kind != trace.KindNote {
		return // past the budget, or interrupted: keep the bound
	}
	if e.Kind != trace.KindNote || !strings.HasPrefix(e.Note, "the run stopped here: ") {
		if !r.count(&e) {
			return
		}
	}
	r.seq++
	e.Seq = r.seq
	switch e.Kind {
	case trace.KindPacket, trace.KindState, trace.KindCall, trace.KindCounter:
		r.lastAt = max(r.lastAt, e.At)
	}
	r.stepBegan(&e)
	switch e.Kind {
	case trace.KindCall:
		r.seeCall(&e)
	case trace.KindState:
		k := hostSock{e.Host, e.Sock}
		if e.Remote.Port() != 0 || e.Local.Port() != 0 {
			// As on the wire: a dual-stack socket's IPv4 peer shows
			// IPv4-mapped, its packets carry IPv4.
			l, rm := e.Local, e.Remote
			if l.Addr().Is4In6() && rm.Addr().Is4In6() {
				l = netip.AddrPortFrom(l.Addr().Unmap(), l.Port())
				rm = netip.AddrPortFrom(rm.Addr().Unmap(), rm.Port())
			}
			r.addrs[k] = [2]netip.AddrPort{l, rm}
		}
		r.paths[k] = append(r.paths[k], e.State.To)
		if r.entered[k] == nil {
			r.entered[k] = map[string]time.Duration{}
		}
		r.entered[k][e.State.To] = e.At
		if st := e.State.To; !r.stSeen[e.Host][st] {
			if r.stSeen[e.Host] == nil {
				r.stSeen[e.Host] = map[string]bool{}
			}
			r.stSeen[e.Host][st] = true
			r.states[e.Host] = append(r.states[e.Host], st)
		}
	case trace.KindPacket:
		p := e.Packet
		// What a capture on the host's interface sees: every arrival
		// (before the input rules), and departures that passed the
		// output rules.
		onWire := p.Dir == trace.In || p.OnWire
		r.packets = append(r.packets, pktRec{host: e.Host, dir: p.Dir, flags: p.Segment.Flags, at: e.At, onWire: onWire})
		if onWire {
			r.pktCount[pktKey{e.Host, p.Dir, p.Segment.Flags}]++
		}
		if p.Dir == trace.Out {
			r.seeSegment(&p.Segment)
		}
	}
	if r.opt.Sink != nil {
		r.opt.Sink(e)
	}
}

// stepBegan moves the current step's start to when its own action began
// on the backend: the first call it made (a kernel call may first wait
// for the tracer, or for a thread), or the moment its rule took effect.
// In the simulator these are the step's start.
func (r *runner) stepBegan(e *trace.Event) {
	if r.step == nil || len(r.res.Steps) == 0 {
		return
	}
	st := &r.res.Steps[len(r.res.Steps)-1]
	if r.step.Kind == StepCall && e.Kind == trace.KindCall && e.Call.Started >= st.Start {
		if !r.acted {
			st.Start, r.acted = e.Call.Started, true
		}
		// A repeat's calls are meant for one instant too (Burster):
		// its last call's start says how late the step was. (A blocked
		// call's completion, reported later, carries its own start.)
		st.Last = max(st.Last, e.Call.Started)
		return
	}
	if r.acted {
		return
	}
	switch {
	case (r.step.Kind == StepRule || r.step.Kind == StepRemove) && e.Kind == trace.KindRule && e.At >= st.Start:
		st.Start, st.Last, r.acted = e.At, e.At, true
	}
}

// seeSegment learns each direction's ISN and next sequence number.
func (r *runner) seeSegment(s *wire.Segment) {
	k := flowKey{netip.AddrPortFrom(s.Src, s.SrcPort), netip.AddrPortFrom(s.Dst, s.DstPort)}
	f := r.flows[k]
	if f == nil {
		f = &flowInfo{}
		r.flows[k] = f
	}
	if s.Flags&wire.SYN != 0 && s.Flags&wire.RST == 0 && !f.haveISN {
		f.isn, f.haveISN = s.Seq, true
	}
	end := s.Seq.Add(len(s.Payload))
	if s.Flags&(wire.SYN|wire.FIN) != 0 {
		end = end.Add(1)
	}
	if s.Flags&wire.RST != 0 {
		return
	}
	if !f.seen || end.GreaterThan(f.next) {
		f.next, f.seen = end, true
	}
}

func (r *runner) seeCall(e *trace.Event) {
	c := e.Call
	rec := r.calls[callKey{e.Host, c.ID}]
	if rec == nil {
		if !c.Pending && len(r.early) < maxEarly {
			ev := *e
			r.early[callKey{e.Host, c.ID}] = &ev
		}
		return
	}
	// A call that returned at once was finished when it returned; its
	// event may come later (a kernel burst reports after the last call).
	if c.Pending || !rec.pending {
		return
	}
	rec.pending = false
	rec.doneAt = e.At
	rec.res.Ret, rec.res.Data, rec.res.NewSock = c.Ret, c.Data, tcp.SockID(c.NewSock)
	rec.res.Err = 0
	if c.Errno != "" {
		rec.res.Err, _ = tcp.ParseErrno(c.Errno)
	}
	r.finish(e.Host, rec)
}

// maxEarly bounds the completions kept for calls not yet recorded: at
// most the calls of one step are ever waiting.
const maxEarly = 1 << 16

// record files a call under its ID; a completion that came before it
// (early) is applied now.
func (r *runner) record(host string, id uint64, rec *callRec) {
	k := callKey{host, id}
	r.calls[k] = rec
	if e := r.early[k]; e != nil {
		delete(r.early, k)
		if rec.pending {
			r.seeCall(e)
		}
	}
}

// finish applies a completed call to the named sockets.
func (r *runner) finish(host string, rec *callRec) {
	if rec.op == tcp.OpAccept && rec.as != nil {
		rec.as.waiting = nil
		if rec.res.Err == tcp.OK {
			rec.as.fd, rec.as.sock, rec.as.open = tcp.FD(rec.res.Ret), uint64(rec.res.NewSock), true
		}
	}
	if rec.op == tcp.OpRead && rec.res.Err == tcp.OK && !rec.peek {
		if s := r.socks[host][rec.name]; s != nil {
			s.received += int64(rec.res.Ret)
			s.data = append(s.data, rec.res.Data...)
		}
	}
}

func (r *runner) emit(e trace.Event) {
	e.At = r.b.Now()
	r.observe(e)
}

func (r *runner) emitNote(host, text string) {
	r.emit(trace.Event{Host: host, Kind: trace.KindNote, Note: text})
}

// advance lets time pass to t (or until stop), taking the snapshots asked
// for on the way.
// A stopping run makes the backend return at once; it reports false.
func (r *runner) advance(t time.Duration, stop func() bool) bool {
	guard := func() bool { return r.stopped() || stop != nil && stop() }
	for len(r.atLeft) > 0 && r.atLeft[0] <= t {
		at := r.atLeft[0]
		if at >= r.b.Now() {
			if r.b.RunUntil(at, guard) {
				return !r.stopped()
			}
		}
		if r.stopped() {
			return false
		}
		r.atLeft = r.atLeft[1:]
		r.snapshot(at)
	}
	return r.b.RunUntil(t, guard) && !r.stopped()
}

func (r *runner) snapshot(at time.Duration) {
	s := Snapshot{At: r.b.Now()}
	if at > s.At {
		s.At = at
	}
	for _, h := range r.sc.Hosts {
		socks, _ := r.b.Snapshot(h.Name)
		s.Hosts = append(s.Hosts, HostSockets{Host: h.Name, Sockets: socks})
		// Kept until the end and printed: charged like events.
		r.bytes += int64(len(socks)) * EventCost
	}
	r.res.Snapshots = append(r.res.Snapshots, s)
	r.overBytes("events and snapshots (--at)", func() string { return "" })
}

func (r *runner) do(s *Step) error {
	switch s.Kind {
	case StepCall:
		return r.call(s.Host, s.Call)
	case StepInject:
		return r.inject(s.Host, s.Inject)
	case StepRule:
		id, err := r.b.AddRule(s.Rule.Rule)
		if err != nil {
			return err
		}
		if s.Rule.Name != "" {
			r.rules[s.Rule.Name] = id
		}
	case StepRemove:
		id, ok := r.rules[s.Name]
		if !ok {
			return fmt.Errorf("no rule named %q is installed", s.Name)
		}
		delete(r.rules, s.Name)
		return r.b.RemoveRule(id)
	case StepSet:
		if err := r.b.Set(s.Host, s.Setting, s.Value); err != nil {
			return err
		}
		r.emitNote(s.Host, fmt.Sprintf("%s = %s", s.Setting, s.Value))
	case StepProfile:
		if err := r.b.SetProfile(s.Host, s.Name); err != nil {
			return err
		}
		r.emitNote(s.Host, "profile "+s.Name)
	case StepAfter:
		r.due += s.Dur
		r.advance(r.due, nil)
	case StepAt:
		if s.Dur < r.due {
			return fmt.Errorf("at %v is in the past: the script is at %v", s.Dur, r.due)
		}
		r.due = s.Dur
		r.advance(r.due, nil)
	case StepUntil:
		already, _ := r.test(s.Cond, false)
		// The wait is measured from the backend's clock: a step the
		// kernel harness started late still gets its whole time.
		ok := r.advance(r.b.Now()+s.Dur, func() bool { okc, _ := r.test(s.Cond, false); return okc })
		if r.stopped() {
			return nil
		}
		switch {
		case ok && !already:
			// Met by the latest event the backend reported.
			r.due = max(r.due, min(r.lastAt, r.b.Now()))
		case !ok:
			// Not met: the script's clock moves by the whole bound.
			r.due += s.Dur
		}
		c := Check{Pos: s.Pos, Text: s.Text, OK: ok, At: r.b.Now()}
		if !ok {
			_, seen := r.test(s.Cond, true)
			c.Seen = fmt.Sprintf("not within %v; at the end: %s", s.Dur, seen)
		}
		r.addCheck(c)
	case StepExpect:
		ok, seen := r.test(s.Cond, true)
		c := Check{Pos: s.Pos, Text: s.Text, OK: ok, At: r.b.Now()}
		if !ok {
			c.Seen = seen
		}
		r.addCheck(c)
	case StepNote:
		r.emitNote("", s.Note)
	case StepPart:
		r.emitNote("", "== "+s.Note+" ==")
	}
	return nil
}

func (r *runner) addCheck(c Check) {
	r.res.Checks = append(r.res.Checks, c)
	r.emit(trace.Event{Kind: trace.KindCheck, Host: r.step.Host,
		Check: &trace.Check{Line: c.Pos.Line, Text: c.Text, OK: c.OK, Seen: c.Seen}})
}

// call makes a scenario call, once or repeated.
func (r *runner) call(host string, c *CallStep) error {
	if c.Repeat == 0 {
		return r.call1(host, c, c.Sock, c.As)
	}
	if bb, ok := r.b.(Burster); ok {
		bb.Burst(true)
		defer bb.Burst(false)
	}
	for i := 1; i <= c.Repeat && !r.stopped(); i++ {
		sub := func(s string) string { return strings.ReplaceAll(s, "{i}", strconv.Itoa(i)) }
		if err := r.call1(host, c, sub(c.Sock), sub(c.As)); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) sock(host, name string) (*sockRec, error) {
	s := r.socks[host][name]
	if s == nil {
		return nil, fmt.Errorf("no socket %q on %s", name, host)
	}
	if !s.open {
		if s.waiting != nil {
			return nil, fmt.Errorf("socket %q on %s does not exist yet: its accept() is still blocked (add `until %s: %s accept returned` before)", name, host, host, name)
		}
		return nil, fmt.Errorf("socket %q on %s was never created: the call that makes it failed", name, host)
	}
	return s, nil
}

// sys makes one system call and records it under a socket name.
func (r *runner) sys(host, name string, call tcp.Call) (*callRec, error) {
	res, err := r.b.Call(host, call)
	if err != nil {
		return nil, err
	}
	rec := &callRec{op: call.Op, name: name, res: res, pending: res.Pending, peek: call.Peek}
	if s := r.socks[host][name]; s != nil {
		s.last[call.Op] = rec
	}
	r.record(host, res.ID, rec)
	if !res.Pending {
		rec.doneAt = r.b.Now()
		r.finish(host, rec)
	}
	return rec, nil
}

// newSock makes a socket: AF_INET6 with v6 (a program asks getaddrinfo,
// then socket() of the family it gave).
func (r *runner) newSock(host, name string, v6 bool) (*sockRec, error) {
	s := &sockRec{host: host, name: name, last: map[tcp.Op]*callRec{}}
	r.socks[host][name] = s
	rec, err := r.sys(host, name, tcp.Call{Op: tcp.OpSocket, V6: v6})
	if err != nil {
		return nil, err
	}
	if rec.res.Err != tcp.OK {
		return s, nil
	}
	s.fd, s.sock, s.open = tcp.FD(rec.res.Ret), uint64(rec.res.NewSock), true
	return s, nil
}

// operand is the socket a listen or connect acts on: the named one, or a
// new socket called as; SO_REUSEADDR is set first when asked. A nil socket
// with no error means socket() itself failed, and its errno is recorded.
func (r *runner) operand(host, name, as string, reuse, v6 bool) (*sockRec, string, error) {
	var s *sockRec
	var err error
	if name == "" {
		if s, err = r.newSock(host, as, v6); err != nil || !s.open {
			return nil, as, err
		}
		name = as
	} else if s, err = r.sock(host, name); err != nil {
		return nil, name, err
	}
	if reuse {
		if _, err := r.sys(host, name, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: tcp.Option{Kind: tcp.OptReuseAddr, On: true}}); err != nil {
			return nil, name, err
		}
	}
	return s, name, nil
}

func (r *runner) call1(host string, c *CallStep, name, as string) error {
	nb := c.NonBlock
	switch c.Verb {
	case VSocket:
		// A lone socket is AF_INET, but on an IPv6-only host.
		_, err := r.newSock(host, as, !r.v4[host])
		return err
	case VListen:
		// A server listens on :: when its host has IPv6 (dual-stack unless
		// v6only, as Linux's default), on 0.0.0.0 otherwise.
		s, name, err := r.operand(host, name, as, c.Reuse, r.v6[host])
		if err != nil || s == nil {
			return err
		}
		if c.V6Only {
			if _, err := r.sys(host, name, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: tcp.Option{Kind: tcp.OptV6Only, On: true}}); err != nil {
				return err
			}
		}
		_, err = r.sys(host, name, tcp.Call{Op: tcp.OpListen, FD: s.fd, Port: c.Port, Backlog: c.Backlog})
		return err
	case VAccept:
		l, err := r.sock(host, name)
		if err != nil {
			return err
		}
		ns := &sockRec{host: host, name: as, last: map[tcp.Op]*callRec{}}
		r.socks[host][as] = ns
		res, err := r.b.Call(host, tcp.Call{Op: tcp.OpAccept, FD: l.fd, NonBlock: nb})
		if err != nil {
			return err
		}
		rec := &callRec{op: tcp.OpAccept, name: name, as: ns, res: res, pending: res.Pending}
		l.last[tcp.OpAccept] = rec
		ns.last[tcp.OpAccept] = rec
		ns.waiting = rec
		r.record(host, res.ID, rec)
		if !res.Pending {
			rec.doneAt = r.b.Now()
			r.finish(host, rec)
		}
		return nil
	case VConnect:
		s, name, err := r.operand(host, name, as, c.Reuse, c.Target.Addr().Is6())
		if err != nil || s == nil {
			return err
		}
		if c.From != 0 {
			rec, err := r.sys(host, name, tcp.Call{Op: tcp.OpBind, FD: s.fd, Port: c.From})
			if err != nil || rec.res.Err != tcp.OK {
				return err // a failed bind's errno is the line's outcome
			}
		}
		_, err = r.sys(host, name, tcp.Call{Op: tcp.OpConnect, FD: s.fd, Addr: c.Target, NonBlock: nb})
		return err
	}
	s, err := r.sock(host, name)
	if err != nil {
		return err
	}
	var calls []tcp.Call
	switch c.Verb {
	case VBind:
		if c.Reuse {
			calls = append(calls, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: tcp.Option{Kind: tcp.OptReuseAddr, On: true}})
		}
		calls = append(calls, tcp.Call{Op: tcp.OpBind, FD: s.fd, Port: c.Port})
	case VWrite:
		calls = append(calls, tcp.Call{Op: tcp.OpWrite, FD: s.fd, Data: c.Data, NonBlock: nb})
	case VRead:
		calls = append(calls, tcp.Call{Op: tcp.OpRead, FD: s.fd, Max: c.Max, Peek: c.Peek, NonBlock: nb})
	case VShutdown:
		calls = append(calls, tcp.Call{Op: tcp.OpShutdown, FD: s.fd, How: c.How})
	case VClose:
		calls = append(calls, tcp.Call{Op: tcp.OpClose, FD: s.fd})
	case VLinger:
		calls = append(calls, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: *c.Linger})
	case VKeepalive:
		for _, o := range c.Keepalive {
			calls = append(calls, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: o})
		}
	case VReuseAddr:
		calls = append(calls, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: tcp.Option{Kind: tcp.OptReuseAddr, On: true}})
	case VNoDelay:
		calls = append(calls, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: tcp.Option{Kind: tcp.OptNoDelay, On: true}})
	case VNonBlock:
		calls = append(calls, tcp.Call{Op: tcp.OpSetOption, FD: s.fd, Option: tcp.Option{Kind: tcp.OptNonBlock, On: true}})
	}
	for _, cl := range calls {
		rec, err := r.sys(host, name, cl)
		if err != nil {
			return err
		}
		if rec.res.Err != tcp.OK {
			break
		}
	}
	return nil
}

// sockAddrs is the local and remote address of a named socket.
func (r *runner) sockAddrs(host, name string) ([2]netip.AddrPort, error) {
	s := r.socks[host][name]
	if s == nil || !s.open {
		return [2]netip.AddrPort{}, fmt.Errorf("socket %q on %s has no connection yet", name, host)
	}
	a, ok := r.addrs[hostSock{host, s.sock}]
	if !ok || a[1].Port() == 0 {
		return a, fmt.Errorf("socket %q on %s has no connection yet", name, host)
	}
	return a, nil
}

func (r *runner) value(v Value, def wire.Seq) (wire.Seq, error) {
	if !v.Set {
		return def, nil
	}
	if v.Host == "" {
		return wire.Seq(v.Const), nil
	}
	a, err := r.sockAddrs(v.Host, v.Sock)
	if err != nil {
		return 0, err
	}
	out, in := r.flows[flowKey{a[0], a[1]}], r.flows[flowKey{a[1], a[0]}]
	var base wire.Seq
	switch v.Field {
	case "", "next":
		if out == nil || !out.seen {
			return 0, fmt.Errorf("%s:%s has sent nothing yet", v.Host, v.Sock)
		}
		base = out.next
	case "isn":
		if out == nil || !out.haveISN {
			return 0, fmt.Errorf("%s:%s has sent no SYN yet", v.Host, v.Sock)
		}
		base = out.isn
	case "peer_isn":
		if in == nil || !in.haveISN {
			return 0, fmt.Errorf("%s:%s has seen no SYN from its peer yet", v.Host, v.Sock)
		}
		base = in.isn
	case "ack":
		if in == nil || !in.seen {
			return 0, fmt.Errorf("%s:%s has heard nothing from its peer yet", v.Host, v.Sock)
		}
		base = in.next
	}
	return base.Add(int(v.Offset)), nil
}

func (r *runner) inject(host string, in *InjectStep) error {
	seg := wire.Segment{Flags: in.Flags, Window: 64240, Payload: in.Data}
	if in.Window >= 0 {
		seg.Window = uint16(in.Window)
	}
	var defSeq, defAck wire.Seq
	if in.SpoofHost != "" {
		a, err := r.sockAddrs(in.SpoofHost, in.SpoofSock)
		if err != nil {
			return err
		}
		seg.Src, seg.SrcPort, seg.Dst, seg.DstPort = a[0].Addr(), a[0].Port(), a[1].Addr(), a[1].Port()
		if defSeq, err = r.value(Value{Set: true, Host: in.SpoofHost, Sock: in.SpoofSock, Field: "next"}, 0); err != nil {
			return err
		}
		defAck, _ = r.value(Value{Set: true, Host: in.SpoofHost, Sock: in.SpoofSock, Field: "ack"}, 0)
	} else {
		seg.Src, seg.SrcPort, seg.Dst, seg.DstPort = in.Src.Addr(), in.Src.Port(), in.Dst.Addr(), in.Dst.Port()
	}
	var err error
	if seg.Seq, err = r.value(in.Seq, defSeq); err != nil {
		return err
	}
	if seg.Ack, err = r.value(in.Ack, defAck); err != nil {
		return err
	}
	if seg.Flags&wire.ACK == 0 && !in.Ack.Set {
		seg.Ack = 0
	}
	// The segments are due at the step's time on the script's clock: a
	// late harness sends the overdue ones at once, and the backend knows
	// when each should arrive.
	now := min(r.b.Now(), r.due)
	r.injects = append(r.injects, injectLoad{pos: r.step.Pos, count: in.Count, last: now + time.Duration(in.Count-1)*in.Every})
	// The i-th segment comes from the first's source port plus i, so
	// that each is a connection of its own (a spoofed SYN flood).
	if si, ok := r.b.(seriesInjector); ok && in.Count > 1 {
		return si.InjectSeries(host, seg, now, in.Every, in.Count)
	}
	for i := 0; i < in.Count && !r.stopped(); i++ {
		s := seg
		if i > 0 {
			s.SrcPort = uint16((int(seg.SrcPort)-1+i)%65535 + 1)
		}
		if err := r.b.Inject(host, s, now+time.Duration(i)*in.Every); err != nil {
			return err
		}
	}
	return nil
}

// seriesInjector is a backend that schedules a run of injected segments
// at once (the simulator: one queue entry instead of one per segment).
type seriesInjector interface {
	InjectSeries(host string, seg wire.Segment, at, every time.Duration, count int) error
}

// test evaluates a condition now; seen says what was found.
// An until tests its condition after every change without asking what
// was seen (withSeen false): describing it can cost far more than the test
// (the quoted bytes of a large read).
func (r *runner) test(c *Cond, withSeen bool) (bool, string) {
	ok, seen := r.check(c)
	if !withSeen {
		return ok, ""
	}
	return ok, seen()
}

// check tests a condition; what was seen is described on demand.
func (r *runner) check(c *Cond) (bool, func() string) {
	say := func(format string, a ...any) func() string { return func() string { return fmt.Sprintf(format, a...) } }
	text := func(s string) func() string { return func() string { return s } }
	switch c.Kind {
	case CondCount:
		snap, err := r.snapshotOf(c.Host)
		if err != nil {
			return false, text(err.Error())
		}
		n := int64(0)
		for _, s := range snap {
			if c.State == "all" || s.State == c.State {
				n++
			}
		}
		return compare(n, c.Cmp, c.N), say("%d %s", n, c.State)
	case CondCounter:
		cs, err := r.b.Counters(c.Host)
		if err != nil {
			return false, text(err.Error())
		}
		var v int64
		for _, x := range cs {
			if x.Name == c.Counter {
				v = x.Value
			}
		}
		key := c.Host + "/" + c.Counter
		got := v
		if c.Delta {
			got = v - r.counter[key]
		}
		ok := compare(got, c.Cmp, c.N)
		if r.step != nil && r.step.Kind == StepExpect {
			r.counter[key] = v
		}
		if c.Delta {
			return ok, say("%s grew by %d (now %d)", c.Counter, got, v)
		}
		return ok, say("%s = %d", c.Counter, v)
	case CondPackets:
		fl := "[" + c.Flags.Short() + "]"
		if c.Times == nil {
			// Counted as they come: an until on a flood's packets
			// would otherwise scan them all after every change.
			n := r.pktCount[pktKey{c.Host, c.Dir, c.Flags}]
			return compare(n, c.Cmp, c.N), say("%d %s packets %s", n, fl, c.Dir)
		}
		r.charge(int64(len(r.packets)), c.Host)
		var times []time.Duration
		for _, p := range r.packets {
			if p.host == c.Host && p.dir == c.Dir && p.flags == c.Flags && p.onWire {
				times = append(times, p.at)
			}
		}
		ok := len(times) == len(c.Times)
		for i := 0; ok && i < len(times); i++ {
			ok = within(times[i], c.Times[i], r.b.Tolerance(c.Times[i]))
		}
		return ok, func() string { return fmt.Sprintf("%s at %s", fl, fmtTimes(times)) }
	}
	s := r.socks[c.Host][c.Sock]
	if s == nil {
		return false, say("no socket %q yet", c.Sock)
	}
	switch c.Kind {
	case CondState:
		st := r.stateOf(s)
		return st == c.State, text("state " + st)
	case CondPath:
		if !s.open {
			return false, text("no connection yet")
		}
		path := r.paths[hostSock{c.Host, s.sock}]
		return equal(path, c.Path), func() string { return "path " + strings.Join(path, " ") }
	case CondEntered:
		if !s.open {
			return false, text("no connection yet")
		}
		at, ok := r.entered[hostSock{c.Host, s.sock}][c.State]
		if !ok {
			return false, text("never entered " + c.State)
		}
		return within(at, c.Times[0], r.b.Tolerance(c.Times[0])), say("entered %s at %ss", c.State, trace.FormatTime(at))
	case CondReceived:
		if c.Text != nil {
			return string(s.data) == *c.Text, say("received %q", s.data)
		}
		return compare(s.received, c.Cmp, c.N), say("received %d bytes", s.received)
	case CondCall:
		rec := s.last[c.Op]
		if rec == nil {
			return false, say("no %s call on %s", c.Op, c.Sock)
		}
		seen := func() string { return describe(rec) }
		switch {
		case c.Pending:
			return rec.pending, seen
		case c.Returned:
			return !rec.pending, seen
		}
		if rec.pending {
			return false, seen
		}
		ok := true
		switch {
		case c.Errno != "":
			ok = rec.res.Err.Name() == c.Errno
		case c.Text != nil:
			ok = rec.res.Err == tcp.OK && string(rec.res.Data) == *c.Text
		case c.HasRet:
			ok = rec.res.Err == tcp.OK && int64(rec.res.Ret) == c.Ret
		default: // = ok
			ok = rec.res.Err == tcp.OK
		}
		if ok && len(c.Times) == 1 {
			ok = within(rec.doneAt, c.Times[0], r.b.Tolerance(c.Times[0]))
		}
		return ok, seen
	}
	return false, text("unknown condition")
}

func describe(rec *callRec) string {
	if rec.pending {
		return fmt.Sprintf("%s still blocked", rec.op)
	}
	var v string
	switch {
	case rec.res.Err != tcp.OK:
		v = rec.res.Err.Name()
	case rec.op == tcp.OpRead && len(rec.res.Data) > 0:
		v = strconv.Quote(string(rec.res.Data))
	default:
		v = strconv.Itoa(rec.res.Ret)
	}
	return fmt.Sprintf("%s = %s at %ss", rec.op, v, trace.FormatTime(rec.doneAt))
}

// stateOf is a named socket's state now; a socket the host no longer
// lists is CLOSED.
func (r *runner) stateOf(s *sockRec) string {
	if !s.open {
		if s.waiting != nil {
			return "not accepted yet"
		}
		return tcp.Closed.String() // the call that makes it failed
	}
	snap, err := r.snapshotOf(s.host)
	if err != nil {
		return err.Error()
	}
	for _, x := range snap {
		if x.Sock == s.sock {
			return x.State
		}
	}
	return tcp.Closed.String()
}

func compare(a int64, cmp string, b int64) bool {
	switch cmp {
	case "!=":
		return a != b
	case "<":
		return a < b
	case "<=":
		return a <= b
	case ">":
		return a > b
	case ">=":
		return a >= b
	}
	return a == b
}

func within(got, want, tol time.Duration) bool {
	d := got - want
	if d < 0 {
		d = -d
	}
	return d <= tol
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func fmtTimes(ts []time.Duration) string {
	if len(ts) == 0 {
		return "(none)"
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = strings.TrimRight(strings.TrimRight(trace.FormatTime(t), "0"), ".") + "s"
	}
	return strings.Join(parts, " ")
}

// stateRank orders states as a connection passes through them: opening,
// established, the active close, the passive close, closed.
var stateRank = map[string]int{"LISTEN": 1, "SYN_SENT": 2, "SYN_RECV": 3, "ESTABLISHED": 4, "FIN_WAIT1": 5, "FIN_WAIT2": 6,
	"CLOSING": 7, "TIME_WAIT": 8, "CLOSE_WAIT": 9, "LAST_ACK": 10, "CLOSED": 11}

// lifecycleOrder sorts states reached by several connections into the
// order of one connection's life, so that a host's line reads as a story
// (a second connection's CLOSED does not come before the first one's
// LAST_ACK). Unknown names keep their place after the known ones.
func lifecycleOrder(states []string) []string {
	out := slices.Clone(states)
	slices.SortStableFunc(out, func(a, b string) int {
		ra, rb := stateRank[a], stateRank[b]
		if ra == 0 {
			ra = 100
		}
		if rb == 0 {
			rb = 100
		}
		return ra - rb
	})
	return out
}
