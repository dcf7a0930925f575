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

// ethtool is run by tcplab itself, for TSO and GSO of the TUN device only.
func TestEthtoolFeatures(t *testing.T) {
	f, dev, err := ethtoolFeatures([]string{"ethtool", "-K", "tun0", "tso", "off", "gso", "off"})
	if err != nil || dev != "tun0" || len(f) != 2 || f[0x1f] != 0 || f[0x24] != 0 {
		t.Errorf("tso off gso off: %v %q %v", f, dev, err)
	}
	for _, bad := range [][]string{
		{"ethtool", "-K", "eth0", "tso", "off"},
		{"ethtool", "-K", "tun0", "gro", "off"},
		{"ethtool", "-K", "tun0", "tso", "maybe"},
		{"ethtool", "-s", "tun0", "speed", "10"},
		{"ethtool", "-K", "tun0", "tso"},
	} {
		if _, _, err := ethtoolFeatures(bad); err == nil {
			t.Errorf("%v was allowed", bad)
		}
	}
}
