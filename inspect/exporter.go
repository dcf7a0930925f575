package inspect

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
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

// ExpositionContentType is the HTTP Content-Type of what Collector.WriteTo
// writes: the Prometheus text exposition format, version 0.0.4.
const ExpositionContentType = "text/plain; version=0.0.4; charset=utf-8"

// tcpGauges are the Tcp fields of /proc/net/snmp that are not counters.
var tcpGauges = map[string]bool{"RtoAlgorithm": true, "RtoMin": true, "RtoMax": true, "MaxConn": true, "CurrEstab": true}

// sockstatGroups are the sockstat groups exported.
var sockstatGroups = []string{"TCP", "TCP6"}

// findingLevels are the levels the finding gauges are written for.
var findingLevels = []Level{LevelWarning, LevelError}

// Collector makes Prometheus metrics of one Host. Each scrape (WriteTo)
// takes one Sample and writes the socket counts per state and port, the
// kernel's TCP counters and sockstat, and the doctor's findings between
// this scrape and the previous one, in the Prometheus text exposition
// format. Scrapes are serialized.
//
// The format is written here rather than with the Prometheus client
// library, which would cost every tcplab command its start-up time.
type Collector struct {
	host *Host
	top  int
	th   Thresholds

	mu     sync.Mutex
	prev   *Sample
	errors float64

	sockets, byState, findings, duration, scrapeErrors *metricDesc
	// kernel are the families of the kernel's counters, gauges and
	// sockstat fields, one a field, made as the fields are first seen.
	kernel map[string]*metricDesc
}

// NewCollector returns a collector reading h. h must stay open while the
// collector is used.
func NewCollector(h *Host, o CollectorOptions) *Collector {
	c := &Collector{host: h, top: o.TopPorts, th: o.Thresholds}
	if c.top <= 0 {
		c.top = DefaultTopPorts
	}
	if c.th == (Thresholds{}) {
		c.th = DefaultThresholds
	}
	c.sockets = newMetricDesc("tcplab_sockets", gaugeType,
		"TCP sockets per state and local port. port is a listening port (the "+strconv.Itoa(c.top)+" with the most sockets), "+
			`"other" for the sockets of the other listening ports, or "outgoing" for sockets whose local port has no listener (connections this host opened; SYN_SENT is always outgoing). SYN_RECV includes request sockets.`,
		"state", "port")
	c.byState = newMetricDesc("tcplab_sockets_by_state", gaugeType,
		"TCP sockets per state, all ports together (SYN_RECV includes request sockets). Every state is present, 0 when none.",
		"state")
	c.kernel = map[string]*metricDesc{}
	c.findings = newMetricDesc("tcplab_doctor_findings", gaugeType,
		"Findings of tcplab doctor between the previous scrape and this one, per kind and level; every kind is present at levels warning and error, 0 when none. "+
			"The exporter's first scrape has no previous sample: all are 0 then.",
		"kind", "level")
	c.duration = newMetricDesc("tcplab_scrape_duration_seconds", gaugeType,
		"How long this scrape took to sample the host and diagnose it.")
	c.scrapeErrors = newMetricDesc("tcplab_scrape_errors_total", counterType,
		"Scrapes that could not sample the host; their other metrics are missing.")
	return c
}

// WriteTo samples the host and writes the metrics to w in the Prometheus
// text exposition format 0.0.4 (ExpositionContentType): families sorted
// by name, each one's series sorted by their labels. If the host cannot be
// sampled, nothing is written, the error is returned, and
// tcplab_scrape_errors_total counts it from the next scrape on.
func (c *Collector) WriteTo(w io.Writer) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	cur, err := TakeSample(c.host)
	if err != nil {
		c.errors++
		return 0, fmt.Errorf("sample %s: %w", c.host.Target, err)
	}
	var findings []Finding
	if c.prev != nil {
		owners := FindOwners(CloseWaitInodes(cur), false)
		findings = Diagnose(*c.prev, cur, owners, c.th)
	}
	c.prev = &cur

	fams := c.socketFamilies(cur.Sockets)
	fams = append(fams, c.counterFamilies(cur)...)
	fams = append(fams, c.findingFamily(findings))
	errs := newFamily(c.scrapeErrors)
	errs.add(c.errors)
	dur := newFamily(c.duration)
	dur.add(time.Since(start).Seconds())
	fams = append(fams, errs, dur)

	var b bytes.Buffer
	writeFamilies(&b, fams)
	n, err := w.Write(b.Bytes())
	return int64(n), err
}

