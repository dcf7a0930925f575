package pkt

import (
	"golang.org/x/sys/unix"
	"net/netip"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
)

// Linux's values of the constants scripts pass to and get from calls.
var symbols = map[string]int64{
	"O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_NONBLOCK": 0x800,
	"F_GETFL": 3, "F_SETFL": 4,
	"SHUT_RD": 0, "SHUT_WR": 1, "SHUT_RDWR": 2,
	"MSG_PEEK": 0x2, "MSG_DONTWAIT": 0x40, "MSG_NOSIGNAL": 0x4000, "MSG_MORE": 0x8000,
	"MSG_EOR": 0x80, "MSG_ZEROCOPY": 0x4000000, "MSG_FASTOPEN": 0x20000000, "MSG_WAITALL": 0x100,
	"SOL_SOCKET": 1, "SOL_TCP": 6, "IPPROTO_TCP": 6, "SOL_IP": 0, "IPPROTO_IP": 0,
	"SO_REUSEADDR": 2, "SO_KEEPALIVE": 9, "SO_LINGER": 13, "SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_ERROR": 4,
	"TCP_NODELAY": 1, "TCP_MAXSEG": 2, "TCP_CORK": 3, "TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 6,
	"TCP_INFO": 11, "TCP_USER_TIMEOUT": 18, "TCP_NOTSENT_LOWAT": 25,
	"AF_INET": 2, "AF_INET6": 10, "SOCK_STREAM": 1,
}

// value evaluates an integer expression: a number, a constant, or
// several joined by |.
func value(e *Expr) (int64, bool) {
	switch e.Kind {
	case ExInt:
		return e.Int, true
	case ExWord:
		v, ok := symbols[e.Text]
		return v, ok
	case ExBinary:
		if e.Text != "|" {
			return 0, false
		}
		l, ok1 := value(e.L)
		r, ok2 := value(e.R)
		return l | r, ok1 && ok2
	case ExList: // [1]: a pointer to an int
		if len(e.Elems) == 1 {
			return value(&e.Elems[0])
		}
	}
	return 0, false
}

// syscall makes a system call line's call on the engine and checks its
// result. at is the line's script time (the call is made now).
func (r *player) syscall(ev *Event, at, prev time.Duration) *stop {
	sc := ev.Syscall
	line := ev.Pos.Line
	if handled, err := r.osCall(ev, at, prev); handled {
		return err
	}
	call, fdResult, local, err := r.toCall(ev)
	if err != nil {
		return err
	}
	if local != nil { // answered by the runner (fcntl F_GETFL, EFAULT)
		r.traceCall(ev, call.FD, r.now(), int64(local.Ret), local.Err)
		return r.checkResult(ev, local.Ret, local.Err, false)
	}
	// A blocking call's end: relative to the same base as its start.
	endAt := sc.End
	if sc.End >= 0 && ev.Time.Kind == TimeRel {
		endAt += at - ev.Time.At
	}
	start := r.now()
	res, derr := r.b.Call(LocalHost, call)
	if derr != nil {
		return failAt(line, "runtime error in %s call: %v", sc.Name, derr)
	}
	switch {
	case res.Pending && sc.End >= 0:
		r.blocked = &blockedCall{ev: ev, id: res.ID, end: endAt, startAt: start, expected: sc, call: call, fdResult: fdResult}
		return nil
	case res.Pending:
		// A call the script thinks returns at once: wait for it, then
		// check when it returned.
		limit := start + r.st.tolerance + sniffTimeout
		if !r.waitFor(func() bool { return r.done[res.ID] != nil }, limit) {
			return failAt(line, "runtime error in %s call: the call blocked (still blocked at %s s)", sc.Name, trace.FormatTime(limit))
		}
		// It returns at once from when it was made: a harness that made
		// it late (on the kernel, counted in Late) moves its return too.
		want := max(at, start)
		if msg := r.st.verifyTime(TimeAbs, want, want, r.done[res.ID].At, prev, "system call return"); msg != "" {
			return failAt(line, "runtime error in %s call: %s", sc.Name, msg)
		}
		d := r.done[res.ID]
		res.Ret, res.Err = d.Call.Ret, errnoOf(d.Call.Errno)
	case sc.End >= 0:
		// The script let it block, and it returned at once.
		if msg := r.st.verifyTime(TimeAbs, endAt, endAt, start, prev, "system call return"); msg != "" {
			return failAt(line, "runtime error in %s call: %s", sc.Name, msg)
		}
	}
	return r.checkCall(ev, call, res.Ret, res.Err, fdResult)
}

