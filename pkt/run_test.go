package pkt

import (
	"strings"
	"testing"

	"github.com/tcplab/tcplab/trace"
)

// The project's own scripts, run on the engine.
func TestEngineScripts(t *testing.T) {
	for _, c := range []struct {
		file   string
		status Status
		msg    string // in the error line
	}{
		{"passive-close.pkt", Pass, ""},
		{"active-nonblock.pkt", Pass, ""},
		{"blocking-calls.pkt", Pass, ""},
		{"ack-of-unsent-data.pkt", Pass, ""},
		{"socket-queries.pkt", Pass, ""},
		{"user-timeout.pkt", Pass, ""},
		{"maxseg.pkt", Pass, ""},
		{"inq.pkt", Pass, ""},
		{"remote-isn.pkt", Pass, ""},
		{"null-buffer.pkt", Pass, ""},
		{"rwnd-limited.pkt", Pass, ""},
		{"more-calls.pkt", Pass, ""},
		{"cork.pkt", Pass, ""},
		{"congestion.pkt", Pass, ""},
		{"tso.pkt", Pass, ""},
		{"ip-fields.pkt", Unsupported, "ip-fields.pkt:14: packets with ECN codepoints (ect0) are not supported by the engine"},
		{"idle-restart.pkt", Pass, ""},
		{"gso-off.pkt", Pass, ""},
		{"fin-cwnd.pkt", Pass, ""},
		{"sndbuf.pkt", Pass, ""},
		{"output-drop.pkt", Pass, ""},
		{"fin-delayed-ack.pkt", Pass, ""},
		{"raw-calls.pkt", Unsupported, "raw-calls.pkt:14: send: flags MSG_EOR are not supported by the engine"},
		{"epoll-edge.pkt", Pass, ""},
		{"wrong-ack.pkt", Fail, "wrong-ack.pkt:12: error handling packet: live packet field tcp_ack_seq: expected: 100 (0x64) vs actual: 101 (0x65)"},
		{"late-packet.pkt", Fail, "late-packet.pkt:13: error handling packet: timing error: expected outbound packet at 0.100000 sec but happened at 0.000000 sec"},
		{"uses-notsent-lowat.pkt", Unsupported, "uses-notsent-lowat.pkt:3: socket option TCP_NOTSENT_LOWAT is not modelled by the engine yet"},
	} {
		t.Run(c.file, func(t *testing.T) {
			s, err := ParseFile("testdata/" + c.file)
			if err != nil {
				t.Fatal(err)
			}
			var events []trace.Event
			res := RunEngine(s, Options{Dir: "testdata", Seed: 1, Sink: func(e trace.Event) { events = append(events, e) }})
			if res.Status != c.status || !strings.Contains(res.Error(), c.msg) {
				t.Fatalf("%s: %s, want %s %q\n%s", c.file, res.Status, c.status, c.msg, res.Error())
			}
			if c.status == Fail && !strings.HasPrefix(res.Stack, "engine: ") {
				t.Errorf("no line of what the engine was doing: %q", res.Stack)
			}
			// The run is a trace like a scenario's: the local host's
			// states and calls, the script's packets from the remote.
			kinds := map[string]bool{}
			for _, e := range events {
				kinds[e.Host+" "+e.Kind.String()] = true
			}
			for _, k := range []string{"local call", "local state", "local packet", "remote packet"} {
				if c.status == Pass && !kinds[k] {
					t.Errorf("no %q event in the trace (%v)", k, kinds)
				}
			}
		})
	}
}

// Shell lines: sysctl settings are applied (settings.sh sets tcp_rmem,
// which the SYN-ACK's window scale shows), and the rest is listed.
func TestEngineShell(t *testing.T) {
	s, err := ParseFile("testdata/passive-close.pkt")
	if err != nil {
		t.Fatal(err)
	}
	res := RunEngine(s, Options{Dir: "testdata", Seed: 1})
	if res.Status != Pass {
		t.Fatal(res.Error())
	}
	if len(res.Ignored) != 2 || !strings.Contains(res.Ignored[0], "ip tcp_metrics flush all") ||
		!strings.Contains(res.Ignored[1], "tcp_congestion_control=cubic (the engine has one congestion control") {
		t.Errorf("ignored %q, want the ip command and the congestion control", res.Ignored)
	}
	// Without the settings, the window scale is the profile's 7.
	s.Events = s.Events[1:]
	if res := RunEngine(s, Options{Dir: "testdata", Seed: 1}); res.Status != Fail || !strings.Contains(res.Msg, "expected <wscale 9> vs actual <wscale 7>") {
		t.Errorf("without settings.sh: %s %s", res.Status, res.Msg)
	}
}

func TestArith(t *testing.T) {
	for in, want := range map[string]string{
		`x="4096 $((15*1024*1024))"`: `x="4096 15728640"`,
		`$((1+2*3-4/2))`:             `5`,
		`$((2-3))`:                   `-1`,
		`none`:                       `none`,
	} {
		if got, ok := arith(in); !ok || got != want {
			t.Errorf("arith(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{`$((a))`, `$((1/0))`, `$((1`, `$((99999999999999999999))`} {
		if _, ok := arith(bad); ok {
			t.Errorf("arith(%q) accepted", bad)
		}
	}
}

// A run stops at its event budget.
func TestEngineBudget(t *testing.T) {
	s, err := ParseFile("testdata/passive-close.pkt")
	if err != nil {
		t.Fatal(err)
	}
	res := RunEngine(s, Options{Dir: "testdata", Seed: 1, MaxEvents: 10})
	if res.Status != Fail || !strings.Contains(res.Msg, "budget of 10 events") {
		t.Fatalf("%s %s", res.Status, res.Error())
	}
}

// An absolute time before the previous event's is an error; a relative
// one counts from when the previous event happened, which may be a little
// before its script time (an outbound packet that came early within the
// tolerance), and is not.
func TestTimeGoesBackward(t *testing.T) {
	s, err := Parse("t.pkt", "0.5 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n0.4 socket(..., SOCK_STREAM, IPPROTO_TCP) = 4\n")
	if err != nil {
		t.Fatal(err)
	}
	if res := RunEngine(s, Options{}); res.Status != Fail || !strings.Contains(res.Msg, "time goes backward") {
		t.Errorf("absolute times backward: %s %q", res.Status, res.Msg)
	}
	// The SYN-ACK leaves at 0.100, the script says 0.102 (within the
	// tolerance); the next line counts from 0.100.
	s, err = Parse("t.pkt", "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n+0 listen(3, 1) = 0\n"+
		"+.1 < S 0:0(0) win 29200 <mss 1000>\n+.002 > S. 0:0(0) ack 1 <mss 1460>\n+0 < . 1:1(0) ack 1 win 257\n+0 accept(3, ..., ...) = 4\n")
	if err != nil {
		t.Fatal(err)
	}
	if res := RunEngine(s, Options{}); res.Status != Pass {
		t.Errorf("a relative time after an early packet: %s", res.Error())
	}
}
