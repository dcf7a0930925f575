package pkt

import (
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// firstEpollFD numbers the runner's epoll descriptors, far from the
// backends' socket descriptors; a script's own numbers map to them.
const firstEpollFD tcp.FD = 1 << 20

// engineOptions are the socket options the backends' setsockopt call
// carries (tcp.Option); the others go to the osCalls.
var engineOptions = map[string]bool{
	"SO_LINGER": true, "SO_REUSEADDR": true, "SO_KEEPALIVE": true, "TCP_NODELAY": true,
	"TCP_KEEPIDLE": true, "TCP_KEEPINTVL": true, "TCP_KEEPCNT": true,
	"SO_SNDBUF": true, "TCP_MAXSEG": true, "TCP_USER_TIMEOUT": true, "TCP_CORK": true,
}

// osCall makes a call the backends' call set lacks (getsockopt, ioctl,
// poll, epoll, other socket options); handled says it was one.
func (r *player) osCall(ev *Event, at, prev time.Duration) (handled bool, err *stop) {
	sc := ev.Syscall
	if handled, err := r.rawData(ev); handled {
		return true, err
	}
	switch sc.Name {
	case "getsockopt":
		return true, r.getsockoptCall(ev)
	case "setsockopt":
		if len(sc.Args) == 5 && !engineOptions[sc.Args[2].String()] {
			return true, r.setsockoptCall(ev)
		}
	case "ioctl":
		return true, r.ioctlCall(ev)
	case "poll":
		return true, r.pollCall(ev, at, prev)
	case "epoll_create", "epoll_create1":
		return true, r.epollCreateCall(ev)
	case "epoll_ctl":
		return true, r.epollCtlCall(ev)
	case "epoll_wait":
		return true, r.epollWaitCall(ev, at, prev)
	case "close":
		if len(sc.Args) == 1 {
			if v, ok := value(&sc.Args[0]); ok {
				if fd, ok := r.fds[v]; ok && fd >= firstEpollFD {
					r.os.epollClose(r.epolls[fd])
					delete(r.epolls, fd)
					delete(r.fds, v)
					r.traceCall(ev, fd, r.now(), 0, tcp.OK)
					return true, r.checkResult(ev, 0, tcp.OK, false)
				}
			}
		}
	}
	return false, nil
}

func nargs(ev *Event, n int) *stop {
	if len(ev.Syscall.Args) != n {
		return failAt(ev.Pos.Line, "%s takes %d arguments, the script gives %d", ev.Syscall.Name, n, len(ev.Syscall.Args))
	}
	return nil
}

// retOf is a call's return value for its errno.
func retOf(e tcp.Errno) int {
	if e != tcp.OK {
		return -1
	}
	return 0
}

// checkValue compares an [N] argument with what the call gave.
func checkValue(ev *Event, arg *Expr, got int64) *stop {
	if arg.Kind == ExEllipsis {
		return nil
	}
	want, ok := value(arg)
	if !ok {
		return unsupportedAt(ev.Pos.Line, "%s: value %s is not supported", ev.Syscall.Name, arg.String())
	}
	if want != got {
		return failAt(ev.Pos.Line, "runtime error in %s call: Bad %s optval: expected: %d actual: %d", ev.Syscall.Name, ev.Syscall.Name, want, got)
	}
	return nil
}

func (r *player) getsockoptCall(ev *Event) *stop {
	if err := nargs(ev, 5); err != nil {
		return err
	}
	fd, err := r.fd(ev, 0)
	if err != nil {
		return err
	}
	level, err := intArg(ev, 1)
	if err != nil {
		return err
	}
	name, err := intArg(ev, 2)
	if err != nil {
		return err
	}
	if level == symbols["SOL_TCP"] && name == symbols["TCP_INFO"] {
		return unsupportedAt(ev.Pos.Line, "getsockopt of TCP_INFO into a struct is not supported (use %%{ }%%)")
	}
	if l := &ev.Syscall.Args[4]; l.Kind != ExEllipsis {
		// Every option answered here is an int: its length is 4.
		if n, ok := value(l); !ok || n != 4 {
			return unsupportedAt(ev.Pos.Line, "getsockopt: option length %s is not supported (4: an int)", l.String())
		}
	}
	start := r.now()
	v, e, uns := r.os.getsockopt(fd, level, name)
	if uns != "" {
		return unsupportedAt(ev.Pos.Line, "%s", uns)
	}
	r.traceCall(ev, fd, start, int64(retOf(e)), e)
	if err := r.checkResult(ev, retOf(e), e, false); err != nil {
		return err
	}
	if e != tcp.OK {
		return nil
	}
	return checkValue(ev, &ev.Syscall.Args[3], v)
}

func (r *player) setsockoptCall(ev *Event) *stop {
	fd, err := r.fd(ev, 0)
	if err != nil {
		return err
	}
	level, err := intArg(ev, 1)
	if err != nil {
		return err
	}
	name, err := intArg(ev, 2)
	if err != nil {
		return err
	}
	v, ok := value(&ev.Syscall.Args[3])
	if !ok {
		return unsupportedAt(ev.Pos.Line, "setsockopt value %s is not supported", ev.Syscall.Args[3].String())
	}
	start := r.now()
	e, uns := r.os.setsockopt(fd, level, name, v)
	if uns != "" {
		return unsupportedAt(ev.Pos.Line, "%s", uns)
	}
	r.traceCall(ev, fd, start, int64(retOf(e)), e)
	return r.checkResult(ev, retOf(e), e, false)
}

func (r *player) ioctlCall(ev *Event) *stop {
	if err := nargs(ev, 3); err != nil {
		return err
	}
	fd, err := r.fd(ev, 0)
	if err != nil {
		return err
	}
	req, err := intArg(ev, 1)
	if err != nil {
		return err
	}
	start := r.now()
	v, e, uns := r.os.ioctl(fd, req)
	if uns != "" {
		return unsupportedAt(ev.Pos.Line, "%s", uns)
	}
	r.traceCall(ev, fd, start, int64(retOf(e)), e)
	if err := r.checkResult(ev, retOf(e), e, false); err != nil {
		return err
	}
	if e != tcp.OK {
		return nil
	}
	return checkValue(ev, &ev.Syscall.Args[2], v)
}

// localWait is a call the runner makes itself that may wait (poll,
// epoll_wait): check looks whether it can return, and says so once its
// timeout has passed.
type localWait struct {
	check    func(timedOut bool) (ret int, ok bool)
	deadline time.Duration // when its timeout passes (never: none)
	finish   func(ret int) *stop
	got      bool
	gotAt    time.Duration
	gotRet   int
}

// waitLocal makes a waiting call: at once if it can return or its
// timeout is 0; else, when the script lets it block (+0...0.02), while
// the script goes on; else it is waited for here.
func (r *player) waitLocal(ev *Event, at, prev time.Duration, fd tcp.FD, w *localWait) *stop {
	sc := ev.Syscall
	start := r.now()
	endAt := sc.End
	if sc.End >= 0 && ev.Time.Kind == TimeRel {
		endAt += at - ev.Time.At
	}
	ret, ok := w.check(w.deadline <= start)
	if ok {
		if sc.End >= 0 {
			if msg := r.st.verifyTime(TimeAbs, endAt, endAt, start, prev, "system call return"); msg != "" {
				return failAt(ev.Pos.Line, "runtime error in %s call: %s", sc.Name, msg)
			}
		}
		r.traceCall(ev, fd, start, int64(ret), tcp.OK)
		return w.finish(ret)
	}
	if sc.End >= 0 {
		r.blocked = &blockedCall{ev: ev, end: endAt, startAt: start, expected: sc, local: w, localFD: fd}
		return nil
	}
	limit := min(w.deadline, start+r.st.tolerance+sniffTimeout)
	r.blocked = &blockedCall{ev: ev, end: at, startAt: start, expected: sc, local: w, localFD: fd}
	if !r.waitFor(func() bool { return w.got }, limit) {
		r.blocked = nil
		return failAt(ev.Pos.Line, "runtime error in %s call: the call blocked (still blocked at %s s)", sc.Name, trace.FormatTime(limit))
	}
	r.blocked = nil
	// At once from when it was made: a harness that made it late (on the
	// kernel, counted in Late) moves its return too.
	if msg := r.st.verifyTime(TimeAbs, max(at, start), max(at, start), w.gotAt, prev, "system call return"); msg != "" {
		return failAt(ev.Pos.Line, "runtime error in %s call: %s", sc.Name, msg)
	}
	r.traceCall(ev, fd, start, int64(w.gotRet), tcp.OK)
	return w.finish(w.gotRet)
}

// localReady looks whether a blocked local call can return now.
func (r *player) localReady() bool {
	b := r.blocked
	if b == nil || b.local == nil || b.local.got {
		return false
	}
	w := b.local
	ret, ok := w.check(r.now() >= w.deadline)
	if !ok {
		return false
	}
	w.got, w.gotAt, w.gotRet = true, r.now(), ret
	return true
}

// pendingLocal is the deadline of a blocked local call still waiting.
func (r *player) pendingLocal() (time.Duration, bool) {
	b := r.blocked
	if b == nil || b.local == nil || b.local.got {
		return 0, false
	}
	return b.local.deadline, true
}

// timeoutMs reads a poll or epoll_wait timeout: the deadline from now.
func (r *player) timeoutMs(ev *Event, i int) (time.Duration, *stop) {
	t, err := intArg(ev, i)
	if err != nil {
		return 0, err
	}
	if t < 0 {
		return never, nil
	}
	return r.now() + time.Duration(t)*time.Millisecond, nil
}

// never is a deadline that does not come.
const never = time.Duration(1<<63 - 1)

func (r *player) pollCall(ev *Event, at, prev time.Duration) *stop {
	if err := nargs(ev, 3); err != nil {
		return err
	}
	sc := ev.Syscall
	list := &sc.Args[0]
	if list.Kind != ExList {
		return unsupportedAt(ev.Pos.Line, "poll: %s is not a list of pollfd", list.String())
	}
	type entry struct {
		fd             tcp.FD
		events, revent int64
		checkRevents   bool
	}
	var es []entry
	for i := range list.Elems {
		p := &list.Elems[i]
		fdE, evE := p.Field("fd"), p.Field("events")
		if fdE == nil || evE == nil {
			return unsupportedAt(ev.Pos.Line, "poll: %s is not a pollfd", p.String())
		}
		n, ok1 := value(fdE)
		events, ok2 := value(evE)
		if !ok1 || !ok2 {
			return unsupportedAt(ev.Pos.Line, "poll: %s is not supported", p.String())
		}
		e := entry{fd: -1, events: events}
		if fd, ok := r.fds[n]; ok {
			e.fd = fd
		}
		if re := p.Field("revents"); re != nil && re.Kind != ExEllipsis {
			v, ok := value(re)
			if !ok {
				return unsupportedAt(ev.Pos.Line, "poll: revents %s is not supported", re.String())
			}
			e.revent, e.checkRevents = v, true
		}
		es = append(es, e)
	}
	deadline, err := r.timeoutMs(ev, 2)
	if err != nil {
		return err
	}
	got := make([]int16, len(es))
	var uns string
	w := &localWait{deadline: deadline}
	w.check = func(timedOut bool) (int, bool) {
		n := 0
		for i, e := range es {
			re, _, u := r.os.poll(e.fd, int16(e.events))
			if u != "" {
				uns = u
				return 0, true
			}
			got[i] = re
			if re != 0 {
				n++
			}
		}
		return n, n > 0 || timedOut
	}
	w.finish = func(ret int) *stop {
		if uns != "" {
			return unsupportedAt(ev.Pos.Line, "%s", uns)
		}
		if err := r.checkResult(ev, ret, tcp.OK, false); err != nil {
			return err
		}
		for i, e := range es {
			if e.checkRevents && int64(uint16(got[i])) != e.revent {
				return failAt(ev.Pos.Line, "runtime error in poll call: Expected revents of 0x%x but got 0x%x", e.revent, uint16(got[i]))
			}
		}
		return nil
	}
	fd := tcp.FD(-1)
	if len(es) > 0 {
		fd = es[0].fd
	}
	return r.waitLocal(ev, at, prev, fd, w)
}

func (r *player) epollCreateCall(ev *Event) *stop {
	if err := nargs(ev, 1); err != nil {
		return err
	}
	start := r.now()
	id, e, uns := r.os.epollCreate()
	if uns != "" {
		return unsupportedAt(ev.Pos.Line, "%s", uns)
	}
	ret := -1
	if e == tcp.OK {
		if r.epolls == nil {
			r.epolls = map[tcp.FD]int{}
		}
		fd := firstEpollFD + tcp.FD(id)
		r.epolls[fd] = id
		ret = int(fd)
	}
	r.traceCall(ev, tcp.FD(ret), start, int64(ret), e)
	return r.checkResult(ev, ret, e, true)
}

// epollFD maps the epoll descriptor argument.
func (r *player) epollFD(ev *Event) (int, *stop) {
	v, err := intArg(ev, 0)
	if err != nil {
		return 0, err
	}
	fd, ok := r.fds[v]
	if !ok || fd < firstEpollFD {
		return -1, nil
	}
	return r.epolls[fd], nil
}

// epollData reads an epoll_event's data: fd=N (the script's number) or
// ptr=N or u64=N.
func epollData(e *Expr) (v uint64, present, ok bool) {
	for _, f := range []string{"fd", "ptr", "u64", "u32"} {
		if d := e.Field(f); d != nil {
			if d.Kind == ExEllipsis {
				return 0, false, true
			}
			n, ok := value(d)
			return uint64(n), true, ok
		}
	}
	return 0, false, true
}

func (r *player) epollCtlCall(ev *Event) *stop {
	if err := nargs(ev, 4); err != nil {
		return err
	}
	ep, err := r.epollFD(ev)
	if err != nil {
		return err
	}
	op, err := intArg(ev, 1)
	if err != nil {
		return err
	}
	fd, err := r.fd(ev, 2)
	if err != nil {
		return err
	}
	evE := &ev.Syscall.Args[3]
	var events int64
	var data uint64
	if op != symbols["EPOLL_CTL_DEL"] || evE.Kind == ExStruct {
		ee := evE.Field("events")
		if ee == nil {
			return unsupportedAt(ev.Pos.Line, "epoll_ctl: event %s is not supported", evE.String())
		}
		var ok1, ok2, present bool
		events, ok1 = value(ee)
		data, present, ok2 = epollData(evE)
		if !ok1 || !ok2 || !present {
			return unsupportedAt(ev.Pos.Line, "epoll_ctl: event %s is not supported", evE.String())
		}
	}
	start := r.now()
	var e tcp.Errno
	var uns string
	if ep < 0 {
		e = tcp.EBADF
	} else {
		e, uns = r.os.epollCtl(ep, op, fd, uint32(events), data)
	}
	if uns != "" {
		return unsupportedAt(ev.Pos.Line, "%s", uns)
	}
	r.traceCall(ev, fd, start, int64(retOf(e)), e)
	return r.checkResult(ev, retOf(e), e, false)
}

func (r *player) epollWaitCall(ev *Event, at, prev time.Duration) *stop {
	if err := nargs(ev, 4); err != nil {
		return err
	}
	ep, err := r.epollFD(ev)
	if err != nil {
		return err
	}
	max, err := intArg(ev, 2)
	if err != nil {
		return err
	}
	deadline, err := r.timeoutMs(ev, 3)
	if err != nil {
		return err
	}
	want := &ev.Syscall.Args[1]
	var got []epollEvent
	var errno tcp.Errno
	var uns string
	w := &localWait{deadline: deadline}
	w.check = func(timedOut bool) (int, bool) {
		if ep < 0 {
			errno = tcp.EBADF
			return -1, true
		}
		got, errno, uns = r.os.epollWait(ep, int(max))
		if uns != "" || errno != tcp.OK {
			return -1, true
		}
		return len(got), len(got) > 0 || timedOut
	}
	w.finish = func(ret int) *stop {
		if uns != "" {
			return unsupportedAt(ev.Pos.Line, "%s", uns)
		}
		if err := r.checkResult(ev, ret, errno, false); err != nil {
			return err
		}
		if ret < 1 || want.Kind == ExEllipsis {
			return nil
		}
		// The events the script expects: one struct, or a list of them,
		// each compared with what was returned, in order.
		wants := []Expr{*want}
		if want.Kind == ExList {
			wants = want.Elems
		} else if want.Kind != ExStruct {
			return unsupportedAt(ev.Pos.Line, "epoll_wait: events %s are not supported", want.String())
		}
		if len(wants) < len(got) {
			return unsupportedAt(ev.Pos.Line, "epoll_wait: %d events returned, the script describes %d", len(got), len(wants))
		}
		for i := range got {
			w := &wants[i]
			ee := w.Field("events")
			if ee == nil {
				return unsupportedAt(ev.Pos.Line, "epoll_wait: event %s has no events field", w.String())
			}
			if ee.Kind != ExEllipsis {
				v, ok := value(ee)
				if !ok {
					return unsupportedAt(ev.Pos.Line, "epoll_wait: events %s is not supported", ee.String())
				}
				if uint32(v) != got[i].events {
					return failAt(ev.Pos.Line, "runtime error in epoll_wait call: Expected events 0x%x but got 0x%x", uint32(v), got[i].events)
				}
			}
			d, present, ok := epollData(w)
			if !ok {
				return unsupportedAt(ev.Pos.Line, "epoll_wait: data of %s is not supported", w.String())
			}
			if present && d != got[i].data {
				return failAt(ev.Pos.Line, "runtime error in epoll_wait call: Expected data %d but got %d", d, got[i].data)
			}
		}
		return nil
	}
	return r.waitLocal(ev, at, prev, -1, w)
}

// closeOS ends what the runner opened itself.
func (r *player) closeOS() {
	if k, ok := r.os.(*kernelOS); ok {
		k.closeAll()
	}
}
