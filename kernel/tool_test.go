package kernel

import "testing"

// Only tools that act inside the namespace are run.
func TestCheckTool(t *testing.T) {
	for _, ok := range [][]string{
		{"tc", "qdisc", "add", "dev", "tun0", "root", "pfifo"},
		{"ip", "tcp_metrics", "flush", "all"},
		{"ip", "route", "show"},
		{"ip", "route", "add", "10.0.0.0/8", "dev", "tun0"},
		{"ip", "link", "set", "dev", "tun0", "mtu", "1500", "up"},
		{"tc", "qdisc", "add", "dev", "tun0", "root", "pfifo", "limit", "0"},
	} {
		if err := checkTool(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][]string{
		{"ip", "netns", "add", "x"},
		{"ip", "-n", "other", "route"},
		{"ip", "link", "set", "tun0", "netns", "1"},
		{"tc", "-n", "other", "qdisc", "show"},
		{"rm", "-rf", "/"},
		{"sh", "-c", "true"},
		{"tc"},
		{"ip", "link", "set", "tun0", "link-netns", "x"},
		{"ip", "link", "set", "tun0", "link-netnsid", "1"},
		{"ip", "link", "set", "tun0", "link-netn", "1"},
		{"tc", "filter", "add", "dev", "tun0", "bpf", "obj", "x.o"},
		{"ip", "route", "add", "1.2.3.4", "encap", "bpf", "in", "obj", "x"},
		{"tc", "qdisc", "exec", "x"},
		{"tc", "qdisc", "add", "dev", "tun0", "root", "pfifo", "/etc/x"},
		{"ip", "link", "set", "dev", "tun0", "xdp", "object", "prog.o"},
		{"ip", "link", "set", "dev", "tun0", "xdpgeneric", "ob", "prog.o"},
		{"ip", "link", "set", "dev", "tun0", "xdp", "pinned", "x"},
		{"ip", "link", "set", "dev", "tun0", "name", "eth9"},
	} {
		if err := checkTool(bad); err == nil {
			t.Errorf("%v was allowed", bad)
		}
	}
}
