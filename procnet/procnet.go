// Package procnet reads the counter files of /proc/net. netstat and snmp
// hold pairs of lines, the first naming the fields of a group, the second
// holding their values, as in
//
//	TcpExt: SyncookiesSent SyncookiesRecv ...
//	TcpExt: 0 0 ...
//
// sockstat and sockstat6 hold one line per group of name-value pairs:
//
//	TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1
//
// The parsers know no field names, so new kernels' counters come through.
package procnet

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Counters maps "Group" then "Name" to a value: c["TcpExt"]["ListenDrops"].
type Counters map[string]map[string]int64

// Get returns a counter's value and whether it exists.
func (c Counters) Get(group, name string) (int64, bool) {
	v, ok := c[group][name]
	return v, ok
}

// Parse reads one or more files in the name-line/value-line format and
// merges them. A value line must follow its name line with the same group
// and as many fields; anything else is an error naming the line.
func Parse(data []byte) (Counters, error) {
	out := Counters{}
	return out, ParseInto(out, data)
}

// ParseInto adds the counters of data to c.
func ParseInto(c Counters, data []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		names := sc.Text()
		if strings.TrimSpace(names) == "" {
			continue
		}
		group, nameList, ok := cutGroup(names)
		if !ok {
			return fmt.Errorf("line %d: %q is not \"Group: names\"", line, names)
		}
		if !sc.Scan() {
			return fmt.Errorf("line %d: group %s has names but no values", line, group)
		}
		line++
		vg, valList, ok := strings.Cut(sc.Text(), ":")
		if !ok || vg != group {
			return fmt.Errorf("line %d: expected the values of %s, got %q", line, group, sc.Text())
		}
		nf, vf := strings.Fields(nameList), strings.Fields(valList)
		if len(nf) != len(vf) {
			return fmt.Errorf("line %d: %s has %d names but %d values", line, group, len(nf), len(vf))
		}
		m := c.group(group)
		for i, n := range nf {
			v, err := number(line, group, n, vf[i])
			if err != nil {
				return err
			}
			m[n] = v
		}
	}
	return sc.Err()
}

// cutGroup splits "Group: rest" where Group has no blanks.
func cutGroup(text string) (group, rest string, ok bool) {
	group, rest, ok = strings.Cut(text, ":")
	return group, rest, ok && group != "" && !strings.ContainsAny(group, " \t")
}

// group returns the map of a group's counters, made if needed.
func (c Counters) group(name string) map[string]int64 {
	m := c[name]
	if m == nil {
		m = map[string]int64{}
		c[name] = m
	}
	return m
}

// number reads a value; counters past 2^63 wrap, as the kernel's own do.
func number(line int, group, name, s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err == nil {
		return v, nil
	}
	u, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("line %d: %s %s: %q is not a number", line, group, name, s)
	}
	return int64(u), nil
}

// ParseSockstat reads /proc/net/sockstat or sockstat6: "GROUP: name value
// name value ..." per line. A line that is not a group followed by pairs
// is an error naming the line.
func ParseSockstat(data []byte) (Counters, error) {
	c := Counters{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.TrimSpace(text) == "" {
			continue
		}
		group, rest, ok := cutGroup(text)
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not \"GROUP: name value ...\"", line, text)
		}
		f := strings.Fields(rest)
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("line %d: %s has a name without a value", line, group)
		}
		m := c.group(group)
		for i := 0; i < len(f); i += 2 {
			v, err := number(line, group, f[i], f[i+1])
			if err != nil {
				return nil, err
			}
			m[f[i]] = v
		}
	}
	return c, sc.Err()
}
