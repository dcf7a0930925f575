package tcp

import "time"

// Status is what a program can learn of its socket without moving data:
// what poll(), ioctl() and getsockopt() answer. It is not a call: asking
// changes nothing and is not traced.
type Status struct {
	State    State // the state the descriptor's owner sees (a TIME_WAIT remnant reads CLOSED)
	Listen   bool
	AcceptQ  int   // a listener's connections ready for accept()
	Readable int   // bytes a read would return (SIOCINQ, FIONREAD)
	RcvShut  bool  // RCV_SHUTDOWN: the peer's FIN was received, or shutdown(SHUT_RD)
	SndShut  bool  // SEND_SHUTDOWN
	Unacked  int   // bytes written and not yet acknowledged (SIOCOUTQ)
	Unsent   int   // bytes written and not yet sent (SIOCOUTQNSD)
	Room     int   // the send buffer left: SO_SNDBUF less what the queue is charged (poll writes when a third is free)
	SndBuf   int   // SO_SNDBUF
	Err      Errno // sk_err, the error the next call reports (SO_ERROR)
	MSS      int   // TCP_MAXSEG: the sending MSS (the limit set, on a socket not yet connected)
	SndMSS   int   // tcpi_snd_mss: mss_cache
	AdvMSS   int   // the MSS the socket offers (tcpi_advmss)
	Options  int   // TCPI_OPT_* bits: timestamps 1, SACK 2, window scale 4
	Info     SocketInfo
	// Wakeups counts what wakes the socket's waiters (data, a FIN, a
	// state change, a connection to accept, room to write after a full
	// buffer): an edge-triggered epoll reports a socket once per change.
	Wakeups uint64
	// Times since the last data sent, the last data received and the
	// last ACK received (tcpi_last_*); -1 when there was none.
	SinceDataSent, SinceDataRecv, SinceAckRecv time.Duration
	// Busy, RwndLimited and SndbufLimited are tcpi_busy_time,
	// tcpi_rwnd_limited and tcpi_sndbuf_limited: the time spent sending,
	// and the parts of it stalled by the peer's window or the send buffer.
	Busy, RwndLimited, SndbufLimited time.Duration
	// Congestion: ssthresh in segments (TCP_INFINITE_SSTHRESH while
	// unset), the tcp_ca_state (0 open, 1 disorder, 3 recovery, 4 loss),
	// segments in flight, zero-window probes sent and the backoff.
	Ssthresh, CAState, PacketsOut, Probes, Backoff int
	RTTVar                                         time.Duration
}

// Status reports a socket of the application by its descriptor.
func (h *Host) Status(fd FD) (Status, Errno) {
	c := h.fds[fd]
	if c == nil {
		return Status{}, EBADF
	}
	st := Status{State: c.appState(), Listen: c.state == Listen && c.lst != nil, RcvShut: c.rcvShut,
		SndShut: c.sndShut, Err: c.err, SndBuf: c.sndBufSize(), AdvMSS: c.advMSS(), Info: c.info(),
		SinceDataSent: -1, SinceDataRecv: -1, SinceAckRecv: -1, Wakeups: c.wakeups}
	if st.Listen {
		st.AcceptQ = len(c.lst.acceptq)
	}
	if !c.tw {
		st.Readable = c.rcv.Len()
		st.Room = max(c.sndBufSize()-c.sndQueued(), 0)
	}
	if !c.tw && c.state != SynSent && c.state != SynRecv {
		// SIOCOUTQ and SIOCOUTQNSD count from write_seq, which a queued
		// FIN advances; both are 0 before the connection is made.
		writeSeq := c.sndBase.Add(c.snd.Len())
		if c.finQueued {
			writeSeq = writeSeq.Add(1)
		}
		st.Unacked = max(int(writeSeq.Diff(c.sndUna)), 0)
		st.Unsent = max(int(writeSeq.Diff(c.sndNxt)), 0)
	}
	// tcp_getsockopt: mss_cache (tcp_init_sock's TCP_MSS_DEFAULT before
	// a connection has one), or the limit set on a closed or listening
	// socket.
	st.MSS, st.SndMSS = c.mss, c.mss
	switch {
	case c.userMSS > 0 && (c.state == Closed || c.state == Listen):
		st.MSS = c.userMSS
	case c.state == SynSent:
		// tcp_connect_init's mss_cache: the MSS offered, less the
		// timestamps option when they are on.
		st.MSS = c.advMSS()
		if c.h.prof.Timestamps {
			st.MSS -= 12
		}
		st.SndMSS = st.MSS
	}
	if c.tsOK {
		st.Options |= 1
	}
	if c.sackOK {
		st.Options |= 2
	}
	if c.wsOK {
		st.Options |= 4
	}
	st.Busy, st.RwndLimited, st.SndbufLimited = c.chronoTimes()
	st.Ssthresh = 0x7fffffff
	if c.ssthresh < 1<<30 && c.mss > 0 {
		st.Ssthresh = c.ssthresh / c.mss
	}
	switch {
	case c.inLoss && !c.inRecovery:
		st.CAState = 4 // TCP_CA_Loss: after a retransmission timeout
	case c.inRecovery:
		st.CAState = 3 // TCP_CA_Recovery
	case c.dupAcks > 0:
		st.CAState = 1 // TCP_CA_Disorder
	}
	st.PacketsOut, st.Probes, st.Backoff, st.RTTVar = len(c.sent), c.probesOut, c.backoff, c.rttvar
	if c.hasLrcv {
		st.SinceDataRecv = h.now - c.lrcvAt
	}
	if c.dataSent {
		st.SinceDataSent = h.now - c.lastDataSent
	}
	if c.state != Closed && c.state != Listen && c.state != SynSent {
		st.SinceAckRecv = h.now - c.lastAckRcv
	}
	return st, OK
}

// TakeError returns the socket's pending error and clears it, as
// getsockopt(SO_ERROR) does (sock_error).
func (h *Host) TakeError(fd FD) (Errno, Errno) {
	c := h.fds[fd]
	if c == nil {
		return OK, EBADF
	}
	e := c.err
	c.err = OK
	return e, OK
}
