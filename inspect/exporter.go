package inspect

import (
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CollectorOptions tune a Collector; the zero value is the defaults.
type CollectorOptions struct {
	// TopPorts is how many listening ports get a port label of their own,
	// the ones with the most sockets; the rest are counted as "other".
	// Zero or less means DefaultTopPorts.
	TopPorts int
	// Thresholds are the doctor's limits; the zero value means
	// DefaultThresholds.
	Thresholds Thresholds
}

// DefaultTopPorts is how many listening ports a Collector labels by default.
const DefaultTopPorts = 10

// Port label values that are not port numbers.
const (
	PortOther    = "other"    // listening ports beyond the top ones
	PortOutgoing = "outgoing" // sockets whose local port has no listener
)

// tcpGauges are the Tcp fields of /proc/net/snmp that are not counters.
var tcpGauges = map[string]bool{"RtoAlgorithm": true, "RtoMin": true, "RtoMax": true, "MaxConn": true, "CurrEstab": true}

// sockstatGroups are the sockstat groups exported.
var sockstatGroups = []string{"TCP", "TCP6"}

// findingLevels are the levels the finding gauges are written for.
var findingLevels = []Level{LevelWarning, LevelError}

// Collector is a prometheus.Collector over one Host. Each scrape takes one
// Sample and exports the socket counts per state and port, the kernel's TCP
// counters and sockstat, and the doctor's findings between this scrape and
// the previous one. Scrapes are serialized.
type Collector struct {
	host *Host
	top  int
	th   Thresholds

	mu     sync.Mutex
	prev   *Sample
	errors float64

	sockets, byState, counter, gauge, sockstat, findings, duration, scrapeErrors *prometheus.Desc
}

// NewCollector returns a collector reading h. h must stay open while the
// collector is registered.
func NewCollector(h *Host, o CollectorOptions) *Collector {
	c := &Collector{host: h, top: o.TopPorts, th: o.Thresholds}
	if c.top <= 0 {
		c.top = DefaultTopPorts
	}
	if c.th == (Thresholds{}) {
		c.th = DefaultThresholds
	}
	c.sockets = prometheus.NewDesc("tcplab_sockets",
		"TCP sockets per state and local port. port is a listening port (the "+strconv.Itoa(c.top)+" with the most sockets), "+
			`"other" for the sockets of the other listening ports, or "outgoing" for sockets whose local port has no listener (connections this host opened; SYN_SENT is always outgoing). SYN_RECV includes request sockets.`,
		[]string{"state", "port"}, nil)
	c.byState = prometheus.NewDesc("tcplab_sockets_by_state",
		"TCP sockets per state, all ports together (SYN_RECV includes request sockets). Every state is present, 0 when none.",
		[]string{"state"}, nil)
	c.counter = prometheus.NewDesc("tcplab_netstat_total",
		"The kernel's TCP counters, as netstat -s reads them: group Tcp of /proc/net/snmp and TcpExt of /proc/net/netstat, named as the kernel names them (fields of Tcp that are not counters are in tcplab_netstat).",
		[]string{"group", "name"}, nil)
	c.gauge = prometheus.NewDesc("tcplab_netstat",
		"The fields of group Tcp of /proc/net/snmp that are not counters: CurrEstab, MaxConn, RtoAlgorithm, RtoMin, RtoMax (ms).",
		[]string{"group", "name"}, nil)
	c.sockstat = prometheus.NewDesc("tcplab_sockstat",
		"/proc/net/sockstat and sockstat6, groups TCP and TCP6: sockets in use, orphans, TIME_WAIT (tw), allocated, and memory in pages (mem).",
		[]string{"group", "name"}, nil)
	c.findings = prometheus.NewDesc("tcplab_doctor_findings",
		"Findings of tcplab doctor between the previous scrape and this one, per kind and level; every kind is present at levels warning and error, 0 when none. "+
			"The exporter's first scrape has no previous sample: all are 0 then.",
		[]string{"kind", "level"}, nil)
	c.duration = prometheus.NewDesc("tcplab_scrape_duration_seconds",
		"How long this scrape took to sample the host and diagnose it.", nil, nil)
	c.scrapeErrors = prometheus.NewDesc("tcplab_scrape_errors_total",
		"Scrapes that could not sample the host; their other metrics are missing.", nil, nil)
	return c
}

// Describe sends the descriptors of every metric the collector makes.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sockets, c.byState, c.counter, c.gauge, c.sockstat, c.findings, c.duration, c.scrapeErrors} {
		ch <- d
	}
}

