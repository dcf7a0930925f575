package full

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

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
		if got := checkListen(addr, false, "x") == nil; got != want {
			t.Errorf("checkListen(%s) allowed %v, want %v", addr, got, want)
		}
		if checkListen(addr, true, "x") != nil {
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
	c := inspect.NewCollector(h, inspect.CollectorOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serveHTTP(ctx, ln, metricsHandler(c, inspect.Target{}, true)) }()

	// The transport neither asks for gzip nor unzips: the tests set
	// Accept-Encoding themselves.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	do := func(method, path string, header ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+ln.Addr().String()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, body := do("GET", path)
		return resp.StatusCode, body
	}
	resp, body := do("GET", "/metrics")
	code := resp.StatusCode
	for _, want := range []string{`tcplab_sockets{port=`, `tcplab_sockets_by_state{state="LISTEN"}`,
		"tcplab_tcpext_listen_overflows_total ", `tcplab_doctor_findings{kind="close-wait-leak",level="error"} 0`,
		"# TYPE tcplab_tcpext_listen_overflows_total counter", "tcplab_scrape_errors_total 0"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics: status %d, body lacks %q", code, want)
		}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("/metrics: Content-Type %q", ct)
	}
	if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(body)) {
		t.Errorf("/metrics: Content-Length %q, body %d bytes", got, len(body))
	}
	// What Prometheus itself would do with the response.
	mfs := decodeMetrics(t, resp.Header, strings.NewReader(body))
	if n := len(mfs["tcplab_doctor_findings"].GetMetric()); n != 2*len(inspect.FindingKinds) {
		t.Errorf("decoded %d tcplab_doctor_findings series, want %d", n, 2*len(inspect.FindingKinds))
	}
	if mf := mfs["tcplab_tcpext_listen_overflows_total"]; mf.GetType() != dto.MetricType_COUNTER {
		t.Errorf("tcplab_tcpext_listen_overflows_total decoded as %v", mf.GetType())
	}

	resp, zbody := do("GET", "/metrics", "Accept-Encoding", "gzip")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("/metrics with Accept-Encoding gzip: status %d, Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	} else {
		zr, err := gzip.NewReader(strings.NewReader(zbody))
		if err != nil {
			t.Fatal(err)
		}
		mfs := decodeMetrics(t, resp.Header, zr)
		if len(mfs["tcplab_sockets_by_state"].GetMetric()) == 0 {
			t.Error("gzipped /metrics has no tcplab_sockets_by_state")
		}
	}
	if resp, _ := do("GET", "/metrics", "Accept-Encoding", "gzip;q=0, identity"); resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}

	resp, body = do("HEAD", "/metrics")
	if resp.StatusCode != 200 || body != "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Errorf("HEAD /metrics: status %d, Content-Type %q, body %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		resp, body := do(m, "/metrics")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /metrics: status %d, Allow %q, body %q; want 405", m, resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("/: status %d, body %q", code, body)
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Errorf("/nothing: status %d, want 404", code)
	}
	client.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveHTTP after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveHTTP did not stop")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("still listening after shutdown")
	}
}

// decodeMetrics decodes a /metrics response as Prometheus would, by its
// Content-Type, and returns the families by name.
func decodeMetrics(t *testing.T, h http.Header, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	format := expfmt.ResponseFormat(h)
	if format.FormatType() != expfmt.TypeTextPlain {
		t.Errorf("Content-Type %q is not the text format to Prometheus (%q)", h.Get("Content-Type"), format)
	}
	dec := expfmt.NewDecoder(r, format)
	out := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("decode /metrics: %v", err)
		}
		out[mf.GetName()] = mf
	}
}

// failingCollector fails every scrape.
type failingCollector struct{}

func (failingCollector) WriteTo(io.Writer) (int64, error) { return 0, errors.New("no sample") }

// A scrape that fails is an HTTP 500 with the error and no metrics (the
// collector's own count of failures is tested in inspect).
func TestExporterScrapeError(t *testing.T) {
	rec := httptest.NewRecorder()
	metricsHandler(failingCollector{}, inspect.Target{}, false).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "scrape failed: no sample") || strings.Contains(rec.Body.String(), "tcplab_") {
		t.Errorf("failed scrape: status %d, body %q; want 500 with the error only", rec.Code, rec.Body)
	}
}

// countingCollector counts its scrapes and writes one metric.
type countingCollector struct{ n *int }

