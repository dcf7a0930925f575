// Package full is what only tcplab-full links in: the commands and kernel
// runs that need the kernel backend (netlink, nftables, tracefs), net/http
// or gopacket's capture decoding. Install plugs them into package cli.
package full

import (
	"io"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/internal/cli"
	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
)

// Install gives package cli every command and the kernel backend.
func Install() {
	cli.Full.Commands = map[string]func(io.Writer) *cobra.Command{"diff": newDiff, "explain": newExplain,
		"exporter": newExporter, "lab": newLab, "man": newMan, "pkt": newPkt, "serve": newServe}
	cli.Full.KernelBackend = kernelBackend
	cli.Full.TourKernel = tourKernel
}

// kernelBackend is run --kernel's backend, described for the report header.
func kernelBackend() (scenario.Backend, string, error) {
	if err := kernel.Check(); err != nil {
		return nil, "", err
	}
	desc := "Linux " + kernelRelease() + " in network namespaces"
	return kernel.New(kernel.Options{}), desc, nil
}

// runKernel runs a scenario on the kernel, removes its lab on return or
// panic, and reports an interrupted run as an error.
func runKernel(sc *scenario.Scenario, b *kernel.Backend, opt scenario.Options) (*scenario.Result, error) {
	return cli.RunClosing(sc, b, opt)
}

// kernelRelease is this machine's kernel release, as uname -r prints it.
func kernelRelease() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}
