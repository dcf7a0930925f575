// Command tcplab-full is tcplab with every command linked in: tcplab hands
// it the command lines that need the kernel backend, net/http or capture
// decoding (diff, lab, serve, exporter, pkt, explain, run and tour with
// --kernel), and keeps the rest to itself so that they start at once. It
// takes every command tcplab does.
package main

import (
	"github.com/tcplab/tcplab/internal/cli"
	"github.com/tcplab/tcplab/internal/full"
)

func main() {
	full.Install()
	cli.Main()
}
