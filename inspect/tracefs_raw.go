package inspect

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The binary reader reads trace_pipe_raw, one file per CPU: whole ring
// buffer pages (include/linux/ring_buffer.h, kernel/trace/ring_buffer.c),
// decoded as libtraceevent's kbuffer does. A page is a header (a u64
// timestamp and the committed length, whose top bits say events were
// missed) and records, each behind a 32-bit word of 5 bits of type and
// length and 27 bits of time since the previous record.
const (
	rbPadding    = 29      // RINGBUF_TYPE_PADDING
	rbTimeExtend = 30      // RINGBUF_TYPE_TIME_EXTEND
	rbTimeStamp  = 31      // RINGBUF_TYPE_TIME_STAMP
	rbStored     = 1 << 30 // RB_MISSED_STORED; RB_MISSED_EVENTS is bit 31
)

// rawLayout is where the fields are: in a page (header_page) and in the
// tracepoint's record (its format file).
type rawLayout struct {
	commitOff, commitSize, dataOff int
	stateID                        uint16
	// offsets of the record's fields
	flags, pid, oldstate, newstate, sport, dport, family, protocol, saddr, daddr, saddr6, daddr6, skaddr int
	// tcp:tcp_receive_reset, when the kernel has it (resetID 0 if not): a
	// change to CLOSE after it is a reset, not a timewait socket's start.
	resetID     uint16
	resetSkaddr int
}

const resetEvent = "events/tcp/tcp_receive_reset"

// rawReader holds the open per-CPU files.
type rawReader struct {
	layout  rawLayout
	resets  map[uint64]uint64 // socket address -> time of a reset it received, until its CLOSE
	fds     []int
	stats   []string // per_cpu/cpuN/stats
	lostAt  []int64  // the stats' lost counts last seen
	wakeFd  int      // an eventfd that wakes the reader
	pageLen int
}

// formatFields reads a tracefs format file: each field's offset and size
// by name, and the event's ID.
func formatFields(path string) (map[string][2]int, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	fields := map[string][2]int{}
	id := -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "ID:"); ok {
			id, _ = strconv.Atoi(strings.TrimSpace(v))
			continue
		}
		if !strings.HasPrefix(line, "field:") {
			continue
		}
		// field:__u16 sport;	offset:24;	size:2;	signed:0;
		parts := strings.Split(line, ";")
		if len(parts) < 3 {
			continue
		}
		decl := strings.Fields(strings.TrimPrefix(parts[0], "field:"))
		if len(decl) == 0 {
			continue
		}
		name := decl[len(decl)-1]
		if i := strings.IndexByte(name, '['); i >= 0 {
			name = name[:i]
		}
		name = strings.TrimLeft(name, "*")
		off, err1 := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(parts[1]), "offset:"))
		size, err2 := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(parts[2]), "size:"))
		if err1 == nil && err2 == nil {
			fields[name] = [2]int{off, size}
		}
	}
	return fields, id, nil
}

