package inspect

import (
	"strings"
	"testing"
)

func TestParseStatesNames(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want StateMask
	}{
		{[]string{"TIME_WAIT"}, Mask(TimeWait)},
		{[]string{"time-wait"}, Mask(TimeWait)},
		{[]string{"Time_Wait"}, Mask(TimeWait)},
		{[]string{"timewait"}, Mask(TimeWait)},
		{[]string{"estab"}, Mask(Established)},
		{[]string{"ESTABLISHED"}, Mask(Established)},
		{[]string{"established"}, Mask(Established)},
		{[]string{"syn-sent"}, Mask(SynSent)},
		{[]string{"syn-recv"}, Mask(SynRecv, NewSynRecv)},
		{[]string{"SYN_RECV"}, Mask(SynRecv, NewSynRecv)},
		{[]string{"syn-received"}, Mask(SynRecv, NewSynRecv)},
		{[]string{"fin-wait-1"}, Mask(FinWait1)},
		{[]string{"FIN_WAIT1"}, Mask(FinWait1)},
		{[]string{"fin-wait-2"}, Mask(FinWait2)},
		{[]string{"close-wait"}, Mask(CloseWait)},
		{[]string{"CLOSE_WAIT"}, Mask(CloseWait)},
		{[]string{"last-ack"}, Mask(LastAck)},
		{[]string{"closing"}, Mask(Closing)},
		{[]string{"listen"}, Mask(Listen)},
		{[]string{"closed"}, Mask(Close)},
		{[]string{"close"}, Mask(Close)},
		{[]string{"time-wait,close-wait"}, Mask(TimeWait, CloseWait)},
		{[]string{" estab , LISTEN "}, Mask(Established, Listen)},
		{[]string{"estab", "fin-wait-1,fin-wait-2"}, Mask(Established, FinWait1, FinWait2)},
		{[]string{"listening"}, Mask(Listen)},
		{[]string{"LISTENING"}, Mask(Listen)},
		{[]string{"all"}, AllStates},
		{[]string{"connected"}, AllStates &^ Mask(Listen, Close)},
		{[]string{"Synchronized"}, AllStates &^ Mask(Listen, Close, SynSent, SynRecv, NewSynRecv)},
		{[]string{"connected,listening"}, AllStates &^ Mask(Close)},
		{nil, AllStates},
		{[]string{""}, AllStates},
		{[]string{",,"}, AllStates},
	} {
		got, err := ParseStates(c.in)
		if err != nil {
			t.Errorf("ParseStates(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseStates(%q) = %#x, want %#x", c.in, got, c.want)
		}
	}
}

func TestParseStatesGroups(t *testing.T) {
	m, err := ParseStates([]string{"connected"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []State{Listen, Close} {
		if m.Has(s) {
			t.Errorf("connected holds %v", s)
		}
	}
	for _, s := range []State{Established, SynSent, SynRecv, FinWait1, FinWait2, TimeWait, CloseWait, LastAck, Closing} {
		if !m.Has(s) {
			t.Errorf("connected lacks %v", s)
		}
	}
	m, err = ParseStates([]string{"synchronized"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []State{Listen, Close, SynSent, SynRecv} {
		if m.Has(s) {
			t.Errorf("synchronized holds %v", s)
		}
	}
	if !m.Has(Established) || !m.Has(CloseWait) || !m.Has(TimeWait) {
		t.Errorf("synchronized = %#x", m)
	}
	for _, name := range []string{"syn-recv", "SYN_RECV", "syn-received"} {
		m, err := ParseStates([]string{name})
		if err != nil || !m.Has(SynRecv) || !m.Has(NewSynRecv) {
			t.Errorf("%s: %#x %v, want SYN_RECV and NEW_SYN_RECV", name, m, err)
		}
	}
}

func TestParseStatesUnknown(t *testing.T) {
	for _, in := range [][]string{{"bogus"}, {"estab,bogus"}, {"time_waits"}, {"new-syn-recv"}, {"listen", "x"}} {
		m, err := ParseStates(in)
		if err == nil {
			t.Errorf("ParseStates(%q) = %#x, want an error", in, m)
			continue
		}
		msg := err.Error()
		for _, want := range []string{"unknown state", "ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT", "SYN_RECV", "LISTEN", "connected", "synchronized", "listening", "all"} {
			if !strings.Contains(msg, want) {
				t.Errorf("ParseStates(%q): error %q does not name %q", in, msg, want)
			}
		}
	}
}

func TestStateNames(t *testing.T) {
	for s, want := range map[State]string{Established: "ESTABLISHED", TimeWait: "TIME_WAIT", NewSynRecv: "SYN_RECV", Close: "CLOSED", State(40): "STATE40"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", uint8(s), s.String(), want)
		}
		if b, _ := s.MarshalText(); string(b) != want {
			t.Errorf("%d: MarshalText %q", uint8(s), b)
		}
	}
	// Every name the package writes reads back as its state.
	for s := Established; s <= Closing; s++ {
		m, err := ParseStates([]string{s.String()})
		if err != nil || !m.Has(s) {
			t.Errorf("%v does not read back: %#x %v", s, m, err)
		}
	}
}

// A setting neither the namespace nor the caller's shows (a global one,
// read from inside a container's namespace) is left out, not an error.
func TestSysctlsMissing(t *testing.T) {
	h, err := OpenHost(Target{})
	if err != nil {
		t.Skipf("sock_diag not available: %v", err)
	}
	defer h.Close()
	got, err := h.Sysctls("net.ipv4.tcp_syncookies", "net.ipv4.tcp_no_such_setting")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["net.ipv4.tcp_no_such_setting"]; ok || len(got["net.ipv4.tcp_syncookies"]) != 1 {
		t.Errorf("got %v", got)
	}
}
