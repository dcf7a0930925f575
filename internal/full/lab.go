package full

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/tcplab/tcplab/internal/cli"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/kernel"
)

func newLab(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: cli.FullCommandShort("lab"),
		Long: `A kernel run (tcplab run --kernel) creates a network namespace per host and a
switch namespace, all named tcplab-PID-N-..., and a tracefs instance
tcplab-PID-N. It removes them when it ends, fails, or is interrupted. A run
killed with SIGKILL cannot; "lab list" shows what is left and "lab clean"
removes it. Both need root.`,
		Example: "  tcplab lab list\n  sudo tcplab lab clean",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newLabList(stdout), newLabClean(stdout))
	return cmd
}

func newLabList(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List tcplab namespaces and tracefs instances on this machine",
		Example: "  tcplab lab list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kernel.Check(); err != nil {
				return err
			}
			ls, err := kernel.Leftovers()
			if err != nil {
				return err
			}
			if len(ls) == 0 {
				fmt.Fprintln(stdout, "nothing: no tcplab namespace or tracefs instance exists")
				return nil
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "kind\tname\tpid\towner")
			for _, l := range ls {
				owner := "gone (lab clean removes it)"
				if l.Live {
					owner = "running"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", l.Kind, l.Name, l.PID, owner)
			}
			return tw.Flush()
		},
	}
}

func newLabClean(stdout io.Writer) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "clean",
		Short: "Remove what killed kernel runs left behind",
		Long: `clean removes the tcplab namespaces and tracefs instances whose process no
longer runs. With --force it also removes those of running processes, which
breaks those runs. The root namespace is never touched: the lab's links and
nftables tables live inside the namespaces and go with them.`,
		Example: "  sudo tcplab lab clean\n  sudo tcplab lab clean --force",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kernel.Check(); err != nil {
				return err
			}
			done, err := kernel.Clean(force)
			for _, l := range done {
				fmt.Fprintf(stdout, "removed %s %s (pid %d)\n", l.Kind, l.Name, l.PID)
			}
			if len(done) == 0 && err == nil {
				fmt.Fprintln(stdout, "nothing to remove")
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "also remove what running tcplab processes use")
	return cmd
}
