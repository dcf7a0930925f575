package full

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tcplab/tcplab/internal/cli"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/web"
)

func newServe(stdout io.Writer) *cobra.Command {
	var (
		listen      string
		allowRemote bool
		kernelRuns  bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: cli.FullCommandShort("serve"),
		Long: `serve runs a web server with tcplab's page: the scenario library, an editor
holding the chosen scenario, Run, and the result: the expectations, the
ladder diagram, the state diagram, the events, and a time slider that shows
every host's sockets after each state change. Parse errors are marked at
their line and column in the editor.

"Open a file" takes a scenario, a packetdrill script (.pkt), or a capture
(.pcap, .pcapng, gzip too; at most 64 MB, 256 MB uncompressed, 50,000
connections at once, 10 s): a capture is explained as tcplab explain does
it, and the page shows one connection (the first of the first eight with a
finding) with its findings, ladder, state diagram and events; a list of
the first 500 picks another.

Runs use the simulator. When the server runs as root the page also offers
the Linux kernel (network namespaces, real time, one run at a time, at most
5 minutes, interrupted and cleaned up when the server stops); --kernel=false
turns that off.

Each request is bounded: 64 KB of scenario text, 10 s of wall time for a
simulator run, 50,000 events and 32 MB of event memory per run, 4
simulator runs at once. A run stops when its request times out or the page
goes away, and its slot is free when the answer goes out. The page and its
scripts are embedded in the binary. The server listens on loopback only
unless --allow-remote is given: anyone who reaches it can run scenarios
(and, as root, create namespaces). It answers only to loopback host names
then (a web page cannot reach it through a name of its own), takes runs
only as JSON, and refuses those a browser marks as coming from another site
or whose Origin is not the host they were sent to.`,
		Example: `  tcplab serve                            # then open http://127.0.0.1:8080/
  tcplab serve --listen 127.0.0.1:9000
  sudo tcplab serve                       # the kernel too`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkListen(listen, allowRemote, "the page lets anyone who reaches it run scenarios"); err != nil {
				return err
			}
			o := web.Options{Sim: func(seed uint64) (scenario.Backend, string, error) { return cli.NewSimBackend(seed) },
				LoopbackOnly: !allowRemote}
			if kernelRuns && kernel.Check() == nil {
				o.Kernel = func(seed uint64) (scenario.Backend, string, error) { return kernelBackend() }
				o.KernelTimeout = 5 * time.Minute
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(stdout, "serving tcplab on http://%s/\n", ln.Addr())
			srv := web.NewServer(o)
			// On a signal the runs stop first (a kernel run removes its
			// namespaces), so that their requests end at once and the
			// server's shutdown does not wait for them.
			defer context.AfterFunc(ctx, srv.Stop)()
			err = serveHTTP(ctx, ln, srv)
			srv.Stop()
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the page on (host:port)")
	cmd.Flags().BoolVar(&allowRemote, "allow-remote", false, "allow a --listen address that is not loopback")
	cmd.Flags().BoolVar(&kernelRuns, "kernel", true, "offer kernel runs when running as root")
	return cmd
}
