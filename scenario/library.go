package scenario

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Ext is the extension of scenario files.
const Ext = ".tcplab"

//go:embed library/*.tcplab
var libraryFS embed.FS

// Library parses every built-in scenario, in teaching order.
func Library() ([]*Scenario, error) {
	var out []*Scenario
	for _, n := range Names() {
		sc, err := Builtin(n)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// Names lists the built-in scenarios in teaching order: the order of
// tourOrder first, then any others alphabetically.
func Names() []string {
	ents, _ := libraryFS.ReadDir("library")
	have := map[string]bool{}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), Ext) {
			have[strings.TrimSuffix(e.Name(), Ext)] = true
		}
	}
	var out []string
	for _, n := range tourOrder {
		if have[n] {
			out = append(out, n)
			delete(have, n)
		}
	}
	rest := keysOf(have)
	sort.Strings(rest)
	return append(out, rest...)
}

// tourOrder is the teaching order: the normal life first, then each state
// frozen by a rule, then the rare cases.
var tourOrder = []string{
	"handshake", "hutu", "syn-sent", "syn-recv", "syn-recv-windows", "fin-wait-1", "close-wait",
	"last-ack", "time-wait", "time-wait-bind", "closing", "fin-ack-direct", "simultaneous-open",
	"rst-closed-port", "abortive-close", "linger-timeout", "close-unread-rst", "half-close",
	"close-wait-data-loss", "accept-overflow", "syn-flood", "blind-reset", "isn-prediction",
	"keepalive-dead-peer", "fin-wait-1-server-restart",
}

// BuiltinSource returns a built-in scenario's text.
func BuiltinSource(name string) (string, bool) {
	b, err := libraryFS.ReadFile(path.Join("library", name+Ext))
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Builtin parses a built-in scenario.
func Builtin(name string) (*Scenario, error) {
	src, ok := BuiltinSource(name)
	if !ok {
		return nil, fmt.Errorf("no built-in scenario %q (%s)", name, didYouMean(name, Names()))
	}
	return Parse(name+Ext, src)
}

// Load reads a built-in scenario by name, or a scenario file by path (a
// name with a slash or the .tcplab extension is a path).
func Load(arg string) (*Scenario, error) {
	if !strings.Contains(arg, "/") && !strings.HasSuffix(arg, Ext) {
		if _, ok := BuiltinSource(arg); ok {
			return Builtin(arg)
		}
		if _, err := os.Stat(arg); err != nil {
			return nil, fmt.Errorf("no built-in scenario %s and no such file (%s; `tcplab list` shows the library)", clip(strconv.Quote(arg)), didYouMean(arg, Names()))
		}
	}
	b, err := ReadFile(arg)
	if err != nil {
		return nil, err
	}
	return Parse(arg, string(b))
}

// ReadFile reads a scenario file of at most MaxSource bytes: a larger
// file, /dev/zero or an endless pipe is an error after MaxSource+1 bytes.
func ReadFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("open %s: %w", clip(name), pe.Err)
		}
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSource+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", clip(name), err)
	}
	if len(b) > MaxSource {
		return nil, fmt.Errorf("%s: more than %d bytes: a scenario file is at most %d MiB", clip(name), MaxSource, MaxSource>>20)
	}
	return b, nil
}
