package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/scenario"
)

// Full is what only the full build (cmd/tcplab-full, package
// internal/full) links in: the commands and kernel runs that need the
// kernel backend (nftables, tracefs), net/http, or gopacket's capture
// decoding. The tcplab binary leaves it empty, so that `tcplab ss` starts
// without initialising any of that, and hands a command line that needs it
// to tcplab-full (handoff).
var Full struct {
	// Commands are the full build's own commands by name (diff, lab,
	// serve, exporter, pkt, explain: those of fullCommands).
	Commands map[string]func(stdout io.Writer) *cobra.Command
	// KernelBackend makes the backend of run --kernel and describes it
	// for the report header.
	KernelBackend func() (scenario.Backend, string, error)
	// TourKernel is tour --kernel.
	TourKernel func(ctx context.Context, w io.Writer, lib []*scenario.Scenario, seed uint64, jobs int, quick bool) error
}

// fullCommands are the commands of the full build and their short help,
// which both builds show (internal/full takes it from here).
var fullCommands = []struct{ Name, Short string }{
	{"diff", "Run scenarios in the simulator and on the Linux kernel, and show where they disagree (root)"},
	{"explain", "Infer both ends' TCP states and findings from a pcap or pcapng capture"},
	{"exporter", "Serve this host's TCP states, kernel counters and doctor findings as Prometheus metrics"},
	{"lab", "Look after what kernel runs create (namespaces, tracefs instances)"},
	{"man", "Write tcplab's man pages into a directory"},
	{"pkt", "Run packetdrill scripts against the engine"},
	{"serve", "Serve a web page to pick, edit and run scenarios and see their pictures"},
}

// FullCommandShort is the short help the tcplab binary shows for a
// command of the full build, "" if name is not one.
func FullCommandShort(name string) string {
	for _, c := range fullCommands {
		if c.Name == name {
			return c.Short
		}
	}
	return ""
}

// newBackend makes the simulator; run --kernel asks Full.KernelBackend.
func newBackend(useKernel bool, seed uint64) (scenario.Backend, string, error) {
	if !useKernel {
		return scenario.NewSim(seed), fmt.Sprintf("simulator, seed %d", seed), nil
	}
	if Full.KernelBackend == nil {
		return nil, "", fmt.Errorf("the kernel backend is not in this build")
	}
	return Full.KernelBackend()
}

// NewSimBackend is the simulator backend and its description.
func NewSimBackend(seed uint64) (scenario.Backend, string, error) { return newBackend(false, seed) }

// closer is a backend that holds resources until closed (the kernel's
// namespaces, rules and tracer) and tells whether a signal ended its run.
type closer interface {
	Close() error
	Interrupted() error
}

// runInterruptible runs a scenario until ctx is done (a signal): the run
// stops at its next event, and a kernel run removes its namespaces, rules
// and tracer on return, on a panic and when stopped.
func runInterruptible(ctx context.Context, sc *scenario.Scenario, b scenario.Backend, opt scenario.Options) (*scenario.Result, error) {
	opt.Context = ctx
	kb, ok := b.(closer)
	if !ok {
		return scenario.Run(sc, b, opt)
	}
	return RunClosing(sc, kb.(scenario.Backend), opt)
}

// RunClosing runs a scenario on a backend that holds resources, closes it
// on return or panic, and reports an interrupted run as an error.
func RunClosing(sc *scenario.Scenario, b scenario.Backend, opt scenario.Options) (*scenario.Result, error) {
	c := b.(closer)
	defer c.Close()
	res, err := scenario.Run(sc, b, opt)
	if err == nil {
		err = c.Interrupted()
	}
	return res, err
}

// OnInterrupt calls f with the cause when ctx is done (a signal), until
// the returned function is called.
func OnInterrupt(ctx context.Context, f func(error)) (stop func()) {
	s := context.AfterFunc(ctx, func() { f(context.Cause(ctx)) })
	return func() { s() }
}

// Apart refuses flags that cannot go together, saying why: a command
// would otherwise drop one of them silently.
func Apart(cmd *cobra.Command, why string, names ...string) error {
	var set []string
	for _, n := range names {
		if f := cmd.Flags().Lookup(n); f != nil && f.Changed && f.Value.String() != f.DefValue {
			set = append(set, "--"+n)
		}
	}
	if len(set) > 1 {
		return fmt.Errorf("%s cannot go together: %s", strings.Join(set, " and "), why)
	}
	return nil
}

// Count is n and a noun, in the plural unless n is 1 ("1 scenario",
// "3 scenarios"; the plural adds s).
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
