package full

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/tcplab/tcplab/internal/cli"
	"github.com/tcplab/tcplab/internal/clitest"
	"github.com/tcplab/tcplab/kernel"
)

// rootState is what a kernel run must leave as it found it in the root
// namespace: its links and its nftables tables.
func rootState(t *testing.T) string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		names = append(names, "nft:"+tb.Name)
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

// leftoversOf lists what the process pid still has.
func leftoversOf(t *testing.T, pid int) []kernel.Leftover {
	t.Helper()
	ls, err := kernel.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	var out []kernel.Leftover
	for _, l := range ls {
		if l.PID == pid {
			out = append(out, l)
		}
	}
	return out
}

// signalAndWait sends sig to cmd and waits for it to exit.
func signalAndWait(t *testing.T, cmd *exec.Cmd, sig syscall.Signal, limit time.Duration, out *bytes.Buffer) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	clitest.WaitExit(t, cmd, limit, out)
}

// buildTcplab builds tcplab and tcplab-full side by side and returns
// tcplab's path: what needs the full build, tcplab hands over to it (the
// same process, by execve).
func buildTcplab(t *testing.T) string {
	t.Helper()
	return filepath.Join(clitest.Build(t, "../../cmd/", "tcplab", "tcplab-full"), "tcplab")
}

// checkClean fails the test if process pid left a lab behind or the root
// namespace is not as before.
func checkClean(t *testing.T, what string, pid int, before string) {
	t.Helper()
	if left := leftoversOf(t, pid); len(left) > 0 {
		t.Errorf("%s: left behind %v", what, left)
	}
	if after := rootState(t); after != before {
		t.Errorf("%s: the root namespace changed:\nbefore %s\nafter  %s", what, before, after)
	}
}

// startRun starts `tcplab run --kernel NAME` and waits until its lab
// exists.
func startRun(t *testing.T, name string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	return startTcplab(t, "run", "--kernel", name)
}

// startTcplab starts the command built from this package with args and
// waits until it has made a lab.
func startTcplab(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	bin := buildTcplab(t)
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(leftoversOf(t, cmd.Process.Pid)) < 3 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the run made no lab within 10s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // into the scenario's waiting
	return cmd, &out
}

func TestKernelRunInterruptedCleansUp(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	before := rootState(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		// The report goes through a symlink, which must stay a link to
		// an untouched file.
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "report.html"), []byte("before"), 0o644)
		link := filepath.Join(dir, "link.html")
		os.Symlink("report.html", link)
		cmd, out := startTcplab(t, "run", "--kernel", "time-wait", "--html", link)
		signalAndWait(t, cmd, sig, 10*time.Second, out)
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("%v: exit code %d, want 2\n%s", sig, code, out.String())
		}
		// What the run saw before the signal is printed, then why it stopped.
		for _, want := range []string{"interrupted by " + sig.String(), "Flags [S]", "ESTABLISHED", "the run stopped here"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: output lacks %q:\n%s", sig, want, out.String())
			}
		}
		if li, err := os.Lstat(link); err != nil || li.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%v: the --html symlink is gone or replaced", sig)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "report.html")); string(b) != "before" {
			t.Errorf("%v: the link's target now holds %.40q", sig, b)
		}
		if got := clitest.Names(t, dir); got != "link.html report.html" {
			t.Errorf("%v: the directory holds %q", sig, got)
		}
		checkClean(t, sig.String(), cmd.Process.Pid, before)
	}
}

