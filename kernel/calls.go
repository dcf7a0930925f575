package kernel

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// completion is a blocked call that returned, or the event of a call
// that returned at once and is reported with the next flush (made).
type completion struct {
	h   *host
	res tcp.Result
	at  time.Duration // CLOCK_MONOTONIC
	// newFd is the descriptor accept returned.
	newFd int
	made  *trace.Event
	from  *blocked // the blocked call it ends
}

func errnoOf(err error) tcp.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return tcp.Errno(e)
	}
	return tcp.EINVAL
}

// allocFD gives the lowest free descriptor number from 3, as a process's
// table does, so calls read the same as in the simulator.
func (h *host) allocFD(s *ksock) tcp.FD {
	fd := tcp.FD(3)
	for h.fds[fd] != nil {
		fd++
	}
	h.fds[fd] = s
	s.fd = fd
	return fd
}

func (h *host) newSock(kfd int) *ksock {
	h.nextSock++
	s := &ksock{id: h.nextSock, h: h, kfd: kfd, state: "CLOSED"}
	h.socks = append(h.socks, s)
	return s
}

// Call makes an application call with a real socket in the host's
// namespace. Sockets are non-blocking underneath; a call the application
// asked to block waits in a goroutine and completes later.
func (b *Backend) Call(hostName string, c tcp.Call) (tcp.Result, error) {
	h, err := b.host(hostName)
	if err != nil {
		return tcp.Result{}, err
	}
	if err := b.start(); err != nil {
		return tcp.Result{}, err
	}
	b.endOpening(false)
	b.awaitInjected(h)
	// What the call follows is reported after it, with what came of it,
	// so that the call is made at once: each report waits for the tracer,
	// which on a loaded machine took milliseconds a time. Only a call
	// that changes the host's table of descriptors (socket, accept,
	// close) must first see the blocked accepts that returned before it,
	// since an accepted connection takes the lowest free number.
	if c.Op == tcp.OpSocket || c.Op == tcp.OpAccept || c.Op == tcp.OpClose {
		accepts := func(bc *blocked) bool { return bc.h == h && bc.op == tcp.OpAccept }
		b.settle(settleLimit, accepts)
		if b.owes(accepts) {
			b.flushUpTo(b.Now())
		}
	}
	h.nextCall++
	now := b.Now()
	r := tcp.Result{ID: h.nextCall, Call: c, Started: now, At: now}
	if c.Op == tcp.OpSocket {
		var fd int
		family := unix.AF_INET
		if c.V6 {
			family = unix.AF_INET6
		}
		err := h.work.do(func() error {
			var e error
			fd, e = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if e == nil && h.cc != "" {
				if e = unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, h.cc); e != nil {
					unix.Close(fd)
				}
			}
			return e
		})
		if err != nil {
			r.Ret, r.Err = -1, errnoOf(err)
		} else {
			s := h.newSock(fd)
			s.v6 = c.V6
			r.Ret = int(h.allocFD(s))
			r.Sock, r.NewSock = tcp.SockID(s.id), tcp.SockID(s.id)
		}
		b.report(h, &r, now)
		return r, nil
	}
	s := h.fds[c.FD]
	if s == nil || s.kfd < 0 {
		r.Ret, r.Err = -1, tcp.EBADF
		b.flushUpTo(now)
		b.callEvent(h, &r, now)
		return r, nil
	}
	r.Sock = tcp.SockID(s.id)
	block := !c.NonBlock && !s.nonblock
	accepted := -1
	switch c.Op {
	case tcp.OpBind:
		b.sys(h, s, "bind", &r, func() error {
			return unix.Bind(s.kfd, anyAddr(s, c.Port))
		})
	case tcp.OpListen:
		b.sys(h, s, "listen", &r, func() error {
			if c.Port != 0 { // listen on an unbound socket binds it first
				if err := unix.Bind(s.kfd, anyAddr(s, c.Port)); err != nil {
					return err
				}
			}
			return unix.Listen(s.kfd, c.Backlog)
		})
		if r.Err == tcp.OK {
			s.listener = true
			s.local, _ = sockName(s.kfd)
		}
	case tcp.OpConnect:
		var sa unix.Sockaddr
		if s.v6 || c.Addr.Addr().Is6() {
			sa = &unix.SockaddrInet6{Port: int(c.Addr.Port()), Addr: c.Addr.Addr().As16()}
		} else {
			sa = &unix.SockaddrInet4{Port: int(c.Addr.Port()), Addr: c.Addr.Addr().As4()}
		}
		b.sys(h, s, "connect", &r, func() error { return unix.Connect(s.kfd, sa) })
		s.local, s.remote = sockName(s.kfd)
		if r.Err == tcp.EINPROGRESS && block {
			b.pend1(h, s, &r, unix.POLLOUT, func(bc *blocked) (int, tcp.Errno, []byte, int) {
				var v int
				e := b.waitFor(bc, s, unix.POLLOUT, func(fd int) error {
					// Writable once connected or failed; until then
					// SO_ERROR reads 0 like a success.
					p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
					if n, err := unix.Poll(p, 0); err == nil && n == 0 {
						return unix.EAGAIN
					}
					var err error
					v, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
					return err
				})
				if e != tcp.OK {
					return -1, e, nil, -1
				}
				if v != 0 {
					return -1, tcp.Errno(v), nil, -1
				}
				return 0, tcp.OK, nil, -1
			})
		}
	case tcp.OpAccept:
		var nfd int
		if block && s.acceptWaiting() {
			r.Ret, r.Err = -1, tcp.EAGAIN // earlier accept() calls are served first
		} else {
			b.sys(h, s, "accept", &r, func() error {
				var e error
				nfd, _, e = unix.Accept4(s.kfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				return e
			})
		}
		switch {
		case r.Err == tcp.OK:
			accepted = nfd // adopted once the trace of its connection is reported
		case r.Err == tcp.EAGAIN && block:
			ticket := s.acceptTicket()
			b.pend1(h, s, &r, unix.POLLIN, func(bc *blocked) (int, tcp.Errno, []byte, int) {
				bc.waiting(b, true) // for its turn
				turnDone := s.acceptWait(ticket)
				bc.waiting(b, false)
				defer turnDone()
				nfd := -1
				e := b.waitFor(bc, s, unix.POLLIN, func(fd int) error {
					var err error
					nfd, _, err = unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					return err
				})
				if e != tcp.OK {
					return -1, e, nil, -1
				}
				return 0, tcp.OK, nil, nfd
			})
		}
	case tcp.OpRead:
		flags := unix.MSG_DONTWAIT
		if c.Peek {
			flags |= unix.MSG_PEEK
		}
		max := c.Max
		if max <= 0 {
			max = 4 << 20
		}
		buf := make([]byte, max)
		var n int
		b.sys(h, s, "read", &r, func() error {
			var e error
			n, _, e = unix.Recvfrom(s.kfd, buf, flags)
			return e
		})
		switch {
		case r.Err == tcp.OK:
			r.Ret, r.Data = n, append([]byte(nil), buf[:n]...)
		case r.Err == tcp.EAGAIN && block:
			b.pend1(h, s, &r, unix.POLLIN, func(bc *blocked) (int, tcp.Errno, []byte, int) {
				var n int
				e := b.waitFor(bc, s, unix.POLLIN, func(fd int) error {
					var err error
					n, _, err = unix.Recvfrom(fd, buf, flags)
					return err
				})
				if e != tcp.OK {
					return -1, e, nil, -1
				}
				return n, tcp.OK, append([]byte(nil), buf[:n]...), -1
			})
		}
	case tcp.OpWrite:
		var n int
		flags := unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
		if c.More {
			flags |= unix.MSG_MORE
		}
		b.sys(h, s, "write", &r, func() error {
			var e error
			n, e = unix.SendmsgN(s.kfd, c.Data, nil, nil, flags)
			return e
		})
		if r.Err == tcp.OK {
			r.Ret = n
		}
		if block && (r.Err == tcp.EAGAIN || (r.Err == tcp.OK && n < len(c.Data))) {
			done := max(n, 0)
			b.pend1(h, s, &r, unix.POLLOUT, func(bc *blocked) (int, tcp.Errno, []byte, int) {
				e := b.waitFor(bc, s, unix.POLLOUT, func(fd int) error {
					m, err := unix.SendmsgN(fd, c.Data[done:], nil, nil, flags)
					if err != nil {
						return err
					}
					if done += m; done < len(c.Data) {
						return unix.EAGAIN // room for part of it: wait for more
					}
					return nil
				})
				if e != tcp.OK {
					if done > 0 {
						return done, tcp.OK, nil, -1
					}
					return -1, e, nil, -1
				}
				return done, tcp.OK, nil, -1
			})
		} else if r.Err == tcp.OK && n == 0 && len(c.Data) > 0 {
			r.Ret, r.Err = -1, tcp.EAGAIN
		}
	case tcp.OpShutdown:
		b.sys(h, s, "shutdown", &r, func() error { return unix.Shutdown(s.kfd, int(c.How)) })
	case tcp.OpClose:
		b.closeCall(h, s, &r)
	case tcp.OpSetOption:
		b.sys(h, s, "setsockopt", &r, func() error { return setOption(s, c.Option) })
		if r.Err == tcp.OK && c.Option.Kind == tcp.OptV6Only {
			s.v6only = c.Option.On
		}
	default:
		r.Ret, r.Err = -1, tcp.EINVAL
	}
	if r.Err != tcp.OK && !r.Pending {
		r.Ret = -1
	}
	if c.Op == tcp.OpBind || c.Op == tcp.OpSetOption {
		r.At = b.Now()
		b.report(h, &r, r.At)
		return r, nil
	}
	if !r.Pending {
		r.At = b.Now()
	}
	if b.burst && accepted < 0 {
		// With the burst's other calls (Burst); a long one is flushed
		// every burstFlush calls, so that its packets do not fill the
		// captures' buffers and its events are counted as they come.
		b.report(h, &r, r.At)
		if b.burstN++; b.burstN%burstFlush == 0 {
			b.flushUpTo(b.Now())
		}
		return r, nil
	}
	b.flushUpTo(r.At)
	if accepted >= 0 {
		r.Ret = int(b.adopt(h, s, accepted, &r))
	}
	b.callEvent(h, &r, r.At)
	return r, nil
}

