package pkt

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// The calls beyond the scenario language's (getsockopt, ioctl, poll,
// epoll, socket options the engine has no call for) are answered by an
// osCalls: on the kernel by the real system call on the real socket, on
// the engine from the socket's state (tcp.Host.Status). What the engine
// cannot answer makes the script unsupported, never passed.
type osCalls interface {
	getsockopt(fd tcp.FD, level, name int64) (int64, tcp.Errno, string)
	// setsockopt is for options the engine's calls do not carry.
	setsockopt(fd tcp.FD, level, name, v int64) (tcp.Errno, string)
	ioctl(fd tcp.FD, req int64) (int64, tcp.Errno, string)
	// poll says which of events hold now (the revents).
	poll(fd tcp.FD, events int16) (int16, tcp.Errno, string)
	// tcpInfo gives the tcpi_* fields of a socket; nil if it cannot.
	tcpInfo(fd tcp.FD) map[string]int64
	epollCreate() (int, tcp.Errno, string)
	epollCtl(ep int, op int64, fd tcp.FD, events uint32, data uint64) (tcp.Errno, string)
	// epollWait returns the ready events now, at most max, with their data.
	epollWait(ep int, max int) ([]epollEvent, tcp.Errno, string)
	epollClose(ep int)
}

type epollEvent struct {
	events uint32
	data   uint64
}

// rawSockets is a backend whose sockets are real (the kernel's).
type rawSockets interface {
	Sys(host string, fd tcp.FD, f func(kfd int) error) error
}

// osFor picks the backend's answers.
func osFor(b Backend) osCalls {
	if k, ok := b.(rawSockets); ok {
		return &kernelOS{b: k, eps: map[int]int{}}
	}
	if s, ok := b.(*scenario.SimBackend); ok {
		if h := s.Network().Host(LocalHost); h != nil {
			return &engineOS{h: h.Stack}
		}
	}
	return noOS{}
}

// More of Linux's constants.
func init() {
	for k, v := range map[string]int64{
		"SIOCINQ": 0x541B, "FIONREAD": 0x541B, "SIOCOUTQ": 0x5411, "TIOCOUTQ": 0x5411, "SIOCOUTQNSD": 0x894B,
		"POLLIN": 0x1, "POLLPRI": 0x2, "POLLOUT": 0x4, "POLLERR": 0x8, "POLLHUP": 0x10, "POLLNVAL": 0x20,
		"POLLRDNORM": 0x40, "POLLRDBAND": 0x80, "POLLWRNORM": 0x100, "POLLWRBAND": 0x200, "POLLRDHUP": 0x2000,
		"EPOLLIN": 0x1, "EPOLLPRI": 0x2, "EPOLLOUT": 0x4, "EPOLLERR": 0x8, "EPOLLHUP": 0x10,
		"EPOLLRDNORM": 0x40, "EPOLLRDBAND": 0x80, "EPOLLWRNORM": 0x100, "EPOLLWRBAND": 0x200, "EPOLLRDHUP": 0x2000,
		"EPOLLEXCLUSIVE": 1 << 28, "EPOLLONESHOT": 1 << 30, "EPOLLET": 1 << 31,
		"EPOLL_CTL_ADD": 1, "EPOLL_CTL_DEL": 2, "EPOLL_CTL_MOD": 3, "EPOLL_CLOEXEC": 0x80000,
		"TCP_CONGESTION": 13, "TCP_QUICKACK": 12, "TCP_DEFER_ACCEPT": 9, "TCP_SYNCNT": 7, "TCP_LINGER2": 8,
		"TCP_WINDOW_CLAMP": 10, "TCP_FASTOPEN": 23, "TCP_FASTOPEN_CONNECT": 30, "TCP_INQ": 36, "TCP_CM_INQ": 36,
		"TCP_TX_DELAY": 37, "TCP_THIN_LINEAR_TIMEOUTS": 16, "TCP_SAVE_SYN": 27,
		"SO_RCVLOWAT": 18, "SO_SNDLOWAT": 19, "SO_PRIORITY": 12, "SO_ZEROCOPY": 60, "SO_MAX_PACING_RATE": 47,
		"SO_BINDTODEVICE": 25, "SO_REUSEPORT": 15, "SO_OOBINLINE": 10, "SO_TYPE": 3, "SO_ACCEPTCONN": 30,
		"IP_TOS": 1, "IP_TTL": 2, "IP_MTU_DISCOVER": 10, "IP_PMTUDISC_DONT": 0, "IP_PMTUDISC_WANT": 1,
		"IP_PMTUDISC_DO": 2, "IP_PMTUDISC_PROBE": 3, "IP_RECVERR": 11,
	} {
		if _, ok := symbols[k]; !ok {
			symbols[k] = v
		}
	}
}

