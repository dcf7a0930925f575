package kernel

import (
	"github.com/tcplab/tcplab/inspect"
)

func stateName(s inspect.State) string { return s.String() }

// diagConn lists one namespace's sockets with their tcp_info.
type diagConn struct{ d *inspect.Diag }

func openDiag() (*diagConn, error) {
	d, err := inspect.OpenDiag()
	if err != nil {
		return nil, err
	}
	return &diagConn{d}, nil
}

func (c *diagConn) close() error { return c.d.Close() }

// dump lists the IPv4 TCP sockets whose state is in the mask; the kernel
// applies the mask.
func (c *diagConn) dump(states inspect.StateMask) ([]inspect.Socket, error) {
	return c.d.Dump(inspect.Filter{States: states, Family: 4, Info: true})
}

const allStates = inspect.AllStates
