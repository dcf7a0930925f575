package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	promcommon "github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/internal/nstest"
	"github.com/tcplab/tcplab/wire"
)

// scrapeInterval is prometheus.yml's.
const scrapeInterval = 30 * time.Second

// alertRules makes Prometheus's alerting rules of the rule file.
func alertRules(t *testing.T) []*rules.AlertingRule {
	t.Helper()
	var out []*rules.AlertingRule
	for _, r := range loadRules(t) {
		expr, err := promParser.ParseExpr(r.Expr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
			labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", false, slog.New(slog.DiscardHandler)))
	}
	return out
}

func newEngine() *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: 10 * time.Second, LookbackDelta: 5 * time.Minute})
}

// evaluate evaluates every rule at each time, as a rule group does, and
// returns the firing alerts by rule, each by the labels that tell them
// apart.
func evaluate(t *testing.T, st storage.Queryable, rs []*rules.AlertingRule, times []time.Time) map[string][]string {
	t.Helper()
	q := rules.EngineQueryFunc(newEngine(), st)
	for _, ts := range times {
		for _, r := range rs {
			if _, err := r.Eval(context.Background(), 0, ts, q, nil, 0); err != nil {
				t.Fatalf("%s at %v: %v", r.Name(), ts, err)
			}
		}
	}
	firing := map[string][]string{}
	for _, r := range rs {
		for _, a := range r.ActiveAlerts() {
			if a.State == rules.StateFiring {
				firing[r.Name()] = append(firing[r.Name()], a.Labels.Get("kind")+a.Labels.Get("port"))
			}
		}
		slices.Sort(firing[r.Name()])
	}
	return firing
}

// series is a synthetic series for the rules' own tests: its labels and
// its value at each step.
type series struct {
	labels map[string]string
	value  func(step int) float64
}

