// Command tcplab reproduces, shows and explains TCP states.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/internal/outfile"
)

func main() {
	// First of all, before the scenario is read or the kernel checked, so
	// that no early signal is lost.
	ctx, stop := interruptContext(os.Args[1:])
	code := runContext(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runsScenarios lists the commands that run scenarios: they stop a run at
// its next event on SIGINT or SIGTERM, remove what they created, keep
// what the run showed, and exit 2.
var runsScenarios = map[string]bool{"run": true, "tour": true, "diff": true}

// interruptContext catches SIGINT and SIGTERM from now on for the commands
// that run scenarios, also when tcplab was started with SIGINT ignored (a
// background job of a script): its context is cancelled with the signal
// as the cause. Other commands keep the signals' usual effect or handle
// them themselves.
func interruptContext(args []string) (context.Context, func()) {
	cmd := ""
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			cmd = a
			break
		}
	}
	if !runsScenarios[cmd] {
		return context.Background(), func() {}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sig:
			cancel(fmt.Errorf("interrupted by %v", s))
		case <-ctx.Done():
			return
		}
		// A second signal ends the process at once, whatever it waits for.
		if s, ok := <-sig; ok {
			fmt.Fprintf(os.Stderr, "tcplab: %v again: exiting now (`sudo tcplab lab clean` removes what a kernel run left)\n", s)
			outfile.RemoveTemporaries()
			os.Exit(130)
		}
	}()
	return ctx, func() {
		signal.Stop(sig)
		cancel(nil)
	}
}

// exitError carries an exit code other than 2 out of a command.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// run executes the command line and returns the exit code: 0 ok, 1 a
// check failed, 2 usage or input error.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

// runContext is run whose scenario runs stop when ctx is done.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRoot(stdout)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintln(stderr, "tcplab:", err)
		return 2
	}
	return 0
}

func newRoot(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tcplab",
		Short: "Reproduce, watch and explain TCP states",
		Long: `tcplab reproduces every TCP state in a lab: two or more hosts, application
calls, firewall rules that drop chosen packets, and kernel settings, written
as a scenario file. Scenarios run in a deterministic simulator that plays the
timers of a Linux TCP stack in virtual time, so minutes of TCP take
milliseconds and no root is needed.

Start with the tour of the built-in library, then run one scenario.`,
		Example: `  tcplab tour                      # every built-in scenario, one line each
  tcplab list                      # the library
  tcplab run hutu                  # the normal life of a connection
  tcplab run syn-sent --ladder     # the ladder diagram of a SYN that never gets an answer
  tcplab run close-wait --at 30s   # ss-style snapshot of both hosts at 30 s
  tcplab show hutu > my.tcplab     # start your own scenario from a built-in one`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newList(stdout), newRun(stdout), newTour(stdout), newShow(stdout), newLab(stdout), newDiff(stdout), newSS(stdout), newStats(stdout), newDoctor(stdout), newWatch(stdout), newServe(stdout), newExporter(stdout), newPkt(stdout), newExplain(stdout))
	return cmd
}
