package conformance

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"
	"time"
)

//go:embed known.txt
var knownText string

// Known is a documented difference between the simulator and Linux.
//
// A behaviour (Name set, Scenario empty) is a pattern recognised in any
// scenario: where a connection's items (states, or segments sent) on
// the two backends part, the simulator's items match Sim and the
// kernel's match Kernel, each run of items within Within of its first.
//
// A scenario entry (Scenario set) covers every difference of Aspect on
// Host ("*" for any host, and any aspect when Aspect is "*") in one
// scenario: kept for differences that belong to what one scenario does.
type Known struct {
	Line     int
	Scenario string
	Host     string
	Aspect   string
	Reason   string

	Name   string
	Sim    [][]string // items, each a list of words; "$x" binds a word, "*" is any word
	Kernel [][]string
	Within time.Duration
}

// Behaviour reports whether the entry is a pattern for any scenario.
func (k *Known) Behaviour() bool { return k.Name != "" }

// Label names the entry in reports: "known.txt:12 (behaviour fin-wait2-in-passing)".
func (k *Known) Label() string {
	if k.Behaviour() {
		return fmt.Sprintf("known.txt:%d (behaviour %s)", k.Line, k.Name)
	}
	return fmt.Sprintf("known.txt:%d (%s %s %s)", k.Line, k.Scenario, k.Host, k.Aspect)
}

// KnownDifferences is the list in known.txt, built into the binary.
func KnownDifferences() ([]Known, error) { return ParseKnown(knownText) }

