package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

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

// runInterruptible runs a scenario and makes sure a kernel run removes
// its namespaces, rules and tracer on return, on a panic, and on SIGINT
// or SIGTERM (the run stops at its next step and cleans up).
func runInterruptible(sc *scenario.Scenario, b scenario.Backend, opt scenario.Options) (*scenario.Result, error) {
	kb, ok := b.(*kernel.Backend)
	if !ok {
		return scenario.Run(sc, b, opt)
	}
	defer onInterrupt(kb.Interrupt)()
	return runKernel(sc, kb, opt)
}

// onInterrupt calls f with the reason when SIGINT or SIGTERM arrives,
// until the returned function is called.
func onInterrupt(f func(error)) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			f(fmt.Errorf("interrupted by %v", s))
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
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
