package pkt

import (
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// A script of this project's own, using every form the parser knows.
const everyForm = `--tolerance_usecs=10000
--local_ip=192.168.0.1

` + "`sysctl -q net.ipv4.tcp_timestamps=1`" + `

// A server, then a connection it accepts.
    0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
   +0 setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
   +0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0
   +0 bind(3, ..., ...) = 0
   +0 listen(3, 1) = 0
   +0...0.200 accept(3, ..., ...) = 4
  +.1 < S 0:0(0) win 32792 <mss 1000,sackOK,TS val 100 ecr 0,nop,wscale 7>
   +0 > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val 200 ecr 100,nop,wscale 8>
 +.01 < . 1:1(0) ack 1 win 257 <nop,nop,TS val 101 ecr 200>
   +0 fcntl(4, F_GETFL) = 0x2 (flags O_RDWR)
   +0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0
   +0 read(4, ..., 1000) = -1 EAGAIN (Resource temporarily unavailable)
/* a C comment
   over two lines */
   +0 < P. 1:1001(1000) ack 1 win 257
    * > . 1:1(0) ack 1001 <...>
   +0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 1000}], msg_flags=0}, 0) = 1000
   +0 write(4, "hello" " world"..., 11) = 11
 +0.1~+0.2 > P. 1:12(11) ack 1001 win 260 urg 0
   +0 poll([{fd=4, events=POLLIN|POLLOUT, revents=POLLOUT}], 1, 0) = 1
   +0 getsockopt(4, SOL_TCP, TCP_MAXSEG, [1000], [4]) = 0
   +0 < [ect0] R. 1001:1001(0) ack 12 win 0
   +0 < - 1001:1001(0) win 0
   +0 < icmp unreachable frag_needed mtu 1200 [1:12(11)]
 0.95 %{ assert tcpi_state == TCP_CLOSE, tcpi_state }%
   +1 < 4000>8080 F. 1001:1001(0) ack 12 win 257 <sack 1:2 3:4,eol>
` + "`/tmp/cleanup.sh`\n"

func TestParseEveryForm(t *testing.T) {
	s, err := Parse("every.pkt", everyForm)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Option("tolerance_usecs"); !ok || v != "10000" || len(s.Options) != 2 {
		t.Errorf("options %+v", s.Options)
	}
	var lines []string
	for i := range s.Events {
		lines = append(lines, s.Events[i].String())
	}
	want := []string{
		"`sysctl -q net.ipv4.tcp_timestamps=1`",
		"0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3",
		"+0 setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0",
		"+0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0",
		"+0 bind(3, ..., ...) = 0",
		"+0 listen(3, 1) = 0",
		"+0...0.2 accept(3, ..., ...) = 4",
		"+0.1 < S 0:0(0) win 32792 <mss 1000,sackOK,TS val 100 ecr 0,nop,wscale 7>",
		"+0 > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val 200 ecr 100,nop,wscale 8>",
		"+0.01 < . 1:1(0) ack 1 win 257 <nop,nop,TS val 101 ecr 200>",
		"+0 fcntl(4, F_GETFL) = 0x2 (flags O_RDWR)",
		"+0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0",
		"+0 read(4, ..., 1000) = -1 EAGAIN (Resource temporarily unavailable)",
		"+0 < P. 1:1001(1000) ack 1 win 257",
		"* > . 1:1(0) ack 1001 <...>",
		"+0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 1000}], msg_flags=0}, 0) = 1000",
		`+0 write(4, "hello world"..., 11) = 11`,
		"+0.1~+0.2 > P. 1:12(11) ack 1001 win 260 urg 0",
		"+0 poll([{fd=4, events=POLLIN|POLLOUT, revents=POLLOUT}], 1, 0) = 1",
		"+0 getsockopt(4, SOL_TCP, TCP_MAXSEG, [1000], [4]) = 0",
		"+0 < [ect0] R. 1001:1001(0) ack 12 win 0",
		"+0 < - 1001:1001(0) win 0",
		"+0 < icmp unreachable frag_needed mtu 1200 [1:12(11)]",
		"0.95 %{ assert tcpi_state == TCP_CLOSE, tcpi_state }%",
		"+1 < 4000>8080 F. 1001:1001(0) ack 12 win 257 <sack 1:2 3:4,eol>",
		"`/tmp/cleanup.sh`",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d events:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("event %d:\n got %s\nwant %s", i, lines[i], want[i])
		}
	}

	// A few fields in detail.
	acc := s.Events[6]
	if acc.Pos != (Pos{Line: 12, Col: 4}) || acc.Time != (Time{Kind: TimeRel}) || acc.Syscall.End != 200*time.Millisecond {
		t.Errorf("blocking accept: %+v, end %v", acc, acc.Syscall.End)
	}
	syn := s.Events[7].Packet
	if syn.Dir != Inbound || syn.Flags != wire.SYN || syn.Win != 32792 || syn.HasAck || len(syn.Options) != 5 ||
		syn.Options[2].String() != "TS val 100 ecr 0" {
		t.Errorf("SYN: %+v", syn)
	}
	if sa := s.Events[8].Packet; sa.Dir != Outbound || sa.Flags != wire.SYN|wire.ACK || !sa.HasAck || sa.Ack != 1 || sa.Win != -1 {
		t.Errorf("SYN-ACK: %+v", sa)
	}
	if rd := s.Events[12].Syscall; rd.Result.Int != -1 || rd.Errno != "EAGAIN" || rd.Note != "Resource temporarily unavailable" {
		t.Errorf("read: %+v", rd)
	}
	if d := s.Events[13].Packet; d.Seq != 1 || d.End != 1001 || d.Len != 1000 || d.Flags != wire.PSH|wire.ACK {
		t.Errorf("data: %+v", d)
	}
	if any := s.Events[14]; any.Time.Kind != TimeAny || !any.Packet.OptionsAny {
		t.Errorf("any: %+v", any)
	}
	rng := s.Events[17].Time
	if rng.Kind != TimeRelRange || rng.At != 100*time.Millisecond || rng.End != 200*time.Millisecond {
		t.Errorf("range: %+v", rng)
	}
	linger := &s.Events[3].Syscall.Args[3]
	if on := linger.Field("onoff"); on == nil || on.Int != 1 || linger.Field("linger").Int != 0 || linger.Field("nothing") != nil {
		t.Errorf("linger: %s", linger)
	}
	msg := &s.Events[15].Syscall.Args[1]
	if iov := msg.Field("msg_iov"); iov == nil || iov.Kind != ExList || iov.Elems[0].Elems[1].Int != 1000 {
		t.Errorf("msghdr: %s", msg)
	}
	if f := s.Events[20].Packet; f.ECN != "ect0" || f.Flags != wire.RST|wire.ACK {
		t.Errorf("ECN RST: %+v", f)
	}
	if f := s.Events[21].Packet; f.Flags != 0 || f.FlagText != "" {
		t.Errorf("no flags: %+v", f)
	}
	if c := s.Events[22].Packet; c.Proto != "icmp" || c.MTU != 1200 || c.Echoed == nil || c.Echoed.End != 12 {
		t.Errorf("icmp: %+v", c)
	}
	if f := s.Events[24].Packet; f.SrcPort != 4000 || f.DstPort != 8080 || len(f.Options[0].Blocks) != 2 {
		t.Errorf("ports and SACK: %+v", f)
	}
}

