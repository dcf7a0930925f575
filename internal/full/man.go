package full

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/tcplab/tcplab/internal/cli"
)

// newMan writes the man pages of every command, made from the commands'
// own help by cobra's generator: tcplab.1, tcplab-run.1, ...
func newMan(stdout io.Writer) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "man DIR",
		Short: cli.FullCommandShort("man"),
		Long: `man writes a man page for tcplab and for each of its commands into DIR (for
example /usr/local/share/man/man1, then: man tcplab-run). A page that is
already there is left alone unless --force is given.`,
		Example: "  sudo tcplab man /usr/local/share/man/man1\n  tcplab man --force ~/.local/share/man/man1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return fmt.Errorf("%s: not a directory", dir)
			}
			root := cli.NewRoot(stdout)
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{Title: "TCPLAB", Section: "1", Source: "tcplab " + cli.Version(), Manual: "tcplab manual"}
			var written []string
			var walk func(c *cobra.Command) error
			walk = func(c *cobra.Command) error {
				if c.Hidden || c.Name() == "help" || strings.HasPrefix(c.Name(), "__") {
					return nil
				}
				c.DisableAutoGenTag = true
				var b bytes.Buffer
				if err := doc.GenMan(c, header, &b); err != nil {
					return err
				}
				name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
				path := filepath.Join(dir, name)
				flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
				if force {
					flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
				}
				f, err := os.OpenFile(path, flags, 0o644)
				if os.IsExist(err) {
					fmt.Fprintf(cmd.ErrOrStderr(), "tcplab: %s is already there: left alone (--force replaces it)\n", path)
				} else if err != nil {
					return err
				} else {
					_, werr := f.Write(b.Bytes())
					if cerr := f.Close(); werr == nil {
						werr = cerr
					}
					if werr != nil {
						return werr
					}
					written = append(written, name)
				}
				for _, sub := range c.Commands() {
					if err := walk(sub); err != nil {
						return err
					}
				}
				return nil
			}
			if err := walk(root); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%d man pages written to %s\n", len(written), dir)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace pages already there")
	return cmd
}
