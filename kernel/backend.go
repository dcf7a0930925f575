package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/procnet"
	"github.com/tcplab/tcplab/sim"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Options tune a kernel run.
type Options struct {
	// Tick is how often the backend looks at the kernel while time
	// passes (default 2 ms).
	Tick time.Duration
	// BuildLock, shared by backends that run at once, makes them build
	// their labs one at a time: building namespaces and links at once
	// stalls the runs already going, and each other's first steps. A run
	// holds it from building its lab through its opening (until it first
	// lets time pass, at most openingHold), and takes it again to remove
	// its lab: on this kernel (no preemption) a lab built or removed
	// meanwhile stalled an opening's steps by up to 30 ms, where its
	// times have the least tolerance.
	BuildLock *sync.Mutex
}

// Backend runs a scenario on the Linux kernel. It implements the scenario
// runner's Backend interface. Its methods are called from one goroutine.
type Backend struct {
	opt    Options
	sink   trace.Sink
	hosts  []*host
	byName map[string]*host

	lab     *lab
	tr      *inspect.Tracer
	t0      time.Duration // CLOCK_MONOTONIC at time zero
	realOff time.Duration // CLOCK_REALTIME minus CLOCK_MONOTONIC (realOffset), as of the last flush
	started bool
	burst   bool // calls meant for one instant (Burst)
	burstN  int  // calls made in the current burst
	// reqNoLook: this flush only reports request ends already placed.
	reqNoLook bool
	closed    bool
	// building: the run holds the build lock (Options.BuildLock), from
	// building its lab through its opening (endOpening), and again while
	// it removes the lab.
	building bool

	rules map[int]*installed
	// linkDelay is the lab link's one-way delay.
	linkDelay time.Duration
	nextRule  int

	raw      []rawItem // observations not yet turned into events
	pend     []trace.Event
	inflight sync.WaitGroup
	// Blocked calls (the run's goroutine only) and the completions they
	// queued for the next flush (any goroutine; unbounded, so that a
	// goroutine never waits to report).
	blocked []*blocked
	nudged  chan struct{}
	doneMu  sync.Mutex
	doneQ   []completion

	threads []*threadWin
	thMu    sync.Mutex

	nextPkt    uint64
	sent       []*sentPkt // packets seen leaving, waiting for their arrival
	injects    []injection
	injected   map[string]injected // crafted packets not yet seen leaving
	prunedAt   time.Duration
	warned     map[string]bool
	stopped    atomic.Pointer[error]
	countersAt time.Duration
}

// Interrupt makes the run stop at its next step: time stops passing and
// every call fails with err. It may be called from any goroutine (a
// signal handler); Close then removes what the run created.
func (b *Backend) Interrupt(err error) { b.stopped.Store(&err) }

// guard turns a panic in one of the backend's goroutines into the end of
// the run, so that the lab is still removed: a panic outside the caller's
// goroutine would skip every deferred Close.
func (b *Backend) guard() {
	if r := recover(); r != nil {
		b.Interrupt(fmt.Errorf("kernel backend: internal error: %v\n%s", r, debug.Stack()))
	}
}

// Interrupted is why the run was stopped early (Interrupt, or a failure
// of the backend's own goroutines), or nil.
func (b *Backend) Interrupted() error { return b.interrupted() }

func (b *Backend) interrupted() error {
	if p := b.stopped.Load(); p != nil {
		return *p
	}
	if b.lab != nil && b.lab.link != nil {
		if err := b.lab.link.failed(); err != nil {
			return err
		}
	}
	return nil
}

type installed struct {
	rule           sim.Rule
	host           *host
	label          string
	matched, acted int
	// The rule took effect when its nftables transaction committed,
	// between addStart and from on the run's clock, and ceased between
	// remStart and until (0 while it is in force).
	addStart, from  time.Duration
	remStart, until time.Duration
}

// force says whether the rule acted on packets captured at time at: yes,
// no, or maybe (while its addition or removal was being committed).
func (r *installed) force(at time.Duration) (in, maybe bool) {
	switch {
	case at < r.addStart || r.until != 0 && at >= r.until:
		return false, false
	case at < r.from || r.until != 0 && at >= r.remStart:
		return false, true
	}
	return true, false
}

// host is one scenario host on the kernel.
type host struct {
	name          string
	addr          netip.Addr
	peer          bool // a program plays it (AddPeer): its stack drops all it gets
	profile       string
	ns            *nsHost
	work          *nsWorker
	diag          *diagConn
	cap           *capture
	fw            *firewall
	rawFd         int
	addr6         netip.Addr // its IPv6 address, when it has one
	rawFd6        int
	netstat, snmp *os.File
	procBuf       []byte // reused for every read of netstat and snmp
	// inBase and inOwed: the host's count of packets taken in (see
	// inReceives) before the packets injected toward it and not yet
	// waited for, and when each of those is due to arrive (sent, plus the
	// link's delay). A call on the host waits for the ones due by then
	// (they cross the lab's link in a goroutine of tcplab's, which a busy
	// machine may delay). (Index 0 IPv4, 1 IPv6.)
	inBase [2]int64
	inOwed [2][]time.Duration
	snmp6  *os.File

	fds      map[tcp.FD]*ksock
	socks    []*ksock
	bySk     map[uint64]*ksock
	nextSock uint64
	nextCall uint64
	counters map[string]int64
	settings [][2]string // set before the lab existed
	cc       string      // the congestion control every socket takes (TCP_CONGESTION); "": the namespace's
	lastIn   map[[2]netip.AddrPort]lastIn
	// dupCopies: packets a duplicate rule took whose copy is still to
	// be captured, by pktKey, with the rule that took them.
	dupCopies map[string][]dupCopy
	req       reqTrack // SYNs and request socks (requests.go)
}

