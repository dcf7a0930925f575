// Package tcp is tcplab's sans-IO TCP engine. A Host holds sockets and
// connections; it is driven by three inputs (a received segment, an
// application call, the passing of time) and its outputs are polled:
// segments to send, events, and the next deadline. It starts no goroutine,
// reads no clock and does no I/O, so a simulator can run minutes of TCP
// timers in microseconds and the same seed gives the same trace.
//
// Behaviour follows Linux by default (see Profile). Comments name the
// kernel function a behaviour mirrors.
package tcp

import "fmt"

// State is a TCP connection state of RFC 9293.
type State uint8

const (
	Closed State = iota
	Listen
	SynSent
	SynRecv
	Established
	FinWait1
	FinWait2
	CloseWait
	Closing
	LastAck
	TimeWait
	numStates
)

var stateNames = [numStates]string{
	"CLOSED", "LISTEN", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT1",
	"FIN_WAIT2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT",
}

// States lists every state in RFC order.
func States() []State {
	s := make([]State, numStates)
	for i := range s {
		s[i] = State(i)
	}
	return s
}

// String is the netstat spelling: "SYN_SENT", "TIME_WAIT".
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ParseState reads a state name in netstat ("SYN_SENT"), ss ("SYN-SENT",
// "ESTAB") or lower case spelling.
func ParseState(name string) (State, bool) {
	n := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '-':
			c = '_'
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		}
		n = append(n, c)
	}
	s := string(n)
	if s == "ESTAB" {
		return Established, true
	}
	if s == "FIN_WAIT_1" {
		return FinWait1, true
	}
	if s == "FIN_WAIT_2" {
		return FinWait2, true
	}
	if s == "SYN_RECEIVED" {
		return SynRecv, true
	}
	for i, sn := range stateNames {
		if sn == s {
			return State(i), true
		}
	}
	return 0, false
}

// Synchronized reports whether the state is past the handshake (RFC 9293
// "synchronized states"): a SYN arriving here is answered by a challenge
// ACK.
func (s State) Synchronized() bool {
	return s >= Established && s <= TimeWait
}

// Transition is one legal state change with the RFC 9293 event that causes
// it; Figure says whether RFC 9293 figure 5 draws it (the others come from
// the RFC's text: resets, timeouts, aborts).
type Transition struct {
	From, To State
	Event    string
	Figure   bool
}

// transitions is the one table of legal state changes. Every state change
// the engine makes is checked against it (see conn.setState).
//
// RFC 9293 figure 5 also draws LISTEN -> SYN_SENT (a SEND on a listening
// TCB). The socket API has no such call: connect() on a listening socket
// fails with EISCONN on Linux, so the engine never makes that change.
var transitions = []Transition{
	{Closed, Listen, "passive OPEN: listen()", true},
	{Closed, SynSent, "active OPEN: connect(), snd SYN", true},
	{Listen, Closed, "CLOSE: close() on the listener", true},
	{Listen, SynRecv, "rcv SYN, snd SYN,ACK", true},
	{SynSent, SynRecv, "rcv SYN (simultaneous open), snd SYN,ACK", true},
	{SynSent, Established, "rcv SYN,ACK, snd ACK", true},
	{SynSent, Closed, "CLOSE, rcv RST (refused) or SYN retries exhausted", true},
	{SynRecv, Established, "rcv ACK of SYN", true},
	{SynRecv, FinWait1, "CLOSE, snd FIN", true},
	{SynRecv, Closed, "rcv RST, SYN-ACK retries exhausted, or abort", false},
	{Established, FinWait1, "CLOSE or shutdown(SHUT_WR), snd FIN", true},
	{Established, CloseWait, "rcv FIN, snd ACK", true},
	{Established, Closed, "rcv RST, abort (SO_LINGER 0, unread data) or timeout", false},
	{FinWait1, FinWait2, "rcv ACK of FIN", true},
	{FinWait1, Closing, "rcv FIN, snd ACK (simultaneous close)", true},
	{FinWait1, TimeWait, "rcv FIN,ACK acking our FIN, snd ACK", false},
	{FinWait1, Closed, "rcv RST, abort or retransmission timeout", false},
	{FinWait2, TimeWait, "rcv FIN, snd ACK", true},
	{FinWait2, Closed, "tcp_fin_timeout of an orphan, rcv RST, or data after close", false},
	{CloseWait, LastAck, "CLOSE, snd FIN", true},
	{CloseWait, Closed, "rcv RST, abort or timeout", false},
	{Closing, TimeWait, "rcv ACK of FIN", true},
	{Closing, Closed, "rcv RST, abort or retransmission timeout", false},
	{LastAck, Closed, "rcv ACK of FIN", true},
	{TimeWait, Closed, "2*MSL timeout, or rcv RST (TIME_WAIT assassination)", true},
}

var legal [numStates][numStates]bool

func init() {
	for _, t := range transitions {
		legal[t.From][t.To] = true
	}
}

// Transitions returns the table of legal state changes.
func Transitions() []Transition { return append([]Transition(nil), transitions...) }

// Legal reports whether the engine may change from one state to another.
func Legal(from, to State) bool {
	return from < numStates && to < numStates && legal[from][to]
}
