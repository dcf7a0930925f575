package kernel

import (
	"github.com/tcplab/tcplab/inspect"
)

func stateName(s inspect.State) string { return s.String() }

// diagConn lists one namespace's sockets with their tcp_info.
type diagConn struct {
	d      *inspect.Diag
	family int // 4: IPv4 sockets only (a host without IPv6); 0: both
}

// openDiag opens sock_diag in the calling thread's namespace; v6 asks for
// IPv6 sockets too.
func openDiag(v6 bool) (*diagConn, error) {
	d, err := inspect.OpenDiag()
	if err != nil {
		return nil, err
	}
	c := &diagConn{d: d, family: 4}
	if v6 {
		c.family = 0
	}
	return c, nil
}

func (c *diagConn) close() error { return c.d.Close() }

// dump lists the TCP sockets whose state is in the mask, IPv4's then
// IPv6's; the kernel applies the mask. A request sock comes back as
// NewSynRecv.
func (c *diagConn) dump(states inspect.StateMask) ([]inspect.Socket, error) {
	socks, err := c.d.Dump(inspect.Filter{States: states, Family: c.family, Info: true})
	for i := range socks {
		if isRequest(&socks[i]) {
			socks[i].State = inspect.NewSynRecv
		}
	}
	return socks, err
}

// isRequest tells a request sock from a full socket in SYN_RECV: sock_diag
// reports both as TCP_SYN_RECV (inet_req_diag_fill), but only a full
// socket has a tcp_info to give.
func isRequest(d *inspect.Socket) bool {
	return d.State == inspect.NewSynRecv || d.State == inspect.SynRecv && d.Info == nil
}

const allStates = inspect.AllStates