// finishBlocked waits for the call the script let block, and checks its
// return. next is the system call that must wait for it, due at at; nil
// at the end of the script. As packetdrill, a next call waits at most a
// second past its time for the blocked one.
func (r *player) finishBlocked(next *Event, at time.Duration) *stop {
	b := r.blocked
	if b == nil {
		return nil
	}
	line, limit := b.ev.Pos.Line, b.end+r.st.tolerance+sniffTimeout
	if next != nil {
		r.runUntil(at)
		line, limit = next.Pos.Line, max(at, r.now())+time.Second
	}
	if w := b.local; w != nil {
		if !r.waitFor(func() bool { return w.got }, min(limit, max(w.deadline, r.now()))) {
			r.blocked = nil
			return failAt(line, "runtime error in %s call: still blocked at %s s, expected to return at %s s",
				b.expected.Name, trace.FormatTime(r.now()), trace.FormatTime(b.end))
		}
		r.blocked = nil
		if msg := r.st.verifyTime(TimeAbs, b.end, b.end, w.gotAt, b.startAt, "system call return"); msg != "" {
			return failAt(b.ev.Pos.Line, "runtime error in %s call: %s", b.expected.Name, msg)
		}
		r.traceCall(b.ev, b.localFD, b.startAt, int64(w.gotRet), tcp.OK)
		return w.finish(w.gotRet)
	}
	r.blocked = nil
	if !r.waitFor(func() bool { return r.done[b.id] != nil }, limit) {
		if next != nil {
			return failAt(line, "blocking system call while another blocking system call is already in progress (%s at line %d)", b.expected.Name, b.ev.Pos.Line)
		}
		return failAt(line, "runtime error in %s call: still blocked at %s s, expected to return at %s s",
			b.expected.Name, trace.FormatTime(limit), trace.FormatTime(b.end))
	}
	d := r.done[b.id]
	if msg := r.st.verifyTime(TimeAbs, b.end, b.end, r.done[b.id].At, b.startAt, "system call return"); msg != "" {
		return failAt(b.ev.Pos.Line, "runtime error in %s call: %s", b.expected.Name, msg)
	}
	return r.checkCall(b.ev, b.call, d.Call.Ret, errnoOf(d.Call.Errno), b.fdResult)
}

// errnoByName reads an errno's name: the engine's, else any of Linux's.
func errnoByName(name string) (tcp.Errno, bool) {
	if e, ok := tcp.ParseErrno(name); ok {
		return e, true
	}
	for e := 1; e < 256; e++ {
		if unix.ErrnoName(unix.Errno(e)) == name {
			return tcp.Errno(e), true
		}
	}
	return 0, false
}

func errnoOf(name string) tcp.Errno {
	e, _ := tcp.ParseErrno(name)
	return e
}