// Every event written back by String reads back as the same event.
func TestParseRoundTrip(t *testing.T) {
	s, err := Parse("every.pkt", everyForm)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Events {
		line := s.Events[i].String()
		s2, err := Parse("line", line)
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		if got := s2.Events[0].String(); got != line {
			t.Errorf("round trip:\n got %s\nwant %s", got, line)
		}
	}
}

func TestParseTimes(t *testing.T) {
	for _, c := range []struct {
		src  string
		want Time
	}{
		{"0 close(3) = 0", Time{Kind: TimeAbs}},
		{"1.5 close(3) = 0", Time{Kind: TimeAbs, At: 1500 * time.Millisecond}},
		{"+.000001 close(3) = 0", Time{Kind: TimeRel, At: time.Microsecond}},
		{"+0.0000019 close(3) = 0", Time{Kind: TimeRel, At: time.Microsecond}}, // truncated, as packetdrill
		{"2~2.5 > . 1:1(0)", Time{Kind: TimeAbsRange, At: 2 * time.Second, End: 2500 * time.Millisecond}},
	} {
		s, err := Parse("t.pkt", c.src)
		if err != nil {
			t.Errorf("%s: %v", c.src, err)
			continue
		}
		if got := s.Events[0].Time; got != c.want {
			t.Errorf("%s: time %+v, want %+v", c.src, got, c.want)
		}
	}
}

