package tcp

import (
	"testing"
	"time"

	"github.com/tcplab/tcplab/wire"
)

// A retransmission that the output queue drops (local congestion) is
// tried again every 500 ms without backing off; once the queue passes
// packets, the next try leaves and the usual backoff resumes.
func TestRetransmitUnderLocalCongestion(t *testing.T) {
	f := newFx(t, Linux())
	f.passiveOpts()
	f.after(time.Second)
	c := f.conn()
	f.do(Call{Op: OpWrite, FD: f.fd, Data: make([]byte, 100)})
	f.expect(exp{wire.ACK | wire.PSH, 1, 1, 100})
	if err := f.h.Set("output_drop", "1"); err != nil {
		t.Fatal(err)
	}
	// The loss probe and the first timeout find the queue dropping.
	for range 2 {
		d, _ := f.h.NextDeadline()
		f.at(d)
	}
	f.expectNothing()
	first, _ := f.h.NextDeadline()
	backoff := c.backoff
	for i := range 3 {
		f.at(first + time.Duration(i)*resourceProbeInterval)
		f.expectNothing()
		if d, _ := f.h.NextDeadline(); d != f.h.Now()+resourceProbeInterval {
			t.Fatalf("try %d: next at %v, want %v later", i, d-f.h.Now(), resourceProbeInterval)
		}
	}
	if c.backoff != backoff {
		t.Errorf("backoff %d after dropped tries, want %d", c.backoff, backoff)
	}
	if !f.hasNote("retransmission dropped by the output queue") {
		t.Errorf("no note of the dropped retransmission:\n%s", f.dump())
	}
	if err := f.h.Set("output_drop", "0"); err != nil {
		t.Fatal(err)
	}
	d, _ := f.h.NextDeadline()
	f.at(d)
	f.expect(exp{wire.ACK | wire.PSH, 1, 1, 100})
	if c.backoff != backoff+1 {
		t.Errorf("backoff %d after the retransmission, want %d", c.backoff, backoff+1)
	}
}
