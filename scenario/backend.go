package scenario

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tcplab/tcplab/sim"
	"github.com/tcplab/tcplab/tcp"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Backend is what a scenario runs on: the simulator, or the real kernel in
// network namespaces. The runner knows nothing else about it. Every method
// reports its events to the sink given with SetSink, in time order.
type Backend interface {
	// Name is "sim" or "kernel".
	Name() string
	SetSink(trace.Sink)
	AddHost(name string, addr netip.Addr, profile string) error
	SetProfile(host, profile string) error
	// Set changes a kernel setting by its sysctl name.
	Set(host, setting, value string) error
	// Call makes an application call now. A call that blocks returns
	// Pending; its completion arrives later as a call event with its ID.
	Call(host string, c tcp.Call) (tcp.Result, error)
	AddRule(r sim.Rule) (int, error)
	RemoveRule(id int) error
	// Inject sends a crafted segment from a host at time at (>= Now).
	Inject(host string, seg wire.Segment, at time.Duration) error
	Now() time.Duration
	// RunUntil lets time pass until t, or until stop (checked after every
	// change) returns true; it reports whether stop did.
	RunUntil(t time.Duration, stop func() bool) bool
	Snapshot(host string) ([]trace.Socket, error)
	Counters(host string) ([]trace.Counter, error)
	// Tolerance is how far a measured time may be from the expected time
	// d: zero for the deterministic simulator.
	Tolerance(d time.Duration) time.Duration
	Close() error
}

// AddrAdder is a backend whose hosts can have a second address, of the
// other family (dual-stack hosts).
type AddrAdder interface {
	AddAddr(host string, addr netip.Addr) error
}

// Burster is a backend whose calls take real time. The runner brackets
// the calls of one repeat, which the script means for one instant, with
// Burst(true) and Burst(false): the backend makes them back to back and
// reports what they did after the last one (the kernel backend would
// otherwise wait for its tracer after each, and six connects took 3.5 ms,
// more than a round trip of the lab's link).
type Burster interface {
	Burst(on bool)
}

// SimBackend runs scenarios in tcplab's simulator.
type SimBackend struct {
	n *sim.Network
}

// NewSim creates a simulator backend; the seed fixes every random choice.
func NewSim(seed uint64) *SimBackend { return &SimBackend{n: sim.New(sim.Config{Seed: seed})} }

// Network gives access to the simulated network (tests, benchmarks).
func (b *SimBackend) Network() *sim.Network { return b.n }

func (b *SimBackend) Name() string            { return "sim" }
func (b *SimBackend) SetSink(s trace.Sink)    { b.n.SetSink(s) }
func (b *SimBackend) Now() time.Duration      { return b.n.Now() }
func (b *SimBackend) Close() error            { return nil }
func (b *SimBackend) RemoveRule(id int) error { return b.n.RemoveRule(id) }
func (b *SimBackend) Tolerance(time.Duration) time.Duration {
	return 0
}

func (b *SimBackend) AddAddr(name string, addr netip.Addr) error { return b.n.AddAddr(name, addr) }

func (b *SimBackend) AddHost(name string, addr netip.Addr, profile string) error {
	p, err := tcp.ProfileByName(profileOr(profile))
	if err != nil {
		return err
	}
	_, err = b.n.AddHost(name, addr, p)
	return err
}

func profileOr(p string) string {
	if p == "" {
		return "linux"
	}
	return p
}

func (b *SimBackend) host(name string) (*sim.Host, error) {
	h := b.n.Host(name)
	if h == nil {
		return nil, fmt.Errorf("unknown host %q", name)
	}
	return h, nil
}

func (b *SimBackend) SetProfile(host, profile string) error {
	h, err := b.host(host)
	if err != nil {
		return err
	}
	p, err := tcp.ProfileByName(profileOr(profile))
	if err != nil {
		return err
	}
	h.Stack.SetProfile(p)
	return nil
}

func (b *SimBackend) Set(host, setting, value string) error {
	h, err := b.host(host)
	if err != nil {
		return err
	}
	return h.Stack.Set(setting, value)
}

func (b *SimBackend) Call(host string, c tcp.Call) (tcp.Result, error) { return b.n.Do(host, c) }

func (b *SimBackend) AddRule(r sim.Rule) (int, error) { return b.n.AddRule(r) }

func (b *SimBackend) Inject(host string, seg wire.Segment, at time.Duration) error {
	return b.n.InjectAt(at, host, seg)
}

// InjectSeries sends count segments every apart, each from the next
// source port, as one queue entry (see sim.Network.InjectSeries).
func (b *SimBackend) InjectSeries(host string, seg wire.Segment, at, every time.Duration, count int) error {
	return b.n.InjectSeries(at, every, count, host, seg)
}

// AddPeer adds a host that a program plays (sim.Network.AddPeer): it has
// no stack, and no link delay to the hosts added before it.
func (b *SimBackend) AddPeer(name string, addr netip.Addr) error {
	if _, err := b.n.AddPeer(name, addr, func(*wire.Segment) {}); err != nil {
		return err
	}
	for _, h := range b.n.Hosts() {
		if err := b.n.SetDelay(name, h.Name, 0); err != nil {
			return err
		}
	}
	return nil
}

// Halt stops the network at its next event (a run's budget).
func (b *SimBackend) Halt() { b.n.Halt() }

func (b *SimBackend) RunUntil(t time.Duration, stop func() bool) bool {
	if stop == nil {
		b.n.RunUntil(t)
		return false
	}
	return b.n.RunUntilCond(stop, t)
}

func (b *SimBackend) Snapshot(host string) ([]trace.Socket, error) { return b.n.Snapshot(host) }

func (b *SimBackend) Counters(host string) ([]trace.Counter, error) { return b.n.Counters(host) }

// Interrupt stops the simulation at its next packet or timer, from any
// goroutine (the runner calls it when the run's budget is spent or its
// context is done).
func (b *SimBackend) Interrupt(error) { b.n.Halt() }
