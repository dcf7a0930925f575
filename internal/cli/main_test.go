package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/tcplab/tcplab/internal/clitest"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

// buildTcplab builds the tcplab binary and returns its path.
func buildTcplab(t *testing.T) string {
	t.Helper()
	return filepath.Join(clitest.Build(t, "../../cmd/", "tcplab"), "tcplab")
}

func tcplab(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestRunHutu(t *testing.T) {
	out, errs, code := tcplab(t, "run", "hutu")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	for _, want := range []string{
		"hutu: Every normal state",
		"Flags [S], seq ", "Flags [.], ack 1, win", "Flags [P.], seq 1:5, ack 1,",
		"client state  10.0.0.1:", "FIN_WAIT2 -> TIME_WAIT",
		`read(4, 0) = 4 "Hutu"`,
		"== the client closes first ==",
		"client SYN_SENT ESTABLISHED FIN_WAIT1 FIN_WAIT2 TIME_WAIT CLOSED",
		"of 11 expectations held",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Time first, six decimals.
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " call ") && !strings.HasPrefix(l, "0.0") && !strings.HasPrefix(l, "1.0") {
			t.Errorf("call line does not start with the time: %q", l)
		}
	}
	again, _, _ := tcplab(t, "run", "hutu")
	if again != out {
		t.Error("two runs with one seed differ")
	}
	other, _, _ := tcplab(t, "run", "hutu", "--seed", "2", "--absolute")
	if other == out || strings.Contains(other, "seq 1:5") {
		t.Error("--seed 2 --absolute printed the same run or relative numbers")
	}
}

func TestRunViews(t *testing.T) {
	out, _, code := tcplab(t, "run", "handshake", "--ladder")
	if code != 0 || !strings.Contains(out, "|------------- [S] seq") || !strings.Contains(out, "ESTABLISHED |") {
		t.Fatalf("ladder: exit %d\n%s", code, out)
	}
	out, _, code = tcplab(t, "run", "hutu", "--at", "30s", "--at", "2ms")
	if code != 0 || !strings.Contains(out, "sockets at 0.002000") || !strings.Contains(out, "TIME-WAIT") ||
		!strings.Contains(out, "timer:(timewait,") {
		t.Fatalf("--at: exit %d\n%s", code, out)
	}
	out, _, code = tcplab(t, "run", "hutu", "--json", "--at", "1s")
	if code != 0 {
		t.Fatalf("--json: exit %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	kinds := map[string]int{}
	for sc.Scan() {
		var e struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds[e.Kind]++
		if e.Kind != "snapshot" {
			var ev trace.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("event %q: %v", sc.Text(), err)
			}
		}
	}
	if kinds["packet"] == 0 || kinds["state"] != 12 || kinds["check"] != 11 || kinds["snapshot"] != 1 {
		t.Fatalf("kinds %v", kinds)
	}
}

func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	failing := write("f.tcplab", "host client 10.0.0.1\nhost server 10.0.0.2\nclient: connect server:80\nafter 1s\nexpect client: conn state ESTABLISHED\n")
	out, _, code := tcplab(t, "run", failing)
	if code != 1 || !strings.Contains(out, "FAILED "+failing+":5:1: expect client: conn state ESTABLISHED\n  seen: state CLOSED") {
		t.Fatalf("failing: exit %d\n%s", code, out)
	}
	broken := write("b.tcplab", "host client 10.0.0.1\nclient: conect 10.0.0.2:80\n")
	_, errs, code := tcplab(t, "run", broken)
	if code != 2 || !strings.Contains(errs, broken+`:2:9: unknown call "conect" (hint: did you mean "connect"?)`) {
		t.Fatalf("broken: exit %d: %s", code, errs)
	}
	for _, args := range [][]string{
		{"run", "hutoo"}, {"run"}, {"run", "hutu", "--profile", "bsd"}, {"run", "hutu", "--at", "x"},
		{"nope"}, {"list", "x"}, {"tour", "x"}, {"show", "nope"}, {"run", "/no/such.tcplab"},
		{"diff"}, {"diff", "--all", "hutu"}, {"diff", "hutoo"}, {"diff", "hutu", "--jobs", "0"},
		{"tour", "--quick"}, {"tour", "--jobs", "2"},
	} {
		_, errs, code := tcplab(t, args...)
		if code != 2 || !strings.HasPrefix(errs, "tcplab: ") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	_, errs, _ = tcplab(t, "run", "hutoo")
	if !strings.Contains(errs, `did you mean "hutu"?`) {
		t.Errorf("no suggestion: %s", errs)
	}
}

func TestListShowTour(t *testing.T) {
	out, _, code := tcplab(t, "list")
	if code != 0 {
		t.Fatal(code)
	}
	for _, n := range scenario.Names() {
		if !strings.Contains(out, n+" ") {
			t.Errorf("list lacks %s", n)
		}
	}
	if len(strings.Split(strings.TrimSpace(out), "\n")) != len(scenario.Names()) {
		t.Errorf("list is not one line per scenario:\n%s", out)
	}
	out, _, code = tcplab(t, "show", "hutu")
	src, _ := scenario.BuiltinSource("hutu")
	if code != 0 || out != src {
		t.Fatal("show hutu is not the source")
	}
	out, _, code = tcplab(t, "tour")
	if code != 0 {
		t.Fatalf("tour: exit %d\n%s", code, out)
	}
	for _, n := range scenario.Names() {
		if !strings.Contains(out, "\n"+n+" ") {
			t.Errorf("tour lacks %s", n)
		}
	}
	if !strings.Contains(out, "hutu  ") || !strings.Contains(out, "client: SYN_SENT ESTABLISHED FIN_WAIT1") ||
		!strings.Contains(out, "expectations held") {
		t.Errorf("tour table:\n%s", out)
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"", "run", "list", "tour", "show", "ss", "stats", "doctor", "watch"} {
		args := []string{"--help"}
		if cmd != "" {
			args = []string{cmd, "--help"}
		}
		out, _, code := tcplab(t, args...)
		if code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help: exit %d\n%s", cmd, code, out)
		}
	}
}

