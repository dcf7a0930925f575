package web

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tcplab/tcplab/scenario"
)

func simOnly() Options {
	return Options{Sim: func(seed uint64) (scenario.Backend, string, error) {
		return scenario.NewSim(seed), fmt.Sprintf("simulator, seed %d", seed), nil
	}}
}

// browser starts headless Chromium (--headless --no-sandbox --disable-gpu)
// on a fresh test server and opens the page, or skips (fails under CI,
// which installs Chromium) when there is none.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path != "" {
			break
		}
		if p, err := exec.LookPath(p); err == nil {
			path = p
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium; .ci/run installs Debian's chromium")
		}
		t.Skip("no Chromium to drive")
	}
	srv := httptest.NewServer(NewHandler(simOnly()))
	t.Cleanup(srv.Close)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1600, 1000))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	// A deadline on the whole browser: a step that waits forever fails
	// the test instead of hanging it.
	tctx, cancel1 := context.WithTimeout(actx, 120*time.Second)
	t.Cleanup(cancel1)
	ctx, cancel2 := chromedp.NewContext(tctx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`))); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// pick chooses a scenario in the page's list and waits for its text.
func pick(ctx context.Context, name string) error {
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(async () => {
		const s = document.getElementById("library"); s.value = %q; s.dispatchEvent(new Event("change"));
		for (let i = 0; i < 500 && document.body.dataset.loaded !== %q; i++) await new Promise(r => setTimeout(r, 10));
		return document.body.dataset.loaded === %q })()`, name, name, name), chromedp.EvalAwaitPromise))
	return err
}

// run presses Run and waits for the n-th answer.
func run(ctx context.Context, n int) error {
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(async () => {
		document.getElementById("run").click();
		for (let i = 0; i < 1000 && document.body.dataset.runs !== "%d"; i++) await new Promise(r => setTimeout(r, 10));
		return document.body.dataset.runs === "%d" })()`, n, n), chromedp.EvalAwaitPromise))
	if err == nil && !ok {
		err = fmt.Errorf("run %d did not answer within 10 s", n)
	}
	return err
}

func text(t *testing.T, ctx context.Context, sel chromedp.CSS) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("%s: %v", sel, err)
	}
	return s
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

func TestPageRunsAScenario(t *testing.T) {
	ctx := browser(t)
	if err := pick(ctx, "hutu"); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#status"); !strings.Contains(s, "11 of 11 expectations held") {
		t.Errorf("status %q", s)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#ladder svg line.seg").length`); n != 9 {
		t.Errorf("the ladder has %d arrows, want hutu's 9", n)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#states svg rect.badge").length`); n != 12 {
		t.Errorf("the state diagram has %d badges, want 12 (six edges per host)", n)
	}
	t.Logf("hutu round trip in the page: %s ms", eval[string](t, ctx, `document.body.dataset.roundtrip`))
	// The slider at the client's TIME_WAIT: the client's sockets say so,
	// and the server's show its LAST_ACK ended.
	eval[bool](t, ctx, `(() => { const i = result.snapshots.findIndex(s => s.what.startsWith("client") && s.what.endsWith("-> TIME_WAIT"));
		const sl = document.getElementById("time"); sl.value = String(i + 1); sl.dispatchEvent(new Event("input")); return i >= 0 })()`)
	if c := text(t, ctx, `#snapshot table[data-host="client"]`); !strings.Contains(c, "TIME-WAIT") || !strings.Contains(c, "10.0.0.1:") {
		t.Errorf("the client's sockets at its TIME_WAIT (ss spells it TIME-WAIT): %q", c)
	}
	// The listener as ss shows it: 0.0.0.0:80, peer 0.0.0.0:*.
	if c := text(t, ctx, `#snapshot table[data-host="server"]`); !strings.Contains(c, "LISTEN") || !strings.Contains(c, "0.0.0.0:80") || !strings.Contains(c, "0.0.0.0:*") {
		t.Errorf("the server's listener: %q", c)
	}
	if !strings.Contains(text(t, ctx, "#time-label"), "1.047000") {
		t.Errorf("slider label %q, want the time of TIME_WAIT (1.047 s)", text(t, ctx, "#time-label"))
	}
	// A broken scenario: the error is listed and marked at its line.
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("source"), "host a 10.0.0.1\nbogus line\n")); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if g, e := text(t, ctx, "#gutter span.err"), text(t, ctx, "#errors li"); g != "2" || !strings.HasPrefix(e, "line 2, column 1: unknown step") {
		t.Errorf("error marked at line %q: %q", g, e)
	}
}

