package trace

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

var (
	cli = netip.MustParseAddr("10.0.0.1")
	srv = netip.MustParseAddr("10.0.0.2")
)

func seg(src, dst netip.Addr, sp, dp uint16, flags wire.Flags, seq, ack wire.Seq, data string) wire.Segment {
	s := wire.Segment{Src: src, Dst: dst, SrcPort: sp, DstPort: dp, Seq: seq, Ack: ack, Flags: flags, Window: 502}
	if data != "" {
		s.Payload = []byte(data)
	}
	return s
}

func TestRelativeNumbers(t *testing.T) {
	var r Relative
	syn := seg(cli, srv, 40000, 80, wire.SYN, 1000, 0, "")
	synack := seg(srv, cli, 80, 40000, wire.SYN|wire.ACK, 5000, 1001, "")
	data := seg(cli, srv, 40000, 80, wire.PSH|wire.ACK, 1001, 5001, "Hutu")
	ack := seg(srv, cli, 80, 40000, wire.ACK, 5001, 1005, "")
	ack.Options = wire.Options{SACK: []wire.SACKBlock{{Left: 1010, Right: 1020}}}
	want := []string{
		"10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 502, length 0",
		"10.0.0.2.80 > 10.0.0.1.40000: Flags [S.], seq 5000, ack 1001, win 502, length 0",
		"10.0.0.1.40000 > 10.0.0.2.80: Flags [P.], seq 1:5, ack 1, win 502, length 4",
		"10.0.0.2.80 > 10.0.0.1.40000: Flags [.], ack 5, win 502, options [nop,nop,sack 1 {10:20}], length 0",
	}
	for i, s := range []wire.Segment{syn, synack, data, ack} {
		if got := r.Segment(&s); got != want[i] {
			t.Errorf("line %d\n got %s\nwant %s", i, got, want[i])
		}
	}
	// The caller's SACK blocks are not rewritten in place.
	if ack.Options.SACK[0].Left != 1010 {
		t.Fatal("Segment modified its argument")
	}
	abs := Relative{Absolute: true}
	if got := abs.Segment(&data); !strings.Contains(got, "seq 1001:1005, ack 5001") {
		t.Fatalf("absolute: %s", got)
	}
	// A connection whose handshake was not seen: its first ACK-bearing
	// packet prints absolute numbers and sets the bases, as in tcpdump.
	var fresh Relative
	if got := fresh.Segment(&data); !strings.Contains(got, "seq 1001:1005, ack 5001") {
		t.Fatalf("unknown flow: %s", got)
	}
	if got := fresh.Segment(&ack); !strings.Contains(got, "ack 4,") { // tcpdump is one off here too
		t.Fatalf("unknown flow, second packet: %s", got)
	}
	// A reset to a closed port answers a SYN: absolute, like tcpdump.
	var rr Relative
	rr.Segment(&syn)
	rst := seg(srv, cli, 80, 40000, wire.RST|wire.ACK, 0, 1001, "")
	if got := rr.Segment(&rst); !strings.Contains(got, "Flags [R.], seq 0, ack 1001,") {
		t.Fatalf("reset: %s", got)
	}
}

func TestPacketLine(t *testing.T) {
	var r Relative
	s := seg(cli, srv, 40000, 80, wire.SYN, 1, 0, "")
	e := Event{At: 1500 * time.Millisecond, Host: "server", Kind: KindPacket,
		Packet: &Packet{ID: 1, Dir: In, Segment: s, Verdict: VerdictDrop, Rule: "#1 server in dport 80 drop", OnWire: true}}
	got := r.PacketLine(&e)
	want := "1.500000 server   in  10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1, win 502, length 0  [drop by #1 server in dport 80 drop]"
	if got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
	e.Packet.Dir, e.Packet.OnWire, e.Packet.Crafted, e.Packet.Lost = Out, false, true, "no host has address 10.0.0.2"
	got = r.PacketLine(&e)
	for _, part := range []string{"out", "[drop before the wire by", "[crafted]", "[lost: no host"} {
		if !strings.Contains(got, part) {
			t.Fatalf("%q lacks %q", got, part)
		}
	}
}

func TestEventJSONRoundTrip(t *testing.T) {
	events := []Event{
		{Seq: 1, At: time.Second, Host: "client", Kind: KindPacket, Local: netip.MustParseAddrPort("10.0.0.1:40000"),
			Packet: &Packet{ID: 3, Dir: Out, Segment: seg(cli, srv, 40000, 80, wire.SYN|wire.ACK, 7, 8, "x"), Verdict: VerdictPass, OnWire: true}},
		{Seq: 2, Host: "server", Kind: KindState, Sock: 2, State: &StateChange{From: "LISTEN", To: "SYN_RECV", CauseKind: "segment", Cause: "rcv SYN"}},
		{Seq: 3, Host: "server", Kind: KindCall, Call: &Call{ID: 1, Op: "read", Text: "read(4, 0)", FD: 4, Ret: -1, Errno: "EAGAIN"}},
		{Seq: 4, Host: "server", Kind: KindCounter, Counter: &Counter{Name: "ListenOverflows", Delta: 1, Value: 3}},
		{Seq: 5, Host: "server", Kind: KindRule, Rule: &RuleChange{ID: 1, Added: true, Summary: "server in drop"}},
		{Seq: 6, Host: "server", Kind: KindNote, Note: "SYN cookie sent"},
	}
	b, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"kind":"packet"`) || !strings.Contains(string(b), `"flags":"SYN,ACK"`) || !strings.Contains(string(b), `"dir":"out"`) {
		t.Fatalf("JSON lacks readable names: %s", b)
	}
	var back []Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for i := range events {
		if !reflect.DeepEqual(events[i], back[i]) {
			t.Fatalf("event %d\n  %+v\n  %+v", i, events[i], back[i])
		}
		if events[i].String() == "" {
			t.Fatal("empty String")
		}
	}
	var k Kind
	if err := k.UnmarshalText([]byte("nope")); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func TestRecorderFilter(t *testing.T) {
	var r Recorder
	s := r.Sink()
	s(Event{Kind: KindNote, Note: "a"})
	s(Event{Kind: KindState, State: &StateChange{}})
	s(Event{Kind: KindNote, Note: "b"})
	if got := r.Filter(KindNote); len(got) != 2 || got[1].Note != "b" {
		t.Fatalf("filter %v", got)
	}
	if FormatTime(63*time.Second+5*time.Microsecond) != "63.000005" {
		t.Fatal(FormatTime(63*time.Second + 5*time.Microsecond))
	}
}
