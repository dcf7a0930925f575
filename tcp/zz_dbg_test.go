package tcp

import (
	"testing"
)

func TestPropDbg(t *testing.T) {
	n, err := propStart(propRandSrc(5), FinWait2, nil)
	t.Logf("%v\n%s", err, n.history())
	for i := range 2 {
		t.Logf("%s prof %+v", propHostNames[i], n.h[i].prof)
		for _, c := range n.conns(i) { t.Logf("%s", propDescribe(c)) }
	}
}