// checkCall checks a call's result and, for one that made a descriptor,
// maps the script's number to the engine's.
func (r *player) checkCall(ev *Event, call tcp.Call, ret int, errno tcp.Errno, fdResult bool) *stop {
	if err := r.checkResult(ev, ret, errno, fdResult); err != nil {
		return err
	}
	if errno == tcp.OK && call.FD > 0 && call.Op != tcp.OpClose {
		r.lastFD = call.FD
	}
	if errno == tcp.OK && call.Op == tcp.OpRead && ev.Syscall.Name == "recvmsg" {
		// TCP_CM_INQ after the read: what is left (tcp_recvmsg's
		// tcp_inq_hint), when TCP_INQ is on.
		var got []cmsg
		if eo, ok := r.os.(*engineOS); ok && eo.inq[call.FD] {
			if v, ok := eo.inqHint(call.FD); ok {
				got = append(got, cmsg{level: int32(symbols["SOL_TCP"]), typ: int32(symbols["TCP_CM_INQ"]), data: v})
			}
		}
		if err := checkCmsgs(ev, got); err != nil {
			return err
		}
	}
	// What a call changed, the runner learns once it succeeded.
	switch {
	case errno != tcp.OK:
	case call.Op == tcp.OpClose:
		if r.lastFD == call.FD {
			r.lastFD = 0
		}
		for k, v := range r.fds {
			if v == call.FD {
				delete(r.fds, k)
			}
		}
		delete(r.nonblock, call.FD)
		delete(r.bound, call.FD)
		if eo, ok := r.os.(*engineOS); ok {
			eo.forget(call.FD) // a closed descriptor leaves every epoll set
		}
	case call.Op == tcp.OpBind:
		r.bound[call.FD] = call.Port
	case call.Op == tcp.OpListen:
		r.listen = r.bound[call.FD]
	case call.Op == tcp.OpSetOption && call.Option.Kind == tcp.OptNonBlock:
		r.nonblock[call.FD] = call.Option.On
	}
	return nil
}

// checkResult compares a call's return value and errno with the script's
// (packetdrill's wording). A call that makes a descriptor is checked for
// one, and the script's number is mapped to it.
func (r *player) checkResult(ev *Event, ret int, errno tcp.Errno, fdResult bool) *stop {
	sc := ev.Syscall
	line := ev.Pos.Line
	if sc.Result.Kind == ExEllipsis {
		return nil
	}
	want, ok := value(&sc.Result)
	if !ok {
		return unsupportedAt(line, "the expected result %s of %s is not supported", sc.Result.String(), sc.Name)
	}
	if fdResult && want >= 0 {
		if ret < 0 {
			return failAt(line, "runtime error in %s call: Expected non-negative result but got %d with %s", sc.Name, ret, errnoText(errno))
		}
		r.fds[want] = tcp.FD(ret)
		if tcp.FD(ret) < firstEpollFD {
			r.lastFD = tcp.FD(ret)
		}
	} else if int64(ret) != want {
		return failAt(line, "runtime error in %s call: Expected result %d but got %d with %s", sc.Name, want, ret, errnoText(errno))
	}
	if sc.Errno != "" {
		e, ok := errnoByName(sc.Errno)
		if !ok {
			return unsupportedAt(line, "errno %s is not one the engine knows", sc.Errno)
		}
		if e != errno {
			return failAt(line, "runtime error in %s call: Expected errno %d (%s) but got %d (%s)", sc.Name, int(e), errnoMessage(e), int(errno), errnoMessage(errno))
		}
	}
	return nil
}

// fd maps a script descriptor argument to the engine's.
func (r *player) fd(ev *Event, i int) (tcp.FD, *stop) {
	sc := ev.Syscall
	if i >= len(sc.Args) {
		return 0, failAt(ev.Pos.Line, "%s: missing the descriptor argument", sc.Name)
	}
	v, ok := value(&sc.Args[i])
	if !ok {
		return 0, unsupportedAt(ev.Pos.Line, "%s: descriptor %s is not supported", sc.Name, sc.Args[i].String())
	}
	if fd, ok := r.fds[v]; ok {
		return fd, nil
	}
	return -1, nil // not one the script opened: the engine answers EBADF
}

// intArg evaluates argument i as an integer.
func intArg(ev *Event, i int) (int64, *stop) {
	sc := ev.Syscall
	if i >= len(sc.Args) {
		return 0, failAt(ev.Pos.Line, "%s: argument %d missing", sc.Name, i+1)
	}
	v, ok := value(&sc.Args[i])
	if !ok {
		return 0, unsupportedAt(ev.Pos.Line, "%s: argument %s is not supported", sc.Name, sc.Args[i].String())
	}
	return v, nil
}

