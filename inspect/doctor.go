package inspect

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tcplab/tcplab/procnet"
)

// Level is how bad a finding is.
type Level int

// Levels, mildest first.
const (
	LevelInfo Level = iota
	LevelWarning
	LevelError
)

func (l Level) String() string {
	if l < LevelInfo || l > LevelError {
		return "none"
	}
	return [...]string{"info", "warning", "error"}[l]
}

// MarshalText writes the level's name.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level's name.
func (l *Level) UnmarshalText(b []byte) error {
	for _, x := range []Level{LevelInfo, LevelWarning, LevelError} {
		if x.String() == string(b) {
			*l = x
			return nil
		}
	}
	return fmt.Errorf("unknown level %q", b)
}

// Finding is one problem the doctor saw, with what shows it, what it
// means, what to do, and the built-in scenario that reproduces it.
type Finding struct {
	Kind        string   `json:"kind"`
	Level       Level    `json:"level"`
	Subject     string   `json:"subject"` // the port, process or destination concerned
	Title       string   `json:"title"`
	Evidence    []string `json:"evidence"`
	Explanation string   `json:"explanation"`
	Action      string   `json:"action"`
	Scenario    string   `json:"scenario"`
}

// Kinds of findings, as the exporter labels them.
var FindingKinds = []string{"accept-queue-overflow", "syn-queue-pressure", "close-wait-leak", "port-exhaustion",
	"time-wait-pressure", "syn-sent-pileup", "fin-wait1-pileup", "orphans", "tcp-memory", "retransmissions", "resets"}

// Sample is one look at a host: its sockets, counters and settings.
type Sample struct {
	At       time.Time
	Sockets  []Socket
	Counters procnet.Counters
	Sysctls  map[string][]int64
}

// doctorSysctls are the limits findings are measured against.
var doctorSysctls = []string{"net.ipv4.ip_local_port_range", "net.ipv4.tcp_max_syn_backlog", "net.core.somaxconn",
	"net.ipv4.tcp_max_orphans", "net.ipv4.tcp_max_tw_buckets", "net.ipv4.tcp_mem", "net.ipv4.tcp_syncookies"}

// TakeSample reads the host's sockets, counters and limits.
func TakeSample(h *Host) (Sample, error) {
	s := Sample{At: time.Now()}
	var err error
	if s.Counters, err = h.Counters(); err != nil {
		return s, err
	}
	if s.Sockets, err = h.Sockets(Filter{}); err != nil {
		return s, err
	}
	if s.Sysctls, err = h.Sysctls(doctorSysctls...); err != nil {
		return s, err
	}
	return s, nil
}

// Thresholds are where the doctor starts to speak. The defaults suit a
// busy server; tests lower them.
type Thresholds struct {
	CloseWait      int     // CLOSE_WAIT sockets of one process and port seen in both samples: warning
	CloseWaitError int     // ... or this many, or growing: error
	SynRecv        int     // SYN_RECV on one listener: warning
	SynSent        int     // SYN_SENT to one destination: warning
	SynSentSpread  int     // SYN_SENT to this many destinations: warning (scan or outage)
	FinWait1       int     // FIN_WAIT1 sockets in all: warning
	PortUse        float64 // share of the ephemeral range used toward one destination: warning (error at 0.9)
	TimeWait       float64 // TIME_WAIT against tcp_max_tw_buckets: warning
	Orphans        float64 // orphans against tcp_max_orphans: warning (error at 0.9)
	RetransRatio   float64 // retransmitted / sent segments between samples: warning (error at 4x)
	MinSegments    int64   // fewer segments sent than this: no retransmission finding
	ResetsPerSec   float64 // RSTs sent per second: warning
}

// DefaultThresholds are the doctor's usual limits.
var DefaultThresholds = Thresholds{CloseWait: 1, CloseWaitError: 50, SynRecv: 64, SynSent: 5, SynSentSpread: 50,
	FinWait1: 20, PortUse: 0.5, TimeWait: 0.5, Orphans: 0.5, RetransRatio: 0.02, MinSegments: 1000, ResetsPerSec: 50}

