package main

import (
	"testing"
	"time"
)

var quick = Config{Messages: 6, Every: 150 * time.Millisecond, Idle: 350 * time.Millisecond}

// Naive: the first write after the server's close reports success, yet the
// server never gets those bytes; the write after it fails with EPIPE.
func TestOneWayLosesData(t *testing.T) {
	rep, err := Run(quick)
	if err != nil {
		t.Fatal(err)
	}
	first := -1
	for i, w := range rep.Writes {
		if w.After {
			first = i
			break
		}
	}
	if first < 0 || first+1 >= len(rep.Writes) {
		t.Fatalf("the server never closed between writes: %+v", rep.Writes)
	}
	if w := rep.Writes[first]; w.Err != nil || w.N == 0 {
		t.Errorf("the first write after the close: %d bytes, %v; want success", w.N, w.Err)
	}
	if w := rep.Writes[first+1]; !isPipe(w.Err) {
		t.Errorf("the second write after the close: %v; want EPIPE", w.Err)
	}
	lost := rep.Sent - rep.Received
	if lost != rep.Writes[first].N {
		t.Errorf("client wrote %d bytes without error, server received %d: %d lost, want the %d of the first write after the close",
			rep.Sent, rep.Received, lost, rep.Writes[first].N)
	}
}

// With PeerClosed before each write, the client reconnects and every byte
// arrives.
func TestOneWayCheckLosesNothing(t *testing.T) {
	cfg := quick
	cfg.Check = true
	rep, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range rep.Writes {
		if w.Err != nil {
			t.Errorf("write error %v", w.Err)
		}
	}
	if rep.Reconn == 0 || rep.Sent != rep.Received || len(rep.Writes) != cfg.Messages {
		t.Errorf("%d reconnections, %d bytes sent, %d received, %d writes", rep.Reconn, rep.Sent, rep.Received, len(rep.Writes))
	}
}
