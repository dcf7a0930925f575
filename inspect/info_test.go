package inspect

import (
	"strings"
	"testing"
)

// retrans:X/Y means what ss's does: X is tcpi_retrans (retransmitted
// segments not yet acknowledged), Y tcpi_total_retrans; the timeouts in a
// row (tcpi_retransmits) are the timer's count (-o), not X.
func TestInfoRetransAsSS(t *testing.T) {
	ti := tcpInfo{Retransmits: 5, Retrans: 1, Total_retrans: 5, Snd_mss: 1448, Snd_cwnd: 1}
	if got := InfoOf(&ti); got.Retrans != 1 || got.TotalRetrans != 5 {
		t.Fatalf("InfoOf: retrans %d/%d, want 1/5", got.Retrans, got.TotalRetrans)
	}
	if got := infoText(&ti); !strings.Contains(got, " retrans:1/5 ") {
		t.Fatalf("-i text %q: want retrans:1/5", got)
	}
}

// Every word the shell completes for --state is one --state takes.
func TestStateWordsParse(t *testing.T) {
	for _, w := range StateWords() {
		if _, err := ParseStates([]string{w}); err != nil {
			t.Errorf("completion offers %q: %v", w, err)
		}
	}
}
