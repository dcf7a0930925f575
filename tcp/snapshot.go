package tcp

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// SocketInfo is one socket as `ss -tanoi` shows it.
type SocketInfo struct {
	Sock   SockID
	Parent SockID // the listener of a passive connection
	FD     FD     // -1: no descriptor (orphan, request, not yet accepted)
	State  State
	Local  netip.AddrPort
	Remote netip.AddrPort
	// RecvQ and SendQ follow ss: for a listener the accept queue length
	// and the backlog; otherwise unread bytes and bytes not yet
	// acknowledged.
	RecvQ, SendQ int
	// Timer is what ss -o names "on" (retransmission), "persist",
	// "keepalive", "timewait" or "" (none); TimerLeft is what remains and
	// Retransmits the retries so far.
	Timer        string
	TimerLeft    time.Duration
	Retransmits  int
	RTO, RTT     time.Duration
	Cwnd         int // segments
	MSS          int
	RetransTotal int
	SndWnd       uint32
	RcvWnd       uint32
	Orphan       bool // closed by its application, finishing in the kernel
	V6Only       bool // an AF_INET6 socket with IPV6_V6ONLY
	Accepting    bool // complete, waiting in the accept queue
	SynQueue     int  // listener: half-open requests
}

// Snapshot lists the sockets of the host that ss would show: listeners,
// connections in every state but CLOSED, and TIME_WAIT remnants, in
// creation order.
func (h *Host) Snapshot() []SocketInfo {
	// Listeners are not in the connection table, and each connection is
	// there once, under its own 4-tuple.
	// Sorted as pointers: swapping the large SocketInfo values made the
	// sort most of an until's cost on a host with thousands of sockets.
	cs := make([]*conn, 0, len(h.listens)+len(h.conns))
	for _, c := range h.listens {
		cs = append(cs, c)
	}
	for _, c := range h.conns {
		if c.state != Closed {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, func(a, b *conn) int { return cmp.Compare(a.id, b.id) })
	out := make([]SocketInfo, len(cs))
	for i, c := range cs {
		out[i] = c.info()
	}
	return out
}

func (c *conn) info() SocketInfo {
	h := c.h
	s := SocketInfo{Sock: c.id, Parent: c.parentSk, FD: c.fd, State: c.state,
		Local: c.localAP(), Remote: c.remoteAP(), Orphan: c.orphan && c.fd < 0 && !c.tw, V6Only: c.v6only,
		Accepting: c.inAccept, RTO: c.rto, RTT: c.srtt, MSS: c.mss, RetransTotal: c.retransTotal,
		SndWnd: c.sndWnd, RcvWnd: c.rcvWnd, Retransmits: c.retransmits}
	if c.mss > 0 {
		s.Cwnd = c.cwnd / c.mss
	}
	if c.state == Listen {
		s.RecvQ = len(c.lst.acceptq)
		s.SendQ = c.lst.backlog
		s.SynQueue = len(c.lst.reqs)
		any := netip.IPv4Unspecified()
		if c.v6 {
			any = netip.IPv6Unspecified()
		}
		s.Remote = netip.AddrPortFrom(any, 0)
		s.Local = netip.AddrPortFrom(any, c.lport)
		return s
	}
	if c.req {
		// A request sock has no queues; inet_diag reports 0 and 0.
		s.Timer, s.TimerLeft, s.Retransmits = "on", c.rtxAt-h.now, c.numTimeout
		return s
	}
	s.RecvQ = c.rcv.Len()
	s.SendQ = int(c.sndBase.Add(c.snd.Len()).Diff(c.sndUna))
	if c.finQueued && !c.finAcked() {
		s.SendQ++ // tcp_send_fin counts the FIN in write_seq, so ss shows it
	}
	if s.SendQ < 0 {
		s.SendQ = 0
	}
	switch {
	case c.tw:
		s.Timer, s.TimerLeft = "timewait", c.closeAt-h.now
	case c.rtxAt != never && c.persist:
		s.Timer, s.TimerLeft = "persist", c.rtxAt-h.now
	case c.rtxAt != never:
		s.Timer, s.TimerLeft = "on", c.rtxAt-h.now
	case c.kaAt != never:
		s.Timer, s.TimerLeft = "keepalive", c.kaAt-h.now
	}
	return s
}
