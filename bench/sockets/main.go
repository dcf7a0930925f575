// Command sockets holds many loopback TCP connections open so that socket
// listing tools (ss, netstat, tcplab ss) can be timed against a large,
// known socket table.
//
// It opens -conns connections from 127.0.0.x to a few listeners on
// 127.0.0.1, accepts every one of them (so both ends are ESTABLISHED),
// optionally closes -timewait of them from the client side so that they sit
// in TIME_WAIT, prints "ready <pid>" on stdout and waits until stdin is
// closed or it gets SIGTERM or SIGINT. It then resets every connection it
// still holds (no TIME_WAIT left behind by the shutdown) and exits.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run())
}

// prog prefixes every message; workers say which one they are.
var prog = "sockets"

// fdOverhead is what a process needs besides its sockets: stdio, the
// poller, the runtime's own descriptors.
const fdOverhead = 32

type config struct {
	conns     int
	timewait  int
	listeners int
	sources   int
	parallel  int
	timeout   time.Duration
	offset    int // index of the first connection, for the source address rotation
	worker    int // 0, or which worker process this is
}

func run() int {
	var c config
	flag.IntVar(&c.conns, "conns", 20000, "TCP connections to open (each is two sockets)")
	flag.IntVar(&c.timewait, "timewait", 0, "connections to close actively from the client side, leaving that many sockets in TIME_WAIT")
	flag.IntVar(&c.listeners, "listeners", 8, "listening sockets on 127.0.0.1, kernel-chosen ports")
	flag.IntVar(&c.sources, "sources", 0, "source addresses 127.0.0.1..127.0.0.N (0: as many as the ephemeral port range needs)")
	flag.IntVar(&c.parallel, "parallel", 64, "connections being opened at once")
	flag.DurationVar(&c.timeout, "timeout", 60*time.Second, "give up if setting up takes longer")
	flag.IntVar(&c.offset, "offset", 0, "index of the first connection (set for worker processes)")
	flag.IntVar(&c.worker, "worker", 0, "run as worker `N` of a split run (set by the program itself)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", prog, flag.Args())
		return 2
	}
	if c.worker > 0 {
		prog = fmt.Sprintf("sockets[worker %d]", c.worker)
		// The parent stops workers by closing their stdin; a Ctrl-C in a
		// terminal goes to the parent, which does that.
		signal.Ignore(syscall.SIGINT)
	}
	if err := c.check(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 2
	}
	if c.sources == 0 {
		n, err := sourcesNeeded(c.conns)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
			return 1
		}
		c.sources = n
	}
	need := uint64(2*c.conns + c.listeners + fdOverhead)
	limit, err := raiseNofile(need)
	if err == nil {
		return runLocal(c)
	}
	perProc := 0
	if limit > uint64(c.listeners+fdOverhead) {
		perProc = int((limit - uint64(c.listeners+fdOverhead)) / 2)
	}
	workers := 0
	if perProc > 0 {
		workers = (c.conns + perProc - 1) / perProc
	}
	if c.worker > 0 || perProc < 1 || workers > 256 {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n%s: so spreading the %d connections over %d worker processes of at most %d each\n",
		prog, err, prog, c.conns, workers, perProc)
	return runSplit(c, workers)
}

// runLocal holds every connection in this process until stdin closes or a
// signal comes.
func runLocal(c config) int {
	h := &holder{}
	defer h.closeAll()

	// A signal during setup stops the setup too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	go func() {
		select {
		case <-sig:
			cancel()
		case <-ctx.Done():
		}
	}()

	start := time.Now()
	if err := h.setup(ctx, c); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("gave up after %s: %w", c.timeout, err)
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "%s: interrupted during setup\n", prog)
		return 1
	}
	cancel()
	// The watcher above may have taken a signal meant for the wait below:
	// re-arm with a fresh channel.
	signal.Stop(sig)
	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)

	ports := make([]string, len(h.lns))
	for i, ln := range h.lns {
		ports[i] = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	}
	fmt.Fprintf(os.Stderr, "%s: %d connections (%d sockets established, %d in TIME_WAIT) to 127.0.0.1 ports %s from %d source address(es) in %s\n",
		prog, c.conns, 2*(c.conns-c.timewait), c.timewait, strings.Join(ports, ","), c.sources, time.Since(start).Round(time.Millisecond))
	fmt.Printf("ready %d\n", os.Getpid())

	select {
	case s := <-done:
		fmt.Fprintf(os.Stderr, "%s: %s, closing\n", prog, s)
	case <-stdinClosed():
		if c.worker == 0 {
			fmt.Fprintf(os.Stderr, "%s: stdin closed, closing\n", prog)
		}
	}
	return 0
}

func stdinClosed() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(ch)
	}()
	return ch
}

// share is part i of n parts of total, as even as can be.
func share(total, n, i int) int {
	s := total / n
	if i < total%n {
		s++
	}
	return s
}

type worker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	pid    int
	exited chan error // gets the result of Wait, once
}