// injected counts the crafted packets of one content sent and not yet
// seen leaving, and when the last was sent.
type injected struct {
	n  int
	at time.Duration
}

// lastIn is the last segment that reached a connection.
type lastIn struct {
	at    time.Duration
	flags wire.Flags
}

// ksock is a socket of the run: one the application opened or accepted,
// a request sock, or a TIME_WAIT remnant of one of them.
type ksock struct {
	id       uint64
	parent   uint64
	h        *host
	fd       tcp.FD // 0: no descriptor
	kfd      int    // -1: closed
	v6       bool   // AF_INET6
	v6only   bool   // IPV6_V6ONLY set
	nonblock bool
	state    string
	local    netip.AddrPort
	remote   netip.AddrPort
	skaddr   uint64
	req      bool // a request sock, known from its SYN-ACK
	tw       bool // the kernel keeps only a TIME_WAIT (or FIN_WAIT2) remnant
	listener bool
	accepted bool
	// Blocked accept() calls take connections in the order they were
	// made, as the kernel's exclusive wait queue wakes them: each takes a
	// ticket and waits for its turn.
	acceptMu            sync.Mutex
	acceptTurn          *sync.Cond
	acceptNext, serving uint64
	// waits are the duplicates of kfd that blocked calls wait on
	// (waitFor); waitMu guards them and kfd's closing.
	waitMu sync.Mutex
	waits  map[*os.File]bool
}

// acceptTicket is the place of a new blocked accept() in the queue.
func (s *ksock) acceptTicket() uint64 {
	s.acceptMu.Lock()
	defer s.acceptMu.Unlock()
	if s.acceptTurn == nil {
		s.acceptTurn = sync.NewCond(&s.acceptMu)
	}
	t := s.acceptNext
	s.acceptNext++
	return t
}

// acceptWaiting tells whether blocked accept() calls wait on s.
func (s *ksock) acceptWaiting() bool {
	s.acceptMu.Lock()
	defer s.acceptMu.Unlock()
	return s.acceptNext != s.serving
}

// acceptWait blocks until ticket t is served; done ends its turn.
func (s *ksock) acceptWait(t uint64) (done func()) {
	s.acceptMu.Lock()
	for s.serving != t {
		s.acceptTurn.Wait()
	}
	s.acceptMu.Unlock()
	return func() {
		s.acceptMu.Lock()
		s.serving++
		s.acceptTurn.Broadcast()
		s.acceptMu.Unlock()
	}
}

// New prepares a kernel backend. Nothing is created until the first host
// is added.
func New(opt Options) *Backend {
	if opt.Tick <= 0 {
		opt.Tick = 2 * time.Millisecond
	}
	return &Backend{opt: opt, byName: map[string]*host{}, rules: map[int]*installed{},
		nudged: make(chan struct{}, 1), injected: map[string]injected{}, warned: map[string]bool{}}
}

func (b *Backend) Name() string         { return "kernel" }
func (b *Backend) SetSink(s trace.Sink) { b.sink = s }

// Tolerance allows for how Linux runs timers: a timer is rounded up to
// its timer-wheel level's granularity, at most about an eighth of its
// length (a 60 s TIME_WAIT ends up to 2 s late at HZ=250), plus jiffies
// and scheduling noise for short ones (a loaded 2-core machine delays a
// wake-up by tens of milliseconds).
func (b *Backend) Tolerance(d time.Duration) time.Duration { return Tolerance(d) }

// Tolerance is the kernel backend's timing tolerance for an expected time d.
func Tolerance(d time.Duration) time.Duration { return 50*time.Millisecond + d/8 }

func monoNow() time.Duration { return inspect.MonoNow() }

// Now is the time since the lab was ready.
func (b *Backend) Now() time.Duration {
	if !b.started {
		return 0
	}
	return monoNow() - b.t0
}

func (b *Backend) AddHost(name string, addr netip.Addr, profile string) error {
	if b.started {
		return fmt.Errorf("host %s: the kernel backend takes its hosts before the run starts", name)
	}
	if err := checkProfile(profile); err != nil {
		return fmt.Errorf("host %s: %w", name, err)
	}
	if b.hostByAddr(addr) != nil {
		return fmt.Errorf("host %s: address %v is already %s's", name, addr, b.hostByAddr(addr).name)
	}
	h := &host{name: name, profile: profileOr(profile), rawFd: -1, rawFd6: -1,
		fds: map[tcp.FD]*ksock{}, bySk: map[uint64]*ksock{}, counters: map[string]int64{},
		lastIn: map[[2]netip.AddrPort]lastIn{}, dupCopies: map[string][]dupCopy{}}
	if addr.Is4() {
		h.addr = addr
	} else {
		h.addr6 = addr
	}
	b.hosts = append(b.hosts, h)
	b.byName[name] = h
	return nil
}