// --pcap writes the capture beside the text or the JSON, and a path that
// cannot be created fails before the run.
func TestRunPcap(t *testing.T) {
	for _, args := range [][]string{{"run", "hutu"}, {"run", "hutu", "--json"}} {
		file := filepath.Join(t.TempDir(), "hutu.pcapng")
		if _, errs, code := tcplab(t, append(args, "--pcap", file)...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			if _, _, err := r.ReadPacketData(); err != nil {
				break
			}
			n++
		}
		f.Close()
		// hutu: 9 segments, each seen by its sender and its receiver.
		if n != 18 || r.NInterfaces() != 2 {
			t.Errorf("%v: %d packets on %d interfaces, want 18 on 2", args, n, r.NInterfaces())
		}
	}
	if _, errs, code := tcplab(t, "run", "hutu", "--pcap", "/nonexistent/dir/x.pcapng"); code != 2 || !strings.Contains(errs, "no such file") {
		t.Errorf("unwritable --pcap: exit %d, %q", code, errs)
	}
	// A run that cannot finish leaves no empty file behind.
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.tcplab")
	os.WriteFile(bad, []byte("host a 10.0.0.1\na: connect 10.0.0.9:80\nat 1s\nat 0s\n"), 0o644)
	out := filepath.Join(dir, "bad.pcapng")
	if _, _, code := tcplab(t, "run", bad, "--pcap", out); code != 2 {
		t.Errorf("a scenario that fails to run: exit %d, want 2", code)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the capture of a run that failed is still there: %v", err)
	}
}

// --svg draws the ladder into a well-formed SVG file.
func TestRunSVG(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hutu.svg")
	if _, errs, code := tcplab(t, "run", "hutu", "--svg", file); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	arrows := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err != io.EOF {
				t.Fatalf("not well-formed: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "line" {
			for _, a := range se.Attr {
				if a.Name.Local == "class" && a.Value == "seg" {
					arrows++
				}
			}
		}
	}
	if arrows != 9 { // hutu's nine segments
		t.Errorf("%d arrows, want 9", arrows)
	}
}

// --states draws the state diagram into a well-formed SVG file.
func TestRunStates(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hutu-states.svg")
	if _, errs, code := tcplab(t, "run", "hutu", "--states", file); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b, new(struct{})); err != nil {
		t.Fatalf("not well-formed: %v", err)
	}
	// hutu: six state changes on each host, each a legend line.
	if n := strings.Count(string(b), `class="legend"`); n != 12 {
		t.Errorf("%d legend lines, want 12", n)
	}
}