// runSplit runs n copies of this program, each holding a share of the
// connections, because one process may not have enough descriptors.
func runSplit(c config, n int) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	start := time.Now()
	ready := make(chan error, n)
	var ws []*worker
	stop := func() {
		for _, w := range ws {
			_ = w.stdin.Close()
		}
		for _, w := range ws {
			select {
			case <-w.exited:
			case <-time.After(30 * time.Second):
				fmt.Fprintf(os.Stderr, "%s: worker pid %d still running after 30s, killing it\n", prog, w.cmd.Process.Pid)
				_ = w.cmd.Process.Kill()
				<-w.exited
			}
		}
	}
	defer stop()

	offset := c.offset
	for i := range n {
		conns, tw := share(c.conns, n, i), share(c.timewait, n, i)
		cmd := exec.Command(exe,
			"-worker", strconv.Itoa(i+1),
			"-conns", strconv.Itoa(conns),
			"-timewait", strconv.Itoa(tw),
			"-listeners", strconv.Itoa(max(1, share(c.listeners, n, i))),
			"-sources", strconv.Itoa(c.sources),
			"-parallel", strconv.Itoa(c.parallel),
			"-timeout", c.timeout.String(),
			"-offset", strconv.Itoa(offset))
		offset += conns
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
			return 1
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
			return 1
		}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: starting worker %d: %v\n", prog, i+1, err)
			return 1
		}
		w := &worker{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid, exited: make(chan error, 1)}
		ws = append(ws, w)
		go func() {
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if want := fmt.Sprintf("ready %d\n", w.pid); line == want {
				ready <- nil
			} else {
				ready <- fmt.Errorf("worker %d (pid %d) said %q before ending its output: %v", i+1, w.pid, line, err)
			}
			_, _ = io.Copy(io.Discard, stdout)
			w.exited <- cmd.Wait()
		}()
	}

	deadline := time.After(c.timeout + 10*time.Second)
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
				return 1
			}
		case <-deadline:
			fmt.Fprintf(os.Stderr, "%s: gave up after %s waiting for the workers\n", prog, c.timeout+10*time.Second)
			return 1
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "%s: %s during setup, stopping the workers\n", prog, s)
			return 1
		}
	}
	pids := make([]string, len(ws))
	for i, w := range ws {
		pids[i] = strconv.Itoa(w.pid)
	}
	fmt.Fprintf(os.Stderr, "%s: %d connections (%d sockets established, %d in TIME_WAIT) held by worker pids %s in %s\n",
		prog, c.conns, 2*(c.conns-c.timewait), c.timewait, strings.Join(pids, ","), time.Since(start).Round(time.Millisecond))
	fmt.Printf("ready %d\n", os.Getpid())

	// Wait for stdin to close, a signal, or a worker to end on its own.
	anyExit := make(chan int, 1)
	for i, w := range ws {
		go func() {
			err := <-w.exited
			w.exited <- err // keep it for stop
			select {
			case anyExit <- i:
			default:
			}
		}()
	}
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "%s: %s, stopping the workers\n", prog, s)
	case <-stdinClosed():
		fmt.Fprintf(os.Stderr, "%s: stdin closed, stopping the workers\n", prog)
	case i := <-anyExit:
		err := <-ws[i].exited
		ws[i].exited <- err
		fmt.Fprintf(os.Stderr, "%s: worker %d (pid %d) ended on its own (%v), stopping the others\n", prog, i+1, ws[i].pid, err)
		return 1
	}
	return 0
}

func (c config) check() error {
	switch {
	case c.conns < 1:
		return fmt.Errorf("-conns %d: want at least 1", c.conns)
	case c.timewait < 0 || c.timewait > c.conns:
		return fmt.Errorf("-timewait %d: want 0..%d", c.timewait, c.conns)
	case c.listeners < 1 || c.listeners > 1024:
		return fmt.Errorf("-listeners %d: want 1..1024", c.listeners)
	case c.sources < 0 || c.sources > 254:
		return fmt.Errorf("-sources %d: want 0..254", c.sources)
	case c.parallel < 1:
		return fmt.Errorf("-parallel %d: want at least 1", c.parallel)
	case c.timeout <= 0:
		return fmt.Errorf("-timeout %s: want more than 0", c.timeout)
	}
	return nil
}

// raiseNofile makes RLIMIT_NOFILE at least need, raising the hard limit
// too if it has to (which takes CAP_SYS_RESOURCE). If it cannot, it raises
// the soft limit to the hard one and returns that with the reason.
func raiseNofile(need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	if lim.Cur >= need {
		return lim.Cur, nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err == nil {
		return need, nil
	}
	got := lim.Cur
	if lim.Cur < lim.Max {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim.Max, Max: lim.Max}) == nil {
			got = lim.Max
		}
	}
	return got, fmt.Errorf("cannot raise RLIMIT_NOFILE to %d (soft %d, hard %d): %v "+
		"(raising the hard limit takes root with CAP_SYS_RESOURCE)", need, lim.Cur, lim.Max, err)
}

