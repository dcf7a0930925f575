package inspect

import (
	"bytes"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// closeWaitOnLoopback opens a listener on 127.0.0.1, connects to it,
// accepts, and closes the client side only: the accepted socket is left in
// CLOSE_WAIT on the listener's port. Everything is closed at cleanup.
func closeWaitOnLoopback(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err := net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	client.Close()
	// The FIN has arrived once the server reads end of stream.
	server.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read after the client's close: %v, want EOF", err)
	}
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// listenOnLoopback opens a listener on 127.0.0.1 closed at cleanup.
func listenOnLoopback(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func newTestCollector(t *testing.T, o CollectorOptions) *Collector {
	t.Helper()
	h, err := OpenHost(Target{})
	if err != nil {
		t.Skipf("sock_diag not available: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return NewCollector(h, o)
}

// scrapeText runs one scrape and returns the exposition.
func scrapeText(t *testing.T, c *Collector) string {
	t.Helper()
	var b strings.Builder
	n, err := c.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) {
		t.Errorf("WriteTo returned %d, wrote %d bytes", n, b.Len())
	}
	return b.String()
}

// parseExposition parses text with the Prometheus text parser and checks
// what the parser does not: no family without series, no series twice.
func parseExposition(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse the exposition: %v\n%s", err, text)
	}
	for name, mf := range mfs {
		seen := map[string]bool{}
		for _, m := range mf.GetMetric() {
			var key []string
			for _, l := range m.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(key)
			k := strings.Join(key, ",")
			if seen[k] {
				t.Errorf("%s{%s} is there twice", name, k)
			}
			seen[k] = true
		}
	}
	return mfs
}

// scrape runs one scrape, parses it, and returns the metrics by name.
func scrape(t *testing.T, c *Collector) map[string][]*dto.Metric {
	t.Helper()
	out := map[string][]*dto.Metric{}
	for name, mf := range parseExposition(t, scrapeText(t, c)) {
		out[name] = mf.GetMetric()
	}
	return out
}

// value finds the metric with exactly these labels.
func value(ms []*dto.Metric, labels map[string]string) (float64, bool) {
	for _, m := range ms {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func TestExporterCollector(t *testing.T) {
	port := closeWaitOnLoopback(t)
	// Every listening port gets its own label, however busy the host is.
	c := newTestCollector(t, CollectorOptions{TopPorts: 1 << 16})
	p := strconv.Itoa(int(port))

	first := scrape(t, c)
	if v, ok := value(first["tcplab_sockets"], map[string]string{"state": "CLOSE_WAIT", "port": p}); !ok || v < 1 {
		t.Errorf("tcplab_sockets{state=CLOSE_WAIT,port=%s} = %v (present %v), want >= 1", p, v, ok)
	}
	if v, ok := value(first["tcplab_sockets"], map[string]string{"state": "LISTEN", "port": p}); !ok || v != 1 {
		t.Errorf("tcplab_sockets{state=LISTEN,port=%s} = %v (present %v), want 1", p, v, ok)
	}
	if v, ok := value(first["tcplab_sockets_by_state"], map[string]string{"state": "CLOSE_WAIT"}); !ok || v < 1 {
		t.Errorf("tcplab_sockets_by_state{state=CLOSE_WAIT} = %v (present %v), want >= 1", v, ok)
	}
	if n := len(first["tcplab_sockets_by_state"]); n != int(Closing) {
		t.Errorf("tcplab_sockets_by_state has %d states, want %d", n, Closing)
	}
	if _, ok := value(first["tcplab_tcpext_listen_overflows_total"], map[string]string{}); !ok {
		t.Error("tcplab_tcpext_listen_overflows_total is missing")
	}
	if _, ok := value(first["tcplab_tcp_curr_estab"], map[string]string{}); !ok {
		t.Error("tcplab_tcp_curr_estab is missing")
	}
	if _, ok := first["tcplab_tcp_curr_estab_total"]; ok {
		t.Error("CurrEstab is exported as a counter")
	}
	if v, ok := value(first["tcplab_sockstat_tcp_inuse"], map[string]string{}); !ok || v < 1 {
		t.Errorf("tcplab_sockstat_tcp_inuse = %v (present %v), want >= 1", v, ok)
	}
	if n := len(first["tcplab_doctor_findings"]); n != 2*len(FindingKinds) {
		t.Errorf("tcplab_doctor_findings has %d series, want %d", n, 2*len(FindingKinds))
	}
	for _, m := range first["tcplab_doctor_findings"] {
		if m.GetGauge().GetValue() != 0 {
			t.Errorf("first scrape: finding %v = %v, want 0", m.GetLabel(), m.GetGauge().GetValue())
		}
	}
	if _, ok := value(first["tcplab_scrape_duration_seconds"], map[string]string{}); !ok {
		t.Error("tcplab_scrape_duration_seconds is missing")
	}
	if v, ok := value(first["tcplab_scrape_errors_total"], map[string]string{}); !ok || v != 0 {
		t.Errorf("tcplab_scrape_errors_total = %v (present %v), want 0", v, ok)
	}

	// The CLOSE_WAIT socket is in both samples: a close-wait leak.
	second := scrape(t, c)
	warn, _ := value(second["tcplab_doctor_findings"], map[string]string{"kind": "close-wait-leak", "level": "warning"})
	errs, _ := value(second["tcplab_doctor_findings"], map[string]string{"kind": "close-wait-leak", "level": "error"})
	t.Logf("second scrape: close-wait-leak warnings %v, errors %v", warn, errs)
	if warn < 1 {
		t.Errorf("second scrape: close-wait-leak warnings = %v (errors %v), want >= 1", warn, errs)
	}
	for _, k := range FindingKinds {
		for _, l := range []string{"warning", "error"} {
			if _, ok := value(second["tcplab_doctor_findings"], map[string]string{"kind": k, "level": l}); !ok {
				t.Errorf("tcplab_doctor_findings{kind=%s,level=%s} is missing", k, l)
			}
		}
	}
}

func TestExporterTopPorts(t *testing.T) {
	// At least two listening ports exist, so one of them is "other".
	closeWaitOnLoopback(t)
	listenOnLoopback(t)
	c := newTestCollector(t, CollectorOptions{TopPorts: 1})
	m := scrape(t, c)
	if n := len(m["tcplab_sockets_by_state"]); n != int(Closing) {
		t.Errorf("tcplab_sockets_by_state has %d series, want %d", n, Closing)
	}
	numeric, other := map[string]bool{}, false
	for _, x := range m["tcplab_sockets"] {
		for _, l := range x.GetLabel() {
			if l.GetName() != "port" {
				continue
			}
			switch v := l.GetValue(); v {
			case PortOther:
				other = true
			case PortOutgoing:
			default:
				if _, err := strconv.ParseUint(v, 10, 16); err != nil {
					t.Errorf("port label %q is neither a port nor other/outgoing", v)
				}
				numeric[v] = true
			}
		}
	}
	if len(numeric) > 1 {
		t.Errorf("TopPorts 1: %d numeric port labels %v", len(numeric), numeric)
	}
	if !other {
		t.Error(`TopPorts 1 with two listening ports: no port="other"`)
	}
}

func TestExporterSocketBuckets(t *testing.T) {
	ap := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port) }
	socks := []Socket{
		{State: Listen, Local: ap(80)},
		{State: Established, Local: ap(80), Remote: ap(40000)},
		{State: NewSynRecv, Local: ap(80), Remote: ap(40001)},
		{State: Listen, Local: ap(22)},
		{State: CloseWait, Local: ap(22), Remote: ap(40002)},
		{State: Listen, Local: ap(9000)},
		{State: Established, Local: ap(40000), Remote: ap(80)},
		{State: SynSent, Local: ap(80), Remote: ap(443)}, // SYN_SENT is outgoing, whatever its port
	}
	got := SocketBuckets(socks, 2)
	want := map[string]map[string]int{
		"LISTEN":      {"80": 1, "22": 1, PortOther: 1},
		"ESTABLISHED": {"80": 1, PortOutgoing: 1},
		"SYN_RECV":    {"80": 1},
		"CLOSE_WAIT":  {"22": 1},
		"SYN_SENT":    {PortOutgoing: 1},
	}
	if len(got) != len(want) {
		t.Errorf("got states %v, want %v", got, want)
	}
	for st, ports := range want {
		for p, n := range ports {
			if got[st][p] != n {
				t.Errorf("%s port %s: %d, want %d (all: %v)", st, p, got[st][p], n, got)
			}
		}
		if len(got[st]) != len(ports) {
			t.Errorf("%s: ports %v, want %v", st, got[st], ports)
		}
	}
}

func TestExporterLint(t *testing.T) {
	c := newTestCollector(t, CollectorOptions{})
	mfs := parseExposition(t, scrapeText(t, c))
	var list []*dto.MetricFamily
	for _, mf := range mfs {
		list = append(list, mf)
	}
	problems, err := promlint.NewWithMetricFamilies(list).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestExporterEscaping(t *testing.T) {
	d := newMetricDesc("test_escapes", gaugeType, "a backslash \\ and a\nnewline, \"quoted\"", "z", "a")
	f := newFamily(d)
	values := map[string]float64{
		`say "hi"`:    1,
		`back\slash`:  -2.5,
		"two\nlines":  math.Inf(+1),
		"minus inf":   math.Inf(-1),
		"not a value": math.NaN(),
		"huge":        float64(uint64(math.MaxUint64)),
		"tiny":        1e-7,
		"tenth":       0.1,
	}
	for v, x := range values {
		f.add(x, v, "second")
	}
	c := newFamily(newMetricDesc("test_plain_total", counterType, "No labels."))
	c.add(3)
	var b bytes.Buffer
	writeFamilies(&b, []*family{c, f})
	text := b.String()
	t.Logf("exposition:\n%s", text)
	for _, want := range []string{
		"# HELP test_escapes a backslash \\\\ and a\\nnewline, \"quoted\"\n# TYPE test_escapes gauge\n",
		`test_escapes{a="second",z="say \"hi\""} 1` + "\n",
		`test_escapes{a="second",z="back\\slash"} -2.5` + "\n",
		`test_escapes{a="second",z="two\nlines"} +Inf` + "\n",
		`test_escapes{a="second",z="minus inf"} -Inf` + "\n",
		`test_escapes{a="second",z="not a value"} NaN` + "\n",
		`test_escapes{a="second",z="huge"} 1.8446744073709552e+19` + "\n",
		`test_escapes{a="second",z="tiny"} 1e-07` + "\n",
		"# TYPE test_plain_total counter\ntest_plain_total 3\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if i, j := strings.Index(text, "test_escapes"), strings.Index(text, "test_plain_total"); i > j {
		t.Error("families are not sorted by name")
	}

	mfs := parseExposition(t, text)
	mf := mfs["test_escapes"]
	if got, want := mf.GetHelp(), d.help; got != want {
		t.Errorf("parsed HELP %q, want %q", got, want)
	}
	if mf.GetType() != dto.MetricType_GAUGE {
		t.Errorf("parsed type %v, want GAUGE", mf.GetType())
	}
	if len(mf.GetMetric()) != len(values) {
		t.Errorf("parsed %d series, want %d", len(mf.GetMetric()), len(values))
	}
	var prev string
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		z := labels["z"]
		want, ok := values[z]
		if !ok || labels["a"] != "second" || len(labels) != 2 {
			t.Errorf("parsed labels %q: not what was written", labels)
			continue
		}
		if got := m.GetGauge().GetValue(); got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("z=%q: parsed %v, want %v", z, got, want)
		}
		if z < prev {
			t.Errorf("series not sorted: %q after %q", z, prev)
		}
		prev = z
	}
	if mf := mfs["test_plain_total"]; mf.GetType() != dto.MetricType_COUNTER || mf.GetMetric()[0].GetCounter().GetValue() != 3 {
		t.Errorf("test_plain_total parsed as %v", mf)
	}
}

func TestExporterFormat(t *testing.T) {
	c := newTestCollector(t, CollectorOptions{})
	text := scrapeText(t, c)
	mfs := parseExposition(t, text)
	want := []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"tcplab_doctor_findings", dto.MetricType_GAUGE, []string{"kind", "level"}},
		{"tcplab_scrape_duration_seconds", dto.MetricType_GAUGE, nil},
		{"tcplab_scrape_errors_total", dto.MetricType_COUNTER, nil},
		{"tcplab_sockets", dto.MetricType_GAUGE, []string{"port", "state"}},
		{"tcplab_sockets_by_state", dto.MetricType_GAUGE, []string{"state"}},
		{"tcplab_sockstat_tcp_inuse", dto.MetricType_GAUGE, nil},
		{"tcplab_sockstat_tcp_mem_bytes", dto.MetricType_GAUGE, nil},
		{"tcplab_tcp_curr_estab", dto.MetricType_GAUGE, nil},
		{"tcplab_tcp_retrans_segs_total", dto.MetricType_COUNTER, nil},
		{"tcplab_tcp_rto_max_seconds", dto.MetricType_GAUGE, nil},
		{"tcplab_tcpext_listen_overflows_total", dto.MetricType_COUNTER, nil},
		{"tcplab_tcpext_tcp_abort_on_data_total", dto.MetricType_COUNTER, nil},
	}
	helps := map[string]string{}
	for _, d := range []*metricDesc{c.sockets, c.byState, c.findings, c.duration, c.scrapeErrors} {
		helps[d.name] = d.help
	}
	for name, d := range c.kernel {
		helps[name] = d.help
	}
	// A family per kernel field: far more than the fixed ones.
	if len(mfs) < 100 {
		t.Errorf("%d families, want one per kernel field", len(mfs))
	}
	last := -1
	for _, w := range want {
		mf, ok := mfs[w.name]
		if !ok {
			t.Errorf("%s is missing", w.name)
			continue
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", w.name, mf.GetType(), w.typ)
		}
		if mf.GetHelp() != helps[w.name] || mf.GetHelp() == "" {
			t.Errorf("%s: help %q, want %q", w.name, mf.GetHelp(), helps[w.name])
		}
		for _, m := range mf.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			if !slices.Equal(names, w.labels) {
				t.Errorf("%s: labels %v, want %v", w.name, names, w.labels)
				break
			}
		}
		// Families in order of name, HELP then TYPE then the series.
		i := strings.Index(text, "# HELP "+w.name+" ")
		if i <= last || !strings.HasPrefix(text[i:], "# HELP "+w.name+" "+strings.ReplaceAll(helps[w.name], "\n", `\n`)+"\n# TYPE "+w.name+" ") {
			t.Errorf("%s: HELP at %d (previous family at %d), or not followed by TYPE", w.name, i, last)
		}
		last = i
	}
	// Series sorted within each family: the parser keeps the order the
	// lines and their labels were written in.
	for name, mf := range mfs {
		var prev []string
		for i, m := range mf.GetMetric() {
			var values []string
			for _, l := range m.GetLabel() {
				values = append(values, l.GetValue())
			}
			if i > 0 && slices.Compare(prev, values) >= 0 {
				t.Errorf("%s: series %q after %q", name, values, prev)
			}
			prev = values
		}
	}
}

