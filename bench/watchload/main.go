// Command watchload measures what tcplab watch loses under load. For each
// rate it creates a network namespace, makes short loopback connections
// in it at that rate for a while (each makes ten state changes on the
// tracepoint), watches the namespace as `tcplab watch -N` does, and prints
// what the watch showed against what happened. It needs root (a namespace
// and tracefs); all its traffic stays inside the namespaces it creates.
//
//	sudo go run ./bench/watchload --rates 5000,10000,20000 --duration 10s
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/internal/nstest"
)

// Figures are one rate's measurements.
type Figures struct {
	Rate          int     `json:"rate"`            // connections/s asked for
	ConnsPerSec   float64 `json:"conns_per_sec"`   // reached
	Connections   int     `json:"connections"`     // made and closed
	Failed        int     `json:"failed"`          // connect() failures
	ChangesPerSec float64 `json:"changes_per_sec"` // tracepoint changes/s made (10 per connection)
	Expected      int     `json:"expected"`        // tracepoint changes made
	Shown         int     `json:"shown"`           // tracepoint changes watch showed
	Dropped       int     `json:"dropped"`         // changes watch reported lost
	LossPct       float64 `json:"loss_pct"`        // 100 x (expected - shown) / expected
	Reused        int     `json:"reused"`          // TIME_WAIT -> reused shown
	TWRecycled    int64   `json:"tw_recycled"`     // the namespace's TcpExtTWRecycled
	TimeWaitEnds  int     `json:"time_wait_ends"`  // TIME_WAIT -> CLOSED shown
	Notes         int     `json:"notes"`           // notes watch gave (reader behind, ...)
	// ByChange counts the changes shown by "OLD>NEW" (with -v).
	ByChange map[string]int `json:"by_change,omitempty"`
	Error    string         `json:"error,omitempty"`
}

func main() {
	nstest.ChurnChild() // when started as the load's process
	rates := flag.String("rates", "5000,10000,20000", "connections per second to try, comma-separated (each connection makes 10 state changes)")
	duration := flag.Duration("duration", 10*time.Second, "how long to make connections at each rate (at most 60s)")
	ports := flag.Int("ports", 2, "server ports (fewer ports: TIME_WAIT reused sooner)")
	clients := flag.Int("clients", 4, "client threads")
	acceptors := flag.Int("acceptors", 2, "accepting threads per port")
	interval := flag.Duration("interval", 250*time.Millisecond, "watch's poll interval")
	noWatch := flag.Bool("no-watch", false, "make the load without watching (what the generator reaches alone)")
	asJSON := flag.Bool("json", false, "print one JSON object per rate")
	verbose := flag.Bool("v", false, "also count the changes shown by kind (OLD>NEW)")
	cpuProfile := flag.String("cpuprofile", "", "write the watching process's CPU profile to this file")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "watchload: needs root (network namespaces, tracefs)")
		os.Exit(2)
	}
	if *duration <= 0 || *duration > time.Minute || *ports < 1 || *ports > 100 || *interval <= 0 {
		fmt.Fprintln(os.Stderr, "watchload: --duration must be in (0, 60s], --ports in [1, 100], --interval positive")
		os.Exit(2)
	}
	var list []int
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r <= 0 || r > 100_000 {
			fmt.Fprintf(os.Stderr, "watchload: bad rate %q (1 to 100000 connections/s)\n", f)
			os.Exit(2)
		}
		list = append(list, r)
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(pf)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "watchload:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	var all []Figures
	for _, r := range list {
		f := measure(r, *duration, *ports, *clients, *acceptors, *interval, !*noWatch)
		if !*verbose {
			f.ByChange = nil
		}
		all = append(all, f)
		if *asJSON {
			b, _ := json.Marshal(f)
			fmt.Println(string(b))
		} else {
			fmt.Fprintf(os.Stderr, "rate %d done\n", r)
		}
	}
	if *asJSON {
		return
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "conn/s asked\tconn/s reached\tfailed\tchanges/s\tchanges\tshown\tdropped\tloss %\treused shown\tTWRecycled\tTW ends\tnotes\terror\t")
	for _, f := range all {
		fmt.Fprintf(tw, "%d\t%.0f\t%d\t%.0f\t%d\t%d\t%d\t%.2f\t%d\t%d\t%d\t%d\t%s\t\n", f.Rate, f.ConnsPerSec, f.Failed, f.ChangesPerSec,
			f.Expected, f.Shown, f.Dropped, f.LossPct, f.Reused, f.TWRecycled, f.TimeWaitEnds, f.Notes, f.Error)
	}
	tw.Flush()
	for _, f := range all {
		if len(f.ByChange) == 0 {
			continue
		}
		fmt.Printf("\nchanges shown at %d connections/s, by kind (%d connections):\n", f.Rate, f.Connections)
		var kinds []string
		for k := range f.ByChange {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Printf("  %-28s %9d\n", k, f.ByChange[k])
		}
	}
}

