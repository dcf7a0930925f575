package tcp

import "time"

// chronoType is Linux's enum tcp_chrono: what limits a sender; a higher
// value takes over from a lower one.
type chronoType uint8

const (
	chronoNone   chronoType = iota // nothing to send (TCP_CHRONO_UNSPEC)
	chronoBusy                     // sending (TCP_CHRONO_BUSY)
	chronoRwnd                     // stalled by the peer's window (TCP_CHRONO_RWND_LIMITED)
	chronoSndbuf                   // stalled by the send buffer (TCP_CHRONO_SNDBUF_LIMITED)
)

// chronoSet is tcp_chrono_set: account the time of the current type,
// then switch.
func (c *conn) chronoSet(t chronoType) {
	now := c.h.now
	if c.chrono != chronoNone {
		c.chronoStat[c.chrono] += now - c.chronoStart
	}
	c.chronoStart, c.chrono = now, t
}

// chronoStartT is tcp_chrono_start.
func (c *conn) chronoStartT(t chronoType) {
	if t > c.chrono {
		c.chronoSet(t)
	}
}

// chronoStopT is tcp_chrono_stop: with nothing left to send or
// acknowledge the sender is idle, else a limit that ended leaves it busy.
func (c *conn) chronoStopT(t chronoType) {
	if c.sndUna == c.sndBase.Add(c.snd.Len()) && (!c.finQueued || c.finAcked()) {
		c.chronoSet(chronoNone)
	} else if t == c.chrono {
		c.chronoSet(chronoBusy)
	}
}

// chronoTimes are tcpi_busy_time, tcpi_rwnd_limited and
// tcpi_sndbuf_limited: busy counts the two limits too.
func (c *conn) chronoTimes() (busy, rwnd, sndbuf time.Duration) {
	stat := c.chronoStat
	if c.chrono != chronoNone {
		stat[c.chrono] += c.h.now - c.chronoStart
	}
	return stat[chronoBusy] + stat[chronoRwnd] + stat[chronoSndbuf], stat[chronoRwnd], stat[chronoSndbuf]
}