// Every built-in scenario runs and draws in the page; the round trips
// (request, run, drawing) are logged, and screenshots of the page and of
// both pictures are written when TCPLAB_SCREENSHOTS names a directory.
func TestPageLibraryRoundTrips(t *testing.T) {
	ctx := browser(t)
	lib, err := scenario.Library()
	if err != nil {
		t.Fatal(err)
	}
	shots := os.Getenv("TCPLAB_SCREENSHOTS")
	worst, worstName := 0.0, ""
	for i, sc := range lib {
		if err := pick(ctx, sc.Name); err != nil {
			t.Fatal(err)
		}
		if err := run(ctx, i+1); err != nil {
			t.Fatalf("%s: %v", sc.Name, err)
		}
		if s := text(t, ctx, "#status"); !strings.HasPrefix(s, sc.Name+":") || !strings.Contains(s, "expectations held") {
			t.Errorf("%s: status %q", sc.Name, s)
		}
		ms, _ := strconv.ParseFloat(eval[string](t, ctx, `document.body.dataset.roundtrip`), 64)
		if ms > worst {
			worst, worstName = ms, sc.Name
		}
		if shots == "" || (sc.Name != "hutu" && sc.Name != "syn-flood" && sc.Name != "close-wait" && sc.Name != "accept-overflow") {
			continue
		}
		page, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		ladder, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("#ladder svg")))
		if err != nil {
			t.Fatal(err)
		}
		eval[bool](t, ctx, `(document.querySelector('#tabs button[data-tab="states"]').click(), true)`)
		states, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("#states svg")))
		if err != nil {
			t.Fatal(err)
		}
		eval[bool](t, ctx, `(document.querySelector('#tabs button[data-tab="ladder"]').click(), true)`)
		os.WriteFile(filepath.Join(shots, "page-"+sc.Name+".png"), page, 0o644)
		os.WriteFile(filepath.Join(shots, "ladder-"+sc.Name+".png"), ladder, 0o644)
		os.WriteFile(filepath.Join(shots, "states-"+sc.Name+".png"), states, 0o644)
	}
	t.Logf("%d scenarios; the slowest round trip in the page: %.1f ms (%s)", len(lib), worst, worstName)
}

// A run whose socket tables are capped, and a run stopped by its budget,
// show in the page: the slider works to the last moment, and a stopped
// run shows what it did with its error marked at its line.
func TestPageLargeAndStoppedRuns(t *testing.T) {
	ctx := browser(t)
	big := "host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80 backlog 4096\nrepeat 2000 client: connect server:80 as c{i}\nafter 1s\n"
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("source"), big)); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#status"); strings.Contains(s, "error") || !strings.Contains(s, "expectations held") {
		t.Fatalf("status %q", s)
	}
	if w := text(t, ctx, "#time-label"); !strings.Contains(w, "later state changes are not shown") {
		t.Errorf("the slider's last moment: %q", w)
	}
	flood := "host attacker 10.0.9.1\nhost server 10.0.0.2\nserver: listen 80\nattacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 1us\nafter 1s\n"
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("source"), flood)); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#status"); !strings.Contains(s, "the run stopped at") || !strings.Contains(s, "50000 events") {
		t.Errorf("status %q", s)
	}
	if g := text(t, ctx, "#gutter span.err"); g != "5" {
		t.Errorf("error marked at line %q, want 5", g)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#ladder svg line.seg").length`); n == 0 {
		t.Error("the stopped run's ladder is empty")
	}
}

// A capture opened on the page is explained: the first connection with a
// finding is shown as a run is, and the list picks another.
func TestPageExplainsACapture(t *testing.T) {
	ctx := browser(t)
	file := filepath.Join(t.TempDir(), "rst.pcapng")
	if err := os.WriteFile(file, captureOf(t, "rst-closed-port"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.CSS(`#open`), []string{file}),
		chromedp.WaitVisible(chromedp.CSS(`body[data-explained="1"]`))); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, `#status`); !strings.Contains(s, "rst.pcapng: connection #1") || !strings.Contains(s, "2 connection(s)") {
		t.Errorf("status %q", s)
	}
	if s := text(t, ctx, `#explain`); !strings.Contains(s, "refused: SYN refused by RST") {
		t.Errorf("explanation %q", s)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#ladder svg").length`); n != 1 {
		t.Errorf("%d ladders", n)
	}
	eval[bool](t, ctx, `(() => { const s = document.getElementById("conns"); s.value = "2"; return s.dispatchEvent(new Event("change")) })()`)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`body[data-explained="2"]`))); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, `#status`); !strings.Contains(s, "connection #2") {
		t.Errorf("after picking #2: status %q", s)
	}
}

