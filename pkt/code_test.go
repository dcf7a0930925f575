package pkt

import (
	"strings"
	"testing"
)

func TestEvalCode(t *testing.T) {
	f := map[string]int64{"tcpi_state": 8, "tcpi_rto": 204000, "tcpi_snd_cwnd": 10}
	for _, ok := range []string{
		"assert tcpi_state == TCP_CLOSE_WAIT, tcpi_state",
		"assert 200000 <= tcpi_rto <= 210000, tcpi_rto",
		"assert tcpi_snd_cwnd == 10 and tcpi_state != TCP_CLOSE",
		"assert (tcpi_snd_cwnd * 2 - 5) % 7 == 1 or False",
		"assert not tcpi_state == TCP_LISTEN; print(tcpi_state)\nassert (8 & 12) == 8",
		"assert tcpi_state == 8, 'state=%d' % tcpi_state",
		"TCP_INFINITE = 0x7fffffff\nassert tcpi_snd_cwnd < TCP_INFINITE",
		"assert tcpi_state == 8, tcpi_state; \\\n  assert tcpi_rto > 0",
		"assert tcpi_state == 8;\\",
	} {
		if e := evalCode(ok, f); e != nil {
			t.Errorf("%q: %s", ok, e.msg)
		}
	}
	if e := evalCode("assert tcpi_state == TCP_ESTABLISHED, tcpi_state", f); e == nil || e.unsupported ||
		!strings.Contains(e.msg, "tcpi_state = 8") {
		t.Errorf("a false assertion: %+v", e)
	}
	for _, bad := range []string{"cwnd += 10", "assert tcpi_lost == 0", "assert foo == 1", "assert (1", "x = foo", "tcpi_rto = 1", "assert 1 / 0"} {
		if e := evalCode(bad, f); e == nil || !e.unsupported {
			t.Errorf("%q: %+v, want unsupported", bad, e)
		}
	}
}