func TestExporterScrapeError(t *testing.T) {
	c := newTestCollector(t, CollectorOptions{})
	scrapeText(t, c)
	// A sock_diag socket that is closed makes the sample fail.
	good := c.host.diag
	broken, err := OpenDiag()
	if err != nil {
		t.Fatal(err)
	}
	broken.Close()
	c.host.diag = broken
	var b strings.Builder
	n, err := c.WriteTo(&b)
	c.host.diag = good
	if err == nil || n != 0 || b.Len() != 0 {
		t.Fatalf("scrape with a closed socket: %d bytes, error %v; want an error and nothing written (wrote %q)", n, err, b.String())
	}
	t.Logf("scrape error: %v", err)
	m := scrape(t, c)
	if v, ok := value(m["tcplab_scrape_errors_total"], map[string]string{}); !ok || v != 1 {
		t.Errorf("after a failed scrape: tcplab_scrape_errors_total = %v (present %v), want 1", v, ok)
	}
	if n := len(m["tcplab_sockets_by_state"]); n != int(Closing) {
		t.Errorf("after a failed scrape: %d states, want %d", n, Closing)
	}
}

// Every metric is in base units and says its type in its name, as
// Prometheus's conventions want: a counter ends in _total and a gauge does
// not; times are seconds (RtoMax is 120 s, not 120000) and memory bytes
// (sockstat's mem is whole pages). One metric a counter, so sum() means
// something: no family has a label naming a counter.
func TestExporterUnits(t *testing.T) {
	c := newTestCollector(t, CollectorOptions{})
	mfs := parseExposition(t, scrapeText(t, c))
	for name, mf := range mfs {
		total := strings.HasSuffix(name, "_total")
		if (mf.GetType() == dto.MetricType_COUNTER) != total {
			t.Errorf("%s: type %v with a name that %s in _total", name, mf.GetType(), map[bool]string{true: "ends", false: "does not end"}[total])
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "name" || l.GetName() == "group" {
					t.Errorf("%s: label %s=%s: one metric a counter", name, l.GetName(), l.GetValue())
				}
			}
		}
		if strings.Contains(mf.GetHelp(), "(ms)") || strings.Contains(mf.GetHelp(), "in pages") {
			t.Errorf("%s: help %q speaks of a unit that is not the base one", name, mf.GetHelp())
		}
	}
	if v, ok := value(mfs["tcplab_tcp_rto_max_seconds"].GetMetric(), map[string]string{}); !ok || v != 120 {
		t.Errorf("tcplab_tcp_rto_max_seconds = %v (present %v), want 120", v, ok)
	}
	if v, ok := value(mfs["tcplab_tcp_rto_min_seconds"].GetMetric(), map[string]string{}); !ok || v != 0.2 {
		t.Errorf("tcplab_tcp_rto_min_seconds = %v (present %v), want 0.2", v, ok)
	}
	if v, ok := value(mfs["tcplab_sockstat_tcp_mem_bytes"].GetMetric(), map[string]string{}); !ok || int64(v)%int64(os.Getpagesize()) != 0 {
		t.Errorf("tcplab_sockstat_tcp_mem_bytes = %v (present %v), want whole pages of %d bytes", v, ok, os.Getpagesize())
	}
	for in, want := range map[string]string{"ListenOverflows": "listen_overflows", "TCPAbortOnData": "tcp_abort_on_data",
		"TCPMD5NotFound": "tcpmd5_not_found", "TWRecycled": "tw_recycled", "InCsumErrors": "in_csum_errors", "TW": "tw", "inuse": "inuse",
		"DelayedACKs": "delayed_acks", "TCPSpuriousRTOs": "tcp_spurious_rtos", "TCPACKSkippedSynRecv": "tcpack_skipped_syn_recv"} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}
