package cli

import (
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/tcp"
)

// CompleteScenarios completes a built-in scenario's name, or a file.
func CompleteScenarios(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	return matching(scenario.Names(), prefix), cobra.ShellCompDirectiveDefault // files too
}

// completeWords completes a flag's value from a fixed list.
func completeWords(words func() []string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		return matching(words(), prefix), cobra.ShellCompDirectiveNoFileComp
	}
}

// CompleteProfiles completes a profile's name.
var CompleteProfiles = completeWords(tcp.ProfileNames)

// CompleteStates completes a state or a group of states.
var CompleteStates = completeWords(inspect.StateWords)

func matching(words []string, prefix string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, prefix) {
			out = append(out, w)
		}
	}
	return out
}

// NewRoot is the whole command tree (the man pages are made from it).
func NewRoot(stdout io.Writer) *cobra.Command { return newRoot(stdout, "") }
