package pkt

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tcplab/tcplab/tcp"
)

// Shell lines on the engine. The engine has no shell: it understands the
// commands that set kernel settings (sysctl -q net.ipv4.X=Y, echo N >
// /proc/sys/net/ipv4/X) and the shell files they are kept in (a
// defaults.sh next to the scripts), and lists every other command, and
// every setting it does not model, as ignored.

// Bounds of shell-line interpretation: files that include files, a
// file's size, and the lines of a run in all (each file is read once).
const (
	maxShellDepth = 4
	maxShellBytes = 1 << 20
	maxShellLines = 10000
)

func (r *player) command(ev *Event) *stop {
	for _, line := range shellLines(ev.Text) {
		r.shell(line, r.opt.Dir, 0)
	}
	if r.shellStop != nil {
		st := r.shellStop
		r.shellStop = nil
		st.line = ev.Pos.Line
		return st
	}
	return nil
}

// shell interprets one command line: its commands one by one, a
// command after && only when the one before it succeeded. As in a shell,
// the line fails when its last command does.
func (r *player) shell(cmd, dir string, depth int) {
	if r.shellLines++; r.shellLines > maxShellLines {
		if r.shellLines == maxShellLines+1 {
			r.ignore("...", fmt.Sprintf("more than %d shell lines: the rest are not read", maxShellLines))
		}
		return
	}
	cmd = strings.TrimSpace(cmd)
	if cmd == "" || strings.HasPrefix(cmd, "#") {
		return
	}
	// As a shell runs a list: a command after && runs only when the one
	// before succeeded, one after ; always; the line's status is the last
	// command's that ran. A line that fails makes the script unsupported:
	// its run would not be the one the script describes.
	parts, ands := splitCommands(cmd)
	ok, why := true, ""
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if i > 0 && ands[i-1] && !ok {
			r.ignore(p, "not run: the command before && failed")
			continue
		}
		ok, why = r.shellCommand(p, dir, depth)
	}
	if !ok {
		r.shellUnsupported(cmd, why)
	}
}