// AddAddr gives a host its address of the other family (a dual-stack
// host).
func (b *Backend) AddAddr(name string, addr netip.Addr) error {
	h, err := b.host(name)
	if err != nil {
		return err
	}
	if b.started {
		return fmt.Errorf("host %s: the kernel backend takes its hosts before the run starts", name)
	}
	if o := b.hostByAddr(addr); o != nil {
		return fmt.Errorf("host %s: address %v is already %s's", name, addr, o.name)
	}
	switch {
	case addr.Is4() && !h.addr.IsValid():
		h.addr = addr
	case addr.Is6() && !h.addr6.IsValid():
		h.addr6 = addr
	default:
		return fmt.Errorf("host %s: it has an address of %v's family already", name, addr)
	}
	return nil
}

// peerRuleID tags the firewall rule that silences a peer's stack; the
// run's own rules count from 1.
const peerRuleID = 0

// AddPeer adds a host that a program plays: a namespace whose stack drops
// everything it receives (its capture still sees it), and whose packets
// the program sends with Inject. A lab with a peer has no link delay, as
// packetdrill's tun device has none.
func (b *Backend) AddPeer(name string, addr netip.Addr) error {
	if err := b.AddHost(name, addr, "linux"); err != nil {
		return err
	}
	b.byName[name].peer = true
	return nil
}

// SetSysctl writes a sysctl of a host's namespace by its name
// (net.ipv4.tcp_rmem): only net.* settings, and only those the namespace
// has; a global one (net.ipv4.tcp_mem) is not visible there, so the
// machine's settings are never changed.
func (b *Backend) SetSysctl(hostName, name, value string) error {
	h, err := b.host(hostName)
	if err != nil {
		return err
	}
	rest, ok := strings.CutPrefix(name, "net.")
	if !ok || strings.Contains(rest, "..") || strings.ContainsAny(rest, "/\\") {
		return fmt.Errorf("sysctl %s: only net.* settings of the namespace are set", name)
	}
	if err := b.start(); err != nil {
		return err
	}
	p := "/proc/sys/net/" + strings.ReplaceAll(rest, ".", "/")
	return h.work.do(func() error {
		cur, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("sysctl %s: not a setting of a network namespace", name)
		}
		if name == "net.ipv4.tcp_congestion_control" {
			h.cc = "" // the namespace's own, unless it may not be set below
		}
		if strings.Join(strings.Fields(string(cur)), " ") == strings.Join(strings.Fields(value), " ") {
			return nil // already so (a namespace may not write some, tcp_congestion_control)
		}
		err = os.WriteFile(p, []byte(value), 0)
		if err != nil && name == "net.ipv4.tcp_congestion_control" && errors.Is(err, os.ErrPermission) {
			// A namespace may only make a default of the algorithms
			// tcp_allowed_congestion_control lists, a setting of the
			// whole machine. Each socket of the run takes it instead
			// (TCP_CONGESTION, which root may set to any available one).
			cc := strings.TrimSpace(value)
			avail, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
			if !slices.Contains(strings.Fields(string(avail)), cc) {
				return fmt.Errorf("sysctl %s = %s: not an available algorithm (%s)", name, value, strings.TrimSpace(string(avail)))
			}
			h.cc = cc
			return nil
		}
		if err != nil {
			return fmt.Errorf("sysctl %s = %s: %w", name, value, err)
		}
		return nil
	})
}

func profileOr(p string) string {
	if p == "" {
		return "linux"
	}
	return p
}

// checkProfile refuses profiles that describe another stack: the kernel
// is Linux, whatever the scenario says.
func checkProfile(p string) error {
	p = profileOr(p)
	if _, err := tcp.ProfileByName(p); err != nil {
		return err
	}
	if p != "linux" {
		return fmt.Errorf("profile %s describes another TCP stack; the kernel backend runs Linux only (run this scenario on the simulator)", p)
	}
	return nil
}