func (c countingCollector) WriteTo(w io.Writer) (int64, error) {
	*c.n++
	n, err := io.WriteString(w, "tcplab_scrape_errors_total 0\n")
	return int64(n), err
}

// On loopback (no --allow-remote) the exporter answers only to loopback
// host names, so that a web page cannot read the metrics through a name it
// points at 127.0.0.1 (DNS rebinding); the refused requests are not
// scraped. With --allow-remote every name is answered.
func TestExporterLoopbackHost(t *testing.T) {
	var scrapes int
	handler := metricsHandler(countingCollector{&scrapes}, inspect.Target{}, true)
	serve := func(h http.Handler, host, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, host := range []string{"attacker.example:9469", "attacker.example", "127.0.0.1.nip.io:9469", "localhost.attacker.example:9469", "10.0.0.1:9469", "0.0.0.0:9469", "[::]:9469", ""} {
		for _, path := range []string{"/metrics", "/"} {
			rec := serve(handler, host, path)
			if body := rec.Body.String(); rec.Code != http.StatusForbidden || !strings.Contains(body, "only to a loopback host name") || !strings.Contains(body, "--allow-remote") || strings.Contains(body, "tcplab_") {
				t.Errorf("GET %s with Host %q: status %d, body %q; want 403 saying why", path, host, rec.Code, body)
			}
		}
	}
	if scrapes != 0 {
		t.Errorf("refused requests took %d scrapes", scrapes)
	}
	for _, host := range []string{"127.0.0.1:9469", "127.0.0.1", "127.1.2.3:80", "localhost:9469", "LocalHost:9469", "localhost", "[::1]:9469", "[::1]"} {
		if rec := serve(handler, host, "/metrics"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "tcplab_scrape_errors_total 0") {
			t.Errorf("GET /metrics with Host %q: status %d, body %q; want the metrics", host, rec.Code, rec.Body)
		}
		if rec := serve(handler, host, "/"); rec.Code != http.StatusOK {
			t.Errorf("GET / with Host %q: status %d, want 200", host, rec.Code)
		}
	}
	remote := metricsHandler(countingCollector{&scrapes}, inspect.Target{}, false)
	for _, host := range []string{"attacker.example:9469", "metrics.example.org:9469", "10.0.0.1:9469"} {
		if rec := serve(remote, host, "/metrics"); rec.Code != http.StatusOK {
			t.Errorf("--allow-remote, GET /metrics with Host %q: status %d, body %q; want 200", host, rec.Code, rec.Body)
		}
	}
}

// blockingCollector fails every scrape, after telling entered and
// waiting for release to be closed.
type blockingCollector struct{ entered, release chan struct{} }

func (f blockingCollector) WriteTo(io.Writer) (int64, error) {
	f.entered <- struct{}{}
	<-f.release
	return 0, errors.New("no sample")
}

func TestExporterScrapesInFlight(t *testing.T) {
	f := blockingCollector{entered: make(chan struct{}), release: make(chan struct{})}
	handler := scrapeHandler(f)
	var wg sync.WaitGroup
	codes := make(chan int, maxScrapesInFlight)
	for range maxScrapesInFlight {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			codes <- rec.Code
		})
	}
	for range maxScrapesInFlight {
		select {
		case <-f.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("the scrapes did not start")
		}
	}
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("with %d scrapes in flight: status %d, want 503", maxScrapesInFlight, rec.Code)
	}
	close(f.release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusInternalServerError {
			t.Errorf("released scrape: status %d, want 500", code)
		}
	}
}

// A bare IPv6 address before the port (what a manifest's $(POD_IP):9469
// makes on an IPv6 cluster) is read as that address and port.
func TestBracketIPv6(t *testing.T) {
	for in, want := range map[string]string{
		"fd00::1:9469":     "[fd00::1]:9469",
		"[fd00::1]:9469":   "[fd00::1]:9469",
		"10.0.0.1:9469":    "10.0.0.1:9469",
		":9469":            ":9469",
		"::1:9469":         "[::1]:9469",
		"fd00::1:":         "fd00::1:",
		"nonsense:x:9469":  "nonsense:x:9469",
		"::ffff:1.2.3.4:1": "[::ffff:1.2.3.4]:1",
	} {
		if got := bracketIPv6(in); got != want {
			t.Errorf("bracketIPv6(%q) = %q, want %q", in, got, want)
		}
	}
}
