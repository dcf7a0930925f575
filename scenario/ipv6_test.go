package scenario

import (
	"strings"
	"testing"

	"github.com/tcplab/tcplab/trace"
)

// IPv6 and dual-stack hosts: a name resolves to IPv6 when both ends have
// it, [addr]:port forces a family, a server's listen is dual-stack on a
// host with IPv6 (IPv4 clients seen IPv4-mapped) unless v6only, and every
// line spells the addresses as tcpdump and ss do.
func TestIPv6Scenario(t *testing.T) {
	src := `host client fd00::1
host dual 10.0.0.3 fd00::3
host old 10.0.0.4
host server 10.0.0.2 fd00::2
host strict 10.0.0.5 fd00::5
server: listen 80
strict: listen 80 v6only
client: connect server:80
dual: connect server:80 as byname
dual: connect 10.0.0.2:80 as forced4
old: connect server:80
old: connect strict:80 as refused
client: connect [fd00::5]:80 as v6
after 100ms
expect client: conn state ESTABLISHED
expect dual: byname state ESTABLISHED
expect dual: forced4 state ESTABLISHED
expect old: conn state ESTABLISHED
expect old: refused connect = ECONNREFUSED
expect client: v6 state ESTABLISHED
expect client: packets out [S] = 2
`
	var events []trace.Event
	res := mustRun(t, src, Options{Sink: func(e trace.Event) { events = append(events, e) }})
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("%s: %s", c.Text, c.Seen)
		}
	}
	var rel trace.Relative
	var lines []string
	for i := range events {
		if events[i].Kind == trace.KindPacket && events[i].Packet.Dir == trace.Out {
			lines = append(lines, rel.PacketLine(&events[i]))
		}
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{
		"client   out fd00::1.", // the client's SYN in IPv6
		"> fd00::2.80: Flags [S]",
		"dual     out fd00::3.",  // by name: IPv6, both have it
		"dual     out 10.0.0.3.", // forced IPv4
		"old      out 10.0.0.4.", // IPv4 only
		"options [mss 1440,",     // IPv6's MSS
		"options [mss 1460,",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no packet line has %q:\n%s", want, all)
		}
	}
	// The server's end of old's connection is IPv4-mapped, as ss shows
	// it on Linux; dual's by-name one is IPv6.
	sockets := map[string]bool{}
	for _, e := range events {
		if e.Kind == trace.KindState && e.Host == "server" && e.State.To == "ESTABLISHED" {
			sockets[e.Local.Addr().String()+" "+e.Remote.Addr().String()] = true
		}
	}
	for _, want := range []string{"::ffff:10.0.0.2 ::ffff:10.0.0.4", "::ffff:10.0.0.2 ::ffff:10.0.0.3", "fd00::2 fd00::3", "fd00::2 fd00::1"} {
		if !sockets[want] {
			t.Errorf("no server connection %s: %v", want, sockets)
		}
	}
}

// Lines that cannot work are refused with the reason.
func TestIPv6ScenarioErrors(t *testing.T) {
	for src, want := range map[string]string{
		"host a 10.0.0.1 10.0.0.2":                               "second address of the same family",
		"host a fe80::1":                                         "not a usable host address",
		"host a ::ffff:10.0.0.1":                                 "not a usable host address",
		"host a 10.0.0.1\na: listen 80 v6only":                   "no IPv6 address",
		"host a 10.0.0.1\nhost b fd00::2\na: connect fd00::2:80": "in brackets",
		"host a 10.0.0.1 fd00::1\nhost b 10.0.0.2\na: inject [S] from [fd00::1]:1 to b:80": "from and to take one address family",
		"host a 10.0.0.1\nhost b fd00::2\nhost c fd00::3\na: inject [S] from c:1 to b:80":  "a has no IPv6 address to send",
		"host a 10.0.0.1 fd00::1\nhost b fd00::2\na: socket as s\na: connect s b:80":       "b has no IPv4 address: the socket is AF_INET",
		"host a 10.0.0.1 fd00::1\nhost b fd00::2\na: socket as s\na: listen s v6only":      "an AF_INET socket",
	} {
		_, err := Parse("t", src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", src, err, want)
		}
	}
}

// Dual-stack details: a rule naming a host matches the address it talks
// by; a `socket` line's socket connects in its family; inject resolves its
// pair in one family; a reset spoofed for a connection a dual-stack
// listener took from an IPv4 client travels in IPv4 and lands.
func TestDualStackDetails(t *testing.T) {
	src := `host client 10.0.0.1 fd00::1
host old 10.0.0.3
host attacker 10.0.0.9 fd00::9
host server 10.0.0.2 fd00::2
rule server in src client flags SYN drop
server: listen 80
old: connect server:80
after 10ms
server: accept as fromold
client: connect server:80 nonblock
client: socket as s
client: connect s server:80 nonblock
attacker: inject [S] from old:1000 to server:80
attacker: inject [R] spoofing server:fromold
after 100ms
expect client: conn state SYN_SENT
expect client: s state ESTABLISHED
expect old: conn state CLOSED
expect attacker: packets out [S] = 1
`
	res := mustRun(t, src, Options{})
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("%s: %s", c.Text, c.Seen)
		}
	}
}
