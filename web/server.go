// Package web serves tcplab's page: the scenario library, an editor, Run,
// and the pictures, events and socket tables of the run.
package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcplab/tcplab/draw"
	"github.com/tcplab/tcplab/internal/httpguard"
	"github.com/tcplab/tcplab/pkt"
	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
)

//go:embed static
var static embed.FS

// Limits of one run request.
const (
	MaxSource  = 64 << 10 // bytes of scenario text
	SimTimeout = 10 * time.Second
)

// Backend makes the backend a run uses; the kernel one may be nil.
type Backend func(seed uint64) (scenario.Backend, string, error)

// Options configure the server.
type Options struct {
	Sim    Backend // required
	Kernel Backend // nil when kernel runs are not offered (not root)
	// KernelTimeout bounds a kernel run's wall time.
	KernelTimeout time.Duration
	// LoopbackOnly refuses requests whose Host is not a loopback name or
	// address, so that a web page cannot reach the server through a name
	// it controls (DNS rebinding).
	LoopbackOnly bool
	// SimTimeout bounds a simulator run's wall time; 0 means SimTimeout.
	SimTimeout time.Duration
	// Budget bounds each run's events, their memory and its condition
	// tests; zero fields take PageBudget's.
	Budget scenario.Budget
	// MaxUnsent bounds the bytes of answers being written at once (to
	// clients that read slowly or not at all); 0 means MaxUnsent. One
	// answer is always let through.
	MaxUnsent int64
}

// PageBudget is a page run's budget: a quarter of the command line's
// events (60 times the largest built-in run; a page of more would not be
// read), so that four runs at once and their reports stay within about a
// gigabyte.
var PageBudget = scenario.Budget{MaxEvents: 50_000, MaxBytes: 32 << 20, MaxWork: scenario.DefaultBudget.MaxWork}

// Server is the page's handler and the runs it has going.
type Server struct {
	o       Options
	sim     chan struct{} // simulator runs at once
	krn     chan struct{} // kernel runs at once (one)
	handler http.Handler

	ctx  context.Context // cancelled by Stop: every run stops
	stop context.CancelCauseFunc
	mu   sync.Mutex // orders wg.Add after Stop's cancel
	wg   sync.WaitGroup

	unsent atomic.Int64 // bytes of answers being written
}

// NewHandler returns the page, its assets and its API:
//
//	GET  /                     the page
//	GET  /api/info             {"kernel": bool}
//	GET  /api/scenarios        the library: [{"name","title"}]
//	GET  /api/scenarios/NAME   a built-in scenario's source (text)
//	POST /api/run              {"source","name","backend":"sim"|"kernel","seed"} -> RunResult
//	POST /api/explain?conn=N   a capture's bytes (pcap, pcapng, gzip) -> ExplainResult
func NewHandler(o Options) http.Handler { return NewServer(o) }

// NewServer is NewHandler with a Stop for the runs going on.
func NewServer(o Options) *Server {
	s := &Server{o: o, sim: make(chan struct{}, 4), krn: make(chan struct{}, 1)}
	s.ctx, s.stop = context.WithCancelCause(context.Background())
	if s.o.KernelTimeout == 0 {
		s.o.KernelTimeout = 5 * time.Minute
	}
	if s.o.SimTimeout == 0 {
		s.o.SimTimeout = SimTimeout
	}
	if s.o.MaxUnsent == 0 {
		s.o.MaxUnsent = MaxUnsent
	}
	s.o.Budget = s.o.Budget.Or(PageBudget)
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(sub))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		// The page's icon, for the browser's tab (and no 404 in its log).
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "max-age=86400")
		io.WriteString(w, favicon)
	})
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"kernel": s.o.Kernel != nil})
	})
	mux.HandleFunc("GET /api/scenarios", s.list)
	mux.HandleFunc("GET /api/scenarios/{name}", s.source)
	mux.HandleFunc("POST /api/run", s.run)
	mux.HandleFunc("POST /api/explain", s.explain)
	// Posts that a browser marks as coming from another site, or whose
	// Origin is not the Host they were sent to, are refused (Go's CSRF
	// protection: Sec-Fetch-Site, else Origin against Host).
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "runs are not taken from other sites' pages", http.StatusForbidden)
	}))
	s.handler = cop.Handler(mux)
	if s.o.LoopbackOnly {
		s.handler = httpguard.LoopbackOnly(s.handler, "this server answers only to a loopback name (127.0.0.1, [::1], localhost)")
	}
	return s
}

