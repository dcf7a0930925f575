package cli

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcplab/tcplab/inspect"
)

// TargetFlags choose the network namespace a live command looks at.
type TargetFlags struct {
	netns string
	pid   pidFlag
}

func (t *TargetFlags) Add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&t.netns, "netns", "N", "", "look inside this network namespace (a name under /run/netns, or a path)")
	cmd.Flags().Var(&t.pid, "netns-pid", "look inside the network namespace of this process, a PID of 1 or more (a container's, say); without the flag, this host's")
}

func (t *TargetFlags) Target() inspect.Target { return inspect.Target{Netns: t.netns, PID: int(t.pid)} }

// pidFlag is --netns-pid: a process ID, 1 or more. The flag left out is 0,
// this host's namespace (inspect.Target's zero PID); given as 0 or less it
// is a usage error rather than quietly this host, which would show another
// namespace than the one asked for without a word.
type pidFlag int

func (p *pidFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not a process ID")
	}
	if n <= 0 {
		return fmt.Errorf("a process ID is 1 or more (leave --netns-pid out to look at this host's namespace)")
	}
	*p = pidFlag(n)
	return nil
}

func (p *pidFlag) String() string { return strconv.Itoa(int(*p)) }

func (p *pidFlag) Type() string { return "pid" }

// listFlag is a flag that takes values repeated or separated by commas,
// as pflag's StringSlice does, without its CSV parsing (none of these
// values has a comma or a quote), whose CSV writers cost every command
// 4 KB of heap per flag at start-up.
//
// Its type is what help shows as the value's name (--state states), and
// with split false a value is taken whole (an address may hold a comma).
type listFlag struct {
	v     *[]string
	typ   string
	split bool
}

func (l listFlag) Set(s string) error {
	if s == "" {
		return nil // as pflag: an empty value adds nothing
	}
	if !l.split {
		*l.v = append(*l.v, s)
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		*l.v = append(*l.v, strings.TrimSpace(part))
	}
	return nil
}

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Type() string { return l.typ }

// listVar defines a listFlag whose values may also be separated by commas;
// typ names a value in help.
func listVar(fl *pflag.FlagSet, v *[]string, name, typ, usage string) {
	fl.Var(listFlag{v: v, typ: typ, split: true}, name, usage)
}

// RepeatVar defines a flag that may repeat, each value taken whole; typ
// names a value in help.
func RepeatVar(fl *pflag.FlagSet, v *[]string, name, typ, usage string) {
	fl.Var(listFlag{v: v, typ: typ}, name, usage)
}

// timesFlag is a repeatable flag of durations (run --at).
type timesFlag struct{ v *[]time.Duration }

func (f timesFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil {
			return fmt.Errorf("%q is not a time such as 30s or 1m30s", part)
		}
		*f.v = append(*f.v, d)
	}
	return nil
}

func (f timesFlag) String() string {
	if f.v == nil {
		return ""
	}
	var parts []string
	for _, d := range *f.v {
		parts = append(parts, d.String())
	}
	return strings.Join(parts, ",")
}

func (f timesFlag) Type() string { return "time" }

// filterFlags are the socket filters shared by ss and watch.
type filterFlags struct {
	states     []string
	listening  bool
	sport      []string
	dport      []string
	src, dst   []string
	ipv4, ipv6 bool
}

func (f *filterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	defer cmd.RegisterFlagCompletionFunc("state", CompleteStates)
	listVar(fl, &f.states, "state", "states", "only these states or groups (established, time-wait, SYN_RECV, ...; groups: connected, synchronized, bucket, big, listening, all); repeat or separate by commas")
	fl.BoolVarP(&f.listening, "listening", "l", false, "only listening sockets (same as --state listening)")
	f.addEnds(cmd)
}

// addEnds adds the filters on a connection's ends: ports, addresses,
// family.
func (f *filterFlags) addEnds(cmd *cobra.Command) {
	fl := cmd.Flags()
	listVar(fl, &f.sport, "sport", "ports", "local port or range (80, 8000-8080); repeat for alternatives")
	listVar(fl, &f.dport, "dport", "ports", "remote port or range; repeat for alternatives")
	listVar(fl, &f.src, "src", "prefixes", "local address or prefix (127.0.0.1, 10.0.0.0/8, ::1)")
	listVar(fl, &f.dst, "dst", "prefixes", "remote address or prefix")
	fl.BoolVarP(&f.ipv4, "ipv4", "4", false, "IPv4 sockets only")
	fl.BoolVarP(&f.ipv6, "ipv6", "6", false, "IPv6 sockets only")
}

// filter builds the kernel-side filter; errors are usage errors.
func (f *filterFlags) filter() (inspect.Filter, error) {
	var out inspect.Filter
	states := f.states
	if f.listening {
		states = append(states, "listening")
	}
	var err error
	if out.States, err = inspect.ParseStates(states); err != nil {
		return out, err
	}
	if out.SPort, err = inspect.ParsePorts(f.sport); err != nil {
		return out, err
	}
	if out.DPort, err = inspect.ParsePorts(f.dport); err != nil {
		return out, err
	}
	if out.Src, err = inspect.ParsePrefixes(f.src); err != nil {
		return out, err
	}
	if out.Dst, err = inspect.ParsePrefixes(f.dst); err != nil {
		return out, err
	}
	switch {
	case f.ipv4 && f.ipv6:
	case f.ipv4:
		out.Family = 4
	case f.ipv6:
		out.Family = 6
	}
	return out, nil
}

// oneShot readies the runtime for a command that reads the socket table
// once and exits: the table is garbage only at exit, so collecting it on
// the way costs time for nothing. A memory limit keeps huge tables safe.
// It returns the function that restores the settings (commands also run
// inside tests).
func oneShot() (restore func()) {
	gc := debug.SetGCPercent(-1)
	limit := debug.SetMemoryLimit(1 << 30)
	return func() {
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(limit)
	}
}

// interrupts delivers SIGINT and SIGTERM to a live command's loop until
// stop is called.
func interrupts() (<-chan os.Signal, func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	return sig, func() { signal.Stop(sig) }
}