// start builds the lab: namespaces, links, firewalls, capture, the
// tracer, and the profile's settings. Time zero is when it is ready.
func (b *Backend) start() error {
	if err := b.interrupted(); err != nil {
		return err
	}
	if b.started {
		return nil
	}
	if b.closed {
		return errors.New("the kernel backend is closed")
	}
	if len(b.hosts) < 2 {
		return fmt.Errorf("the kernel backend needs at least two hosts, the scenario has %d", len(b.hosts))
	}
	b.lockBuild()
	defer func() {
		if !b.started {
			b.unlockBuild()
		}
	}()
	// Interrupted while it waited for its turn to build: build nothing.
	if err := b.interrupted(); err != nil {
		return err
	}
	names := make([]string, len(b.hosts))
	addrs := make([]netip.Addr, len(b.hosts))
	addrs6 := make([]netip.Addr, len(b.hosts))
	peers := make([]bool, len(b.hosts))
	for i, h := range b.hosts {
		names[i], addrs[i], addrs6[i], peers[i] = h.name, h.addr, h.addr6, h.peer

	}
	for _, h := range b.hosts {
		if h.peer {
			for _, o := range b.hosts {
				if o.addr6.IsValid() || !o.addr.IsValid() {
					return fmt.Errorf("host %s: a lab with a packetdrill peer is IPv4 only", o.name)
				}
			}
		}
	}
	var err error
	delay := sim.DefaultDelay
	for _, h := range b.hosts {
		if h.peer {
			delay = 0 // a peer is attached directly, as a tun device
		}
	}
	b.linkDelay = delay
	if b.lab, err = newLab(names, addrs, addrs6, peers, delay); err != nil {
		return err
	}
	cleanup := func(e error) error {
		b.teardown()
		return e
	}
	// The text format cannot print IPv6 addresses (its fields option
	// shows them as <INVALID-SIZE>): a lab with IPv6 reads the ring
	// buffer in binary.
	format := inspect.TraceFields
	for _, a := range addrs6 {
		if a.IsValid() {
			format = inspect.TraceBinary
		}
	}
	if b.tr, err = inspect.NewTracer(b.lab.name, format); err != nil {
		return cleanup(err)
	}
	// The filter comes after the tracer has enabled the event: records
	// from the moment between are other namespaces', and warmUp takes
	// and drops everything recorded before time zero.
	if err := filterTrace(b.lab.name, addrs, addrs6); err != nil {
		return cleanup(err)
	}
	for _, h := range b.hosts {
		h.ns = b.lab.host(h.name)
		if err := b.openHost(h); err != nil {
			return cleanup(fmt.Errorf("host %s: %w", h.name, err))
		}
	}
	if err := b.warmUp(); err != nil {
		return cleanup(err)
	}
	b.started = true
	b.t0 = monoNow()
	b.realOff = realOffset()
	return nil
}

// warmUp does, before time zero, what the first steps would otherwise
// pay for after it: the counters' baseline (0.3 ms, up to 2 ms with
// twelve runs at once), the tracer's first round trip (its first Sync
// took 0.05 to 3.5 ms where later ones take 0.02 to 0.1 ms), a call on
// each namespace's thread, and a first read of each capture. Records and
// packets from before time zero are not the run's: no socket of it
// exists yet.
func (b *Backend) warmUp() error {
	_ = b.tr.Sync(2 * time.Second) // a tracer that lags is reported by the first flush
	b.tr.Take()
	for _, h := range b.hosts {
		for _, c := range b.readCounters(h) {
			h.counters[c.Name] = c.Value
		}
		if err := h.work.do(func() error { return nil }); err != nil {
			return err
		}
		if err := h.cap.drain(func(capturedPacket) {}); err != nil {
			return fmt.Errorf("host %s: %w", h.name, err)
		}
	}
	return nil
}

// realOffset is CLOCK_REALTIME minus CLOCK_MONOTONIC, which turns a
// packet's receive time (the capture gives CLOCK_REALTIME) into the
// run's time. The realtime read is taken between two monotonic reads,
// the closest of three tries, so that a thread preempted between two
// reads does not shift every packet of the run; flushes sample it again,
// so that a step or slew of the realtime clock during a run moves the
// packets only for the moment it happens.
func realOffset() time.Duration {
	var best time.Duration
	gap := time.Duration(1<<63 - 1)
	for range 3 {
		m1 := monoNow()
		r := time.Duration(time.Now().UnixNano())
		m2 := monoNow()
		if m2-m1 < gap {
			gap, best = m2-m1, r-(m1+m2)/2
		}
	}
	return best
}

// filterTrace makes the kernel keep, in the run's tracefs instance, only
// the state changes of IPv4 sockets whose local address is one of the
// lab's hosts' or none yet (a listener on every address): the sockets
// of the run have no other. The tracepoint fires for every namespace of
// the machine, and each record costs the kernel about 2 us to print and
// the reader 15 us to parse: with another process making 5,000
// connections a second on loopback (50,000 changes), twelve runs at once
// lost every state change and took 30 s instead of 4.
func filterTrace(instance string, addrs, addrs6 []netip.Addr) error {
	root, err := inspect.TracefsRoot()
	if err != nil {
		return err
	}
	terms := []string{"saddr == 0"}
	for _, a := range addrs {
		if !a.IsValid() {
			continue
		}
		b := a.As4()
		// saddr is a __u8[4], compared as a number in the machine's order.
		terms = append(terms, fmt.Sprintf("saddr == %#x", binary.NativeEndian.Uint32(b[:])))
	}
	filter := "family == 2 && (" + strings.Join(terms, " || ") + ")"
	for _, a := range addrs6 {
		if a.IsValid() {
			// AF_INET6 sockets: the filter cannot compare 16-byte
			// addresses, and the backend's own matching keeps the lab's.
			// The 4-byte saddr of such a record is 127.0.0.6 for an IPv6
			// address (LOOPBACK4_IPV6), the IPv4 one for an IPv4-mapped
			// address, or 0: other processes' IPv4 traffic through
			// dual-stack sockets stays out.
			lo6 := [4]byte{127, 0, 0, 6}
			terms6 := append([]string{fmt.Sprintf("saddr == %#x", binary.NativeEndian.Uint32(lo6[:]))}, terms...)
			filter = "(" + filter + ") || family == 10 && (" + strings.Join(terms6, " || ") + ")"
			break
		}
	}
	p := filepath.Join(root, "instances", instance, "events/sock/inet_sock_set_state/filter")
	if err := os.WriteFile(p, []byte(filter), 0); err != nil {
		return fmt.Errorf("tracefs filter %q: %w", filter, err)
	}
	return nil
}

