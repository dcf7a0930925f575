package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tcplab/tcplab/trace"
)

func TestHandshakeOutput(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s := out.String()
	for _, want := range []string{
		"Flags [S], seq 0,", "Flags [S.], seq 0, ack 1,", "Flags [.], ack 1,",
		"client  sock 1  CLOSED -> SYN_SENT -> ESTABLISHED",
		"server  sock 2  LISTEN -> SYN_RECV -> ESTABLISHED",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, " out "); n != 3 {
		t.Errorf("%d packet lines, want 3", n)
	}
	// The same seed gives the same output.
	var again bytes.Buffer
	run(nil, &again, &errb)
	if again.String() != s {
		t.Fatal("two runs with one seed differ")
	}
	var other bytes.Buffer
	run([]string{"--seed", "2", "--absolute"}, &other, &errb)
	if other.String() == s || strings.Contains(other.String(), "seq 0,") {
		t.Fatal("--seed 2 --absolute printed relative numbers or the same run")
	}
}

func TestJSONOutput(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	sc := bufio.NewScanner(&out)
	kinds := map[trace.Kind]int{}
	for sc.Scan() {
		var e trace.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds[e.Kind]++
	}
	if kinds[trace.KindPacket] != 6 || kinds[trace.KindState] != 5 || kinds[trace.KindCall] == 0 {
		t.Fatalf("event kinds %v", kinds)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--nope"}, {"--seed", "x"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if !strings.Contains(errb.String(), "tcplab:") {
			t.Errorf("%v: no error message", args)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "Examples:") {
		t.Fatalf("--help: exit %d\n%s", code, out.String())
	}
}
