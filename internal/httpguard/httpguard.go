// Package httpguard holds the request checks tcplab's HTTP servers (the
// page of tcplab serve, tcplab exporter) share.
package httpguard

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// LoopbackHost reports whether hostport, an HTTP Host header (host or
// host:port), names this machine's loopback: localhost in any case, or a
// loopback address (127.0.0.0/8, ::1, bracketed or not).
//
// A server listening on loopback checks this against DNS rebinding: a web
// page can point a name it controls at 127.0.0.1 and then talk to the
// server as the same origin, but the browser still sends its own name as
// the Host.
func LoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsLoopback()
}

// LoopbackOnly returns a handler that passes to next the requests whose
// Host is a loopback name (LoopbackHost) and answers the others 403
// Forbidden with refusal, a sentence saying why and what to do instead.
func LoopbackOnly(next http.Handler, refusal string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LoopbackHost(r.Host) {
			http.Error(w, refusal, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