// openHost opens, inside the host's namespace, everything the run uses
// there, and applies the profile's and the scenario's settings.
func (b *Backend) openHost(h *host) error {
	var err error
	if h.work, err = newNSWorker(h.ns.ns); err != nil {
		return err
	}
	err = h.work.do(func() error {
		var err error
		if h.diag, err = openDiag(h.addr6.IsValid()); err != nil {
			return err
		}
		if h.cap, err = openCapture(h.ns.index); err != nil {
			return err
		}
		if h.rawFd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		if h.addr6.IsValid() {
			// IPPROTO_RAW implies IPV6_HDRINCL: the packet is sent as made.
			if h.rawFd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
				return fmt.Errorf("raw IPv6 socket: %w", err)
			}
		}
		// /proc/thread-self/net is this thread's namespace; an open file
		// keeps reading the namespace it was opened in.
		if h.netstat, err = os.Open("/proc/thread-self/net/netstat"); err != nil {
			return err
		}
		if h.snmp, err = os.Open("/proc/thread-self/net/snmp"); err != nil {
			return err
		}
		if h.addr6.IsValid() {
			if h.snmp6, err = os.Open("/proc/thread-self/net/snmp6"); err != nil {
				return err
			}
		}
		return b.applyProfile(h)
	})
	if err != nil {
		return err
	}
	if h.fw, err = newFirewall(int(h.ns.ns)); err != nil {
		return err
	}
	if h.peer {
		// The peer's own stack must not answer what reaches it: the
		// program answers. A rule of the lab, not of the run: it has no
		// event, and the capture sees the packets before it.
		if err := h.fw.add(peerRuleID, &sim.Rule{Host: h.name, Dir: trace.In, Action: sim.Drop}); err != nil {
			return fmt.Errorf("peer %s: %w", h.name, err)
		}
	}
	return nil
}

// sysctls maps tcplab's setting names to the namespace's sysctl files and
// the factor from the setting's unit to the file's.
var sysctls = map[string]struct {
	path   string
	factor int64
}{
	"tcp_syn_retries":         {"ipv4/tcp_syn_retries", 1},
	"tcp_syn_linear_timeouts": {"ipv4/tcp_syn_linear_timeouts", 1},
	"tcp_synack_retries":      {"ipv4/tcp_synack_retries", 1},
	"tcp_retries2":            {"ipv4/tcp_retries2", 1},
	"tcp_orphan_retries":      {"ipv4/tcp_orphan_retries", 1},
	"tcp_fin_timeout":         {"ipv4/tcp_fin_timeout", 1},
	"tcp_rfc1337":             {"ipv4/tcp_rfc1337", 1},
	"tcp_keepalive_time":      {"ipv4/tcp_keepalive_time", 1},
	"tcp_keepalive_intvl":     {"ipv4/tcp_keepalive_intvl", 1},
	"tcp_keepalive_probes":    {"ipv4/tcp_keepalive_probes", 1},
	"somaxconn":               {"core/somaxconn", 1},
	"tcp_max_syn_backlog":     {"ipv4/tcp_max_syn_backlog", 1},
	"tcp_syncookies":          {"ipv4/tcp_syncookies", 1},
	"tcp_abort_on_overflow":   {"ipv4/tcp_abort_on_overflow", 1},
	"tcp_timestamps":          {"ipv4/tcp_timestamps", 1},
	"tcp_sack":                {"ipv4/tcp_sack", 1},
	"tcp_tw_reuse":            {"ipv4/tcp_tw_reuse", 1},
	"tcp_challenge_ack_limit": {"ipv4/tcp_challenge_ack_limit", 1},
	"tcp_invalid_ratelimit":   {"ipv4/tcp_invalid_ratelimit", 1},
	"tcp_rto_min":             {"ipv4/tcp_rto_min_us", 1000},
	"ip_local_port_range":     {"ipv4/ip_local_port_range", 1},
}

// applyProfile writes the profile's value of every setting the kernel
// has, so that "linux" means the simulator's Linux profile (which, for
// one, keeps tcp_syn_linear_timeouts at 0) and then the scenario's own
// settings made before the lab existed. It runs in the host's namespace.
func (b *Backend) applyProfile(h *host) error {
	p, err := tcp.ProfileByName(h.profile)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(sysctls))
	for n := range sysctls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v, ok := p.Get(n)
		if !ok {
			continue
		}
		if err := writeSysctl(n, v); err != nil {
			return err
		}
	}
	for _, s := range h.settings {
		if err := writeSysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	return nil
}

