// Command tcplab reproduces, shows and explains TCP states.
package main

import "github.com/tcplab/tcplab/internal/cli"

func main() { cli.Main() }