// The page shows only what was run: before a run no slider; an edited
// text runs under its own title line, not the name picked in the list; a
// parse error leaves nothing of the earlier run on the right. At the
// slider's end no event is greyed as "later"; the state diagram fits its
// panel; the tab's icon is served.
func TestPageShowsWhatWasRun(t *testing.T) {
	ctx := browser(t)
	if d := eval[string](t, ctx, `getComputedStyle(document.getElementById("slider-row")).display`); d != "none" {
		t.Errorf("before any run the slider shows (display %s)", d)
	}
	if s, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(async () => (await fetch("favicon.ico")).status)()`, chromedp.EvalAwaitPromise)); err != nil || s != 200 {
		t.Errorf("/favicon.ico: status %d, %v", s, err)
	}
	if err := pick(ctx, "close-wait"); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text(t, ctx, "#status"), "close-wait: ") {
		t.Errorf("status %q", text(t, ctx, "#status"))
	}
	// accept-overflow has events after its last state change: at the
	// slider's end they happened all the same.
	if err := pick(ctx, "accept-overflow"); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#events tr.later").length`); n != 0 {
		t.Errorf("at the slider's end %d events are greyed as later", n)
	}
	if err := pick(ctx, "close-wait"); err != nil {
		t.Fatal(err)
	}
	eval[bool](t, ctx, `(() => { document.querySelector('#tabs button[data-tab="states"]').click(); return true })()`)
	if w, p := eval[float64](t, ctx, `document.querySelector("#states svg").getBoundingClientRect().width`),
		eval[float64](t, ctx, `document.getElementById("states").clientWidth`); w > p {
		t.Errorf("the state diagram is %.0f px wide in a panel of %.0f", w, p)
	}
	// Edited text: its own title line heads the run.
	eval[bool](t, ctx, `(() => { const s = document.getElementById("source");
		s.value = s.value.replace(/^title .*$/m, "title My own story"); return true })()`)
	if err := run(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#status"); !strings.HasPrefix(s, "edited: My own story") {
		t.Errorf("an edited scenario runs under %q", s)
	}
	// A parse error: nothing of the earlier run stays.
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("source"), "host a 10.0.0.1\nbogus line\n")); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 4); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"explain", "checks", "snapshot", "ladder", "states", "events"} {
		if n := eval[int](t, ctx, `document.getElementById("`+id+`").innerHTML.length`); n != 0 {
			t.Errorf("after a parse error #%s still holds %d bytes of the earlier run", id, n)
		}
	}
	if d := eval[string](t, ctx, `getComputedStyle(document.getElementById("slider-row")).display`); d != "none" {
		t.Errorf("after a parse error the slider shows")
	}
}

// The controls stay on the left at any width: the library's titles get a
// row of their own, and on a narrow window the controls wrap rather than
// run into the status on the right.
func TestPageLayout(t *testing.T) {
	ctx := browser(t)
	for _, width := range []int64{1600, 800} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 900)); err != nil {
			t.Fatal(err)
		}
		if w := eval[float64](t, ctx, `document.getElementById("library").getBoundingClientRect().width`); w < 250 {
			t.Errorf("at %d px the scenario list is %.0f px wide", width, w)
		}
		over := eval[string](t, ctx, `(() => { const left = document.getElementById("left").getBoundingClientRect();
			const status = document.getElementById("status").getBoundingClientRect();
			for (const el of document.querySelectorAll("#left .row > *")) {
				const r = el.getBoundingClientRect();
				if (r.width === 0) continue;
				if (r.right > left.right + 1) return el.id || el.tagName;
				if (status.top < r.bottom && r.top < status.bottom && r.right > status.left) return (el.id || el.tagName) + " over the status";
			}
			return "" })()`)
		if over != "" {
			t.Errorf("at %d px %s runs past the left side", width, over)
		}
	}
}