// iovLen is the total length of a msghdr's msg_iov.
func iovLen(e *Expr) (int64, bool) {
	iov := e.Field("msg_iov")
	if iov == nil || iov.Kind != ExList {
		return 0, false
	}
	n := int64(0)
	for i := range iov.Elems {
		v := &iov.Elems[i]
		if v.Kind != ExStruct || len(v.Elems) != 2 {
			return 0, false
		}
		l, ok := value(&v.Elems[1])
		if !ok {
			return 0, false
		}
		n += l
	}
	return n, true
}

// flags reads a send/recv flags argument: MSG_DONTWAIT and MSG_PEEK the
// engine has; MSG_NOSIGNAL changes nothing it models.
func msgFlags(ev *Event, i int) (nonblock, peek bool, err *stop) {
	v, err := intArg(ev, i)
	if err != nil {
		return false, false, err
	}
	// MSG_ZEROCOPY sends the same segments (its completion notices are
	// not modelled, and no call here reads them).
	known := symbols["MSG_DONTWAIT"] | symbols["MSG_PEEK"] | symbols["MSG_NOSIGNAL"] | symbols["MSG_ZEROCOPY"] | symbols["MSG_MORE"]
	if v&^known != 0 {
		return false, false, unsupportedAt(ev.Pos.Line, "%s: flags %s are not supported by the engine", ev.Syscall.Name, ev.Syscall.Args[i].String())
	}
	return v&symbols["MSG_DONTWAIT"] != 0, v&symbols["MSG_PEEK"] != 0, nil
}

// moreFlag tells whether a send's flags hold MSG_MORE.
func moreFlag(ev *Event) bool {
	i := -1
	switch ev.Syscall.Name {
	case "send", "sendto":
		i = 3
	case "sendmsg":
		i = 2
	}
	if i < 0 || i >= len(ev.Syscall.Args) {
		return false
	}
	v, ok := value(&ev.Syscall.Args[i])
	return ok && v&symbols["MSG_MORE"] != 0
}