// Collect samples the host and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	cur, err := TakeSample(c.host)
	if err != nil {
		c.errors++
		ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.CounterValue, c.errors)
		ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds())
		return
	}
	var findings []Finding
	if c.prev != nil {
		owners := FindOwners(CloseWaitInodes(cur), false)
		findings = Diagnose(*c.prev, cur, owners, c.th)
	}
	c.prev = &cur

	c.collectSockets(ch, cur.Sockets)
	c.collectCounters(ch, cur)
	c.collectFindings(ch, findings)
	ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.CounterValue, c.errors)
	ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds())
}

// portKey is a bucket of tcplab_sockets: a listening port, or one of the
// non-numeric labels.
type portKey struct {
	port  uint16
	label string // PortOther or PortOutgoing; "" for a port
}

func (k portKey) String() string {
	if k.label != "" {
		return k.label
	}
	return strconv.Itoa(int(k.port))
}

// SocketBuckets counts sockets per state name and port label as
// tcplab_sockets does: by local port for listening ports (the top ones by
// socket count; ties go to the lower port), "other" for the rest of them,
// "outgoing" for sockets whose local port has no listener and for SYN_SENT.
func SocketBuckets(socks []Socket, top int) map[string]map[string]int {
	listening := map[uint16]bool{}
	for i := range socks {
		if socks[i].State == Listen {
			listening[socks[i].Local.Port()] = true
		}
	}
	counts := map[portKey]map[State]int{}
	perPort := map[uint16]int{}
	for i := range socks {
		s := &socks[i]
		st := s.State
		if st == NewSynRecv {
			st = SynRecv
		}
		k := portKey{label: PortOutgoing}
		if st != SynSent && listening[s.Local.Port()] {
			k = portKey{port: s.Local.Port()}
			perPort[k.port]++
		}
		if counts[k] == nil {
			counts[k] = map[State]int{}
		}
		counts[k][st]++
	}
	ports := sortedPorts(perPort)
	for _, p := range ports[min(top, len(ports)):] {
		other := portKey{label: PortOther}
		if counts[other] == nil {
			counts[other] = map[State]int{}
		}
		for st, n := range counts[portKey{port: p}] {
			counts[other][st] += n
		}
		delete(counts, portKey{port: p})
	}
	out := map[string]map[string]int{}
	for k, m := range counts {
		for st, n := range m {
			name := st.String()
			if out[name] == nil {
				out[name] = map[string]int{}
			}
			out[name][k.String()] += n
		}
	}
	return out
}

func (c *Collector) collectSockets(ch chan<- prometheus.Metric, socks []Socket) {
	buckets := SocketBuckets(socks, c.top)
	totals := map[string]int{}
	for s := Established; s <= Closing; s++ {
		totals[s.String()] = 0
	}
	for state, ports := range buckets {
		for port, n := range ports {
			totals[state] += n
			ch <- prometheus.MustNewConstMetric(c.sockets, prometheus.GaugeValue, float64(n), state, port)
		}
	}
	for state, n := range totals {
		ch <- prometheus.MustNewConstMetric(c.byState, prometheus.GaugeValue, float64(n), state)
	}
}

func (c *Collector) collectCounters(ch chan<- prometheus.Metric, s Sample) {
	for _, group := range []string{"Tcp", "TcpExt"} {
		for name, v := range s.Counters[group] {
			if group == "Tcp" && tcpGauges[name] {
				ch <- prometheus.MustNewConstMetric(c.gauge, prometheus.GaugeValue, float64(v), group, name)
				continue
			}
			// Counters past 2^63 were stored wrapped; they are unsigned.
			ch <- prometheus.MustNewConstMetric(c.counter, prometheus.CounterValue, float64(uint64(v)), group, name)
		}
	}
	for _, group := range sockstatGroups {
		for name, v := range s.Counters[group] {
			ch <- prometheus.MustNewConstMetric(c.sockstat, prometheus.GaugeValue, float64(v), group, name)
		}
	}
}

func (c *Collector) collectFindings(ch chan<- prometheus.Metric, fs []Finding) {
	type key struct {
		kind  string
		level Level
	}
	n := map[key]int{}
	for _, k := range FindingKinds {
		for _, l := range findingLevels {
			n[key{k, l}] = 0
		}
	}
	for _, f := range fs {
		if f.Level == LevelWarning || f.Level == LevelError {
			n[key{f.Kind, f.Level}]++
		}
	}
	keys := make([]key, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].kind != keys[j].kind {
			return keys[i].kind < keys[j].kind
		}
		return keys[i].level < keys[j].level
	})
	for _, k := range keys {
		ch <- prometheus.MustNewConstMetric(c.findings, prometheus.GaugeValue, float64(n[k]), k.kind, k.level.String())
	}
}
