package inspect

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TracefsRoot finds tracefs, mounting it at /sys/kernel/tracing when it is
// not mounted yet.
func TracefsRoot() (string, error) {
	for _, p := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(filepath.Join(p, "instances")); err == nil {
			return p, nil
		}
	}
	const p = "/sys/kernel/tracing"
	if err := unix.Mount("nodev", p, "tracefs", 0, ""); err != nil {
		return "", fmt.Errorf("tracefs is not mounted and mounting it at %s failed: %w", p, err)
	}
	if _, err := os.Stat(filepath.Join(p, "instances")); err != nil {
		return "", fmt.Errorf("tracefs at %s has no instances: %w", p, err)
	}
	return p, nil
}

const stateEvent = "events/sock/inet_sock_set_state/enable"

// RemoveTraceInstance switches an instance's event off and removes it.
func RemoveTraceInstance(name string) error {
	root, err := TracefsRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "instances", name)
	_ = os.WriteFile(filepath.Join(dir, stateEvent), []byte("0"), 0)
	var last error
	for range 50 { // rmdir fails while a reader still holds trace_pipe
		if last = unix.Rmdir(dir); last == nil || errors.Is(last, unix.ENOENT) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("remove tracefs instance %s: %w", name, last)
}

// StateChange is one inet_sock_set_state record.
type StateChange struct {
	At      time.Duration // CLOCK_MONOTONIC
	PID     int           // whoever ran when it fired: not the socket's owner
	Softirq bool          // not in process context, so PID means nothing
	Skaddr  uint64        // the socket's kernel address; 0 in the text format
	// NetNS is the inode of the network namespace the PID's thread was
	// in when the record was read (binary format, process context; 0
	// when unknown): soon after the change, but a thread may have moved
	// to another namespace even so.
	NetNS uint64
	// Reset says a change to CLOSE came of a reset the socket received
	// (binary format, where tcp:tcp_receive_reset is read too).
	Reset  bool
	Old    State
	New    State
	Local  netip.AddrPort
	Remote netip.AddrPort
}

// TraceFormat chooses how the tracer reads records.
type TraceFormat int

const (
	// TraceFields prints raw field values, the socket's address among
	// them, but cannot print IPv6 addresses: IPv4 sockets only.
	TraceFields TraceFormat = iota
	// TraceText is the event's own format: IPv4 and IPv6, no socket
	// address.
	TraceText
	// TraceBinary reads each CPU's ring buffer pages (trace_pipe_raw) and
	// decodes the records by the event's format file: IPv4, IPv6 and the
	// socket's address, and no formatting in the kernel. Text costs the
	// kernel about 2 us a record to print and this package 15 us to
	// parse: only binary keeps up with 100,000 changes a second on a
	// small machine.
	TraceBinary
)

// maxQueue bounds the records read but not yet taken (about 130 bytes
// each): the binary reader leaves the rest in the kernel's buffer until
// they are; a text reader drops them and counts them lost.
const maxQueue = 1 << 19

// Tracer reads a private tracefs instance that records only the TCP state
// tracepoint, with the monotonic clock.
type Tracer struct {
	name, dir string
	pipe      *os.File // text formats: trace_pipe
	marker    *os.File
	raw       *rawReader // TraceBinary
	reading   bool       // the binary reader has started

	mu        sync.Mutex
	queue     []StateChange
	lost      int
	queueLost int // of lost, those the queue had no room for (in all)
	err       error
	horizon   time.Duration // every record stamped before it has been read (or counted lost)
	done      chan struct{}
	progress  chan struct{} // the horizon moved
	taken     chan struct{} // the queue was taken
	written   int           // markers written
	seen      int           // markers read back
	stopped   bool
}

// NewTracer creates the tracefs instance name and starts reading it. The
// tracepoint fires for every network namespace.
func NewTracer(name string, format TraceFormat) (t *Tracer, err error) {
	root, err := TracefsRoot()
	if err != nil {
		return nil, err
	}
	t = &Tracer{name: name, dir: filepath.Join(root, "instances", name), done: make(chan struct{}), progress: make(chan struct{}, 1), taken: make(chan struct{}, 1)}
	if err := os.Mkdir(t.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create tracefs instance: %w", err)
	}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	write := func(file, v string) error {
		if err := os.WriteFile(filepath.Join(t.dir, file), []byte(v), 0); err != nil {
			return fmt.Errorf("tracefs %s: %w", file, err)
		}
		return nil
	}
	if err := write("trace_clock", "mono"); err != nil {
		return nil, err
	}
	bufKB := 2048
	if format == TraceBinary {
		// 32 MB in all, 2 to 16 MB a CPU: a second of changes at 200,000
		// a second on a small machine, for when the reader does not run.
		bufKB = min(max(32<<10/runtime.NumCPU(), 2048), 16<<10)
	}
	if err := write("buffer_size_kb", strconv.Itoa(bufKB)); err != nil {
		return nil, err
	}
	// "fields" prints every field with its raw value, the socket's
	// address included, which the default format leaves out.
	if format == TraceFields {
		if err := write("options/fields", "1"); err != nil {
			return nil, err
		}
	}
	if format == TraceBinary {
		if t.raw, err = openRaw(root, t.dir); err != nil {
			return nil, err
		}
	}
	if err := write(stateEvent, "1"); err != nil {
		return nil, err
	}
	if t.raw != nil && t.raw.layout.resetID != 0 {
		if err := write(resetEvent+"/enable", "1"); err != nil {
			return nil, err
		}
	}
	if t.marker, err = os.OpenFile(filepath.Join(t.dir, "trace_marker"), os.O_WRONLY, 0); err != nil {
		return nil, err
	}
	if format == TraceBinary {
		t.reading = true
		go t.readRaw()
		return t, nil
	}
	if t.pipe, err = os.Open(filepath.Join(t.dir, "trace_pipe")); err != nil {
		return nil, err
	}
	go t.read()
	return t, nil
}

