package scenario

import (
	"fmt"
	"io"
	"strings"

	"github.com/tcplab/tcplab/trace"
)

// WriteLibraryDoc writes the library's page (docs/library.md): every
// built-in scenario with its title, explanation, the states its hosts
// reach and the virtual time it covers, from a run in the simulator.
func WriteLibraryDoc(w io.Writer) error {
	lib, err := Library()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "# The scenario library")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every built-in scenario, in the order `tcplab tour` runs them. Run one with")
	fmt.Fprintln(w, "`tcplab run NAME`, read its source with `tcplab show NAME`. The language is described in")
	fmt.Fprintln(w, "[scenario-language.md](scenario-language.md). This page is generated from the scenarios")
	fmt.Fprintln(w, "themselves (`go test ./scenario -update`), so it cannot drift from them.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | what it shows |")
	fmt.Fprintln(w, "|---|---|")
	for _, sc := range lib {
		fmt.Fprintf(w, "| [%s](#%s) | %s |\n", sc.Name, sc.Name, sc.Title)
	}
	for _, sc := range lib {
		res, err := Run(sc, NewSim(1), Options{})
		if err != nil {
			return fmt.Errorf("%s: %w", sc.Name, err)
		}
		fmt.Fprintf(w, "\n## %s\n\n**%s**\n\n%s\n\n", sc.Name, sc.Title, strings.ReplaceAll(sc.Explain, "\n", " "))
		fmt.Fprintf(w, "```\ntcplab run %s\n```\n\n", sc.Name)
		for _, h := range res.States {
			st := strings.Join(h.States, " → ")
			if st == "" {
				st = "(no connection of its own)"
			}
			fmt.Fprintf(w, "- %s: %s\n", h.Host, st)
		}
		fmt.Fprintf(w, "- %d expectations, %ss of virtual time\n", len(res.Checks), trace.FormatTime(res.End))
	}
	return nil
}
