package tcp

import (
	"fmt"
	"slices"
)

// Errno is an error number as a Linux program sees it. The values are
// Linux's, whatever platform the simulator runs on, so traces are the same
// everywhere.
type Errno uint16

const (
	OK            Errno = 0
	EPERM         Errno = 1
	EBADF         Errno = 9
	EAGAIN        Errno = 11
	EINVAL        Errno = 22
	EPIPE         Errno = 32
	ENOPROTOOPT   Errno = 92
	EOPNOTSUPP    Errno = 95
	EAFNOSUPPORT  Errno = 97
	EADDRINUSE    Errno = 98
	EADDRNOTAVAIL Errno = 99
	ENETUNREACH   Errno = 101
	ECONNABORTED  Errno = 103
	ECONNRESET    Errno = 104
	EISCONN       Errno = 106
	ENOTCONN      Errno = 107
	ETIMEDOUT     Errno = 110
	ECONNREFUSED  Errno = 111
	EHOSTUNREACH  Errno = 113
	EALREADY      Errno = 114
	EINPROGRESS   Errno = 115
)

var errnoText = map[Errno][2]string{
	EPERM:         {"EPERM", "operation not permitted"},
	EBADF:         {"EBADF", "bad file descriptor"},
	EAGAIN:        {"EAGAIN", "resource temporarily unavailable"},
	EINVAL:        {"EINVAL", "invalid argument"},
	EPIPE:         {"EPIPE", "broken pipe"},
	ENOPROTOOPT:   {"ENOPROTOOPT", "protocol not available"},
	EOPNOTSUPP:    {"EOPNOTSUPP", "operation not supported"},
	EAFNOSUPPORT:  {"EAFNOSUPPORT", "address family not supported by protocol"},
	EADDRINUSE:    {"EADDRINUSE", "address already in use"},
	EADDRNOTAVAIL: {"EADDRNOTAVAIL", "cannot assign requested address"},
	ENETUNREACH:   {"ENETUNREACH", "network is unreachable"},
	ECONNABORTED:  {"ECONNABORTED", "software caused connection abort"},
	ECONNRESET:    {"ECONNRESET", "connection reset by peer"},
	EISCONN:       {"EISCONN", "transport endpoint is already connected"},
	ENOTCONN:      {"ENOTCONN", "transport endpoint is not connected"},
	ETIMEDOUT:     {"ETIMEDOUT", "connection timed out"},
	ECONNREFUSED:  {"ECONNREFUSED", "connection refused"},
	EHOSTUNREACH:  {"EHOSTUNREACH", "no route to host"},
	EALREADY:      {"EALREADY", "operation already in progress"},
	EINPROGRESS:   {"EINPROGRESS", "operation now in progress"},
}

// Name is the symbolic name, "ECONNRESET"; "" for OK.
func (e Errno) Name() string {
	if e == OK {
		return ""
	}
	if t, ok := errnoText[e]; ok {
		return t[0]
	}
	return fmt.Sprintf("errno%d", uint16(e))
}

// Error is Linux's strerror text.
func (e Errno) Error() string {
	if t, ok := errnoText[e]; ok {
		return t[1]
	}
	return fmt.Sprintf("errno %d", uint16(e))
}

// ParseErrno reads a symbolic name such as "ECONNREFUSED".
func ParseErrno(name string) (Errno, bool) {
	for e, t := range errnoText {
		if t[0] == name {
			return e, true
		}
	}
	return 0, false
}

// Errnos lists the errno values the engine can return, by number.
func Errnos() []Errno {
	out := make([]Errno, 0, len(errnoText))
	for e := range errnoText {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}
