package inspect

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePorts reads ports and ranges: "80", "8000-8080", ":443", several
// separated by commas.
func ParsePorts(args []string) ([]PortRange, error) {
	var out []PortRange
	for _, arg := range args {
		for _, p := range strings.Split(arg, ",") {
			p = strings.TrimPrefix(strings.TrimSpace(p), ":")
			if p == "" {
				continue
			}
			lo, hi, isRange := strings.Cut(p, "-")
			a, err := strconv.ParseUint(lo, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("bad port %q: want a number 0-65535 or a range like 8000-8080", p)
			}
			b := a
			if isRange {
				if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
					return nil, fmt.Errorf("bad port %q: want a number 0-65535 or a range like 8000-8080", p)
				}
			}
			if a > b {
				return nil, fmt.Errorf("bad port range %q: %d is above %d", p, a, b)
			}
			out = append(out, PortRange{uint16(a), uint16(b)})
		}
	}
	return out, nil
}

// ParsePrefixes reads addresses and prefixes ("10.0.0.1", "10.0.0.0/8",
// "::1"), several separated by commas.
func ParsePrefixes(args []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, arg := range args {
		for _, a := range strings.Split(arg, ",") {
			a = strings.Trim(strings.TrimSpace(a), "[]")
			if a == "" {
				continue
			}
			if strings.Contains(a, "%") {
				return nil, fmt.Errorf("bad address %q: sock_diag filters cannot match an IPv6 zone (%%...)", a)
			}
			if strings.Contains(a, "/") {
				p, err := netip.ParsePrefix(a)
				if err != nil {
					return nil, fmt.Errorf("bad address prefix %q: %w", a, err)
				}
				out = append(out, p.Masked())
				continue
			}
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return nil, fmt.Errorf("bad address %q: %w", a, err)
			}
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out, nil
}
