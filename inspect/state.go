// Package inspect looks at the TCP sockets of a live host or network
// namespace: it lists them through sock_diag with the filters applied in the
// kernel, counts them per port, names their owning processes, reads the
// kernel's TCP counters, watches state changes, and diagnoses common
// problems.
package inspect

import (
	"fmt"
	"sort"
	"strings"
)

// State is a TCP state numbered as Linux numbers it (include/net/tcp_states.h),
// which is how sock_diag and the inet_sock_set_state tracepoint report it.
type State uint8

// Linux's TCP states.
const (
	Established State = 1 + iota
	SynSent
	SynRecv
	FinWait1
	FinWait2
	TimeWait
	Close
	CloseWait
	LastAck
	Listen
	Closing
	NewSynRecv // a request socket: a SYN answered, waiting for the ACK
)

// Reused is not a kernel state: it is the New of a watch Transition whose
// timewait socket gave its 4-tuple to a new connection before its timer
// ran out (tcp_tw_reuse on the connecting side, TcpExtTWRecycled; a new
// SYN on the listening side). It is in no StateMask.
const Reused State = 0xff

// stateNames are tcplab's names; a request socket is SYN_RECV, as ss shows it.
var stateNames = [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSED", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "SYN_RECV"}

func (s State) String() string {
	if s > 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	if s == Reused {
		return "reused"
	}
	return fmt.Sprintf("STATE%d", uint8(s))
}

// ssNames are the states as ss spells them.
var ssNames = [...]string{"", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "UNCONN", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING", "SYN-RECV"}

// SSName is the state as ss's table spells it (ESTAB, CLOSE-WAIT), which
// every ss-like table of tcplab uses; JSON, metrics and the other views
// keep String's names.
func (s State) SSName() string {
	if s > 0 && int(s) < len(ssNames) {
		return ssNames[s]
	}
	return s.String()
}

// MarshalText writes the state's name, so JSON shows names.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name as MarshalText writes it (SYN_RECV
// reads as SynRecv, "reused" as Reused).
func (s *State) UnmarshalText(b []byte) error {
	for i := Established; i <= Closing; i++ {
		if i.String() == string(b) {
			*s = i
			return nil
		}
	}
	if string(b) == Reused.String() {
		*s = Reused
		return nil
	}
	return fmt.Errorf("unknown state %q", b)
}

// StateMask is a set of states, bit n for state n, as sock_diag takes it.
type StateMask uint32

// AllStates holds every state.
const AllStates StateMask = 0xfff &^ 1

// Has reports whether s is in the mask.
func (m StateMask) Has(s State) bool { return m&(1<<s) != 0 }

// Mask returns the set holding the given states.
func Mask(states ...State) StateMask {
	var m StateMask
	for _, s := range states {
		m |= 1 << s
	}
	return m
}

// stateGroups are ss's groups of states, under ss's names.
var stateGroups = map[string]StateMask{
	"all":          AllStates,
	"connected":    AllStates &^ Mask(Listen, Close),
	"synchronized": AllStates &^ Mask(Listen, Close, SynSent, SynRecv, NewSynRecv),
	"bucket":       Mask(SynRecv, NewSynRecv, TimeWait),
	"big":          AllStates &^ Mask(SynRecv, NewSynRecv, TimeWait),
	"listening":    Mask(Listen),
	"closed":       Mask(Close),
}

// ParseStates turns state names and group names into a mask. Names may be
// written as tcplab writes them (TIME_WAIT), as ss does (time-wait, estab),
// in any case; several may be given in one argument, separated by commas.
// No names means every state.
func ParseStates(names []string) (StateMask, error) {
	var m StateMask
	for _, arg := range names {
		for _, n := range strings.Split(arg, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			k := strings.ToLower(strings.NewReplacer("_", "-").Replace(n))
			if g, ok := stateGroups[k]; ok {
				m |= g
				continue
			}
			s, ok := stateByName(k)
			if !ok {
				return 0, fmt.Errorf("unknown state %q (states: %s; groups: %s)", n, strings.Join(stateList(), ", "), strings.Join(groupList(), ", "))
			}
			m |= Mask(s)
			if s == SynRecv {
				m |= Mask(NewSynRecv)
			}
		}
	}
	if m == 0 {
		m = AllStates
	}
	return m, nil
}

func stateByName(k string) (State, bool) {
	switch k {
	case "estab":
		return Established, true
	case "syn-recv", "syn-received":
		return SynRecv, true
	case "closed", "close":
		return Close, true
	}
	for s := Established; s <= Closing; s++ {
		name := strings.ToLower(strings.ReplaceAll(s.String(), "_", "-"))
		if k == name || k == strings.ReplaceAll(name, "-", "") || k == strings.Replace(name, "wait", "wait-", 1) {
			return s, true
		}
	}
	return 0, false
}

func stateList() []string {
	var out []string
	for s := Established; s <= Closing; s++ {
		out = append(out, s.String())
	}
	return out
}

func groupList() []string {
	var out []string
	for g := range stateGroups {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// StateWords are words --state takes, for shell completion: the states
// as ss's filter names them (established, fin-wait-1, closed), then the
// groups.
func StateWords() []string {
	var out []string
	for s := Established; s <= Closing; s++ {
		w := strings.ToLower(strings.ReplaceAll(s.String(), "_", "-"))
		w = strings.Replace(strings.Replace(w, "wait1", "wait-1", 1), "wait2", "wait-2", 1)
		if s == Close {
			continue // "closed" is also a group
		}
		out = append(out, w)
	}
	return append(out, groupList()...)
}