// writeSysctl writes a setting in the calling thread's namespace.
func writeSysctl(name, value string) error {
	s, ok := sysctls[name]
	if !ok {
		return fmt.Errorf("setting %s has no sysctl in a Linux namespace (the simulator has it as a profile value)", name)
	}
	if s.factor != 1 {
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", name, value)
		}
		value = strconv.FormatInt(n*s.factor, 10)
	}
	p := filepath.Join("/proc/sys/net", s.path)
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("set %s = %s: %w", name, value, err)
	}
	return nil
}

func (b *Backend) host(name string) (*host, error) {
	h := b.byName[name]
	if h == nil {
		return nil, fmt.Errorf("unknown host %q", name)
	}
	return h, nil
}

func (b *Backend) SetProfile(hostName, profile string) error {
	h, err := b.host(hostName)
	if err != nil {
		return err
	}
	if err := checkProfile(profile); err != nil {
		return err
	}
	h.profile = profileOr(profile)
	if !b.started {
		return nil
	}
	return h.work.do(func() error { return b.applyProfile(h) })
}

// Set writes a sysctl in the host's namespace, after checking the value
// as the simulator would.
func (b *Backend) Set(hostName, setting, value string) error {
	h, err := b.host(hostName)
	if err != nil {
		return err
	}
	p, _ := tcp.ProfileByName("linux")
	if err := p.Set(setting, value); err != nil {
		return err
	}
	if _, ok := sysctls[setting]; !ok {
		return fmt.Errorf("setting %s cannot be changed on the kernel: Linux has no per-namespace sysctl for it", setting)
	}
	if !b.started {
		h.settings = append(h.settings, [2]string{setting, value})
		return nil
	}
	return h.work.do(func() error { return writeSysctl(setting, value) })
}

func (b *Backend) AddRule(r sim.Rule) (int, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	h, err := b.host(r.Host)
	if err != nil {
		return 0, err
	}
	if err := expressible(&r); err != nil {
		return 0, err
	}
	if err := b.start(); err != nil {
		return 0, err
	}
	// The packets captured so far met the rules without this one: the
	// replay of the rules (input verdicts, duplicates) must see them so.
	b.flushUpTo(b.Now())
	b.nextRule++
	id := b.nextRule
	start := b.Now()
	if err := h.fw.add(id, &r); err != nil {
		return 0, err
	}
	in := &installed{rule: r, host: h, label: r.Label, addStart: start, from: b.Now()}
	if in.label == "" {
		in.label = fmt.Sprintf("#%d %s", id, r.Summary())
	}
	b.rules[id] = in
	b.flushUpTo(b.Now())
	b.emitNow(trace.Event{Host: h.name, Kind: trace.KindRule, Rule: &trace.RuleChange{ID: id, Added: true, Summary: r.Summary()}})
	return id, nil
}

func (b *Backend) RemoveRule(id int) error {
	in := b.rules[id]
	if in == nil || in.until != 0 {
		return fmt.Errorf("no rule %d", id)
	}
	b.flushUpTo(b.Now()) // what was captured so far met the rule
	in.remStart = b.Now()
	if err := in.host.fw.remove(id, in.rule.Dir); err != nil {
		return err
	}
	// Kept, out of force, for the packets captured before its removal
	// and read after it.
	in.until = b.Now()
	b.flushUpTo(b.Now())
	b.emitNow(trace.Event{Host: in.host.name, Kind: trace.KindRule, Rule: &trace.RuleChange{ID: id, Added: false, Summary: in.rule.Summary()}})
	return nil
}

// Close removes everything the run created. It is safe to call twice.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if !b.started && b.lab == nil {
		return nil
	}
	return b.teardown()
}

// openingHold is how long after time zero a run keeps the build lock
// at most, if it has not let time pass before.
const openingHold = 100 * time.Millisecond

// lockBuild takes the build lock, if the run has one and does not hold it.
func (b *Backend) lockBuild() {
	if l := b.opt.BuildLock; l != nil && !b.building {
		l.Lock()
		b.building = true
	}
}

// unlockBuild releases the build lock if the run holds it.
func (b *Backend) unlockBuild() {
	if b.building {
		b.building = false
		b.opt.BuildLock.Unlock()
	}
}

// endOpening releases the build lock once the run's opening is over:
// the run first lets time pass, or openingHold has passed.
func (b *Backend) endOpening(passing bool) {
	if b.building && (passing || b.Now() > openingHold) {
		b.unlockBuild()
	}
}