// Burst brackets calls meant for one instant (scenario.Burster): while
// on, a call's event waits for the next flush instead of making one, so
// the calls follow each other without waiting for the tracer; turning it
// off reports them. An accept that returned a connection still flushes,
// since its descriptor is adopted from what the trace says.
func (b *Backend) Burst(on bool) {
	b.burst, b.burstN = on, 0
	if !on && b.started {
		b.flushUpTo(b.Now())
	}
}

// burstFlush is how many calls of a burst are made between two flushes:
// more than any burst that must fit in a round trip (accept-overflow's
// six connects are 12 calls), few enough that the SYNs of a burst of
// connects fit in a capture's buffer many times over.
const burstFlush = 64

// report queues the event of a call for the next flush, which reports
// it in its place in time: a call with no effect on the network (socket,
// bind, setsockopt), or any call of a burst. The call needs no flush of
// its own, and so does not wait for the tracer on a loaded machine (each
// such wait cost up to tens of milliseconds of the script's timeline).
func (b *Backend) report(h *host, r *tcp.Result, at time.Duration) {
	e := b.callEventOf(h, r, at)
	b.raw = append(b.raw, rawItem{at: at, seq: len(b.raw) + 1, h: h, done: &completion{h: h, res: *r, at: b.t0 + at, newFd: -1, made: &e}})
}

