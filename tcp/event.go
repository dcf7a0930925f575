package tcp

import (
	"fmt"
	"net/netip"
	"time"
)

// SockID names a socket or connection for its whole life on one host; it is
// never reused. A connection accepted from a listener has its own SockID.
type SockID uint64

// EventKind tells what an Event reports.
type EventKind uint8

const (
	EvState   EventKind = iota // a connection changed state
	EvCall                     // an application call blocked or completed
	EvCounter                  // a counter changed (all but InSegs and OutSegs, which move with every packet)
	EvNote                     // a decision worth explaining (a drop, a cookie, a challenge ACK)
)

// CauseKind is what made a state change happen.
type CauseKind uint8

const (
	CauseSegment CauseKind = iota // a received segment
	CauseTimer                    // a timer expired
	CauseApp                      // an application call
)

func (k CauseKind) String() string {
	switch k {
	case CauseSegment:
		return "segment"
	case CauseTimer:
		return "timer"
	default:
		return "app"
	}
}

// Cause explains a state change: its kind and a short text such as
// "rcv SYN,ACK" or "TIME_WAIT expired (60s)".
type Cause struct {
	Kind CauseKind
	Text string
}

// Event is one thing the engine reports. Which fields are set depends on
// Kind.
type Event struct {
	Kind EventKind
	At   time.Duration
	Sock SockID
	// Parent is the listener a passive connection came from.
	Parent        SockID
	Local, Remote netip.AddrPort
	// V6Only marks an AF_INET6 socket with IPV6_V6ONLY (ss spells its
	// wildcard [::], a dual-stack one's *).
	V6Only bool

	// EvState
	From, To State
	Cause    Cause

	// EvCall
	Result *Result

	// EvCounter
	Counter Counter
	Delta   int64
	Value   int64

	// EvNote
	Note string
}

func (e Event) String() string {
	switch e.Kind {
	case EvState:
		return fmt.Sprintf("%v sock %d %v>%v %v -> %v (%s: %s)", e.At, e.Sock, e.Local, e.Remote, e.From, e.To, e.Cause.Kind, e.Cause.Text)
	case EvCall:
		return fmt.Sprintf("%v sock %d %s", e.At, e.Sock, e.Result)
	case EvCounter:
		return fmt.Sprintf("%v %s %+d = %d", e.At, e.Counter, e.Delta, e.Value)
	default:
		return fmt.Sprintf("%v sock %d note: %s", e.At, e.Sock, e.Note)
	}
}

// Counter is a per-host counter named like Linux's /proc/net/snmp (Tcp:)
// and /proc/net/netstat (TcpExt:) fields.
type Counter uint8

const (
	ActiveOpens Counter = iota
	PassiveOpens
	AttemptFails
	EstabResets
	CurrEstab
	InSegs
	OutSegs
	RetransSegs
	InErrs
	OutRsts
	EmbryonicRsts
	ListenOverflows
	ListenDrops
	SyncookiesSent
	SyncookiesRecv
	SyncookiesFailed
	TCPReqQFullDoCookies
	TCPReqQFullDrop
	TCPChallengeACK
	TCPSYNChallenge
	TCPTimeouts
	TCPLossProbes
	TCPAbortOnData
	TCPAbortOnClose
	TCPAbortOnTimeout
	TCPAbortOnLinger
	DelayedACKs
	TCPKeepAlive
	TW
	TWKilled
	PAWSEstabRejected
	TCPACKSkippedSeq
	TCPACKSkippedPAWS
	TCPACKSkippedChallenge
	TCPACKSkippedTimeWait
	TCPACKSkippedSynRecv
	TCPACKSkippedFinWait2
	numCounters
)

var counterNames = [numCounters]struct{ name, group string }{
	{"ActiveOpens", "Tcp"},
	{"PassiveOpens", "Tcp"},
	{"AttemptFails", "Tcp"},
	{"EstabResets", "Tcp"},
	{"CurrEstab", "Tcp"},
	{"InSegs", "Tcp"},
	{"OutSegs", "Tcp"},
	{"RetransSegs", "Tcp"},
	{"InErrs", "Tcp"},
	{"OutRsts", "Tcp"},
	{"EmbryonicRsts", "TcpExt"},
	{"ListenOverflows", "TcpExt"},
	{"ListenDrops", "TcpExt"},
	{"SyncookiesSent", "TcpExt"},
	{"SyncookiesRecv", "TcpExt"},
	{"SyncookiesFailed", "TcpExt"},
	{"TCPReqQFullDoCookies", "TcpExt"},
	{"TCPReqQFullDrop", "TcpExt"},
	{"TCPChallengeACK", "TcpExt"},
	{"TCPSYNChallenge", "TcpExt"},
	{"TCPTimeouts", "TcpExt"},
	{"TCPLossProbes", "TcpExt"},
	{"TCPAbortOnData", "TcpExt"},
	{"TCPAbortOnClose", "TcpExt"},
	{"TCPAbortOnTimeout", "TcpExt"},
	{"TCPAbortOnLinger", "TcpExt"},
	{"DelayedACKs", "TcpExt"},
	{"TCPKeepAlive", "TcpExt"},
	{"TW", "TcpExt"},
	{"TWKilled", "TcpExt"},
	{"PAWSEstabRejected", "TcpExt"},
	{"TCPACKSkippedSeq", "TcpExt"},
	{"TCPACKSkippedPAWS", "TcpExt"},
	{"TCPACKSkippedChallenge", "TcpExt"},
	{"TCPACKSkippedTimeWait", "TcpExt"},
	{"TCPACKSkippedSynRecv", "TcpExt"},
	{"TCPACKSkippedFinWait2", "TcpExt"},
}

func (c Counter) String() string {
	if c < numCounters {
		return counterNames[c].name
	}
	return fmt.Sprintf("Counter(%d)", uint8(c))
}

// Group is "Tcp" (from /proc/net/snmp) or "TcpExt" (/proc/net/netstat).
func (c Counter) Group() string {
	if c < numCounters {
		return counterNames[c].group
	}
	return ""
}

// Counters lists every counter.
func Counters() []Counter {
	out := make([]Counter, numCounters)
	for i := range out {
		out[i] = Counter(i)
	}
	return out
}

// ParseCounter reads a counter name such as "ListenOverflows"; a "TcpExt:"
// or "Tcp:" prefix is accepted.
func ParseCounter(name string) (Counter, bool) {
	for i, c := range counterNames {
		if name == c.name || name == c.group+":"+c.name || name == c.group+"."+c.name {
			return Counter(i), true
		}
	}
	return 0, false
}
