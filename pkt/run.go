package pkt

import (
	"encoding/hex"
	"fmt"
	"golang.org/x/sys/unix"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Status is how a script run ended.
type Status uint8

const (
	Pass        Status = iota
	Fail               // an event did not happen as the script says
	Unsupported        // the script uses something this backend cannot do
)

func (s Status) String() string {
	switch s {
	case Pass:
		return "pass"
	case Fail:
		return "FAIL"
	}
	return "unsupported"
}

// Result is the outcome of a script run.
type Result struct {
	File   string
	Status Status
	// Line is the script line where the run failed or stopped, Msg what
	// went wrong, worded as packetdrill words it ("error handling packet:
	// live packet field tcp_ack: expected: 1 (0x1) vs actual: 2 (0x2)").
	Line int
	Msg  string
	// Stack is what the local TCP stack was doing then: its connection's
	// state and what caused it.
	Stack string
	// Ignored lists the shell commands the backend did not interpret.
	Ignored []string
	// Late lists the events (not expected packets) that started later
	// than the tolerance allows: on the kernel, the harness's latency.
	Late []Late
	// End is the script time at which the run ended.
	End time.Duration
	// Hosts are the run's two hosts, for the views (pcap, ladder).
	Hosts []trace.Host
}

// Late is an event that started late, and by how much.
type Late struct {
	Line int
	By   time.Duration
}

// Error is the packetdrill-style line of a failed or unsupported run.
func (r *Result) Error() string {
	if r.Status == Pass {
		return ""
	}
	return fmt.Sprintf("%s:%d: %s", r.File, r.Line, r.Msg)
}

// Options for a run.
type Options struct {
	// Tolerance overrides the script's --tolerance_usecs (packetdrill's
	// default is 4 ms, and 12.5% of the time since the previous event,
	// whichever is larger).
	Tolerance time.Duration
	// Sink receives every event of the run, as a scenario run's.
	Sink trace.Sink
	// Seed fixes the engine's random choices.
	Seed uint64
	// Dir is where a command's relative paths start (the script's
	// directory); "" is the current directory.
	Dir string
	// NoFiles: shell lines that name a file are not read (a script that
	// came from a web page must not read the server's files).
	NoFiles bool
	// MaxEvents stops a run after this many events (0: DefaultMaxEvents),
	// so that no script can run without end.
	MaxEvents int
	// MaxBytes stops a run whose events hold more than this many bytes,
	// counted as scenario runs count them (0: no limit but MaxEvents).
	MaxBytes int64
}

// DefaultMaxEvents bounds a run: a bulk transfer of a few hundred MB.
const DefaultMaxEvents = 2_000_000

// Defaults of packetdrill's configuration.
const (
	defaultTolerance    = 4 * time.Millisecond
	defaultTolerancePct = 12.5
	defaultPort         = 8080 // --bind_port, --connect_port
	firstRemotePort     = 40000
	// sniffTimeout is how long after its time an expected packet may
	// still come (packetdrill waits 2 s more than the event's time).
	sniffTimeout = 2 * time.Second
)

// settings are what the script's options set.
type settings struct {
	local, remote netip.Addr
	tolerance     time.Duration
	tolerancePct  float64
	strict        bool
	tsTick        time.Duration // --tcp_ts_tick_usecs: check outbound TS val
	bindPort      uint16
	connectPort   uint16
}

func readSettings(s *Script, opt Options) (settings, *Result) {
	st := settings{
		local:        netip.MustParseAddr("192.168.0.1"),
		remote:       netip.MustParseAddr("192.0.2.1"),
		tolerance:    defaultTolerance,
		tolerancePct: defaultTolerancePct,
		bindPort:     defaultPort,
		connectPort:  defaultPort,
	}
	for _, o := range s.Options {
		bad := func(why string) (settings, *Result) {
			return st, &Result{File: s.File, Status: Fail, Line: o.Pos.Line, Msg: fmt.Sprintf("option --%s=%s: %s", o.Name, o.Value, why)}
		}
		num := func() (int64, bool) {
			v, err := strconv.ParseInt(o.Value, 10, 64)
			return v, err == nil && v >= 0
		}
		switch o.Name {
		case "local_ip", "remote_ip":
			a, err := netip.ParseAddr(o.Value)
			if err != nil || !a.Is4() {
				return bad("not an IPv4 address (IPv6 scripts are not supported yet)")
			}
			if o.Name == "local_ip" {
				st.local = a
			} else {
				st.remote = a
			}
		case "tolerance_usecs", "tcp_ts_tick_usecs":
			v, ok := num()
			if !ok {
				return bad("not a number of microseconds")
			}
			if o.Name == "tolerance_usecs" {
				st.tolerance = time.Duration(v) * time.Microsecond
			} else {
				st.tsTick = time.Duration(v) * time.Microsecond
			}
		case "tolerance_percent":
			v, err := strconv.ParseFloat(o.Value, 64)
			if err != nil || v < 0 {
				return bad("not a percentage")
			}
			st.tolerancePct = v
		case "strict_segments":
			st.strict = true
		case "bind_port", "connect_port":
			v, ok := num()
			if !ok || v == 0 || v > 65535 {
				return bad("not a port")
			}
			if o.Name == "bind_port" {
				st.bindPort = uint16(v)
			} else {
				st.connectPort = uint16(v)
			}
		case "ip_version":
			if o.Value != "ipv4" {
				return st, &Result{File: s.File, Status: Unsupported, Line: o.Pos.Line, Msg: "--ip_version=" + o.Value + ": only ipv4 is supported yet"}
			}
		case "mss", "mtu", "speed", "netmask_ip", "gateway_ip", "verbose", "debug", "non_fatal", "dry_run":
			// The engine has no device: these change nothing it models.
		default:
			return st, &Result{File: s.File, Status: Unsupported, Line: o.Pos.Line, Msg: "option --" + o.Name + " is not supported"}
		}
	}
	if opt.Tolerance > 0 {
		st.tolerance = opt.Tolerance
	}
	return st, nil
}

// stop is a run's end before the script's: a failure or something the
// backend cannot do.
type stop struct {
	status Status
	line   int
	msg    string
}

func (s *stop) Error() string { return s.msg }

func failAt(line int, format string, a ...any) *stop {
	return &stop{status: Fail, line: line, msg: fmt.Sprintf(format, a...)}
}

func unsupportedAt(line int, format string, a ...any) *stop {
	return &stop{status: Unsupported, line: line, msg: fmt.Sprintf(format, a...)}
}

// conn is the script's view of one connection: the 4-tuple as the local
// stack sees it, and how script sequence numbers and timestamps map to
// live ones. The remote side's numbers are the script's own, counted, as
// packetdrill counts them, from the sequence number of its SYN (usually
// 0): after "S. 123:123(0)", "1:1(0)" is sequence number 124.
type conn struct {
	local, remote netip.AddrPort
	remoteISN     uint32
	// The local ISN in the script (0) and live, once the stack's SYN or
	// SYN-ACK was seen.
	scriptISN, liveISN uint32
	haveISN            bool
	// Outbound TS vals: script value -> live value, and the first pair
	// (packetdrill's baseline for mapping).
	tsVals                     map[uint32]uint32
	firstScriptTS, firstLiveTS uint32
	haveTS                     bool
}

// toLive maps a local-side script sequence number (an ack, a SACK
// block) to the live one.
func (c *conn) toLive(v uint32) uint32 {
	if !c.haveISN {
		return v
	}
	return v - c.scriptISN + c.liveISN
}

// toScript maps a live local sequence number to the script's.
func (c *conn) toScript(v uint32) uint32 {
	if !c.haveISN {
		return v
	}
	return v - c.liveISN + c.scriptISN
}

// sniffed is an outbound packet the stack sent, with its time.
type sniffed struct {
	at  time.Duration
	seg wire.Segment
}

// verifyTime is packetdrill's verify_time: actual within the expected
// time (or range) give or take the tolerance, which grows to a share of
// the time since the previous event.
func (st *settings) verifyTime(kind TimeKind, want, wantEnd, got, last time.Duration, what string) string {
	if kind == TimeAny {
		return ""
	}
	tol := st.tolerance
	if d := time.Duration(st.tolerancePct / 100 * float64(want-last)); d > tol {
		tol = d
	}
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 6, 64) }
	if kind == TimeAbsRange || kind == TimeRelRange {
		if got < want-tol || got > wantEnd+tol {
			return fmt.Sprintf("timing error: expected %s in time range %s~%s sec but happened at %s sec", what, secs(want), secs(wantEnd), secs(got))
		}
		return ""
	}
	if got < want-tol || got > want+tol {
		return fmt.Sprintf("timing error: expected %s at %s sec but happened at %s sec; tolerance %s sec", what, secs(want), secs(got), secs(tol))
	}
	return ""
}