// Diagnose compares two samples of one host, a before b, and returns the
// findings, worst first. owners names the holders of b's sockets (only
// CLOSE_WAIT ones are needed); nil leaves processes out.
func Diagnose(a, b Sample, owners Owners, th Thresholds) []Finding {
	d := &doctor{a: a, b: b, owners: owners, th: th, secs: b.At.Sub(a.At).Seconds()}
	if d.secs <= 0 {
		d.secs = 1
	}
	d.acceptQueues()
	d.synQueues()
	d.closeWait()
	d.ports()
	d.synSent()
	d.finWait1()
	d.orphansAndMemory()
	d.rates()
	sort.SliceStable(d.out, func(i, j int) bool { return d.out[i].Level > d.out[j].Level })
	return d.out
}

// CloseWaitInodes is which sockets Diagnose wants owners for.
func CloseWaitInodes(s Sample) map[uint32]bool {
	m := map[uint32]bool{}
	for _, x := range s.Sockets {
		if x.State == CloseWait && x.Inode != 0 {
			m[x.Inode] = true
		}
	}
	return m
}

type doctor struct {
	a, b   Sample
	owners Owners
	th     Thresholds
	secs   float64
	out    []Finding
}

func (d *doctor) add(f Finding) { d.out = append(d.out, f) }

// delta is how much a counter grew between the samples.
func (d *doctor) delta(group, name string) int64 {
	x, ok1 := d.a.Counters.Get(group, name)
	y, ok2 := d.b.Counters.Get(group, name)
	if !ok1 || !ok2 || y < x {
		return 0
	}
	return y - x
}

func (d *doctor) sysctl(name string, i int) (int64, bool) {
	v := d.b.Sysctls[name]
	if i < len(v) {
		return v[i], true
	}
	return 0, false
}

func (d *doctor) acceptQueues() {
	over, drops := d.delta("TcpExt", "ListenOverflows"), d.delta("TcpExt", "ListenDrops")
	full := 0
	for _, s := range d.b.Sockets {
		if s.State != Listen || s.RecvQ < s.SendQ || s.SendQ == 0 && s.RecvQ == 0 {
			continue
		}
		full++
		lvl := LevelWarning
		if over > 0 {
			lvl = LevelError
		}
		d.add(Finding{Kind: "accept-queue-overflow", Level: lvl, Subject: s.Local.String(),
			Title: fmt.Sprintf("the accept queue of %s is full (%d waiting, backlog %d)", s.Local, s.RecvQ, s.SendQ),
			Evidence: []string{fmt.Sprintf("Recv-Q %d >= backlog %d on the listener", s.RecvQ, s.SendQ),
				fmt.Sprintf("ListenOverflows +%d, ListenDrops +%d in %.1fs", over, drops, d.secs)},
			Explanation: "Connections finished their handshake but the program does not call accept() fast enough. Clients see ESTABLISHED and send requests nobody reads; further handshakes are dropped (the final ACK is ignored), so clients retry and stall.",
			Action:      "Accept faster (more workers, no blocking work in the accept loop) and raise the backlog in listen() together with net.core.somaxconn if bursts are expected.",
			Scenario:    "accept-overflow"})
	}
	if full == 0 && over > 0 {
		d.add(Finding{Kind: "accept-queue-overflow", Level: LevelWarning, Subject: "host",
			Title:       fmt.Sprintf("accept queues overflowed %d times between samples", over),
			Evidence:    []string{fmt.Sprintf("ListenOverflows +%d, ListenDrops +%d in %.1fs; no queue is full now", over, drops, d.secs)},
			Explanation: "A burst filled some listener's accept queue; the handshakes beyond it were dropped and the clients had to retransmit.",
			Action:      "Find the listener with tcplab ss -l (Recv-Q against Send-Q) during the burst; accept faster or raise the backlog.",
			Scenario:    "accept-overflow"})
	}
}