// sourcesNeeded returns how many source addresses conns connections need so
// that none of them runs short of ephemeral ports. Connections to different
// listeners may share a source port, but the estimate does not count on it,
// and it leaves a quarter of the range to the rest of the system.
func sourcesNeeded(conns int) (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, fmt.Errorf("ip_local_port_range: %q", b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0, fmt.Errorf("ip_local_port_range: %q", b)
	}
	per := (hi - lo + 1) * 3 / 4
	if per < 1 {
		per = 1
	}
	n := (conns + per - 1) / per
	if n > 254 {
		return 0, fmt.Errorf("%d connections need %d source addresses with the ephemeral port range %d-%d; at most 254", conns, n, lo, hi)
	}
	return n, nil
}

// holder owns every socket the program opens.
type holder struct {
	lns []*net.TCPListener

	mu      sync.Mutex
	clients []*net.TCPConn        // nil once closed for TIME_WAIT
	servers map[pair]*net.TCPConn // accepted ends
}

// pair names a connection by its client and server addresses. The client
// address alone is not enough: connections to different listeners can share
// a source port.
type pair struct{ client, server string }

func (h *holder) setup(ctx context.Context, c config) error {
	h.clients = make([]*net.TCPConn, c.conns)
	h.servers = make(map[pair]*net.TCPConn, c.conns)
	for range c.listeners {
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		h.lns = append(h.lns, ln)
	}

	// Accept until every connection is in; anything beyond -conns (some
	// other program connecting) is closed at once.
	var accepted atomic.Int64
	allIn := make(chan struct{})
	var acceptErr firstError
	for _, ln := range h.lns {
		go func() {
			for {
				conn, err := ln.AcceptTCP()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						acceptErr.set(err)
					}
					return
				}
				h.mu.Lock()
				if len(h.servers) >= c.conns {
					h.mu.Unlock()
					_ = conn.Close()
					continue
				}
				h.servers[pair{conn.RemoteAddr().String(), conn.LocalAddr().String()}] = conn
				h.mu.Unlock()
				if accepted.Add(1) == int64(c.conns) {
					close(allIn)
				}
			}
		}()
	}

	// Dial, -parallel at a time.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range c.parallel {
		wg.Go(func() {
			for i := range next {
				conn, err := dial(ctx, c, h.lns[i%len(h.lns)], i)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i+1, err); cancel() })
					continue
				}
				h.mu.Lock()
				h.clients[i] = conn
				h.mu.Unlock()
			}
		})
	}
feed:
	for i := range c.conns {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-allIn:
	case <-ctx.Done():
		if e := acceptErr.get(); e != nil {
			return fmt.Errorf("accept: %w", e)
		}
		return fmt.Errorf("%d of %d connections accepted: %w", accepted.Load(), c.conns, ctx.Err())
	}
	return h.timeWait(ctx, c)
}

func dial(ctx context.Context, c config, ln *net.TCPListener, i int) (*net.TCPConn, error) {
	d := net.Dialer{}
	if c.sources > 1 {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+(c.offset+i)%c.sources))}
		// Choose the port at connect time, per destination, rather than
		// at bind time, which would take a port out of the range for all
		// destinations.
		d.Control = func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	conn, err := d.DialContext(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// timeWait closes the first c.timewait connections from the client side.
// Each server end reads the FIN, then closes, so the client end goes
// FIN_WAIT_2 then TIME_WAIT and the server end goes away after LAST_ACK.
func (h *holder) timeWait(ctx context.Context, c config) error {
	if c.timewait == 0 {
		return nil
	}
	next := make(chan int)
	var failed atomic.Int64
	var firstErr firstError
	var wg sync.WaitGroup
	for range c.parallel {
		wg.Go(func() {
			buf := make([]byte, 64)
			for i := range next {
				h.mu.Lock()
				cl := h.clients[i]
				h.clients[i] = nil
				key := pair{cl.LocalAddr().String(), cl.RemoteAddr().String()}
				sv := h.servers[key]
				delete(h.servers, key)
				h.mu.Unlock()
				_ = cl.Close()
				if sv == nil {
					failed.Add(1)
					firstErr.set(fmt.Errorf("no accepted end for %s->%s", key.client, key.server))
					continue
				}
				deadline, _ := ctx.Deadline()
				_ = sv.SetReadDeadline(deadline)
				for {
					_, err := sv.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						failed.Add(1)
						firstErr.set(fmt.Errorf("waiting for the FIN from %s: %w", key.client, err))
						break
					}
				}
				_ = sv.Close()
			}
		})
	}
	for i := range c.timewait {
		next <- i
	}
	close(next)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d TIME_WAIT closes failed, first: %v", n, c.timewait, firstErr.get())
	}
	return nil
}

// closeAll resets the client ends (SO_LINGER 0, so no TIME_WAIT is left
// behind), then closes the server ends and the listeners.
func (h *holder) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, cl := range h.clients {
		if cl != nil {
			_ = cl.SetLinger(0)
			_ = cl.Close()
			h.clients[i] = nil
		}
	}
	for k, sv := range h.servers {
		_ = sv.Close()
		delete(h.servers, k)
	}
	for _, ln := range h.lns {
		_ = ln.Close()
	}
	h.lns = nil
}

// firstError keeps the first error set from any goroutine.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