// fieldErr is packetdrill's wording of a packet field that differs.
func fieldErr(name string, want, got uint64) string {
	return fmt.Sprintf("live packet field %s: expected: %d (%#x) vs actual: %d (%#x)", name, want, want, got, got)
}

// checkOutbound compares a live outbound segment (payloads of several
// aggregated) with the script's packet, after mapping the live numbers
// to the script's. It returns packetdrill's message for the first field
// that differs, or "".
func (st *settings) checkOutbound(c *conn, want *Packet, live *wire.Segment, payload int, at time.Duration) string {
	bit := func(f wire.Flags) uint64 {
		if live.Flags&f != 0 {
			return 1
		}
		return 0
	}
	wbit := func(f wire.Flags) uint64 {
		if want.Flags&f != 0 {
			return 1
		}
		return 0
	}
	flags := []struct {
		name string
		f    wire.Flags
	}{{"tcp_fin", wire.FIN}, {"tcp_syn", wire.SYN}, {"tcp_rst", wire.RST}, {"tcp_psh", wire.PSH},
		{"tcp_ack", wire.ACK}, {"tcp_urg", wire.URG}, {"tcp_ece", wire.ECE}, {"tcp_cwr", wire.CWR}}
	for _, f := range flags {
		if wbit(f.f) != bit(f.f) {
			return fieldErr(f.name, wbit(f.f), bit(f.f))
		}
	}
	if seq := c.toScript(uint32(live.Seq)); seq != want.Seq {
		return fieldErr("tcp_seq", uint64(want.Seq), uint64(seq))
	}
	// The ack is checked without an ACK flag too (the script's is 0).
	// As packetdrill, a SYN-ACK's ack is the live one (the remote's ISN
	// offset is 0 for a SYN); later ones count from the remote's ISN.
	off := c.remoteISN
	if live.Flags&wire.SYN != 0 {
		off = 0
	}
	if ack := uint32(live.Ack) - off; ack != want.Ack {
		return fieldErr("tcp_ack_seq", uint64(want.Ack), uint64(ack))
	}
	if want.Win >= 0 && int(live.Window) != want.Win {
		return fieldErr("tcp_window", uint64(want.Win), uint64(live.Window))
	}
	if want.Urg >= 0 && want.Urg != 0 {
		return unsupportedField("urgent pointer")
	}
	if payload != want.Len {
		return fmt.Sprintf("live packet payload: expected %d bytes vs actual %d bytes", want.Len, payload)
	}
	if want.OptionsAny {
		return ""
	}
	got := liveOptions(live)
	sameKinds := len(got) == len(want.Options)
	for i := 0; sameKinds && i < len(got); i++ {
		sameKinds = want.Options[i].Kind == got[i].Kind
	}
	if !sameKinds {
		return fmt.Sprintf("bad outbound TCP options: expected <%s> vs actual <%s>", optionList(want.Options), optionList(got))
	}
	for i := range got {
		w, g := want.Options[i], got[i]
		switch w.Kind {
		case "TS":
			// TS val is checked only with --tcp_ts_tick_usecs, in ticks
			// from the connection's first; ecr is not checked.
			if st.tsTick > 0 && c.haveTS {
				val := g.Val - c.firstLiveTS + c.firstScriptTS
				d := int64(int32(val - w.Val))
				if d < 0 {
					d = -d
				}
				// The tolerance grows with the time since the start
				// of the script, not since the previous event.
				tol := max(st.tolerance, time.Duration(st.tolerancePct/100*float64(at)))
				if time.Duration(d)*st.tsTick > tol {
					return fmt.Sprintf("bad outbound TCP timestamp value, tolerance %d", tol.Microseconds())
				}
			}
		case "sack":
			// SACK blocks of an outbound packet are in the remote's
			// sequence space: the script's own, from its ISN.
			gs := TCPOption{Kind: "sack"}
			for _, b := range g.Blocks {
				gs.Blocks = append(gs.Blocks, [2]uint32{b[0] - c.remoteISN, b[1] - c.remoteISN})
			}
			g = gs
			if len(w.Blocks) != len(g.Blocks) {
				return fmt.Sprintf("bad value in outbound TCP option (sack): expected <%s> vs actual <%s>", w, g)
			}
			for j := range w.Blocks {
				if w.Blocks[j] != g.Blocks[j] {
					return fmt.Sprintf("bad value in outbound TCP option (sack): expected <%s> vs actual <%s>", w, g)
				}
			}
		default:
			if w.Val != g.Val {
				return fmt.Sprintf("bad value in outbound TCP option (%s): expected <%s> vs actual <%s>", w.Kind, w, g)
			}
		}
	}
	return ""
}

