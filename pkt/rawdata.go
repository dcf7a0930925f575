package pkt

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/tcp"
)

// Data calls the backends' calls cannot carry (send flags such as
// MSG_EOR or MSG_FASTOPEN, a NULL buffer, recvmsg's control messages)
// are made on the kernel as they are written: the real system call on
// the real socket, without waiting. On the engine, NULL buffers and
// TCP_CM_INQ have their own answers; the rest stays unsupported.

// engineMsgFlags are the send and receive flags the backends' calls carry.
func engineMsgFlags() int64 {
	return symbols["MSG_DONTWAIT"] | symbols["MSG_PEEK"] | symbols["MSG_NOSIGNAL"] | symbols["MSG_MORE"]
}

// needsRaw tells whether a data call needs the raw path.
func needsRaw(ev *Event) bool {
	sc := ev.Syscall
	switch sc.Name {
	case "write", "send", "sendto", "sendmsg", "read", "recv", "recvfrom", "recvmsg":
	default:
		return false
	}
	msg := sc.Name == "sendmsg" || sc.Name == "recvmsg"
	if len(sc.Args) >= 2 && !msg {
		if a := &sc.Args[1]; a.Kind == ExWord && a.Text == "NULL" || a.Kind == ExInt {
			return true
		}
	}
	flagArg := -1
	switch sc.Name {
	case "send", "recv", "sendto", "recvfrom":
		flagArg = 3
	case "sendmsg", "recvmsg":
		flagArg = 2
	}
	if flagArg >= 0 && flagArg < len(sc.Args) {
		if v, ok := value(&sc.Args[flagArg]); ok && v&^engineMsgFlags() != 0 {
			return true
		}
	}
	if sc.Name == "recvmsg" && len(sc.Args) == 3 {
		if c := sc.Args[1].Field("msg_control"); c != nil && c.Kind == ExList && len(c.Elems) > 0 {
			return true
		}
	}
	return false
}

// rawData makes such a call on the kernel; handled is false on the engine.
func (r *player) rawData(ev *Event) (handled bool, err *stop) {
	k, ok := r.os.(*kernelOS)
	if !ok || !needsRaw(ev) {
		return false, nil
	}
	sc := ev.Syscall
	line := ev.Pos.Line
	fd, err := r.fd(ev, 0)
	if err != nil {
		return true, err
	}
	var flags int64
	var iov []int64 // lengths
	null := false
	switch sc.Name {
	case "write", "read":
		if err := nargs(ev, 3); err != nil {
			return true, err
		}
	case "send", "recv":
		if err := nargs(ev, 4); err != nil {
			return true, err
		}
	case "sendto", "recvfrom":
		if err := nargs(ev, 6); err != nil {
			return true, err
		}
	case "sendmsg", "recvmsg":
		if err := nargs(ev, 3); err != nil {
			return true, err
		}
	}
	msg := sc.Name == "sendmsg" || sc.Name == "recvmsg"
	if msg {
		l := sc.Args[1].Field("msg_iov")
		if l == nil || l.Kind != ExList {
			return true, unsupportedAt(line, "%s: message %s is not supported", sc.Name, sc.Args[1].String())
		}
		for i := range l.Elems {
			v := &l.Elems[i]
			if v.Kind != ExStruct || len(v.Elems) != 2 {
				return true, unsupportedAt(line, "%s: iovec %s is not supported", sc.Name, v.String())
			}
			n, ok := value(&v.Elems[1])
			if !ok || n < 0 || n > 16<<20 {
				return true, unsupportedAt(line, "%s: iovec %s is not supported", sc.Name, v.String())
			}
			iov = append(iov, n)
		}
		if flags, err = intArg(ev, 2); err != nil {
			return true, err
		}
	} else {
		n, err := intArg(ev, 2)
		if err != nil {
			return true, err
		}
		if n < 0 || n > 16<<20 {
			return true, unsupportedAt(line, "%s of %d bytes is not supported", sc.Name, n)
		}
		iov = []int64{n}
		a := &sc.Args[1]
		null = a.Kind == ExWord && a.Text == "NULL" || a.Kind == ExInt && a.Int == 0
		if a.Kind == ExInt && a.Int != 0 {
			return true, unsupportedAt(line, "%s: buffer %s: only NULL is supported as a pointer", sc.Name, a.String())
		}
		if sc.Name != "write" && sc.Name != "read" {
			if flags, err = intArg(ev, 3); err != nil {
				return true, err
			}
		}
	}
	send := sc.Name == "write" || sc.Name == "send" || sc.Name == "sendto" || sc.Name == "sendmsg"
	start := r.now()
	var ret int
	var errno tcp.Errno
	var cmsgs []cmsg
	var rflags int
	e := k.sys(fd, func(kfd int) error {
		var err error
		ret, cmsgs, rflags, err = rawCall(kfd, send, null, iov, int(flags|symbols["MSG_DONTWAIT"]), sc.Name == "recvmsg")
		return err
	})
	if e != tcp.OK {
		ret, errno = -1, e
	}
	if errno == tcp.EAGAIN && !r.nonblock[fd] && flags&symbols["MSG_DONTWAIT"] == 0 {
		return true, unsupportedAt(line, "%s: the call would block, and the runner makes it without waiting", sc.Name)
	}
	r.traceCall(ev, fd, start, int64(ret), errno)
	if err := r.checkResult(ev, ret, errno, false); err != nil {
		return true, err
	}
	if sc.Name == "recvmsg" && errno == tcp.OK {
		// The flags recvmsg returned, as the script expects them.
		if f := sc.Args[1].Field("msg_flags"); f != nil && f.Kind != ExEllipsis {
			v, ok := value(f)
			if !ok {
				return true, unsupportedAt(line, "recvmsg: msg_flags %s are not supported", f.String())
			}
			if v != int64(rflags) {
				return true, failAt(line, "runtime error in recvmsg call: Bad msg_flags: expected: 0x%x actual: 0x%x", v, rflags)
			}
		}
		return true, checkCmsgs(ev, cmsgs)
	}
	return true, nil
}

