package full

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tcplab/tcplab/internal/cli"

	"github.com/spf13/cobra"

	"github.com/tcplab/tcplab/inspect"
	"github.com/tcplab/tcplab/internal/httpguard"
)

func newExporter(stdout io.Writer) *cobra.Command {
	var (
		tf          cli.TargetFlags
		listen      string
		topPorts    int
		allowRemote bool
	)
	cmd := &cobra.Command{
		Use:   "exporter",
		Short: cli.FullCommandShort("exporter"),
		Long: `exporter serves Prometheus metrics on /metrics. Each scrape samples the
host as tcplab doctor does (sock_diag, /proc/net/netstat, snmp, sockstat,
sysctls) and exports:

  tcplab_sockets{state,port}         sockets per state and local port: the
                                     --top-ports listening ports with the most
                                     sockets by number, the other listening
                                     ports as port="other", sockets whose local
                                     port has no listener as port="outgoing"
  tcplab_sockets_by_state{state}     sockets per state, all ports together
  tcplab_tcpext_listen_overflows_total, tcplab_tcp_retrans_segs_total, ...
                                     the kernel's counters of groups Tcp and
                                     TcpExt, one metric each, in snake_case
  tcplab_tcp_curr_estab, tcplab_tcp_rto_max_seconds, ...
                                     Tcp's gauges (CurrEstab, MaxConn, Rto*),
                                     times in seconds
  tcplab_sockstat_tcp_inuse, tcplab_sockstat_tcp_mem_bytes, ...
                                     sockstat TCP and TCP6: inuse, orphan, tw,
                                     alloc, and mem in bytes
  tcplab_doctor_findings{kind,level} the doctor's findings between the previous
                                     scrape and this one, every kind at levels
                                     warning and error (0 on the first scrape)
  tcplab_scrape_duration_seconds     how long sampling and diagnosing took
  tcplab_scrape_errors_total         scrapes that could not sample the host
                                     (each one is answered with HTTP 500 and
                                     the error)

Only tcplab's metrics: there are no process_* or go_* metrics of the
exporter itself.

The doctor compares consecutive scrapes, so its findings cover the scrape
interval: a CLOSE_WAIT socket still there one scrape later is a leak, counter
rates are per interval. Scrapes are serialized.

The exporter listens on loopback only unless --allow-remote is given: the
metrics name this host's ports and problems. Without --allow-remote it also
answers only requests whose Host is a loopback name or address (localhost,
127.0.0.1, [::1]; others get 403 Forbidden), so that a web page cannot read
the metrics through a name of its own pointed at 127.0.0.1 (DNS rebinding).

Root is not needed for your own namespace, but CLOSE_WAIT findings name
processes only where /proc lets you look.`,
		Example: `  tcplab exporter
  tcplab exporter --listen 127.0.0.1:9469 --top-ports 20
  sudo tcplab exporter --netns-pid 4242 --listen 127.0.0.1:9470
  tcplab exporter --listen 0.0.0.0:9469 --allow-remote

  # prometheus.yml
  scrape_configs:
    - job_name: tcplab
      static_configs: [{targets: ["127.0.0.1:9469"]}]

  # alerting rules, a DaemonSet for every node of a cluster and a Grafana
  # dashboard: deploy/ in tcplab's repository`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if topPorts <= 0 {
				return fmt.Errorf("--top-ports must be positive")
			}
			listen = bracketIPv6(listen)
			if err := checkListen(listen, allowRemote, "the metrics show this host's ports, connections and problems"); err != nil {
				return err
			}
			h, err := inspect.OpenHost(tf.Target())
			if err != nil {
				return err
			}
			defer h.Close()
			c := inspect.NewCollector(h, inspect.CollectorOptions{TopPorts: topPorts})
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(stdout, "serving metrics on http://%s/metrics\n", ln.Addr())
			return serveHTTP(ctx, ln, metricsHandler(c, tf.Target(), !allowRemote))
		},
	}
	tf.Add(cmd)
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9469", "address to serve the metrics on (host:port; an IPv6 host in brackets, or bare: its last colon is the port's)")
	cmd.Flags().IntVar(&topPorts, "top-ports", inspect.DefaultTopPorts, "listening ports labeled by number, those with the most sockets; the others are port=\"other\"")
	cmd.Flags().BoolVar(&allowRemote, "allow-remote", false, "serve on a --listen address that is not loopback, and answer requests to any host name (without it: loopback addresses and names only)")
	return cmd
}