// optName names an option by its level and number, for messages.
func optName(level, name int64) string {
	for k, v := range symbols {
		if v != name {
			continue
		}
		switch {
		case level == symbols["SOL_SOCKET"] && strings.HasPrefix(k, "SO_"),
			level == symbols["SOL_TCP"] && strings.HasPrefix(k, "TCP_") && k != "TCP_CM_INQ",
			level == symbols["SOL_IP"] && strings.HasPrefix(k, "IP_") && !strings.HasPrefix(k, "IP_PMTUDISC"):
			return k
		}
	}
	return "option " + itoa(name)
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// kernelOS makes the real calls.
type kernelOS struct {
	b   rawSockets
	eps map[int]int // epoll descriptors of the run, by id
	n   int
}

func errnoFrom(err error) tcp.Errno {
	var en unix.Errno
	if errors.As(err, &en) {
		return tcp.Errno(en) // the values are Linux's
	}
	return tcp.EINVAL
}

func (k *kernelOS) sys(fd tcp.FD, f func(kfd int) error) tcp.Errno {
	if err := k.b.Sys(LocalHost, fd, f); err != nil {
		return errnoFrom(err)
	}
	return tcp.OK
}

func (k *kernelOS) getsockopt(fd tcp.FD, level, name int64) (int64, tcp.Errno, string) {
	var v int
	e := k.sys(fd, func(kfd int) (err error) {
		v, err = unix.GetsockoptInt(kfd, int(level), int(name))
		return err
	})
	if level == symbols["SOL_TCP"] && name == symbols["TCP_NOTSENT_LOWAT"] {
		v = int(uint32(v)) // an unsigned value (0xffffffff when unset)
	}
	return int64(v), e, ""
}

func (k *kernelOS) setsockopt(fd tcp.FD, level, name, v int64) (tcp.Errno, string) {
	return k.sys(fd, func(kfd int) error { return unix.SetsockoptInt(kfd, int(level), int(name), int(v)) }), ""
}

func (k *kernelOS) ioctl(fd tcp.FD, req int64) (int64, tcp.Errno, string) {
	// Only the requests that read one int of a socket's queues: another
	// could write past that int, or change the socket (FIONBIO).
	switch req {
	case symbols["SIOCINQ"], symbols["SIOCOUTQ"], symbols["SIOCOUTQNSD"]:
	default:
		return 0, tcp.OK, "ioctl " + itoa(req) + " is not supported (SIOCINQ, SIOCOUTQ and SIOCOUTQNSD are)"
	}
	var v int
	e := k.sys(fd, func(kfd int) (err error) {
		v, err = unix.IoctlGetInt(kfd, uint(req))
		return err
	})
	return int64(v), e, ""
}

func (k *kernelOS) poll(fd tcp.FD, events int16) (int16, tcp.Errno, string) {
	var re int16
	e := k.sys(fd, func(kfd int) error {
		p := []unix.PollFd{{Fd: int32(kfd), Events: events}}
		_, err := unix.Poll(p, 0)
		re = p[0].Revents
		return err
	})
	if e == tcp.EBADF {
		return 0x20, tcp.OK, "" // POLLNVAL
	}
	return re, e, ""
}

func (k *kernelOS) tcpInfo(fd tcp.FD) map[string]int64 {
	// The kernel fills as much of struct tcp_info as it knows and says
	// how much: a field past that length is not given (an older kernel),
	// never read as 0.
	var ti unix.TCPInfo
	n := uint32(unsafe.Sizeof(ti))
	if k.sys(fd, func(kfd int) error {
		_, _, en := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(kfd), unix.IPPROTO_TCP, unix.TCP_INFO,
			uintptr(unsafe.Pointer(&ti)), uintptr(unsafe.Pointer(&n)), 0)
		if en != 0 {
			return en
		}
		return nil
	}) != tcp.OK {
		return nil
	}
	m := map[string]int64{}
	v := reflect.ValueOf(&ti).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Name == "_" || uint32(f.Offset+f.Type.Size()) > n {
			continue
		}
		name := "tcpi_" + strings.Map(unicode.ToLower, f.Name)
		switch fv := v.Field(i); fv.Kind() {
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			m[name] = int64(fv.Uint())
		}
	}
	return m
}

