package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tcplab/tcplab/inspect"
)

// ssExpr reads what follows ss's options on its command line, the subset
// of ss's filter that tcplab's kernel-side filter can say:
//
//	state STATE ... exclude STATE ...    (states or groups, as --state)
//	sport OP :PORT   dport OP :PORT      (OP: = == eq != is refused,
//	                                      > gt >= ge < lt <= le; a bare
//	                                      :PORT means =)
//	src ADDR[/LEN]   dst ADDR[/LEN]      (also ADDR:PORT, [V6]:PORT)
//
// Parentheses and "and" are allowed anywhere; "or" only between
// conditions of one kind (sport or sport), as the kernel filter takes
// alternatives within a kind and all kinds together. The words add to
// the filter flags.
func (f *filterFlags) ssExpr(args []string) error {
	var words []string
	for _, a := range args {
		// '( sport = :22 )' arrives as one argument when quoted.
		a = strings.NewReplacer("(", " ( ", ")", " ) ").Replace(a)
		words = append(words, strings.Fields(a)...)
	}
	var excluded []string
	lastKind, pendingOr := "", false
	ored := map[string]bool{}     // kinds joined by or
	withPort := map[string]bool{} // src or dst given with a port
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
		case "(", ")", "and", "&&":
			continue
		case "or", "||":
			if lastKind == "" {
				return fmt.Errorf("ss filter: %q with nothing before it", w)
			}
			pendingOr = true
			continue
		}
		kind := w
		if kind == "exclude" {
			kind = "state"
		}
		if pendingOr && kind != lastKind {
			return fmt.Errorf("ss filter: %q or %q: tcplab's filter takes alternatives of one kind only (sport or sport), and all kinds together", lastKind, kind)
		}
		if pendingOr {
			ored[kind] = true
		}
		pendingOr = false
		switch w {
		case "state", "exclude":
			s, err := next("a state")
			if err != nil {
				return err
			}
			if w == "state" {
				f.states = append(f.states, s)
			} else {
				excluded = append(excluded, s)
			}
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
			if w == "sport" {
				f.sport = append(f.sport, r)
			} else {
				f.dport = append(f.dport, r)
			}
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
				if w == "src" {
					f.src = append(f.src, prefix)
				} else {
					f.dst = append(f.dst, prefix)
				}
			}
			if port != "" && port != "*" {
				withPort[w] = true
				if w == "src" {
					f.sport = append(f.sport, port)
				} else {
					f.dport = append(f.dport, port)
				}
			}
		default:
			return fmt.Errorf("ss filter: %q is not understood here (tcplab takes state, exclude, sport, dport, src, dst, and, or between alike, parentheses)", words[i])
		}
		lastKind = kind
	}
	if pendingOr {
		return fmt.Errorf("ss filter: \"or\" with nothing after it")
	}
	for _, k := range []string{"src", "dst"} {
		if ored[k] && withPort[k] {
			return fmt.Errorf("ss filter: %s ADDR:PORT or %s ...: tcplab's filter would take every address with every port; give the ports with sport or dport", k, k)
		}
	}
	if len(excluded) > 0 {
		keep := inspect.AllStates
		if len(f.states) > 0 {
			m, err := inspect.ParseStates(f.states)
			if err != nil {
				return err
			}
			keep = m
		}
		drop, err := inspect.ParseStates(excluded)
		if err != nil {
			return err
		}
		f.states = nil
		for s := inspect.Established; s <= inspect.Closing; s++ {
			if keep.Has(s) && !drop.Has(s) {
				f.states = append(f.states, s.String())
			}
		}
		if len(f.states) == 0 {
			return fmt.Errorf("ss filter: every state is excluded")
		}
	}
	return nil
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
