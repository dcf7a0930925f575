package kernel

import (
	"github.com/tcplab/tcplab/inspect"
)

// Linux's TCP states, as sock_diag and the tracepoint number them.
const (
	tcpEstablished = inspect.Established
	tcpSynSent     = inspect.SynSent
	tcpSynRecv     = inspect.SynRecv
	tcpFinWait1    = inspect.FinWait1
	tcpFinWait2    = inspect.FinWait2
	tcpTimeWait    = inspect.TimeWait
	tcpClose       = inspect.Close
	tcpCloseWait   = inspect.CloseWait
	tcpLastAck     = inspect.LastAck
	tcpListen      = inspect.Listen
	tcpClosing     = inspect.Closing
	tcpNewSynRecv  = inspect.NewSynRecv
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
