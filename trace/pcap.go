package trace

import (
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Host is one of a run's hosts, as pictures and captures name it: a
// capture interface, a lifeline.
type Host struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// PcapEpoch is when time zero of a run falls in a capture: the Unix epoch,
// so that `tcpdump -tt -r` prints the same seconds as tcplab's lines.
var PcapEpoch = time.Unix(0, 0).UTC()

// WritePcapng writes the packets of events as a pcapng capture with one
// interface per host, each packet on the interface of the host whose tap
// saw it, at the time of its event. A packet a host's own output rule
// dropped never reached its interface (tcpdump would not see it) and is
// left out; a packet dropped by the receiver's input rule was seen there
// and is kept. Each packet carries its direction, and a comment when a rule
// acted on it, the lab crafted it, or it was lost on the way. It returns
// the number of packets written.
func WritePcapng(w io.Writer, hosts []Host, events []Event) (int, error) {
	if len(hosts) == 0 {
		return 0, fmt.Errorf("pcapng: no hosts")
	}
	iface := func(h Host) pcapgo.NgInterface {
		return pcapgo.NgInterface{
			Name:                h.Name,
			Description:         fmt.Sprintf("tcplab host %s (%s)", h.Name, h.Addr),
			LinkType:            layers.LinkTypeIPv4, // LINKTYPE_IPV4: libpcap rejects several RAW (101) interfaces
			TimestampResolution: 9,
			SnapLength:          0,
		}
	}
	ng, err := pcapgo.NewNgWriterInterface(w, iface(hosts[0]), pcapgo.NgWriterOptions{
		SectionInfo: pcapgo.NgSectionInfo{Application: "tcplab"},
	})
	if err != nil {
		return 0, fmt.Errorf("pcapng: %w", err)
	}
	index := map[string]int{hosts[0].Name: 0}
	for _, h := range hosts[1:] {
		id, err := ng.AddInterface(iface(h))
		if err != nil {
			return 0, fmt.Errorf("pcapng: %w", err)
		}
		index[h.Name] = id
	}
	n := 0
	for i := range events {
		e := &events[i]
		p := e.Packet
		if e.Kind != KindPacket || p == nil || (p.Dir == Out && !p.OnWire) {
			continue
		}
		id, ok := index[e.Host]
		if !ok {
			return n, fmt.Errorf("pcapng: a packet of host %q, which has no interface", e.Host)
		}
		data, err := p.Segment.Marshal()
		if err != nil {
			return n, fmt.Errorf("pcapng: packet %d: %w", p.ID, err)
		}
		dir := pcapgo.NgEpbFlagDirectionInbound
		if p.Dir == Out {
			dir = pcapgo.NgEpbFlagDirectionOutbound
		}
		opts := pcapgo.NgPacketOptions{Flags: &pcapgo.NgEpbFlags{Direction: dir}, Comments: pcapComments(p)}
		ci := gopacket.CaptureInfo{Timestamp: PcapEpoch.Add(e.At), CaptureLength: len(data), Length: len(data), InterfaceIndex: id}
		if err := ng.WritePacketWithOptions(ci, data, opts); err != nil {
			return n, fmt.Errorf("pcapng: %w", err)
		}
		n++
	}
	return n, ng.Flush()
}

// pcapComments says what the lab did with a packet, for Wireshark's
// packet comments.
func pcapComments(p *Packet) []string {
	var c []string
	if p.Verdict != VerdictPass && p.Verdict != "" {
		c = append(c, fmt.Sprintf("tcplab: %s by rule %s", p.Verdict, p.Rule))
	}
	if p.Crafted {
		c = append(c, "tcplab: crafted by the lab, not sent by a TCP stack")
	}
	if p.Lost != "" {
		c = append(c, "tcplab: lost: "+p.Lost)
	}
	return c
}