// shellCommand interprets one command; it reports whether it succeeded,
// and why not. Only a tool (tc, ip) can fail: what is not a setting is
// listed as ignored.
func (r *player) shellCommand(cmd, dir string, depth int) (bool, string) {
	if cmd == "" {
		return true, ""
	}
	cmd, ok := arith(cmd)
	if !ok {
		r.ignore(cmd, "arithmetic the engine does not evaluate")
		return true, ""
	}
	f := dropRedirections(fields(cmd))
	if len(f) == 0 {
		return true, ""
	}
	switch {
	case f[0] == "sysctl":
		args := f[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "-") {
			args = args[1:]
		}
		if len(args) == 0 {
			r.ignore(cmd, "sysctl without a setting")
		}
		for _, a := range args {
			name, val, ok := strings.Cut(a, "=")
			if !ok {
				r.ignore(cmd, "sysctl "+a+" reads a setting")
				continue
			}
			r.sysctl(strings.ReplaceAll(name, "/", "."), val, cmd) // sysctl takes net/ipv4/x too
		}
	case strings.HasSuffix(f[0], "set_sysctls.py"):
		// packetdrill's helper: set_sysctls.py /proc/sys/net/ipv4/X=V ...
		for _, a := range f[1:] {
			path, val, ok := strings.Cut(a, "=")
			if !ok || !strings.HasPrefix(path, "/proc/sys/") {
				r.ignore(cmd, a+" is not /proc/sys/NAME=VALUE")
				continue
			}
			r.sysctl(strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", "."), val, cmd)
		}
	case f[0] == "echo" && len(f) == 4 && f[2] == ">" && strings.HasPrefix(f[3], "/proc/sys/"):
		name := strings.ReplaceAll(strings.TrimPrefix(f[3], "/proc/sys/"), "/", ".")
		r.sysctl(name, f[1], cmd)
	case f[0] == "tc" || f[0] == "ip" || f[0] == "ethtool":
		args := make([]string, len(f))
		for i, a := range f {
			args[i] = strings.Trim(a, `"'`)
		}
		t, ok := r.b.(toolRunner)
		if !ok && args[0] == "ethtool" {
			// The engine's TSO packets reach the TUN device whole
			// only while it has the offload.
			if on, ok := engineTSO(args); ok {
				// Linux builds TSO packets all the same; without the
				// device's offload, software GSO cuts them up.
				v := "1"
				if on {
					v = "0"
				}
				if err := r.b.Set(LocalHost, "gso_split", v); err == nil {
					return true, ""
				}
			}
			r.shellUnsupported(cmd, "only ethtool -K tun0 tso|gso on|off is modelled")
			return false, "only ethtool -K tun0 tso|gso on|off is modelled"
		}
		if !ok {
			if drop, ok := engineQdisc(args); ok {
				v := "0"
				if drop {
					v = "1"
				}
				if err := r.b.Set(LocalHost, "output_drop", v); err == nil {
					return true, ""
				}
			}
			if why := neutralTool(args); why != "" {
				r.ignore(cmd, why)
				return true, ""
			}
			// Wherever it stands in its line: the engine would run
			// without what the script set up.
			r.shellUnsupported(cmd, "the engine has no qdisc or route to change")
			return false, "the engine has no qdisc or route to change"
		}
		if err := t.RunTool(LocalHost, args); err != nil {
			r.ignore(cmd, err.Error())
			return false, err.Error()
		}
	case len(f) == 1 && (strings.HasSuffix(f[0], ".sh") || strings.Contains(f[0], "/")):
		r.shellFile(f[0], dir, depth, cmd)
	default:
		r.ignore(cmd, "not a setting")
	}
	return true, ""
}

// shellUnsupported records the first command that makes the script
// unsupported.
func (r *player) shellUnsupported(line, why string) {
	if r.shellStop == nil {
		r.shellStop = unsupportedAt(0, "shell line %s failed: %s", line, why)
	}
}

// engineTSO reads `ethtool -K tun0 tso|gso on|off ...`: whether the
// device would still take TSO packets (both on; either off stops them).
func engineTSO(a []string) (on, ok bool) {
	if len(a) < 5 || (a[1] != "-K" && a[1] != "--features" && a[1] != "--offload") || a[2] != "tun0" || (len(a)-3)%2 != 0 {
		return false, false
	}
	on = true
	for i := 3; i+1 < len(a); i += 2 {
		if (a[i] != "tso" && a[i] != "gso") || (a[i+1] != "on" && a[i+1] != "off") {
			return false, false
		}
		on = on && a[i+1] == "on"
	}
	return on, true
}

// engineQdisc reads the qdisc commands the engine models on tun0's root:
// a FIFO with a limit of 0, which drops every packet (drop true), and a
// FIFO without a limit or the root qdisc's removal, which drop nothing.
func engineQdisc(a []string) (drop, ok bool) {
	if len(a) < 6 || a[0] != "tc" || a[1] != "qdisc" || a[3] != "dev" || a[4] != "tun0" || a[5] != "root" {
		return false, false
	}
	switch a[2] {
	case "del", "delete":
		return false, len(a) == 6
	case "add", "replace":
		if len(a) < 7 || (a[6] != "pfifo" && a[6] != "bfifo" && a[6] != "pfifo_fast") {
			return false, false
		}
		switch {
		case len(a) == 7:
			return false, true
		case len(a) == 9 && a[6] != "pfifo_fast" && a[7] == "limit" && a[8] == "0":
			return true, true
		}
	}
	return false, false
}

// neutralTool says why a tc or ip command changes nothing the engine
// models ("" if it would): flushing the TCP metrics cache (the engine
// keeps none), a plain FIFO qdisc or its removal (the engine's output
// never queues), or a command that only shows.
func neutralTool(a []string) string {
	if len(a) < 3 {
		return ""
	}
	switch {
	case a[2] == "show":
		return "shows only"
	case a[0] == "ip" && (a[1] == "tcp_metrics" || a[1] == "tcpmetrics") && a[2] == "flush":
		return "the engine keeps no TCP metrics cache: nothing to flush"
	case a[0] == "tc" && a[1] == "qdisc" && (a[2] == "del" || a[2] == "delete"):
		return "the engine's output has no qdisc"
	case a[0] == "tc" && a[1] == "qdisc" && (a[2] == "add" || a[2] == "replace" || a[2] == "change"):
		for _, x := range a[3:] {
			if x == "limit" || x == "netem" || x == "fq" || x == "fq_codel" || x == "tbf" || x == "htb" || x == "prio" {
				return ""
			}
		}
		for _, x := range a[3:] {
			if x == "pfifo" || x == "pfifo_fast" || x == "bfifo" {
				return "a FIFO qdisc without a limit: the engine's output never queues"
			}
		}
	}
	return ""
}

// shellFile interprets a shell file, line by line.
func (r *player) shellFile(path, dir string, depth int, cmd string) {
	if r.opt.NoFiles {
		r.ignore(cmd, "files are not read here")
		return
	}
	if depth >= maxShellDepth {
		r.ignore(cmd, "shell files nested too deeply")
		return
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	if r.shellRead[path] {
		return // each file once a run: its settings are applied already
	}
	if r.shellRead == nil {
		r.shellRead = map[string]bool{}
	}
	r.shellRead[path] = true
	// Only a regular file: a FIFO or a device would block or never end.
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
		why := "not a regular file"
		if err != nil {
			why = err.Error()
		}
		r.ignore(cmd, why)
		return
	}
	fh, err := os.Open(path)
	if err != nil {
		r.ignore(cmd, err.Error())
		return
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxShellBytes+1))
	if err != nil || len(b) > maxShellBytes {
		r.ignore(cmd, "not read (larger than 1 MB, or unreadable)")
		return
	}
	for _, line := range shellLines(string(b)) {
		r.shell(line, filepath.Dir(path), depth+1)
	}
}

