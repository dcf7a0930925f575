package scenario

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/trace"
)

// captured is what a capture of a run must hold: every packet at every tap
// except those an output rule dropped before the wire, in event order.
func captured(events []trace.Event) []trace.Event {
	var out []trace.Event
	for _, e := range events {
		if e.Kind == trace.KindPacket && (e.Packet.Dir == trace.In || e.Packet.OnWire) {
			out = append(out, e)
		}
	}
	return out
}

func writeCapture(t *testing.T, sc *Scenario, events []trace.Event) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := trace.WritePcapng(&buf, sc.TraceHosts(), events)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(captured(events)); n != want {
		t.Fatalf("wrote %d packets, want %d", n, want)
	}
	return buf.Bytes()
}

// eachCapture runs every built-in scenario as a subtest and hands over its
// events.
func eachCapture(t *testing.T, f func(t *testing.T, sc *Scenario, events []trace.Event)) {
	lib, err := Library()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range lib {
		t.Run(sc.Name, func(t *testing.T) {
			_, events := runBuiltin(t, sc.Name, 1)
			f(t, sc, events)
		})
	}
}

var tcpdumpDecoded = regexp.MustCompile(`^(.*, length \d+): .*$`)

// tcpdump reads the capture of every built-in scenario and prints each
// packet as tcplab does: time, addresses, flags, relative seq and ack,
// window, options and length.
func TestPcapTcpdumpAgrees(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tcpdump is not installed; .ci/run installs it")
		}
		t.Skip("tcpdump is not installed")
	}
	eachCapture(t, func(t *testing.T, sc *Scenario, events []trace.Event) {
		file := filepath.Join(t.TempDir(), sc.Name+".pcapng")
		if err := os.WriteFile(file, writeCapture(t, sc, events), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(tcpdump, "-n", "-tt", "-r", file).Output()
		if err != nil {
			t.Fatalf("tcpdump: %v", err)
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		for i, l := range got {
			// tcpdump goes on to decode the payload of well-known
			// ports ("length 24: HTTP: GET ..."); tcplab stops at the
			// length.
			if m := tcpdumpDecoded.FindStringSubmatch(l); m != nil {
				got[i] = m[1]
			}
		}
		var rel trace.Relative
		var want []string
		for _, e := range captured(events) {
			ip := " IP "
			if e.Packet.Segment.IsIPv6() {
				ip = " IP6 " // tcpdump's word for IPv6
			}
			want = append(want, trace.FormatTime(e.At)+ip+rel.Segment(&e.Packet.Segment))
		}
		if len(got) != len(want) {
			t.Fatalf("tcpdump printed %d lines, tcplab %d", len(got), len(want))
		}
		bad := 0
		for i := range want {
			if got[i] != want[i] {
				if bad++; bad <= 3 {
					t.Errorf("packet %d:\ntcpdump %s\ntcplab  %s", i, got[i], want[i])
				}
			}
		}
		if bad > 3 {
			t.Errorf("... %d lines differ in all", bad)
		}
	})
}
