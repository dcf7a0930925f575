package full

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"

	"github.com/tcplab/tcplab/conformance"
	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
)

// endings are scripts that end just after a change wakes a blocked call:
// the call's return comes from a goroutine that a loaded machine may
// schedule late, after the runner has already read the final counters.
var endings = map[string]string{
	// read fails with ETIMEDOUT at 2.002 s, with the CLOSED the script waits for
	"keepalive-read": `
host client 10.0.0.1
host server 10.0.0.2
server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
client: keepalive on idle 1s interval 1s count 1
client: read
rule server in drop
rule server out drop
until client: conn state CLOSED within 5s
`,
	// connect fails with ETIMEDOUT at 3 s, with the CLOSED the script waits for
	"syn-timeout": `
host client 10.0.0.1
host server 10.0.0.2
set client tcp_syn_retries 1
server: listen 80
rule server in drop
client: connect server:80
until client: conn state CLOSED within 5s
`,
	// accept returns once the connection is listed, which ends the script
	"accept-listed": `
host client 10.0.0.1
host server 10.0.0.2
server: listen 80
server: accept
client: connect server:80
until server: count ESTABLISHED = 1 within 1s
`,
	// read returns the data whose arrival ends the script
	"read-data": `
host client 10.0.0.1
host server 10.0.0.2
server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: read
client: write "Hutu"
until server: packets in [P.] = 1 within 1s
`,
}

// TestKernelBatchLosesNothing runs twelve scripts at once on the kernel,
// as `tcplab diff` does, twice, and compares each run with the simulator:
// every call return, state change and packet must be there. Before the
// backend collected blocked calls at the end of a run, 6 of 60 such runs
// reported a call as "never returned" (4 batches of 5 had one).
// Differences in timing are only logged: they measure the machine's load,
// not a loss.
func TestKernelBatchLosesNothing(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	before := rootState(t)
	names := slices.Sorted(maps.Keys(endings))
	var sims []simRun
	for i := range 12 {
		name := names[i%len(names)]
		sc, err := scenario.Parse(fmt.Sprintf("%s-%d.tcplab", name, i), endings[name])
		if err != nil {
			t.Fatal(err)
		}
		sims = append(sims, runSim(sc, 1))
		if s := sims[i]; s.err != nil || s.res.Failed() > 0 {
			t.Fatalf("%s in the simulator: %v %+v", name, s.err, s.res.Checks)
		}
	}
	for round := range 2 {
		kruns, err := runKernelBatch(context.Background(), sims, 12, false)
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range kruns {
			sc := sims[i].sc
			cmp := conformance.Compare(sc, conformance.Side{Events: sims[i].events, Result: sims[i].res},
				conformance.Side{Events: k.events, Result: k.res, Err: k.err}, conformance.Config{Tolerance: kernel.Tolerance})
			for _, d := range cmp.Differences {
				if d.Aspect == conformance.AspectTiming {
					t.Logf("round %d, %s: %s", round, sc.Name, d)
					continue
				}
				t.Errorf("round %d, %s: %s", round, sc.Name, d)
			}
			if k.res != nil {
				for _, c := range k.res.Checks {
					if !c.OK {
						t.Errorf("round %d, %s: %s: seen %s", round, sc.Name, c.Text, c.Seen)
					}
				}
			}
		}
	}
	if after := rootState(t); after != before {
		t.Errorf("the root namespace changed:\nbefore %s\nafter  %s", before, after)
	}
	if left := leftoversOf(t, os.Getpid()); len(left) > 0 {
		t.Errorf("left behind %v", left)
	}
}