// cmsg is a received control message with an integer payload.
type cmsg struct {
	level, typ int32
	data       int64
}

// rawCall makes one data call on a kernel descriptor, never waiting.
func rawCall(kfd int, send, null bool, iov []int64, flags int, control bool) (int, []cmsg, int, error) {
	total := int64(0)
	for _, n := range iov {
		total += n
	}
	if null {
		var trap uintptr = unix.SYS_RECVFROM
		if send {
			trap = unix.SYS_SENDTO
		}
		n, _, en := unix.Syscall6(trap, uintptr(kfd), 0, uintptr(total), uintptr(flags), 0, 0)
		if en != 0 {
			return -1, nil, 0, en
		}
		return int(n), nil, 0, nil
	}
	bufs := make([][]byte, len(iov))
	for i, n := range iov {
		bufs[i] = make([]byte, n)
	}
	if send {
		n, err := unix.SendmsgBuffers(kfd, bufs, nil, nil, flags)
		if err != nil {
			return -1, nil, 0, err
		}
		return n, nil, 0, nil
	}
	var oob []byte
	if control {
		oob = make([]byte, 256)
	}
	n, oobn, rflags, _, err := unix.RecvmsgBuffers(kfd, bufs, oob, flags)
	if err != nil {
		return -1, nil, 0, err
	}
	var out []cmsg
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			c := cmsg{level: m.Header.Level, typ: m.Header.Type}
			if len(m.Data) >= 4 {
				c.data = int64(*(*int32)(unsafe.Pointer(&m.Data[0])))
			}
			out = append(out, c)
		}
	}
	return n, out, rflags, nil
}

// checkCmsgs compares recvmsg's control messages with the script's
// msg_control list, in order.
func checkCmsgs(ev *Event, got []cmsg) *stop {
	c := ev.Syscall.Args[1].Field("msg_control")
	if c == nil || c.Kind != ExList {
		return nil
	}
	line := ev.Pos.Line
	if len(got) != len(c.Elems) {
		return failAt(line, "runtime error in recvmsg call: Expected %d control messages but got %d", len(c.Elems), len(got))
	}
	for i := range c.Elems {
		w := &c.Elems[i]
		for _, f := range []struct {
			name string
			got  int64
		}{{"cmsg_level", int64(got[i].level)}, {"cmsg_type", int64(got[i].typ)}, {"cmsg_data", got[i].data}} {
			e := w.Field(f.name)
			if e == nil || e.Kind == ExEllipsis {
				continue
			}
			v, ok := value(e)
			if !ok {
				return unsupportedAt(line, "recvmsg: %s %s is not supported", f.name, e.String())
			}
			if v != f.got {
				return failAt(line, "runtime error in recvmsg call: Bad %s: expected: %d actual: %d", f.name, v, f.got)
			}
		}
	}
	return nil
}
