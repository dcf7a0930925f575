package tcp

import (
	"encoding/binary"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// mix64 is a 64-bit finalizer (splitmix64); keyed hashes below feed it the
// secret and the 4-tuple one word at a time.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func tupleHash(key uint64, t tuple, extra uint64) uint64 {
	if t.laddr.Is6() {
		// IPv6 (secure_tcpv6_seq): the whole addresses.
		la, ra := t.laddr.As16(), t.raddr.As16()
		h := key
		for i := 0; i < 16; i += 8 {
			h = mix64(h ^ binary.BigEndian.Uint64(la[i:]))
			h = mix64(h ^ binary.BigEndian.Uint64(ra[i:]))
		}
		return mix64(h ^ uint64(t.lport)<<16 ^ uint64(t.rport) ^ extra<<32)
	}
	la, ra := t.laddr.As4(), t.raddr.As4()
	w1 := uint64(la[0])<<24 | uint64(la[1])<<16 | uint64(la[2])<<8 | uint64(la[3])
	w2 := uint64(ra[0])<<24 | uint64(ra[1])<<16 | uint64(ra[2])<<8 | uint64(ra[3])
	h := mix64(key ^ w1<<32 ^ w2)
	h = mix64(h ^ uint64(t.lport)<<16 ^ uint64(t.rport) ^ extra<<32)
	return h
}

// isn picks an initial sequence number for a connection.
func (h *Host) isn(t tuple) wire.Seq {
	if h.prof.ISN == ISNPredictable {
		// 4.4BSD: tcp_iss grows by 64000 every half second (the slow
		// timer) and by 64000 for every connection.
		ticks := uint32(h.now / (500 * time.Millisecond))
		if tick := time.Duration(ticks) * 500 * time.Millisecond; tick > h.bsdISSTick {
			h.bsdISS += 64000 * uint32((tick-h.bsdISSTick)/(500*time.Millisecond))
			h.bsdISSTick = tick
		}
		isn := h.bsdISS
		h.bsdISS += 64000
		return wire.Seq(isn)
	}
	// RFC 6528: ISN = M + F(4-tuple, secret), M a clock ticking every 64 ns
	// (Linux's secure_tcp_seq).
	return wire.Seq(uint32(tupleHash(h.key[0], t, 0)) + uint32(h.now.Nanoseconds()>>6))
}

// flowLabel is an IPv6 connection's flow label: Linux's auto_flowlabels
// fold the socket's transmit hash into 20 bits, never 0 (ip6_make_flowlabel);
// the hash is drawn again after a retransmission timeout (sk_rethink_txhash),
// rehash counting how many times.
func (h *Host) flowLabel(t tuple, rehash uint64) uint32 {
	if !t.laddr.Is6() {
		return 0
	}
	if l := uint32(tupleHash(h.key[1], t, 11+rehash)) & 0xfffff; l != 0 {
		return l
	}
	return 1
}

// tsOffset is the per-connection timestamp offset (secure_tcp_ts_off), so
// that timestamps do not reveal the host's uptime.
func (h *Host) tsOffset(t tuple) uint32 {
	return uint32(tupleHash(h.key[1], t, 1))
}

// SYN cookies. The layout follows the idea of Linux's
// __cookie_v4_init_sequence: a keyed hash of the 4-tuple, the peer's ISN, a
// one-minute counter in the top 8 bits and a second hash plus an MSS index
// in the low 24 bits. With timestamps, the low 6 bits of our TSval carry the
// window scale and SACK-permitted that the cookie has no room for.
const (
	synCookiePeriod = 60 * time.Second
	synCookieMaxAge = 2
	synCookieValid  = synCookiePeriod * synCookieMaxAge
	cookieBits      = 24
	cookieMask      = 1<<cookieBits - 1
	tsOptBits       = 6
	tsOptMask       = 1<<tsOptBits - 1
	tsWScaleNone    = 0xf
	tsSACKBit       = 1 << 4
)

// msstab holds the MSS values a cookie can encode (Linux's msstab), and
// msstab6 those of an IPv6 cookie (syncookies.c in net/ipv6: MTUs 1280,
// 1480, 1500 and 9000 less 60 bytes of headers).
var (
	msstab  = [...]uint16{536, 1300, 1440, 1460}
	msstab6 = [...]uint16{1220, 1420, 1440, 8940}
)

