package cli

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// isTerminal tells whether w is a terminal: only then are screens cleared
// and words coloured (a pipe or a file gets plain text).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// colour tells whether to colour what goes to w: on a terminal, unless
// NO_COLOR is set to anything (https://no-color.org) or TERM is dumb.
func colour(w io.Writer) bool {
	if _, ok := os.LookupEnv("NO_COLOR"); ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	return isTerminal(w)
}
