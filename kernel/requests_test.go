package kernel_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/kernel"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// runScenario plays a scenario's text on the kernel and returns the
// result and the events.
func runScenario(t *testing.T, name, src string, opt kernel.Options) (*scenario.Result, []trace.Event) {
	t.Helper()
	sc, err := scenario.Parse(name, src)
	if err != nil {
		t.Fatal(err)
	}
	res, events := play(t, sc, opt)
	if res.Failed() > 0 {
		t.Fatalf("%d of %d expectations failed on the kernel:%s", res.Failed(), len(res.Checks), failures(res))
	}
	return res, events
}

func counter(res *scenario.Result, host, name string) int64 {
	for _, c := range res.Counters[host] {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}

// reqHistory is what a run says of one 4-tuple on one host: its
// segments and its state changes.
type reqHistory struct {
	synIn, rstIn []time.Duration // segments that arrived
	synAckOut    []time.Duration // SYN-ACKs that left
	states       []trace.Event
}

func histories(events []trace.Event, host string) map[[2]netip.AddrPort]*reqHistory {
	m := map[[2]netip.AddrPort]*reqHistory{}
	get := func(e *trace.Event) *reqHistory {
		k := [2]netip.AddrPort{e.Local, e.Remote}
		if m[k] == nil {
			m[k] = &reqHistory{}
		}
		return m[k]
	}
	for i := range events {
		e := &events[i]
		if e.Host != host {
			continue
		}
		switch e.Kind {
		case trace.KindPacket:
			p := e.Packet
			f := p.Segment.Flags
			switch {
			case p.Dir == trace.In && p.Verdict == trace.VerdictPass && f&(wire.SYN|wire.ACK|wire.RST) == wire.SYN:
				get(e).synIn = append(get(e).synIn, e.At)
			case p.Dir == trace.In && p.Verdict == trace.VerdictPass && f&wire.RST != 0:
				get(e).rstIn = append(get(e).rstIn, e.At)
			case p.Dir == trace.Out && f&(wire.SYN|wire.ACK) == wire.SYN|wire.ACK:
				get(e).synAckOut = append(get(e).synAckOut, e.At)
			}
		case trace.KindState:
			if e.Remote.Port() != 0 {
				get(e).states = append(get(e).states, *e)
			}
		}
	}
	return m
}

// undecided fails the test for every request the backend could not
// tell from a cookie, or found without its SYN.
func undecided(t *testing.T, events []trace.Event) {
	t.Helper()
	for _, e := range events {
		if e.Kind == trace.KindNote && (strings.Contains(e.Note, "could not be told") || strings.Contains(e.Note, "did not see arrive")) {
			t.Errorf("%s", e.String())
		}
	}
}

// path is the states of a connection as "LISTEN SYN_RECV CLOSED".
func (r *reqHistory) path() string {
	if len(r.states) == 0 {
		return ""
	}
	s := []string{r.states[0].State.From}
	for _, e := range r.states {
		s = append(s, e.State.To)
	}
	return strings.Join(s, " ")
}

// TestKernelSpoofedRequests floods a backlog-8 listener with spoofed SYNs
// (issue 15): every request sock the kernel kept must be reported, created
// when its SYN arrived and ended by its SYN-ACK timer, whether or not its
// SYN-ACKs were captured; every other SYN got a cookie.
func TestKernelSpoofedRequests(t *testing.T) {
	needKernel(t)
	src, err := os.ReadFile("testdata/spoofed-syn.tcplab")
	if err != nil {
		t.Fatal(err)
	}
	res, events := runScenario(t, "spoofed-syn", string(src), kernel.Options{})
	undecided(t, events)
	cookies := counter(res, "server", "SyncookiesSent")
	// The SYNs that got no cookie made requests: SYN queue overflow
	// never drops with tcp_syncookies=1.
	want := 150 - int(cookies)
	if want < 2 || want > 20 {
		t.Fatalf("SyncookiesSent = %d for 150 SYNs at two backlog-8 listeners", cookies)
	}
	// The scenario's checks are times at which the kernel had no request
	// left: every end is reported by then.
	var ends []time.Duration
	for _, e := range events {
		if e.Kind == trace.KindCheck && strings.Contains(e.Check.Text, "count SYN_RECV = 0") {
			ends = append(ends, e.At)
		}
	}
	if len(ends) != 2 {
		t.Fatalf("%d checks of the SYN queue's end, want 2", len(ends))
	}
	got, notes := 0, 0
	for k, r := range histories(events, "server") {
		if !strings.HasPrefix(k[1].Addr().String(), "10.0.9.") {
			continue
		}
		if len(r.synIn) != 1 {
			t.Errorf("%v: %d SYNs arrived, want 1", k, len(r.synIn))
			continue
		}
		if len(r.states) == 0 {
			continue
		}
		got++
		if p := r.path(); p != "LISTEN SYN_RECV CLOSED" {
			t.Errorf("%v: states %s, want LISTEN SYN_RECV CLOSED", k, p)
			continue
		}
		born, died := r.states[0].At, r.states[1].At
		if born != r.synIn[0] {
			t.Errorf("%v: SYN_RECV at %v, its SYN arrived at %v", k, born, r.synIn[0])
		}
		byPort, least := ends[0], 2*time.Second
		if k[0].Port() == 81 {
			// A SYN-ACK the firewall drops fails to be resent, and
			// reqsk_timer_handler then drops the request at once.
			byPort, least = ends[1], time.Second
			if len(r.synAckOut) != 0 {
				t.Errorf("%v: %d SYN-ACKs captured through a rule that drops them", k, len(r.synAckOut))
			}
		} else if len(r.synAckOut) != 2 {
			t.Errorf("%v: %d SYN-ACKs, want 2 (tcp_synack_retries 1)", k, len(r.synAckOut))
		} else if lo := r.synAckOut[1] + 2*time.Second - coarsestJiffy; died < lo {
			// Resent at 1 s, dropped 2 s later: not before the timer.
			t.Errorf("%v: CLOSED at %v, before its SYN-ACK timer (SYN-ACK resent at %v)", k, died, r.synAckOut[1])
		}
		if died < born+least-coarsestJiffy || died > byPort {
			t.Errorf("%v: CLOSED at %v, want between %v and %v", k, died, born+least, byPort)
		}
	}
	for _, e := range events {
		if e.Kind == trace.KindNote && e.Host == "server" && strings.HasPrefix(e.Note, "SYN cookie sent to 10.0.9.1:") {
			notes++
		}
	}
	if got != want {
		t.Errorf("%d requests reported, want %d (150 SYNs, %d cookies)", got, want, cookies)
	}
	// The first listener's SYN-ACKs were captured: each one that kept no
	// request was a cookie.
	if port80 := 100 - got80(events); notes != port80 {
		t.Errorf("%d cookie notes for port 80, want %d", notes, port80)
	}
}

// coarsestJiffy is the tick of the coarsest Linux kernel (HZ=100). A
// request's timer is set in whole jiffies from the jiffy in progress, so
// it may be due up to a jiffy before the time its SYN or SYN-ACK was
// captured says, never later (the timer wheel only fires late); the
// backend places an end no earlier than the timer was due.
const coarsestJiffy = 10 * time.Millisecond

// got80 counts the requests reported for port 80.
func got80(events []trace.Event) int {
	n := 0
	for _, e := range events {
		if e.Kind == trace.KindState && e.Host == "server" && e.Local.Port() == 80 && e.State.To == "SYN_RECV" {
			n++
		}
	}
	return n
}

// TestKernelShortRequests checks requests that live far shorter than the
// backend's look at the kernel (a 50 ms tick here): a spoofed SYN reset
// at once by its "client", a real handshake, and a handshake that a SYN
// cookie makes (no request at all).
func TestKernelShortRequests(t *testing.T) {
	needKernel(t)
	const src = `
host client 10.0.0.1
host server 10.0.0.2
host attacker 10.0.0.66
server: listen 80
attacker: inject [S] from 10.0.9.1:1000 to server:80 seq 0
attacker: inject [R] from 10.0.9.1:1000 to server:80 seq 1
after 300ms
expect server: counter EmbryonicRsts = 1
expect server: count SYN_RECV = 0
client: connect server:80 from 40000 as c1
until client: c1 connect returned within 1s
after 300ms
set server tcp_syncookies 2
client: connect server:80 from 40001 as c2
until client: c2 connect returned within 1s
after 300ms
expect server: counter SyncookiesSent = 1
expect server: counter SyncookiesRecv = 1
`
	_, events := runScenario(t, "short-requests", src, kernel.Options{Tick: 50 * time.Millisecond})
	undecided(t, events)
	hs := histories(events, "server")
	srv := netip.MustParseAddrPort("10.0.0.2:80")
	key := func(remote string) [2]netip.AddrPort {
		return [2]netip.AddrPort{srv, netip.MustParseAddrPort(remote)}
	}

	// Reset at once: created at its SYN, ended by the RST.
	r := hs[key("10.0.9.1:1000")]
	switch {
	case r == nil || len(r.synIn) != 1 || len(r.rstIn) != 1:
		t.Fatalf("spoofed SYN and RST not both seen arriving: %+v", r)
	case r.path() != "LISTEN SYN_RECV CLOSED":
		t.Errorf("reset request: states %q, want LISTEN SYN_RECV CLOSED", r.path())
	default:
		if r.states[0].At != r.synIn[0] || r.states[1].At != r.rstIn[0] {
			t.Errorf("reset request: SYN_RECV at %v and CLOSED at %v; its SYN arrived at %v, the RST at %v",
				r.states[0].At, r.states[1].At, r.synIn[0], r.rstIn[0])
		}
		if c := r.states[1].State.Cause; c != "rcv RST" {
			t.Errorf("reset request: ended by %q, want rcv RST", c)
		}
	}

	// A handshake: the request is created at the SYN, not at the ACK.
	r = hs[key("10.0.0.1:40000")]
	switch {
	case r == nil || len(r.synIn) != 1:
		t.Fatalf("c1's SYN not seen arriving: %+v", r)
	case r.path() != "LISTEN SYN_RECV ESTABLISHED":
		t.Errorf("c1: states %q, want LISTEN SYN_RECV ESTABLISHED", r.path())
	case r.states[0].At != r.synIn[0]:
		t.Errorf("c1: SYN_RECV at %v, its SYN arrived at %v", r.states[0].At, r.synIn[0])
	}

	// A cookie keeps nothing: the connection starts with the ACK that
	// brings the cookie back, as in the simulator.
	r = hs[key("10.0.0.1:40001")]
	switch {
	case r == nil || len(r.synIn) != 1 || len(r.synAckOut) != 1:
		t.Fatalf("c2's SYN and SYN-ACK not seen: %+v", r)
	case r.path() != "LISTEN SYN_RECV ESTABLISHED":
		t.Errorf("c2: states %q, want LISTEN SYN_RECV ESTABLISHED", r.path())
	case r.states[0].At <= r.synAckOut[0]:
		t.Errorf("c2 got a cookie, yet SYN_RECV is reported at %v, before its SYN-ACK left at %v", r.states[0].At, r.synAckOut[0])
	}
	cookie := false
	for _, e := range events {
		if e.Kind == trace.KindNote && e.Note == "SYN cookie sent to 10.0.0.1:40001 (no state kept)" {
			cookie = true
		}
	}
	if !cookie {
		t.Error("no note of c2's SYN cookie")
	}
}

// TestKernelMixedRequests interleaves spoofed SYNs and the RSTs that end
// them at a backlog-1 listener: some SYNs find room in the SYN queue and
// are reset at once, the others get cookies (which a RST leaves alone).
// With a tick longer than the whole exchange, no look at the kernel sees
// a request: the counters and the SYN queue's length must tell them
// apart, as Linux chose.
func TestKernelMixedRequests(t *testing.T) {
	needKernel(t)
	var src strings.Builder
	src.WriteString("host client 10.0.0.1\nhost server 10.0.0.2\nhost attacker 10.0.0.66\nserver: listen 80 backlog 1\n")
	for _, step := range []string{"S1", "S2", "S3", "R1", "S4", "R3", "R2", "R4", "S5", "R5"} {
		flags, seq := "[S]", 0
		if step[0] == 'R' {
			flags, seq = "[R]", 1
		}
		src.WriteString("attacker: inject " + flags + " from 10.0.9.1:100" + step[1:] + " to server:80 seq " + string(rune('0'+seq)) + "\n")
	}
	src.WriteString("after 300ms\nexpect server: count SYN_RECV = 0\n")
	for _, tick := range []time.Duration{2 * time.Millisecond, 50 * time.Millisecond} {
		t.Run(tick.String(), func(t *testing.T) {
			res, events := runScenario(t, "mixed-requests", src.String(), kernel.Options{Tick: tick})
			undecided(t, events)
			cookies := int(counter(res, "server", "SyncookiesSent"))
			resets := int(counter(res, "server", "EmbryonicRsts"))
			requests, notes := 0, 0
			for k, r := range histories(events, "server") {
				if len(r.synIn) != 1 || len(r.rstIn) != 1 {
					t.Errorf("%v: %d SYNs and %d RSTs arrived, want 1 and 1", k, len(r.synIn), len(r.rstIn))
					continue
				}
				switch p := r.path(); p {
				case "":
				case "LISTEN SYN_RECV CLOSED":
					requests++
					if r.states[0].At != r.synIn[0] || r.states[1].At != r.rstIn[0] {
						t.Errorf("%v: SYN_RECV at %v and CLOSED at %v; its SYN arrived at %v, its RST at %v",
							k, r.states[0].At, r.states[1].At, r.synIn[0], r.rstIn[0])
					}
				default:
					t.Errorf("%v: states %q", k, p)
				}
			}
			for _, e := range events {
				if e.Kind == trace.KindNote && strings.HasPrefix(e.Note, "SYN cookie sent to 10.0.9.1:") {
					notes++
				}
			}
			if requests != 5-cookies || requests != resets || notes != cookies {
				t.Errorf("%d requests and %d cookie notes reported; the server sent %d cookies for 5 SYNs and reset %d requests",
					requests, notes, cookies, resets)
			}
		})
	}
}
