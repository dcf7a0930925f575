package inspect

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// PortCount counts one port's sockets per state.
type PortCount struct {
	Port      uint16        `json:"port"`
	States    map[State]int `json:"states"`
	Total     int           `json:"total"`
	Processes []Proc        `json:"processes,omitempty"`
	listeners []uint32      // the listening sockets' inodes
	sample    []uint32      // a few other sockets' inodes
}

// Stats keeps the two views apart: connections to this host's listening
// ports, counted by local port, and connections this host opened, counted
// by remote port. Counting "port 443" in both (the grep habit) would mix a
// web server's clients with its own calls to other services.
type Stats struct {
	Services []PortCount `json:"services"`
	Outgoing []PortCount `json:"outgoing"`
}

// sampleOwners is how many sockets per port are looked up to name the
// processes behind outgoing connections: enough to name the usual one or
// two programs without reading every descriptor on the host. The oldest
// sockets (lowest inode numbers) are taken: they tend to sit at low
// descriptor numbers of long-running processes, which the search of
// /proc/*/fd reaches first.
const sampleOwners = 2

// Count sorts sockets into services (a listener holds the local port) and
// outgoing connections (any other local port), by state. SYN_SENT is
// always outgoing. Ports are sorted by total, largest first.
func Count(socks []Socket) Stats {
	listening := map[uint16]bool{}
	for i := range socks {
		if socks[i].State == Listen {
			listening[socks[i].Local.Port()] = true
		}
	}
	svc, out := map[uint16]*PortCount{}, map[uint16]*PortCount{}
	add := func(m map[uint16]*PortCount, port uint16, s *Socket) {
		pc := m[port]
		if pc == nil {
			pc = &PortCount{Port: port, States: map[State]int{}}
			m[port] = pc
		}
		st := s.State
		if st == NewSynRecv {
			st = SynRecv
		}
		pc.States[st]++
		pc.Total++
		switch {
		case s.Inode == 0:
		case s.State == Listen:
			pc.listeners = append(pc.listeners, s.Inode)
		case len(pc.sample) < sampleOwners:
			pc.sample = append(pc.sample, s.Inode)
		default:
			// Keep the lowest inode numbers.
			hi := 0
			for i := range pc.sample {
				if pc.sample[i] > pc.sample[hi] {
					hi = i
				}
			}
			if s.Inode < pc.sample[hi] {
				pc.sample[hi] = s.Inode
			}
		}
	}
	for i := range socks {
		s := &socks[i]
		if s.State != SynSent && listening[s.Local.Port()] {
			add(svc, s.Local.Port(), s)
		} else {
			add(out, s.Remote.Port(), s)
		}
	}
	return Stats{Services: sorted(svc), Outgoing: sorted(out)}
}

func sorted(m map[uint16]*PortCount) []PortCount {
	out := make([]PortCount, 0, len(m))
	for _, pc := range m {
		out = append(out, *pc)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].Port < out[j].Port
	})
	return out
}

// ownerBudget is how many descriptors NameOwners reads at most: enough
// for the low descriptors of every process on a busy host, about 15 ms.
const ownerBudget = 4096

// NameOwners fills in each port's processes: a service's are the holders
// of its listening sockets, an outgoing port's those of a few of its
// sockets.
func (st *Stats) NameOwners() { st.nameOwners(nil, nil) }

// nameOwners searches the owners of the inodes not searched yet and uses
// known for the others.
func (st *Stats) nameOwners(known Owners, searched map[uint32]bool) {
	want := map[uint32]bool{}
	for _, l := range [][]PortCount{st.Services, st.Outgoing} {
		for _, pc := range l {
			for _, ino := range pc.owned() {
				if !searched[ino] {
					want[ino] = true
				}
			}
		}
	}
	owners := FindSomeOwners(want, ownerBudget)
	for ino, ps := range known {
		owners[ino] = ps
	}
	for _, l := range [][]PortCount{st.Services, st.Outgoing} {
		for i := range l {
			seen := map[int]bool{}
			for _, ino := range l[i].owned() {
				for _, p := range owners[ino] {
					if !seen[p.PID] {
						seen[p.PID] = true
						p.FD = 0
						l[i].Processes = append(l[i].Processes, p)
					}
				}
			}
		}
	}
}

