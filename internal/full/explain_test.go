package full

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// explain reads the capture a run writes: one line per connection, the
// timelines of the ones --conn picks, JSON, and clear errors.
func TestExplain(t *testing.T) {
	dir := t.TempDir()
	pc := dir + "/hutu.pcapng"
	if _, errs, code := tcplab(t, "run", "hutu", "--pcap", pc); code != 0 {
		t.Fatalf("run: exit %d: %s", code, errs)
	}
	out, errs, code := tcplab(t, "explain", pc)
	if code != 0 || !strings.Contains(out, "#1    10.0.0.1:41938 > 10.0.0.2:80") || !strings.Contains(out, "client CLOSED  server CLOSED") {
		t.Fatalf("summary: exit %d %s\n%s", code, errs, out)
	}
	out, _, code = tcplab(t, "explain", "--conn", ":80", pc)
	for _, want := range []string{
		"client CLOSED -> SYN_SENT  (frame 1: connect(), snd SYN)",
		"server ESTABLISHED -> CLOSE_WAIT  (frame 12: rcv FIN)",
		"client FIN_WAIT2 -> TIME_WAIT  (frame 16: rcv FIN, snd ACK)",
		"probably: Linux's TIME_WAIT lasts 60 s, after the capture's end",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("--conn: no %q (exit %d)\n%s", want, code, out)
		}
	}
	if out, _, _ := tcplab(t, "explain", "--conn", "2", pc); strings.Contains(out, "#1") {
		t.Errorf("--conn 2 picked connection 1:\n%s", out)
	}
	out, _, code = tcplab(t, "explain", "--json", pc)
	var s struct {
		Client       string `json:"client"`
		ClientStates []struct {
			To string `json:"to"`
		} `json:"client_states"`
	}
	if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &s); err != nil || code != 0 || s.Client != "10.0.0.1:41938" || len(s.ClientStates) != 6 {
		t.Errorf("--json: %v %+v\n%s", err, s, out)
	}
	bad := dir + "/bad.pcap"
	os.WriteFile(bad, []byte("not a capture"), 0o644)
	if _, errs, code := tcplab(t, "explain", bad); code != 2 || !strings.Contains(errs, "not a pcap or pcapng capture") {
		t.Errorf("a text file: exit %d %s", code, errs)
	}
	if _, errs, code := tcplab(t, "explain", dir+"/missing.pcap"); code != 2 || !strings.Contains(errs, "no such file") {
		t.Errorf("a missing file: exit %d %s", code, errs)
	}
}

