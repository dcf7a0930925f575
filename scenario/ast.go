// Package scenario is tcplab's lab notebook: a plain-text language that
// describes hosts, application calls, firewall rules, kernel settings, time
// and expectations; a library of built-in scenarios, one per TCP state and
// rare case; and a runner that plays a scenario on a Backend (the
// simulator, or the real kernel) and checks its expectations against what
// the backend reports.
package scenario

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tcplab/tcplab/sim"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Pos is a place in a scenario file; columns count bytes from 1.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Scenario is a parsed scenario file.
type Scenario struct {
	Name    string // the file name without extension
	File    string
	Title   string // one line
	Explain string // the explanation printed with the run
	Hosts   []HostDecl
	Steps   []Step
	Source  string
	// Span is the latest virtual time the script's steps can reach (its
	// waits and until limits together).
	Span time.Duration
}

// Host returns a declared host by name.
func (s *Scenario) Host(name string) *HostDecl {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i]
		}
	}
	return nil
}

// HostDecl is a `host` line.
type HostDecl struct {
	Pos  Pos
	Name string
	// Addr is the host's address: IPv4, or IPv6 for an IPv6-only host;
	// Addr6 its IPv6 address besides an IPv4 one (a dual-stack host).
	Addr    netip.Addr
	Addr6   netip.Addr
	Profile string // "" means linux
}

// V4 is the host's IPv4 address, zero when it has none.
func (h *HostDecl) V4() netip.Addr {
	if h.Addr.Is4() {
		return h.Addr
	}
	return netip.Addr{}
}

// V6 is the host's IPv6 address, zero when it has none.
func (h *HostDecl) V6() netip.Addr {
	if h.Addr.Is6() {
		return h.Addr
	}
	return h.Addr6
}

// StepKind tells which field of a Step is set.
type StepKind uint8

const (
	StepCall    StepKind = iota // HOST: verb ...
	StepInject                  // HOST: inject ...
	StepRule                    // rule HOST ...
	StepRemove                  // remove rule NAME
	StepSet                     // set HOST SETTING VALUE
	StepProfile                 // profile HOST NAME
	StepAfter                   // after DUR
	StepAt                      // at TIME
	StepUntil                   // until COND [within DUR]
	StepExpect                  // expect COND
	StepNote                    // note TEXT
	StepPart                    // part TEXT
)

// Step is one line of the scenario's body.
type Step struct {
	Pos  Pos
	Text string // the line as written, without comment
	Kind StepKind
	Host string

	Call    *CallStep
	Inject  *InjectStep
	Rule    *RuleStep
	Name    string        // StepRemove: the rule; StepProfile: the profile
	Setting string        // StepSet
	Value   string        // StepSet
	Dur     time.Duration // StepAfter, StepAt, StepUntil (the bound)
	Cond    *Cond         // StepUntil, StepExpect
	Note    string        // StepNote, StepPart
}

// Verb is an application call of the language; several map to more than
// one system call (listen PORT is socket, bind, listen).
type Verb string

const (
	VSocket    Verb = "socket"
	VBind      Verb = "bind"
	VListen    Verb = "listen"
	VAccept    Verb = "accept"
	VConnect   Verb = "connect"
	VWrite     Verb = "write"
	VRead      Verb = "read"
	VShutdown  Verb = "shutdown"
	VClose     Verb = "close"
	VLinger    Verb = "linger"
	VKeepalive Verb = "keepalive"
	VReuseAddr Verb = "reuseaddr"
	VNoDelay   Verb = "nodelay"
	VNonBlock  Verb = "nonblock"
)

var verbs = []Verb{VSocket, VBind, VListen, VAccept, VConnect, VWrite, VRead, VShutdown, VClose,
	VLinger, VKeepalive, VReuseAddr, VNoDelay, VNonBlock}

// CallStep is an application call on one host.
type CallStep struct {
	Verb Verb
	Sock string // the socket operated on; for composite listen/connect "" (a new socket)
	As   string // the name the new socket gets (socket, listen PORT, connect ADDR, accept)

	Port     uint16 // bind, listen PORT
	From     uint16 // connect ... from PORT: bind this local port first
	Backlog  int    // listen
	V6Only   bool   // listen: IPV6_V6ONLY on the new socket
	Target   netip.AddrPort
	Data     []byte // write
	Max      int    // read
	Peek     bool   // read
	How      tcp.Shut
	NonBlock bool
	Reuse    bool // reuseaddr before bind (listen PORT, connect ... from PORT)

	Linger    *tcp.Option  // linger
	Keepalive []tcp.Option // keepalive: SO_KEEPALIVE and the TCP_KEEP* values given
	Repeat    int          // repeat N: the call is made N times, {i} in names counts 1..N
}

// InjectStep sends crafted segments from a host: spoofed SYNs, a blind
// reset, a forged ACK.
type InjectStep struct {
	Flags wire.Flags
	// Either explicit addresses...
	Src, Dst netip.AddrPort
	// ...or the addresses of a connection, seen from one of its ends:
	// the segment pretends to come from Spoof's socket.
	SpoofHost, SpoofSock string
	Seq, Ack             Value
	Window               int // -1: default
	Data                 []byte
	Count                int           // how many segments; the source port grows by one for each
	Every                time.Duration // spacing between them
}

// Value is a sequence or acknowledgement number: a constant, or a number
// read from the packets of a named connection plus an offset.
type Value struct {
	Set    bool
	Const  uint32
	Host   string // "" for a constant
	Sock   string
	Field  string // isn, peer_isn, next, ack
	Offset int64
}

// RuleStep is a firewall rule on a host.
type RuleStep struct {
	Rule sim.Rule
	Name string // the rule's name in the scenario (for remove), "" if unnamed
}

// CondKind tells what a Cond tests.
type CondKind uint8

const (
	CondState    CondKind = iota // HOST: NAME state STATE
	CondPath                     // HOST: NAME path STATE...
	CondEntered                  // HOST: NAME entered STATE at T
	CondCall                     // HOST: NAME OP = RESULT [at T] | NAME OP pending | NAME OP returned
	CondReceived                 // HOST: NAME received CMP N | NAME received "text"
	CondCount                    // HOST: count STATE CMP N
	CondCounter                  // HOST: counter NAME [delta] CMP N
	CondPackets                  // HOST: packets in|out FLAGS CMP N | ... at T...
)

// Cond is the subject of `until` and `expect`.
type Cond struct {
	Pos  Pos
	Kind CondKind
	Host string
	Sock string

	State string   // CondState, CondCount ("all" counts every socket)
	Path  []string // CondPath
	Op    tcp.Op   // CondCall

	// CondCall: what the call must have returned.
	Returned bool   // any completion
	Pending  bool   // still blocked
	Errno    string // "" for success
	Ret      int64
	HasRet   bool
	Text     *string // read: the bytes returned

	Counter string
	Delta   bool
	Dir     trace.Dir // CondPackets
	Flags   wire.Flags

	Cmp   string // = != < <= > >=
	N     int64
	Times []time.Duration // CondPackets ... at T1 T2 ...; CondCall ... at T (one)
}