// SocketBuckets counts sockets per state name and port label as
// tcplab_sockets does: by local port for listening ports (the top ones by
// socket count; ties go to the lower port), "other" for the rest of them,
// "outgoing" for sockets whose local port has no listener and for SYN_SENT.
func SocketBuckets(socks []Socket, top int) map[string]map[string]int {
	st := Count(socks) // services sorted by total, ties to the lower port
	out := map[string]map[string]int{}
	add := func(label string, pc PortCount) {
		for state, n := range pc.States {
			name := state.String()
			if out[name] == nil {
				out[name] = map[string]int{}
			}
			out[name][label] += n
		}
	}
	for i, pc := range st.Services {
		label := PortOther
		if i < top {
			label = strconv.Itoa(int(pc.Port))
		}
		add(label, pc)
	}
	for _, pc := range st.Outgoing {
		add(PortOutgoing, pc)
	}
	return out
}

func (c *Collector) socketFamilies(socks []Socket) []*family {
	sockets, byState := newFamily(c.sockets), newFamily(c.byState)
	totals := map[string]int{}
	for s := Established; s <= Closing; s++ {
		totals[s.String()] = 0
	}
	for state, ports := range SocketBuckets(socks, c.top) {
		for port, n := range ports {
			totals[state] += n
			sockets.add(float64(n), state, port)
		}
	}
	for state, n := range totals {
		byState.add(float64(n), state)
	}
	return []*family{sockets, byState}
}

// counterFamilies writes each kernel field as a metric of its own, named
// after its group and field in snake_case, in base units: a counter of
// /proc/net/snmp's Tcp or /proc/net/netstat's TcpExt is
// tcplab_tcpext_listen_overflows_total; Tcp's fields that are not counters
// are gauges (tcplab_tcp_curr_estab; RtoMin and RtoMax in seconds); a
// sockstat field is tcplab_sockstat_tcp_inuse (its mem in bytes). One
// metric a field, so that sum() and rate() mean something.
func (c *Collector) counterFamilies(s Sample) []*family {
	var fams []*family
	for _, group := range []string{"Tcp", "TcpExt"} {
		for _, name := range slices.Sorted(maps.Keys(s.Counters[group])) {
			v := s.Counters[group][name]
			base := "tcplab_" + strings.ToLower(group) + "_" + snakeCase(name)
			if group == "Tcp" && tcpGauges[name] {
				value, help := float64(v), fmt.Sprintf("The kernel's %s %s (/proc/net/snmp), a gauge.", group, name)
				if name == "RtoMin" || name == "RtoMax" {
					base += "_seconds" // the kernel gives milliseconds
					value /= 1000
					help = fmt.Sprintf("The kernel's %s %s (/proc/net/snmp), in seconds.", group, name)
				}
				fams = append(fams, c.kernelFamily(base, gaugeType, help, value))
				continue
			}
			file := "/proc/net/snmp"
			if group == "TcpExt" {
				file = "/proc/net/netstat"
			}
			// Counters past 2^63 were stored wrapped; they are unsigned.
			fams = append(fams, c.kernelFamily(base+"_total", counterType,
				fmt.Sprintf("The kernel's counter %s %s (%s, as netstat -s reads it).", group, name, file), float64(uint64(v))))
		}
	}
	for _, group := range sockstatGroups {
		for _, name := range slices.Sorted(maps.Keys(s.Counters[group])) {
			v := float64(s.Counters[group][name])
			file := "/proc/net/sockstat"
			if strings.HasSuffix(group, "6") {
				file += "6"
			}
			base := "tcplab_sockstat_" + strings.ToLower(group) + "_" + snakeCase(name)
			help := fmt.Sprintf("%s %s %s: %s.", file, group, name, sockstatMeaning[name])
			if name == "mem" {
				base += "_bytes" // the kernel gives pages
				v *= float64(os.Getpagesize())
				help = fmt.Sprintf("%s %s mem: the memory TCP's buffers hold, in bytes (the kernel counts pages).", file, group)
			}
			fams = append(fams, c.kernelFamily(base, gaugeType, help, v))
		}
	}
	return fams
}

// sockstatMeaning says what a sockstat field counts.
var sockstatMeaning = map[string]string{"inuse": "sockets in use", "orphan": "orphaned sockets (closed by their program, not yet done)",
	"tw": "sockets in TIME_WAIT", "alloc": "sockets allocated"}

// kernelFamily is a family of one series for a kernel field.
func (c *Collector) kernelFamily(name string, typ metricType, help string, v float64) *family {
	d := c.kernel[name]
	if d == nil {
		d = newMetricDesc(name, typ, help)
		c.kernel[name] = d
	}
	f := newFamily(d)
	f.add(v)
	return f
}