func (k *kernelOS) epollCreate() (int, tcp.Errno, string) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, errnoFrom(err), ""
	}
	k.n++
	k.eps[k.n] = fd
	return k.n, tcp.OK, ""
}

func (k *kernelOS) epollCtl(ep int, op int64, fd tcp.FD, events uint32, data uint64) (tcp.Errno, string) {
	efd, ok := k.eps[ep]
	if !ok {
		return tcp.EBADF, ""
	}
	ev := &unix.EpollEvent{Events: events, Fd: int32(data), Pad: int32(data >> 32)}
	return k.sys(fd, func(kfd int) error { return unix.EpollCtl(efd, int(op), kfd, ev) }), ""
}

func (k *kernelOS) epollWait(ep int, max int) ([]epollEvent, tcp.Errno, string) {
	efd, ok := k.eps[ep]
	if !ok {
		return nil, tcp.EBADF, ""
	}
	if max < 1 || max > 1024 {
		return nil, tcp.EINVAL, ""
	}
	evs := make([]unix.EpollEvent, max)
	n, err := unix.EpollWait(efd, evs, 0)
	if err != nil {
		return nil, errnoFrom(err), ""
	}
	out := make([]epollEvent, n)
	for i := range out {
		out[i] = epollEvent{events: evs[i].Events, data: uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32}
	}
	return out, tcp.OK, ""
}

func (k *kernelOS) epollClose(ep int) {
	if fd, ok := k.eps[ep]; ok {
		unix.Close(fd)
		delete(k.eps, ep)
	}
}

// closeAll closes the run's epoll descriptors.
func (k *kernelOS) closeAll() {
	for ep := range k.eps {
		k.epollClose(ep)
	}
}

// engineOS answers from the engine's state.
type engineOS struct {
	h   *tcp.Host
	eps []*engineEpoll
	inq map[tcp.FD]bool // TCP_INQ set: recvmsg reports what is left to read
}

const engineLacks = "is not modelled by the engine yet"

func (o *engineOS) getsockopt(fd tcp.FD, level, name int64) (int64, tcp.Errno, string) {
	if level == symbols["SOL_SOCKET"] && name == symbols["SO_ERROR"] {
		e, err := o.h.TakeError(fd)
		return int64(e), err, ""
	}
	st, err := o.h.Status(fd)
	if err != tcp.OK {
		return 0, err, ""
	}
	switch {
	case level == symbols["SOL_SOCKET"] && name == symbols["SO_SNDBUF"]:
		return int64(st.SndBuf), tcp.OK, ""
	case level == symbols["SOL_TCP"] && name == symbols["TCP_MAXSEG"]:
		return int64(st.MSS), tcp.OK, ""
	case level == symbols["SOL_TCP"] && name == symbols["TCP_INQ"]:
		if o.inq[fd] {
			return 1, tcp.OK, ""
		}
		return 0, tcp.OK, ""
	}
	return 0, tcp.OK, "getsockopt of " + optName(level, name) + " " + engineLacks
}

