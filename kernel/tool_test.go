package kernel

import "testing"

// Only tools that act inside the namespace are run.
func TestCheckTool(t *testing.T) {
	for _, ok := range [][]string{
		{"tc", "qdisc", "add", "dev", "tun0", "root", "pfifo"},
		{"ip", "tcp_metrics", "flush", "all"},
		{"ip", "route", "show"},
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
	} {
		if err := checkTool(bad); err == nil {
			t.Errorf("%v was allowed", bad)
		}
	}
}