func unsupportedField(what string) string { return "checking the " + what + " is not supported" }

func optionList(o []TCPOption) string {
	s := make([]string, len(o))
	for i := range o {
		s[i] = o[i].String()
	}
	return strings.Join(s, ",")
}

// liveOptions lists a live segment's options as a script writes them, in
// the order they are on the wire.
func liveOptions(s *wire.Segment) []TCPOption {
	o := &s.Options
	var out []TCPOption
	raw := 0
	for _, k := range o.Layout() {
		switch k {
		case wire.OptEOL:
			out = append(out, TCPOption{Kind: "eol"})
		case wire.OptNOP:
			out = append(out, TCPOption{Kind: "nop"})
		case wire.OptMSS:
			out = append(out, TCPOption{Kind: "mss", Val: uint32(o.MSS)})
		case wire.OptWScale:
			out = append(out, TCPOption{Kind: "wscale", Val: uint32(o.WScale)})
		case wire.OptSACKPermitted:
			out = append(out, TCPOption{Kind: "sackOK"})
		case wire.OptTimestamps:
			out = append(out, TCPOption{Kind: "TS", Val: o.TSVal, Ecr: o.TSEcr})
		case wire.OptSACK:
			sk := TCPOption{Kind: "sack"}
			for _, b := range o.SACK {
				sk.Blocks = append(sk.Blocks, [2]uint32{uint32(b.Left), uint32(b.Right)})
			}
			out = append(out, sk)
		default:
			// Options the wire package keeps raw, in order: TCP Fast
			// Open's (kind 34, or 254 with magic F989) are named as the
			// script names them, with the cookie in hex.
			op := TCPOption{Kind: "kind" + strconv.Itoa(int(k))}
			if raw < len(o.Unknown) && o.Unknown[raw].Kind == k {
				d := o.Unknown[raw].Data
				raw++
				switch {
				case k == 34:
					op = TCPOption{Kind: "FO", Cookie: hex.EncodeToString(d)}
				case k == 254 && len(d) >= 2 && d[0] == 0xf9 && d[1] == 0x89:
					op = TCPOption{Kind: "FOEXP", Cookie: hex.EncodeToString(d[2:])}
				}
			}
			out = append(out, op)
		}
	}
	return out
}

