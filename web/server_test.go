package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcplab/tcplab/scenario"
)

func post(t *testing.T, h http.Handler, body string) (*httptest.ResponseRecorder, RunResult) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/run", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	var res RunResult
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
	}
	return rec, res
}

func TestAPI(t *testing.T) {
	h := NewHandler(simOnly())
	src, _ := scenario.BuiltinSource("hutu")
	body, _ := json.Marshal(RunRequest{Source: src, Name: "hutu.tcplab"})
	rec, res := post(t, h, string(body))
	if rec.Code != 200 || res.Held != 11 || res.Total != 11 || !strings.HasPrefix(res.Ladder, "<svg") || !strings.HasPrefix(res.States, "<svg") {
		t.Fatalf("hutu: %d, %d of %d held", rec.Code, res.Held, res.Total)
	}
	if len(res.Snapshots) != 12 || len(res.Hosts) != 2 || res.End == 0 {
		t.Errorf("hutu: %d snapshots (want 12), %d hosts, end %v", len(res.Snapshots), len(res.Hosts), res.End)
	}
	// Errors come back with their line and column.
	body, _ = json.Marshal(RunRequest{Source: "host a 10.0.0.1\nbogus line\nhost b 10.0.0.x\n"})
	_, res = post(t, h, string(body))
	if len(res.Errors) != 2 || res.Errors[0].Line != 2 || res.Errors[0].Col != 1 || res.Errors[1].Line != 3 {
		t.Errorf("errors: %+v", res.Errors)
	}
	for _, c := range []struct {
		body string
		code int
	}{
		{`{"source": "` + strings.Repeat("x", MaxSource+1) + `"}`, http.StatusRequestEntityTooLarge},
		{`{"source": "` + strings.Repeat("x", MaxSource+8192) + `"}`, http.StatusRequestEntityTooLarge},
		{`{"source": "host a 10.0.0.1", "backend": "kernel"}`, http.StatusForbidden},
		{`{"source": "host a 10.0.0.1", "backend": "bsd"}`, http.StatusBadRequest},
		{`not json`, http.StatusBadRequest},
	} {
		if rec, _ := post(t, h, c.body); rec.Code != c.code {
			t.Errorf("%.40s: %d, want %d", c.body, rec.Code, c.code)
		}
	}
	for path, code := range map[string]int{"/": 200, "/app.js": 200, "/api/scenarios": 200, "/api/scenarios/hutu": 200, "/api/scenarios/nope": 404, "/api/info": 200} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != code {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, code)
		}
	}
}

