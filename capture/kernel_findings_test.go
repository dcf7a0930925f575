package capture_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcplab/tcplab/capture"
	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// Captures made on this machine's kernel (root; two namespaces joined by
// a veth pair, real sockets driven by the kernel backend) for the stories
// the findings name, explained: each must give its finding. The programs
// are short scenarios written here, so that the whole test takes about
// 16 s (they run at once).
func TestFindingsOnKernel(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	var lock sync.Mutex
	for _, c := range []struct {
		name, kind, contains, src string
		replay                    bool // --scenario's replay runs on the kernel too
	}{
		{"refused", "refused", "ECONNREFUSED", `
server: listen 80
client: connect server:81
after 1s`, true},
		{"unanswered-syn", "syn-unanswered", "follow linux's timeline", `
set client tcp_syn_retries 3
rule server in dport 80 drop as deaf
server: listen 80
client: connect server:80
after 16s`, false},
		{"accept-overflow", "accept-queue-full", "ESTABLISHED", `
server: listen 80 backlog 2
repeat 2 client: connect server:80 as early{i}
until client: early2 connect returned within 1s
repeat 6 client: connect server:80 as c{i}
after 4s`, false},
		{"close-wait-data-loss", "close-wait-data-loss", "lost", `
server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: close
after 200ms
client: write "after the FIN"
after 1s`, true},
		{"keepalive-death", "keepalive", "the peer is dead", `
server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: keepalive on idle 1s interval 1s count 2
rule client in drop as unplugged
rule client out drop as unplugged-out
after 6s`, false},
		{"zero-window", "zero-window", "never reopened", `
server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
client: write 1048576 bytes
after 3s`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sc, err := scenario.Parse(c.name+".tcplab", "host client 10.0.0.1\nhost server 10.0.0.2\n"+c.src+"\n")
			if err != nil {
				t.Fatal(err)
			}
			b := kernel.New(kernel.Options{BuildLock: &lock})
			var rec trace.Recorder
			_, err = scenario.Run(sc, b, scenario.Options{Sink: rec.Sink()})
			if cerr := b.Close(); cerr != nil {
				t.Errorf("close: %v", cerr)
			}
			if err != nil {
				t.Fatal(err)
			}
			x := explainCapture(t, hostsOf(sc), rec.Events)
			f := x.find(c.kind)
			if f == nil {
				t.Fatalf("no %s finding; findings %v", c.kind, x.kinds())
			}
			if !strings.Contains(f.Summary+" "+f.Explain, c.contains) {
				t.Errorf("%s: no %q in %s: %s", c.kind, c.contains, f.Summary, f.Explain)
			}
			t.Logf("%s: %s (frames %v)", f.Kind, f.Summary, f.Frames)
			if !c.replay {
				return
			}
			// The scenario explain writes for that connection replays it
			// on the kernel, with the states explain inferred.
			var conn *capture.Conn
			if _, err := capture.Read(bytes.NewReader(pcapOf(t, hostsOf(sc), rec.Events)), capture.Options{Events: true}, func(cn *capture.Conn, _ time.Time) {
				for _, g := range cn.Findings {
					if g.Kind == c.kind {
						conn = cn
					}
				}
			}); err != nil || conn == nil {
				t.Fatalf("read again: %v", err)
			}
			src := capture.Scenario(conn, c.name+".pcapng")
			rsc, err := scenario.Parse(c.name+"-replay.tcplab", src)
			if err != nil {
				t.Fatalf("%v\n%s", err, src)
			}
			rb := kernel.New(kernel.Options{BuildLock: &lock})
			res, err := scenario.Run(rsc, rb, scenario.Options{})
			if cerr := rb.Close(); cerr != nil {
				t.Errorf("close: %v", cerr)
			}
			if err != nil {
				t.Fatalf("replay: %v\n%s", err, src)
			}
			if res.Failed() > 0 {
				t.Errorf("the replay on the kernel: %d expectations failed\n%s", res.Failed(), src)
			}
		})
	}
}