// snakeCase spells a kernel field's name as a Prometheus name is spelt:
// ListenOverflows is listen_overflows, TCPAbortOnData tcp_abort_on_data,
// TCPMD5NotFound tcpmd5_not_found.
func snakeCase(s string) string {
	rs := []rune(s)
	b := make([]rune, 0, len(rs)+4)
	// plural tells an acronym's plural s (ACKs, RTOs): an s after two
	// capitals or more, at the end or before the next word.
	plural := func(i int) bool {
		return i+1 < len(rs) && rs[i+1] == 's' && (i+2 == len(rs) || unicode.IsUpper(rs[i+2])) &&
			i > 0 && unicode.IsUpper(rs[i-1])
	}
	for i, r := range rs {
		if i > 0 && unicode.IsUpper(r) {
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || unicode.IsUpper(prev) && nextLower && !plural(i) {
				b = append(b, '_')
			}
		}
		b = append(b, unicode.ToLower(r))
	}
	return string(b)
}

func (c *Collector) findingFamily(fs []Finding) *family {
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
	fam := newFamily(c.findings)
	for k, v := range n {
		fam.add(float64(v), k.kind, k.level.String())
	}
	return fam
}

// The Prometheus text exposition format, version 0.0.4, for gauges and
// counters without timestamps:
//
//	# HELP name help text, with \ and newline escaped as \\ and \n
//	# TYPE name gauge
//	name{label="value",...} 1.5
//
// Label values escape \, " and newline. The rest of the format (summaries,
// histograms, timestamps) is not needed here.

// metricType is what a family's # TYPE line says.
type metricType string

const (
	gaugeType   metricType = "gauge"
	counterType metricType = "counter"
)

// metricDesc is a metric family's name, help, type and label names. The
// names must be valid Prometheus names; they are written as they are.
type metricDesc struct {
	name, help string
	typ        metricType
	labels     []string // in the order add takes their values
	order      []int    // indexes of labels sorted by name: the order written
}

func newMetricDesc(name string, typ metricType, help string, labels ...string) *metricDesc {
	d := &metricDesc{name: name, help: help, typ: typ, labels: labels, order: make([]int, len(labels))}
	for i := range d.order {
		d.order[i] = i
	}
	sort.Slice(d.order, func(i, j int) bool { return labels[d.order[i]] < labels[d.order[j]] })
	return d
}

// family is one scrape's series of a metric.
type family struct {
	*metricDesc
	series []series
}

// series is a sample: its label values, in the order of metricDesc.labels,
// and its value.
type series struct {
	values []string
	value  float64
}

func newFamily(d *metricDesc) *family { return &family{metricDesc: d} }

// add appends a series; labelValues are in the order of the desc's labels.
func (f *family) add(v float64, labelValues ...string) {
	if len(labelValues) != len(f.labels) {
		panic("inspect: metric " + f.name + " has " + strconv.Itoa(len(f.labels)) + " labels, given " + strconv.Itoa(len(labelValues)) + " values")
	}
	f.series = append(f.series, series{values: labelValues, value: v})
}

// writeFamilies writes the families that have series, sorted by name.
func writeFamilies(b *bytes.Buffer, fams []*family) {
	fams = slices.Clone(fams)
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })
	for _, f := range fams {
		if len(f.series) > 0 {
			f.write(b)
		}
	}
}

var (
	helpEscaper       = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// write writes the family's HELP and TYPE lines and its series, sorted by
// their label values taken in the order of the label names.
func (f *family) write(b *bytes.Buffer) {
	sort.SliceStable(f.series, func(i, j int) bool {
		for _, k := range f.order {
			if x, y := f.series[i].values[k], f.series[j].values[k]; x != y {
				return x < y
			}
		}
		return false
	})
	b.WriteString("# HELP ")
	b.WriteString(f.name)
	b.WriteByte(' ')
	helpEscaper.WriteString(b, f.help)
	b.WriteString("\n# TYPE ")
	b.WriteString(f.name)
	b.WriteByte(' ')
	b.WriteString(string(f.typ))
	b.WriteByte('\n')
	for _, s := range f.series {
		b.WriteString(f.name)
		if len(f.order) > 0 {
			b.WriteByte('{')
			for i, k := range f.order {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(f.labels[k])
				b.WriteString(`="`)
				labelValueEscaper.WriteString(b, s.values[k])
				b.WriteByte('"')
			}
			b.WriteByte('}')
		}
		b.WriteByte(' ')
		b.WriteString(formatValue(s.value))
		b.WriteByte('\n')
	}
}

// formatValue spells a sample value as Prometheus does: the shortest
// decimal or exponent form, and +Inf, -Inf and NaN.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, +1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