func readLayout(root string) (rawLayout, error) {
	var l rawLayout
	page, _, err := formatFields(filepath.Join(root, "events/header_page"))
	if err != nil {
		return l, err
	}
	ev, id, err := formatFields(filepath.Join(root, "events/sock/inet_sock_set_state/format"))
	if err != nil {
		return l, err
	}
	want := func(m map[string][2]int, name string, size int) (int, error) {
		f, ok := m[name]
		if !ok || size > 0 && f[1] != size {
			return 0, fmt.Errorf("tracefs format: field %s missing or of an unexpected size", name)
		}
		return f[0], nil
	}
	var errs []error
	get := func(m map[string][2]int, name string, size int) int {
		off, err := want(m, name, size)
		errs = append(errs, err)
		return off
	}
	l.commitOff = get(page, "commit", 0)
	l.commitSize = page["commit"][1]
	l.dataOff = get(page, "data", 0)
	l.flags = get(ev, "common_flags", 1)
	l.pid = get(ev, "common_pid", 4)
	l.skaddr = get(ev, "skaddr", 8)
	l.oldstate = get(ev, "oldstate", 4)
	l.newstate = get(ev, "newstate", 4)
	l.sport = get(ev, "sport", 2)
	l.dport = get(ev, "dport", 2)
	l.family = get(ev, "family", 2)
	l.protocol = get(ev, "protocol", 2)
	l.saddr = get(ev, "saddr", 4)
	l.daddr = get(ev, "daddr", 4)
	l.saddr6 = get(ev, "saddr_v6", 16)
	l.daddr6 = get(ev, "daddr_v6", 16)
	if err := errors.Join(errs...); err != nil {
		return l, err
	}
	if l.commitSize != 4 && l.commitSize != 8 || id <= 0 || id > 0xffff {
		return l, fmt.Errorf("tracefs format: unexpected page header or event id")
	}
	l.stateID = uint16(id)
	if rst, id, err := formatFields(filepath.Join(root, resetEvent, "format")); err == nil && id > 0 && id <= 0xffff {
		if f, ok := rst["skaddr"]; ok && f[1] == 8 {
			l.resetID, l.resetSkaddr = uint16(id), f[0]
		}
	}
	return l, nil
}

// openRaw opens every CPU's trace_pipe_raw of the instance at dir.
func openRaw(root, dir string) (r *rawReader, err error) {
	r = &rawReader{wakeFd: -1, pageLen: os.Getpagesize(), resets: map[uint64]uint64{}}
	if r.layout, err = readLayout(root); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "buffer_subbuf_size_kb")); err == nil {
		if kb, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && kb > 0 {
			r.pageLen = kb << 10
		}
	}
	// Wake a waiting reader once a tenth of a CPU's buffer is full, not
	// on every record: whoever needs the records sooner wakes it (see
	// WaitPast), and it looks every 100 ms anyway.
	_ = os.WriteFile(filepath.Join(dir, "buffer_percent"), []byte("10"), 0)
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	cpus, err := os.ReadDir(filepath.Join(dir, "per_cpu"))
	if err != nil {
		return nil, err
	}
	for _, c := range cpus {
		if !strings.HasPrefix(c.Name(), "cpu") {
			continue
		}
		p := filepath.Join(dir, "per_cpu", c.Name())
		fd, err := unix.Open(filepath.Join(p, "trace_pipe_raw"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", c.Name(), err)
		}
		r.fds = append(r.fds, fd)
		r.stats = append(r.stats, filepath.Join(p, "stats"))
		r.lostAt = append(r.lostAt, 0)
	}
	if len(r.fds) == 0 {
		return nil, fmt.Errorf("tracefs instance has no per-CPU buffers")
	}
	if r.wakeFd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return r, nil
}

func (r *rawReader) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(r.wakeFd, one[:])
}

func (r *rawReader) close() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = nil
	if r.wakeFd >= 0 {
		unix.Close(r.wakeFd)
		r.wakeFd = -1
	}
}

// overruns is how many records the kernel dropped since the last call:
// overwritten before they were read ("overrun", "commit overrun") or
// refused ("dropped events"), from each CPU's stats.
func (r *rawReader) overruns() int {
	total := 0
	for i, p := range r.stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var n int64
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch k {
			case "overrun", "commit overrun", "dropped events":
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
		if n > r.lostAt[i] {
			total += int(n - r.lostAt[i])
			r.lostAt[i] = n
		}
	}
	return total
}