// owes tells whether one of the chosen blocked calls returned and is not
// reported yet. After a settle, one that has not is still waiting, with
// nothing for it.
func (b *Backend) owes(chosen func(*blocked) bool) bool {
	b.doneMu.Lock()
	defer b.doneMu.Unlock()
	for i := range b.doneQ {
		if c := b.doneQ[i].from; c != nil && chosen(c) {
			return true
		}
	}
	for i := range b.raw { // taken by a flush, but after its horizon
		if d := b.raw[i].done; d != nil && d.from != nil && chosen(d.from) {
			return true
		}
	}
	return false
}

// flushNow reports everything up to now, blocked calls the kernel has
// made ready included. Time passing and the end of the run (Counters)
// report this way; a call reports without the settle, so as not to wait
// for other goroutines before the next step.
func (b *Backend) flushNow() {
	b.settle(settleLimit, nil)
	b.flushUpTo(b.Now())
}

// sys makes one system call on a thread the tracer can attribute to this
// socket, and records its errno.
func (b *Backend) sys(h *host, s *ksock, what string, r *tcp.Result, f func() error) {
	end := b.lockThread(h, s, what)
	err := f()
	end()
	if err != nil {
		r.Ret, r.Err = -1, errnoOf(err)
	}
}

// blocked is a call waiting in a goroutine of its own. Before the run
// reports what happened up to a moment, it lets every blocked call that
// the kernel has already made ready run (settle): the call then returns
// in the same report as the change that woke it, and a run that ends
// right after that change still has its return, however long a loaded
// machine takes to schedule the goroutine.
type blocked struct {
	h  *host
	op tcp.Op
	s  *ksock
	ev int16 // what it polls for; 0: nothing the run can test (close)
	// state counts the goroutine's waits: odd while it waits (in poll,
	// or for its turn to accept), even while it runs. One word, so that
	// settle sees the count and the phase together.
	state atomic.Uint64
	done  atomic.Bool // its completion is queued
	wait  *os.File    // the descriptor it waits on (waitFor)
}

