package scenario

import (
	"fmt"
	"strings"
	"testing"
)

// bigScenario is a valid scenario of about n lines: the most hosts a
// scenario may declare, then connections, writes, expectations, rules and
// waits in turn, every socket and rule with a name of its own.
func bigScenario(n int) string {
	var b strings.Builder
	b.WriteString("title a long scenario\n")
	hosts := min(MaxHosts, n/4+2)
	for i := 0; i < hosts; i++ {
		fmt.Fprintf(&b, "host h%d 10.1.%d.%d\n", i, i/250, i%250+1)
	}
	b.WriteString("h0: listen 80\n")
	for i := 0; b.Len() > 0 && i*6 < n; i++ {
		h := 1 + i%(hosts-1)
		fmt.Fprintf(&b, "h%d: connect h0:80 as c%d\n", h, i)
		fmt.Fprintf(&b, "h%d: write c%d \"abc\"\n", h, i)
		fmt.Fprintf(&b, "expect h%d: c%d state ESTABLISHED\n", h, i)
		fmt.Fprintf(&b, "rule h%d out dport 80 flags [F] drop as r%d\n", h, i)
		fmt.Fprintf(&b, "remove rule r%d\n", i)
		fmt.Fprintf(&b, "after 1ms\n")
	}
	return b.String()
}

func BenchmarkParse(b *testing.B) {
	for _, n := range []int{1000, 10_000, 100_000} {
		src := bigScenario(n)
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if _, err := Parse("big.tcplab", src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