// cookieMSS is the table of t's family.
func cookieMSS(t tuple) []uint16 {
	if t.laddr.Is6() {
		return msstab6[:]
	}
	return msstab[:]
}

func (h *Host) cookieCounter() uint32 { return uint32(h.now / synCookiePeriod) }

func (h *Host) cookieSeq(t tuple, peerISN wire.Seq, count uint32, mssIdx int) wire.Seq {
	h1 := uint32(tupleHash(h.key[2], t, 0))
	h2 := uint32(tupleHash(h.key[3], t, uint64(count)))
	return wire.Seq(h1 + uint32(peerISN) + count<<cookieBits + (h2+uint32(mssIdx))&cookieMask)
}

// cookieCheck returns the MSS index a cookie carries, or -1.
func (h *Host) cookieCheck(t tuple, peerISN, cookie wire.Seq) int {
	h1 := uint32(tupleHash(h.key[2], t, 0))
	v := uint32(cookie) - h1 - uint32(peerISN)
	count := v >> cookieBits
	now := h.cookieCounter()
	if uint32(now-count)&0xff >= synCookieMaxAge {
		return -1
	}
	h2 := uint32(tupleHash(h.key[3], t, uint64(now-(uint32(now-count)&0xff))))
	idx := int((v - h2) & cookieMask)
	if idx >= len(cookieMSS(t)) {
		return -1
	}
	return idx
}

// sendCookieSynAck answers a SYN without keeping any state.
func (c *conn) sendCookieSynAck(seg *wire.Segment, t tuple) {
	h := c.h
	p := &h.prof
	idx := 0
	for i, m := range cookieMSS(t) {
		if seg.Options.HasMSS && m <= seg.Options.MSS {
			idx = i
		}
	}
	iss := h.cookieSeq(t, seg.Seq, h.cookieCounter(), idx)
	s := wire.Segment{Src: t.laddr, Dst: t.raddr, SrcPort: t.lport, DstPort: t.rport,
		Seq: iss, Ack: seg.Seq.Add(1), Flags: wire.SYN | wire.ACK, TTL: p.TTL, DF: !t.laddr.Is6(),
		Window: uint16(min(p.RcvWindow, 65535)), FlowLabel: h.flowLabel(t, 0)}
	// The SYN-ACK offers our own MSS; the cookie remembers the peer's.
	s.Options = wire.Options{HasMSS: true, MSS: uint16(familyMSS(p.MSS, t.laddr))}
	if p.Timestamps && seg.Options.HasTimestamps {
		// Without timestamps a cookie cannot remember window scaling or
		// SACK, so they are only offered with timestamps.
		opts := uint32(tsWScaleNone)
		if p.WScale >= 0 && seg.Options.HasWScale {
			opts = uint32(min(seg.Options.WScale, 14))
			s.Options.HasWScale, s.Options.WScale = true, uint8(p.WScale)
		}
		if p.SACK && seg.Options.SACKPermitted {
			opts |= tsSACKBit
			s.Options.SACKPermitted = true
		}
		now := uint32(h.now/time.Millisecond) + h.tsOffset(t)
		ts := now&^tsOptMask | opts
		if int32(ts-now) > 0 {
			ts -= 1 << tsOptBits
		}
		s.Options.HasTimestamps, s.Options.TSVal, s.Options.TSEcr = true, ts, seg.Options.TSVal
	}
	h.send(s, true)
	if h.record {
		h.note(c, "SYN cookie sent to %v:%d (no state kept)", t.raddr, t.rport)
	}
}

