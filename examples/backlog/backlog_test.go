package main

import (
	"testing"
	"time"
)

// With backlog 4 the queue takes 5 connections (Linux refuses a sixth only
// when the queue is over the backlog); the other 15 SYNs are dropped and
// counted, their clients left in SYN_SENT.
func TestBurst(t *testing.T) {
	rep, err := Run(4, 20, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	last := rep.Queue[len(rep.Queue)-1]
	if last.Len != 5 || last.Limit != 4 {
		t.Errorf("accept queue %d of %d, want 5 of 4", last.Len, last.Limit)
	}
	for i, q := range rep.Queue[:5] {
		if q.Len != i+1 {
			t.Errorf("after client %d the queue holds %d, want %d", i+1, q.Len, i+1)
		}
	}
	if rep.Established != 5 || rep.SynSent != 15 {
		t.Errorf("%d clients ESTABLISHED and %d SYN_SENT, want 5 and 15", rep.Established, rep.SynSent)
	}
	// Other programs' overflows may add to the counter, never subtract.
	if rep.Overflows < 15 {
		t.Errorf("ListenOverflows +%d, want at least the 15 dropped SYNs", rep.Overflows)
	}
}