// toCall turns a system call line into an engine call. fdResult says the
// call returns a new descriptor; local is the result of a call the runner
// answers itself.
func (r *player) toCall(ev *Event) (call tcp.Call, fdResult bool, local *tcp.Result, err *stop) {
	sc := ev.Syscall
	line := ev.Pos.Line
	nargs := func(n ...int) *stop {
		for _, k := range n {
			if len(sc.Args) == k {
				return nil
			}
		}
		return failAt(line, "%s takes %v arguments, the script gives %d", sc.Name, n, len(sc.Args))
	}
	switch sc.Name {
	case "socket":
		if err = nargs(3); err != nil {
			return
		}
		if t, ok := value(&sc.Args[1]); !ok || t != symbols["SOCK_STREAM"] {
			return call, false, nil, unsupportedAt(line, "socket: only SOCK_STREAM sockets are supported")
		}
		if f := &sc.Args[0]; f.Kind != ExEllipsis {
			if v, ok := value(f); !ok || v != symbols["AF_INET"] {
				return call, false, nil, unsupportedAt(line, "socket: only AF_INET is supported")
			}
		}
		return tcp.Call{Op: tcp.OpSocket}, true, nil, nil
	case "bind":
		if err = nargs(3); err != nil {
			return
		}
		call.Op = tcp.OpBind
		if call.FD, err = r.fd(ev, 0); err != nil {
			return
		}
		call.Port = r.st.bindPort
		if sa := &sc.Args[1]; sa.Kind == ExStruct {
			port, ok := sockaddrPort(sa)
			if !ok {
				return call, false, nil, unsupportedAt(line, "bind: address %s is not supported", sa.String())
			}
			call.Port = port
		}
		return
	case "listen":
		if err = nargs(2); err != nil {
			return
		}
		call.Op = tcp.OpListen
		if call.FD, err = r.fd(ev, 0); err != nil {
			return
		}
		var b int64
		b, err = intArg(ev, 1)
		call.Backlog = int(b)
		return
	case "accept", "accept4":
		if len(sc.Args) == 4 {
			if f, ok := value(&sc.Args[3]); !ok || f != 0 {
				return call, false, nil, unsupportedAt(line, "accept4 flags %s are not supported", sc.Args[3].String())
			}
		}
		call.Op = tcp.OpAccept
		call.FD, err = r.fd(ev, 0)
		call.NonBlock = r.nonblock[call.FD]
		return call, true, nil, err
	case "connect":
		if err = nargs(3); err != nil {
			return
		}
		call.Op = tcp.OpConnect
		if call.FD, err = r.fd(ev, 0); err != nil {
			return
		}
		call.Addr = netip.AddrPortFrom(r.st.remote, r.st.connectPort)
		if sa := &sc.Args[1]; sa.Kind == ExStruct {
			port, ok := sockaddrPort(sa)
			if !ok {
				return call, false, nil, unsupportedAt(line, "connect: address %s is not supported", sa.String())
			}
			call.Addr = netip.AddrPortFrom(r.st.remote, port)
		}
		call.NonBlock = r.nonblock[call.FD]
		return
	case "read", "recv", "recvfrom", "recvmsg":
		call.Op = tcp.OpRead
		var n int64
		if call.FD, n, call.NonBlock, call.Peek, err = r.dataArgs(ev, sc.Name == "recvmsg", sc.Name == "read"); err != nil {
			return
		}
		if n <= 0 {
			return call, false, nil, unsupportedAt(line, "%s of %d bytes is not supported", sc.Name, n)
		}
		call.Max = int(n)
		if nullBuffer(ev) {
			local = r.efault(call, n)
		}
		return
	case "write", "send", "sendto", "sendmsg":
		call.Op = tcp.OpWrite
		var n int64
		if call.FD, n, call.NonBlock, _, err = r.dataArgs(ev, sc.Name == "sendmsg", sc.Name == "write"); err != nil {
			return
		}
		if n < 0 || n > 16<<20 {
			return call, false, nil, unsupportedAt(line, "%s of %d bytes is not supported", sc.Name, n)
		}
		call.Data = r.zeros(int(n))
		call.More = moreFlag(ev)
		if nullBuffer(ev) {
			local = r.efault(call, n)
		}
		return
	case "close":
		if err = nargs(1); err != nil {
			return
		}
		call.Op = tcp.OpClose
		call.FD, err = r.fd(ev, 0)
		return
	case "shutdown":
		if err = nargs(2); err != nil {
			return
		}
		call.Op = tcp.OpShutdown
		if call.FD, err = r.fd(ev, 0); err != nil {
			return
		}
		var how int64
		how, err = intArg(ev, 1)
		call.How = tcp.Shut(how)
		return
	case "fcntl":
		return r.fcntl(ev)
	case "setsockopt":
		return r.setsockopt(ev)
	}
	return call, false, nil, unsupportedAt(line, "the %s call is not supported by the engine backend yet", sc.Name)
}

// dataArgs reads a data call's arguments: its descriptor, its length (of
// msg_iov for recvmsg and sendmsg, else the third argument) and its
// flags (none for read and write), O_NONBLOCK of the descriptor included.
func (r *player) dataArgs(ev *Event, msg, noFlags bool) (fd tcp.FD, n int64, nonblock, peek bool, err *stop) {
	sc := ev.Syscall
	if fd, err = r.fd(ev, 0); err != nil {
		return
	}
	if err = buffer(ev, !msg); err != nil {
		return
	}
	switch {
	case msg:
		if len(sc.Args) != 3 {
			return fd, 0, false, false, failAt(ev.Pos.Line, "%s takes [3] arguments, the script gives %d", sc.Name, len(sc.Args))
		}
		var ok bool
		if n, ok = iovLen(&sc.Args[1]); !ok {
			return fd, 0, false, false, unsupportedAt(ev.Pos.Line, "%s: message %s is not supported", sc.Name, sc.Args[1].String())
		}
		// What the runner cannot check is never passed: control
		// messages other than TCP_CM_INQ, and flags a receive returns.
		if c := sc.Args[1].Field("msg_control"); c != nil && c.Kind == ExList {
			for i := range c.Elems {
				if t := c.Elems[i].Field("cmsg_type"); t == nil || t.String() != "TCP_CM_INQ" {
					return fd, 0, false, false, unsupportedAt(ev.Pos.Line, "%s: control message %s is not checked yet", sc.Name, c.Elems[i].String())
				}
			}
		}
		if f := sc.Args[1].Field("msg_flags"); f != nil && f.Kind != ExEllipsis {
			if v, ok := value(f); !ok || v != 0 {
				return fd, 0, false, false, unsupportedAt(ev.Pos.Line, "%s: msg_flags %s are not checked yet", sc.Name, f.String())
			}
		}
		nonblock, peek, err = msgFlags(ev, 2)
	default:
		if n, err = intArg(ev, 2); err != nil || noFlags {
			break
		}
		nonblock, peek, err = msgFlags(ev, 3)
	}
	return fd, n, nonblock || r.nonblock[fd], peek, err
}