// add queues records read, keeping the queue bounded, and moves the
// horizon.
func (t *Tracer) add(evs []StateChange, horizon time.Duration) {
	t.mu.Lock()
	if room := maxQueue - len(t.queue); len(evs) > room {
		n := len(evs) - max(room, 0)
		t.lost += n
		t.queueLost += n
		evs = evs[:max(room, 0)]
	}
	t.queue = append(t.queue, evs...)
	moved := horizon > t.horizon
	if moved {
		t.horizon = horizon
	}
	t.mu.Unlock()
	if moved {
		select {
		case t.progress <- struct{}{}:
		default:
		}
	}
}

var traceLine = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^\s*(.*)-(\d+)\s+\[\d+\]\s+(\S+)\s+(\d+)\.(\d+):\s+(\S+):\s?(.*)$`)
})

// markerLine is how a trace_marker write reads back: with the "fields"
// option tracefs cannot print its text ("UNKNOWN TYPE 5"), so markers are
// counted rather than read.
var markerLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`:\s+(tracing_mark_write:|UNKNOWN TYPE)`) })
var lostLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\[LOST (\d+) EVENTS\]`) })

func (t *Tracer) read() {
	defer close(t.done)
	sc := bufio.NewScanner(t.pipe)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := lostLine().FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			t.mu.Lock()
			t.lost += n
			t.mu.Unlock()
			continue
		}
		if markerLine().MatchString(line) {
			ev, _ := parseTraceLine(line) // its time, if the line has one
			t.mu.Lock()
			t.seen++
			stop := t.stopped && t.seen >= t.written
			t.mu.Unlock()
			t.add(nil, ev.At)
			select {
			case t.progress <- struct{}{}:
			default:
			}
			if stop {
				return
			}
			continue
		}
		ev, ok := parseTraceLine(line)
		if !ok {
			continue
		}
		t.add([]StateChange{ev}, ev.At)
	}
	t.mu.Lock()
	t.err = sc.Err()
	t.mu.Unlock()
}