func BenchmarkRunLargest(b *testing.B) {
	h := NewHandler(simOnly())
	src, _ := scenario.BuiltinSource("accept-overflow")
	body, _ := json.Marshal(RunRequest{Source: src})
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/api/run", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// Requests other sites' pages could make are refused: a post that is not
// JSON, one a browser marks as from another site (in any case), one whose
// Origin is not its Host (Go's cross-origin protection), one to a name
// that is not loopback (DNS rebinding) when the server listens on
// loopback. Same-origin posts and tools sending neither header pass.
func TestAPIRefusesOtherSites(t *testing.T) {
	o := simOnly()
	o.LoopbackOnly = true
	h := NewHandler(o)
	src := `{"source": "host a 10.0.0.1"}`
	const json, local = "application/json", "127.0.0.1:8080"
	for _, c := range []struct {
		ctype, fetchSite, origin, host string
		code                           int
	}{
		{"text/plain", "", "", local, http.StatusUnsupportedMediaType},
		{json, "cross-site", "", local, http.StatusForbidden},
		{json, "Cross-Site", "", local, http.StatusForbidden},
		{json, "same-site", "", local, http.StatusForbidden},
		{json, "", "http://attacker.example", local, http.StatusForbidden},
		{json, "", "null", local, http.StatusForbidden},
		{json, "", "", "attacker.example:8080", http.StatusForbidden},
		{json, "same-origin", "", "localhost:8080", http.StatusOK},
		{json, "", "", "[::1]:8080", http.StatusOK},
		{json, "", "http://127.0.0.1:8080", local, http.StatusOK},
		{json, "same-origin", "http://127.0.0.1:8080", local, http.StatusOK},
		{json, "", "", local, http.StatusOK},
	} {
		req := httptest.NewRequest("POST", "/api/run", strings.NewReader(src))
		req.Host = c.host
		req.Header.Set("Content-Type", c.ctype)
		for k, v := range map[string]string{"Sec-Fetch-Site": c.fetchSite, "Origin": c.origin} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.code {
			t.Errorf("%+v: %d, want %d", c, rec.Code, c.code)
		}
	}
}

// slowBackend is the simulator with a run that takes its time and can be
// interrupted, as a kernel run can.
type slowBackend struct {
	scenario.Backend
	stopped atomic.Bool
	live    *atomic.Int32
}

// RunUntil takes 100 ms, interrupted or not, as a kernel step can.
func (b *slowBackend) RunUntil(t time.Duration, stop func() bool) bool {
	time.Sleep(100 * time.Millisecond)
	return b.Backend.RunUntil(t, stop)
}

func (b *slowBackend) Interrupt(error) { b.stopped.Store(true) }

func (b *slowBackend) Close() error {
	b.live.Add(-1)
	return b.Backend.Close()
}

// A run the request gave up on keeps its slot until it has ended, and is
// interrupted; Stop waits for every run.
func TestRunKeepsItsSlot(t *testing.T) {
	var live atomic.Int32
	o := simOnly()
	o.Kernel = func(seed uint64) (scenario.Backend, string, error) {
		live.Add(1)
		return &slowBackend{Backend: scenario.NewSim(seed), live: &live}, "slow", nil
	}
	o.KernelTimeout = 20 * time.Millisecond
	s := NewServer(o)
	src, _ := scenario.BuiltinSource("handshake")
	body, _ := json.Marshal(RunRequest{Source: src, Backend: "kernel"})
	codes := map[int]int{}
	for range 5 {
		rec, _ := post(t, s, string(body))
		codes[rec.Code]++
		if n := live.Load(); n > 1 {
			t.Fatalf("%d kernel runs at once", n)
		}
	}
	if codes[http.StatusServiceUnavailable] != 5 {
		t.Errorf("answers %v, want five 503 (timed out, then busy until the run ends)", codes)
	}
	s.Stop()
	if n := live.Load(); n != 0 {
		t.Errorf("%d runs still going after Stop", n)
	}
}

// floodSource injects the most SYNs a scenario may: under the default
// budget its run takes about half a second of CPU.
const floodSource = `host attacker 10.0.9.1
host server 10.0.0.2
server: listen 80
attacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 1us
after 1s
`

func postCtx(ctx context.Context, h http.Handler, body string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/run", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	return rec
}

// A simulator run stops when its request times out or goes away, and its
// slot is free when the answer goes out: runs that outlive their
// requests cannot keep other users out.
func TestRunStopsWithItsRequest(t *testing.T) {
	o := simOnly()
	// 300 times a hutu run's time, and a tenth of a flood's (seconds).
	o.SimTimeout = 300 * time.Millisecond
	// A budget no run reaches in its time: only the deadline stops them.
	o.Budget = scenario.Budget{MaxEvents: 1 << 30, MaxBytes: 1 << 40}
	s := NewServer(o)
	defer s.Stop()
	flood, _ := json.Marshal(RunRequest{Source: floodSource})
	hutu, _ := json.Marshal(RunRequest{Source: mustBuiltin(t, "hutu")})
	for round := range 3 {
		var wg sync.WaitGroup
		codes := make([]int, 4)
		for i := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i] = postCtx(context.Background(), s, string(flood)).Code
			}()
		}
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusServiceUnavailable {
				t.Fatalf("round %d: flood %d answered %d, want 503 (stopped at the deadline)", round, i, c)
			}
		}
		if rec, res := post(t, s, string(hutu)); rec.Code != 200 || res.Held != 11 {
			t.Fatalf("round %d: the next run after four stopped ones: %d %q", round, rec.Code, rec.Body.String())
		}
	}

	// A request that goes away stops its run too.
	o.SimTimeout = time.Hour
	s2 := NewServer(o)
	defer s2.Stop()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			postCtx(ctx, s2, string(flood))
		}()
	}
	wg.Wait()
	if rec, _ := post(t, s2, string(hutu)); rec.Code != 200 {
		t.Fatalf("after four requests that went away: %d %q", rec.Code, rec.Body.String())
	}
}

