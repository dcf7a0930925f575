package nstest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Churn describes a bounded load of short loopback connections made inside
// one network namespace: each client connects to 127.0.0.1, closes at once
// (so the client's end goes to TIME_WAIT), and the server closes when it
// reads the end of the stream. Every connection makes ten state changes on
// the tracepoint, five per end.
type Churn struct {
	NS       netns.NsHandle // the namespace the sockets are made in
	Rate     int            // connections per second; 0 is as fast as the threads go
	Duration time.Duration  // how long to make connections
	// Ports are the server's ports on 127.0.0.1, used in turn. Few ports
	// make the kernel reuse TIME_WAIT 4-tuples (tcp_tw_reuse) soon.
	Ports     []uint16
	Clients   int // client threads (default 4)
	Acceptors int // accepting threads per port (default 2)
	// Hold, when set, keeps the threads (and the listeners) until it is
	// closed, after Done has had the result: a watcher can still tell
	// which namespace a thread is in.
	Hold <-chan struct{}
	Done func(ChurnResult, error)
}

// ChurnResult is what a Churn did.
type ChurnResult struct {
	Connected int            // connections made and closed by the client
	Failed    int            // connect() calls that failed
	Errors    map[string]int // failures by error
	Accepted  int            // connections the server accepted and closed
	Elapsed   time.Duration  // from the first connect() to the last client close
}

// Rate is the connections per second the churn reached.
func (r ChurnResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Connected) / r.Elapsed.Seconds()
}

// inNS runs f on an OS thread of its own inside ns; the thread is dropped
// afterwards.
func inNS(ns netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with f
		if err := netns.Set(ns); err != nil {
			done <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		done <- f()
	}()
	return <-done
}

// Run makes the connections. It makes at most Rate x Duration of them
// (or 1,000,000 when Rate is 0), stops at Duration plus 5 s whatever
// happened, and stops early when ctx ends. The listeners are closed and
// every thread has ended when it returns.
func (c Churn) Run(ctx context.Context) (ChurnResult, error) {
	if c.Duration <= 0 || c.Rate < 0 || len(c.Ports) == 0 {
		return ChurnResult{}, errors.New("churn: needs a duration, a rate that is not negative and a port")
	}
	clients, acceptors := c.Clients, c.Acceptors
	if clients <= 0 {
		clients = 4
	}
	if acceptors <= 0 {
		acceptors = 2
	}
	max := int64(1_000_000)
	var period time.Duration
	if c.Rate > 0 {
		max = int64(float64(c.Rate) * c.Duration.Seconds())
		period = time.Second / time.Duration(c.Rate)
	}

	// Listeners, inside the namespace. A receive timeout makes blocked
	// accept() calls come back to see the end.
	var lns []int
	closeAll := func() {
		for _, fd := range lns {
			unix.Close(fd)
		}
	}
	err := inNS(c.NS, func() error {
		for _, p := range c.Ports {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			lns = append(lns, fd)
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(p), Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				return fmt.Errorf("bind 127.0.0.1:%d: %w", p, err)
			}
			if err := unix.Listen(fd, 4096); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		closeAll()
		return ChurnResult{}, err
	}

	var (
		next, connected, failed, accepted atomic.Int64
		stopAccept                        atomic.Bool
		mu                                sync.Mutex
		errs                              = map[string]int{}
		clientsWorking, acceptorsWorking  sync.WaitGroup
		ended                             sync.WaitGroup // every thread
		last                              atomic.Int64   // unix ns of the last client close
	)
	// A thread that has done its work stays, when asked, until Hold.
	linger := func() {
		if c.Hold != nil {
			<-c.Hold
		}
	}
	start := time.Now()
	hardStop := start.Add(c.Duration + 5*time.Second)
	for _, lfd := range lns {
		for range acceptors {
			acceptorsWorking.Add(1)
			ended.Add(1)
			go inNS(c.NS, func() error {
				defer ended.Done()
				defer linger()
				defer acceptorsWorking.Done()
				buf := make([]byte, 512)
				for !stopAccept.Load() {
					fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
					if err != nil {
						if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
							continue
						}
						return err
					}
					_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
					for { // until the client's FIN (or a timeout)
						n, err := unix.Read(fd, buf)
						if n <= 0 || err != nil {
							break
						}
					}
					unix.Close(fd)
					accepted.Add(1)
				}
				return nil
			})
		}
	}
	for range clients {
		clientsWorking.Add(1)
		ended.Add(1)
		go inNS(c.NS, func() error {
			defer ended.Done()
			defer linger()
			defer clientsWorking.Done()
			for {
				i := next.Add(1) - 1
				if i >= max || ctx.Err() != nil || time.Now().After(hardStop) {
					return nil
				}
				if c.Rate > 0 {
					due := start.Add(time.Duration(i) * period)
					if due.After(start.Add(c.Duration)) {
						return nil
					}
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				}
				port := c.Ports[int(i)%len(c.Ports)]
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				// A lost SYN must not hold a client for a minute.
				_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1)
				_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 1})
				err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}})
				unix.Close(fd)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
					if errors.Is(err, unix.EADDRNOTAVAIL) {
						time.Sleep(time.Millisecond) // no free port yet
					}
					continue
				}
				connected.Add(1)
				last.Store(time.Now().UnixNano())
			}
		})
	}
	clientsWorking.Wait()
	elapsed := time.Duration(last.Load() - start.UnixNano())
	// The servers finish the connections still open, then stop.
	for deadline := time.Now().Add(3 * time.Second); accepted.Load() < connected.Load() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	stopAccept.Store(true)
	acceptorsWorking.Wait()
	res := ChurnResult{Connected: int(connected.Load()), Failed: int(failed.Load()), Errors: errs,
		Accepted: int(accepted.Load()), Elapsed: max0(elapsed)}
	if c.Done != nil {
		c.Done(res, nil)
	}
	ended.Wait()
	closeAll()
	return res, nil
}