func measure(rate int, d time.Duration, nports, clients, acceptors int, interval time.Duration, watch bool) (f Figures) {
	f.Rate = rate
	ns, err := nstest.Make()
	if err != nil {
		f.Error = err.Error()
		return f
	}
	defer ns.Close()
	target := inspect.Target{Netns: nstest.Path(ns)}
	host, err := inspect.OpenHost(target)
	if err != nil {
		f.Error = err.Error()
		return f
	}
	defer host.Close()
	recycled := func() int64 {
		c, err := host.Counters()
		if err != nil {
			return -1
		}
		v, _ := c.Get("TcpExt", "TWRecycled")
		return v
	}
	before := recycled()

	stop := make(chan struct{})
	done := make(chan error, 1)
	var mu sync.Mutex // the watcher, between the poll loop and here
	var w *inspect.Watcher
	if watch {
		if w, err = inspect.NewWatcher(target, inspect.Filter{}, false); err != nil {
			f.Error = err.Error()
			return f
		}
		defer w.Close()
		go func() { done <- pollLoop(w, interval, stop, &f, &mu) }()
	}
	var ports []uint16
	for i := range nports {
		ports = append(ports, uint16(7100+i))
	}
	// The load runs in a process of its own, as a real one would.
	churn := nstest.Churn{Rate: rate, Duration: d, Ports: ports, Clients: clients, Acceptors: acceptors}
	proc, err := nstest.StartChurn(churn, nstest.Path(ns), os.Args[0])
	if err != nil {
		f.Error = err.Error()
		return f
	}
	defer proc.Stop()
	res, err := proc.Wait()
	end := time.Now()
	if err != nil {
		f.Error = err.Error()
	}
	f.Connections, f.Failed, f.ConnsPerSec = res.Connected, res.Failed, res.Rate()
	f.Expected = 10 * res.Connected
	if res.Elapsed > 0 {
		f.ChangesPerSec = float64(f.Expected) / res.Elapsed.Seconds()
	}
	f.TWRecycled = recycled() - before
	if watch {
		// The last changes reach the watch (it may be behind).
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(interval) {
			mu.Lock()
			through := w.Through()
			mu.Unlock()
			if through.After(end) {
				break
			}
		}
		close(stop)
		if err := <-done; err != nil && f.Error == "" {
			f.Error = "watch stopped: " + err.Error()
		}
		f.Dropped = w.Lost()
	}
	if f.Expected > 0 && watch {
		f.LossPct = 100 * float64(f.Expected-min(f.Shown, f.Expected)) / float64(f.Expected)
	}
	return f
}

// pollLoop polls as tcplab watch does, counting what it shows.
func pollLoop(w *inspect.Watcher, interval time.Duration, stop <-chan struct{}, f *Figures, mu *sync.Mutex) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		last := false
		mu.Lock()
		behind := w.Behind()
		mu.Unlock()
		if !behind { // a watcher behind polls again at once, as tcplab watch does
			select {
			case <-stop:
				last = true
			case <-tick.C:
			}
		} else {
			select {
			case <-stop:
				last = true
			default:
			}
		}
		mu.Lock()
		ts, err := w.Poll()
		notes := w.Notes()
		mu.Unlock()
		if err != nil {
			return err
		}
		count(ts, f)
		f.Notes += len(notes)
		for _, n := range notes {
			fmt.Fprintf(os.Stderr, "watch at %d connections/s: %s\n", f.Rate, n)
		}
		if last {
			return nil
		}
	}
}

func count(ts []inspect.Transition, f *Figures) {
	if f.ByChange == nil {
		f.ByChange = map[string]int{}
	}
	for _, t := range ts {
		f.ByChange[t.Old.String()+">"+t.New.String()+" ("+t.Source+")"]++
		switch {
		case t.New == inspect.Reused:
			f.Reused++
		case t.Old == inspect.TimeWait && t.New == inspect.Close:
			f.TimeWaitEnds++
		case t.Old == inspect.Listen && t.New == inspect.Close, t.Old == inspect.Close && t.New == inspect.Listen:
			// the server's listeners
		case t.Source == "trace",
			t.Old == inspect.FinWait2 && t.New == inspect.TimeWait: // from a listing when the timewait socket was caught in FIN_WAIT2
			f.Shown++
		}
	}
}