// ParseKnown reads a known-differences list. # starts a comment line.
// A scenario entry is one line, "SCENARIO HOST ASPECT REASON...", whose
// reason may continue on the following lines indented by whitespace. A
// behaviour starts with "behaviour NAME ASPECT" and its indented lines
// say "simulator: ITEM; ITEM", "kernel: ITEM; ITEM" (an empty side is
// "-"), optionally "within: DURATION", and "reason: ..." (which may
// continue on further indented lines).
func ParseKnown(text string) ([]Known, error) {
	var out []Known
	inReason := false
	for i, line := range strings.Split(text, "\n") {
		ln := i + 1
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "#") || trim == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("known.txt:%d: a continuation line before any entry", ln)
			}
			k := &out[len(out)-1]
			if !k.Behaviour() {
				k.Reason = strings.TrimSpace(k.Reason + " " + trim)
				continue
			}
			field, rest, ok := strings.Cut(trim, ":")
			switch {
			case ok && field == "simulator":
				k.Sim, inReason = parseItems(rest), false
			case ok && field == "kernel":
				k.Kernel, inReason = parseItems(rest), false
			case ok && field == "within":
				d, err := time.ParseDuration(strings.TrimSpace(rest))
				if err != nil || d < 0 {
					return nil, fmt.Errorf("known.txt:%d: within: %q is not a duration", ln, strings.TrimSpace(rest))
				}
				k.Within, inReason = d, false
			case ok && field == "reason":
				k.Reason, inReason = strings.TrimSpace(rest), true
			case inReason:
				k.Reason += " " + trim
			default:
				return nil, fmt.Errorf("known.txt:%d: behaviour %s: want simulator:, kernel:, within: or reason:, got %q", ln, k.Name, trim)
			}
			continue
		}
		inReason = false
		if err := checkLast(out); err != nil {
			return nil, err
		}
		f := strings.Fields(line)
		if f[0] == "behaviour" {
			if len(f) != 3 {
				return nil, fmt.Errorf("known.txt:%d: want behaviour NAME ASPECT, got %q", ln, line)
			}
			if f[2] != AspectStates && f[2] != AspectPackets {
				return nil, fmt.Errorf("known.txt:%d: behaviour %s: aspect %q (a behaviour is a pattern of states or packets)", ln, f[1], f[2])
			}
			for _, k := range out {
				if k.Name == f[1] {
					return nil, fmt.Errorf("known.txt:%d: behaviour %s is already on line %d", ln, f[1], k.Line)
				}
			}
			out = append(out, Known{Line: ln, Name: f[1], Host: "*", Aspect: f[2]})
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("known.txt:%d: want SCENARIO HOST ASPECT REASON, got %q", ln, line)
		}
		if f[2] != "*" && !slices.Contains(Aspects, f[2]) {
			return nil, fmt.Errorf("known.txt:%d: unknown aspect %q (one of %s, or *)", ln, f[2], strings.Join(Aspects, ", "))
		}
		out = append(out, Known{Line: ln, Scenario: f[0], Host: f[1], Aspect: f[2], Reason: strings.Join(f[3:], " ")})
	}
	if err := checkLast(out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkLast checks that the last behaviour read is complete.
func checkLast(out []Known) error {
	if len(out) == 0 || !out[len(out)-1].Behaviour() {
		return nil
	}
	k := out[len(out)-1]
	switch {
	case k.Sim == nil || k.Kernel == nil:
		return fmt.Errorf("known.txt:%d: behaviour %s needs both a simulator: and a kernel: line", k.Line, k.Name)
	case len(k.Sim) == 0 && len(k.Kernel) == 0:
		return fmt.Errorf("known.txt:%d: behaviour %s: both sides are empty", k.Line, k.Name)
	case k.Reason == "":
		return fmt.Errorf("known.txt:%d: behaviour %s has no reason:", k.Line, k.Name)
	}
	return nil
}

// parseItems reads "ITEM; ITEM" ("-" for none) into items of words.
func parseItems(s string) [][]string {
	s = strings.TrimSpace(s)
	out := [][]string{}
	if s == "-" {
		return out
	}
	for _, it := range strings.Split(s, ";") {
		if w := strings.Fields(it); len(w) > 0 {
			out = append(out, w)
		}
	}
	return out
}

// matchItems tells whether items, from the first, match the pattern's
// words, binding "$x" words consistently in binds, and lie within
// within of the first item.
func matchItems(pat [][]string, items []item, within time.Duration, binds map[string]string) bool {
	if len(items) < len(pat) {
		return false
	}
	for i, p := range pat {
		it := items[i]
		if i > 0 && it.at-items[0].at > within {
			return false
		}
		w := strings.Fields(it.text)
		if len(w) != len(p) {
			return false
		}
		for j, pw := range p {
			switch {
			case pw == "*":
			case strings.HasPrefix(pw, "$") && len(pw) > 1:
				if v, ok := binds[pw]; ok && v != w[j] {
					return false
				}
				binds[pw] = w[j]
			case pw != w[j]:
				return false
			}
		}
	}
	return true
}

// recognise finds a behaviour of the aspect whose simulator side matches
// a from the start and kernel side matches b from the start; whole asks
// for sides that match all of a and all of b.
func recognise(known []Known, aspect string, a, b []item, whole bool) *Known {
	for i := range known {
		k := &known[i]
		if !k.Behaviour() || k.Aspect != aspect {
			continue
		}
		if whole && (len(k.Sim) != len(a) || len(k.Kernel) != len(b)) {
			continue
		}
		binds := map[string]string{}
		if matchItems(k.Sim, a, k.Within, binds) && matchItems(k.Kernel, b, k.Within, binds) {
			return k
		}
	}
	return nil
}

// Explain returns the entry that covers a difference in a scenario, or
// nil: the behaviour Compare recognised, or a scenario entry.
func Explain(known []Known, scenario string, d Difference) *Known {
	if d.Known != nil {
		return d.Known
	}
	for i := range known {
		k := &known[i]
		if k.Behaviour() || k.Scenario != scenario {
			continue
		}
		if k.Host != "*" && k.Host != d.Host {
			continue
		}
		if k.Aspect != "*" && k.Aspect != d.Aspect {
			continue
		}
		return k
	}
	return nil
}

// Verdicts of a scenario's comparison.
const (
	VerdictAgrees  = "agrees"
	VerdictKnown   = "known differences"
	VerdictDiffers = "DIFFERS"
	// VerdictInconclusive: a difference no entry explains follows a step
	// the harness started out of order (an Inversion), so it may be the
	// harness's rather than TCP's.
	VerdictInconclusive = "inconclusive"
)

// Conclude gives a comparison's verdict, the first difference that
// decided it, and for an inconclusive one the inversion that made it so:
// a difference no entry explains is TCP's only if it comes before any
// step the harness started out of order (in the simulator's time).
func Conclude(known []Known, scenario string, c *Comparison) (string, *Difference, *Inversion) {
	v, first := Verdict(known, scenario, c.Differences)
	if v != VerdictDiffers {
		return v, first, nil
	}
	var d0 *Difference
	var inv0 *Inversion
	for i := range c.Differences {
		d := &c.Differences[i]
		if Explain(known, scenario, *d) != nil {
			continue
		}
		inv := c.inversionBefore(d.At)
		if inv == nil {
			return VerdictDiffers, d, nil
		}
		if d0 == nil {
			d0, inv0 = d, inv
		}
	}
	return VerdictInconclusive, d0, inv0
}

// inversionBefore is the first inversion at or before the simulator's
// time at, or nil.
func (c *Comparison) inversionBefore(at time.Duration) *Inversion {
	for i := range c.Inversions {
		if c.Inversions[i].At <= at {
			return &c.Inversions[i]
		}
	}
	return nil
}

// Verdict classifies a scenario's differences: none, all documented, or
// at least one not documented (the first such is returned).
func Verdict(known []Known, scenario string, ds []Difference) (string, *Difference) {
	if len(ds) == 0 {
		return VerdictAgrees, nil
	}
	for i := range ds {
		if Explain(known, scenario, ds[i]) == nil {
			return VerdictDiffers, &ds[i]
		}
	}
	return VerdictKnown, &ds[0]
}
