package cli

import (
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/inspect"
)

// ss's filter words become the filter flags' values.
func TestSSExpr(t *testing.T) {
	for _, tc := range []struct {
		args                           []string
		states, sport, dport, src, dst []string
		err                            string
	}{
		{args: []string{"state", "established", "( sport = :22 )"}, states: []string{"ESTABLISHED"}, sport: []string{"22"}},
		{args: []string{"state", "established", "(", "sport", "=", ":22", "or", "sport", "eq", ":443", ")"}, states: []string{"ESTABLISHED"}, sport: []string{"22", "443"}},
		{args: []string{"dport", ">=", ":1024", "and", "dport", "<", ":2000"}, dport: []string{"1024-1999"}},
		{args: []string{"( sport >= :1500 and sport <= :2000 )"}, sport: []string{"1500-2000"}},
		{args: []string{"sport", ":80"}, sport: []string{"80"}},
		{args: []string{"src", "10.0.0.0/8", "dst", "[::1]:8080"}, src: []string{"10.0.0.0/8"}, dst: []string{"::1"}, dport: []string{"8080"}},
		{args: []string{"src", "10.0.0.0/8", "and", "src", "10.1.0.0/16"}, src: []string{"10.1.0.0/16"}},
		{args: []string{"exclude", "listening", "exclude", "time-wait"}, states: []string{"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "CLOSED", "CLOSE_WAIT", "LAST_ACK", "CLOSING"}},
		{args: []string{"exclude", "listening", "state", "listening"}, states: []string{"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSED", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}},
		{args: []string{"sport", "=", ":22", "or", "dport", "=", ":22"}, err: "several kinds"},
		{args: []string{"( dport = :1500 and sport = :58574 ) or ( sport = :44024 and dport = :3000 )"}, err: "several kinds"},
		{args: []string{"src", "10.0.0.1:80", "or", "src", "10.0.0.2:81"}, err: "several kinds"},
		{args: []string{"sport", "=", ":22", "and", "sport", "=", ":23"}, err: "no port matches"},
		{args: []string{"src", "10.0.0.0/16", "src", "10.1.0.0/16"}, err: "cannot all hold"},
		{args: []string{"sport", "!=", ":22"}, err: "not a comparison"},
		{args: []string{"sport", "=", ":0"}, err: "1 to 65535"},
		{args: []string{"state"}, err: "needs a state"},
		{args: []string{"inode", "1"}, err: "is not understood"},
		{args: []string{"sport", ":22", "or"}, err: "no condition after it"},
		{args: []string{"exclude", "all"}, err: "every state is excluded"},
	} {
		var f filterFlags
		err := f.ssExpr(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		for _, c := range []struct {
			name      string
			got, want []string
		}{{"states", f.states, tc.states}, {"sport", f.sport, tc.sport}, {"dport", f.dport, tc.dport}, {"src", f.src, tc.src}, {"dst", f.dst, tc.dst}} {
			if !slices.Equal(c.got, c.want) {
				t.Errorf("%q: %s %q, want %q", tc.args, c.name, c.got, c.want)
			}
		}
		if _, err := f.filter(); err != nil {
			t.Errorf("%q: the flags do not make a filter: %v", tc.args, err)
		}
	}
}

// tcplab ss takes ss's combined short options and filter, and prints what
// ss prints for the same socket: the state as ss spells it, the inode and
// cookie of -e, the buffer sizes of -m.
func TestSSHabits(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	out, errs, code := tcplab(t, "ss", "-tanHem", "state", "listening", "( sport = :"+port+" )")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "LISTEN ") || !strings.Contains(lines[0], "127.0.0.1:"+port) {
		t.Fatalf("want one LISTEN line and no header:\n%s", out)
	}
	ino := regexp.MustCompile(`ino:(\d+) sk:([0-9a-f]+)`).FindStringSubmatch(lines[0])
	mem := regexp.MustCompile(`skmem:\(r\d+,rb(\d+),t\d+,tb(\d+),`).FindStringSubmatch(lines[0])
	if ino == nil || mem == nil {
		t.Fatalf("no ino/sk or skmem in %q", lines[0])
	}
	ssBin, err := exec.LookPath("ss")
	if err != nil {
		t.Skip("ss is not installed")
	}
	ref, err := exec.Command(ssBin, "-tanHem", "state", "listening", "( sport = :"+port+" )").Output()
	if err != nil {
		t.Skipf("ss: %v", err)
	}
	want := string(ref)
	for _, field := range []string{"ino:" + ino[1], "sk:" + ino[2], ",rb" + mem[1] + ",", ",tb" + mem[2] + ","} {
		if !strings.Contains(want, field) {
			t.Errorf("tcplab ss shows %s, ss shows:\n%s", field, want)
		}
	}
	// --json carries what -e and -m show.
	js, _, _ := tcplab(t, "ss", "--json", "-e", "-m", "state", "listening", "sport", "= :"+port)
	if !strings.Contains(js, `"cookie":`) || !strings.Contains(js, `"skmem": {`) || !strings.Contains(js, `"rcvbuf":`) {
		t.Errorf("--json -e -m:\n%s", js)
	}
	// One spelling of states everywhere, ss's own: a connection is ESTAB.
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	out, _, _ = tcplab(t, "ss", "-tn", "dst", "127.0.0.1:"+port)
	if !strings.Contains(out, "ESTAB ") || !strings.Contains(out, local) || strings.Contains(out, "ESTABLISHED") {
		t.Errorf("connected socket:\n%s", out)
	}
}

// ss's state words replace -l, as in ss.
func TestSSExprReplacesListening(t *testing.T) {
	f := filterFlags{listening: true}
	if err := f.ssExpr([]string{"state", "established"}); err != nil {
		t.Fatal(err)
	}
	m, err := f.filter()
	if err != nil || m.States != inspect.Mask(inspect.Established) {
		t.Errorf("-l state established: states %b, %v", m.States, err)
	}
}
