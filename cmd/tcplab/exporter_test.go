package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcplab/tcplab/inspect"
)

func TestExporterRefusesRemote(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		out, errs, code := tcplab(t, "exporter", "--listen", addr)
		if code != 2 || !strings.Contains(errs, "--allow-remote") || strings.Contains(out, "serving") {
			t.Errorf("--listen %s: exit %d, stderr %q, stdout %q; want exit 2 naming --allow-remote", addr, code, errs, out)
		}
	}
	_, errs, code := tcplab(t, "exporter", "--listen", "nonsense")
	if code != 2 || !strings.Contains(errs, "--listen") {
		t.Errorf("--listen nonsense: exit %d, stderr %q", code, errs)
	}
	_, errs, code = tcplab(t, "exporter", "--top-ports", "0")
	if code != 2 || !strings.Contains(errs, "--top-ports") {
		t.Errorf("--top-ports 0: exit %d, stderr %q", code, errs)
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "10.0.0.1:1": false, ":1": false} {
		if got := checkListen(addr, false) == nil; got != want {
			t.Errorf("checkListen(%s) allowed %v, want %v", addr, got, want)
		}
		if checkListen(addr, true) != nil {
			t.Errorf("checkListen(%s, allowRemote) refused", addr)
		}
	}
}

func TestExporterServe(t *testing.T) {
	h, err := inspect.OpenHost(inspect.Target{})
	if err != nil {
		t.Skipf("sock_diag not available: %v", err)
	}
	defer h.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(inspect.NewCollector(h, inspect.CollectorOptions{}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serveMetrics(ctx, ln, metricsHandler(reg, inspect.Target{})) }()

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{`tcplab_sockets{port=`, `tcplab_sockets_by_state{state="LISTEN"}`,
		`tcplab_netstat_total{group="TcpExt",name="ListenOverflows"}`, `tcplab_doctor_findings{kind="close-wait-leak",level="error"} 0`,
		"# TYPE tcplab_netstat_total counter", "tcplab_scrape_errors_total 0"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics: status %d, body lacks %q", code, want)
		}
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("/: status %d, body %q", code, body)
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Errorf("/nothing: status %d, want 404", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveMetrics after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveMetrics did not stop")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("still listening after shutdown")
	}
}