// PortStats counts the host's sockets per port and state and, with procs,
// names their processes. The listeners' holders are searched while the
// kernel lists the rest, on the other CPU. With ports, the kernel keeps
// only sockets with one of them at either end, and the counts keep only
// the services and outgoing ports asked for.
func (h *Host) PortStats(ports []PortRange, procs bool) (Stats, error) {
	listeners, err := h.Sockets(Filter{States: Mask(Listen)})
	if err != nil {
		return Stats{}, err
	}
	searched := map[uint32]bool{}
	for _, s := range listeners {
		if s.Inode != 0 {
			searched[s.Inode] = true
		}
	}
	found := make(chan Owners, 1)
	if procs {
		go func() { found <- FindSomeOwners(searched, ownerBudget) }()
	}
	var socks []Socket
	if len(ports) == 0 {
		socks, err = h.Sockets(Filter{})
	} else {
		socks, err = h.portSockets(ports, listeners)
	}
	var known Owners
	if procs {
		known = <-found
	}
	if err != nil {
		return Stats{}, err
	}
	st := Count(socks)
	if len(ports) > 0 {
		st.Services = keepPorts(st.Services, ports)
		st.Outgoing = keepPorts(st.Outgoing, ports)
	}
	if procs {
		st.nameOwners(known, searched)
	}
	return st, nil
}

// portSockets lists the sockets with one of the ports at either end, and
// the listeners (which decide what is a service); a socket with the port
// at both ends is listed once.
func (h *Host) portSockets(ports []PortRange, listeners []Socket) ([]Socket, error) {
	local, err := h.Sockets(Filter{SPort: ports})
	if err != nil {
		return nil, err
	}
	remote, err := h.Sockets(Filter{DPort: ports})
	if err != nil {
		return nil, err
	}
	seen := map[uint64]bool{}
	var all []Socket
	for _, l := range [][]Socket{local, remote, listeners} {
		for _, s := range l {
			if !seen[s.Cookie] {
				seen[s.Cookie] = true
				all = append(all, s)
			}
		}
	}
	return all, nil
}

func keepPorts(rows []PortCount, ports []PortRange) []PortCount {
	var out []PortCount
	for _, r := range rows {
		for _, p := range ports {
			if r.Port >= p.Lo && r.Port <= p.Hi {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// owned is the sockets whose holders name the port: the listeners when
// there are any.
func (pc *PortCount) owned() []uint32 {
	if len(pc.listeners) > 0 {
		return pc.listeners
	}
	return pc.sample
}

// WriteStats writes the two tables; a state gets a column when some port
// of the table has it.
func WriteStats(w io.Writer, st Stats) error {
	bw := bufio.NewWriter(w)
	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', tabwriter.AlignRight)
	section := func(title, portName string, rows []PortCount) {
		fmt.Fprintf(bw, "%s\n", title)
		if len(rows) == 0 {
			fmt.Fprintln(bw, "  (none)")
			return
		}
		var cols []State
		for s := Established; s <= Closing; s++ {
			for _, r := range rows {
				if r.States[s] > 0 {
					cols = append(cols, s)
					break
				}
			}
		}
		fmt.Fprintf(tw, "%s\t", portName)
		for _, s := range cols {
			fmt.Fprintf(tw, "%s\t", s)
		}
		fmt.Fprintf(tw, "TOTAL\t  PROCESS\n")
		for _, r := range rows {
			fmt.Fprintf(tw, "%d\t", r.Port)
			for _, s := range cols {
				fmt.Fprintf(tw, "%d\t", r.States[s])
			}
			fmt.Fprintf(tw, "%d\t  %s\n", r.Total, procNames(r.Processes))
		}
		tw.Flush()
	}
	section("Listening services, by local port (connections to this host):", "PORT", st.Services)
	fmt.Fprintln(bw)
	section("Outgoing connections, by remote port (connections this host opened):", "RPORT", st.Outgoing)
	return bw.Flush()
}

func procNames(ps []Proc) string {
	if len(ps) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s(%d)", p.Comm, p.PID)
	}
	return b.String()
}