func (d *doctor) synQueues() {
	perPort := map[uint16]int{}
	for _, s := range d.b.Sockets {
		if s.State == SynRecv || s.State == NewSynRecv {
			perPort[s.Local.Port()]++
		}
	}
	sent, recv, failed := d.delta("TcpExt", "SyncookiesSent"), d.delta("TcpExt", "SyncookiesRecv"), d.delta("TcpExt", "SyncookiesFailed")
	qfull := d.delta("TcpExt", "TCPReqQFullDrop")
	maxSyn, _ := d.sysctl("net.ipv4.tcp_max_syn_backlog", 0)
	counters := fmt.Sprintf("SyncookiesSent +%d, SyncookiesRecv +%d, SyncookiesFailed +%d, TCPReqQFullDrop +%d in %.1fs", sent, recv, failed, qfull, d.secs)
	ports := sortedPorts(perPort)
	reported := false
	for _, p := range ports {
		n := perPort[p]
		if n < d.th.SynRecv {
			continue
		}
		lvl := LevelWarning
		if sent > 0 || qfull > 0 {
			lvl = LevelError
		}
		reported = true
		d.add(Finding{Kind: "syn-queue-pressure", Level: lvl, Subject: fmt.Sprintf(":%d", p),
			Title:       fmt.Sprintf("%d half-open connections (SYN_RECV) on port %d", n, p),
			Evidence:    []string{fmt.Sprintf("%d SYN_RECV on :%d (tcp_max_syn_backlog %d)", n, p, maxSyn), counters},
			Explanation: "Many SYNs were answered but their final ACK has not come: a SYN flood (often from spoofed addresses), or clients whose ACKs are lost. When the SYN queue fills, Linux answers with SYN cookies or drops SYNs.",
			Action:      "Keep net.ipv4.tcp_syncookies=1, check where the SYNs come from (tcplab ss --state syn-recv), rate-limit or filter them upstream; raise tcp_max_syn_backlog and the listen backlog for real bursts.",
			Scenario:    "syn-flood"})
	}
	if !reported && (sent > 0 || qfull > 0) {
		d.add(Finding{Kind: "syn-queue-pressure", Level: LevelError, Subject: "host",
			Title:       "SYN queues overflowed between samples",
			Evidence:    []string{counters},
			Explanation: "Some listener's SYN queue was full: Linux sent SYN cookies instead of keeping state, or dropped SYNs. This is what a SYN flood or a very large burst of new connections does.",
			Action:      "Watch tcplab ss --state syn-recv during the burst to find the port and the sources; keep syncookies on.",
			Scenario:    "syn-flood"})
	}
}

type procPort struct {
	proc string
	port uint16
}

// cookies is which sockets of a sample are in state st.
func cookies(sm Sample, st State) map[uint64]bool {
	m := map[uint64]bool{}
	for _, s := range sm.Sockets {
		if s.State == st {
			m[s.Cookie] = true
		}
	}
	return m
}

func (d *doctor) closeWait() {
	before := cookies(d.a, CloseWait)
	type group struct {
		now, old int
		recvq    uint64
	}
	groups := map[procPort]*group{}
	for _, s := range d.b.Sockets {
		if s.State != CloseWait {
			continue
		}
		k := procPort{proc: "unknown process", port: s.Local.Port()}
		if ps := d.owners[s.Inode]; len(ps) > 0 {
			k.proc = fmt.Sprintf("%s (pid %d)", ps[0].Comm, ps[0].PID)
		}
		g := groups[k]
		if g == nil {
			g = &group{}
			groups[k] = g
		}
		g.now++
		g.recvq += uint64(max(s.RecvQ, 1) - 1) // the peer's FIN counts 1 in Recv-Q until it is read
		if before[s.Cookie] {
			g.old++
		}
	}
	// Growth is judged per port: the first sample's count against the sum
	// of the port's groups now (processes may share a port).
	was, now := map[uint16]int{}, map[uint16]int{}
	for _, s := range d.a.Sockets {
		if s.State == CloseWait {
			was[s.Local.Port()]++
		}
	}
	for k, g := range groups {
		now[k.port] += g.now
	}
	keys := make([]procPort, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return groups[keys[i]].now > groups[keys[j]].now })
	for _, k := range keys {
		g := groups[k]
		if g.old < d.th.CloseWait {
			continue
		}
		lvl := LevelWarning
		if g.now >= d.th.CloseWaitError || now[k.port] > was[k.port] && g.old > 0 {
			lvl = LevelError
		}
		d.add(Finding{Kind: "close-wait-leak", Level: lvl, Subject: fmt.Sprintf("%s port %d", k.proc, k.port),
			Title: fmt.Sprintf("%s leaves %d connections in CLOSE_WAIT on local port %d", k.proc, g.now, k.port),
			Evidence: []string{fmt.Sprintf("%d CLOSE_WAIT now, %d in the first sample, %d of them already there %.1fs ago", g.now, was[k.port], g.old, d.secs),
				fmt.Sprintf("%d unread bytes in their receive queues", g.recvq)},
			Explanation: "The peer closed these connections (its FIN arrived) but the program never called close(). CLOSE_WAIT does not time out: each one keeps a descriptor and memory until the process closes it or exits. It is always a bug of the local program.",
			Action:      "Close the connection when read() returns end of stream (0 bytes / io.EOF), on every path including errors; in Go, defer conn.Close() in the handler.",
			Scenario:    "close-wait"})
	}
}