func (o *engineOS) setsockopt(fd tcp.FD, level, name, v int64) (tcp.Errno, string) {
	if level == symbols["SOL_SOCKET"] && name == symbols["SO_ZEROCOPY"] {
		// Zerocopy sends the same segments; only its completion
		// notices (on the error queue, which no call here reads) differ.
		_, err := o.h.Status(fd)
		return err, ""
	}
	if level == symbols["SOL_TCP"] && name == symbols["TCP_INQ"] {
		if _, err := o.h.Status(fd); err != tcp.OK {
			return err, ""
		}
		if o.inq == nil {
			o.inq = map[tcp.FD]bool{}
		}
		o.inq[fd] = v != 0
		return tcp.OK, ""
	}
	return tcp.OK, "socket option " + optName(level, name) + " " + engineLacks
}

// inqHint is tcp_inq_hint: what is left to read, or 1 once the stream
// has ended with nothing left (a "fake byte" that says so).
func (o *engineOS) inqHint(fd tcp.FD) (int64, bool) {
	st, err := o.h.Status(fd)
	if err != tcp.OK {
		return 0, false
	}
	if st.Readable == 0 && st.RcvShut {
		return 1, true
	}
	return int64(st.Readable), true
}

func (o *engineOS) ioctl(fd tcp.FD, req int64) (int64, tcp.Errno, string) {
	st, err := o.h.Status(fd)
	if err != tcp.OK {
		return 0, err, ""
	}
	switch req {
	case symbols["SIOCINQ"]:
		if st.Listen {
			return 0, tcp.EINVAL, ""
		}
		return int64(st.Readable), tcp.OK, ""
	case symbols["SIOCOUTQ"], symbols["SIOCOUTQNSD"]:
		if st.Listen {
			return 0, tcp.EINVAL, ""
		}
		if req == symbols["SIOCOUTQ"] {
			return int64(st.Unacked), tcp.OK, ""
		}
		return int64(st.Unsent), tcp.OK, ""
	}
	return 0, tcp.OK, "ioctl " + itoa(req) + " " + engineLacks
}

// poll is tcp_poll's answer from the engine's state.
func (o *engineOS) poll(fd tcp.FD, events int16) (int16, tcp.Errno, string) {
	st, err := o.h.Status(fd)
	if err != tcp.OK {
		return 0x20, tcp.OK, "" // POLLNVAL
	}
	const (
		in, out, perr, hup, rdnorm, wrnorm, rdhup = 0x1, 0x4, 0x8, 0x10, 0x40, 0x100, 0x2000
	)
	var mask int16
	if st.Listen {
		if st.AcceptQ > 0 {
			mask = in | rdnorm
		}
		return mask & events, tcp.OK, ""
	}
	if (st.RcvShut && st.SndShut) || st.State == tcp.Closed {
		mask |= hup
	}
	if st.RcvShut {
		mask |= in | rdnorm | rdhup
	}
	if st.State != tcp.SynSent && st.State != tcp.SynRecv {
		if st.Readable > 0 {
			mask |= in | rdnorm
		}
		// sk_stream_is_writeable: the free space is at least half of
		// what is queued.
		queued := st.SndBuf - st.Room
		if st.SndShut || st.Room >= queued/2 {
			mask |= out | wrnorm
		}
	}
	if st.Err != tcp.OK {
		mask |= perr
	}
	return mask & (events | perr | hup), tcp.OK, ""
}