// The slider's time is marked on the ladder: a line under the last row at
// or before it, none at the slider's end.
func TestPageLadderMarksTheSlider(t *testing.T) {
	ctx := browser(t)
	if err := pick(ctx, "hutu"); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#ladder svg line.now").length`); n != 0 {
		t.Errorf("at the slider's end %d marks", n)
	}
	// The client's FIN_WAIT2 (0.046 s): the line lies under that row, above
	// the next time's row.
	y := eval[float64](t, ctx, `(() => { const i = result.snapshots.findIndex(s => s.what.startsWith("client") && s.what.endsWith("-> FIN_WAIT2"));
		const sl = document.getElementById("time"); sl.value = String(i + 1); sl.dispatchEvent(new Event("input"));
		const l = document.querySelector("#ladder svg line.now"); return l ? Number(l.getAttribute("y1")) : -1 })()`)
	rows := eval[[]float64](t, ctx, `[...document.querySelectorAll("#ladder svg text.time")].filter(t => t.textContent === "0.046000").map(t => Number(t.getAttribute("y")))`)
	later := eval[[]float64](t, ctx, `[...document.querySelectorAll("#ladder svg text.time")].filter(t => Number(t.textContent) > 0.046).map(t => Number(t.getAttribute("y")))`)
	if len(rows) == 0 || len(later) == 0 || y <= rows[len(rows)-1] || y >= later[0] {
		t.Errorf("mark at y %v; rows at 0.046 s %v, next row %v", y, rows, later)
	}
}

// IPv6 and dual-stack scenarios in the page: the ladder names the hosts'
// addresses of both families, the events print IPv6 packet lines as
// tcpdump does (after its IP6 tag), with IPv6's MSS,
// and the socket tables spell addresses as ss does (a dual-stack listener
// is *:80, an IPv4 client of it an IPv4-mapped peer).
func TestPageIPv6(t *testing.T) {
	ctx := browser(t)
	if err := pick(ctx, "handshake-ipv6"); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#status"); !strings.HasPrefix(s, "handshake-ipv6: ") || !strings.Contains(s, "8 of 8 expectations held") {
		t.Errorf("status %q", s)
	}
	addrs := eval[[]string](t, ctx, `[...document.querySelectorAll("#ladder svg text.addr")].map(e => e.textContent)`)
	if strings.Join(addrs, "|") != "fd00::1|fd00::2" {
		t.Errorf("the ladder's addresses: %q", addrs)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#ladder svg line.seg").length`); n != 3 {
		t.Errorf("the ladder has %d arrows, want the handshake's 3", n)
	}
	events := eval[string](t, ctx, `document.getElementById("events").textContent`)
	if !strings.Contains(events, "fd00::2.80 > fd00::1.") || !strings.Contains(events, "> fd00::2.80: Flags [S], ") || !strings.Contains(events, "mss 1440") {
		t.Errorf("no tcpdump-style IPv6 packet line among the events: %q", events)
	}
	if c := text(t, ctx, `#snapshot table[data-host="server"]`); !strings.Contains(c, "*:80") || !strings.Contains(c, "[fd00::2]:80") || !strings.Contains(c, "[fd00::1]:") {
		t.Errorf("the server's sockets: %q", c)
	}
	src := `title Dual-stack in the page
host client fd00::1
host old 10.0.0.3
host server 10.0.0.2 fd00::2
server: listen 80
server: accept
client: connect server:80
until server: conn accept returned within 1s
server: accept as conn2
old: connect server:80
until server: conn2 accept returned within 1s
expect server: conn state ESTABLISHED
expect server: conn2 state ESTABLISHED
`
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("source"), src)); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#status"); !strings.HasPrefix(s, "edited: Dual-stack in the page") || !strings.Contains(s, "4 of 4 expectations held") {
		t.Errorf("status %q", s)
	}
	addrs = eval[[]string](t, ctx, `[...document.querySelectorAll("#ladder svg text.addr")].map(e => e.textContent)`)
	if strings.Join(addrs, "|") != "fd00::1|10.0.0.3|10.0.0.2 fd00::2" {
		t.Errorf("the ladder's addresses: %q", addrs)
	}
	c := text(t, ctx, `#snapshot table[data-host="server"]`)
	for _, want := range []string{"*:80", "[fd00::1]:", "[::ffff:10.0.0.2]:80", "[::ffff:10.0.0.3]:"} {
		if !strings.Contains(c, want) {
			t.Errorf("the server's sockets lack %q: %q", want, c)
		}
	}
	if c := text(t, ctx, `#snapshot table[data-host="old"]`); !strings.Contains(c, "10.0.0.3:") || strings.Contains(c, "::ffff:") {
		t.Errorf("the IPv4 client's sockets: %q", c)
	}
}
