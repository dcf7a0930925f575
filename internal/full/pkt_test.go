package full

import (
	"os"
	"strings"
	"testing"
)

// tcplab pkt on the project's own scripts: verdicts and exit codes.
func TestPktCommand(t *testing.T) {
	dir := "../../pkt/testdata/"
	out, _, code := tcplab(t, "pkt", dir+"passive-close.pkt", dir+"active-nonblock.pkt")
	if code != 0 || strings.Count(out, ": pass") != 2 {
		t.Errorf("passing scripts: exit %d\n%s", code, out)
	}
	out, _, code = tcplab(t, "pkt", dir+"passive-close.pkt", dir+"wrong-ack.pkt")
	if code != 1 || !strings.Contains(out, "wrong-ack.pkt:12: error handling packet: live packet field tcp_ack_seq: expected: 100 (0x64) vs actual: 101 (0x65)") ||
		!strings.Contains(out, "  engine: ") {
		t.Errorf("a failing script: exit %d\n%s", code, out)
	}
	out, _, code = tcplab(t, "pkt", dir+"uses-notsent-lowat.pkt")
	if code != 3 || !strings.Contains(out, "uses-notsent-lowat.pkt:3: socket option TCP_NOTSENT_LOWAT is not modelled by the engine yet") {
		t.Errorf("an unsupported script: exit %d\n%s", code, out)
	}
	out, _, code = tcplab(t, "pkt", "-v", dir+"passive-close.pkt")
	if code != 0 || !strings.Contains(out, "ignored: ip tcp_metrics flush all") {
		t.Errorf("--verbose: exit %d\n%s", code, out)
	}
	out, _, code = tcplab(t, "pkt", "--trace", dir+"wrong-ack.pkt")
	if code != 1 || !strings.Contains(out, "local    state  192.168.0.1:8080 > 192.0.2.1:40000  LISTEN -> SYN_RECV") {
		t.Errorf("--trace: exit %d\n%s", code, out)
	}
	bad := t.TempDir() + "/bad.pkt"
	if err := os.WriteFile(bad, []byte("0 socket(..., SOCK_STREAM"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code = tcplab(t, "pkt", bad, dir+"wrong-ack.pkt")
	if code != 2 || !strings.Contains(out, "bad.pkt:1:26: expected") {
		t.Errorf("a script that does not parse: exit %d\n%s", code, out)
	}
}

// --corpus: one line per script, the totals, and the Markdown table.
func TestPktCorpus(t *testing.T) {
	md := t.TempDir() + "/table.md"
	out, _, code := tcplab(t, "pkt", "--corpus", "../../pkt/testdata", "--markdown", md)
	if code != 1 || !strings.Contains(out, "27 scripts; engine: 22 pass, 2 fail, 3 unsupported") ||
		!strings.Contains(out, "wrong-ack.pkt") {
		t.Errorf("exit %d\n%s", code, out)
	}
	b, err := os.ReadFile(md)
	if err != nil || !strings.Contains(string(b), "| passive-close.pkt | pass | - |  |") {
		t.Errorf("markdown %v:\n%s", err, b)
	}
	if _, _, code := tcplab(t, "pkt", "--corpus", "../../pkt/testdata", "x.pkt"); code != 2 {
		t.Errorf("--corpus with files: exit %d, want 2", code)
	}
}

// The views of a script run: the same as a scenario run's.
func TestPktViews(t *testing.T) {
	dir := "../../pkt/testdata/"
	out, _, code := tcplab(t, "pkt", "--ladder", dir+"passive-close.pkt")
	if code != 0 || !strings.Contains(out, "local") || !strings.Contains(out, "remote") || !strings.Contains(out, "LAST_ACK") {
		t.Errorf("--ladder: exit %d\n%s", code, out)
	}
	out, _, code = tcplab(t, "pkt", "--json", dir+"wrong-ack.pkt")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || !strings.Contains(lines[len(lines)-1], `"kind":"result"`) || !strings.Contains(lines[len(lines)-1], `"status":"FAIL"`) ||
		!strings.Contains(out, `"kind":"state"`) {
		t.Errorf("--json: exit %d\n%s", code, out)
	}
	tmp := t.TempDir()
	_, _, code = tcplab(t, "pkt", "--pcap", tmp+"/a.pcapng", "--svg", tmp+"/a.svg", dir+"passive-close.pkt")
	pcap, err1 := os.ReadFile(tmp + "/a.pcapng")
	svg, err2 := os.ReadFile(tmp + "/a.svg")
	if code != 0 || err1 != nil || err2 != nil || len(pcap) < 4 || string(pcap[:4]) != "\x0a\x0d\x0d\x0a" || !strings.Contains(string(svg), "<svg") {
		t.Errorf("--pcap/--svg: exit %d, %v %v", code, err1, err2)
	}
	page := tmp + "/a.html"
	if _, _, code := tcplab(t, "pkt", "--html", page, dir+"wrong-ack.pkt"); code != 1 {
		t.Errorf("--html of a failing script: exit %d", code)
	}
	html, err := os.ReadFile(page)
	if err != nil || !strings.Contains(string(html), "pkt: ../../pkt/testdata/wrong-ack.pkt") ||
		!strings.Contains(string(html), "tcp_ack_seq: expected: 100") || strings.Count(string(html), "<svg") < 2 {
		t.Errorf("--html: %v\n%.400s", err, html)
	}
	if _, _, code := tcplab(t, "pkt", "--ladder", dir+"passive-close.pkt", dir+"wrong-ack.pkt"); code != 2 {
		t.Errorf("--ladder with two scripts: exit %d, want 2", code)
	}
}