func (o *engineOS) tcpInfo(fd tcp.FD) map[string]int64 {
	st, err := o.h.Status(fd)
	if err != tcp.OK {
		return nil
	}
	s := st.Info
	ms := func(d time.Duration) int64 {
		if d < 0 {
			return 0
		}
		return d.Milliseconds()
	}
	state := tcpiStates[st.State.String()]
	m := map[string]int64{
		"tcpi_state": state, "tcpi_retransmits": int64(s.Retransmits), "tcpi_total_retrans": int64(s.RetransTotal),
		"tcpi_rto": s.RTO.Microseconds(), "tcpi_rtt": s.RTT.Microseconds(), "tcpi_options": int64(st.Options),
		"tcpi_snd_mss": int64(st.SndMSS), "tcpi_advmss": int64(st.AdvMSS), "tcpi_notsent_bytes": int64(st.Unsent),
		"tcpi_last_data_sent": ms(st.SinceDataSent), "tcpi_last_data_recv": ms(st.SinceDataRecv),
		"tcpi_last_ack_recv": ms(st.SinceAckRecv), "tcpi_snd_wnd": int64(s.SndWnd), "tcpi_rcv_wnd": int64(s.RcvWnd),
		"tcpi_busy_time": st.Busy.Microseconds(), "tcpi_rwnd_limited": st.RwndLimited.Microseconds(),
		"tcpi_sndbuf_limited": st.SndbufLimited.Microseconds(),
		"tcpi_snd_ssthresh":   int64(st.Ssthresh), "tcpi_ca_state": int64(st.CAState), "tcpi_unacked": int64(st.PacketsOut),
		"tcpi_probes": int64(st.Probes), "tcpi_backoff": int64(st.Backoff), "tcpi_rttvar": st.RTTVar.Microseconds(),
	}
	if s.Cwnd > 0 {
		m["tcpi_snd_cwnd"] = int64(s.Cwnd)
	}
	return m
}

// An engine epoll set: its sockets, in the order they were added, each
// with the wake-up count it last reported at (edge-triggered) and
// whether it is on the ready list.
type engineEpoll struct {
	items map[tcp.FD]*epItem
	order []tcp.FD
}

type epItem struct {
	events uint32
	data   uint64
	seen   uint64
	ready  bool
}

const (
	epollET      = 1 << 31
	epollOneShot = 1 << 30
	epollFlags   = epollET | epollOneShot | 1<<29 | 1<<28 // ET, ONESHOT, WAKEUP, EXCLUSIVE
)

func (o *engineOS) epollCreate() (int, tcp.Errno, string) {
	o.eps = append(o.eps, &engineEpoll{items: map[tcp.FD]*epItem{}})
	return len(o.eps), tcp.OK, ""
}

func (o *engineOS) epoll(ep int) *engineEpoll {
	if ep < 1 || ep > len(o.eps) {
		return nil
	}
	return o.eps[ep-1]
}

func (o *engineOS) epollCtl(ep int, op int64, fd tcp.FD, events uint32, data uint64) (tcp.Errno, string) {
	e := o.epoll(ep)
	if e == nil {
		return tcp.EBADF, ""
	}
	st, err := o.h.Status(fd)
	if err != tcp.OK {
		return err, ""
	}
	it := e.items[fd]
	switch op {
	case symbols["EPOLL_CTL_ADD"]:
		if it != nil {
			return tcp.Errno(unix.EEXIST), ""
		}
		// ep_insert looks at the socket at once: a ready one is queued.
		e.items[fd] = &epItem{events: events, data: data, seen: st.Wakeups, ready: true}
		e.order = append(e.order, fd)
	case symbols["EPOLL_CTL_MOD"]:
		if it == nil {
			return tcp.Errno(unix.ENOENT), ""
		}
		it.events, it.data, it.seen, it.ready = events, data, st.Wakeups, true
	case symbols["EPOLL_CTL_DEL"]:
		if it == nil {
			return tcp.Errno(unix.ENOENT), ""
		}
		delete(e.items, fd)
		for i, f := range e.order {
			if f == fd {
				e.order = append(e.order[:i], e.order[i+1:]...)
				break
			}
		}
	default:
		return tcp.EINVAL, ""
	}
	return tcp.OK, ""
}