// waiting marks the start (true) or the end of a wait.
func (c *blocked) waiting(b *Backend, on bool) {
	if on == (c.state.Load()%2 == 1) {
		return
	}
	c.state.Add(1)
	b.nudge()
}

// ready tells whether the kernel would end the call's wait now.
func (c *blocked) ready() bool {
	fd := c.s.kfd
	if c.ev == 0 || fd < 0 {
		return false
	}
	p := []unix.PollFd{{Fd: int32(fd), Events: c.ev}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0
}

// nudge wakes a settle waiting for blocked calls.
func (b *Backend) nudge() {
	select {
	case b.nudged <- struct{}{}:
	default:
	}
}

// complete queues a blocked call's completion for the next flush.
func (b *Backend) complete(c *blocked, done completion) {
	done.from = c
	b.doneMu.Lock()
	// Stamped as it is queued: a flush that took the queue before this
	// has its horizon before this time, so the return is reported in
	// time order with what that flush sent.
	done.at = monoNow()
	b.doneQ = append(b.doneQ, done)
	b.doneMu.Unlock()
	c.done.Store(true)
	b.nudge()
}

// settleLimit bounds how long a flush waits for ready blocked calls to
// run; one that takes longer completes in a later flush, stamped later.
const settleLimit = time.Second

// settle waits, for at most limit in all, until every blocked call (or
// every one chosen, if chosen is not nil) that is running or that the
// kernel has made ready has either completed or gone back to waiting.
// It is called from the run's goroutine before a flush, so that a call
// woken by a change returns in the same report.
func (b *Backend) settle(limit time.Duration, chosen func(*blocked) bool) {
	keep := b.blocked[:0]
	for _, c := range b.blocked {
		if !c.done.Load() {
			keep = append(keep, c)
		}
	}
	clear(b.blocked[len(keep):])
	b.blocked = keep
	var live []*blocked
	for _, c := range keep {
		if chosen == nil || chosen(c) {
			live = append(live, c)
		}
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for _, c := range live {
		st := c.state.Load()
		if (st == 0 || st%2 == 1) && !c.ready() {
			// Waiting (or not yet), and nothing has come for it: a call
			// just made is not waited for until it polls.
			continue
		}
		// Running, or about to wake: wait until it completes or waits again.
		for !c.done.Load() && !(c.state.Load() > st && c.state.Load()%2 == 1) {
			if timer == nil {
				timer = time.NewTimer(limit)
			}
			select {
			case <-b.nudged:
			case <-timer.C:
				return
			}
		}
	}
}

// pend1 turns a call into a pending one whose rest runs in a goroutine;
// its completion is queued for the next flush (complete). ev is what
// the call polls its socket for.
func (b *Backend) pend1(h *host, s *ksock, r *tcp.Result, ev int16, rest func(c *blocked) (int, tcp.Errno, []byte, int)) {
	// The call is reported as blocked at this moment, before its
	// goroutine can return: its completion, stamped later, is reported
	// after it. (Stamped after, a call whose data came at once was
	// reported returned before it was reported blocked.)
	r.Pending, r.Ret, r.Err, r.At = true, 0, tcp.OK, b.Now()
	res := *r
	c := &blocked{h: h, op: res.Call.Op, s: s, ev: ev}
	b.blocked = append(b.blocked, c)
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		defer b.guard()
		end := b.lockThread(h, s, res.Call.Op.String())
		ret, e, data, nfd := rest(c)
		end()
		if c.wait != nil {
			s.closeWait(c.wait)
		}
		res.Pending = false
		res.Ret, res.Err, res.Data = ret, e, data
		if e != tcp.OK {
			res.Ret = -1
		}
		b.complete(c, completion{h: h, res: res, at: monoNow(), newFd: nfd})
	}()
}

// waitFor makes a blocked call's system call, do, on a duplicate of the
// socket's descriptor (s.openWait) each time the socket is ready for ev,
// until do returns anything but EAGAIN; its result is the call's. do runs
// inside Go's network poller, which keeps the duplicate open while it
// runs: a close() of the socket (takeKernelFd) cannot hand the number to
// another socket of this or another run under it, and ends the wait with
// EBADF. The goroutine waits in the poller rather than in poll(2): a
// poll(2) would hold one of the process's few Go processors (GOMAXPROCS
// is the number of cores, 2 here) for as long as it blocks, and with a
// few such waits every other goroutine of every run, the tracer's reader
// among them, waited for the runtime's monitor to take a processor back:
// up to 10 ms a time.
func (b *Backend) waitFor(c *blocked, s *ksock, ev int16, do func(fd int) error) tcp.Errno {
	if c.wait == nil {
		f, err := s.openWait()
		if err != nil {
			return tcp.EBADF
		}
		c.wait = f
	}
	rc, err := c.wait.SyscallConn()
	if err != nil {
		return tcp.EBADF
	}
	var callErr error
	ready := func(fd uintptr) bool {
		c.waiting(b, false)
		callErr = do(int(fd))
		if errors.Is(callErr, unix.EAGAIN) {
			c.waiting(b, true) // nothing yet (or another call took it)
			return false
		}
		return true
	}
	c.waiting(b, true)
	if ev == unix.POLLIN {
		err = rc.Read(ready)
	} else {
		err = rc.Write(ready)
	}
	c.waiting(b, false)
	switch {
	case err != nil:
		return tcp.EBADF // the socket was closed under the call
	case callErr != nil:
		return errnoOf(callErr)
	}
	return tcp.OK
}

// openWait gives a blocked call a duplicate of the socket's descriptor,
// in Go's network poller. The socket is non-blocking, and so is the
// duplicate (the flag belongs to the open file, which they share).
func (s *ksock) openWait() (*os.File, error) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	if s.kfd < 0 {
		return nil, unix.EBADF
	}
	fd, err := unix.FcntlInt(uintptr(s.kfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "tcplab-wait")
	if s.waits == nil {
		s.waits = map[*os.File]bool{}
	}
	s.waits[f] = true
	return f, nil
}

// closeWait closes a blocked call's duplicate once it has returned.
func (s *ksock) closeWait(f *os.File) {
	s.waitMu.Lock()
	delete(s.waits, f)
	s.waitMu.Unlock()
	f.Close()
}

// takeKernelFd takes the socket's descriptor away, for the caller to
// close (-1 if it has none), after closing the duplicates blocked calls
// wait on: they would keep the socket open, and no FIN would leave. Their
// calls end with EBADF.
func (s *ksock) takeKernelFd() int {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	for f := range s.waits {
		f.Close()
	}
	clear(s.waits)
	kfd := s.kfd
	s.kfd = -1
	return kfd
}

// closeCall closes the descriptor. close() blocks only with SO_LINGER
// and a time: then it runs in a goroutine, and if it has not returned
// within a few milliseconds the call is reported as blocked. Otherwise
// it is an ordinary call: a goroutine for every close came up late on a
// loaded machine and reported closes as blocked that return at once.
func (b *Backend) closeCall(h *host, s *ksock, r *tcp.Result) {
	delete(h.fds, s.fd)
	kfd := s.takeKernelFd()
	if l, err := unix.GetsockoptLinger(kfd, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && (l.Onoff == 0 || l.Linger == 0) {
		b.sys(h, s, "close", r, func() error { return unix.Close(kfd) })
		return
	}
	c := &blocked{h: h, op: tcp.OpClose, s: s}
	c.waiting(b, true) // in close(), where the run cannot look
	var mu sync.Mutex
	var pending *tcp.Result // set once the call was reported as blocked: its result is a completion
	ch := make(chan error, 1)
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		defer b.guard()
		end := b.lockThread(h, s, "close")
		err := unix.Close(kfd)
		end()
		mu.Lock()
		defer mu.Unlock()
		if pending == nil {
			ch <- err
			return
		}
		c.waiting(b, false)
		res := *pending
		res.Pending = false
		if err != nil {
			res.Ret, res.Err = -1, errnoOf(err)
		}
		b.complete(c, completion{h: h, res: res, at: monoNow(), newFd: -1})
	}()
	t := time.NewTimer(20 * time.Millisecond)
	defer t.Stop()
	var err error
	select {
	case err = <-ch:
	case <-t.C:
		mu.Lock()
		select {
		case err = <-ch: // it returned just now
		default:
			r.Pending = true
			res := *r
			pending = &res
			b.blocked = append(b.blocked, c)
		}
		mu.Unlock()
	}
	if err != nil {
		r.Ret, r.Err = -1, errnoOf(err)
	}
}

func setOption(s *ksock, o tcp.Option) error {
	b2i := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	switch o.Kind {
	case tcp.OptLinger:
		return unix.SetsockoptLinger(s.kfd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: int32(b2i(o.On)), Linger: int32(o.Dur / time.Second)})
	case tcp.OptReuseAddr:
		return unix.SetsockoptInt(s.kfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, b2i(o.On))
	case tcp.OptKeepAlive:
		return unix.SetsockoptInt(s.kfd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, b2i(o.On))
	case tcp.OptKeepIdle:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(o.Dur/time.Second))
	case tcp.OptKeepIntvl:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(o.Dur/time.Second))
	case tcp.OptKeepCnt:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, o.N)
	case tcp.OptNoDelay:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, b2i(o.On))
	case tcp.OptSndBuf:
		return unix.SetsockoptInt(s.kfd, unix.SOL_SOCKET, unix.SO_SNDBUF, o.N)
	case tcp.OptMaxSeg:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_TCP, unix.TCP_MAXSEG, o.N)
	case tcp.OptCork:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_TCP, unix.TCP_CORK, b2i(o.On))
	case tcp.OptV6Only:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, b2i(o.On))
	case tcp.OptUserTimeout:
		return unix.SetsockoptInt(s.kfd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(o.Dur/time.Millisecond))
	case tcp.OptNonBlock:
		// Every socket is non-blocking underneath; the flag only changes
		// whether tcplab waits for the call.
		s.nonblock = o.On
		return nil
	}
	return unix.EINVAL
}

