// Package cli is tcplab's command line: the cobra commands, their flags,
// and the wiring of the packages behind them.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/internal/outfile"
)

// Main runs the command line on the process's arguments and exits.
func Main() {
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

// ExitError carries an exit code other than 2 out of a command.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit %d", e.Code) }

// run executes the command line and returns the exit code: 0 ok, 1 a
// check failed, 2 usage or input error.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

// Run is run for the full build's tests.
func Run(args []string, stdout, stderr io.Writer) int { return run(args, stdout, stderr) }

// argsKey keys the command line in a command's context (handoff).
type argsKey struct{}

// runContext is run whose scenario runs stop when ctx is done.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(Full.Commands) > 0 {
		handedOver(stderr)
	} else if len(args) >= 2 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) &&
		FullCommandShort(args[1]) != "" {
		// Completing a command of the full build: it knows its flags.
		if err := handoffArgs(ctx, "tcplab "+args[1], args); err != nil {
			fmt.Fprintln(stderr, "tcplab:", err)
			return 2
		}
		return 0
	}
	helpFailed := new(bool)
	ctx = context.WithValue(ctx, argsKey{}, args)
	ctx = context.WithValue(ctx, helpFailedKey{}, helpFailed)
	cmd := newRoot(stdout, commandNamed(args))
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			return ee.Code
		}
		fmt.Fprintln(stderr, "tcplab:", err)
		return 2
	}
	if *helpFailed {
		return 2
	}
	return 0
}

// newRoot builds the command tree: every command, or only the one named.
func newRoot(stdout io.Writer, only string) *cobra.Command {
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
		// No Args: cobra then says "unknown command" with the commands
		// that are spelt nearly the same ("Did you mean this?").
		Version:       Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.SetVersionTemplate("tcplab {{.Version}}\n")
	// Only the command named is built when there is one: building them
	// all (their flags and help) costs more than the start-up of ss.
	for _, c := range commands {
		if only == "" || only == c.name {
			cmd.AddCommand(c.make(stdout))
		}
	}
	for _, c := range fullCommands {
		if only != "" && only != c.Name {
			continue
		}
		if f := Full.Commands[c.Name]; f != nil {
			cmd.AddCommand(f(stdout))
		} else {
			cmd.AddCommand(handoffCommand(c.Name, c.Short))
		}
	}
	return cmd
}

// commands are the commands every build has.
var commands = []struct {
	name string
	make func(io.Writer) *cobra.Command
}{
	{"list", newList}, {"run", newRun}, {"tour", newTour}, {"show", newShow},
	{"ss", newSS}, {"stats", newStats}, {"doctor", newDoctor}, {"watch", newWatch}, {"life", newLife},
}

// commandNamed is the command a command line names, if it is one of
// tcplab's (help, completion and a mistyped name are not): then only that
// command needs building.
func commandNamed(args []string) string {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return ""
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.name
		}
	}
	if FullCommandShort(args[0]) != "" {
		return args[0]
	}
	return ""
}

// handoffCommand stands for a command of the full build: it takes its
// arguments as they are and hands the command line over, help included.
func handoffCommand(name, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:                name,
		Short:              short,
		DisableFlagParsing: true,
		RunE:               func(cmd *cobra.Command, args []string) error { return handoff(cmd) },
	}
	cmd.SetHelpFunc(func(c *cobra.Command, _ []string) {
		if err := handoff(c); err != nil {
			fmt.Fprintln(c.ErrOrStderr(), "tcplab:", err)
			// A help function cannot return an error: runContext
			// turns this into the exit status.
			if failed, ok := c.Context().Value(helpFailedKey{}).(*bool); ok {
				*failed = true
			}
		}
	})
	return cmd
}

// helpFailedKey keys, in a command's context, the flag a handed-off help
// sets when it fails.
type helpFailedKey struct{}

// handoffEnv marks a process started by a handoff, with the version of
// the tcplab that started it: one that would hand off again is not the
// full build, and the full build says so if it is another version.
const handoffEnv = "TCPLAB_HANDOFF"

// handoff runs the command line in tcplab-full, the build with every
// command, which replaces this process (execve: the same arguments,
// descriptors and environment, plus TCPLAB_HANDOFF). tcplab keeps out
// what only some commands need, so that the others start in about a
// millisecond.
func handoff(cmd *cobra.Command) error {
	args, _ := cmd.Context().Value(argsKey{}).([]string)
	return handoffArgs(cmd.Context(), cmd.CommandPath(), args)
}

func handoffArgs(ctx context.Context, what string, args []string) error {
	if err := context.Cause(ctx); err != nil {
		return err // a signal came first: nothing is started
	}
	path, err := fullBinary()
	if err == nil {
		if from, ok := os.LookupEnv(handoffEnv); ok {
			err = fmt.Errorf("%s was run for it (by tcplab %s) and handed it back: it is not the full build", path, from)
		} else if self, e := os.Executable(); e == nil && sameFile(self, path) {
			err = fmt.Errorf("%s is this binary, not the full build", path)
		}
	}
	if err != nil {
		return fmt.Errorf("`%s` needs tcplab-full, the build with every command: %w", what, err)
	}
	return execFull(path, args)
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// execFull replaces the process with the full build (tests replace it).
var execFull = func(path string, args []string) error {
	env := make([]string, 0, len(os.Environ())+1)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, handoffEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, handoffEnv+"="+Version())
	err := syscall.Exec(path, append([]string{path}, args...), env)
	return fmt.Errorf("running %s: %w", path, err)
}

// handedOver is called by the full build at start: a process tcplab
// handed over says so when the two are different builds (a tcplab-full
// found in PATH for a tcplab run from elsewhere, say), and does not pass
// the mark on.
func handedOver(stderr io.Writer) {
	from, ok := os.LookupEnv(handoffEnv)
	if !ok {
		return
	}
	os.Unsetenv(handoffEnv)
	if v := Version(); from != v {
		self, _ := os.Executable()
		fmt.Fprintf(stderr, "tcplab: note: tcplab %s handed this command to %s, another build (%s)\n", from, self, v)
	}
}

// fullBinary finds tcplab-full: $TCPLAB_FULL, else beside this binary,
// else in PATH.
func fullBinary() (string, error) {
	if p := os.Getenv("TCPLAB_FULL"); p != "" {
		return p, nil
	}
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), "tcplab-full")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("tcplab-full"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("it is neither beside %s nor in PATH (go install ./cmd/tcplab ./cmd/tcplab-full installs both, side by side)", self)
}
