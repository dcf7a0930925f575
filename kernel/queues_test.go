package kernel_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// An AF_INET listener and a v6only AF_INET6 one share port 80, as nginx's
// "listen 80; listen [::]:80 ipv6only=on" do. Two IPv6 clients and one
// IPv4 client leave requests in the SYN queue (their SYN-ACKs are
// dropped): each listener shows its own, on the simulator and on Linux.
// The requests' state changes carry their listener's IPV6_V6ONLY, and the
// AF_INET6 listener's peer is [::]:0, on both backends alike.
func TestListenersSharingAPortKeepTheirOwnQueues(t *testing.T) {
	src := `host client 10.0.0.1 fd00::1
host server 10.0.0.2 fd00::2
server: listen 80 v6only as l6
server: socket as l4
server: bind l4 80
server: listen l4
rule client in flags [S.] sport 80 drop
client: connect [fd00::2]:80 nonblock as a
client: connect [fd00::2]:80 nonblock as b
client: connect 10.0.0.2:80 nonblock as c
after 300ms
expect client: a state SYN_SENT
expect client: c state SYN_SENT
`
	sc, err := scenario.Parse("shared-port.tcplab", src)
	if err != nil {
		t.Fatal(err)
	}
	queues := func(b scenario.Backend) (string, []string) {
		var rec trace.Recorder
		res, err := scenario.Run(sc, b, scenario.Options{Sink: rec.Sink(), At: []time.Duration{200 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Failed() > 0 {
			t.Errorf("%s: %d expectations failed", b.Name(), res.Failed())
		}
		if len(res.Snapshots) != 1 {
			t.Fatalf("%s: %d snapshots", b.Name(), len(res.Snapshots))
		}
		got := ""
		for _, h := range res.Snapshots[0].Hosts {
			for _, s := range h.Sockets {
				if s.State == "LISTEN" {
					got += fmt.Sprintf("%s v6only=%v syn_queue=%d; ", s.Local, s.V6Only, s.SynQueue)
				}
			}
		}
		var states []string
		for _, e := range rec.Events {
			if e.Kind == trace.KindState && e.Host == "server" {
				states = append(states, fmt.Sprintf("%s->%s local %v remote %v v6only=%v", e.State.From, e.State.To, e.Local, e.Remote.Addr(), e.V6Only))
			}
		}
		slices.Sort(states)
		return got, states
	}
	want := "[::]:80 v6only=true syn_queue=2; 0.0.0.0:80 v6only=false syn_queue=1; "
	got, simStates := queues(scenario.NewSim(1))
	if got != want {
		t.Errorf("simulator: %s, want %s", got, want)
	}
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("this kernel has no IPv6")
	}
	b := kernel.New(kernel.Options{})
	defer func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	got, kernelStates := queues(b)
	if got != want {
		t.Errorf("kernel: %s, want %s", got, want)
	}
	if !slices.Equal(simStates, kernelStates) {
		t.Errorf("the server's state changes differ:\nsimulator:\n  %s\nkernel:\n  %s", strings.Join(simStates, "\n  "), strings.Join(kernelStates, "\n  "))
	}
}
