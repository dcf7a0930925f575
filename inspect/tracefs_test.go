package inspect

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"
)

// Lines recorded from this machine's tracefs (Linux 6.18): the event's own
// format for IPv6 and IPv4, the raw-fields format, a marker and a loss.
func TestParseTraceLine(t *testing.T) {
	cases := []struct {
		line string
		ok   bool
		want StateChange
	}{
		{`           <...>-2614    [001] .....   259.834508: inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP sport=54299 dport=0 saddr=127.0.0.6 daddr=0.0.0.0 saddrv6=::1 daddrv6=:: oldstate=TCP_CLOSE newstate=TCP_LISTEN`,
			true, StateChange{At: 259*time.Second + 834508*time.Microsecond, PID: 2614, Old: Close, New: Listen,
				Local: netip.MustParseAddrPort("[::1]:54299"), Remote: netip.MustParseAddrPort("[::]:0")}},
		{`         python3-2614    [001] ..s2.   259.837102: inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP sport=54299 dport=45368 saddr=127.0.0.6 daddr=127.0.0.6 saddrv6=::1 daddrv6=::1 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV`,
			true, StateChange{At: 259*time.Second + 837102*time.Microsecond, PID: 2614, Softirq: true, Old: Listen, New: SynRecv,
				Local: netip.MustParseAddrPort("[::1]:54299"), Remote: netip.MustParseAddrPort("[::1]:45368")}},
		{`         python3-2614    [001] .....   259.837475: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=60990 dport=49375 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_FIN_WAIT1`,
			true, StateChange{At: 259*time.Second + 837475*time.Microsecond, PID: 2614, Old: Established, New: FinWait1,
				Local: netip.MustParseAddrPort("127.0.0.1:60990"), Remote: netip.MustParseAddrPort("127.0.0.1:49375")}},
		{`         python3-2549    [001] .....   240.540029: inet_sock_set_state: skaddr=0xffff8881052a30c0 (-131387257900864) oldstate=0x2 (2) newstate=0x1 (1) sport=0xd85c (55388) dport=0xecaf (60591) family=0x2 (2) protocol=0x6 (6) saddr=0x100007f (16777343) daddr=0x100007f (16777343) saddr_v6=<INVALID-SIZE> daddr_v6=<INVALID-SIZE>`,
			true, StateChange{At: 240*time.Second + 540029*time.Microsecond, PID: 2549, Skaddr: 0xffff8881052a30c0, Old: SynSent, New: Established,
				Local: netip.MustParseAddrPort("127.0.0.1:55388"), Remote: netip.MustParseAddrPort("127.0.0.1:60591")}},
		// The raw format cannot print IPv6 addresses: such records are skipped.
		{`         python3-2549    [001] .....   240.539866: inet_sock_set_state: skaddr=0xffff8881052a30c0 (-131387257900864) oldstate=0x7 (7) newstate=0x2 (2) sport=0x0 (0) dport=0xecaf (60591) family=0xa (10) protocol=0x6 (6) saddr=0x0 (0) daddr=0x0 (0) saddr_v6=<INVALID-SIZE> daddr_v6=<INVALID-SIZE>`, false, StateChange{}},
		{`         python3-2614    [001] .....   259.837475: inet_sock_set_state: family=AF_INET protocol=IPPROTO_SCTP sport=1 dport=2 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_FIN_WAIT1`, false, StateChange{}},
		{`         python3-2614    [001] .....   259.837475: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=1 dport=2 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_BOGUS newstate=TCP_FIN_WAIT1`, false, StateChange{}},
		{`            bash-1       [000] .....   1.000000: tracing_mark_write: tcplab`, false, StateChange{}},
		{`garbage`, false, StateChange{}},
	}
	for _, c := range cases {
		got, ok := parseTraceLine(c.line)
		if ok != c.ok {
			t.Errorf("parseTraceLine(%.60q...) ok = %v, want %v", c.line, ok, c.ok)
			continue
		}
		if ok && got != c.want {
			t.Errorf("parseTraceLine(%.60q...)\n got %+v\nwant %+v", c.line, got, c.want)
		}
	}
}

func FuzzParseTraceLine(f *testing.F) {
	f.Add(`         python3-2614    [001] ..s2.   259.837102: inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP sport=54299 dport=45368 saddr=127.0.0.6 daddr=127.0.0.6 saddrv6=::1 daddrv6=::1 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV`)
	f.Add(`         python3-2549    [001] .....   240.540029: inet_sock_set_state: skaddr=0xffff8881052a30c0 (-1) oldstate=0x2 (2) newstate=0x1 (1) sport=0xd85c (55388) dport=0xecaf (60591) family=0x2 (2) protocol=0x6 (6) saddr=0x100007f (1) daddr=0x100007f (1)`)
	f.Fuzz(func(t *testing.T, line string) {
		ev, ok := parseTraceLine(line)
		if ok && (ev.Old > NewSynRecv || ev.New > NewSynRecv || !ev.Local.IsValid() || !ev.Remote.IsValid()) {
			t.Fatalf("accepted a record with bad fields: %+v", ev)
		}
	})
}

// The binary reader reads what the text one reads: the same changes at
// the same times, IPv4 and IPv6, and the socket's address besides.
func TestTracerBinaryMatchesText(t *testing.T) {
	ns, _ := watchNS(t)
	text, err := NewTracer(fmt.Sprintf("tcplab-%d-test-text", os.Getpid()), TraceText)
	if err != nil {
		t.Fatal(err)
	}
	defer text.Close()
	bin, err := NewTracer(fmt.Sprintf("tcplab-%d-test-bin", os.Getpid()), TraceBinary)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	var ports []uint16
	for _, addr := range []string{"127.0.0.1:7011", "[::1]:7012"} {
		ln, c, s := dialIn(t, ns, addr)
		ports = append(ports, netip.MustParseAddrPort(ln.Addr().String()).Port())
		c.Close()
		time.Sleep(20 * time.Millisecond)
		s.Close()
		ln.Close()
	}
	time.Sleep(20 * time.Millisecond)
	for _, tr := range []*Tracer{text, bin} {
		if err := tr.Sync(2 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ours := func(evs []StateChange) []StateChange {
		var out []StateChange
		for _, ev := range evs {
			if slices.Contains(ports, ev.Local.Port()) || slices.Contains(ports, ev.Remote.Port()) {
				out = append(out, ev)
			}
		}
		return out
	}
	te, tl := text.Take()
	be, bl := bin.Take()
	te, be = ours(te), ours(be)
	if tl != 0 || bl != 0 {
		t.Fatalf("lost %d (text) and %d (binary) changes", tl, bl)
	}
	if len(te) < 20 || len(be) != len(te) {
		t.Fatalf("text read %d changes, binary %d; want the same, 20 or more", len(te), len(be))
	}
	for i := range te {
		b := be[i]
		if b.Skaddr == 0 {
			t.Errorf("binary record %d has no socket address", i)
		}
		// Each instance stamps its own copy of a record: a few
		// microseconds apart, and text prints microseconds only.
		if d := b.At - te[i].At; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("record %d: text at %v, binary at %v", i, te[i].At, b.At)
		}
		b.Skaddr, b.NetNS, b.At = 0, 0, te[i].At
		if b != te[i] {
			t.Errorf("record %d:\n text   %+v\n binary %+v", i, te[i], b)
		}
	}
}