// bracketIPv6 puts an IPv6 address given without brackets ("fd00::1:9469",
// as a Kubernetes manifest makes of $(POD_IP):9469) in brackets: its last
// colon is the port's.
func bracketIPv6(addr string) string {
	if strings.Count(addr, ":") < 2 || strings.HasPrefix(addr, "[") {
		return addr
	}
	i := strings.LastIndexByte(addr, ':')
	host, port := addr[:i], addr[i+1:]
	if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() || port == "" {
		return addr
	}
	return net.JoinHostPort(host, port)
}

// checkListen refuses addresses other hosts could reach unless allowed;
// exposes says what they would reach.
func checkListen(addr string, allowRemote bool, exposes string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	if allowRemote || httpguard.LoopbackHost(host) {
		return nil
	}
	what := host
	if what == "" {
		what = "every interface"
	}
	return fmt.Errorf("--listen %s: %s is not a loopback address, and %s to anyone who can reach it; give --allow-remote to serve there anyway (and restrict access with a firewall), or listen on 127.0.0.1", addr, what, exposes)
}

// Limits on /metrics, as the Prometheus client library's handler had them.
const (
	maxScrapesInFlight = 4
	scrapeTimeout      = 30 * time.Second
)

// loopbackRefusal answers a request to an exporter on loopback whose Host
// is not a loopback name.
const loopbackRefusal = "tcplab exporter answers only to a loopback host name (localhost, 127.0.0.1, [::1]), " +
	"so that web pages cannot read this host's metrics through a name of their own (DNS rebinding); " +
	"scrape it as 127.0.0.1, or start it with --allow-remote to accept other names"

// metricsHandler serves the collector's metrics on /metrics and a short
// page on /; loopbackOnly refuses requests whose Host is not a loopback
// name (see httpguard.LoopbackOnly). c is an *inspect.Collector but for
// tests.
func metricsHandler(c io.WriterTo, t inspect.Target, loopbackOnly bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", http.TimeoutHandler(scrapeHandler(c), scrapeTimeout, "scrape timed out\n"))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html>
<html><head><title>tcplab exporter</title></head>
<body><h1>tcplab exporter</h1>
<p>TCP states, kernel counters and doctor findings of %s as Prometheus metrics: <a href="/metrics">/metrics</a>.</p>
</body></html>
`, html.EscapeString(t.String()))
	})
	if loopbackOnly {
		return httpguard.LoopbackOnly(mux, loopbackRefusal)
	}
	return mux
}

// scrapeHandler answers GET and HEAD with one scrape of c in the text
// exposition format, gzipped if the client accepts it; a scrape that fails
// is an HTTP 500 with the error. At most maxScrapesInFlight requests wait
// for a scrape at once (the collector serializes them); more get a 503.
func scrapeHandler(c io.WriterTo) http.Handler {
	inFlight := make(chan struct{}, maxScrapesInFlight)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: /metrics takes GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		select {
		case inFlight <- struct{}{}:
			defer func() { <-inFlight }()
		default:
			http.Error(w, "too many scrapes in flight", http.StatusServiceUnavailable)
			return
		}
		var b bytes.Buffer
		if _, err := c.WriteTo(&b); err != nil {
			http.Error(w, "scrape failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", inspect.ExpositionContentType)
		h.Add("Vary", "Accept-Encoding")
		body := b.Bytes()
		if acceptsGzip(r.Header) {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(body)
			if zw.Close() == nil {
				h.Set("Content-Encoding", "gzip")
				body = z.Bytes()
			}
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body) // nothing is sent for HEAD
	})
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q, has := strings.CutPrefix(strings.TrimSpace(params), "q=")
			if !has {
				return true
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(q), 64)
			return err == nil && f > 0
		}
	}
	return false
}

// serveHTTP serves h on ln until ctx ends, then shuts the server down,
// letting requests in progress finish for a few seconds.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Connections still busy after 5 s (a client that does not read
		// its answer) are closed.
		srv.Close()
	}
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