func max0(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

// churnEnv carries a churn to a child process (see StartChurn).
const churnEnv = "TCPLAB_CHURN"

// churnSpec is a Churn as a child reads it: the namespace by path.
type churnSpec struct {
	Netns     string
	Rate      int
	Duration  time.Duration
	Ports     []uint16
	Clients   int
	Acceptors int
}

// ChurnProc is a churn running in a child process, so that it takes CPU
// from a watcher the way another program would.
type ChurnProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	result chan churnReply
}

type churnReply struct {
	Result ChurnResult
	Err    string
}

// StartChurn runs c in a child process started as argv (this program,
// made to call ChurnChild first: a test binary with
// -test.run=^TestXxx$ naming a test that calls it, say). The child joins
// the namespace at netnsPath and makes the connections; its threads stay
// until Stop, so that a watcher can still tell their namespace.
func StartChurn(c Churn, netnsPath string, argv ...string) (*ChurnProc, error) {
	spec, err := json.Marshal(churnSpec{netnsPath, c.Rate, c.Duration, c.Ports, c.Clients, c.Acceptors})
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), churnEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &ChurnProc{cmd: cmd, stdin: stdin, result: make(chan churnReply, 1)}
	go func() {
		// The child writes one JSON line; a test binary may write more.
		sc := bufio.NewScanner(stdout)
		var r churnReply
		r.Err = "the churn process ended without a result"
		for sc.Scan() {
			var x churnReply
			if json.Unmarshal(sc.Bytes(), &x) == nil && (x.Result.Connected > 0 || x.Err != "" || x.Result.Failed > 0) {
				r = x
				break
			}
		}
		p.result <- r
		io.Copy(io.Discard, stdout)
	}()
	return p, nil
}

// Wait waits for the churn's result (the child then waits for Stop).
func (p *ChurnProc) Wait() (ChurnResult, error) {
	r := <-p.result
	if r.Err != "" {
		return r.Result, errors.New(r.Err)
	}
	return r.Result, nil
}

// Stop lets the child end and waits for it, killing it (by its PID)
// after 5 s.
func (p *ChurnProc) Stop() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// ChurnChild runs the churn a parent asked for with StartChurn, when this
// process is such a child, and exits; otherwise it returns at once.
func ChurnChild() {
	spec := os.Getenv(churnEnv)
	if spec == "" {
		return
	}
	reply := func(r churnReply) {
		b, _ := json.Marshal(r)
		os.Stdout.Write(append(b, '\n'))
	}
	var s churnSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		reply(churnReply{Err: "churn spec: " + err.Error()})
		os.Exit(2)
	}
	ns, err := netns.GetFromPath(s.Netns)
	if err != nil {
		reply(churnReply{Err: "churn namespace: " + err.Error()})
		os.Exit(2)
	}
	hold := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin) // until the parent's Stop
		close(hold)
	}()
	c := Churn{NS: ns, Rate: s.Rate, Duration: s.Duration, Ports: s.Ports, Clients: s.Clients, Acceptors: s.Acceptors,
		Hold: hold, Done: func(r ChurnResult, err error) {
			e := ""
			if err != nil {
				e = err.Error()
			}
			reply(churnReply{Result: r, Err: e})
		}}
	ctx, cancel := context.WithTimeout(context.Background(), s.Duration+time.Minute)
	defer cancel()
	c.Run(ctx)
	os.Exit(0)
}
