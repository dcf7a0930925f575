package inspect

import (
	"bufio"
	"encoding/json"
	"io"
	"net/netip"
	"strconv"

	"github.com/tcplab/tcplab/trace"
)

// TableOptions chooses the columns of WriteTable.
type TableOptions struct {
	Procs  bool // the owning processes (needs Owners)
	Timers bool // ss -o: timer, time left, retransmissions
	Info   bool // ss -i: tcp_info (needs sockets dumped with Filter.Info)
	// Extended is ss -e: the owner's uid (when not root), the inode and
	// the socket's cookie.
	Extended bool
	// Memory is ss -m: the socket's memory (needs Filter.Memory).
	Memory bool
	// NoHeader is ss -H: no header line.
	NoHeader bool
}

// endpoint writes an address as ss does: "*" for port 0, brackets for
// IPv6.
func endpoint(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr()
	if a.Is6() {
		b = append(b, '[')
		b = a.AppendTo(b)
		b = append(b, ']')
	} else {
		b = a.AppendTo(b)
	}
	b = append(b, ':')
	if ap.Port() == 0 {
		return append(b, '*')
	}
	return strconv.AppendUint(b, uint64(ap.Port()), 10)
}

func pad(b []byte, from, width int) []byte {
	for n := len(b) - from; n < width; n++ {
		b = append(b, ' ')
	}
	return b
}

// WriteTable writes sockets as ss -tan does: State, Recv-Q, Send-Q,
// Local Address:Port, Peer Address:Port, then the optional columns.
func WriteTable(w io.Writer, socks []Socket, owners Owners, o TableOptions) error {
	lw, pw := len("Local Address:Port"), len("Peer Address:Port")
	var scratch []byte
	for i := range socks {
		scratch = endpoint(scratch[:0], socks[i].Local)
		lw = max(lw, len(scratch))
		scratch = endpoint(scratch[:0], socks[i].Remote)
		pw = max(pw, len(scratch))
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	line := make([]byte, 0, 256)
	line = append(line, "State       Recv-Q Send-Q "...)
	start := len(line)
	line = append(line, "Local Address:Port"...)
	line = pad(line, start, lw+1)
	start = len(line)
	line = append(line, "Peer Address:Port"...)
	details := o.Procs || o.Timers || o.Info || o.Extended || o.Memory
	if details {
		line = pad(line, start, pw+1)
		line = append(line, "Details"...)
	}
	line = append(line, '\n')
	if !o.NoHeader {
		bw.Write(line)
	}
	for i := range socks {
		s := &socks[i]
		line = line[:0]
		line = append(line, s.State.SSName()...)
		line = pad(line, 0, 11)
		line = append(line, ' ')
		line = rightNum(line, uint64(s.RecvQ), 6)
		line = append(line, ' ')
		line = rightNum(line, uint64(s.SendQ), 6)
		line = append(line, ' ')
		start := len(line)
		line = endpoint(line, s.Local)
		line = pad(line, start, lw+1)
		start = len(line)
		line = endpoint(line, s.Remote)
		if details {
			line = pad(line, start, pw+1)
			line = appendDetails(line, s, owners, o)
		}
		line = append(line, '\n')
		bw.Write(line)
	}
	return bw.Flush()
}

func rightNum(b []byte, v uint64, width int) []byte {
	var num [20]byte
	n := strconv.AppendUint(num[:0], v, 10)
	for i := len(n); i < width; i++ {
		b = append(b, ' ')
	}
	return append(b, n...)
}

func appendDetails(b []byte, s *Socket, owners Owners, o TableOptions) []byte {
	sep := func() {
		if len(b) > 0 && b[len(b)-1] != ' ' {
			b = append(b, ' ')
		}
	}
	if o.Procs {
		if ps := owners[s.Inode]; len(ps) > 0 && s.Inode != 0 {
			b = append(b, "users:("...)
			for i, p := range ps {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, "(\""...)
				b = append(b, p.Comm...)
				b = append(b, "\",pid="...)
				b = strconv.AppendInt(b, int64(p.PID), 10)
				b = append(b, ",fd="...)
				b = strconv.AppendInt(b, int64(p.FD), 10)
				b = append(b, ')')
			}
			b = append(b, ')')
		}
	}
	if o.Timers && s.TimerName() != "" {
		sep()
		b = append(b, "timer:("...)
		b = append(b, s.TimerName()...)
		b = append(b, ',')
		b = append(b, trace.SSDuration(s.Expires)...)
		b = append(b, ',')
		b = strconv.AppendUint(b, uint64(s.Retrans), 10)
		b = append(b, ')')
	}
	if o.Extended {
		sep()
		if s.UID != 0 {
			b = append(b, "uid:"...)
			b = strconv.AppendUint(b, uint64(s.UID), 10)
			b = append(b, ' ')
		}
		b = append(b, "ino:"...)
		b = strconv.AppendUint(b, uint64(s.Inode), 10)
		b = append(b, " sk:"...)
		b = strconv.AppendUint(b, s.Cookie, 16)
	}
	if o.Memory && s.Mem != nil {
		sep()
		m := s.Mem
		b = append(b, "skmem:("...)
		for i, name := range [...]string{"r", "rb", "t", "tb", "f", "w", "o", "bl", "d"} {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, name...)
			b = strconv.AppendUint(b, uint64(m[i]), 10)
		}
		b = append(b, ')')
	}
	if o.Info && s.Info != nil {
		sep()
		b = append(b, infoText(s.Info)...)
	}
	return b
}

