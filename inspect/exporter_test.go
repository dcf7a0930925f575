package inspect

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
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

func newTestCollector(t *testing.T, o CollectorOptions) (*Collector, *prometheus.Registry) {
	t.Helper()
	h, err := OpenHost(Target{})
	if err != nil {
		t.Skipf("sock_diag not available: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	c := NewCollector(h, o)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return c, reg
}

// scrape gathers the registry once and returns the metrics by name.
func scrape(t *testing.T, reg *prometheus.Registry) map[string][]*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dto.Metric{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetMetric()
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
	_, reg := newTestCollector(t, CollectorOptions{TopPorts: 1 << 16})
	p := strconv.Itoa(int(port))

	first := scrape(t, reg)
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
	if _, ok := value(first["tcplab_netstat_total"], map[string]string{"group": "TcpExt", "name": "ListenOverflows"}); !ok {
		t.Error("tcplab_netstat_total{group=TcpExt,name=ListenOverflows} is missing")
	}
	if _, ok := value(first["tcplab_netstat"], map[string]string{"group": "Tcp", "name": "CurrEstab"}); !ok {
		t.Error("tcplab_netstat{group=Tcp,name=CurrEstab} is missing")
	}
	if _, ok := value(first["tcplab_netstat_total"], map[string]string{"group": "Tcp", "name": "CurrEstab"}); ok {
		t.Error("CurrEstab is exported as a counter")
	}
	if v, ok := value(first["tcplab_sockstat"], map[string]string{"group": "TCP", "name": "inuse"}); !ok || v < 1 {
		t.Errorf("tcplab_sockstat{group=TCP,name=inuse} = %v (present %v), want >= 1", v, ok)
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
	second := scrape(t, reg)
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
	c, reg := newTestCollector(t, CollectorOptions{TopPorts: 1})
	if n := testutil.CollectAndCount(c, "tcplab_sockets_by_state"); n != int(Closing) {
		t.Errorf("CollectAndCount(tcplab_sockets_by_state) = %d, want %d", n, Closing)
	}
	m := scrape(t, reg)
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
	_, reg := newTestCollector(t, CollectorOptions{})
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
