package wire

import (
	"fmt"
	"strings"
)

// Flags are the eight TCP control bits, in header bit order.
type Flags uint8

const (
	FIN Flags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// flagNames lists the flags in the order tcpdump prints them.
var flagNames = [...]struct {
	f      Flags
	letter byte
	name   string
}{
	{FIN, 'F', "FIN"},
	{SYN, 'S', "SYN"},
	{RST, 'R', "RST"},
	{PSH, 'P', "PSH"},
	{ACK, '.', "ACK"},
	{URG, 'U', "URG"},
	{ECE, 'E', "ECE"},
	{CWR, 'W', "CWR"},
}

// Has reports whether all bits of f2 are set in f.
func (f Flags) Has(f2 Flags) bool { return f&f2 == f2 }

// Any reports whether any bit of f2 is set in f.
func (f Flags) Any(f2 Flags) bool { return f&f2 != 0 }

// Short is the tcpdump spelling: "S", "S.", "F.", "R.", "P.", "." ...
func (f Flags) Short() string {
	if f == 0 {
		return "none"
	}
	var b [8]byte
	n := 0
	for _, fn := range flagNames {
		if f&fn.f != 0 {
			b[n] = fn.letter
			n++
		}
	}
	return string(b[:n])
}

// ParseShort reads the tcpdump spelling Short writes ("S.", "F.", "none").
func ParseShort(s string) (Flags, bool) {
	if s == "none" {
		return 0, true
	}
	if s == "" {
		return 0, false
	}
	var f Flags
next:
	for i := 0; i < len(s); i++ {
		for _, fn := range flagNames {
			if s[i] == fn.letter {
				f |= fn.f
				continue next
			}
		}
		return 0, false
	}
	return f, true
}

// String is the iptables spelling: "SYN,ACK", "FIN,PSH,ACK", or "NONE".
func (f Flags) String() string {
	if f == 0 {
		return "NONE"
	}
	var parts []string
	for _, fn := range flagNames {
		if f&fn.f != 0 {
			parts = append(parts, fn.name)
		}
	}
	return strings.Join(parts, ",")
}

// ParseFlags reads a comma-separated list of flag names ("SYN,ACK"),
// case-insensitive; "NONE" is the empty set and "ALL" every flag.
func ParseFlags(s string) (Flags, bool) {
	var f Flags
	for _, part := range strings.Split(s, ",") {
		part = strings.ToUpper(strings.TrimSpace(part))
		switch part {
		case "NONE":
			continue
		case "ALL":
			f = 0xff
			continue
		}
		found := false
		for _, fn := range flagNames {
			if fn.name == part {
				f |= fn.f
				found = true
				break
			}
		}
		if !found {
			return 0, false
		}
	}
	return f, true
}

// MarshalText writes the iptables spelling, so JSON shows "SYN,ACK".
func (f Flags) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (f *Flags) UnmarshalText(b []byte) error {
	v, ok := ParseFlags(string(b))
	if !ok {
		return fmt.Errorf("unknown TCP flags %q", b)
	}
	*f = v
	return nil
}
