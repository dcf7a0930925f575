package kernel

import (
	"errors"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// completion is a blocked call that returned.
type completion struct {
	h   *host
	res tcp.Result
	at  time.Duration // CLOCK_MONOTONIC
	// newFd is the descriptor accept returned.
	newFd int
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
	b.flushUpTo(b.Now())
	h.nextCall++
	now := b.Now()
	r := tcp.Result{ID: h.nextCall, Call: c, Started: now, At: now}
	if c.Op == tcp.OpSocket {
		var fd int
		err := h.work.do(func() error {
			var e error
			fd, e = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			return e
		})
		if err != nil {
			r.Ret, r.Err = -1, errnoOf(err)
		} else {
			s := h.newSock(fd)
			r.Ret = int(h.allocFD(s))
			r.Sock, r.NewSock = tcp.SockID(s.id), tcp.SockID(s.id)
		}
		b.flushUpTo(now)
		b.callEvent(h, &r, now)
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
	switch c.Op {
	case tcp.OpBind:
		b.sys(h, s, "bind", &r, func() error {
			return unix.Bind(s.kfd, &unix.SockaddrInet4{Port: int(c.Port)})
		})
	case tcp.OpListen:
		b.sys(h, s, "listen", &r, func() error {
			if c.Port != 0 { // listen on an unbound socket binds it first
				if err := unix.Bind(s.kfd, &unix.SockaddrInet4{Port: int(c.Port)}); err != nil {
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
		sa := &unix.SockaddrInet4{Port: int(c.Addr.Port()), Addr: c.Addr.Addr().As4()}
		b.sys(h, s, "connect", &r, func() error { return unix.Connect(s.kfd, sa) })
		s.local, s.remote = sockName(s.kfd)
		if r.Err == tcp.EINPROGRESS && block {
			b.pend1(h, s, &r, func() (int, tcp.Errno, []byte, int) {
				if e := b.waitFor(s, unix.POLLOUT); e != tcp.OK {
					return -1, e, nil, -1
				}
				v, err := unix.GetsockoptInt(s.kfd, unix.SOL_SOCKET, unix.SO_ERROR)
				if err != nil {
					return -1, errnoOf(err), nil, -1
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
			r.Ret = int(b.adopt(h, s, nfd, &r))
		case r.Err == tcp.EAGAIN && block:
			ticket := s.acceptTicket()
			b.pend1(h, s, &r, func() (int, tcp.Errno, []byte, int) {
				defer s.acceptWait(ticket)()
				for {
					if e := b.waitFor(s, unix.POLLIN); e != tcp.OK {
						return -1, e, nil, -1
					}
					nfd, _, err := unix.Accept4(s.kfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					if errors.Is(err, unix.EAGAIN) {
						continue
					}
					if err != nil {
						return -1, errnoOf(err), nil, -1
					}
					return 0, tcp.OK, nil, nfd
				}
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
			b.pend1(h, s, &r, func() (int, tcp.Errno, []byte, int) {
				for {
					if e := b.waitFor(s, unix.POLLIN); e != tcp.OK {
						return -1, e, nil, -1
					}
					n, _, err := unix.Recvfrom(s.kfd, buf, flags)
					if errors.Is(err, unix.EAGAIN) {
						continue
					}
					if err != nil {
						return -1, errnoOf(err), nil, -1
					}
					return n, tcp.OK, append([]byte(nil), buf[:n]...), -1
				}
			})
		}
	case tcp.OpWrite:
		var n int
		b.sys(h, s, "write", &r, func() error {
			var e error
			n, e = unix.SendmsgN(s.kfd, c.Data, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			return e
		})
		if r.Err == tcp.OK {
			r.Ret = n
		}
		if block && (r.Err == tcp.EAGAIN || (r.Err == tcp.OK && n < len(c.Data))) {
			done := max(n, 0)
			b.pend1(h, s, &r, func() (int, tcp.Errno, []byte, int) {
				for done < len(c.Data) {
					if e := b.waitFor(s, unix.POLLOUT); e != tcp.OK {
						return -1, e, nil, -1
					}
					m, err := unix.SendmsgN(s.kfd, c.Data[done:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
					if errors.Is(err, unix.EAGAIN) {
						continue
					}
					if err != nil {
						if done > 0 {
							return done, tcp.OK, nil, -1
						}
						return -1, errnoOf(err), nil, -1
					}
					done += m
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
	default:
		r.Ret, r.Err = -1, tcp.EINVAL
	}
	if r.Err != tcp.OK && !r.Pending {
		r.Ret = -1
	}
	r.At = b.Now()
	b.flushUpTo(r.At)
	b.callEvent(h, &r, r.At)
	return r, nil
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

// pend1 turns a call into a pending one whose rest runs in a goroutine;
// its completion arrives through b.done.
func (b *Backend) pend1(h *host, s *ksock, r *tcp.Result, rest func() (int, tcp.Errno, []byte, int)) {
	r.Pending, r.Ret, r.Err = true, 0, tcp.OK
	res := *r
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		defer b.guard()
		end := b.lockThread(h, s, res.Call.Op.String())
		ret, e, data, nfd := rest()
		end()
		res.Pending = false
		res.Ret, res.Err, res.Data = ret, e, data
		if e != tcp.OK {
			res.Ret = -1
		}
		b.done <- completion{h: h, res: res, at: monoNow(), newFd: nfd}
	}()
}

// waitFor polls a socket until it is ready or has an error; a closed
// descriptor ends the wait with EBADF.
func (b *Backend) waitFor(s *ksock, ev int16) tcp.Errno {
	for {
		fd := s.kfd
		if fd < 0 || b.closed {
			return tcp.EBADF
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: ev}}
		n, err := unix.Poll(p, 100)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return errnoOf(err)
		}
		if n == 0 {
			continue
		}
		if p[0].Revents&unix.POLLNVAL != 0 {
			return tcp.EBADF
		}
		return tcp.OK
	}
}

// closeCall closes the descriptor. close() can block (SO_LINGER with a
// time), so it runs in a goroutine; if it has not returned within a few
// milliseconds the call is reported as blocked.
func (b *Backend) closeCall(h *host, s *ksock, r *tcp.Result) {
	kfd := s.kfd
	delete(h.fds, s.fd)
	s.kfd = -1
	ch := make(chan error, 1)
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		defer b.guard()
		end := b.lockThread(h, s, "close")
		err := unix.Close(kfd)
		end()
		ch <- err
	}()
	select {
	case err := <-ch:
		if err != nil {
			r.Ret, r.Err = -1, errnoOf(err)
		}
	case <-time.After(20 * time.Millisecond):
		r.Pending = true
		res := *r
		b.inflight.Add(1)
		go func() {
			defer b.inflight.Done()
			defer b.guard()
			err := <-ch
			res.Pending = false
			if err != nil {
				res.Ret, res.Err = -1, errnoOf(err)
			}
			b.done <- completion{h: h, res: res, at: monoNow(), newFd: -1}
		}()
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
		if a, ok := sa.(*unix.SockaddrInet4); ok {
			local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		}
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		if a, ok := sa.(*unix.SockaddrInet4); ok {
			remote = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		}
	}
	return
}

// find is the socket of the host that currently has this connection.
func (h *host) find(local, remote netip.AddrPort) *ksock {
	for i := len(h.socks) - 1; i >= 0; i-- {
		s := h.socks[i]
		if s.local == local && s.remote == remote && s.state != "CLOSED" {
			return s
		}
	}
	return nil
}

// callEvent reports a call as the simulator does.
func (b *Backend) callEvent(h *host, r *tcp.Result, at time.Duration) {
	s := h.sockByID(uint64(r.Sock))
	e := trace.Event{At: at, Host: h.name, Kind: trace.KindCall, Sock: uint64(r.Sock),
		Call: &trace.Call{ID: r.ID, Op: r.Call.Op.String(), Text: r.Call.String(), FD: int(r.Call.FD),
			Ret: r.Ret, Errno: r.Err.Name(), Data: r.Data, NewSock: uint64(r.NewSock), Pending: r.Pending,
			Started: r.Started}}
	if s != nil {
		e.Local, e.Remote = s.local, s.remote
	}
	b.emit(e)
}

func (h *host) sockByID(id uint64) *ksock {
	if id == 0 || id > uint64(len(h.socks)) {
		return nil
	}
	return h.socks[id-1]
}
