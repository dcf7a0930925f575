package cli

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tcplab/tcplab/inspect"
)

// ssExpr reads what follows ss's options on its command line, the part of
// ss's filter that tcplab's kernel-side filter can say exactly:
//
//	state STATE ... exclude STATE ...    (as ss: the first of them starts
//	                                      from no state or from all, the
//	                                      others add or remove; they replace
//	                                      -l)
//	sport OP :PORT   dport OP :PORT      (OP: = == eq > gt >= ge < lt <= le;
//	                                      a bare :PORT means =)
//	src ADDR[/LEN]   dst ADDR[/LEN]      (also ADDR:PORT, [V6]:PORT, *:PORT)
//
// Conditions joined by "and" (or side by side) must all hold: those of one
// kind are intersected (sport >= :1024 and sport <= :2048 is one range).
// "or" binds looser than "and", as in ss; the filter takes alternatives of
// one kind only, so an expression with "or" may hold one kind of condition
// only, and anything it cannot say exactly is refused with the reason.
// Parentheses are allowed. The conditions add to the filter flags.
func (f *filterFlags) ssExpr(args []string) error {
	var words []string
	for _, a := range args {
		// '( sport = :22 )' arrives as one argument when quoted.
		a = strings.NewReplacer("(", " ( ", ")", " ) ").Replace(a)
		words = append(words, strings.Fields(a)...)
	}
	type cond struct{ kind, value string }
	var terms [][]cond // joined by or; the conditions of a term by and
	term := []cond{}
	var states []stateWord
	pendingOr := false
	for i := 0; i < len(words); i++ {
		w := strings.ToLower(words[i])
		next := func(what string) (string, error) {
			if i+1 >= len(words) {
				return "", fmt.Errorf("ss filter: %q needs %s after it", w, what)
			}
			i++
			return words[i], nil
		}
		switch w {
		case "(", ")", "and", "&&", "&":
			continue
		case "or", "||", "|":
			if len(term) == 0 {
				return fmt.Errorf("ss filter: %q with no condition before it", w)
			}
			terms = append(terms, term)
			term, pendingOr = []cond{}, true
			continue
		}
		pendingOr = false
		switch w {
		case "state", "exclude":
			s, err := next("a state")
			if err != nil {
				return err
			}
			states = append(states, stateWord{exclude: w == "exclude", name: s})
		case "sport", "dport":
			op, err := next("a port such as = :22")
			if err != nil {
				return err
			}
			port := op
			if !strings.HasPrefix(op, ":") {
				if port, err = next("a port such as :22"); err != nil {
					return err
				}
			} else {
				op = "="
			}
			r, err := portCondition(op, port)
			if err != nil {
				return fmt.Errorf("ss filter: %s %s %s: %w", w, op, port, err)
			}
			term = append(term, cond{w, r})
		case "src", "dst":
			a, err := next("an address")
			if err != nil {
				return err
			}
			if a == "=" || a == "==" || a == "eq" {
				if a, err = next("an address"); err != nil {
					return err
				}
			}
			prefix, port := splitAddrPort(a)
			if prefix != "" && prefix != "*" {
				term = append(term, cond{w, prefix})
			}
			if port != "" && port != "*" {
				kind := "sport"
				if w == "dst" {
					kind = "dport"
				}
				r, err := portCondition("=", port)
				if err != nil {
					return fmt.Errorf("ss filter: %s %s: %w", w, a, err)
				}
				term = append(term, cond{kind, r})
			}
		default:
			return fmt.Errorf("ss filter: %q is not understood here (tcplab takes state, exclude, sport, dport, src, dst, and, or, parentheses)", words[i])
		}
	}
	if pendingOr {
		return fmt.Errorf("ss filter: \"or\" with no condition after it")
	}
	if len(term) > 0 {
		terms = append(terms, term)
	}
	if len(terms) > 1 {
		kinds := map[string]bool{}
		for _, t := range terms {
			for _, c := range t {
				kinds[c.kind] = true
			}
		}
		if len(kinds) > 1 {
			return fmt.Errorf("ss filter: \"or\" among conditions of several kinds (%s): tcplab's filter takes alternatives of one kind only (sport = :22 or sport = :443), and all kinds together; give the kinds that must all hold with and, or as flags (--sport, --dst)", strings.Join(slices.Sorted(maps.Keys(kinds)), ", "))
		}
	}
	for _, t := range terms {
		byKind := map[string][]string{}
		var order []string
		for _, c := range t {
			if byKind[c.kind] == nil {
				order = append(order, c.kind)
			}
			byKind[c.kind] = append(byKind[c.kind], c.value)
		}
		for _, k := range order {
			v, err := intersect(k, byKind[k])
			if err != nil {
				return fmt.Errorf("ss filter: %w", err)
			}
			switch k {
			case "sport":
				f.sport = append(f.sport, v)
			case "dport":
				f.dport = append(f.dport, v)
			case "src":
				f.src = append(f.src, v)
			case "dst":
				f.dst = append(f.dst, v)
			}
		}
	}
	if len(states) > 0 {
		return f.applyStates(states)
	}
	return nil
}