func (b *Backend) teardown() error {
	var errs []error
	for _, h := range b.hosts {
		for _, s := range h.socks {
			if kfd := s.takeKernelFd(); kfd >= 0 {
				unix.Close(kfd)
			}
		}
	}
	// Blocked calls wake up once their descriptors are closed (a close
	// with SO_LINGER may take its time: not under the build lock, which
	// other runs' openings wait for).
	waitTimeout(&b.inflight, 2*time.Second)
	// Connections accepted by blocked calls whose returns were never
	// reported.
	b.doneMu.Lock()
	for _, d := range b.doneQ {
		if d.newFd >= 0 {
			unix.Close(d.newFd)
		}
	}
	b.doneQ = nil
	b.doneMu.Unlock()
	for _, it := range b.raw {
		if it.done != nil && it.done.newFd >= 0 {
			unix.Close(it.done.newFd)
			it.done.newFd = -1
		}
	}
	b.lockBuild()
	defer b.unlockBuild()
	for _, h := range b.hosts {
		if h.fw != nil {
			if err := h.fw.close(); err != nil {
				errs = append(errs, err)
			}
		}
		if h.cap != nil {
			h.cap.close()
		}
		if h.diag != nil {
			h.diag.close()
		}
		if h.rawFd >= 0 {
			unix.Close(h.rawFd)
		}
		if h.rawFd6 >= 0 {
			unix.Close(h.rawFd6)
		}
		for _, f := range []*os.File{h.netstat, h.snmp, h.snmp6} {
			if f != nil {
				f.Close()
			}
		}
		if h.work != nil {
			h.work.close()
		}
	}
	if b.tr != nil {
		if err := b.tr.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.lab != nil {
		if err := b.lab.close(); err != nil {
			errs = append(errs, err)
		}
	}
	b.started = false
	b.closed = true
	return errors.Join(errs...)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
	case <-time.After(d):
	}
}

// readCounters reads the namespace's Tcp and TcpExt counters, reporting
// those the simulator also keeps, in its order.
func (b *Backend) readCounters(h *host) []trace.Counter {
	c := procnet.Counters{}
	if h.procBuf == nil {
		h.procBuf = make([]byte, 64<<10)
	}
	for _, f := range []*os.File{h.netstat, h.snmp} {
		if f == nil {
			continue
		}
		n, err := f.ReadAt(h.procBuf, 0)
		if err != nil && n == 0 {
			continue
		}
		_ = procnet.ParseInto(c, h.procBuf[:n])
	}
	out := make([]trace.Counter, 0, len(tcp.Counters()))
	for _, k := range tcp.Counters() {
		v, _ := c.Get(k.Group(), k.String())
		out = append(out, trace.Counter{Name: k.String(), Value: v})
	}
	return out
}

func (b *Backend) Counters(hostName string) ([]trace.Counter, error) {
	h, err := b.host(hostName)
	if err != nil {
		return nil, err
	}
	if err := b.start(); err != nil {
		return nil, err
	}
	// The runner reads the counters at the end of the run: whatever
	// happened before must be reported by then, blocked calls that
	// returned included, or a run that ends right after a change loses
	// the call it woke. A request's end that the flush's own look found
	// is placed after the flush's horizon: a second flush reports it.
	b.flushNow()
	b.reqReportEnds()
	return b.readCounters(h), nil
}

// emitNow sends an event stamped with the current time after everything
// observed so far.
func (b *Backend) emitNow(e trace.Event) {
	e.At = b.Now()
	b.flushUpTo(e.At)
	b.emit(e)
}

func (b *Backend) emit(e trace.Event) {
	if b.sink != nil {
		b.sink(e)
	}
}

// lockThread pins the calling goroutine to its thread for a system call
// whose state changes the tracer must attribute to this run, and records
// the thread. The returned function ends the window.
func (b *Backend) lockThread(h *host, s *ksock, what string) func() {
	runtime.LockOSThread()
	tid := unix.Gettid()
	w := &threadWin{tid: tid, h: h, s: s, what: what, from: monoNow()}
	b.thMu.Lock()
	b.threads = append(b.threads, w)
	b.thMu.Unlock()
	return func() {
		b.thMu.Lock()
		w.to = monoNow()
		b.thMu.Unlock()
		runtime.UnlockOSThread()
	}
}

// threadWin says that thread tid made a call for socket s of host h
// between from and to (CLOCK_MONOTONIC; to is 0 while it runs).
type threadWin struct {
	tid      int
	h        *host
	s        *ksock
	what     string
	from, to time.Duration
}

// threadAt finds the run's call that thread tid was making at time at.
func (b *Backend) threadAt(tid int, at time.Duration) *threadWin {
	b.thMu.Lock()
	defer b.thMu.Unlock()
	for i := len(b.threads) - 1; i >= 0; i-- {
		w := b.threads[i]
		if w.tid == tid && at >= w.from && (w.to == 0 || at <= w.to) {
			return w
		}
	}
	return nil
}

// RunTool runs a network tool of a script's shell lines in a host's
// namespace: tc (qdisc, class, filter) or ip (tcp_metrics, route, link,
// addr, neigh, rule), whose changes stay in that namespace. Anything that
// could reach another namespace (netns, -n) is refused; the tool gets 2 s.
func (b *Backend) RunTool(hostName string, argv []string) error {
	h, err := b.host(hostName)
	if err != nil {
		return err
	}
	if len(argv) > 0 && argv[0] == "ethtool" {
		feats, dev, err := ethtoolFeatures(argv)
		if err != nil {
			return err
		}
		if err := b.start(); err != nil {
			return err
		}
		return h.work.do(func() error { return setFeatures(dev, feats) })
	}
	if err := checkTool(argv); err != nil {
		return err
	}
	if err := b.start(); err != nil {
		return err
	}
	return h.work.do(func() error {
		// The child is forked from this thread, in the host's namespace.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		var out limitedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
		}
		return nil
	})
}

