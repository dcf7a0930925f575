package tcp

import (
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ISNMode chooses how initial sequence numbers are made.
type ISNMode uint8

const (
	// ISNKeyed is RFC 6528: a keyed hash of the 4-tuple plus a clock that
	// ticks every 64 ns, as Linux's secure_tcp_seq.
	ISNKeyed ISNMode = iota
	// ISNPredictable is the 4.4BSD scheme: a global counter bumped by
	// 64000 per connection and by 64000 every half second. The ISN of the
	// next connection can be guessed from any previous one.
	ISNPredictable
)

// Profile is the behaviour of a TCP stack as data: timers, limits and the
// sysctls a scenario can change. Durations are virtual time.
type Profile struct {
	Name        string
	Description string

	// Retransmission (net/ipv4/tcp_timer.c).
	InitialRTO        time.Duration // TCP_TIMEOUT_INIT: first SYN timeout
	MinRTO            time.Duration // tcp_rto_min_us
	MaxRTO            time.Duration // TCP_RTO_MAX
	Jiffy             time.Duration // 1/CONFIG_HZ: an RTO computed from RTT is rounded up to it
	SynRetries        int           // tcp_syn_retries
	SynLinearTimeouts int           // tcp_syn_linear_timeouts (Linux >= 6.5 defaults to 4)
	SynAckRetries     int           // tcp_synack_retries
	SynAckInitialRTO  time.Duration // first SYN-ACK timeout (Linux: TCP_TIMEOUT_INIT)
	Retries2          int           // tcp_retries2
	OrphanRetries     int           // tcp_orphan_retries (0 means 8 while the RTO is below the maximum)
	LossProbes        bool          // tail loss probes (RFC 8985; Linux's tcp_early_retrans=3)

	// Closing.
	TimeWait         time.Duration // TCP_TIMEWAIT_LEN, 2*MSL
	FinTimeout       time.Duration // tcp_fin_timeout: life of an orphaned FIN_WAIT2
	LingerTimeoutRST bool          // close() with SO_LINGER N s resets when N s pass (BSD, Windows); Linux does not
	RFC1337          bool          // tcp_rfc1337: ignore RST in TIME_WAIT
	// FinWait2InPassing: a segment that ACKs our FIN and carries the peer's
	// FIN moves FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT at one instant, as
	// Linux's tcp_rcv_state_process and tcp_fin do; false takes RFC 9293's
	// direct edge FIN_WAIT1 -> TIME_WAIT.
	FinWait2InPassing bool

	// Acknowledgements (net/ipv4/tcp_input.c, tcp_output.c).
	DelayedAck time.Duration // TCP_ATO_MIN / TCP_DELACK_MIN
	MaxDelAck  time.Duration // TCP_DELACK_MAX
	QuickAcks  int           // TCP_MAX_QUICKACKS

	// Keepalive defaults (per socket options override them).
	KeepaliveTime   time.Duration // tcp_keepalive_time
	KeepaliveIntvl  time.Duration // tcp_keepalive_intvl
	KeepaliveProbes int           // tcp_keepalive_probes

	// Listener (net/ipv4/tcp_input.c tcp_conn_request, tcp_minisocks.c).
	Somaxconn       int  // net.core.somaxconn: listen() backlog is capped here
	MaxSynBacklog   int  // tcp_max_syn_backlog: used when cookies are off
	Syncookies      int  // tcp_syncookies: 0 never, 1 on SYN queue overflow, 2 always
	AbortOnOverflow bool // tcp_abort_on_overflow: RST instead of dropping the final ACK

	// Segments and buffers.
	MSS         int // our advertised MSS (1460 on a 1500-byte MTU)
	RcvWindow   int // receive window of an empty receive buffer
	SndBuf      int // bytes a socket may hold unacknowledged or unsent
	InitialCwnd int // segments
	// SlowStartAfterIdle: tcp_slow_start_after_idle, a sender idle for
	// more than an RTO with nothing in flight restarts from the initial
	// window (tcp_cwnd_restart).
	SlowStartAfterIdle bool
	// TSO: send new data as a device with TSO offload gets it, several
	// segments in one packet sized as tcp_tso_autosize sizes them (by
	// the pacing rate, at least MinTSOSegs, half the window at most), a
	// packet of several segments with PSH; off, MSS-sized segments as on
	// a wire. packetdrill runs turn it on.
	TSO        bool
	MinTSOSegs int // tcp_min_tso_segs
	// OutputDrop: the host's output queue drops every packet, as a qdisc
	// with a limit of 0 does (packetdrill's `tc qdisc add dev tun0 root
	// pfifo limit 0`). TCP sees local congestion: new data stays unsent
	// and is tried again by the probe timer every 500 ms
	// (TCP_RESOURCE_PROBE_INTERVAL), a retransmission likewise.
	OutputDrop bool
	// GSOSplit: the device takes no TSO packets (ethtool -K tun0 tso off):
	// with TSO, each packet leaves cut into segments by software GSO,
	// PSH and FIN on its last segment only.
	GSOSplit bool
	// SkbOverhead: when above 0, the send buffer is charged as Linux
	// charges it, with each skb's truesize (its payload plus this), and
	// packets never span two skbs (tcp/skb.go). 832 bytes on Linux 6.18
	// (x86_64); 0 counts payload bytes only.
	SkbOverhead       int
	WScale            int           // our window scale shift; -1 disables the option
	Rmem              [3]int        // tcp_rmem: min, default, max receive buffer; max sets WScale
	Timestamps        bool          // tcp_timestamps
	SACK              bool          // tcp_sack
	ChallengeAckLimit int           // tcp_challenge_ack_limit per second; 0 means unlimited
	InvalidRateLimit  time.Duration // tcp_invalid_ratelimit: at most one ACK per socket this often for invalid segments
	TwReuse           int           // tcp_tw_reuse: 0 off, 1 on, 2 loopback only

	ISN ISNMode

	EphemeralLow, EphemeralHigh uint16 // ip_local_port_range
	TTL                         uint8
}

// Linux is the default profile: a current Linux kernel with its defaults,
// except tcp_syn_linear_timeouts which is 0 here so that SYN retransmissions
// follow the classic doubling (1, 3, 7, 15, 31, 63 s, ETIMEDOUT at 127 s);
// kernels 6.5 and later default it to 4 (SYNs at 1, 2, 3, 4, 5, 7, 11, 19,
// 35, 67 s, ETIMEDOUT at 131 s). Set tcp_syn_linear_timeouts to 4 to see
// that timeline.
func Linux() Profile {
	return Profile{
		Name:               "linux",
		Description:        "Linux defaults (tcp_syn_linear_timeouts=0): SYN retries 6, SYN-ACK retries 5, TIME_WAIT 60 s, RFC 6528 ISNs",
		InitialRTO:         time.Second,
		MinRTO:             200 * time.Millisecond,
		MaxRTO:             120 * time.Second,
		Jiffy:              4 * time.Millisecond, // CONFIG_HZ=250, as Debian and Ubuntu build it
		SynRetries:         6,
		SynLinearTimeouts:  0,
		SynAckRetries:      5,
		SynAckInitialRTO:   time.Second,
		Retries2:           15,
		OrphanRetries:      0,
		LossProbes:         true,
		TimeWait:           60 * time.Second,
		FinTimeout:         60 * time.Second,
		FinWait2InPassing:  true,
		DelayedAck:         40 * time.Millisecond,
		MaxDelAck:          200 * time.Millisecond,
		QuickAcks:          16,
		KeepaliveTime:      7200 * time.Second,
		KeepaliveIntvl:     75 * time.Second,
		KeepaliveProbes:    9,
		Somaxconn:          4096,
		MaxSynBacklog:      2048,
		Syncookies:         1,
		MSS:                1460,
		RcvWindow:          64240,
		SndBuf:             65536,
		InitialCwnd:        10,
		SlowStartAfterIdle: true,
		MinTSOSegs:         2,
		WScale:             7,
		Rmem:               [3]int{4096, 131072, 6291456},
		Timestamps:         true,
		SACK:               true,
		TwReuse:            2,
		InvalidRateLimit:   500 * time.Millisecond,
		ISN:                ISNKeyed,
		EphemeralLow:       32768,
		EphemeralHigh:      60999,
		TTL:                64,
	}
}

// WindowsClassic reproduces the timeline of a classic Windows lab: SYN-ACKs
// at 0, 3, 9, 21 and 45 s and the half-open entry dropped at 93 s; SYNs at
// 0, 3, 9 s and connect failing at 21 s; TIME_WAIT of 240 s (MSL of two
// minutes); no timestamps or window scaling; a lingering close that times
// out resets the connection.
func WindowsClassic() Profile {
	p := Linux()
	p.Name = "windows-classic"
	p.LossProbes = false
	p.Description = "classic Windows timeline: SYN-ACKs at 0, 3, 9, 21, 45 s, half-open entry dropped at 93 s, TIME_WAIT 240 s"
	p.InitialRTO = 3 * time.Second
	p.SynRetries = 2
	p.SynAckInitialRTO = 3 * time.Second
	p.SynAckRetries = 4
	p.TimeWait = 240 * time.Second
	p.FinTimeout = 240 * time.Second
	p.Timestamps = false
	p.WScale = -1
	p.RcvWindow = 65535
	p.LingerTimeoutRST = true
	p.FinWait2InPassing = false // the RFC's direct edge, as the diagram draws it
	p.TTL = 128
	return p
}

// PredictableISN is Linux with 4.4BSD-style guessable initial sequence
// numbers, the weakness behind the classic blind-spoofing attack.
func PredictableISN() Profile {
	p := Linux()
	p.Name = "predictable-isn"
	p.LossProbes = false
	p.Description = "Linux timers with 4.4BSD guessable ISNs (+64000 per connection and per half second)"
	p.ISN = ISNPredictable
	return p
}

var profiles = map[string]func() Profile{
	"linux":           Linux,
	"windows-classic": WindowsClassic,
	"predictable-isn": PredictableISN,
}

// ProfileNames lists the built-in profiles.
func ProfileNames() []string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ProfileByName returns a built-in profile.
func ProfileByName(name string) (Profile, error) {
	if f, ok := profiles[name]; ok {
		return f(), nil
	}
	return Profile{}, fmt.Errorf("unknown profile %q (known: %s)", name, strings.Join(ProfileNames(), ", "))
}

// A setting is one sysctl-like knob of a profile.
type setting struct {
	name, help string
	unit       string // "s", "ms", "bool", "" (count), "range"
	get        func(p *Profile) string
	set        func(p *Profile, v int64) error
}

func intSetting(name, help string, field func(p *Profile) *int, lo, hi int64) setting {
	return setting{name: name, help: help,
		get: func(p *Profile) string { return strconv.Itoa(*field(p)) },
		set: func(p *Profile, v int64) error {
			if v < lo || v > hi {
				return fmt.Errorf("%s must be between %d and %d", name, lo, hi)
			}
			*field(p) = int(v)
			return nil
		}}
}

func durSetting(name, help, unit string, field func(p *Profile) *time.Duration, lo, hi int64) setting {
	scale := time.Second
	if unit == "ms" {
		scale = time.Millisecond
	}
	return setting{name: name, help: help, unit: unit,
		get: func(p *Profile) string { return strconv.FormatInt(int64(*field(p)/scale), 10) },
		set: func(p *Profile, v int64) error {
			if v < lo || v > hi {
				return fmt.Errorf("%s must be between %d and %d %s", name, lo, hi, unit)
			}
			*field(p) = time.Duration(v) * scale
			return nil
		}}
}

func boolSetting(name, help string, field func(p *Profile) *bool) setting {
	return setting{name: name, help: help, unit: "bool",
		get: func(p *Profile) string {
			if *field(p) {
				return "1"
			}
			return "0"
		},
		set: func(p *Profile, v int64) error {
			if v != 0 && v != 1 {
				return fmt.Errorf("%s is 0 or 1", name)
			}
			*field(p) = v == 1
			return nil
		}}
}

// settings are named after the Linux sysctls they mirror. The table is
// made on first use: its closures would otherwise cost every command's
// start-up.
var settings = sync.OnceValue(func() []setting {
	return []setting{
		intSetting("tcp_syn_retries", "SYN retransmissions before connect() fails with ETIMEDOUT", func(p *Profile) *int { return &p.SynRetries }, 1, 127),
		intSetting("tcp_syn_linear_timeouts", "first SYN retransmissions sent at a fixed 1 s interval before doubling", func(p *Profile) *int { return &p.SynLinearTimeouts }, 0, 16),
		intSetting("tcp_synack_retries", "SYN-ACK retransmissions before a half-open request is dropped", func(p *Profile) *int { return &p.SynAckRetries }, 1, 255),
		intSetting("tcp_retries2", "data retransmissions (as a time budget) before the connection is dropped", func(p *Profile) *int { return &p.Retries2 }, 0, 255),
		intSetting("tcp_orphan_retries", "retransmissions for a connection whose socket was closed (0 means 8)", func(p *Profile) *int { return &p.OrphanRetries }, 0, 255),
		durSetting("tcp_fin_timeout", "lifetime of an orphaned FIN_WAIT2 connection", "s", func(p *Profile) *time.Duration { return &p.FinTimeout }, 1, 86400),
		durSetting("tcp_time_wait", "TIME_WAIT length, 2*MSL (a constant in Linux, TCP_TIMEWAIT_LEN)", "s", func(p *Profile) *time.Duration { return &p.TimeWait }, 1, 3600),
		boolSetting("tcp_rfc1337", "ignore RST segments in TIME_WAIT", func(p *Profile) *bool { return &p.RFC1337 }),
		durSetting("tcp_keepalive_time", "idle time before the first keepalive probe", "s", func(p *Profile) *time.Duration { return &p.KeepaliveTime }, 1, 32767),
		durSetting("tcp_keepalive_intvl", "interval between keepalive probes", "s", func(p *Profile) *time.Duration { return &p.KeepaliveIntvl }, 1, 32767),
		intSetting("tcp_keepalive_probes", "unanswered keepalive probes before the connection is dropped", func(p *Profile) *int { return &p.KeepaliveProbes }, 1, 127),
		intSetting("somaxconn", "upper bound of a listen() backlog", func(p *Profile) *int { return &p.Somaxconn }, 0, 1<<20),
		intSetting("tcp_max_syn_backlog", "half-open requests kept when SYN cookies are off", func(p *Profile) *int { return &p.MaxSynBacklog }, 1, 1<<20),
		intSetting("tcp_syncookies", "0 never send SYN cookies, 1 when the SYN queue overflows, 2 always", func(p *Profile) *int { return &p.Syncookies }, 0, 2),
		boolSetting("tcp_abort_on_overflow", "reset instead of dropping the final ACK when the accept queue is full", func(p *Profile) *bool { return &p.AbortOnOverflow }),
		boolSetting("tcp_timestamps", "send the timestamps option", func(p *Profile) *bool { return &p.Timestamps }),
		boolSetting("tcp_sack", "offer selective acknowledgements", func(p *Profile) *bool { return &p.SACK }),
		intSetting("tcp_tw_reuse", "let connect() reuse a TIME_WAIT 4-tuple: 0 off, 1 on, 2 loopback only", func(p *Profile) *int { return &p.TwReuse }, 0, 2),
		intSetting("tcp_challenge_ack_limit", "challenge ACKs per second (0: unlimited)", func(p *Profile) *int { return &p.ChallengeAckLimit }, 0, 1<<31-1),
		durSetting("tcp_invalid_ratelimit", "at most one ACK per socket in this time for invalid segments (0: no limit)", "ms", func(p *Profile) *time.Duration { return &p.InvalidRateLimit }, 0, 60000),
		durSetting("tcp_rto_min", "lower bound of the retransmission timeout", "ms", func(p *Profile) *time.Duration { return &p.MinRTO }, 1, 120000),
		durSetting("tcp_delack", "delayed ACK timeout", "ms", func(p *Profile) *time.Duration { return &p.DelayedAck }, 1, 1000),
		intSetting("tcp_mss", "MSS this host advertises", func(p *Profile) *int { return &p.MSS }, 88, 65495),
		boolSetting("tso", "send new data in TSO packets, as a device with TSO offload gets them (packetdrill runs)", func(p *Profile) *bool { return &p.TSO }),
		intSetting("skb_overhead", "truesize of an empty send skb: charge the send buffer as Linux does (0: payload bytes only)", func(p *Profile) *int { return &p.SkbOverhead }, 0, 65536),
		boolSetting("tcp_slow_start_after_idle", "restart from the initial congestion window after an idle RTO", func(p *Profile) *bool { return &p.SlowStartAfterIdle }),
		boolSetting("gso_split", "the device takes no TSO packets: software GSO cuts each into segments, PSH on the last", func(p *Profile) *bool { return &p.GSOSplit }),
		boolSetting("output_drop", "the output queue drops every packet (a qdisc with limit 0): local congestion", func(p *Profile) *bool { return &p.OutputDrop }),
		intSetting("tcp_min_tso_segs", "fewest segments in a TSO packet", func(p *Profile) *int { return &p.MinTSOSegs }, 1, 127),
		intSetting("tcp_rcv_window", "receive window of an empty receive buffer, bytes", func(p *Profile) *int { return &p.RcvWindow }, 1, 1<<30),
		{name: "tcp_rmem", help: "receive buffer sizes \"MIN DEFAULT MAX\"; MAX sets the window scale we offer", unit: "triple",
			get: func(p *Profile) string { return fmt.Sprintf("%d %d %d", p.Rmem[0], p.Rmem[1], p.Rmem[2]) }},
		{name: "tcp_window_scaling", help: "offer window scaling (1) or not (0)", unit: "bool",
			get: func(p *Profile) string {
				if p.WScale >= 0 {
					return "1"
				}
				return "0"
			},
			set: func(p *Profile, v int64) error {
				switch v {
				case 0:
					p.WScale = -1
				case 1:
					p.WScale = rcvWScale(p.Rmem[2])
				default:
					return fmt.Errorf("tcp_window_scaling is 0 or 1")
				}
				return nil
			}},
		{name: "ip_local_port_range", help: "ephemeral ports for connect(), \"LOW HIGH\"", unit: "range",
			get: func(p *Profile) string { return fmt.Sprintf("%d %d", p.EphemeralLow, p.EphemeralHigh) }},
	}
})

// rmemMax is net.core.rmem_max's default: the window scale is computed
// for the larger of it and tcp_rmem's max.
const rmemMax = 212992

// rcvWScale is the window scale Linux offers for a receive buffer of at
// most max bytes (tcp_select_initial_window: ilog2(space) - 15, 0 to 14).
func rcvWScale(rmem int) int {
	space := uint32(min(max(rmem, rmemMax), 1<<31-1))
	return min(max(bits.Len32(space)-1-15, 0), 14)
}

// SettingNames lists the sysctl names Set accepts.
func SettingNames() []string {
	n := make([]string, len(settings()))
	for i, s := range settings() {
		n[i] = s.name
	}
	return n
}

// SettingHelp describes a setting, "" when unknown.
func SettingHelp(name string) string {
	for _, s := range settings() {
		if s.name == name {
			return s.help
		}
	}
	return ""
}

// Set changes a setting by its sysctl name. Durations are in the sysctl's
// unit (seconds, or milliseconds for tcp_rto_min and tcp_delack).
func (p *Profile) Set(name, value string) error {
	for _, s := range settings() {
		if s.name != name {
			continue
		}
		if s.unit == "triple" {
			f := strings.Fields(value)
			var v [3]int
			for i := 0; i < len(f) && i < 3; i++ {
				n, err := strconv.Atoi(f[i])
				if err != nil || n <= 0 {
					f = nil
					break
				}
				v[i] = n
			}
			if len(f) != 3 || v[0] > v[1] || v[1] > v[2] {
				return fmt.Errorf("%s takes three sizes MIN <= DEFAULT <= MAX, got %q", name, value)
			}
			p.Rmem = v
			if p.WScale >= 0 {
				p.WScale = rcvWScale(v[2])
			}
			return nil
		}
		if s.unit == "range" {
			f := strings.Fields(value)
			if len(f) != 2 {
				return fmt.Errorf("%s takes two ports, \"LOW HIGH\"", name)
			}
			lo, err1 := strconv.ParseUint(f[0], 10, 16)
			hi, err2 := strconv.ParseUint(f[1], 10, 16)
			if err1 != nil || err2 != nil || lo == 0 || lo > hi {
				return fmt.Errorf("%s takes two ports LOW <= HIGH, got %q", name, value)
			}
			p.EphemeralLow, p.EphemeralHigh = uint16(lo), uint16(hi)
			return nil
		}
		v, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return fmt.Errorf("%s takes an integer, got %q", name, value)
		}
		return s.set(p, v)
	}
	return fmt.Errorf("unknown setting %q", name)
}

// Get returns a setting's value as Set would read it.
func (p *Profile) Get(name string) (string, bool) {
	for _, s := range settings() {
		if s.name == name {
			return s.get(p), true
		}
	}
	return "", false
}