// A run over its budget answers with the error at the line the run was
// at and what it did up to then.
func TestRunOverBudget(t *testing.T) {
	o := simOnly()
	o.Budget = scenario.Budget{MaxEvents: 5000}
	flood, _ := json.Marshal(RunRequest{Source: floodSource})
	rec, res := post(t, NewHandler(o), string(flood))
	if rec.Code != 200 || len(res.Errors) != 1 {
		t.Fatalf("%d %+v", rec.Code, res.Errors)
	}
	e := res.Errors[0]
	if e.Line != 5 || !strings.Contains(e.Msg, "5000 events") || !strings.Contains(e.Msg, "line 4 injects 100000 segments") {
		t.Errorf("error %+v", e)
	}
	if len(res.Events) == 0 || res.End == 0 {
		t.Errorf("no partial report: %d events, end %v", len(res.Events), res.End)
	}
}

func mustBuiltin(t *testing.T, name string) string {
	t.Helper()
	src, ok := scenario.BuiltinSource(name)
	if !ok {
		t.Fatalf("no built-in %s", name)
	}
	return src
}

// Clients that never read their answers hold connections, not run slots:
// a plain run still gets one, and Stop does not wait for them.
func TestSlowReadersHoldNoSlot(t *testing.T) {
	s := NewServer(simOnly())
	ts := httptest.NewServer(s)
	defer ts.Close()
	big, _ := json.Marshal(RunRequest{Source: "host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80 backlog 4096\nrepeat 2000 client: connect server:80 as c{i}\nafter 1s\n"})
	addr := strings.TrimPrefix(ts.URL, "http://")
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "POST /api/run HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr, len(big), big)
	}
	// The four runs take the slots for as long as they run (about a
	// second each here); once they have answered, a plain run gets one.
	hutu, _ := json.Marshal(RunRequest{Source: mustBuiltin(t, "hutu")})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Post(ts.URL+"/api/run", "application/json", strings.NewReader(string(hutu)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("a plain run while four answers are unread: %d %s", resp.StatusCode, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The unread answers are bounded in all: with room for one, a
	// second big answer is refused while the first is unread.
	o := simOnly()
	o.MaxUnsent = 1
	s2 := NewServer(o)
	ts2 := httptest.NewServer(s2)
	defer ts2.Close()
	addr2 := strings.TrimPrefix(ts2.URL, "http://")
	// About 16 MB: more than the socket buffers of a loopback connection.
	big, _ = json.Marshal(RunRequest{Source: "host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80 backlog 4096\nrepeat 10000 client: connect server:80 as c{i}\nafter 10s\n"})
	deadline = time.Now().Add(60 * time.Second)
	c, err := net.Dial("tcp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(c, "POST /api/run HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr2, len(big), big)
	// Its answer is being written once its status line arrives: from
	// then on it holds the room, and it is not refused for another
	// answer being written at the same moment.
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("the unread answer: %q %v", status, err)
	}
	for {
		resp, err := http.Post(ts2.URL+"/api/run", "application/json", strings.NewReader(string(big)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "waiting to be read") {
			break
		}
		if resp.StatusCode != 200 || time.Now().After(deadline) {
			t.Fatalf("a second big answer while one is unread: %d %.200s", resp.StatusCode, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waits for clients that do not read")
	}
}

// A packetdrill script (a name ending in .pkt) runs on the engine and
// comes back as a report; a failing one also with the line it failed at;
// one that does not parse, with its line and column.
func TestAPIPacketdrill(t *testing.T) {
	h := NewHandler(simOnly())
	script := "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n" +
		"+0 bind(3, ..., ...) = 0\n+0 listen(3, 1) = 0\n" +
		"+0 < S 0:0(0) win 32792 <mss 1000>\n" +
		"+0 > S. 0:0(0) ack 1 <mss 1460>\n" +
		"+.01 < . 1:1(0) ack 1 win 257\n" +
		"+0 accept(3, ..., ...) = 4\n"
	body, _ := json.Marshal(RunRequest{Source: script, Name: "mine.pkt"})
	rec, res := post(t, h, string(body))
	if rec.Code != 200 || res.Held != 1 || res.Total != 1 || len(res.Errors) != 0 || !strings.HasPrefix(res.Ladder, "<svg") || len(res.Hosts) != 2 {
		t.Fatalf("a passing script: %d, %d of %d, errors %v", rec.Code, res.Held, res.Total, res.Errors)
	}
	bad := strings.Replace(script, "ack 1 <mss 1460>", "ack 2 <mss 1460>", 1)
	body, _ = json.Marshal(RunRequest{Source: bad, Name: "mine.pkt"})
	_, res = post(t, h, string(body))
	if res.Held != 0 || len(res.Errors) != 1 || res.Errors[0].Line != 5 || !strings.Contains(res.Errors[0].Msg, "tcp_ack_seq") {
		t.Errorf("a failing script: %d of %d, errors %+v", res.Held, res.Total, res.Errors)
	}
	body, _ = json.Marshal(RunRequest{Source: "0 socket(..., SOCK_STREAM", Name: "mine.pkt"})
	_, res = post(t, h, string(body))
	if len(res.Errors) != 1 || res.Errors[0].Line != 1 || res.Errors[0].Col == 0 {
		t.Errorf("a script that does not parse: %+v", res.Errors)
	}
	// A shell line naming a file reads nothing on the server.
	body, _ = json.Marshal(RunRequest{Source: "`/etc/passwd`\n" + script, Name: "mine.pkt"})
	if rec, res := post(t, h, string(body)); rec.Code != 200 || res.Held != 1 || !strings.Contains(res.Explain, "pass") {
		t.Errorf("a script with a file line: %d %+v", rec.Code, res.Errors)
	}
	body, _ = json.Marshal(RunRequest{Source: script, Name: "mine.pkt", Backend: "kernel"})
	if rec, _ := post(t, h, string(body)); rec.Code != http.StatusBadRequest {
		t.Errorf("a script on the kernel: %d", rec.Code)
	}
}

// A script cannot make a page run hold more than the page's budget of
// bytes: it stops, and says so.
func TestAPIPacketdrillBudget(t *testing.T) {
	h := NewHandler(simOnly())
	var b strings.Builder
	b.WriteString("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n+0 listen(3, 1) = 0\n")
	b.WriteString("+0 < S 0:0(0) win 32792 <mss 1000>\n+0 > S. 0:0(0) ack 1 <mss 1460>\n+.01 < . 1:1(0) ack 1 win 257\n")
	for b.Len() < MaxSource-100 {
		b.WriteString("+0 < . 1:60001(60000) ack 1 win 257\n")
	}
	body, _ := json.Marshal(RunRequest{Source: b.String(), Name: "big.pkt"})
	rec, res := post(t, h, string(body))
	if rec.Code != 200 || len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Msg, "budget") {
		t.Fatalf("a script past the budget: %d %+v", rec.Code, res.Errors)
	}
}
