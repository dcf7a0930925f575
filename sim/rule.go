package sim

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Action is what a rule does to a packet it matches.
type Action uint8

const (
	Drop      Action = iota // discard silently
	Reject                  // discard and answer with a TCP reset (iptables REJECT --reject-with tcp-reset)
	Delay                   // hold the packet Rule.Delay longer
	Duplicate               // deliver the packet twice
)

var actionNames = [...]string{"drop", "reject", "delay", "duplicate"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// ParseAction reads an action name.
func ParseAction(s string) (Action, bool) {
	for i, n := range actionNames {
		if n == s {
			return Action(i), true
		}
	}
	return 0, false
}

// Rule is a firewall rule of the lab, matched against packets entering
// (In) or leaving (Out) one host. Zero-valued match fields match anything.
// Rules of a host are tried in the order they were added; the first rule
// that acts decides, as in iptables.
type Rule struct {
	Host string
	Dir  trace.Dir

	// Flags match when packet.Flags & FlagsMask == FlagsValue, like
	// iptables' --tcp-flags MASK VALUE; a zero mask matches every packet.
	FlagsMask, FlagsValue wire.Flags
	SrcPort, DstPort      uint16
	SrcAddr, DstAddr      netip.Prefix

	// Skip lets the first Skip matching packets through; Count limits
	// the rule to that many packets after them (0: no limit). "The third
	// SYN" is Skip 2, Count 1.
	Skip, Count int
	// Probability, when between 0 and 1, makes the rule act on that share
	// of the packets it would act on, drawn from the run's seeded RNG.
	Probability float64

	Action Action
	Delay  time.Duration // for Delay

	// Label names the rule in traces; Summary() is used when empty.
	Label string

	id             int
	matched, acted int
	shown          string
}

// ID is the rule's number in its network, assigned by AddRule.
func (r *Rule) ID() int { return r.id }

// Hits is how many packets the rule acted on.
func (r *Rule) Hits() int { return r.acted }

// Validate reports a rule that can never work.
func (r *Rule) Validate() error {
	if r.Host == "" {
		return fmt.Errorf("rule has no host")
	}
	if r.FlagsValue&^r.FlagsMask != 0 {
		return fmt.Errorf("flags value %s has bits outside the mask %s", r.FlagsValue, r.FlagsMask)
	}
	if r.Skip < 0 || r.Count < 0 {
		return fmt.Errorf("skip and count cannot be negative")
	}
	if !(r.Probability >= 0 && r.Probability <= 1) { // NaN fails too
		return fmt.Errorf("probability %v is not between 0 and 1", r.Probability)
	}
	if r.Dir != trace.In && r.Dir != trace.Out {
		return fmt.Errorf("direction %d is neither in nor out", r.Dir)
	}
	if r.SrcAddr.IsValid() && r.DstAddr.IsValid() && r.SrcAddr.Addr().Is4() != r.DstAddr.Addr().Is4() {
		return fmt.Errorf("source %v and destination %v are of two families: no packet has both", r.SrcAddr, r.DstAddr)
	}
	if r.Action == Delay && r.Delay <= 0 {
		return fmt.Errorf("a delay rule needs a positive delay")
	}
	if r.Action > Duplicate {
		return fmt.Errorf("unknown action %d", r.Action)
	}
	return nil
}

// Summary describes the rule in the style of an iptables line:
// "server in flags SYN,ACK/SYN,ACK sport 80 drop".
func (r *Rule) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Host, r.Dir)
	if r.FlagsMask != 0 {
		if r.FlagsMask == 0xff {
			fmt.Fprintf(&b, " flags %s", r.FlagsValue)
		} else {
			fmt.Fprintf(&b, " flags %s/%s", r.FlagsValue, r.FlagsMask)
		}
	}
	if r.SrcAddr.IsValid() {
		fmt.Fprintf(&b, " src %s", r.SrcAddr)
	}
	if r.SrcPort != 0 {
		fmt.Fprintf(&b, " sport %d", r.SrcPort)
	}
	if r.DstAddr.IsValid() {
		fmt.Fprintf(&b, " dst %s", r.DstAddr)
	}
	if r.DstPort != 0 {
		fmt.Fprintf(&b, " dport %d", r.DstPort)
	}
	if r.Skip > 0 {
		fmt.Fprintf(&b, " skip %d", r.Skip)
	}
	if r.Count > 0 {
		fmt.Fprintf(&b, " count %d", r.Count)
	}
	if r.Probability > 0 && r.Probability < 1 {
		fmt.Fprintf(&b, " probability %g", r.Probability)
	}
	fmt.Fprintf(&b, " %s", r.Action)
	if r.Action == Delay {
		fmt.Fprintf(&b, " %v", r.Delay)
	}
	return b.String()
}

// name is how traces call the rule; computed once, since an installed rule
// never changes.
func (r *Rule) name() string {
	if r.shown == "" {
		r.shown = r.Label
		if r.shown == "" {
			r.shown = fmt.Sprintf("#%d %s", r.id, r.Summary())
		}
	}
	return r.shown
}

// Matches tests the packet against the rule's match fields.
func (r *Rule) Matches(s *wire.Segment) bool {
	if s.Flags&r.FlagsMask != r.FlagsValue {
		return false
	}
	if r.SrcPort != 0 && s.SrcPort != r.SrcPort {
		return false
	}
	if r.DstPort != 0 && s.DstPort != r.DstPort {
		return false
	}
	if r.SrcAddr.IsValid() && !r.SrcAddr.Contains(s.Src) {
		return false
	}
	if r.DstAddr.IsValid() && !r.DstAddr.Contains(s.Dst) {
		return false
	}
	return true
}
