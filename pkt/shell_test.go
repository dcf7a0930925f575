package pkt

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/scenario"
)

// A shell line may hold several commands and redirections of their
// output; each command is taken alone, without them.
func TestShellLineSplitting(t *testing.T) {
	for in, want := range map[string][]string{
		"tc qdisc delete dev tun0 root 2>/dev/null ; tc qdisc add dev tun0 root pfifo limit 0": {
			"tc qdisc delete dev tun0 root", "tc qdisc add dev tun0 root pfifo limit 0"},
		`sysctl -q net.ipv4.tcp_rmem="1 2 3" && ip tcp_metrics flush all > /dev/null 2>&1`: {
			`sysctl -q net.ipv4.tcp_rmem="1 2 3"`, "ip tcp_metrics flush all"},
		`echo "a;b" > /dev/null`: {`echo "a;b"`},
	} {
		var got []string
		parts, _ := splitCommands(in)
		for _, c := range parts {
			f := dropRedirections(fields(c))
			s := ""
			for i, a := range f {
				if i > 0 {
					s += " "
				}
				s += a
			}
			got = append(got, s)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// A line that ends in a backslash goes on on the next.
func TestShellContinuation(t *testing.T) {
	got := shellLines("a \\\n  b\nc\\\r\nd\ne")
	if want := []string{"a    b", "c d", "e"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// On the engine a tc or ip line is let through only when it changes
// nothing the engine models; any other makes the script unsupported.
func TestEngineToolLines(t *testing.T) {
	for _, c := range []struct {
		line    string
		neutral bool
	}{
		{"tc qdisc add dev tun0 root pfifo", true},
		{"tc qdisc delete dev tun0 root", true},
		{"ip tcp_metrics flush all", true},
		{"tc qdisc add dev tun0 root pfifo limit 0", false},
		{"tc qdisc replace dev tun0 root fq", false},
		{"tc qdisc add dev tun0 root netem delay 10ms", false},
		{"ip route add 10.0.0.0/8 dev tun0", false},
	} {
		if got := neutralTool(fields(c.line)) != ""; got != c.neutral {
			t.Errorf("%q: neutral %v, want %v", c.line, got, c.neutral)
		}
	}
	// A FIFO that holds nothing drops every packet: the engine's
	// output_drop; a FIFO without a limit, or none, drops nothing.
	for _, c := range []struct {
		line     string
		drop, ok bool
	}{
		{"tc qdisc add dev tun0 root pfifo limit 0", true, true},
		{"tc qdisc replace dev tun0 root bfifo limit 0", true, true},
		{"tc qdisc delete dev tun0 root", false, true},
		{"tc qdisc replace dev tun0 root pfifo", false, true},
		{"tc qdisc add dev tun0 root pfifo limit 10", false, false},
		{"tc qdisc add dev tun1 root pfifo limit 0", false, false},
		{"tc qdisc add dev tun0 root netem loss 100%", false, false},
	} {
		if drop, ok := engineQdisc(fields(c.line)); drop != c.drop || ok != c.ok {
			t.Errorf("%q: drop %v ok %v, want %v %v", c.line, drop, ok, c.drop, c.ok)
		}
	}
	s, err := Parse("t.pkt", "`tc qdisc delete dev tun0 root 2>/dev/null ; tc qdisc add dev tun0 root pfifo limit 0`\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n")
	if err != nil {
		t.Fatal(err)
	}
	if res := RunEngine(s, Options{}); res.Status != Pass {
		t.Errorf("a dropping qdisc on the engine: %s %q", res.Status, res.Msg)
	}
	// A tool the engine cannot model makes the script unsupported
	// wherever it stands in its line.
	for _, line := range []string{
		"tc qdisc add dev tun0 root pfifo limit 0 ; tc qdisc add dev tun0 root pfifo limit 10",
		"tc qdisc add dev tun0 root netem delay 1ms && sysctl -q net.ipv4.tcp_sack=0",
	} {
		s, err := Parse("t.pkt", "`"+line+"`\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n")
		if err != nil {
			t.Fatal(err)
		}
		if res := RunEngine(s, Options{}); res.Status != Unsupported {
			t.Errorf("%q on the engine: %s %q", line, res.Status, res.Msg)
		}
	}
	// ethtool switches the engine's TSO packets.
	if on, ok := engineTSO(fields("ethtool -K tun0 tso off gso off")); !ok || on {
		t.Errorf("tso off gso off: on %v ok %v", on, ok)
	}
	if _, ok := engineTSO(fields("ethtool -K tun0 gro off")); ok {
		t.Errorf("gro is not modelled")
	}
	// After a failing command, && runs nothing more.
	_, ands := splitCommands("a && b ; c")
	if !slices.Equal(ands, []bool{true, false}) {
		t.Errorf("separators %v", ands)
	}
}

// With NoFiles (a script from a web page), a line naming a file reads
// nothing.
func TestNoFiles(t *testing.T) {
	s, err := Parse("t.pkt", "`./settings.sh`\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n")
	if err != nil {
		t.Fatal(err)
	}
	res := RunEngine(s, Options{Dir: "testdata", NoFiles: true})
	if len(res.Ignored) != 1 || !strings.Contains(res.Ignored[0], "files are not read here") {
		t.Errorf("ignored %q", res.Ignored)
	}
	res = RunEngine(s, Options{Dir: "testdata"})
	for _, i := range res.Ignored {
		if strings.Contains(i, "files are not read") {
			t.Errorf("read with files allowed: %q", res.Ignored)
		}
	}
}

// toolSim is the simulator with tools that fail when their line says so:
// the kernel's way with tc and ip, without a kernel.
type toolSim struct {
	*scenario.SimBackend
	ran []string
}

func (b *toolSim) RunTool(host string, argv []string) error {
	b.ran = append(b.ran, strings.Join(argv, " "))
	if slices.Contains(argv, "bad") {
		return errors.New("exit status 1")
	}
	return nil
}

// On the kernel a line is a shell list: after && only if the command
// before succeeded, after ; always, and the line fails with its last
// command; a failed line makes the script unsupported.
func TestToolLineStatus(t *testing.T) {
	for _, c := range []struct {
		line string
		ran  int
		ok   bool
	}{
		{"tc qdisc del dev tun0 root bad ; tc qdisc add dev tun0 root pfifo", 2, true},
		{"tc qdisc add dev tun0 root bad && tc qdisc add dev tun0 root pfifo", 1, false},
		{"tc qdisc add dev tun0 root bad && ip route show ; ip route show", 2, true},
		{"ip route show ; tc qdisc add dev tun0 root bad", 2, false},
	} {
		s, err := Parse("t.pkt", "`"+c.line+"`\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n")
		if err != nil {
			t.Fatal(err)
		}
		b := &toolSim{SimBackend: scenario.NewSim(1)}
		res := Run(s, b, Options{})
		if len(b.ran) != c.ran || (res.Status == Unsupported) == c.ok {
			t.Errorf("%q: ran %q, %s %q", c.line, b.ran, res.Status, res.Msg)
		}
	}
}

// On the engine, `ethtool -K tun0 tso off gso off` turns its TSO packets
// off: MSS-sized segments again.
func TestEngineEthtoolTSO(t *testing.T) {
	src := "--strict_segments\n`ethtool -K tun0 tso off gso off`\n" +
		"0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n+0 listen(3, 1) = 0\n" +
		"+0 < S 0:0(0) win 29200 <mss 1000,sackOK,nop,nop,nop,wscale 6>\n" +
		"+0 > S. 0:0(0) ack 1 <mss 1460,nop,nop,sackOK,nop,wscale 7>\n" +
		"+.1 < . 1:1(0) ack 1 win 1000\n+0 accept(3, ..., ...) = 4\n+0 write(4, ..., 2000) = 2000\n" +
		"+0 > . 1:1001(1000) ack 1\n+0 > P. 1001:2001(1000) ack 1\n"
	s, err := Parse("t.pkt", src)
	if err != nil {
		t.Fatal(err)
	}
	if res := RunEngine(s, Options{}); res.Status != Pass {
		t.Errorf("TSO off: %s", res.Error())
	}
	s, _ = Parse("t.pkt", strings.Replace(src, "`ethtool -K tun0 tso off gso off`\n", "", 1))
	if res := RunEngine(s, Options{}); res.Status != Fail {
		t.Errorf("TSO on: %s, want a 2000-byte packet where the script has 1000", res.Status)
	}
}