// inboundOptions builds a segment's options from the script's list, in
// its order. ecr and SACK blocks are mapped to live numbers by the
// caller's functions.
func inboundOptions(list []TCPOption, ecr func(uint32) uint32, sack func(uint32) uint32) (wire.Options, string) {
	var o wire.Options
	o.Order = []uint8{}
	for _, op := range list {
		switch op.Kind {
		case "nop":
			o.Order = append(o.Order, wire.OptNOP)
		case "eol":
			o.Order = append(o.Order, wire.OptEOL)
		case "mss":
			o.HasMSS, o.MSS = true, uint16(op.Val)
			o.Order = append(o.Order, wire.OptMSS)
		case "wscale":
			o.HasWScale, o.WScale = true, uint8(op.Val)
			o.Order = append(o.Order, wire.OptWScale)
		case "sackOK":
			o.SACKPermitted = true
			o.Order = append(o.Order, wire.OptSACKPermitted)
		case "TS":
			o.HasTimestamps, o.TSVal, o.TSEcr = true, op.Val, ecr(op.Ecr)
			o.Order = append(o.Order, wire.OptTimestamps)
		case "sack":
			for _, b := range op.Blocks {
				o.SACK = append(o.SACK, wire.SACKBlock{Left: wire.Seq(sack(b[0])), Right: wire.Seq(sack(b[1]))})
			}
			o.Order = append(o.Order, wire.OptSACK)
		case "FO", "FOEXP":
			cookie, err := hex.DecodeString(op.Cookie)
			if err != nil || len(cookie) > 16 {
				return o, "the TCP option " + op.String() + " is not supported (a cookie of up to 16 bytes in hex)"
			}
			raw := wire.RawOption{Kind: 34, Data: cookie}
			if op.Kind == "FOEXP" {
				raw = wire.RawOption{Kind: 254, Data: append([]byte{0xf9, 0x89}, cookie...)}
			}
			o.Unknown = append(o.Unknown, raw)
			o.Order = append(o.Order, 255) // the next of Unknown (wire's orderRaw)
		default:
			return o, "the TCP option " + op.Kind + " is not supported"
		}
	}
	return o, ""
}

// errnoText is a call's errno as packetdrill prints it after a result.
func errnoText(e tcp.Errno) string {
	return fmt.Sprintf("errno %d (%s)", int(e), errnoMessage(e))
}

// errnoMessage is strerror's wording, capitalised as glibc does.
func errnoMessage(e tcp.Errno) string {
	if e == tcp.OK {
		return "Success"
	}
	m := e.Error()
	if strings.HasPrefix(m, "errno ") { // one the engine does not know: libc's words
		m = unix.Errno(e).Error()
	}
	if m == "" {
		return e.Name()
	}
	return strings.ToUpper(m[:1]) + m[1:]
}