func infoText(ti *tcpInfo) string {
	i := InfoOf(ti)
	b := make([]byte, 0, 160)
	b = append(b, "rtt:"...)
	b = strconv.AppendFloat(b, float64(i.RTTus)/1000, 'f', 3, 64)
	b = append(b, '/')
	b = strconv.AppendFloat(b, float64(i.RTTVarUs)/1000, 'f', 3, 64)
	b = append(b, " rto:"...)
	b = strconv.AppendFloat(b, float64(i.RTOus)/1000, 'f', -1, 64)
	b = append(b, " mss:"...)
	b = strconv.AppendUint(b, uint64(i.MSS), 10)
	b = append(b, " cwnd:"...)
	b = strconv.AppendUint(b, uint64(i.Cwnd), 10)
	b = append(b, " unacked:"...)
	b = strconv.AppendUint(b, uint64(i.Unacked), 10)
	b = append(b, " retrans:"...)
	b = strconv.AppendUint(b, uint64(i.Retrans), 10)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(i.TotalRetrans), 10)
	b = append(b, " lost:"...)
	b = strconv.AppendUint(b, uint64(i.Lost), 10)
	b = append(b, " bytes_acked:"...)
	b = strconv.AppendUint(b, i.BytesAcked, 10)
	b = append(b, " bytes_received:"...)
	b = strconv.AppendUint(b, i.BytesReceived, 10)
	return string(b)
}

// Info is the part of tcp_info tcplab shows, in plain units.
type Info struct {
	RTTus         uint32 `json:"rtt_us"`
	RTTVarUs      uint32 `json:"rttvar_us"`
	RTOus         uint32 `json:"rto_us"`
	MSS           uint32 `json:"mss"`
	Cwnd          uint32 `json:"cwnd"`
	Unacked       uint32 `json:"unacked"`
	Retrans       uint32 `json:"retrans"`
	TotalRetrans  uint32 `json:"total_retrans"`
	Lost          uint32 `json:"lost"`
	BytesAcked    uint64 `json:"bytes_acked"`
	BytesReceived uint64 `json:"bytes_received"`
}

// InfoOf picks tcplab's fields out of tcp_info.
func InfoOf(t *tcpInfo) Info {
	return Info{RTTus: t.Rtt, RTTVarUs: t.Rttvar, RTOus: t.Rto, MSS: t.Snd_mss, Cwnd: t.Snd_cwnd,
		// retrans:X/Y as ss prints it: X is tcpi_retrans, the retransmitted
		// segments not yet acknowledged, not tcpi_retransmits (the
		// timeouts in a row, which -o shows in the timer).
		Unacked: t.Unacked, Retrans: t.Retrans, TotalRetrans: t.Total_retrans, Lost: t.Lost,
		BytesAcked: t.Bytes_acked, BytesReceived: t.Bytes_received}
}

// SocketJSON is a socket as --json writes it.
type SocketJSON struct {
	State     State  `json:"state"`
	RecvQ     uint32 `json:"recv_q"`
	SendQ     uint32 `json:"send_q"`
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	UID       uint32 `json:"uid"`
	Inode     uint32 `json:"inode"`
	Processes []Proc `json:"processes,omitempty"`
	Timer     *struct {
		Name    string `json:"name"`
		LeftMs  int64  `json:"left_ms"`
		Retrans uint8  `json:"retrans"`
	} `json:"timer,omitempty"`
	Info *Info `json:"info,omitempty"`
	// Cookie is the socket's cookie (-e); Mem its memory (-m), named as
	// ss's skmem fields.
	Cookie uint64      `json:"cookie,omitempty"`
	Mem    *MemoryJSON `json:"skmem,omitempty"`
}

// MemoryJSON is a socket's memory as ss -m shows it.
type MemoryJSON struct {
	RmemAlloc  uint32 `json:"rmem_alloc"`
	Rcvbuf     uint32 `json:"rcvbuf"`
	WmemAlloc  uint32 `json:"wmem_alloc"`
	Sndbuf     uint32 `json:"sndbuf"`
	FwdAlloc   uint32 `json:"fwd_alloc"`
	WmemQueued uint32 `json:"wmem_queued"`
	Optmem     uint32 `json:"optmem"`
	Backlog    uint32 `json:"backlog"`
	Drops      uint32 `json:"drops"`
}

// WriteJSON writes the sockets as a JSON array.
func WriteJSON(w io.Writer, socks []Socket, owners Owners, o TableOptions) error {
	out := make([]SocketJSON, 0, len(socks))
	for i := range socks {
		s := &socks[i]
		j := SocketJSON{State: s.State, RecvQ: s.RecvQ, SendQ: s.SendQ, Local: s.Local.String(), Remote: s.Remote.String(), UID: s.UID, Inode: s.Inode}
		if o.Procs && s.Inode != 0 {
			j.Processes = owners[s.Inode]
		}
		if o.Timers && s.TimerName() != "" {
			j.Timer = &struct {
				Name    string `json:"name"`
				LeftMs  int64  `json:"left_ms"`
				Retrans uint8  `json:"retrans"`
			}{s.TimerName(), s.Expires.Milliseconds(), s.Retrans}
		}
		if o.Info && s.Info != nil {
			in := InfoOf(s.Info)
			j.Info = &in
		}
		if o.Extended {
			j.Cookie = s.Cookie
		}
		if o.Memory && s.Mem != nil {
			m := s.Mem
			j.Mem = &MemoryJSON{m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8]}
		}
		out = append(out, j)
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	return bw.Flush()
}
