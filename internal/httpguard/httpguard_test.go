package httpguard

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:8080": true, "LOCALHOST:8080": true,
		"127.0.0.1": true, "127.0.0.1:80": true, "127.9.8.7:80": true,
		"[::1]": true, "[::1]:8080": true, "::1": true, "[::ffff:127.0.0.1]:80": true,

		"": false, "attacker.example": false, "attacker.example:8080": false,
		"localhost.attacker.example": false, "127.0.0.1.nip.io:80": false,
		"0.0.0.0:80": false, "[::]:80": false, "10.0.0.1:80": false, "192.168.1.1": false,
		"localhost:80:80": false, "[fe80::1]:80": false,
	} {
		if got := LoopbackHost(host); got != want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	var passed int
	h := LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { passed++ }), "go away")
	for host, want := range map[string]int{"127.0.0.1:80": http.StatusOK, "attacker.example:80": http.StatusForbidden} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want || (want == http.StatusForbidden && rec.Body.String() != "go away\n") {
			t.Errorf("Host %q: status %d, body %q; want %d", host, rec.Code, rec.Body, want)
		}
	}
	if passed != 1 {
		t.Errorf("the handler behind served %d requests, want 1", passed)
	}
}