// adopt gives an accepted descriptor its number and the run's socket for
// its connection (the child the tracer or the capture already saw).
func (b *Backend) adopt(h *host, l *ksock, nfd int, r *tcp.Result) tcp.FD {
	local, remote := sockName(nfd)
	s := h.find(local, remote)
	if s == nil {
		s = h.newSock(nfd)
		s.local, s.remote, s.parent, s.state = local, remote, l.id, "ESTABLISHED"
	}
	s.kfd = nfd
	s.accepted = true
	fd := h.allocFD(s)
	r.NewSock = tcp.SockID(s.id)
	return fd
}

func sockName(fd int) (local, remote netip.AddrPort) {
	if sa, err := unix.Getsockname(fd); err == nil {
		local = addrPortOf(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		remote = addrPortOf(sa)
	}
	return
}

// addrPortOf reads a socket address; an AF_INET6 socket's IPv4 peer is
// IPv4-mapped, as its program sees it.
func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// anyAddr is the wildcard address of the socket's family with a port.
func anyAddr(s *ksock, port uint16) unix.Sockaddr {
	if s.v6 {
		return &unix.SockaddrInet6{Port: int(port)}
	}
	return &unix.SockaddrInet4{Port: int(port)}
}

// find is the socket of the host that currently has this connection.
// Ends are compared as on the wire: an AF_INET6 socket's IPv4 peer is
// IPv4-mapped in its names, plain IPv4 in its packets.
func (h *host) find(local, remote netip.AddrPort) *ksock {
	local, remote = onWire(local, remote)
	for i := len(h.socks) - 1; i >= 0; i-- {
		s := h.socks[i]
		if sl, sr := onWire(s.local, s.remote); sl == local && sr == remote && s.state != "CLOSED" {
			return s
		}
	}
	return nil
}

// onWire is a connection's ends as its packets carry them: a pair of
// IPv4-mapped addresses (an AF_INET6 socket's IPv4 peer) unmapped.
func onWire(local, remote netip.AddrPort) (netip.AddrPort, netip.AddrPort) {
	if local.Addr().Is4In6() && (remote.Addr().Is4In6() || !remote.Addr().IsValid() || remote.Addr().IsUnspecified()) {
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		if remote.Addr().Is4In6() {
			remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		}
	}
	return local, remote
}

// rk is the request key of a connection's ends, as on the wire.
func rk(local, remote netip.AddrPort) reqKey {
	l, r := onWire(local, remote)
	return reqKey{l, r}
}

// inKey is the lastIn key of a connection's ends, as on the wire.
func inKey(local, remote netip.AddrPort) [2]netip.AddrPort {
	l, r := onWire(local, remote)
	return [2]netip.AddrPort{l, r}
}

// callEvent reports a call as the simulator does.
func (b *Backend) callEvent(h *host, r *tcp.Result, at time.Duration) {
	b.emit(b.callEventOf(h, r, at))
}

func (b *Backend) callEventOf(h *host, r *tcp.Result, at time.Duration) trace.Event {
	s := h.sockByID(uint64(r.Sock))
	e := trace.Event{At: at, Host: h.name, Kind: trace.KindCall, Sock: uint64(r.Sock),
		Call: &trace.Call{ID: r.ID, Op: r.Call.Op.String(), Text: r.Call.String(), FD: int(r.Call.FD),
			Ret: r.Ret, Errno: r.Err.Name(), Data: r.Data, NewSock: uint64(r.NewSock), Pending: r.Pending,
			Started: r.Started}}
	if s != nil {
		e.Local, e.Remote = s.local, s.remote
	}
	return e
}

func (h *host) sockByID(id uint64) *ksock {
	if id == 0 || id > uint64(len(h.socks)) {
		return nil
	}
	return h.socks[id-1]
}

// Sys runs f with the kernel's descriptor of a host's socket, for a
// system call the scenario language has no word for (getsockopt, ioctl,
// poll, epoll_ctl): the program that plays a packetdrill script makes
// such calls itself. f must not block: the socket is non-blocking, and a
// wait belongs in the caller's RunUntil. EBADF when the host has no such
// descriptor.
func (b *Backend) Sys(hostName string, fd tcp.FD, f func(kfd int) error) error {
	h, err := b.host(hostName)
	if err != nil {
		return err
	}
	if err := b.start(); err != nil {
		return err
	}
	b.awaitInjected(h)
	s := h.fds[fd]
	if s == nil || s.kfd < 0 {
		return unix.EBADF
	}
	return f(s.kfd)
}