// buffer checks a data call's buffer argument: "..." (the runner's own
// memory), for a write a string, or NULL (a test of EFAULT). Any other
// pointer has no meaning here.
func buffer(ev *Event, plain bool) *stop {
	if !plain || len(ev.Syscall.Args) < 2 {
		return nil
	}
	switch a := &ev.Syscall.Args[1]; {
	case a.Kind == ExEllipsis, a.Kind == ExString, nullBuffer(ev):
		return nil
	default:
		return unsupportedAt(ev.Pos.Line, "%s: buffer %s: only ..., a string or NULL are supported", ev.Syscall.Name, a.String())
	}
}

// nullBuffer tells whether a plain data call's buffer is NULL.
func nullBuffer(ev *Event) bool {
	sc := ev.Syscall
	if len(sc.Args) < 2 || sc.Name == "sendmsg" || sc.Name == "recvmsg" {
		return false
	}
	a := &sc.Args[1]
	return a.Kind == ExWord && a.Text == "NULL" || a.Kind == ExInt && a.Int == 0
}

// efault is the result of a data call into a NULL buffer on the engine:
// EFAULT where Linux would copy (data to read, room to write on a
// connection that takes data), else nil and the engine's own answer
// (EAGAIN, EPIPE, end of stream...).
func (r *player) efault(call tcp.Call, n int64) *tcp.Result {
	eo, ok := r.os.(*engineOS)
	if !ok || n <= 0 {
		return nil
	}
	st, err := eo.h.Status(call.FD)
	if err != tcp.OK || st.Err != tcp.OK {
		return nil
	}
	switch call.Op {
	case tcp.OpRead:
		if st.Readable == 0 {
			return nil
		}
	case tcp.OpWrite:
		if st.SndShut || st.Room == 0 || (st.State != tcp.Established && st.State != tcp.CloseWait) {
			return nil
		}
	}
	return &tcp.Result{Ret: -1, Err: tcp.Errno(unix.EFAULT)}
}

// zeros returns n zero bytes, from one buffer the run reuses: the engine
// copies what a write gives it, and the content is never checked.
func (r *player) zeros(n int) []byte {
	if len(r.zeroBuf) < n {
		r.zeroBuf = make([]byte, n)
	}
	return r.zeroBuf[:n]
}

// sockaddrPort reads sin_port=htons(N) from a sockaddr struct.
func sockaddrPort(sa *Expr) (uint16, bool) {
	p := sa.Field("sin_port")
	if p == nil || p.Kind != ExCall || p.Text != "htons" || len(p.Elems) != 1 {
		return 0, false
	}
	v, ok := value(&p.Elems[0])
	return uint16(v), ok && v > 0 && v < 65536
}