// cookieAck is cookie_v4_check: an ACK for a listener that may complete a
// handshake answered with a cookie. It reports whether the ACK was consumed.
func (c *conn) cookieAck(seg *wire.Segment) bool {
	h := c.h
	p := &h.prof
	t := tuple{laddr: seg.Dst, raddr: seg.Src, lport: seg.DstPort, rport: seg.SrcPort}
	idx := h.cookieCheck(t, seg.Seq.Add(-1), seg.Ack.Add(-1))
	if idx < 0 {
		h.count(SyncookiesFailed)
		return false
	}
	h.count(SyncookiesRecv)
	var peer wire.Options
	peer.HasMSS, peer.MSS = true, cookieMSS(t)[idx]
	tsOK := seg.Options.HasTimestamps && p.Timestamps
	if tsOK {
		opts := seg.Options.TSEcr & tsOptMask
		peer.HasTimestamps, peer.TSVal = true, seg.Options.TSVal
		if w := opts & 0xf; w != tsWScaleNone && p.WScale >= 0 {
			peer.HasWScale, peer.WScale = true, uint8(w)
		}
		peer.SACKPermitted = opts&tsSACKBit != 0
	}
	if c.lst.acceptFull() {
		h.count(ListenOverflows)
		c.listenDrop("accept queue full: cookie ACK dropped")
		return true
	}
	if h.conns[t] != nil {
		// Another socket already has this 4-tuple (a request made after
		// the cookie): Linux's inet_ehash_insert finds the duplicate and
		// builds no child.
		h.note(c, "cookie ACK for a 4-tuple already in use: dropped")
		return true
	}
	ch := c.newChild(t, seg.Seq.Add(-1), seg.Ack.Add(-1), &wire.Segment{Options: peer})
	ch.sndNxt, ch.sndMax = ch.iss.Add(1), ch.iss.Add(1)
	ch.rcvWnd = uint32(min(p.RcvWindow, 65535))
	ch.setState(SynRecv, CauseSegment, "rcv ACK carrying a valid SYN cookie")
	h.count(PassiveOpens)
	ch.rcvStateProcess(seg)
	if ch.state != Closed {
		ch.inAccept = true
		c.lst.acceptq = append(c.lst.acceptq, ch)
		c.wakeups++
	}
	ch.rearm()
	c.checkPending()
	return true
}

// pickEphemeral is __inet_hash_connect: a per-destination starting offset
// (keyed hash plus a perturbation table), even ports first, a port usable
// if no bind()-bound socket holds it and the 4-tuple is free, or held by a
// TIME_WAIT that tcp_tw_reuse lets connect() take over (returned).
func (h *Host) pickEphemeral(dst tuple) (uint16, *conn, Errno) {
	p := &h.prof
	low, high := int(p.EphemeralLow), int(p.EphemeralHigh)
	remaining := high - low + 1
	cache := !h.noPortCache // the test knob: no cache, every search in full
	if cache {
		scan := portScan{dst: dst, gen: h.portsGen, now: h.now, low: low, high: high, reuse: p.TwReuse}
		if h.exhausted.portScan != scan {
			h.exhausted = exhaustedScan{portScan: scan}
		}
	}
	hv := tupleHash(h.key[3], tuple{laddr: dst.laddr, raddr: dst.raddr, rport: dst.rport}, 7)
	idx := int(hv & 0xff)
	offset := int((uint32(hv>>8) + uint32(h.perturb[idx])) % uint32(remaining))
	offset &^= 1
	for parity := 0; parity < 2; parity++ {
		if cache && h.exhausted.parity[parity] {
			continue // no port of this parity was freed since its last scan
		}
		for i := 0; i < remaining; i += 2 {
			port := low + (offset+i+parity)%remaining
			if b := h.ports[uint16(port)]; b != nil && b.explicit > 0 {
				continue
			}
			t := dst
			t.lport = uint16(port)
			o := h.conns[t]
			if o != nil && !(o.state == TimeWait && h.twReusable(o)) {
				continue
			}
			h.perturb[idx] += uint16(i + 2)
			return uint16(port), o, OK
		}
		if cache {
			h.exhausted.parity[parity] = true
		}
	}
	return 0, nil, EADDRNOTAVAIL
}

// portScan is what an ephemeral port search depends on besides the ports
// in use: while it is the same, a parity found full stays full (taking a
// port never frees one).
type portScan struct {
	dst       tuple
	gen       uint64
	now       time.Duration
	low, high int
	reuse     int
}

// exhaustedScan says which parities of the range a search found full.
type exhaustedScan struct {
	portScan
	parity [2]bool
}

// twReusable is tcp_twsk_unique: with tcp_tw_reuse a TIME_WAIT 4-tuple may
// be reused by connect() if timestamps were in use and a second has passed.
func (h *Host) twReusable(o *conn) bool {
	switch h.prof.TwReuse {
	case 0:
		return false
	case 2:
		if !o.laddr.IsLoopback() && !o.raddr.IsLoopback() {
			return false
		}
	}
	return o.tsOK && h.now-o.tsRecentAt >= time.Second
}
