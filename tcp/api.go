package tcp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// FD is a socket descriptor, numbered from 3 per host like a process's.
type FD int32

// Op is an application call.
type Op uint8

const (
	OpSocket Op = iota
	OpBind
	OpListen
	OpAccept
	OpConnect
	OpRead
	OpWrite
	OpShutdown
	OpClose
	OpSetOption
)

var opNames = [...]string{"socket", "bind", "listen", "accept", "connect", "read", "write", "shutdown", "close", "setsockopt"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Shut is the how of shutdown().
type Shut uint8

const (
	ShutRD   Shut = 0
	ShutWR   Shut = 1
	ShutRDWR Shut = 2
)

func (s Shut) String() string {
	switch s {
	case ShutRD:
		return "SHUT_RD"
	case ShutWR:
		return "SHUT_WR"
	default:
		return "SHUT_RDWR"
	}
}

// OptKind names a socket option.
type OptKind uint8

const (
	OptLinger      OptKind = iota // SO_LINGER: On, Dur (whole seconds)
	OptReuseAddr                  // SO_REUSEADDR: On
	OptKeepAlive                  // SO_KEEPALIVE: On
	OptKeepIdle                   // TCP_KEEPIDLE: Dur
	OptKeepIntvl                  // TCP_KEEPINTVL: Dur
	OptKeepCnt                    // TCP_KEEPCNT: N
	OptNoDelay                    // TCP_NODELAY: On
	OptNonBlock                   // O_NONBLOCK: On
	OptSndBuf                     // SO_SNDBUF: N bytes (the socket keeps twice as much, as Linux)
	OptMaxSeg                     // TCP_MAXSEG: N, the largest MSS offered and used (0: no limit)
	OptUserTimeout                // TCP_USER_TIMEOUT: Dur (milliseconds; 0: the retries decide)
	OptCork                       // TCP_CORK: On, hold partial segments until uncorked
	OptV6Only                     // IPV6_V6ONLY: On, an AF_INET6 socket speaks IPv6 only (before bind)
)

var optNames = [...]string{"SO_LINGER", "SO_REUSEADDR", "SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_NODELAY", "O_NONBLOCK",
	"SO_SNDBUF", "TCP_MAXSEG", "TCP_USER_TIMEOUT", "TCP_CORK", "IPV6_V6ONLY"}

func (k OptKind) String() string {
	if int(k) < len(optNames) {
		return optNames[k]
	}
	return fmt.Sprintf("OptKind(%d)", uint8(k))
}

// Option is a socket option and its value.
type Option struct {
	Kind OptKind
	On   bool
	Dur  time.Duration
	N    int
}

func (o Option) String() string {
	switch o.Kind {
	case OptLinger:
		if !o.On {
			return "SO_LINGER {off}"
		}
		return fmt.Sprintf("SO_LINGER {on, %ds}", int(o.Dur/time.Second))
	case OptKeepIdle, OptKeepIntvl:
		return fmt.Sprintf("%s %ds", o.Kind, int(o.Dur/time.Second))
	case OptKeepCnt, OptSndBuf, OptMaxSeg:
		return fmt.Sprintf("%s %d", o.Kind, o.N)
	case OptUserTimeout:
		return fmt.Sprintf("%s %dms", o.Kind, o.Dur.Milliseconds())
	default:
		if o.On {
			return o.Kind.String() + " 1"
		}
		return o.Kind.String() + " 0"
	}
}

// Call is one application call. Which fields matter depends on Op.
type Call struct {
	Op       Op
	FD       FD
	Port     uint16         // bind; listen on an unbound socket binds it
	Backlog  int            // listen
	V6       bool           // socket: AF_INET6 (else AF_INET)
	Addr     netip.AddrPort // connect
	Data     []byte         // write
	Max      int            // read: at most this many bytes (0: all available)
	Buf      []byte         // read: copy into Buf, at most len(Buf) bytes; Result.Data is Buf[:n] (nil: a new slice). A read that blocks fills it when it completes: leave it alone until then
	Peek     bool           // read: MSG_PEEK, look without consuming
	How      Shut           // shutdown
	Option   Option         // setsockopt
	NonBlock bool           // this call does not block (MSG_DONTWAIT)
	More     bool           // write: MSG_MORE, more is coming: hold a partial segment, no PSH
}

func (c Call) String() string {
	// Built with appends, not fmt: with a trace on, every call is printed.
	if int(c.Op) >= len(opNames) {
		return c.Op.String()
	}
	b := make([]byte, 0, 48)
	b = append(b, c.Op.String()...)
	b = append(b, '(')
	if c.Op == OpSocket {
		if c.V6 {
			b = append(b, "AF_INET6"...)
		}
		return string(append(b, ')'))
	}
	b = strconv.AppendInt(b, int64(c.FD), 10)
	switch c.Op {
	case OpBind:
		b = append(b, ", :"...)
		b = strconv.AppendUint(b, uint64(c.Port), 10)
	case OpListen:
		b = append(b, ", "...)
		b = strconv.AppendInt(b, int64(c.Backlog), 10)
	case OpConnect:
		b = append(b, ", "...)
		if c.Addr.IsValid() {
			b = c.Addr.AppendTo(b)
		} else {
			b = append(b, "invalid AddrPort"...)
		}
	case OpRead:
		b = append(b, ", "...)
		n := c.Max
		if c.Buf != nil && (n == 0 || n > len(c.Buf)) {
			n = len(c.Buf)
		}
		b = strconv.AppendInt(b, int64(n), 10)
		if c.Peek {
			b = append(b, ", peek"...)
		}
	case OpWrite:
		b = append(b, ", "...)
		b = append(b, quoteData(c.Data)...)
		if c.More {
			b = append(b, ", more"...)
		}
	case OpShutdown:
		b = append(b, ", "...)
		b = append(b, c.How.String()...)
	case OpSetOption:
		b = append(b, ", "...)
		b = append(b, c.Option.String()...)
	}
	if c.NonBlock && (c.Op == OpAccept || c.Op == OpConnect || c.Op == OpRead || c.Op == OpWrite) {
		b = append(b, ", nonblock"...)
	}
	return string(append(b, ')'))
}

func quoteData(b []byte) string {
	if len(b) <= 16 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%q...(%d bytes)", string(b[:16]), len(b))
}

// Result is the outcome of a Call. A blocking call that cannot complete at
// once returns Pending; the engine reports its completion later as an
// EvCall event with the same ID.
type Result struct {
	ID      uint64
	Call    Call
	Sock    SockID // the socket the call was on
	Ret     int    // bytes, a new descriptor, or 0; -1 on error
	Err     Errno
	Data    []byte // what read returned
	NewSock SockID // accept, socket: the new socket
	Pending bool
	Started time.Duration
	At      time.Duration // completion time
}

func (r *Result) String() string {
	var b strings.Builder
	b.WriteString(r.Call.String())
	if r.Pending {
		b.WriteString(" blocks")
		return b.String()
	}
	if r.Err != OK {
		fmt.Fprintf(&b, " = -1 %s (%s)", r.Err.Name(), r.Err.Error())
	} else {
		fmt.Fprintf(&b, " = %d", r.Ret)
		if r.Call.Op == OpRead && len(r.Data) > 0 {
			b.WriteString(" " + quoteData(r.Data))
		}
	}
	if r.At > r.Started {
		fmt.Fprintf(&b, " after %v", r.At-r.Started)
	}
	return b.String()
}

// Do performs an application call at the host's current time.
func (h *Host) Do(call Call) Result {
	h.nextCallID++
	res := Result{ID: h.nextCallID, Call: call, Started: h.now, At: h.now}
	r := &res
	if call.Op == OpSocket {
		c := h.newConn()
		c.v6 = call.V6
		fd := h.allocFD(c)
		r.Ret, r.NewSock, r.Sock = int(fd), c.id, c.id
		h.emitCall(r)
		return *r
	}
	c := h.fds[call.FD]
	if c == nil {
		r.Ret, r.Err = -1, EBADF
		h.emitCall(r)
		return *r
	}
	r.Sock = c.id
	switch call.Op {
	case OpBind:
		h.doBind(c, r)
	case OpListen:
		h.doListen(c, r)
	case OpAccept:
		h.doAccept(c, r)
	case OpConnect:
		h.doConnect(c, r)
	case OpRead:
		h.doRead(c, r)
	case OpWrite:
		h.doWrite(c, r)
	case OpShutdown:
		h.doShutdown(c, r)
	case OpClose:
		h.doClose(c, r)
	case OpSetOption:
		h.doSetOption(c, r)
	default:
		r.Ret, r.Err = -1, EINVAL
	}
	if r.Pending {
		// Several calls may wait on one socket at once, as threads do: a
		// reader and a writer of one connection, say.
		p := new(Result)
		*p = *r
		c.pending = append(c.pending, p)
	}
	h.emitCall(r)
	c.checkPending() // the call may end others blocked on the socket
	c.rearm()
	if c.parent != nil {
		c.parent.checkPending()
	}
	return *r
}

func (h *Host) emitCall(r *Result) {
	if h.record {
		if len(h.resultSlab) == 0 {
			// One allocation for several calls: 4, then up to 32.
			h.resultSlabN = min(max(2*h.resultSlabN, 4), 32)
			h.resultSlab = make([]Result, h.resultSlabN)
		}
		cp := &h.resultSlab[0]
		h.resultSlab = h.resultSlab[1:]
		*cp = *r
		if r.Call.Buf != nil && len(r.Data) > 0 {
			cp.Data = append([]byte(nil), r.Data...) // the caller's buffer is reused
		}
		h.events = append(h.events, Event{Kind: EvCall, At: h.now, Sock: r.Sock, Result: cp})
	}
}

func fail(r *Result, e Errno) { r.Ret, r.Err = -1, e }

func (c *conn) blocking(r *Result) bool { return !r.Call.NonBlock && !c.nonBlock }

func (h *Host) doBind(c *conn, r *Result) {
	if c.bound || c.state != Closed {
		fail(r, EINVAL)
		return
	}
	if e := h.bindTo(c, r.Call.Port); e != OK {
		fail(r, e)
	}
}

// bindTo binds c to a port (0: an ephemeral one, as bind(0) picks it),
// refusing a port another socket holds (inet_csk_get_port).
func (h *Host) bindTo(c *conn, port uint16) Errno {
	if port == 0 {
		p, e := h.pickBindPort()
		if e != OK {
			return e
		}
		port = p
	} else if o := h.bindConflict(c, port); o != nil {
		h.note(c, "bind to port %d refused: socket %d holds it in %v", port, o.id, o.state)
		return EADDRINUSE
	}
	h.bindPort(c, port, true)
	c.laddr = h.addr
	if c.v6 {
		c.laddr = netip.IPv6Unspecified()
	}
	return OK
}

// pickBindPort is bind(0): an odd ephemeral port nobody holds.
func (h *Host) pickBindPort() (uint16, Errno) {
	p := &h.prof
	for port := int(p.EphemeralLow) | 1; port <= int(p.EphemeralHigh); port += 2 {
		if h.ports[uint16(port)] == nil {
			return uint16(port), OK
		}
	}
	return 0, EADDRINUSE
}

func (h *Host) doListen(c *conn, r *Result) {
	if c.state == Listen {
		c.lst.backlog = h.capBacklog(r.Call.Backlog)
		return
	}
	if c.state != Closed || c.hashed {
		fail(r, EINVAL)
		return
	}
	if !c.bound {
		if e := h.bindTo(c, r.Call.Port); e != OK {
			fail(r, e)
			return
		}
	} else if h.bindConflict(c, c.lport) != nil {
		// listen() runs inet_csk_get_port again: a bound port shared
		// with another listener, or with a socket lacking SO_REUSEADDR,
		// cannot listen.
		fail(r, EADDRINUSE)
		return
	}
	c.lst = &listener{backlog: h.capBacklog(r.Call.Backlog), reqs: make(map[*conn]struct{})}
	c.laddr, c.raddr, c.rport = netip.IPv4Unspecified(), netip.IPv4Unspecified(), 0
	if c.v6 {
		c.laddr, c.raddr = netip.IPv6Unspecified(), netip.IPv6Unspecified()
	}
	c.setState(Listen, CauseApp, "listen()")
	h.listens[listenKey{c.lport, c.v6}] = c
}

// capBacklog: listen() silently truncates the backlog to somaxconn; a
// negative backlog, compared as unsigned by __sys_listen, means somaxconn.
func (h *Host) capBacklog(b int) int {
	if b < 0 || b > h.prof.Somaxconn {
		return h.prof.Somaxconn
	}
	return b
}

func (h *Host) doAccept(c *conn, r *Result) {
	if c.state != Listen {
		fail(r, EINVAL)
		return
	}
	if len(c.lst.acceptq) == 0 {
		if !c.blocking(r) {
			fail(r, EAGAIN)
			return
		}
		r.Pending = true
		return
	}
	h.completeAccept(c, r)
}

func (h *Host) completeAccept(l *conn, r *Result) {
	ch := l.lst.acceptq[0]
	l.lst.acceptq = l.lst.acceptq[1:]
	if len(l.lst.acceptq) == 0 {
		l.lst.acceptq = nil
	}
	ch.inAccept = false
	ch.parent = nil
	ch.ss = ssConnected
	fd := h.allocFD(ch)
	r.Ret, r.NewSock = int(fd), ch.id
}

// doConnect follows __inet_stream_connect: what connect() answers depends on
// the socket's own state (unconnected, connecting, connected) as much as on
// the TCP state.
func (h *Host) doConnect(c *conn, r *Result) {
	switch c.ss {
	case ssConnected:
		fail(r, EISCONN)
		return
	case ssConnecting:
		switch c.state {
		case SynSent, SynRecv:
			if !c.blocking(r) {
				fail(r, EALREADY)
				return
			}
			r.Pending = true
		case Closed:
			h.connectError(c, r)
		default:
			// A non-blocking connect that has completed: this call
			// collects its result.
			c.ss = ssConnected
			r.Ret = 0
		}
		return
	}
	if c.state != Closed || c.hashed || c.tw {
		fail(r, EISCONN)
		return
	}
	dst := r.Call.Addr
	// An AF_INET socket takes IPv4 addresses only; an AF_INET6 one IPv6
	// ones, an IPv4 peer written IPv4-mapped (tcp_v6_connect hands it to
	// tcp_v4_connect), unless IPV6_V6ONLY.
	ip, mapped := dst.Addr(), false
	switch {
	case !c.v6 && !ip.Is4(), c.v6 && ip.Is4():
		fail(r, EAFNOSUPPORT)
		return
	case c.v6 && ip.Is4In6():
		if c.v6only {
			fail(r, ENETUNREACH)
			return
		}
		ip, mapped = ip.Unmap(), true
	}
	if dst.Port() == 0 || ip.IsUnspecified() {
		fail(r, EINVAL)
		return
	}
	local := h.addrFor(ip)
	if !local.IsValid() {
		fail(r, ENETUNREACH)
		h.note(c, "connect to %v: this host has no address of its family", dst)
		return
	}
	c.disconnectReset()
	c.laddr, c.mapped = local, mapped
	c.raddr, c.rport = ip, dst.Port()
	t := tuple{laddr: c.laddr, raddr: c.raddr, rport: c.rport}
	var tw *conn // a TIME_WAIT remnant of the same 4-tuple that this connection replaces
	if c.bound {
		t.lport = c.lport
		if o := h.conns[t]; o != nil {
			// tcp_twsk_unique: with a port bound by the program, a
			// TIME_WAIT that used timestamps may be taken over (they
			// tell old duplicates apart); tcp_tw_reuse widens that.
			if !(o.state == TimeWait && (o.tsOK || h.twReusable(o))) {
				fail(r, EADDRNOTAVAIL)
				h.note(c, "connect from port %d to %v refused: the 4-tuple is still in %v", c.lport, dst, o.state)
				return
			}
			tw = o
		}
	} else {
		port, o, e := h.pickEphemeral(t)
		if e != OK {
			fail(r, e)
			h.note(c, "no ephemeral port left for %v (ip_local_port_range %d-%d)", dst, h.prof.EphemeralLow, h.prof.EphemeralHigh)
			return
		}
		h.bindPort(c, port, false)
		t.lport = port
		tw = o
	}
	c.iss = h.isn(t)
	if tw != nil {
		// The new incarnation starts above anything the old one used.
		c.iss = tw.sndNxt.Add(65535 + 2)
		h.note(c, "connect() takes over the TIME_WAIT of the same 4-tuple")
		tw.finish(CauseApp, "TIME_WAIT 4-tuple reused by a new connect()")
	}
	c.tsOff = h.tsOffset(t)
	c.flow = h.flowLabel(t, 0)
	c.sndUna, c.sndNxt, c.sndMax = c.iss, c.iss, c.iss
	c.sndBase = c.iss.Add(1)
	c.pushedSeq = c.sndBase
	c.hash()
	c.ss = ssConnecting
	c.setState(SynSent, CauseApp, "connect(), snd SYN")
	h.count(ActiveOpens)
	c.sendSyn()
	if !c.blocking(r) {
		fail(r, EINPROGRESS)
		return
	}
	r.Pending = true
}

// connectError ends a failed connect: the pending error (or ECONNABORTED if
// something already took it), and the socket may connect again.
func (h *Host) connectError(c *conn, r *Result) {
	e := c.err
	if e == OK {
		e = ECONNABORTED
	}
	c.err = OK
	c.ss = ssUnconnected
	fail(r, e)
}

// disconnectReset gives a closed socket a clean slate before it connects
// again, as tcp_disconnect does.
func (c *conn) disconnectReset() {
	c.resetTransport()
	c.err = OK
	c.rcvShut, c.sndShut, c.done, c.orphan = false, false, false, false
	c.rcv.reset()
	c.snd.reset()
	c.ooo, c.sent, c.dsack = nil, nil, nil
	c.finQueued, c.finSent, c.finAckPending = false, false, false
	c.tsOK, c.sackOK, c.wsOK, c.sndWScale, c.rcvWScale = false, false, false, 0, 0
	c.rttTiming, c.retransmits, c.totalRTO, c.backoff, c.retransTotal = false, 0, 0, 0, 0
	c.hasRetransStamp, c.probesOut = false, 0
	c.dupAcks, c.inRecovery = 0, false
	c.ackPending, c.ackNow, c.quick, c.pingpong, c.ato, c.pushed = false, false, 0, false, 0, false
	c.bytesAcked, c.hasLastOOWAck = 0, false
	c.sndWnd, c.maxWnd, c.rcvWnd = 0, 0, 0
	c.maxPacketsOut, c.cwndUsageSeq, c.pktsAcked, c.inLoss = 0, 0, 0, false
	c.pushEnd, c.sndSml, c.hasProbesStamp, c.probesStamp = 0, 0, false, 0
	c.tlpOut, c.probing, c.persist = false, false, false
	c.chrono, c.chronoStat, c.noSpace, c.skbs, c.skbSize = chronoNone, [4]time.Duration{}, false, nil, 0
}

func (h *Host) doRead(c *conn, r *Result) {
	if c.state == Listen {
		fail(r, ENOTCONN)
		return
	}
	if !h.tryRead(c, r) {
		if !c.blocking(r) {
			fail(r, EAGAIN)
			return
		}
		r.Pending = true
	}
}

// tryRead follows tcp_recvmsg's order: data first, then end of stream,
// then a pending error, then a shut socket.
func (h *Host) tryRead(c *conn, r *Result) bool {
	if c.rcv.Len() > 0 {
		n := c.rcv.Len()
		if r.Call.Max > 0 {
			n = min(n, r.Call.Max)
		}
		if r.Call.Buf != nil {
			n = min(n, len(r.Call.Buf))
			r.Data = r.Call.Buf[:n]
		} else {
			r.Data = make([]byte, n)
		}
		c.rcv.read(r.Data, 0)
		r.Ret = n
		if r.Call.Peek {
			return true // MSG_PEEK leaves the bytes queued
		}
		c.rcv.consume(n)
		c.cleanupRbuf(n)
		return true
	}
	if c.done {
		r.Ret = 0
		return true
	}
	if c.err != OK {
		fail(r, c.err)
		c.err = OK
		return true
	}
	if c.rcvShut {
		r.Ret = 0
		return true
	}
	if c.appState() == Closed {
		fail(r, ENOTCONN)
		return true
	}
	return false
}

func (h *Host) doWrite(c *conn, r *Result) {
	if !h.tryWrite(c, r) {
		if !c.blocking(r) {
			if r.Ret > 0 {
				return
			}
			fail(r, EAGAIN)
			return
		}
		r.Pending = true
	}
}

// tryWrite is tcp_sendmsg: wait for the handshake, refuse a shut or failed
// connection (EPIPE, or the pending error), copy what fits the send buffer.
// It reports whether the call is complete; r.Ret counts bytes copied so far.
func (h *Host) tryWrite(c *conn, r *Result) bool {
	st := c.appState()
	if (st == SynSent || st == SynRecv) && c.err == OK {
		return false // wait for the handshake
	}
	if !inEstab(st) || c.err != OK || c.sndShut {
		// What was copied is reported; otherwise the pending error,
		// or EPIPE.
		if r.Ret == 0 {
			if c.err != OK {
				fail(r, c.err)
				c.err = OK
			} else {
				fail(r, EPIPE)
			}
		}
		return true
	}
	if r.Pending && c.skbModel() && c.wakeups == c.sleepWakeups {
		// sk_stream_wait_memory: the writer sleeps until the socket is
		// woken (by sk_stream_write_space once a third of the buffer
		// is free, or by data or a state change), then looks again.
		return false
	}
	data := r.Call.Data[r.Ret:]
	if len(data) > 0 && !c.sndNxt.LessThan(c.sndBase.Add(c.snd.Len())) && (!c.skbModel() || c.sndQueued() < c.sndBufSize()) {
		c.chronoStartT(chronoBusy) // the write queue was empty (tcp_add_write_queue_tail)
	}
	if len(data) > 0 {
		c.slowStartAfterIdleCheck()
	}
	var n int
	if c.skbModel() {
		n = c.skbWrite(data)
	} else {
		n = max(min(c.sndBufSize()-c.snd.Len(), len(data)), 0)
		c.snd.push(data[:n])
	}
	if n < len(data) {
		c.noSpace = true
		c.sleepWakeups = c.wakeups
	}
	r.Ret += n
	// tcp_push at the end of the call, or before it waits for room:
	// the data gets a PSH mark unless MSG_MORE says more is coming,
	// and that push holds a partial segment (TCP_NAGLE_CORK).
	done := r.Ret == len(r.Call.Data)
	if !done || !r.Call.More {
		c.pushEnd = c.sndBase.Add(c.snd.Len())
		c.pushedSeq = c.pushEnd // tcp_mark_push
	}
	if n > 0 {
		// Before it waits for room, tcp_sendmsg pushes with
		// TCP_NAGLE_PUSH, past a cork.
		c.moreNow, c.pushNow = done && r.Call.More, !done
		c.xmit()
		c.moreNow, c.pushNow = false, false
	}
	return done
}

func (h *Host) doShutdown(c *conn, r *Result) {
	st := c.appState()
	switch st {
	case SynSent:
		// inet_shutdown disconnects a connecting socket, whatever how
		// is; a blocked connect() then fails with ECONNRESET.
		c.abort(CauseApp, "shutdown() during connect: disconnect")
		c.ss = ssUnconnected
		return
	case Closed:
		fail(r, ENOTCONN)
		return
	case Listen:
		if r.Call.How != ShutWR {
			h.closeListenSocket(c)
		}
		return
	}
	if r.Call.How != ShutWR {
		c.rcvShut = true
	}
	if r.Call.How != ShutRD && !c.sndShut {
		c.sndShut = true
		c.sendFin(CauseApp, "shutdown("+r.Call.How.String()+"), snd FIN")
	}
	c.checkPending()
}

// sendFin is tcp_close_state plus tcp_send_fin: queue our FIN after any
// unsent data.
func (c *conn) sendFin(kind CauseKind, text string) {
	switch c.state {
	case Established, SynRecv:
		c.setState(FinWait1, kind, text)
	case CloseWait:
		c.setState(LastAck, kind, text)
	default:
		return
	}
	c.finQueued = true
	c.xmit()
}

func (h *Host) closeListenSocket(c *conn) {
	delete(h.listens, listenKey{c.lport, c.v6})
	c.setState(Closed, CauseApp, "close() on the listener")
	c.closeListener()
	h.failPending(c, EINVAL)
}

func (h *Host) doClose(c *conn, r *Result) {
	if c.closing {
		fail(r, EBADF) // a close() is already lingering
		return
	}
	h.failPending(c, EBADF)
	c.closing = true
	c.rcvShut, c.sndShut = true, true
	switch {
	case c.state == Listen:
		h.closeListenSocket(c)
	case c.tw || c.state == Closed:
		// Nothing on the wire; the remnant, if any, lives on.
	case c.rcv.Len() > 0:
		// Closing with unread data resets the connection (tcp_close).
		h.count(TCPAbortOnClose)
		h.note(c, "close() with %d unread bytes: connection reset", c.rcv.Len())
		c.rcv.reset()
		c.orphan = true
		c.sendActiveReset()
		c.finish(CauseApp, "close() with unread data, snd RST")
	case c.linger && c.lingerTime == 0:
		h.count(TCPAbortOnData)
		c.orphan = true
		c.abort(CauseApp, "close() with SO_LINGER 0, snd RST")
	case c.state == SynSent:
		c.orphan = true
		c.finish(CauseApp, "close() during connect")
	default:
		c.sendFin(CauseApp, "close(), snd FIN")
		if c.linger && c.lingerTime > 0 && lingering(c.state) {
			// close() blocks, but the descriptor is already gone from
			// the table, as in Linux: other calls on it get EBADF.
			c.lingerAt = h.now + c.lingerTime
			r.Pending = true
			h.freeFD(c)
			return
		}
	}
	h.releaseFD(c)
}

func lingering(s State) bool { return s == FinWait1 || s == Closing || s == LastAck }

// releaseFD ends close(): the descriptor goes, the connection becomes an
// orphan that the kernel finishes alone.
func (h *Host) releaseFD(c *conn) {
	h.freeFD(c)
	c.orphan = true
	c.lingerAt = never
	if c.state == FinWait2 && !c.tw {
		c.becomeRemnant(c.finTime())
	}
	c.maybeFree()
}

// onLingerTimer: SO_LINGER's time ran out while the FIN was still
// unacknowledged. Linux returns from close() and finishes in the
// background; BSD-derived stacks reset the connection.
func (c *conn) onLingerTimer() {
	var p *Result
	for i, q := range c.pending {
		if q.Call.Op == OpClose {
			p = q
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			break
		}
	}
	if p == nil {
		return
	}
	h := c.h
	if h.prof.LingerTimeoutRST && c.state != Closed && !c.tw {
		h.count(TCPAbortOnLinger)
		c.orphan = true
		c.abort(CauseTimer, "SO_LINGER timeout, snd RST")
	} else {
		h.note(c, "SO_LINGER time passed with the FIN unacknowledged: close() returns, the kernel goes on alone")
	}
	h.finishCall(p)
	h.releaseFD(c)
}

func (h *Host) doSetOption(c *conn, r *Result) {
	o := r.Call.Option
	switch o.Kind {
	case OptLinger:
		if o.Dur < 0 {
			fail(r, EINVAL)
			return
		}
		c.linger, c.lingerTime = o.On, o.Dur.Truncate(time.Second)
	case OptReuseAddr:
		c.reuseAddr = o.On
	case OptKeepAlive:
		c.keepalive = o.On
		if o.On && (c.state == Established || c.state == CloseWait || c.state == FinWait1 || c.state == FinWait2) {
			c.kaAt = h.now + c.kaIdle
		} else if !o.On {
			c.kaAt = never
		}
	case OptKeepIdle:
		if o.Dur < time.Second {
			fail(r, EINVAL)
			return
		}
		c.kaIdle = o.Dur
		if c.keepalive && c.kaAt != never {
			// Like tcp_sock_set_keepidle_locked: the idle time already
			// spent counts.
			idle := h.now - max(c.lastDataRcv, c.lastAckRcv)
			c.kaAt = h.now + max(c.kaIdle-idle, 0)
		}
	case OptKeepIntvl:
		if o.Dur < time.Second {
			fail(r, EINVAL)
			return
		}
		c.kaIntvl = o.Dur
	case OptKeepCnt:
		if o.N < 1 {
			fail(r, EINVAL)
			return
		}
		c.kaProbes = o.N
	case OptNoDelay:
		c.noDelay = o.On
		if o.On {
			// __tcp_sock_set_nodelay: TCP_NAGLE_PUSH, one push past a
			// cork too.
			c.pushNow = true
			c.xmit()
			c.pushNow = false
		}
	case OptV6Only:
		// do_ipv6_setsockopt: an AF_INET6 socket, before it is bound.
		if !c.v6 {
			fail(r, ENOPROTOOPT)
			return
		}
		if c.bound {
			fail(r, EINVAL)
			return
		}
		c.v6only = o.On
	case OptCork:
		c.cork = o.On
		if !o.On {
			// __tcp_sock_set_cork(false): what was held goes, with
			// TCP_NAGLE_PUSH when TCP_NODELAY is on.
			c.pushNow = c.noDelay
			c.xmit()
			c.pushNow = false
		}
	case OptNonBlock:
		c.nonBlock = o.On
	case OptSndBuf:
		// sock_setsockopt: capped at net.core.wmem_max, then doubled for
		// the kernel's bookkeeping, with a floor of SOCK_MIN_SNDBUF.
		// The value is taken as unsigned: a negative one is the cap.
		v := wmemMax
		if o.N >= 0 {
			v = min(o.N, wmemMax)
		}
		c.sndBuf = max(2*v, sockMinSndBuf)
		c.writeSpace()   // sock_setsockopt calls sk_write_space
		c.checkPending() // a larger buffer may let a blocked write go on
	case OptMaxSeg:
		// do_tcp_setsockopt: 0 or TCP_MIN_MSS..MAX_TCP_WINDOW.
		if o.N != 0 && (o.N < 88 || o.N > 32767) {
			fail(r, EINVAL)
			return
		}
		c.userMSS = o.N
	case OptUserTimeout:
		if o.Dur < 0 {
			fail(r, EINVAL)
			return
		}
		c.userTimeout = o.Dur.Truncate(time.Millisecond)
	default:
		fail(r, EINVAL)
	}
}

// Linux's bounds of SO_SNDBUF: net.core.wmem_max's default and
// SOCK_MIN_SNDBUF on a 64-bit kernel.
const (
	wmemMax       = 212992
	sockMinSndBuf = 4608
)

// sndBufSize is what the socket's send queue may hold: SO_SNDBUF once
// set, the profile's otherwise.
func (c *conn) sndBufSize() int {
	if c.sndBuf > 0 {
		return c.sndBuf
	}
	return c.h.prof.SndBuf
}

// advMSS is the MSS the socket offers: the profile's, lowered by
// TCP_MAXSEG (tcp_mss_clamp).
func (c *conn) advMSS() int {
	m := familyMSS(c.h.prof.MSS, c.laddr)
	if c.userMSS > 0 && c.userMSS < m {
		return c.userMSS
	}
	return m
}

// familyMSS is the profile's MSS (an IPv4 one) for a local address's
// family: an IPv6 header is 20 bytes longer (1440 on a 1500-byte MTU).
func familyMSS(mss int, local netip.Addr) int {
	if local.Is6() {
		return mss - 20
	}
	return mss
}

// checkPending completes the socket's blocked calls that can complete, in
// the order they were made.
func (c *conn) checkPending() {
	for i := 0; i < len(c.pending); {
		p := c.pending[i]
		if !c.h.tryComplete(c, p) {
			i++
			continue
		}
		c.pending = append(c.pending[:i], c.pending[i+1:]...)
		c.h.finishCall(p)
		if p.Call.Op == OpClose {
			c.h.releaseFD(c)
		}
	}
}

// failPending ends every blocked call of the socket with an error.
func (h *Host) failPending(c *conn, e Errno) {
	ps := c.pending
	c.pending = nil
	for _, p := range ps {
		fail(p, e)
		h.finishCall(p)
	}
}

// tryComplete tries to finish one blocked call.
func (h *Host) tryComplete(c *conn, p *Result) bool {
	done := false
	switch p.Call.Op {
	case OpAccept:
		switch {
		case c.state != Listen:
			fail(p, EINVAL)
			done = true
		case len(c.lst.acceptq) > 0:
			h.completeAccept(c, p)
			done = true
		}
	case OpConnect:
		switch c.state {
		case SynSent, SynRecv:
		case Closed:
			h.connectError(c, p)
			done = true
		default:
			c.ss = ssConnected
			p.Ret = 0
			done = true
		}
	case OpRead:
		done = h.tryRead(c, p)
	case OpWrite:
		done = h.tryWrite(c, p)
	case OpClose:
		if !lingering(c.state) || c.tw {
			done = true
		}
	}
	return done
}

func (h *Host) finishCall(p *Result) {
	p.Pending = false
	p.At = h.now
	h.emitCall(p)
}

// Convenience wrappers for tests and simple programs.

// Socket creates a socket.
func (h *Host) Socket() FD { return FD(h.Do(Call{Op: OpSocket}).Ret) }

// ListenOn creates a listening socket on port.
func (h *Host) ListenOn(port uint16, backlog int) (FD, Errno) {
	fd := h.Socket()
	r := h.Do(Call{Op: OpListen, FD: fd, Port: port, Backlog: backlog})
	return fd, r.Err
}

// Dial creates a socket and starts connecting; the Result is pending
// until the handshake ends.
func (h *Host) Dial(dst netip.AddrPort) (FD, Result) {
	fd := h.Socket()
	return fd, h.Do(Call{Op: OpConnect, FD: fd, Addr: dst})
}
