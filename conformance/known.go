package conformance

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"
)

//go:embed known.txt
var knownText string

// Known is a documented difference between the simulator and Linux: a
// difference of Aspect on Host ("*" for any host, and any aspect when
// Aspect is "*") in Scenario is expected, for Reason.
type Known struct {
	Line     int
	Scenario string
	Host     string
	Aspect   string
	Reason   string
}

// KnownDifferences is the list in known.txt, built into the binary.
func KnownDifferences() ([]Known, error) { return ParseKnown(knownText) }

// ParseKnown reads a known-differences list: one entry per line,
// "SCENARIO HOST ASPECT REASON...", where a reason may continue on the
// following lines indented by whitespace; # starts a comment line.
func ParseKnown(text string) ([]Known, error) {
	var out []Known
	for i, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") || strings.TrimSpace(line) == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("known.txt:%d: a continuation line before any entry", i+1)
			}
			out[len(out)-1].Reason += " " + strings.TrimSpace(line)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("known.txt:%d: want SCENARIO HOST ASPECT REASON, got %q", i+1, line)
		}
		if f[2] != "*" && !slices.Contains(Aspects, f[2]) {
			return nil, fmt.Errorf("known.txt:%d: unknown aspect %q (one of %s, or *)", i+1, f[2], strings.Join(Aspects, ", "))
		}
		out = append(out, Known{Line: i + 1, Scenario: f[0], Host: f[1], Aspect: f[2], Reason: strings.Join(f[3:], " ")})
	}
	return out, nil
}

// Explain returns the entry that covers a difference in a scenario, or nil.
func Explain(known []Known, scenario string, d Difference) *Known {
	for i := range known {
		k := &known[i]
		if k.Scenario != scenario {
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
)

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
