package scenario

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Error is a problem in a scenario file, at a line and column, with what
// was expected and a hint.
type Error struct {
	Pos  Pos
	Msg  string
	Hint string
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return fmt.Sprintf("%s: %s", e.Pos, e.Msg)
	}
	return fmt.Sprintf("%s: %s (hint: %s)", e.Pos, e.Msg, e.Hint)
}

// ErrorList is every error found in a file, in line order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find the individual errors.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// suggest returns the candidate nearest to s, if it is near enough to be
// what the user meant.
func suggest(s string, candidates []string) string {
	if len(s) > 64 || len(candidates) > maxSuggest {
		// Nobody meant a name that long, and the distance costs the
		// product of the lengths for every candidate.
		return ""
	}
	best, bestD := "", 1<<30
	ls := strings.ToLower(s)
	limit := max(2, len(s)/3)
	for _, c := range candidates {
		if abs(len(c)-len(s)) > limit {
			continue // the distance is at least the difference in length
		}
		d := editDistance(ls, strings.ToLower(c))
		if d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	if bestD <= limit && best != "" {
		return best
	}
	// A candidate that contains what was typed, or the reverse, is also a
	// good guess ("overflow" for "ListenOverflows").
	for _, c := range candidates {
		lc := strings.ToLower(c)
		if len(ls) >= 4 && (strings.Contains(lc, ls) || strings.Contains(ls, lc)) {
			return c
		}
	}
	return ""
}

// clip shortens a text that echoes a long word (a message quoting a
// megabyte of input is no help): the start and end are kept, with the
// length in all.
func clip(s string) string {
	const keep = 160
	if len(s) <= keep+80 {
		return s
	}
	head, tail := s[:keep], s[len(s)-40:]
	for len(head) > 0 && !utf8.ValidString(head) {
		head = head[:len(head)-1]
	}
	for len(tail) > 0 && !utf8.ValidString(tail) {
		tail = tail[1:]
	}
	return fmt.Sprintf("%s…%s (%d bytes in all)", head, tail, len(s))
}

// maxSuggest is the most candidates a suggestion is looked for among.
const maxSuggest = 1000

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// didYouMean builds a hint: the nearest candidate, else the list.
func didYouMean(s string, candidates []string) string {
	if c := suggest(s, candidates); c != "" {
		return fmt.Sprintf("did you mean %q?", c)
	}
	return "one of: " + listOf(candidates)
}

func listOf(candidates []string) string {
	c := append([]string(nil), candidates...)
	sort.Strings(c)
	if len(c) > 12 {
		return strings.Join(c[:12], ", ") + fmt.Sprintf(" ... (%d in all)", len(c))
	}
	return strings.Join(c, ", ")
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions, and two neighbours swapped count one each (a
// typo like "dorp" is one step from "drop").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1) // row i-2
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