// --html writes the report, pictures inline.
func TestRunHTML(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hutu.html")
	if _, errs, code := tcplab(t, "run", "hutu", "--html", file); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<h1>hutu: Every normal state", "11 of 11 held", `id="tcplab-ladder"`, `id="tcplab-states"`, "TIME_WAIT"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

// --version says the build, from Go's build information; a mistyped
// command gets the nearest ones.
func TestVersionAndSuggestions(t *testing.T) {
	out, _, code := tcplab(t, "--version")
	if code != 0 || out != "tcplab "+Version()+"\n" || Version() == "" {
		t.Errorf("--version: exit %d, %q", code, out)
	}
	for typo, want := range map[string]string{"lsit": "list", "ruun": "run", "tuor": "tour", "ss2": "ss", "explian": "explain"} {
		_, errs, code := tcplab(t, typo)
		if code != 2 || !strings.Contains(errs, `unknown command "`+typo+`"`) || !strings.Contains(errs, "Did you mean this?\n\t"+want+"\n") {
			t.Errorf("%s: exit %d, %q", typo, code, errs)
		}
	}
}

// Flags that cannot go together are refused, not one of them dropped.
func TestConflictingFlags(t *testing.T) {
	out, errs, code := tcplab(t, "run", "hutu", "--json", "--ladder")
	if code != 2 || out != "" || !strings.Contains(errs, "--json and --ladder cannot go together") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	// A flag set to its default is not a conflict.
	if _, errs, code := tcplab(t, "run", "hutu", "--json", "--ladder=false"); code != 0 {
		t.Errorf("--ladder=false: exit %d, %q", code, errs)
	}
}

// Every key of every JSON object tcplab run --json writes is snake_case,
// snapshots included.
func TestJSONKeysSnakeCase(t *testing.T) {
	out, errs, code := tcplab(t, "run", "close-wait", "--json", "--at", "1s")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if !snake.MatchString(k) {
					t.Errorf("key %q at %s is not snake_case", k, path)
				}
				walk(e, path+"."+k)
			}
		case []any:
			for _, e := range x {
				walk(e, path+"[]")
			}
		}
	}
	snapshots := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var v any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if m, ok := v.(map[string]any); ok && m["kind"] == "snapshot" {
			snapshots++
		}
		walk(v, "")
	}
	if snapshots != 1 {
		t.Errorf("%d snapshots, want 1", snapshots)
	}
}

// The shell completes scenario names, profiles and states.
func TestCompletion(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "run", "hu"}, []string{"hutu"}},
		{[]string{"__complete", "show", "syn-recv"}, []string{"syn-recv", "syn-recv-windows"}},
		{[]string{"__complete", "run", "hutu", "--profile", "w"}, []string{"windows-classic"}},
		{[]string{"__complete", "ss", "--state", "close"}, []string{"close-wait", "closed"}},
	} {
		out, _, code := tcplab(t, c.args...)
		got := strings.Split(strings.TrimSpace(out), "\n")
		got = got[:len(got)-1] // the directive
		if code != 0 || !slices.Equal(got, c.want) {
			t.Errorf("%q: exit %d, %q, want %q", c.args, code, got, c.want)
		}
	}
	if out, _, code := tcplab(t, "completion", "bash"); code != 0 || !strings.Contains(out, "__start_tcplab") {
		t.Errorf("completion bash: exit %d", code)
	}
}

// An --at snapshot is printed where its time falls among the events: after
// those of its instant, before the first later one.
func TestSnapshotAtItsTime(t *testing.T) {
	out, errs, code := tcplab(t, "run", "close-wait", "--at", "1s")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(out, "\n")
	at := slices.Index(lines, "sockets at 1.000000")
	if at < 1 {
		t.Fatalf("no snapshot at 1s:\n%s", out)
	}
	timeOf := func(l string) (float64, bool) {
		f := strings.Fields(l)
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(f[0], 64)
		return v, err == nil && strings.Contains(f[0], ".")
	}
	before, after := -1.0, -1.0
	for _, l := range lines[:at] {
		if v, ok := timeOf(l); ok {
			before = v
		}
	}
	for _, l := range lines[at+1:] {
		if v, ok := timeOf(l); ok && !strings.HasPrefix(l, "  ") {
			after = v
			break
		}
	}
	if before > 1 || before < 0 || after <= 1 {
		t.Errorf("snapshot at 1s between events at %v and %v:\n%s", before, after, out)
	}
}