// epollWait is ep_poll without waiting: a level-triggered socket is
// reported while it is ready; an edge-triggered one once per wake-up
// (or once added), with what poll says then.
func (o *engineOS) epollWait(ep int, max int) ([]epollEvent, tcp.Errno, string) {
	e := o.epoll(ep)
	if e == nil {
		return nil, tcp.EBADF, ""
	}
	if max < 1 {
		return nil, tcp.EINVAL, ""
	}
	var out []epollEvent
	for _, fd := range e.order {
		if len(out) == max {
			break
		}
		it := e.items[fd]
		if it.events&^epollFlags == 0 && it.events&epollOneShot != 0 {
			continue // a one-shot that fired: disabled until EPOLL_CTL_MOD
		}
		st, err := o.h.Status(fd)
		if err != tcp.OK {
			continue // a closed descriptor leaves the set
		}
		if it.events&epollET != 0 {
			if !it.ready && st.Wakeups == it.seen {
				continue
			}
			it.seen, it.ready = st.Wakeups, false
		}
		re, _, _ := o.poll(fd, int16(it.events&^epollFlags))
		if re == 0 {
			continue
		}
		out = append(out, epollEvent{events: uint32(uint16(re)), data: it.data})
		if it.events&epollOneShot != 0 {
			it.events &= epollFlags
		}
	}
	return out, tcp.OK, ""
}

// forget removes a closed descriptor from every epoll set.
func (o *engineOS) forget(fd tcp.FD) {
	for _, e := range o.eps {
		if _, ok := e.items[fd]; ok {
			delete(e.items, fd)
			for i, f := range e.order {
				if f == fd {
					e.order = append(e.order[:i], e.order[i+1:]...)
					break
				}
			}
		}
	}
}

func (o *engineOS) epollClose(ep int) {
	if e := o.epoll(ep); e != nil {
		e.items, e.order = map[tcp.FD]*epItem{}, nil
	}
}

// noOS is a backend that answers none of them.
type noOS struct{}

const noOSLacks = "is not supported by this backend"

func (noOS) getsockopt(tcp.FD, int64, int64) (int64, tcp.Errno, string) {
	return 0, tcp.OK, "getsockopt " + noOSLacks
}
func (noOS) setsockopt(tcp.FD, int64, int64, int64) (tcp.Errno, string) {
	return tcp.OK, "setsockopt " + noOSLacks
}
func (noOS) ioctl(tcp.FD, int64) (int64, tcp.Errno, string) { return 0, tcp.OK, "ioctl " + noOSLacks }
func (noOS) poll(tcp.FD, int16) (int16, tcp.Errno, string)  { return 0, tcp.OK, "poll " + noOSLacks }
func (noOS) tcpInfo(tcp.FD) map[string]int64                { return nil }
func (noOS) epollCreate() (int, tcp.Errno, string)          { return 0, tcp.OK, "epoll " + noOSLacks }
func (noOS) epollCtl(int, int64, tcp.FD, uint32, uint64) (tcp.Errno, string) {
	return tcp.OK, "epoll " + noOSLacks
}
func (noOS) epollWait(int, int) ([]epollEvent, tcp.Errno, string) {
	return nil, tcp.OK, "epoll " + noOSLacks
}
func (noOS) epollClose(int) {}

// traceCall reports a call the runner answered itself as the backends
// report theirs, so that every view shows it.
func (r *player) traceCall(ev *Event, fd tcp.FD, started time.Duration, ret int64, errno tcp.Errno) {
	if r.opt.Sink == nil {
		return
	}
	r.ownCalls++
	sc := ev.Syscall
	args := make([]string, len(sc.Args))
	for i := range sc.Args {
		args[i] = sc.Args[i].String()
	}
	e := trace.Event{At: r.now(), Host: LocalHost, Kind: trace.KindCall,
		Call: &trace.Call{ID: 1<<40 + r.ownCalls, Op: sc.Name, Text: sc.Name + "(" + strings.Join(args, ", ") + ")",
			FD: int(fd), Ret: int(ret), Errno: errno.Name(), Started: started}}
	r.opt.Sink(e)
}
