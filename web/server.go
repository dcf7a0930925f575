// Package web serves tcplab's page: the scenario library, an editor, Run,
// and the pictures, events and socket tables of the run.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tcplab/tcplab/draw"
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
}

// Server is the page's handler and the runs it has going.
type Server struct {
	o       Options
	sim     chan struct{} // simulator runs at once
	krn     chan struct{} // kernel runs at once (one)
	handler http.Handler

	mu      sync.Mutex
	running map[*scenario.Backend]struct{}
	wg      sync.WaitGroup
}

// interrupter is a backend that can stop a run midway (the kernel's).
type interrupter interface{ Interrupt(error) }

// NewHandler returns the page, its assets and its API:
//
//	GET  /                     the page
//	GET  /api/info             {"kernel": bool}
//	GET  /api/scenarios        the library: [{"name","title"}]
//	GET  /api/scenarios/NAME   a built-in scenario's source (text)
//	POST /api/run              {"source","name","backend":"sim"|"kernel","seed"} -> RunResult
func NewHandler(o Options) http.Handler { return NewServer(o) }

// NewServer is NewHandler with a Stop for the runs going on.
func NewServer(o Options) *Server {
	s := &Server{o: o, sim: make(chan struct{}, 4), krn: make(chan struct{}, 1), running: map[*scenario.Backend]struct{}{}}
	if s.o.KernelTimeout == 0 {
		s.o.KernelTimeout = 5 * time.Minute
	}
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(sub))
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"kernel": s.o.Kernel != nil})
	})
	mux.HandleFunc("GET /api/scenarios", s.list)
	mux.HandleFunc("GET /api/scenarios/{name}", s.source)
	mux.HandleFunc("POST /api/run", s.run)
	s.handler = mux
	return s
}

// ServeHTTP serves the page and the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.o.LoopbackOnly && !loopbackHost(r.Host) {
		http.Error(w, "this server answers only to a loopback name (127.0.0.1, [::1], localhost)", http.StatusForbidden)
		return
	}
	s.handler.ServeHTTP(w, r)
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsLoopback()
}

// Stop interrupts the runs going on (a kernel run stops at its next step
// and removes its namespaces) and waits for them to end.
func (s *Server) Stop() {
	s.mu.Lock()
	for b := range s.running {
		if i, ok := (*b).(interrupter); ok {
			i.Interrupt(errors.New("the server is stopping"))
		}
	}
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
	switch {
	case errors.As(err, &list):
		out := make([]ErrorAt, 0, len(list))
		for _, e := range list {
			out = append(out, errorAt(e))
		}
		return out
	case errors.As(err, &one):
		return []ErrorAt{errorAt(one)}
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
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		http.Error(w, "runs are not taken from other sites' pages", http.StatusForbidden)
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
	sc, err := scenario.Parse(name, req.Source)
	if err != nil {
		writeJSON(w, http.StatusOK, RunResult{Errors: errorsOf(err)})
		return
	}
	mk, slots, timeout := s.o.Sim, s.sim, SimTimeout
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
	// The slot is held by the run itself, until it has ended, also when
	// the request gave up on it.
	select {
	case slots <- struct{}{}:
	default:
		http.Error(w, "too many runs at once; try again", http.StatusServiceUnavailable)
		return
	}
	b, desc, err := mk(max(req.Seed, 1))
	if err != nil {
		<-slots
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	type outcome struct {
		res    *scenario.Result
		events []trace.Event
		err    error
	}
	done := make(chan outcome, 1)
	s.mu.Lock()
	s.running[&b] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.running, &b)
			s.mu.Unlock()
			<-slots
			s.wg.Done()
		}()
		defer b.Close() // a kernel run's namespaces and rules
		var rec trace.Recorder
		res, err := scenario.Run(sc, b, scenario.Options{Sink: rec.Sink()})
		if i, ok := b.(interface{ Interrupted() error }); ok && err == nil {
			err = i.Interrupted()
		}
		done <- outcome{res, rec.Events, err}
	}()
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var out outcome
	select {
	case out = <-done:
	case <-ctx.Done():
		// A kernel run stops at its next step; the simulator cannot be
		// stopped midway. Either way the slot stays taken until the run
		// has ended, so runaway runs cannot pile up.
		if i, ok := b.(interrupter); ok {
			i.Interrupt(fmt.Errorf("the run took longer than %v", timeout))
		}
		http.Error(w, fmt.Sprintf("the run took longer than %v, or the page went away", timeout), http.StatusServiceUnavailable)
		return
	}
	if out.err != nil {
		writeJSON(w, http.StatusOK, RunResult{Errors: errorsOf(out.err)})
		return
	}
	writeJSON(w, http.StatusOK, result(out.res, out.events, desc, start))
}

func result(res *scenario.Result, events []trace.Event, backend string, start time.Time) RunResult {
	out := RunResult{Report: draw.NewReport(res, events, draw.ReportOptions{Backend: backend})}
	out.Took = float64(time.Since(start).Microseconds()) / 1000
	return out
}
