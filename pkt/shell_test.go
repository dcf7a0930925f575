package pkt

import (
	"slices"
	"testing"
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
		for _, c := range splitCommands(in) {
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