// fcntl: F_GETFL is answered from what the script set; F_SETFL sets or
// clears O_NONBLOCK.
func (r *player) fcntl(ev *Event) (tcp.Call, bool, *tcp.Result, *stop) {
	line := ev.Pos.Line
	fd, err := r.fd(ev, 0)
	if err != nil {
		return tcp.Call{}, false, nil, err
	}
	cmd, err := intArg(ev, 1)
	if err != nil {
		return tcp.Call{}, false, nil, err
	}
	switch cmd {
	case symbols["F_GETFL"]:
		if fd < 0 {
			return tcp.Call{}, false, &tcp.Result{Ret: -1, Err: tcp.EBADF}, nil
		}
		v := symbols["O_RDWR"]
		if r.nonblock[fd] {
			v |= symbols["O_NONBLOCK"]
		}
		return tcp.Call{}, false, &tcp.Result{Ret: int(v)}, nil
	case symbols["F_SETFL"]:
		v, err := intArg(ev, 2)
		if err != nil {
			return tcp.Call{}, false, nil, err
		}
		on := v&symbols["O_NONBLOCK"] != 0
		return tcp.Call{Op: tcp.OpSetOption, FD: fd, Option: tcp.Option{Kind: tcp.OptNonBlock, On: on}}, false, nil, nil
	}
	return tcp.Call{}, false, nil, unsupportedAt(line, "fcntl command %s is not supported", ev.Syscall.Args[1].String())
}

// setsockopt maps the options the engine has.
func (r *player) setsockopt(ev *Event) (tcp.Call, bool, *tcp.Result, *stop) {
	sc := ev.Syscall
	line := ev.Pos.Line
	if len(sc.Args) != 5 {
		return tcp.Call{}, false, nil, failAt(line, "setsockopt takes 5 arguments, the script gives %d", len(sc.Args))
	}
	fd, err := r.fd(ev, 0)
	if err != nil {
		return tcp.Call{}, false, nil, err
	}
	name := sc.Args[2].String()
	call := tcp.Call{Op: tcp.OpSetOption, FD: fd}
	if name == "SO_LINGER" {
		v := &sc.Args[3]
		on, l := v.Field("onoff"), v.Field("linger")
		if on == nil {
			on = v.Field("l_onoff")
		}
		if l == nil {
			l = v.Field("l_linger")
		}
		onv, ok1 := value(orZero(on))
		lv, ok2 := value(orZero(l))
		if on == nil || l == nil || !ok1 || !ok2 {
			return call, false, nil, unsupportedAt(line, "SO_LINGER value %s is not supported", v.String())
		}
		call.Option = tcp.Option{Kind: tcp.OptLinger, On: onv != 0, Dur: time.Duration(lv) * time.Second}
		return call, false, nil, nil
	}
	v, ok := value(&sc.Args[3])
	if !ok {
		return call, false, nil, unsupportedAt(line, "setsockopt value %s is not supported", sc.Args[3].String())
	}
	switch name {
	case "SO_REUSEADDR":
		call.Option = tcp.Option{Kind: tcp.OptReuseAddr, On: v != 0}
	case "SO_KEEPALIVE":
		call.Option = tcp.Option{Kind: tcp.OptKeepAlive, On: v != 0}
	case "TCP_NODELAY":
		call.Option = tcp.Option{Kind: tcp.OptNoDelay, On: v != 0}
	case "TCP_KEEPIDLE":
		call.Option = tcp.Option{Kind: tcp.OptKeepIdle, Dur: time.Duration(v) * time.Second}
	case "TCP_KEEPINTVL":
		call.Option = tcp.Option{Kind: tcp.OptKeepIntvl, Dur: time.Duration(v) * time.Second}
	case "TCP_KEEPCNT":
		call.Option = tcp.Option{Kind: tcp.OptKeepCnt, N: int(v)}
	case "SO_SNDBUF":
		call.Option = tcp.Option{Kind: tcp.OptSndBuf, N: int(v)}
	case "TCP_MAXSEG":
		call.Option = tcp.Option{Kind: tcp.OptMaxSeg, N: int(v)}
	case "TCP_USER_TIMEOUT":
		call.Option = tcp.Option{Kind: tcp.OptUserTimeout, Dur: time.Duration(v) * time.Millisecond}
	case "TCP_CORK":
		call.Option = tcp.Option{Kind: tcp.OptCork, On: v != 0}
	default:
		return call, false, nil, unsupportedAt(line, "socket option %s is not supported by the engine yet", name)
	}
	return call, false, nil, nil
}

func orZero(e *Expr) *Expr {
	if e == nil {
		return &Expr{Kind: ExInt}
	}
	return e
}