// readRaw reads every CPU's buffer until it is empty, then waits for
// records or a wake-up. The horizon is the time a sweep started: every
// record stamped before it was committed by then and has been read.
func (t *Tracer) readRaw() {
	defer close(t.done)
	r := t.raw
	page := make([]byte, r.pageLen)
	pfds := make([]unix.PollFd, 0, len(r.fds)+1)
	for _, fd := range r.fds {
		pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	pfds = append(pfds, unix.PollFd{Fd: int32(r.wakeFd), Events: unix.POLLIN})
	var batch []StateChange
	// Each CPU's buffer is in time order: every record of a CPU stamped
	// before the last one read from it, or before a read of it began that
	// found it empty, has been read (or overwritten, and counted).
	read := make([]time.Duration, len(r.fds))
	netns := map[int]uint64{} // thread -> its namespace, for a second (PIDs are reused)
	netnsAt := MonoNow()
	for {
		t.mu.Lock()
		stopped := t.stopped
		t.mu.Unlock()
		if stopped {
			return
		}
		var drain [8]byte
		_, _ = unix.Read(r.wakeFd, drain[:])
		start := MonoNow()
		t.mu.Lock()
		room := maxQueue - len(t.queue)
		t.mu.Unlock()
		if room < maxQueue/16 {
			// What was read has not been taken: leave the rest in the
			// kernel's buffer (whose losses are counted) until it is.
			select {
			case <-t.taken:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		batch = batch[:0]
		got := false
		for c, fd := range r.fds {
			began := MonoNow()
			for len(batch)+r.pageLen/16 <= room { // a page holds at most pageLen/16 records
				n, err := unix.Read(fd, page)
				if err == unix.EINTR {
					continue
				}
				if err != nil || n <= 0 {
					if err != nil && err != unix.EAGAIN {
						t.mu.Lock()
						t.err = fmt.Errorf("read trace_pipe_raw: %w", err)
						t.mu.Unlock()
						return
					}
					read[c] = max(read[c], began)
					break
				}
				got = true
				var last time.Duration
				batch, last = r.layout.decodePage(page[:n], batch, r.resets)
				read[c] = max(read[c], last)
			}
		}
		// Records of one CPU come in time order; of several, merged here.
		slices.SortStableFunc(batch, func(a, b StateChange) int { return int(a.At - b.At) })
		if start-netnsAt > time.Second {
			clear(netns)
			netnsAt = start
		}
		for i := range batch {
			ev := &batch[i]
			if ev.Softirq || ev.PID <= 0 {
				continue
			}
			ino, ok := netns[ev.PID]
			if !ok {
				var st unix.Stat_t
				if unix.Stat("/proc/"+strconv.Itoa(ev.PID)+"/ns/net", &st) == nil {
					ino = st.Ino
				}
				netns[ev.PID] = ino
			}
			ev.NetNS = ino
		}
		t.add(batch, slices.Min(read))
		if got {
			continue // more may have come meanwhile
		}
		for i := range pfds {
			pfds[i].Revents = 0
		}
		if _, err := unix.Poll(pfds, 100); err != nil && err != unix.EINTR {
			t.mu.Lock()
			t.err = fmt.Errorf("poll trace_pipe_raw: %w", err)
			t.mu.Unlock()
			return
		}
	}
}

// decodePage appends the state changes of one ring buffer page, and
// returns the time of its last record. resets holds the sockets that
// received a reset, until their change to CLOSE (which follows on the
// same CPU).
func (l *rawLayout) decodePage(p []byte, out []StateChange, resets map[uint64]uint64) ([]StateChange, time.Duration) {
	le := binary.LittleEndian
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return out, 0 // the page is in the machine's byte order; only little-endian is read
	}
	if len(p) < l.dataOff {
		return out, 0
	}
	ts := le.Uint64(p[0:8])
	var commit uint64
	if l.commitSize == 8 {
		commit = le.Uint64(p[l.commitOff:])
	} else {
		commit = uint64(le.Uint32(p[l.commitOff:]))
	}
	// The flags are C ints added to a long: bit 31 sign-extends.
	size := int(commit & (rbStored - 1))
	data := p[l.dataOff:]
	if size < len(data) {
		data = data[:size]
	}
	for off := 0; off+4 <= len(data); {
		hdr := le.Uint32(data[off:])
		typeLen, delta := hdr&31, uint64(hdr>>5)
		arg := func() uint32 {
			if off+8 > len(data) {
				return 0
			}
			return le.Uint32(data[off+4:])
		}
		switch {
		case typeLen == rbPadding:
			n := int(arg())
			if delta == 0 || n <= 0 || off+4+n > len(data) { // the rest of the page is empty
				return out, time.Duration(ts)
			}
			off += 4 + n
		case typeLen == rbTimeExtend:
			ts += uint64(arg())<<27 | delta
			off += 8
		case typeLen == rbTimeStamp:
			abs := uint64(arg())<<27 | delta
			const msb = uint64(0xf8) << 56 // bits the record leaves out (rb_fix_abs_ts)
			if ts&msb != 0 {
				abs |= ts & msb
				if abs < ts {
					abs += 1 << 59
				}
			}
			ts = abs
			off += 8
		default:
			ts += delta
			var rec []byte
			if typeLen == 0 { // a length word, then the record
				n := int(arg())
				if n < 4 || off+4+n > len(data) {
					return out, time.Duration(ts)
				}
				rec = data[off+8 : off+4+n]
				off += 4 + n
			} else {
				n := int(typeLen) * 4
				if off+4+n > len(data) {
					return out, time.Duration(ts)
				}
				rec = data[off+4 : off+4+n]
				off += 4 + n
			}
			if l.resetID != 0 && len(rec) >= l.resetSkaddr+8 && le.Uint16(rec) == l.resetID {
				if len(resets) > 1<<12 { // resets never followed by a CLOSE
					clear(resets)
				}
				resets[le.Uint64(rec[l.resetSkaddr:])] = ts
				continue
			}
			if ev, ok := l.decode(rec, ts); ok {
				if ev.New == Close {
					if _, ok := resets[ev.Skaddr]; ok {
						ev.Reset = true
						delete(resets, ev.Skaddr)
					}
				}
				out = append(out, ev)
			}
		}
	}
	return out, time.Duration(ts)
}

// decode reads one inet_sock_set_state record.
func (l *rawLayout) decode(rec []byte, ts uint64) (StateChange, bool) {
	var ev StateChange
	le := binary.LittleEndian
	if len(rec) < l.daddr6+16 || len(rec) < 2 || le.Uint16(rec) != l.stateID {
		return ev, false
	}
	if le.Uint16(rec[l.protocol:]) != unix.IPPROTO_TCP {
		return ev, false
	}
	var src, dst netip.Addr
	switch le.Uint16(rec[l.family:]) {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(rec[l.saddr : l.saddr+4]))
		dst = netip.AddrFrom4([4]byte(rec[l.daddr : l.daddr+4]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(rec[l.saddr6 : l.saddr6+16]))
		dst = netip.AddrFrom16([16]byte(rec[l.daddr6 : l.daddr6+16]))
	default:
		return ev, false
	}
	old, nw := int32(le.Uint32(rec[l.oldstate:])), int32(le.Uint32(rec[l.newstate:]))
	if old < int32(Established) || old > int32(NewSynRecv) || nw < int32(Established) || nw > int32(NewSynRecv) {
		return ev, false
	}
	// TRACE_FLAG_HARDIRQ, _SOFTIRQ, _NMI: not in process context, so the
	// PID is whoever ran (the text format's "h", "s", "z" and the like).
	const interrupt = 0x08 | 0x10 | 0x40
	ev.At = time.Duration(ts)
	ev.PID = int(int32(le.Uint32(rec[l.pid:])))
	ev.Softirq = rec[l.flags]&interrupt != 0
	ev.Skaddr = le.Uint64(rec[l.skaddr:])
	ev.Old, ev.New = State(old), State(nw)
	ev.Local = netip.AddrPortFrom(src, le.Uint16(rec[l.sport:]))
	ev.Remote = netip.AddrPortFrom(dst, le.Uint16(rec[l.dport:]))
	return ev, true
}