// checkTool allows tc and ip commands that act on the namespace's own
// devices, routes and caches: an object and a verb of a short list, and
// no argument that names another namespace, a file or a program (netns,
// link-netns, link-netnsid, bpf, obj, exec, an option).
func checkTool(argv []string) error {
	line := strings.Join(argv, " ")
	if len(argv) < 3 {
		return fmt.Errorf("%s: not a tool command tcplab runs", line)
	}
	verbs := map[string]map[string][]string{
		"tc": {"qdisc": {"add", "replace", "change", "delete", "del", "show"},
			"class":  {"add", "replace", "change", "delete", "del", "show"},
			"filter": {"add", "replace", "change", "delete", "del", "show"}},
		"ip": {"tcp_metrics": {"flush", "show", "delete", "del"}, "tcpmetrics": {"flush", "show", "delete", "del"},
			"route": {"add", "replace", "change", "delete", "del", "show", "flush"},
			"link":  {"set", "show"},
			"addr":  {"add", "del", "delete", "show", "flush"}, "address": {"add", "del", "delete", "show", "flush"},
			"neigh": {"add", "replace", "change", "del", "delete", "show", "flush"},
			"rule":  {"add", "del", "delete", "show", "flush"}},
	}
	objs, ok := verbs[argv[0]]
	if !ok || !slices.Contains(objs[argv[1]], argv[2]) {
		return fmt.Errorf("%s: not one of the tc and ip commands run in the namespace (%s %s %s)", line, argv[0], argv[1], argv[2])
	}
	for _, a := range argv[1:] {
		l := strings.ToLower(a)
		bad := strings.HasPrefix(l, "-") || strings.ContainsAny(l, "`$") || strings.Contains(l, "/") && !isPrefix(l)
		// iproute2 takes any unambiguous prefix of a keyword: refuse
		// every word that could start one that names another
		// namespace, a file or a program (netns, link-netns(id),
		// object-file, obj, pinned, xdp..., bpf, exec, section, prog).
		for _, p := range []string{"netn", "link-netn", "ob", "pin", "xdp", "bpf", "exec", "sec", "prog", "file", "batch", "action"} {
			bad = bad || strings.HasPrefix(l, p) || strings.Contains(l, "netn") || strings.Contains(l, "bpf")
		}
		if bad {
			return fmt.Errorf("%s: %q is not run (options, other namespaces, files and programs)", line, a)
		}
	}
	if argv[0] == "ip" && argv[1] == "link" && argv[2] == "set" {
		// Only a device's own plain attributes.
		for _, a := range argv[3:] {
			if !slices.Contains([]string{"dev", "up", "down", "mtu", "txqueuelen", "qlen", "tun0", "lo"}, a) && !isNumber(a) {
				return fmt.Errorf("%s: ip link set takes only dev, up, down, mtu and txqueuelen here", line)
			}
		}
	}
	return nil
}

func isNumber(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// isPrefix tells an address prefix (10.0.0.0/8) from a path.
func isPrefix(s string) bool {
	_, err := netip.ParsePrefix(s)
	return err == nil
}

// limitedBuffer keeps the first 4 KB a tool writes.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// ethtool's offload switches tcplab sets itself (no ethtool binary is
// needed): `ethtool -K DEV tso off gso off`, with the legacy ethtool
// ioctls ETHTOOL_STSO and ETHTOOL_SGSO.
var ethtoolCmds = map[string]uint32{"tso": 0x1f, "gso": 0x24}

// ethtoolFeatures reads `ethtool -K|--features|--offload DEV FEATURE on|off...`.
func ethtoolFeatures(argv []string) (map[uint32]uint32, string, error) {
	line := strings.Join(argv, " ")
	if len(argv) < 5 || (argv[1] != "-K" && argv[1] != "--features" && argv[1] != "--offload") || (len(argv)-3)%2 != 0 {
		return nil, "", fmt.Errorf("%s: only ethtool -K DEV tso|gso on|off is run", line)
	}
	dev := argv[2]
	if dev != tunName {
		return nil, "", fmt.Errorf("%s: only %s, the device of the stack under test", line, tunName)
	}
	feats := map[uint32]uint32{}
	for i := 3; i+1 < len(argv); i += 2 {
		cmd, ok := ethtoolCmds[argv[i]]
		if !ok || (argv[i+1] != "on" && argv[i+1] != "off") {
			return nil, "", fmt.Errorf("%s: only tso and gso, on or off", line)
		}
		feats[cmd] = 0
		if argv[i+1] == "on" {
			feats[cmd] = 1
		}
	}
	return feats, dev, nil
}

// setFeatures switches offloads of a device of the calling thread's
// namespace.
func setFeatures(dev string, feats map[uint32]uint32) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for cmd, on := range feats {
		// On the heap, kept alive past the call: the request holds its
		// address as a plain integer.
		val := &struct{ cmd, data uint32 }{cmd, on}
		ifr := &struct {
			name [unix.IFNAMSIZ]byte
			data uintptr
			_    [16]byte
		}{}
		copy(ifr.name[:], dev)
		ifr.data = uintptr(unsafe.Pointer(val))
		_, _, en := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
		runtime.KeepAlive(val)
		if en != 0 {
			return fmt.Errorf("ethtool -K %s: %w", dev, en)
		}
	}
	return nil
}
