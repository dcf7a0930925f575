package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/scenario"
)

func post(t *testing.T, h http.Handler, body string) (*httptest.ResponseRecorder, RunResult) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/run", strings.NewReader(body)))
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
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/run", strings.NewReader(string(body))))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
