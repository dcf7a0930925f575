package kernel_test

import (
	"strings"
	"testing"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// needKernel skips a test that needs root and namespaces, saying why.
func needKernel(t testing.TB) {
	t.Helper()
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
}

// runKernel plays a built-in scenario on the kernel and returns the
// result and the events.
func runKernel(t testing.TB, name string) (*scenario.Result, []trace.Event) {
	t.Helper()
	sc, err := scenario.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	b := kernel.New(kernel.Options{})
	defer func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	var rec trace.Recorder
	res, err := scenario.Run(sc, b, scenario.Options{Sink: rec.Sink()})
	if err != nil {
		t.Fatal(err)
	}
	return res, rec.Events
}

func failures(res *scenario.Result) string {
	var b strings.Builder
	for _, c := range res.Checks {
		if !c.OK {
			b.WriteString("\n  " + c.Text + ": seen " + c.Seen)
		}
	}
	return b.String()
}

func TestKernelHandshake(t *testing.T) {
	needKernel(t)
	res, _ := runKernel(t, "handshake")
	if res.Failed() > 0 {
		t.Errorf("handshake on the kernel: %d failed:%s", res.Failed(), failures(res))
	}
}