func appendSeries(t *testing.T, st storage.Appendable, ss []series, times []time.Time) {
	t.Helper()
	app := st.Appender(context.Background())
	for i, ts := range times {
		for _, s := range ss {
			if _, err := app.Append(0, labels.FromMap(s.labels), ts.UnixMilli(), s.value(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

func steps(n int) []time.Time {
	t0 := time.Unix(1_800_000_000, 0)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = t0.Add(time.Duration(i) * scrapeInterval)
	}
	return out
}

func metric(name string, kv ...string) map[string]string {
	m := map[string]string{"__name__": name, "job": "tcplab", "instance": "node-a"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func constant(v float64) func(int) float64 { return func(int) float64 { return v } }
func counter(per float64) func(int) float64 {
	return func(i int) float64 { return 100 + per*float64(i) }
}

// Each rule on series made for it: it fires where it should, and not on
// the near miss. Every rule of the file has its cases.
func TestAlertRulesFire(t *testing.T) {
	type ruleCase struct {
		name   string
		steps  int
		series []series
		fires  bool
	}
	finding := func(kind, level string) map[string]string {
		return metric("tcplab_doctor_findings", "kind", kind, "level", level)
	}
	cw := func(port string) map[string]string {
		return metric("tcplab_sockets", "state", "CLOSE_WAIT", "port", port)
	}
	every := func(n int, v float64) func(int) float64 { // v at every nth step, 0 otherwise
		return func(i int) float64 {
			if i%n == 0 {
				return v
			}
			return 0
		}
	}
	cases := map[string][]ruleCase{
		"TCPLabExporterDown": {
			{"down 6 minutes", 13, []series{{metric("up"), constant(0)}}, true},
			{"down 4 minutes", 9, []series{{metric("up"), constant(0)}}, false},
			{"up", 13, []series{{metric("up"), constant(1)}}, false},
		},
		"TCPLabScrapeErrors": {
			{"one error", 3, []series{{metric("tcplab_scrape_errors_total"), func(i int) float64 { return float64(min(i, 1)) }}}, true},
			{"none", 3, []series{{metric("tcplab_scrape_errors_total"), constant(0)}}, false},
		},
		"TCPDoctorError": {
			{"7 minutes", 15, []series{{finding("close-wait-leak", "error"), constant(1)}}, true},
			// A leak is an error while it grows, a warning while it stays:
			// the level flips from one scrape to the next.
			{"flipping levels for 10 minutes", 21, []series{
				{finding("close-wait-leak", "error"), every(2, 1)},
				{finding("close-wait-leak", "warning"), func(i int) float64 { return 1 - every(2, 1)(i) }},
			}, true},
			{"one minute, then gone", 21, []series{{finding("close-wait-leak", "error"), func(i int) float64 { return float64(max(0, 1-max(0, i-2))) }}}, false},
			{"warning only", 15, []series{{finding("close-wait-leak", "warning"), constant(1)}}, false},
			{"a kind with a rule of its own", 15, []series{{finding("accept-queue-overflow", "error"), constant(1)}}, false},
		},
		"TCPDoctorWarning": {
			{"16 minutes", 33, []series{{finding("resets", "warning"), constant(2)}}, true},
			{"every other scrape for 16 minutes", 33, []series{{finding("resets", "warning"), every(2, 1)}}, true},
			{"with an error of its kind", 33, []series{
				{finding("resets", "warning"), constant(2)},
				{finding("resets", "error"), constant(1)},
			}, false},
			{"2 minutes", 33, []series{{finding("resets", "warning"), func(i int) float64 { return float64(min(1, max(0, 5-i))) }}}, false},
		},
		"TCPAcceptQueueOverflow": {
			{"12 a minute for 10 minutes", 21, []series{{metric("tcplab_tcpext_listen_overflows_total"), counter(6)}}, true},
			{"one burst, 10 minutes ago", 21, []series{{metric("tcplab_tcpext_listen_overflows_total"), func(i int) float64 { return float64(20 * min(i, 1)) }}}, false},
			{"2 a minute", 21, []series{{metric("tcplab_tcpext_listen_overflows_total"), counter(1)}}, false},
		},
		"TCPCloseWaitGrowing": {
			{"growing for 10 minutes", 21, []series{{cw("8080"), func(i int) float64 { return float64(5 + i) }}}, true},
			{"one jump, then flat", 21, []series{{cw("8080"), func(i int) float64 { return float64(6 * min(i, 1)) }}}, false},
			{"many but flat", 21, []series{{cw("8080"), constant(40)}}, false},
			{"growing but few", 21, []series{{cw("8080"), func(i int) float64 { return float64(i / 6) }}}, false},
			{"outgoing", 21, []series{{cw("outgoing"), func(i int) float64 { return float64(5 + i) }}}, false},
		},
		"TCPSynFlood": {
			{"cookies", 21, []series{{metric("tcplab_tcpext_syncookies_sent_total"), counter(50)}, {metric("tcplab_tcpext_tcp_req_q_full_drop_total"), constant(0)}}, true},
			{"drops", 21, []series{{metric("tcplab_tcpext_syncookies_sent_total"), constant(0)}, {metric("tcplab_tcpext_tcp_req_q_full_drop_total"), counter(60)}}, true},
			{"one burst", 21, []series{{metric("tcplab_tcpext_syncookies_sent_total"), func(i int) float64 { return float64(100 * min(i, 1)) }}, {metric("tcplab_tcpext_tcp_req_q_full_drop_total"), constant(0)}}, false},
			{"a single cookie", 21, []series{{metric("tcplab_tcpext_syncookies_sent_total"), func(i int) float64 { return float64(min(i, 1)) }}, {metric("tcplab_tcpext_tcp_req_q_full_drop_total"), constant(0)}}, false},
		},
		"TCPPortExhaustion": {
			{"2 minutes at 90%", 5, []series{{finding("port-exhaustion", "error"), constant(1)}}, true},
			{"at 50%", 5, []series{{finding("port-exhaustion", "warning"), constant(1)}}, false},
			{"other kind", 5, []series{{finding("resets", "error"), constant(1)}}, false},
		},
		"TCPRetransmissions": {
			{"5% of 100 a second for 15 minutes", 31, []series{{metric("tcplab_tcp_retrans_segs_total"), counter(150)}, {metric("tcplab_tcp_out_segs_total"), counter(3000)}}, true},
			{"1%", 31, []series{{metric("tcplab_tcp_retrans_segs_total"), counter(30)}, {metric("tcplab_tcp_out_segs_total"), counter(3000)}}, false},
			{"5% of an idle node", 31, []series{{metric("tcplab_tcp_retrans_segs_total"), counter(3)}, {metric("tcplab_tcp_out_segs_total"), counter(60)}}, false},
		},
	}
	for _, r := range loadRules(t) {
		if len(cases[r.Alert]) == 0 {
			t.Errorf("rule %s has no case here", r.Alert)
		}
	}
	for name, cs := range cases {
		for _, c := range cs {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				var rule *rules.AlertingRule
				for _, r := range alertRules(t) {
					if r.Name() == name {
						rule = r
					}
				}
				if rule == nil {
					t.Fatalf("no rule %s", name)
				}
				st := teststorage.New(t)
				times := steps(c.steps)
				appendSeries(t, st, c.series, times)
				firing := evaluate(t, st, []*rules.AlertingRule{rule}, times)
				if got := len(firing[name]) > 0; got != c.fires {
					t.Errorf("fires %v, want %v", got, c.fires)
				}
			})
		}
	}
}

// netnsOf runs f on a thread inside ns. f reports failures by its error:
// t.Fatal on that thread would end it without an answer.
func netnsOf(t *testing.T, ns netns.NsHandle, f func() error) {
	t.Helper()
	if err := inspect.InNetns(ns, f); err != nil {
		t.Fatal(err)
	}
}

// fds closes, at cleanup, the descriptors a test keeps; it never closes
// one twice (a number closed early may be another file's by then).
type fds struct{ kept []int }

func (f *fds) keep(fd int) int {
	f.kept = append(f.kept, fd)
	return fd
}

func (f *fds) closeAll() {
	for _, fd := range f.kept {
		unix.Close(fd)
	}
}

// sock makes a TCP socket bound to 127.0.0.1:port (0: the kernel picks
// from ip_local_port_range at connect()).
func sock(port int, nonblock bool) (int, error) {
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_INET, typ, 0)
	if err != nil {
		return -1, err
	}
	if port != 0 {
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("bind :%d: %w", port, err)
		}
	}
	return fd, nil
}

func listenOn(addr [4]byte, port, backlog int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: addr}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind :%d: %w", port, err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func connect(fd, port int) error {
	err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	if errors.Is(err, unix.EINPROGRESS) {
		return nil
	}
	return err
}

// problems makes TCP problems in a namespace, step by step, from bound
// ports above 50000 (outside the small ephemeral range the port
// exhaustion uses):
//   - a listener on :7201 (backlog 1) that never accepts, 6 more clients
//     a step: its accept queue overflows (12 a minute at least);
//   - a server on :7202 that accepts and never closes, 2 clients a step
//     that close: CLOSE_WAIT grows;
//   - a listener on 10.254.0.1:7203 (backlog 8, on a veth link of the
//     namespace), 40 SYNs a step from 10.255.0.0/16, routed out of that
//     link, where the SYN-ACKs vanish: its SYN queue fills, SYN cookies go
//     out (80 a minute);
//   - at the first step, 18 connections to :7204 from the ephemeral range
//     (20 ports), closed by the client first: 90% of the ports toward one
//     destination are in TIME_WAIT (for 60 s of real time).
type problems struct {
	ns       netns.NsHandle
	fds      *fds
	next     int // the next bound client port
	overflow int
	leak     int
	flood    int
	raw      int
	step     int
}

func newProblems(t *testing.T, ns netns.NsHandle, f *fds) *problems {
	p := &problems{ns: ns, fds: f, next: 50000}
	netnsOf(t, ns, func() error {
		for name, v := range map[string]string{
			"net/ipv4/ip_local_port_range": "40000 40019",
			"net/ipv4/tcp_syncookies":      "1",
		} {
			if err := os.WriteFile("/proc/sys/"+name, []byte(v), 0); err != nil {
				return err
			}
		}
		var err error
		if p.overflow, err = listenOn([4]byte{127, 0, 0, 1}, 7201, 1); err != nil {
			return err
		}
		f.keep(p.overflow)
		if p.leak, err = listenOn([4]byte{127, 0, 0, 1}, 7202, 128); err != nil {
			return err
		}
		f.keep(p.leak)
		// The flood's link: a veth pair without ARP; its other end,
		// without an address, drops what comes.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flood0"}, PeerName: "flood1"}); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		link, err := netlink.LinkByName("flood0")
		if err != nil {
			return err
		}
		peer, err := netlink.LinkByName("flood1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetARPOff(link); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(peer); err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 254, 0, 1), Mask: net.CIDRMask(16, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: net.IPv4(10, 255, 0, 0), Mask: net.CIDRMask(16, 32)}}); err != nil {
			return err
		}
		if p.flood, err = listenOn([4]byte{10, 254, 0, 1}, 7203, 8); err != nil {
			return err
		}
		f.keep(p.flood)
		if p.raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		f.keep(p.raw)
		return nil
	})
	return p
}

func (p *problems) advance(t *testing.T) {
	t.Helper()
	p.step++
	netnsOf(t, p.ns, func() error {
		for range 6 {
			p.next++
			c, err := sock(p.next, true)
			if err != nil {
				return err
			}
			p.fds.keep(c)
			if err := connect(c, 7201); err != nil {
				return fmt.Errorf("connect to :7201: %w", err)
			}
		}
		for range 2 {
			p.next++
			c, err := sock(p.next, false)
			if err != nil {
				return err
			}
			err = connect(c, 7202)
			if err != nil {
				unix.Close(c)
				return fmt.Errorf("connect to :7202: %w", err)
			}
			s, _, err := unix.Accept4(p.leak, unix.SOCK_CLOEXEC)
			unix.Close(c) // the client closes; the server never does
			if err != nil {
				return err
			}
			p.fds.keep(s)
		}
		for i := range 40 {
			seg := wire.Segment{Src: netip.AddrFrom4([4]byte{10, 255, byte(p.step), byte(i + 1)}), Dst: netip.MustParseAddr("10.254.0.1"),
				SrcPort: uint16(1024 + i), DstPort: 7203, Seq: wire.Seq(1000 * (i + 1)), Flags: wire.SYN, Window: 65535, TTL: 64}
			b, err := seg.Marshal()
			if err != nil {
				return err
			}
			if err := unix.Sendto(p.raw, b, 0, &unix.SockaddrInet4{Addr: [4]byte{10, 254, 0, 1}}); err != nil {
				return fmt.Errorf("raw SYN: %w", err)
			}
		}
		if p.step == 1 {
			srv, err := listenOn([4]byte{127, 0, 0, 1}, 7204, 64)
			if err != nil {
				return err
			}
			p.fds.keep(srv)
			var served []int
			defer func() {
				for _, s := range served {
					unix.Close(s)
				}
			}()
			for range 18 {
				c, err := sock(0, false)
				if err != nil {
					return err
				}
				err = connect(c, 7204)
				if err != nil {
					unix.Close(c)
					return fmt.Errorf("connect to :7204: %w", err)
				}
				s, _, err := unix.Accept4(srv, unix.SOCK_CLOEXEC)
				unix.Close(c) // the client closes first: its end goes to TIME_WAIT
				if err != nil {
					return err
				}
				served = append(served, s)
			}
		}
		return nil
	})
}

// startExporter runs the DaemonSet's command line as its pod would: the
// pod's IP put in, as the pod's user (nobody) with no capability, in the
// namespace. It is ended by its PID at cleanup.
func startExporter(t *testing.T, ns netns.NsHandle, bin, podIP string, args []string) string {
	t.Helper()
	var argv []string
	for _, a := range args {
		argv = append(argv, strings.ReplaceAll(a, "$(POD_IP)", podIP))
	}
	cmd := exec.Command(bin, argv...)
	cmd.Env = []string{"POD_IP=" + podIP}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuilder
	cmd.Stderr = &stderr
	netnsOf(t, ns, cmd.Start) // the child is made in the namespace
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		addr, ok := strings.CutPrefix(strings.TrimSpace(l), "serving metrics on http://")
		if !ok {
			t.Fatalf("the exporter said %q; stderr %s", l, stderr.String())
		}
		return strings.TrimSuffix(addr, "/metrics")
	case <-time.After(20 * time.Second):
		t.Fatalf("the exporter did not start: %s", stderr.String())
	}
	return ""
}

