package main

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
)

// newBackend picks the simulator or, with --kernel, the Linux kernel, and
// describes it for the report header.
func newBackend(useKernel bool, seed uint64) (scenario.Backend, string, error) {
	if !useKernel {
		return scenario.NewSim(seed), fmt.Sprintf("simulator, seed %d", seed), nil
	}
	if err := kernel.Check(); err != nil {
		return nil, "", err
	}
	desc := "Linux " + kernelRelease() + " in network namespaces"
	return kernel.New(kernel.Options{}), desc, nil
}

// runInterruptible runs a scenario until ctx is done (a signal): the run
// stops at its next event, and a kernel run removes its namespaces, rules
// and tracer on return, on a panic and when stopped.
func runInterruptible(ctx context.Context, sc *scenario.Scenario, b scenario.Backend, opt scenario.Options) (*scenario.Result, error) {
	opt.Context = ctx
	kb, ok := b.(*kernel.Backend)
	if !ok {
		return scenario.Run(sc, b, opt)
	}
	return runKernel(sc, kb, opt)
}

// onInterrupt calls f with the cause when ctx is done (a signal), until
// the returned function is called.
func onInterrupt(ctx context.Context, f func(error)) (stop func()) {
	s := context.AfterFunc(ctx, func() { f(context.Cause(ctx)) })
	return func() { s() }
}

// runKernel runs a scenario on the kernel, removes its lab on return or
// panic, and reports an interrupted run as an error.
func runKernel(sc *scenario.Scenario, b *kernel.Backend, opt scenario.Options) (*scenario.Result, error) {
	defer b.Close()
	res, err := scenario.Run(sc, b, opt)
	if err == nil {
		err = b.Interrupted()
	}
	return res, err
}

// kernelRelease is this machine's kernel release, as uname -r prints it.
func kernelRelease() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}