// ephemeralRange is ip_local_port_range.
func (d *doctor) ephemeralRange() (int64, int64, bool) {
	lo, ok1 := d.sysctl("net.ipv4.ip_local_port_range", 0)
	hi, ok2 := d.sysctl("net.ipv4.ip_local_port_range", 1)
	return lo, hi, ok1 && ok2 && hi >= lo
}

func (d *doctor) ports() {
	lo, hi, ok := d.ephemeralRange()
	listening := map[uint16]bool{}
	tw := 0
	for _, s := range d.b.Sockets {
		if s.State == Listen {
			listening[s.Local.Port()] = true
		}
		if s.State == TimeWait {
			tw++
		}
	}
	if ok {
		size := hi - lo + 1
		type dest struct {
			src  netip.Addr
			dst  netip.AddrPort
			n    int
			twn  int
			stat map[State]int
		}
		type route struct {
			src netip.Addr
			dst netip.AddrPort
		}
		dests := map[route]*dest{}
		for _, s := range d.b.Sockets {
			p := int64(s.Local.Port())
			if s.State == Listen || listening[s.Local.Port()] || p < lo || p > hi {
				continue
			}
			k := route{s.Local.Addr(), s.Remote}
			x := dests[k]
			if x == nil {
				x = &dest{src: s.Local.Addr(), dst: s.Remote, stat: map[State]int{}}
				dests[k] = x
			}
			x.n++
			x.stat[s.State]++
			if s.State == TimeWait {
				x.twn++
			}
		}
		for _, x := range dests {
			use := float64(x.n) / float64(size)
			if use < d.th.PortUse {
				continue
			}
			lvl := LevelWarning
			if use >= 0.9 {
				lvl = LevelError
			}
			d.add(Finding{Kind: "port-exhaustion", Level: lvl, Subject: x.dst.String(),
				Title: fmt.Sprintf("%d of %d ephemeral ports are taken toward %s (%.0f%%)", x.n, size, x.dst, 100*use),
				Evidence: []string{fmt.Sprintf("from %s to %s: %s", x.src, x.dst, stateCounts(x.stat)),
					fmt.Sprintf("ip_local_port_range %d-%d", lo, hi)},
				Explanation: "Each connection to one destination needs its own local port; closed ones keep theirs for 60 s in TIME_WAIT on the side that closed first. When the range runs out, connect() fails with EADDRNOTAVAIL (\"cannot assign requested address\").",
				Action:      "Reuse connections (HTTP keep-alive, connection pools) instead of one connection per request; let the server close first; widen ip_local_port_range or add source addresses; net.ipv4.tcp_tw_reuse=1 helps outgoing connections.",
				Scenario:    "time-wait-bind"})
		}
	}
	if max, ok := d.sysctl("net.ipv4.tcp_max_tw_buckets", 0); ok && max > 0 {
		use := float64(tw) / float64(max)
		over := d.delta("TcpExt", "TCPTimeWaitOverflow")
		if use >= d.th.TimeWait || over > 0 {
			lvl := LevelWarning
			if over > 0 {
				lvl = LevelError
			}
			d.add(Finding{Kind: "time-wait-pressure", Level: lvl, Subject: "host",
				Title:       fmt.Sprintf("%d sockets in TIME_WAIT (limit %d)", tw, max),
				Evidence:    []string{fmt.Sprintf("%d TIME_WAIT against tcp_max_tw_buckets %d; TCPTimeWaitOverflow +%d in %.1fs", tw, max, over, d.secs)},
				Explanation: "Every connection closed first by this host waits 60 s in TIME_WAIT. Beyond tcp_max_tw_buckets Linux skips TIME_WAIT and closes at once, losing its protection against old duplicates.",
				Action:      "Reuse connections rather than opening one per request; have the other side close first where the protocol allows.",
				Scenario:    "time-wait"})
		}
	}
}

