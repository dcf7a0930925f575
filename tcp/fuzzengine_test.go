package tcp

import (
	"testing"
)

// propFuzzSteps bounds the operations of one fuzz input.
const propFuzzSteps = 300

// FuzzPropEngine is the property test driven by the fuzzer: the first byte
// chooses the state the connection under test is driven into, the next
// bytes the hosts' profiles, the network and the variant of the setup, and
// the rest a sequence of operations (a segment from the peer with its
// flags, numbers, options and length; a replayed segment; a jump in time;
// an application call on either host). After every operation the checks
// of the property test run. Every choice reads one or a few bytes, and an
// input that runs out reads zeros.
//
//	go test ./tcp/ -run XXX -fuzz FuzzPropEngine -fuzztime 120s
func FuzzPropEngine(f *testing.F) {
	for st := range numStates {
		f.Add(append([]byte{byte(st)}, make([]byte, 24)...))
	}
	// Established, then a little of everything.
	f.Add([]byte{4, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 20, 0, 30, 0, 45, 3, 5, 60, 0, 70, 1, 90, 2, 99, 4})
	// TIME_WAIT with SYNs and RSTs for the listener.
	f.Add([]byte{10, 9, 9, 9, 9, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 5, 8, 1, 0, 0, 0, 5, 7, 2, 0, 65, 9})
	// LISTEN with SYNs from new ports.
	f.Add([]byte{1, 3, 1, 4, 1, 5, 9, 2, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		st := State(data[0] % byte(numStates))
		if err := propRun(&propBytes{b: data[1:]}, st, propFuzzSteps, nil); err != nil {
			t.Fatalf("state %v: %v", st, err)
		}
	})
}

// TestPropBugDataAfterFinFuzzInput replays the input with which
// FuzzPropEngine found TestPropBugDataAfterFin (kept in
// testdata/fuzz/FuzzPropEngine/fa3566b1ca4742e7): FIN_WAIT1, one segment
// one byte past RCV.NXT, a blocking read, then a FIN at RCV.NXT; the read
// returns the bytes from beyond the FIN.
func TestPropBugDataAfterFinFuzzInput(t *testing.T) {
	data := []byte("10000000000001001001100000000000010011000000000110000000100x21.$00000,00\xb3000x21$")
	st := State(data[0] % byte(numStates))
	if err := propRun(&propBytes{b: data[1:]}, st, propFuzzSteps, nil); err != nil {
		t.Fatalf("state %v: %v", st, err)
	}
}
