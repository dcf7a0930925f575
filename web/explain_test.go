package web

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// captureOf runs a built-in scenario in the simulator and returns its
// capture (both hosts' taps), as `tcplab run NAME --pcap` writes it.
func captureOf(t *testing.T, name string) []byte {
	t.Helper()
	sc, err := scenario.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	var rec trace.Recorder
	if _, err := scenario.Run(sc, scenario.NewSim(1), scenario.Options{Sink: rec.Sink()}); err != nil {
		t.Fatal(err)
	}
	var hosts []trace.Host
	for _, h := range sc.Hosts {
		hosts = append(hosts, trace.Host{Name: h.Name, Addr: h.Addr.String()})
	}
	var pk []trace.Event
	for _, e := range rec.Events {
		if e.Kind == trace.KindPacket {
			pk = append(pk, e)
		}
	}
	var buf bytes.Buffer
	if _, err := trace.WritePcapng(&buf, hosts, pk); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func postCapture(t *testing.T, h http.Handler, query string, body []byte, ct string) (*httptest.ResponseRecorder, ExplainResult) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/explain"+query, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	h.ServeHTTP(rec, req)
	var res ExplainResult
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
	}
	return rec, res
}

// The page's capture upload: the connections, the first with a finding
// shown as a run is (ladder, state diagram, events), another by ?conn,
// and clear answers to what is not a capture.
func TestAPIExplain(t *testing.T) {
	h := NewHandler(simOnly())
	pc := captureOf(t, "rst-closed-port")
	rec, res := postCapture(t, h, "", pc, "application/octet-stream")
	if rec.Code != 200 || res.Total != 2 || len(res.Connections) != 2 || res.Conn != 1 || len(res.Errors) != 0 {
		t.Fatalf("upload: %d %+v", rec.Code, res)
	}
	if !strings.Contains(res.Explain, "refused: SYN refused by RST") || !strings.HasPrefix(res.Ladder, "<svg") || res.States == "" || len(res.Events) == 0 {
		t.Errorf("the report of connection 1: %q, ladder %d bytes, %d events", res.Explain, len(res.Ladder), len(res.Events))
	}
	if !strings.Contains(res.Connections[0].Line, "! refused") || res.Connections[0].Findings != 1 {
		t.Errorf("the connection list: %+v", res.Connections)
	}
	if _, res := postCapture(t, h, "?conn=2", pc, "application/octet-stream"); res.Conn != 2 || !strings.Contains(res.Title, "#2") {
		t.Errorf("?conn=2 showed %d: %s", res.Conn, res.Title)
	}
	if _, res := postCapture(t, h, "?conn=9", pc, "application/octet-stream"); len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Msg, "no connection matches 9") {
		t.Errorf("?conn=9: %+v", res.Errors)
	}
	if rec, _ := postCapture(t, h, "?conn=zzz", pc, "application/octet-stream"); rec.Code != http.StatusBadRequest {
		t.Errorf("?conn=zzz: %d", rec.Code)
	}
	if _, res := postCapture(t, h, "", []byte("hello, not a capture"), "application/octet-stream"); len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Msg, "not a pcap or pcapng capture") {
		t.Errorf("garbage: %+v", res.Errors)
	}
	if rec, _ := postCapture(t, h, "", pc, "text/plain"); rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("a text/plain post: %d", rec.Code)
	}
	// A truncated capture: what was read, and the error.
	if rec, res := postCapture(t, h, "", pc[:len(pc)/2], "application/octet-stream"); rec.Code != 200 || len(res.Errors) != 1 {
		t.Errorf("half a capture: %d %+v", rec.Code, res.Errors)
	}
}

// A hostile upload is bounded: a gzip capture that decompresses past the
// limit stops there with a clear error.
func TestAPIExplainBounds(t *testing.T) {
	defer func(m int64) { maxUnzipped = m }(maxUnzipped)
	maxUnzipped = 1 << 20
	h := NewHandler(simOnly())
	var raw bytes.Buffer
	w := pcapgo.NewWriter(&raw)
	w.WriteFileHeader(65536, layers.LinkTypeRaw)
	s := wire.Segment{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1000, DstPort: 80, Flags: wire.ACK, TTL: 64}
	pkt, _ := s.Marshal()
	for i := 0; raw.Len() < 2<<20; i++ {
		w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(int64(i), 0), CaptureLength: len(pkt), Length: len(pkt)}, pkt)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(raw.Bytes())
	zw.Close()
	rec, res := postCapture(t, h, "", z.Bytes(), "application/octet-stream")
	if rec.Code != 200 || len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Msg, "larger than 1 MiB uncompressed") {
		t.Errorf("a capture past the limit: %d %+v", rec.Code, res.Errors)
	}
	if _, res := postCapture(t, h, "", z.Bytes()[:z.Len()/2], "application/octet-stream"); len(res.Errors) != 1 {
		t.Errorf("half a gzip capture: %+v", res.Errors)
	}
}