// stateWord is one state or exclude of ss's filter.
type stateWord struct {
	exclude bool
	name    string
}

// applyStates computes the states as ss does: the first word starts from
// no state (state) or from all (exclude), each later one adds or removes.
// They replace -l, as in ss; states given with --state come first.
func (f *filterFlags) applyStates(words []stateWord) error {
	var mask inspect.StateMask
	if len(f.states) > 0 {
		m, err := inspect.ParseStates(f.states)
		if err != nil {
			return err
		}
		mask = m
	} else if words[0].exclude {
		mask = inspect.AllStates
	}
	for _, w := range words {
		m, err := inspect.ParseStates([]string{w.name})
		if err != nil {
			return err
		}
		if w.exclude {
			mask &^= m
		} else {
			mask |= m
		}
	}
	f.states, f.listening = nil, false
	for s := inspect.Established; s <= inspect.Closing; s++ {
		if mask.Has(s) {
			f.states = append(f.states, s.String())
		}
	}
	if len(f.states) == 0 {
		return fmt.Errorf("ss filter: every state is excluded")
	}
	return nil
}

// intersect is what conditions of one kind that must all hold leave: the
// common part of port ranges, the narrowest of nested prefixes.
func intersect(kind string, values []string) (string, error) {
	if len(values) == 1 {
		return values[0], nil
	}
	if kind == "sport" || kind == "dport" {
		lo, hi := uint64(1), uint64(65535)
		for _, v := range values {
			a, b, _ := strings.Cut(v, "-")
			x, _ := strconv.ParseUint(a, 10, 16)
			y := x
			if b != "" {
				y, _ = strconv.ParseUint(b, 10, 16)
			}
			lo, hi = max(lo, x), min(hi, y)
		}
		if lo > hi {
			return "", fmt.Errorf("%s: %s cannot all hold: no port matches", kind, strings.Join(values, " and "))
		}
		if lo == hi {
			return strconv.FormatUint(lo, 10), nil
		}
		return fmt.Sprintf("%d-%d", lo, hi), nil
	}
	best := netip.Prefix{}
	for _, v := range values {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, err2 := netip.ParseAddr(v)
			if err2 != nil {
				return "", fmt.Errorf("%s %s: not an address or prefix", kind, v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		switch {
		case !best.IsValid() || best.Contains(p.Addr()) && p.Bits() >= best.Bits():
			best = p
		case p.Contains(best.Addr()) && best.Bits() >= p.Bits():
		default:
			return "", fmt.Errorf("%s: %s cannot all hold", kind, strings.Join(values, " and "))
		}
	}
	return best.String(), nil
}

// portCondition turns ss's comparison of a port (":22", "22") into a port
// or range as --sport takes it.
func portCondition(op, port string) (string, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(port, ":"), 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("a port is 1 to 65535")
	}
	switch op {
	case "=", "==", "eq":
		return strconv.FormatUint(n, 10), nil
	case ">=", "ge", "geq":
		return fmt.Sprintf("%d-65535", n), nil
	case ">", "gt":
		if n == 65535 {
			return "", fmt.Errorf("no port is above 65535")
		}
		return fmt.Sprintf("%d-65535", n+1), nil
	case "<=", "le", "leq":
		return fmt.Sprintf("1-%d", n), nil
	case "<", "lt":
		if n == 1 {
			return "", fmt.Errorf("no port is below 1")
		}
		return fmt.Sprintf("1-%d", n-1), nil
	}
	return "", fmt.Errorf("%q is not a comparison tcplab's filter can make (= > >= < <=)", op)
}

// splitAddrPort splits ss's "10.0.0.1:80", "[::1]:80", "10.0.0.0/8" or
// ":80" into the address part and the port part.
func splitAddrPort(s string) (addr, port string) {
	if strings.HasPrefix(s, "[") {
		if i := strings.Index(s, "]"); i >= 0 {
			addr, rest := s[1:i], s[i+1:]
			return addr, strings.TrimPrefix(rest, ":")
		}
	}
	if strings.Count(s, ":") == 1 {
		i := strings.Index(s, ":")
		return s[:i], s[i+1:]
	}
	return s, "" // IPv4, or IPv6 without a port
}