// Errors give the file, line and column, and say what was wrong.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"0 socket(..., SOCK_STREAM", "e.pkt:1:26: expected \",\" or \")\", found end of file"},
		{"+0 < S 0:10(5) win 100", "e.pkt:1:8: inconsistent TCP sequence numbers and payload size: 0:10(5)"},
		{"+0 < S 0:0(0) win 70000", "e.pkt:1:19: window 70000 out of range (0 to 65535)"},
		{"+0 < X 0:0(0)", "e.pkt:1:6: unknown TCP flag 'X' in \"X\""},
		{"+0 < S 0:0(0) <mss 1000,bogus>", "e.pkt:1:25: unknown TCP option \"bogus\""},
		{"* close(3) = 0", "e.pkt:1:1: event time * can only be used with outbound packets"},
		{"+1~+2 < . 1:1(0)", "e.pkt:1:1: event time range can only be used with outbound packets"},
		{"3~2 > . 1:1(0)", "e.pkt:1:1: time range is backwards"},
		{"-1 close(3) = 0", "e.pkt:1:1: negative time"},
		{"+0 close(3)", "e.pkt:1:12: expected \"=\" and the expected result"},
		{"\n\n  +0 frob", "e.pkt:3:6: expected a packet (< or >), a system call"},
		{"+0 close(3) = 0\n--late=1", "e.pkt:2:1: option --late=1 after the first event"},
		{"+0 `ls", "e.pkt:1:4: ` not closed"},
		{"+0 %{ assert 1", "e.pkt:1:4: %{ block not closed"},
		{"/* open", "e.pkt:1:1: comment not closed"},
		{"+0 close(3) = 0 \x01", "e.pkt:1:17: unexpected character '\\x01'"},
		{"+0 < S 0:0(0) <sack>", "e.pkt:1:20: expected SACK blocks"},
		{"+0 read(3, " + strings.Repeat("[", 100) + "]", "expression nested too deeply"},
		{"99999999 close(3) = 0", "e.pkt:1:1: time 99999999 out of range"},
	} {
		_, err := Parse("e.pkt", c.src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.src, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(everyForm)
	f.Add("+0 < S 0:0(0) win 1 <mss 1,sack 1:2,TS val 1 ecr 2>")
	f.Add("0 poll([{fd=3, events=POLLIN}], 1, 0) = 1 (x(y))")
	f.Fuzz(func(t *testing.T, src string) {
		s, err := Parse("f.pkt", src)
		if err != nil {
			if e, ok := err.(*Error); !ok || e.Line < 1 || e.Col < 1 {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		// What parses writes back as a script that parses the same.
		for i := range s.Events {
			line := s.Events[i].String()
			s2, err := Parse("line", line)
			if err != nil {
				t.Fatalf("%q written back as %q: %v", src, line, err)
			}
			if got := s2.Events[0].String(); got != line {
				t.Fatalf("round trip of %q: %q then %q", src, line, got)
			}
		}
	})
}

// Leading zeros are decimal, as packetdrill reads numbers (atoll).
func TestParseDecimal(t *testing.T) {
	s, err := Parse("d.pkt", "+0 < S 010:010(0) win 08")
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Events[0].Packet; p.Seq != 10 || p.Win != 8 {
		t.Errorf("seq %d win %d, want 10 and 8", p.Seq, p.Win)
	}
	if _, err := Parse("d.pkt", "+0 close("+strings.Repeat("1|", 100)+"1) = 0"); err == nil || !strings.Contains(err.Error(), "too many | operands") {
		t.Errorf("a long | chain: %v", err)
	}
}
