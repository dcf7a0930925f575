package tcp

import (
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// probeAt is when the tail loss probe of a connection with out segments
// in flight is due, by tcp_schedule_loss_probe's formula, from now.
func probeAt(f *fx, out int) time.Duration {
	c := f.conn()
	d := 2 * c.srtt
	if out == 1 {
		d += f.h.prof.MinRTO
	} else {
		d += 2 * time.Millisecond
	}
	j := f.h.prof.Jiffy
	d = (d + j - 1) / j * j
	return f.h.Now() + min(d, c.rto)
}

func TestTailLossProbeResendsALoneFIN(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	f.after(time.Second)
	want := probeAt(f, 1)
	f.do(Call{Op: OpClose, FD: f.fd})
	f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
	if d, _ := f.h.NextDeadline(); d != want {
		t.Fatalf("probe due at %v, want %v (2*SRTT + min RTO)", d, want)
	}
	f.at(want)
	f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
	f.wantCounter(TCPLossProbes, 1)
	f.wantCounter(RetransSegs, 1)
	f.wantCounter(TCPTimeouts, 0)
	// After the probe, a whole RTO from now, then the usual backoff; no
	// second probe in the same episode.
	rto := f.conn().rto
	d, _ := f.h.NextDeadline()
	if d != want+rto {
		t.Fatalf("RTO after the probe at %v, want %v", d, want+rto)
	}
	f.at(d)
	f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
	f.wantCounter(TCPTimeouts, 1)
	f.wantCounter(TCPLossProbes, 1)
	d2, _ := f.h.NextDeadline()
	if d2-d != 2*rto {
		t.Fatalf("second RTO %v after the first, want %v", d2-d, 2*rto)
	}
}

func TestTailLossProbeResendsTheLastSegmentOnly(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	f.after(time.Second)
	mss := f.conn().mss
	want := probeAt(f, 2)
	f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, mss+100)})
	f.expect(exp{wire.ACK, 1, 1, mss}, exp{wire.PSH | wire.ACK, 1 + mss, 1, 100})
	f.at(want)
	f.expect(exp{wire.PSH | wire.ACK, 1 + mss, 1, 100})
	f.wantCounter(TCPLossProbes, 1)
	// The ACK of everything ends the episode and stops every timer.
	f.recv(f.mk(wire.ACK, f.pNxt, f.usISS.Add(1+mss+100), ""))
	if c := f.conn(); c.tlpOut || c.rtxAt != never {
		t.Fatalf("after the ACK: probe outstanding %v, timer at %v", c.tlpOut, c.rtxAt)
	}
}

// Without SACK, as without the profile's loss probes, the RTO alone resends.
func TestNoTailLossProbeWithoutSACK(t *testing.T) {
	for _, p := range []Profile{Linux(), WindowsClassic()} {
		f := newFx(t, p)
		if p.Name == "linux" {
			f.passive() // no options: no SACK
		} else {
			f.passiveOpts()
		}
		f.do(Call{Op: OpClose, FD: f.fd})
		f.expect(exp{wire.FIN | wire.ACK, 1, 1, 0})
		d, _ := f.h.NextDeadline()
		if c := f.conn(); d != f.h.Now()+c.rto || c.probing {
			t.Fatalf("%s: next deadline %v, want the RTO at %v", p.Name, d, f.h.Now()+c.rto)
		}
	}
}

// With data still queued that the peer's window has room for, the probe
// is that new segment, past the congestion window, not a retransmission
// (tcp_send_loss_probe tries tcp_write_xmit first).
func TestTailLossProbeSendsNewData(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	f.after(time.Second)
	c := f.conn()
	mss, cwnd := c.mss, c.cwnd
	segs := cwnd / mss
	if c.sndWnd < uint32((segs+1)*mss) {
		t.Fatalf("the peer's window %d is too small for the test", c.sndWnd)
	}
	f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, (segs+2)*mss)})
	f.collect()
	if len(f.out) != segs {
		t.Fatalf("%d segments sent, want %d (the congestion window)", len(f.out), segs)
	}
	f.out = nil
	want := probeAt(f, segs)
	f.at(want)
	f.expect(exp{wire.ACK, 1 + segs*mss, 1, mss})
	f.wantCounter(TCPLossProbes, 1)
	f.wantCounter(RetransSegs, 0)
	if c.tlpHigh != c.sndNxt {
		t.Errorf("tlp_high_seq %v, want SND.NXT %v", c.tlpHigh, c.sndNxt)
	}
}
