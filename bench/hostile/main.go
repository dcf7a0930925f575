// Command hostile sends concurrent hostile run requests to a tcplab serve
// page on loopback and reports how it answered: the status codes, the time
// to answer, and whether a plain request still gets a run afterwards. It
// is bounded: one round of -n requests, each with a client timeout.
//
//	go run ./bench/hostile -url http://127.0.0.1:8080 -n 50
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// kinds are the requests sent in turn: each is the worst of its kind that
// fits in the page's 64 KB.
var kinds = []struct{ name, source string }{
	{"flood", `host attacker 10.0.9.1
host server 10.0.0.2
server: listen 80
attacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 1us
after 1s
`},
	{"connections", "host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80 backlog 4096\n" +
		repeatLines("repeat 10000 client: connect server:80 as c%d{i}\n", 10) + "after 1s\n"},
	{"until", `host client 10.0.0.1
host server 10.0.0.2
host attacker 10.0.9.1
server: listen 80 backlog 4096
repeat 10000 client: connect server:80 as a{i}
after 1s
attacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 10us
until server: count ESTABLISHED >= 100000 within 1h
`},
	{"data", "host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80\nset server tcp_rcv_window 1073741824\nclient: connect server:80\nafter 10ms\n" +
		repeatLines("client: write conn 1048576 bytes\nafter 100ms\n", 1000)},
	{"too-big", strings.Repeat("# padding\n", 7000)},
}

func repeatLines(format string, n int) string {
	var b strings.Builder
	for i := range n {
		if strings.Contains(format, "%d") {
			fmt.Fprintf(&b, format, i)
		} else {
			b.WriteString(format)
		}
	}
	return b.String()
}

type answer struct {
	kind string
	code int
	took time.Duration
	size int
	err  string
}

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "the page's address (loopback only)")
	n := flag.Int("n", 50, "requests sent at once (at most 500)")
	timeout := flag.Duration("timeout", 60*time.Second, "client timeout of each request")
	flag.Parse()
	u, err := url.Parse(*base)
	if err != nil || !isLoopback(u.Hostname()) {
		fmt.Fprintln(os.Stderr, "hostile: -url must be a loopback address")
		os.Exit(2)
	}
	if *n < 1 || *n > 500 {
		fmt.Fprintln(os.Stderr, "hostile: -n is 1 to 500")
		os.Exit(2)
	}
	client := &http.Client{Timeout: *timeout}
	post := func(kind, src string) answer {
		body, _ := json.Marshal(map[string]any{"source": src, "backend": "sim"})
		start := time.Now()
		resp, err := client.Post(*base+"/api/run", "application/json", bytes.NewReader(body))
		a := answer{kind: kind, took: time.Since(start)}
		if err != nil {
			a.err = err.Error()
			return a
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.took, a.code, a.size = time.Since(start), resp.StatusCode, len(b)
		if resp.StatusCode == 200 && bytes.Contains(b, []byte(`"errors"`)) {
			var r struct {
				Errors []struct{ Msg string } `json:"errors"`
			}
			if json.Unmarshal(b, &r) == nil && len(r.Errors) > 0 {
				a.err = r.Errors[0].Msg
			}
		} else if resp.StatusCode != 200 {
			a.err = strings.TrimSpace(string(b))
		}
		return a
	}

	start := time.Now()
	answers := make([]answer, *n)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := kinds[i%len(kinds)]
			answers[i] = post(k.name, k.source)
		}()
	}
	wg.Wait()
	all := time.Since(start)
	fmt.Printf("%d hostile requests at once, all answered in %v\n", *n, all.Round(time.Millisecond))
	fmt.Printf("%-12s %5s %10s %10s %12s  %s\n", "kind", "code", "median", "max", "bytes", "first answer")
	for _, k := range kinds {
		var took []time.Duration
		codes := map[int]int{}
		size, first := 0, ""
		for _, a := range answers {
			if a.kind != k.name {
				continue
			}
			took = append(took, a.took)
			codes[a.code]++
			size = max(size, a.size)
			if first == "" {
				first = a.err
			}
		}
		if len(took) == 0 {
			continue
		}
		slices.Sort(took)
		var cs []string
		for c, m := range codes {
			cs = append(cs, fmt.Sprintf("%d×%d", m, c))
		}
		slices.Sort(cs)
		if len(first) > 90 {
			first = first[:90] + "…"
		}
		fmt.Printf("%-12s %5s %10v %10v %12d  %s\n", k.name, strings.Join(cs, ","), took[len(took)/2].Round(time.Millisecond),
			took[len(took)-1].Round(time.Millisecond), size, first)
	}
	// A plain run right after: the slots must be free.
	a := post("plain", "host a 10.0.0.1\nhost b 10.0.0.2\nb: listen 80\na: connect b:80\nafter 1s\n")
	fmt.Printf("a plain run right after: %d in %v\n", a.code, a.took.Round(time.Millisecond))
	if a.code != 200 {
		os.Exit(1)
	}
}

func isLoopback(h string) bool {
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}