// lockedBuilder is a strings.Builder a process writes while the test may
// read it.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// scrape GETs /metrics from inside the namespace, as Prometheus would.
// net/http dials on a goroutine of its own: the dial enters the namespace
// itself.
func scrape(t *testing.T, ns netns.NsHandle, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		var c net.Conn
		err := inspect.InNetns(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, b)
	}
	p := expfmt.NewTextParser(promcommon.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// store appends a scrape at ts, with the target's labels and up, as
// Prometheus's scrape loop does.
func store(t *testing.T, st storage.Appendable, fams map[string]*dto.MetricFamily, ts time.Time) {
	t.Helper()
	app := st.Appender(context.Background())
	add := func(m map[string]string, v float64) {
		m["job"], m["instance"] = "tcplab", "node-a"
		if _, err := app.Append(0, labels.FromMap(m), ts.UnixMilli(), v); err != nil {
			t.Fatal(err)
		}
	}
	add(map[string]string{"__name__": "up"}, 1)
	for name, f := range fams {
		for _, m := range f.Metric {
			l := map[string]string{"__name__": name}
			for _, p := range m.Label {
				l[p.GetName()] = p.GetValue()
			}
			switch {
			case m.Counter != nil:
				add(l, m.Counter.GetValue())
			case m.Gauge != nil:
				add(l, m.Gauge.GetValue())
			default:
				t.Fatalf("%s: neither counter nor gauge", name)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

// buildForNobody builds tcplab-full into a directory of its own that nobody
// (65534) can enter; only that directory's mode is changed.
func buildForNobody(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tcplab-fleet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tcplab-full")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/tcplab-full").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// Every directory above must let others through.
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			t.Skipf("nobody cannot enter %s (TMPDIR=%s): give a TMPDIR others may enter", d, os.Getenv("TMPDIR"))
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return bin
}

// The fleet end to end: the DaemonSet's command line, run as its security
// context allows (nobody, no capability) in a network namespace that
// stands for a node, scraped every (virtual) 30 s: 4 scrapes of the quiet
// namespace, then 22 while its TCP problems grow. The alerting rules,
// evaluated by Prometheus's engine on what it said, stay silent on the
// quiet part and fire for each problem and for nothing else; every query
// of the dashboard returns data.
func TestFleetEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace, and a process run as nobody")
	}
	ns, _ := nstest.New(t)
	f := &fds{}
	t.Cleanup(f.closeAll)
	ds := loadManifests(t).ds
	c := ds.Spec.Template.Spec.Containers[0]
	if *ds.Spec.Template.Spec.SecurityContext.RunAsUser != 65534 || *ds.Spec.Template.Spec.SecurityContext.RunAsGroup != 65534 {
		t.Fatal("the DaemonSet no longer runs as nobody (65534): change the credentials here too")
	}
	bin := buildForNobody(t)

	// An IPv6 pod address is served too (the exporter brackets it).
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		if addr := startExporter(t, ns, bin, "::1", c.Args); !strings.HasPrefix(addr, "[::1]:") {
			t.Errorf("with POD_IP ::1 the exporter serves on %s", addr)
		} else if fams := scrape(t, ns, addr); fams["tcplab_sockets_by_state"] == nil {
			t.Errorf("the IPv6 exporter's scrape has no tcplab_sockets_by_state")
		}
	} else {
		t.Log("IPv6 is off here: the IPv6 pod address is not tried")
	}

	addr := startExporter(t, ns, bin, "127.0.0.1", c.Args)
	st := teststorage.New(t)
	const quiet, busy = 4, 22
	times := steps(quiet + busy)
	var p *problems
	for i, ts := range times {
		switch {
		case i == quiet:
			p = newProblems(t, ns, f)
			fallthrough
		case i > quiet:
			p.advance(t)
			time.Sleep(50 * time.Millisecond) // the handshakes and closes settle
		}
		fams := scrape(t, ns, addr)
		if e := fams["tcplab_scrape_errors_total"]; e == nil || e.Metric[0].Counter.GetValue() != 0 {
			t.Fatalf("scrape errors: %v", e)
		}
		if i > 0 && i < quiet {
			for _, m := range fams["tcplab_doctor_findings"].Metric {
				if m.Gauge.GetValue() != 0 {
					t.Errorf("a finding on the quiet namespace: %v", m)
				}
			}
		}
		store(t, st, fams, ts)
	}
	// Nothing is even pending on the quiet part, rates and all.
	quietRules := alertRules(t)
	evaluate(t, st, quietRules, times[:quiet])
	for _, r := range quietRules {
		if a := r.ActiveAlerts(); len(a) != 0 {
			t.Errorf("%s on the quiet namespace: %v", r.Name(), a[0].Labels)
		}
	}
	firing := evaluate(t, st, alertRules(t), times)
	want := map[string][]string{
		"TCPAcceptQueueOverflow": {""},
		"TCPCloseWaitGrowing":    {"7202"},
		"TCPSynFlood":            {""},
		"TCPPortExhaustion":      {""},
		// The doctor's kinds without a rule of their own: the leak, an
		// error while it grows.
		"TCPDoctorError": {"close-wait-leak"},
	}
	for name, labels := range want {
		if !slices.Equal(firing[name], labels) {
			t.Errorf("%s fires for %q, want %q", name, firing[name], labels)
		}
	}
	for name, got := range firing {
		if want[name] == nil {
			t.Errorf("%s fires: %v", name, got)
		}
	}
	t.Logf("firing: %v", firing)

	// Every query of the dashboard returns data on this node.
	b, err := os.ReadFile("grafana/tcplab-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$__rate_interval", "2m", "$instance", ".*")
	q := rules.EngineQueryFunc(newEngine(), st)
	for _, panel := range d.Panels {
		for _, target := range panel.Targets {
			v, err := q(context.Background(), vars.Replace(target.Expr), times[len(times)-1])
			if err != nil || len(v) == 0 {
				t.Errorf("panel %q: %s: %v, %v", panel.Title, target.Expr, v, err)
			}
		}
	}
}