// ServeHTTP serves the page and the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Stop stops the runs going on (a simulator run at its next event, a
// kernel run at its next step, removing its namespaces) and waits for
// them to end.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stop(errors.New("the server is stopping"))
	s.mu.Unlock()
	s.wg.Wait()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	lib, err := scenario.Library()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	type item struct {
		Name  string `json:"name"`
		Title string `json:"title"`
	}
	out := make([]item, 0, len(lib))
	for _, sc := range lib {
		out = append(out, item{sc.Name, sc.Title})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) source(w http.ResponseWriter, r *http.Request) {
	src, ok := scenario.BuiltinSource(r.PathValue("name"))
	if !ok {
		http.Error(w, "no built-in scenario "+r.PathValue("name"), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, src)
}

// RunRequest is what the page posts.
type RunRequest struct {
	Source  string `json:"source"`
	Name    string `json:"name"` // file name for messages; "scenario.tcplab" if empty
	Backend string `json:"backend"`
	Seed    uint64 `json:"seed"`
}

// ErrorAt is a problem in the scenario text, at a line and column.
type ErrorAt struct {
	Line int    `json:"line"`
	Col  int    `json:"col"`
	Msg  string `json:"msg"`
}

// RunResult is what a run returns to the page: the report of the run, or
// the errors that stopped it.
type RunResult struct {
	Errors []ErrorAt `json:"errors,omitempty"` // the text did not parse or run
	draw.Report
	Took float64 `json:"took_ms"`
}

func errorsOf(err error) []ErrorAt {
	var list scenario.ErrorList
	var one *scenario.Error
	var stopped *scenario.StoppedError
	switch {
	case errors.As(err, &list):
		out := make([]ErrorAt, 0, len(list))
		for _, e := range list {
			out = append(out, errorAt(e))
		}
		return out
	case errors.As(err, &one):
		return []ErrorAt{errorAt(one)}
	case errors.As(err, &stopped):
		return []ErrorAt{{Line: stopped.Pos.Line, Col: stopped.Pos.Col, Msg: fmt.Sprintf("the run stopped at %ss: %s", trace.FormatTime(stopped.At), stopped.Reason)}}
	}
	return []ErrorAt{{Msg: err.Error()}}
}

func errorAt(e *scenario.Error) ErrorAt {
	msg := e.Msg
	if e.Hint != "" {
		msg += " (hint: " + e.Hint + ")"
	}
	return ErrorAt{Line: e.Pos.Line, Col: e.Pos.Col, Msg: msg}
}

func (s *Server) run(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req RunRequest
	// A page posts JSON; a form or a text/plain post from another site
	// cannot set this type without a preflight the server does not answer.
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		http.Error(w, "post the run as application/json", http.StatusUnsupportedMediaType)
		return
	}
	// JSON escapes can make the text up to six times longer.
	body := http.MaxBytesReader(w, r.Body, 6*MaxSource+4096)
	if err := json.NewDecoder(body).Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("the scenario is longer than %d bytes", MaxSource), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(req.Source) > MaxSource {
		http.Error(w, fmt.Sprintf("the scenario is longer than %d bytes", MaxSource), http.StatusRequestEntityTooLarge)
		return
	}
	name := req.Name
	if name == "" || strings.ContainsAny(name, "/\\") {
		name = "scenario.tcplab"
	}
	if strings.HasSuffix(name, ".pkt") {
		s.runPkt(w, req, name, start)
		return
	}
	sc, err := scenario.Parse(name, req.Source)
	if err != nil {
		writeJSON(w, http.StatusOK, RunResult{Errors: errorsOf(err)})
		return
	}
	mk, slots, timeout := s.o.Sim, s.sim, s.o.SimTimeout
	switch req.Backend {
	case "", "sim":
	case "kernel":
		if s.o.Kernel == nil {
			http.Error(w, "kernel runs need the server to run as root", http.StatusForbidden)
			return
		}
		mk, slots, timeout = s.o.Kernel, s.krn, s.o.KernelTimeout
	default:
		http.Error(w, "backend is sim or kernel", http.StatusBadRequest)
		return
	}
	select {
	case slots <- struct{}{}:
	default:
		http.Error(w, "too many runs at once; try again", http.StatusServiceUnavailable)
		return
	}
	// The run stops when its request ends (the page went away), when it
	// takes too long, or when the server stops: a simulator run at its
	// next event, a kernel run at its next step. The slot is held until
	// the run has ended, which the handler waits for, so it is free when
	// the answer goes out.
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	defer context.AfterFunc(s.ctx, func() { cancel(context.Cause(s.ctx)) })()
	tooLong := fmt.Errorf("the run took longer than %v", timeout)
	defer time.AfterFunc(timeout, func() { cancel(tooLong) }).Stop()
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		<-slots
		http.Error(w, "the server is stopping", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	code, answer := func() (int, []byte) {
		defer func() {
			<-slots
			s.wg.Done()
		}()
		return s.answer(ctx, sc, mk, req.Seed, start)
	}()
	s.send(w, code, answer)
}

// send writes a run's answer. The slot is free before it is written: a
// client that does not read its answer holds a connection, not a run,
// and only for WriteTimeout.
func (s *Server) send(w http.ResponseWriter, code int, answer []byte) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	if code != http.StatusOK {
		http.Error(w, string(answer), code)
		return
	}
	// Answers waiting for slow readers are bounded in all.
	n := int64(len(answer))
	defer s.unsent.Add(-n)
	if total := s.unsent.Add(n); total > s.o.MaxUnsent && total != n {
		http.Error(w, "too many answers are waiting to be read; try again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(answer)
}

// WriteTimeout bounds the writing of a run's answer, and MaxUnsent the
// bytes of answers being written at once (a page run's answer is up to
// about 20 MB).
const (
	WriteTimeout = 30 * time.Second
	MaxUnsent    = 256 << 20
)

// answer runs a scenario and makes the answer: a status and, for 200, the
// JSON of the result (the report, the errors that stopped it, or both),
// else a message.
func (s *Server) answer(ctx context.Context, sc *scenario.Scenario, mk Backend, seed uint64, start time.Time) (int, []byte) {
	b, desc, err := mk(max(seed, 1))
	if err != nil {
		return http.StatusInternalServerError, []byte(err.Error())
	}
	var rec trace.Recorder
	res, err := func() (*scenario.Result, error) {
		defer b.Close() // a kernel run's namespaces and rules
		res, err := scenario.Run(sc, b, scenario.Options{Sink: rec.Sink(), Context: ctx, Budget: s.o.Budget})
		if i, ok := b.(interface{ Interrupted() error }); ok && err == nil {
			err = i.Interrupted()
		}
		return res, err
	}()
	var stopped *scenario.StoppedError
	if errors.As(err, &stopped) && stopped.Cause != nil {
		return http.StatusServiceUnavailable, []byte(context.Cause(ctx).Error() + "; the run was stopped")
	}
	var out RunResult
	switch {
	case err != nil && res != nil:
		// What the run did up to a budget limit, and the limit.
		out = result(res, rec.Events, desc, start)
		out.Errors = errorsOf(err)
	case err != nil:
		out = RunResult{Errors: errorsOf(err)}
	default:
		out = result(res, rec.Events, desc, start)
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(out); err != nil {
		return http.StatusInternalServerError, []byte(err.Error())
	}
	return http.StatusOK, buf.Bytes()
}

func result(res *scenario.Result, events []trace.Event, backend string, start time.Time) RunResult {
	out := RunResult{Report: draw.NewReport(res, events, draw.ReportOptions{Backend: backend})}
	out.Took = float64(time.Since(start).Microseconds()) / 1000
	return out
}

// runPkt plays a packetdrill script (a file name ending in .pkt) on the
// engine, within the page's budget of events, and answers with the same
// report as a scenario's: its verdict as one check, its pictures and
// tables. A script that does not parse answers with its errors; one that
// failed, with its report and the line where it failed. Scripts run on
// the simulator only: a kernel run keeps the script's own time, which a
// page request must not wait for.
func (s *Server) runPkt(w http.ResponseWriter, req RunRequest, name string, start time.Time) {
	if req.Backend != "" && req.Backend != "sim" {
		http.Error(w, "packetdrill scripts run on the simulator here (tcplab pkt --kernel runs them on the kernel)", http.StatusBadRequest)
		return
	}
	script, err := pkt.Parse(name, req.Source)
	if err != nil {
		var pe *pkt.Error
		if errors.As(err, &pe) {
			writeJSON(w, http.StatusOK, RunResult{Errors: []ErrorAt{{Line: pe.Line, Col: pe.Col, Msg: pe.Msg}}})
			return
		}
		writeJSON(w, http.StatusOK, RunResult{Errors: []ErrorAt{{Msg: err.Error()}}})
		return
	}
	s.inSimSlot(w, func() (int, []byte) {
		// The engine's run is bounded by the page's budget of events and
		// bytes (virtual time costs no wall time), so it needs no timer.
		var rec trace.Recorder
		res := pkt.RunEngine(script, pkt.Options{Seed: max(req.Seed, 1), Sink: rec.Sink(), NoFiles: true,
			MaxEvents: s.o.Budget.MaxEvents, MaxBytes: s.o.Budget.MaxBytes})
		explain := "pass"
		if res.Status != pkt.Pass {
			explain = res.Error()
			if res.Stack != "" {
				explain += "\n" + res.Stack
			}
		}
		check := trace.Check{Line: res.Line, Text: "the script plays to its end", Seen: res.Status.String() + ": " + explain, OK: res.Status == pkt.Pass}
		out := RunResult{Report: draw.NewTraceReport(name+": packetdrill script", explain, "engine (linux profile, virtual time)",
			res.Hosts, []trace.Check{check}, res.End, rec.Events, draw.ReportOptions{})}
		if res.Status != pkt.Pass {
			out.Errors = []ErrorAt{{Line: res.Line, Msg: res.Status.String() + ": " + res.Msg}}
		}
		out.Took = float64(time.Since(start).Microseconds()) / 1000
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(out); err != nil {
			return http.StatusInternalServerError, []byte(err.Error())
		}
		return http.StatusOK, buf.Bytes()
	})
}

// inSimSlot does work in one of the simulator's slots and sends its
// answer; it answers 503 when every slot is taken or the server stops.
// The slot is free before the answer is written.
func (s *Server) inSimSlot(w http.ResponseWriter, work func() (int, []byte)) {
	select {
	case s.sim <- struct{}{}:
	default:
		http.Error(w, "too many runs at once; try again", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		<-s.sim
		http.Error(w, "the server is stopping", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	code, answer := func() (int, []byte) {
		defer func() {
			<-s.sim
			s.wg.Done()
		}()
		return work()
	}()
	s.send(w, code, answer)
}

// favicon is the page's icon: a ladder's two lifelines and an arrow.
const favicon = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#10305f"/>` +
	`<path d="M4 3v10M12 3v10" stroke="#fff" stroke-width="1.5"/><path d="M4 6l8 4" stroke="#f0b429" stroke-width="1.5"/></svg>`