func TestKernelLabCleanAfterKill(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	before := rootState(t)
	cmd, _ := startRun(t, "time-wait")
	pid := cmd.Process.Pid
	cmd.Process.Kill()
	cmd.Wait()
	left := leftoversOf(t, pid)
	if len(left) < 3 {
		t.Fatalf("a killed run should leave its namespaces and tracer, found %v", left)
	}
	var out bytes.Buffer
	if code := cli.Run([]string{"lab", "clean"}, &out, &out); code != 0 {
		t.Fatalf("lab clean: exit %d\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "pid "+strconv.Itoa(pid)) {
		t.Errorf("lab clean did not report the run's leftovers:\n%s", out.String())
	}
	if left := leftoversOf(t, pid); len(left) > 0 {
		t.Errorf("left after lab clean: %v", left)
	}
	for _, l := range left {
		if _, err := os.Stat(filepath.Join("/var/run/netns", l.Name)); l.Kind == "netns" && err == nil {
			t.Errorf("namespace %s is still mounted", l.Name)
		}
	}
	if after := rootState(t); after != before {
		t.Errorf("the root namespace changed:\nbefore %s\nafter  %s", before, after)
	}
}

// diff runs scenarios on both backends; handshake, rst-closed-port and
// fin-ack-direct agree with Linux in every aspect, and a user's own file
// differs only as the known-differences list says.
func TestKernelDiff(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	before := rootState(t)
	// A user's own file that reuses a 4-tuple in TIME_WAIT without
	// timestamps (the end of time-wait-bind): its known difference is a
	// behaviour, recognised whatever the scenario's name.
	src := `host client 10.0.0.1
host server 10.0.0.2
server: listen 80
set client tcp_timestamps 0
server: accept as i
client: connect server:80 from 5555 reuseaddr as i
until server: i accept returned within 1s
client: close i
server: read i
until server: i read = 0 within 1s
server: close i
until client: i state TIME_WAIT within 1s
after 1s
client: connect server:80 from 5555 reuseaddr as j
expect client: j connect = EADDRNOTAVAIL
`
	mine := filepath.Join(t.TempDir(), "my-reuse.tcplab")
	if err := os.WriteFile(mine, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := tcplab(t, "diff", "handshake", "rst-closed-port", "fin-ack-direct", "isn-prediction", mine)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			rows[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for name, want := range map[string]string{
		"handshake": "agrees -", "rst-closed-port": "agrees -",
		"fin-ack-direct": "agrees -",
		"isn-prediction": "known differences run: kernel: ",
		"my-reuse":       "known differences ",
	} {
		if !strings.HasPrefix(rows[name], want) {
			t.Errorf("%s: row %q, want it to start with %q\n%s", name, rows[name], want, out)
		}
	}
	if !strings.Contains(out, "behaviour connect-refused-after-syn-sent") {
		t.Errorf("the behaviour is not named:\n%s", out)
	}
	if !strings.Contains(out, "5 scenarios: 3 agree, 2 differ as documented, 0 differ otherwise") {
		t.Errorf("no summary:\n%s", out)
	}
	checkClean(t, "diff", os.Getpid(), before)
}

// SIGINT during `tour --kernel` stops every running scenario, starts no
// more, and leaves nothing behind.
func TestKernelTourInterruptedCleansUp(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	before := rootState(t)
	cmd, out := startTcplab(t, "tour", "--kernel", "--quick")
	signalAndWait(t, cmd, syscall.SIGINT, 20*time.Second, out)
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(out.String(), "interrupted by interrupt") {
		t.Errorf("exit code %d, want 2 and the reason:\n%s", code, out.String())
	}
	checkClean(t, "tour", cmd.Process.Pid, before)
}

// A kernel run's capture holds what its taps saw, on one interface per
// host, and tcpdump reads it.
func TestKernelPcap(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	file := filepath.Join(t.TempDir(), "handshake.pcapng")
	out, errs, code := tcplab(t, "run", "handshake", "--kernel", "--all-packets", "--pcap", file)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	// Every packet line of the run is one packet of the capture.
	lines := 0
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 3 && (f[2] == "in" || f[2] == "out") && strings.Contains(l, "Flags [") {
			lines++
		}
	}
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Skip("tcpdump is not installed")
	}
	dump, err := exec.Command(tcpdump, "-n", "-tt", "-r", file).Output()
	if err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	t.Logf("%d packet lines, tcpdump read %d packets", lines, strings.Count(string(dump), "\n"))
	if n := strings.Count(string(dump), "\n"); n != lines || n < 6 {
		t.Errorf("tcpdump read %d packets, the run printed %d packet lines (want at least the handshake's 3 at 2 taps)\n%s", n, lines, dump)
	}
}

// A kernel run prints its lines as they happen, in a pipe too: the
// handshake's lines arrive while the run still waits out its script, not
// all at the end.
func TestKernelRunStreams(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "wait.tcplab")
	src := "title a handshake, then 3 s of nothing\nhost client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80\nclient: connect server:80\nafter 3s\nclient: close\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := buildTcplab(t)
	cmd := exec.Command(bin, "run", "--kernel", file)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var firstState time.Duration
	var all bytes.Buffer
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		if firstState == 0 && strings.Contains(sc.Text(), "SYN_SENT -> ESTABLISHED") {
			firstState = time.Since(start)
		}
		all.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, all.String())
	}
	total := time.Since(start)
	if firstState == 0 || total-firstState < 2*time.Second {
		t.Fatalf("the handshake's line came at %v of %v: not streamed\n%s", firstState, total, all.String())
	}
	if !strings.Contains(all.String(), "expectations held; wall time") {
		t.Errorf("no report tail:\n%s", all.String())
	}
}

// diff agrees on an IPv6 and dual-stack scenario and on the library's
// short IPv6 variants: the simulator and Linux do the same, packet for
// packet and state for state. (time-wait-bind-ipv6 and
// accept-overflow-dual-stack take minutes of real time; they differ from
// Linux exactly as their IPv4 originals do, and agree.)
func TestKernelDiffIPv6(t *testing.T) {
	if err := kernel.Check(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("this kernel has no IPv6")
	}
	before := rootState(t)
	src := `host client fd00::1
host old 10.0.0.3
host server 10.0.0.2 fd00::2
host strict 10.0.0.5 fd00::5
server: listen 80
strict: listen 80 v6only
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: accept as conn2
old: connect server:80
until server: conn2 accept returned within 1s
old: connect strict:80 as refused
until old: refused connect returned within 1s
client: write conn "hi"
old: write conn "hello"
after 100ms
server: read conn
server: read conn2
client: close conn
old: close conn
after 100ms
server: close conn
server: close conn2
rule strict in src fd00::/64 flags SYN drop
client: connect [fd00::5]:80 nonblock as dropped
rule server in dport 81 flags SYN drop
client: connect server:81 nonblock as silent
client: inject [S] from client:7000 to server:80
after 200ms
expect client: silent state SYN_SENT
expect client: packets out [R] = 1
expect client: conn path SYN_SENT ESTABLISHED FIN_WAIT1 FIN_WAIT2 TIME_WAIT
expect server: conn path SYN_RECV ESTABLISHED CLOSE_WAIT LAST_ACK CLOSED
expect server: conn read = 2
expect old: conn path SYN_SENT ESTABLISHED FIN_WAIT1 FIN_WAIT2 TIME_WAIT
expect server: conn2 path SYN_RECV ESTABLISHED CLOSE_WAIT LAST_ACK CLOSED
expect server: conn2 read = 5
expect old: refused connect = ECONNREFUSED
expect client: dropped state SYN_SENT
expect client: packets out [S] = 4
`
	mine := filepath.Join(t.TempDir(), "dual-stack.tcplab")
	if err := os.WriteFile(mine, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := tcplab(t, "diff", mine, "handshake-ipv6", "rst-closed-port-ipv6")
	if code != 0 || !strings.Contains(out, "3 scenarios: 3 agree, 0 differ as documented, 0 differ otherwise") {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	checkClean(t, "diff", os.Getpid(), before)
}