// toolRunner is a backend that runs tc and ip in the stack's namespace.
type toolRunner interface {
	RunTool(host string, argv []string) error
}

// sysctlSetter is a backend with real sysctls (the kernel's): a
// script's settings are written as they are, in the stack's namespace.
type sysctlSetter interface {
	SetSysctl(host, name, value string) error
}

// sysctl applies net.X=V: on the kernel as it is, on the engine when it
// models the setting.
func (r *player) sysctl(name, val, cmd string) {
	val = strings.Trim(val, `"'`)
	if k, ok := r.b.(sysctlSetter); ok {
		if err := k.SetSysctl(LocalHost, name, val); err != nil {
			r.ignore(cmd, err.Error())
		}
		return
	}
	if name == "net.ipv4.tcp_congestion_control" {
		r.ignore(cmd, "the engine has one congestion control: NewReno-like, with Linux's slow start and CUBIC's ssthresh after a loss")
		return
	}
	setting, ok := strings.CutPrefix(name, "net.ipv4.")
	if !ok {
		r.ignore(cmd, name+" is not a TCP setting the engine models")
		return
	}
	if tcp.SettingHelp(setting) == "" {
		r.ignore(cmd, name+" is not modelled by the engine")
		return
	}
	if err := r.b.Set(LocalHost, setting, val); err != nil {
		r.ignore(cmd, err.Error())
	}
}

func (r *player) ignore(cmd, why string) {
	r.ignored = append(r.ignored, fmt.Sprintf("%s (%s)", cmd, why))
}

// shellLines splits shell text into lines, a line that ends in a
// backslash continuing on the next.
func shellLines(text string) []string {
	text = strings.ReplaceAll(text, "\\\r\n", " ")
	text = strings.ReplaceAll(text, "\\\n", " ")
	return strings.Split(text, "\n")
}

// splitCommands splits a line at ; and && outside quotes; ands[i] says
// the separator after part i was &&.
func splitCommands(s string) (parts []string, ands []bool) {
	quote := byte(0)
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == ';':
			parts, ands = append(parts, s[start:i]), append(ands, false)
			start = i + 1
		case c == '&' && i+1 < len(s) && s[i+1] == '&':
			parts, ands = append(parts, s[start:i]), append(ands, true)
			start = i + 2
			i++
		}
	}
	return append(parts, s[start:]), ands
}

// dropRedirections removes redirections of a command's own output
// (2>/dev/null, > /dev/null, 2>&1), which change nothing here.
func dropRedirections(f []string) []string {
	out := f[:0:0]
	for i := 0; i < len(f); i++ {
		a := f[i]
		switch {
		case a == "2>&1" || a == ">&2":
		case (a == ">" || a == "2>" || a == "1>") && i+1 < len(f) && f[i+1] == "/dev/null":
			i++
		case a == ">/dev/null" || a == "2>/dev/null" || a == "1>/dev/null":
		default:
			out = append(out, a)
		}
	}
	return out
}

// fields splits a command line at spaces, keeping quoted parts (with
// their quotes) together: sysctl -q net.ipv4.tcp_rmem="4096 87380 6291456".
func fields(s string) []string {
	var out []string
	var cur strings.Builder
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			cur.WriteByte(c)
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
			cur.WriteByte(c)
		case c == ' ' || c == '\t':
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// arith replaces each $((...)) by its value: integers joined by * / + -,
// evaluated left to right with * and / first. It reports false for
// anything else in one.
func arith(s string) (string, bool) {
	if !strings.Contains(s, "$((") {
		return s, true
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "$((")
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		j := strings.Index(s[i:], "))")
		if j < 0 {
			return s, false
		}
		v, ok := evalArith(s[i+3 : i+j])
		if !ok {
			return s, false
		}
		b.WriteString(s[:i])
		b.WriteString(strconv.FormatInt(v, 10))
		s = s[i+j+2:]
	}
}

func evalArith(e string) (int64, bool) {
	e = strings.ReplaceAll(e, " ", "")
	sum, term := int64(0), int64(0)
	sign, op := int64(1), byte('*')
	term = 1
	for len(e) > 0 {
		n := 0
		for n < len(e) && e[n] >= '0' && e[n] <= '9' {
			n++
		}
		if n == 0 || n > 18 {
			return 0, false
		}
		v, _ := strconv.ParseInt(e[:n], 10, 64)
		switch op {
		case '*':
			term *= v
		case '/':
			if v == 0 {
				return 0, false
			}
			term /= v
		}
		if term > 1<<40 || term < -(1<<40) {
			return 0, false
		}
		e = e[n:]
		if len(e) == 0 {
			break
		}
		switch e[0] {
		case '*', '/':
			op = e[0]
		case '+', '-':
			sum += sign * term
			sign, op, term = 1, '*', 1
			if e[0] == '-' {
				sign = -1
			}
		default:
			return 0, false
		}
		e = e[1:]
	}
	return sum + sign*term, true
}