func stateCounts(m map[State]int) string {
	var parts []string
	for s := Established; s <= NewSynRecv; s++ {
		if m[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

func (d *doctor) synSent() {
	per := map[netip.AddrPort]int{}
	for _, s := range d.b.Sockets {
		if s.State == SynSent {
			per[s.Remote]++
		}
	}
	var dests []netip.AddrPort
	for k := range per {
		dests = append(dests, k)
	}
	sort.Slice(dests, func(i, j int) bool { return per[dests[i]] > per[dests[j]] })
	for _, k := range dests {
		if per[k] < d.th.SynSent {
			continue
		}
		d.add(Finding{Kind: "syn-sent-pileup", Level: LevelWarning, Subject: k.String(),
			Title:       fmt.Sprintf("%d connections to %s are stuck in SYN_SENT", per[k], k),
			Evidence:    []string{fmt.Sprintf("%d SYN_SENT to %s", per[k], k)},
			Explanation: "SYNs go out and nothing comes back: the destination is down, a firewall drops the SYNs silently, or the route is broken. Each connect() waits up to about 2 minutes (6 SYN retries) before ETIMEDOUT.",
			Action:      "Check the destination and the path (ping, traceroute, firewall rules); set a connect timeout in the client so callers fail fast.",
			Scenario:    "syn-sent"})
	}
	if len(dests) >= d.th.SynSentSpread {
		d.add(Finding{Kind: "syn-sent-pileup", Level: LevelWarning, Subject: "host",
			Title:       fmt.Sprintf("SYN_SENT toward %d different destinations", len(dests)),
			Evidence:    []string{fmt.Sprintf("%d destinations with a connection in SYN_SENT", len(dests))},
			Explanation: "Connections to many destinations wait for an answer at once: a network outage, or a process scanning addresses or ports.",
			Action:      "Find the process with tcplab ss --state syn-sent -p.",
			Scenario:    "syn-sent"})
	}
}

func (d *doctor) finWait1() {
	n, old := 0, 0
	before := cookies(d.a, FinWait1)
	for _, s := range d.b.Sockets {
		if s.State == FinWait1 {
			n++
			if before[s.Cookie] {
				old++
			}
		}
	}
	if n < d.th.FinWait1 {
		return
	}
	d.add(Finding{Kind: "fin-wait1-pileup", Level: LevelWarning, Subject: "host",
		Title:       fmt.Sprintf("%d connections in FIN_WAIT1", n),
		Evidence:    []string{fmt.Sprintf("%d FIN_WAIT1 now, %d of them already %.1fs ago", n, old, d.secs)},
		Explanation: "This host sent FIN and the peer does not acknowledge it: the peers are gone or unreachable (typically after a server shut down with many clients), or their receive windows are closed. The FIN is retransmitted with backoff until tcp_orphan_retries gives up.",
		Action:      "Check the peers' reachability; lower net.ipv4.tcp_orphan_retries to free these sooner.",
		Scenario:    "fin-wait-1-server-restart"})
}

func (d *doctor) orphansAndMemory() {
	orphans, ok := d.b.Counters.Get("TCP", "orphan")
	if max, ok2 := d.sysctl("net.ipv4.tcp_max_orphans", 0); ok && ok2 && max > 0 {
		use := float64(orphans) / float64(max)
		if use >= d.th.Orphans {
			lvl := LevelWarning
			if use >= 0.9 {
				lvl = LevelError
			}
			d.add(Finding{Kind: "orphans", Level: lvl, Subject: "host",
				Title:       fmt.Sprintf("%d orphaned sockets (limit %d)", orphans, max),
				Evidence:    []string{fmt.Sprintf("sockstat TCP orphan %d against tcp_max_orphans %d (%.0f%%)", orphans, max, 100*use)},
				Explanation: "Orphans are connections the program has closed that the kernel is still finishing (FIN_WAIT1, LAST_ACK, CLOSING). Past the limit Linux resets them at once.",
				Action:      "Find why closes do not complete (unreachable peers, closed windows); lower tcp_orphan_retries.",
				Scenario:    "linger-timeout"})
		}
	}
	mem, ok := d.b.Counters.Get("TCP", "mem")
	pressure, ok1 := d.sysctl("net.ipv4.tcp_mem", 1)
	limit, ok2 := d.sysctl("net.ipv4.tcp_mem", 2)
	aborts := d.delta("TcpExt", "TCPAbortOnMemory")
	if ok && ok1 && ok2 && (mem >= pressure || aborts > 0) {
		lvl := LevelWarning
		if mem >= limit || aborts > 0 {
			lvl = LevelError
		}
		d.add(Finding{Kind: "tcp-memory", Level: lvl, Subject: "host",
			Title:       fmt.Sprintf("TCP uses %d pages, past the pressure mark %d", mem, pressure),
			Evidence:    []string{fmt.Sprintf("sockstat TCP mem %d pages; tcp_mem %d %d %d; TCPAbortOnMemory +%d", mem, d.b.Sysctls["net.ipv4.tcp_mem"][0], pressure, limit, aborts)},
			Explanation: "Socket buffers hold too much data: slow readers, large queues or many connections. Under pressure Linux shrinks buffers; at the limit it drops and aborts connections.",
			Action:      "Find sockets with large Recv-Q or Send-Q (tcplab ss), fix slow readers, or raise tcp_mem.",
			Scenario:    "abortive-close"})
	}
}

func (d *doctor) rates() {
	out, re := d.delta("Tcp", "OutSegs"), d.delta("Tcp", "RetransSegs")
	if out >= d.th.MinSegments {
		ratio := float64(re) / float64(out)
		if ratio >= d.th.RetransRatio {
			lvl := LevelWarning
			if ratio >= 4*d.th.RetransRatio {
				lvl = LevelError
			}
			d.add(Finding{Kind: "retransmissions", Level: lvl, Subject: "host",
				Title:       fmt.Sprintf("%.1f%% of sent segments were retransmissions", 100*ratio),
				Evidence:    []string{fmt.Sprintf("RetransSegs +%d of OutSegs +%d in %.1fs", re, out, d.secs)},
				Explanation: "Segments are lost on the way or their ACKs are: a congested or faulty link, a full queue, or a peer that went away (then timeouts back off exponentially).",
				Action:      "Look at the retransmitting connections (tcplab ss -i -o: retrans, lost, timer on) and the path to their peers.",
				Scenario:    "fin-wait-1"})
		}
	}
	rst := d.delta("Tcp", "OutRsts")
	if rate := float64(rst) / d.secs; rate >= d.th.ResetsPerSec {
		d.add(Finding{Kind: "resets", Level: LevelWarning, Subject: "host",
			Title:       fmt.Sprintf("this host sends %.0f resets per second", rate),
			Evidence:    []string{fmt.Sprintf("OutRsts +%d in %.1fs; EstabResets +%d; TCPAbortOnClose +%d, TCPAbortOnData +%d", rst, d.secs, d.delta("Tcp", "EstabResets"), d.delta("TcpExt", "TCPAbortOnClose"), d.delta("TcpExt", "TCPAbortOnData"))},
			Explanation: "Resets answer connections to closed ports (refused), and abort connections closed with unread data or SO_LINGER 0. Many of them mean clients hitting a port nobody listens on, a scan, or programs that abort instead of closing.",
			Action:      "See which: TCPAbortOnClose/OnData point at programs closing with unread data; a high rate with no such aborts points at connections to closed ports.",
			Scenario:    "rst-closed-port"})
	}
}

func sortedPorts(m map[uint16]int) []uint16 {
	out := make([]uint16, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return m[out[i]] > m[out[j]] || m[out[i]] == m[out[j]] && out[i] < out[j] })
	return out
}

// WriteFindings writes findings for a terminal, wrapped to about 80 columns.
func WriteFindings(w io.Writer, fs []Finding, interval time.Duration) error {
	bw := bufio.NewWriter(w)
	if len(fs) == 0 {
		fmt.Fprintf(bw, "No findings: two samples %v apart show no known TCP problem.\n", interval)
		return bw.Flush()
	}
	count := map[Level]int{}
	for _, f := range fs {
		count[f.Level]++
		fmt.Fprintf(bw, "%-7s %s: %s\n", strings.ToUpper(f.Level.String()), f.Kind, f.Title)
		for i, e := range f.Evidence {
			label := ""
			if i == 0 {
				label = "evidence:"
			}
			fmt.Fprintf(bw, "        %-9s %s\n", label, e)
		}
		wrapInto(bw, "why:", f.Explanation)
		wrapInto(bw, "do:", f.Action)
		fmt.Fprintf(bw, "        %-9s tcplab run %s\n\n", "see:", f.Scenario)
	}
	fmt.Fprintf(bw, "%d findings: %d errors, %d warnings (samples %v apart)\n", len(fs), count[LevelError], count[LevelWarning], interval)
	return bw.Flush()
}

func wrapInto(w io.Writer, label, text string) {
	const width = 62
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			fmt.Fprintf(w, "        %-9s %s\n", label, line)
			label, line = "", ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		fmt.Fprintf(w, "        %-9s %s\n", label, line)
	}
}

// Worst is the highest level among findings, or -1 when there are none.
func Worst(fs []Finding) Level {
	worst := Level(-1)
	for _, f := range fs {
		worst = max(worst, f.Level)
	}
	return worst
}