func parseTraceLine(line string) (StateChange, bool) {
	var ev StateChange
	m := traceLine().FindStringSubmatch(line)
	if m == nil {
		return ev, false
	}
	ev.PID, _ = strconv.Atoi(m[2])
	flags := m[3]
	ev.Softirq = len(flags) >= 3 && flags[2] != '.'
	sec, _ := strconv.ParseInt(m[4], 10, 64)
	frac := m[5]
	for len(frac) < 9 {
		frac += "0"
	}
	ns, _ := strconv.ParseInt(frac[:9], 10, 64)
	ev.At = time.Duration(sec)*time.Second + time.Duration(ns)
	if m[6] != "inet_sock_set_state" {
		return ev, false
	}
	if !strings.Contains(m[7], "skaddr=") {
		return parseTextFields(ev, m[7])
	}
	f := map[string]uint64{}
	for _, tok := range strings.Fields(m[7]) {
		k, v, ok := strings.Cut(tok, "=")
		if !ok || !strings.HasPrefix(v, "0x") {
			continue
		}
		n, err := strconv.ParseUint(v[2:], 16, 64)
		if err == nil {
			f[k] = n
		}
	}
	if f["family"] != unix.AF_INET || f["protocol"] != unix.IPPROTO_TCP {
		return ev, false
	}
	ip := func(v uint64) netip.Addr { // saddr[4] printed as a native (little-endian) u32
		return netip.AddrFrom4([4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
	}
	ev.Skaddr = f["skaddr"]
	ev.Old, ev.New = State(f["oldstate"]), State(f["newstate"])
	ev.Local = netip.AddrPortFrom(ip(f["saddr"]), uint16(f["sport"]))
	ev.Remote = netip.AddrPortFrom(ip(f["daddr"]), uint16(f["dport"]))
	return ev, true
}

// textStates are the tracepoint's symbolic state names.
var textStates = map[string]State{}

func init() {
	for i, n := range []string{"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"} {
		textStates["TCP_"+n] = State(i + 1)
	}
}

// parseTextFields reads the event's own format: "family=AF_INET6
// protocol=IPPROTO_TCP sport=.. dport=.. saddr=.. daddr=.. saddrv6=..
// daddrv6=.. oldstate=TCP_CLOSE newstate=TCP_LISTEN".
func parseTextFields(ev StateChange, text string) (StateChange, bool) {
	f := map[string]string{}
	for _, tok := range strings.Fields(text) {
		if k, v, ok := strings.Cut(tok, "="); ok {
			f[k] = v
		}
	}
	if f["protocol"] != "IPPROTO_TCP" {
		return ev, false
	}
	sa, da := "saddr", "daddr"
	switch f["family"] {
	case "AF_INET":
	case "AF_INET6":
		sa, da = "saddrv6", "daddrv6"
	default:
		return ev, false
	}
	src, err1 := netip.ParseAddr(f[sa])
	dst, err2 := netip.ParseAddr(f[da])
	sport, err3 := strconv.ParseUint(f["sport"], 10, 16)
	dport, err4 := strconv.ParseUint(f["dport"], 10, 16)
	old, ok1 := textStates[f["oldstate"]]
	nw, ok2 := textStates[f["newstate"]]
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || !ok1 || !ok2 {
		return ev, false
	}
	ev.Old, ev.New = old, nw
	ev.Local = netip.AddrPortFrom(src, uint16(sport))
	ev.Remote = netip.AddrPortFrom(dst, uint16(dport))
	return ev, true
}

// Sync waits until every state change recorded before the call has been
// read (or counted lost), and says so with an error when that takes
// longer than timeout.
func (t *Tracer) Sync(timeout time.Duration) error {
	if !t.WaitPast(MonoNow(), timeout) {
		t.mu.Lock()
		err := t.err
		t.mu.Unlock()
		select {
		case <-t.done:
			return fmt.Errorf("trace reader stopped: %v", err)
		default:
		}
		return fmt.Errorf("trace reader %v behind after waiting %v", MonoNow()-t.Horizon(), timeout)
	}
	return nil
}

// Horizon is the CLOCK_MONOTONIC time before which every record has been
// read or counted lost.
func (t *Tracer) Horizon() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.horizon
}

// WaitPast asks the reader to catch up and waits until the horizon has
// passed at (a CLOCK_MONOTONIC time in the past), for at most timeout.
// A text reader is asked with a marker, which counts as read when it or
// any later record is (the ring buffer may have overwritten it); the
// binary reader reads every CPU's buffer when woken.
func (t *Tracer) WaitPast(at, timeout time.Duration) bool {
	if t.Horizon() >= at {
		return true
	}
	want := -1 // the marker to see, for a text reader
	if t.raw != nil {
		t.raw.wake()
	} else {
		t.mu.Lock()
		t.written++
		want = t.written
		t.mu.Unlock()
		if _, err := t.marker.WriteString("tcplab\n"); err != nil {
			return false
		}
	}
	past := func() bool {
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.horizon >= at || want > 0 && t.seen >= want
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !past() {
		select {
		case <-t.progress:
		case <-t.done:
			return past()
		case <-deadline.C:
			return false
		}
	}
	return true
}

// QueueLost is how many records the reader dropped, in all, because the
// records it had read were not taken in time (they count as lost too).
func (t *Tracer) QueueLost() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.queueLost
}

// Take returns the queued records and the count of lost ones.
func (t *Tracer) Take() ([]StateChange, int) {
	if t.raw != nil {
		if n := t.raw.overruns(); n > 0 {
			t.mu.Lock()
			t.lost += n
			t.mu.Unlock()
		}
	}
	t.mu.Lock()
	q := t.queue
	t.queue = nil
	lost := t.lost
	t.lost = 0
	t.mu.Unlock()
	select {
	case t.taken <- struct{}{}:
	default:
	}
	return q, lost
}

// Close stops reading and removes the instance.
func (t *Tracer) Close() error {
	if t.raw != nil {
		t.mu.Lock()
		t.stopped = true
		t.mu.Unlock()
		t.raw.wake()
		if t.reading {
			select {
			case <-t.done:
			case <-time.After(time.Second):
			}
		}
		t.raw.close()
	}
	if t.marker != nil {
		if t.pipe != nil {
			t.mu.Lock()
			t.stopped = true
			t.written++
			t.mu.Unlock()
			t.marker.WriteString("tcplab-stop\n")
			select {
			case <-t.done:
			case <-time.After(time.Second):
			}
		}
		t.marker.Close()
	}
	if t.pipe != nil {
		t.pipe.Close()
	}
	return RemoveTraceInstance(t.name)
}

// Err is why the reader stopped, once it has stopped on an error.
func (t *Tracer) Err() error {
	select {
	case <-t.done:
	default:
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil && !t.stopped {
		return errors.New("trace reader stopped")
	}
	return t.err
}
