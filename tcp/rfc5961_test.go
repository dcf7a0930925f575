package tcp

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// A blind attacker who knows the 4-tuple but not the sequence numbers
// sprays RSTs. Before RFC 5961 any RST inside the window killed the
// connection; now only one at exactly RCV.NXT does, and an in-window guess
// only draws a challenge ACK.
func TestBlindResetAttack(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	rng := rand.New(rand.NewPCG(1, 2))
	challenges := 0
	for i := 0; i < 5000; i++ {
		// Spaced beyond tcp_invalid_ratelimit, so that every in-window
		// guess is answered.
		f.after(600 * time.Millisecond)
		seq := f.pNxt.Add(1 + rng.IntN(200000)) // never the exact number
		f.recv(f.mk(wire.RST, seq, 0, ""))
		for _, s := range f.out {
			if s.Flags != wire.ACK || s.Seq != f.usISS.Add(1) || s.Ack != f.pNxt {
				t.Fatalf("unexpected answer %s", s.String())
			}
			challenges++
		}
		f.out = nil
	}
	f.wantState(Established)
	win := int(f.conn().receiveWindow())
	if challenges == 0 || int64(challenges) != f.counter(TCPChallengeACK) {
		t.Fatalf("%d challenge ACKs, counter %d", challenges, f.counter(TCPChallengeACK))
	}
	// About window/200000 of the guesses fell in the window.
	if frac := float64(challenges) / 5000; frac < 0.5*float64(win)/200000 || frac > 1.5*float64(win)/200000 {
		t.Fatalf("%d challenges for a window of %d", challenges, win)
	}
	f.recv(f.mk(wire.RST, f.pNxt, 0, ""))
	f.wantState(Closed)
}

// A burst of guesses draws one challenge ACK per tcp_invalid_ratelimit.
func TestChallengeAckRateLimit(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	for i := 0; i < 100; i++ {
		f.recv(f.mk(wire.RST, f.pNxt.Add(10+i), 0, ""))
	}
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.wantCounter(TCPChallengeACK, 1)
	f.wantCounter(TCPACKSkippedChallenge, 99)
	f.after(500 * time.Millisecond)
	f.recv(f.mk(wire.RST, f.pNxt.Add(10), 0, ""))
	f.expect(exp{wire.ACK, 1, 1, 0})
	// Out-of-window pure ACKs are limited the same way; data is not.
	f.after(time.Second)
	for i := 0; i < 3; i++ {
		f.recv(f.mk(wire.ACK, f.pNxt.Add(1<<20), f.ourNxt(), ""))
	}
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.wantCounter(TCPACKSkippedSeq, 2)
}

func TestSynInEstablishedGetsChallengeAck(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.recv(f.mk(wire.SYN, peerISS, 0, ""))
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.wantState(Established)
	f.wantCounter(TCPSYNChallenge, 1)
	f.wantCounter(TCPChallengeACK, 1)
	// An in-window SYN too, once the rate limit allows another answer.
	f.after(time.Second)
	f.recv(f.mk(wire.SYN, f.pNxt.Add(10), 0, ""))
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.wantCounter(TCPSYNChallenge, 2)
}

func TestAckOfUnsentData(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	// ESTABLISHED drops it and answers with a challenge ACK, as Linux
	// 6.18 does (pkt/testdata/ack-of-unsent-data.pkt on the kernel:
	// TCPChallengeACK 1).
	f.recv(f.mk(wire.ACK|wire.PSH, f.pNxt, f.usISS.Add(100), "x"))
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.wantCounter(TCPChallengeACK, 1)
	if f.conn().rcv.Len() != 0 {
		t.Fatal("data of a bad segment accepted")
	}
	// So do the other states.
	g := newFx(t, Linux())
	g.closeWait()
	g.recv(g.mk(wire.ACK, g.pNxt, g.usISS.Add(100), ""))
	g.expect(exp{wire.ACK, 1, 2, 0})
	g.wantCounter(TCPChallengeACK, 1)
}

func TestAckFarBehindIsChallenged(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.do(Call{Op: OpWrite, FD: f.fd, Data: []byte("abc")})
	f.out = nil
	f.send(wire.ACK, "")
	// An ACK older than SND.UNA minus the largest window ever seen.
	f.recv(f.mk(wire.ACK, f.pNxt, f.usISS.Add(-70000), ""))
	f.expect(exp{wire.ACK, 4, 1, 0})
	f.wantCounter(TCPChallengeACK, 1)
}

func TestOutOfWindowSegmentsAreAcked(t *testing.T) {
	f := newFx(t, Linux())
	f.passive()
	f.recv(f.mk(wire.ACK, f.pNxt.Add(1<<20), f.ourNxt(), "far"))
	f.expect(exp{wire.ACK, 1, 1, 0})
	f.recv(f.mk(wire.RST, f.pNxt.Add(1<<20), 0, ""))
	f.expectNothing() // an out-of-window RST is dropped silently
	f.wantState(Established)
}

func TestPAWSDropsOldDuplicates(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	mk := func(ts uint32, data string) wire.Segment {
		s := f.mk(wire.ACK|wire.PSH, f.pNxt, f.ourNxt(), data)
		s.Options = wire.Options{HasTimestamps: true, TSVal: ts}
		return s
	}
	s := mk(500, "new")
	f.recv(s)
	f.pNxt = s.End()
	f.out = nil
	old := mk(400, "old") // a timestamp from the past
	f.recv(old)
	if len(f.out) != 1 {
		t.Fatalf("want a duplicate ACK:\n%s", f.dump())
	}
	f.wantCounter(PAWSEstabRejected, 1)
	if string(f.conn().rcv.bytes()) != "new" {
		t.Fatalf("buffer %q", f.conn().rcv.bytes())
	}
}

// A segment whose ACK is refused (it acks data never sent) does not make
// its timestamp TS.Recent (tcp_ack calls tcp_replace_ts_recent only for
// an acceptable ACK): later segments with the peer's real timestamps
// still pass PAWS.
func TestRefusedAckKeepsTSRecent(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	mk := func(flags wire.Flags, ack wire.Seq, ts uint32, data string) wire.Segment {
		s := f.mk(flags, f.pNxt, ack, data)
		s.Options = wire.Options{HasTimestamps: true, TSVal: ts}
		return s
	}
	f.recv(mk(wire.ACK|wire.FIN, f.ourNxt().Add(9999), 200000, "")) // acks unsent data
	f.expect(exp{wire.ACK, 1, 1, 0})                                // a challenge ACK
	f.recv(mk(wire.ACK|wire.PSH, f.ourNxt(), 201, "data"))
	f.collect()
	if string(f.conn().rcv.bytes()) != "data" {
		t.Fatalf("the data after a refused ACK was dropped (PAWS against its timestamp?):\n%s", f.dump())
	}
	f.wantCounter(PAWSEstabRejected, 0)
	f.wantState(Established)
}