// Findings in the summary and the footer; the views of one connection;
// --scenario writes a scenario that runs; bad --conn specs and view
// requests that name no single connection are errors.
func TestExplainFindingsAndViews(t *testing.T) {
	dir := t.TempDir()
	pc := dir + "/rst.pcapng"
	if _, errs, code := tcplab(t, "run", "rst-closed-port", "--pcap", pc); code != 0 {
		t.Fatalf("run: exit %d: %s", code, errs)
	}
	out, errs, code := tcplab(t, "explain", pc)
	if code != 0 || !strings.Contains(out, "client CLOSED  server CLOSED  ! refused") || !strings.Contains(out, "findings: 1 no-end, 1 refused") {
		t.Fatalf("summary: exit %d %s\n%s", code, errs, out)
	}
	out, _, _ = tcplab(t, "explain", "--conn", ":81", pc)
	for _, want := range []string{"[refused] SYN refused by RST", "evidence: frame ", "ECONNREFUSED", "reproduce: tcplab run rst-closed-port"} {
		if !strings.Contains(out, want) {
			t.Errorf("--conn :81: no %q\n%s", want, out)
		}
	}
	if _, errs, code := tcplab(t, "explain", "--conn", "nonsense", pc); code != 2 || !strings.Contains(errs, "want an index") {
		t.Errorf("--conn nonsense: exit %d %s", code, errs)
	}
	if _, errs, code := tcplab(t, "explain", "--svg", dir+"/x.svg", pc); code != 2 || !strings.Contains(errs, "the capture has 2 connections") {
		t.Errorf("--svg of two connections: exit %d %s", code, errs)
	}
	if _, err := os.Stat(dir + "/x.svg"); err == nil {
		t.Errorf("a failed explain left its --svg file")
	}
	out, errs, code = tcplab(t, "explain", "--conn", "1", "--ladder", "--svg", dir+"/a.svg", "--html", dir+"/a.html", "--scenario", dir+"/a.tcplab", pc)
	if code != 0 || !strings.Contains(out, "client") || !strings.Contains(out, "[R.]") || !strings.Contains(out, "wrote "+dir+"/a.tcplab") {
		t.Fatalf("views: exit %d %s\n%s", code, errs, out)
	}
	svg, _ := os.ReadFile(dir + "/a.svg")
	page, _ := os.ReadFile(dir + "/a.html")
	if !strings.Contains(string(svg), "<svg") || !strings.Contains(string(page), "refused: SYN refused by RST") {
		t.Errorf("svg %d bytes, page %d bytes without the finding", len(svg), len(page))
	}
	out, errs, code = tcplab(t, "run", dir+"/a.tcplab")
	if code != 0 || !strings.Contains(out, "expectations held") {
		t.Errorf("the written scenario: exit %d %s\n%s", code, errs, out)
	}
	out, _, code = tcplab(t, "explain", "--json", pc)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last struct {
		Kind        string `json:"kind"`
		Connections int    `json:"connections"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || code != 0 || last.Kind != "capture" || last.Connections != 2 {
		t.Errorf("--json: the last line %q: %v", lines[len(lines)-1], err)
	}
}

// An IPv6 capture (made here with gopacket's layers): the summary, --conn
// by an IPv6 address:port, the pictures, and a replay on IPv4 addresses.
func TestExplainIPv6(t *testing.T) {
	dir := t.TempDir()
	cli, srv := net.ParseIP("fd00::1"), net.ParseIP("fd00::2")
	var buf bytes.Buffer
	w := pcapgo.NewWriterNanos(&buf)
	if err := w.WriteFileHeader(65536, layers.LinkTypeRaw); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1000, 0)
	frame := func(fromCli bool, syn, ack, fin bool, seq, ackn uint32, payload int) {
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolTCP, HopLimit: 64, SrcIP: cli, DstIP: srv}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: seq, Ack: ackn, SYN: syn, ACK: ack, FIN: fin, Window: 500}
		if !fromCli {
			ip.SrcIP, ip.DstIP = srv, cli
			tcp.SrcPort, tcp.DstPort = 80, 40000
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		sb := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(make([]byte, payload))); err != nil {
			t.Fatal(err)
		}
		at = at.Add(time.Millisecond)
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(sb.Bytes()), Length: len(sb.Bytes())}, sb.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	frame(true, true, false, false, 100, 0, 0)
	frame(false, true, true, false, 500, 101, 0)
	frame(true, false, true, false, 101, 501, 0)
	frame(true, false, true, false, 101, 501, 10)
	frame(false, false, true, true, 501, 111, 0)
	frame(true, false, true, false, 111, 502, 0)
	pc := filepath.Join(dir, "v6.pcap")
	if err := os.WriteFile(pc, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := tcplab(t, "explain", pc)
	if code != 0 || !strings.Contains(out, "[fd00::1]:40000 > [fd00::2]:80") || !strings.Contains(out, "client CLOSE_WAIT  server CLOSED") {
		t.Fatalf("summary: exit %d %s\n%s", code, errs, out)
	}
	out, errs, code = tcplab(t, "explain", "--conn", "[fd00::1]:40000", "--ladder", "--svg", dir+"/v6.svg", "--html", dir+"/v6.html", "--scenario", dir+"/v6.tcplab", pc)
	if code != 0 || !strings.Contains(out, "fd00::2") {
		t.Fatalf("views: exit %d %s\n%s", code, errs, out)
	}
	src, _ := os.ReadFile(dir + "/v6.tcplab")
	if !strings.Contains(string(src), "replaced") || !strings.Contains(string(src), "host client 10.0.0.1") {
		t.Errorf("the replay of an IPv6 connection:\n%s", src)
	}
	if out, errs, code := tcplab(t, "run", dir+"/v6.tcplab"); code != 0 {
		t.Errorf("the replay: exit %d %s\n%s\n%s", code, errs, out, src)
	}
}
