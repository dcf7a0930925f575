package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tcplab/tcplab/inspect"
)

// The leaky handler leaves one CLOSE_WAIT per client, and the doctor names
// this process and port; the fixed one leaves none.
func TestLeakAndFix(t *testing.T) {
	s, err := Start(leaky)
	if err != nil {
		t.Fatal(err)
	}
	h, err := inspect.OpenHost(inspect.Target{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := Clients(s.Port, 5); err != nil {
		t.Fatal(err)
	}
	a, err := inspect.TakeSample(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := Clients(s.Port, 3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	b, err := inspect.TakeSample(h)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := CloseWait(s.Port); n != 8 {
		t.Errorf("%d CLOSE_WAIT with the leaky handler, want 8", n)
	}
	fs := inspect.Diagnose(a, b, inspect.FindOwners(inspect.CloseWaitInodes(b), false), inspect.DefaultThresholds)
	want := fmt.Sprintf("(pid %d) leaves 8 connections in CLOSE_WAIT on local port %d", os.Getpid(), s.Port)
	found := false
	for _, f := range fs {
		if f.Kind == "close-wait-leak" && strings.Contains(f.Title, want) {
			found = true
			if f.Level != inspect.LevelError { // growing between the samples
				t.Errorf("level %v, want error (the count grew from 5 to 8)", f.Level)
			}
		}
	}
	if !found {
		t.Errorf("no finding %q among %+v", want, fs)
	}
	s.Stop()

	s, err = Start(fixed)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := Clients(s.Port, 5); err != nil {
		t.Fatal(err)
	}
	// The handlers close as soon as they run; give them a second.
	n := -1
	for end := time.Now().Add(time.Second); n != 0 && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		n, _ = CloseWait(s.Port)
	}
	if n != 0 {
		t.Errorf("%d CLOSE_WAIT with the fixed handler, want 0", n)
	}
}
