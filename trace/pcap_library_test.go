package trace_test

import (
	"bytes"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcplab/tcplab/scenario"
	"github.com/tcplab/tcplab/trace"
	"github.com/tcplab/tcplab/wire"
)

// Every built-in scenario's capture reads back packet for packet with
// gopacket's reader: the interface of the host that saw it, its time and
// its bytes. (Here rather than in package scenario, so that scenario's
// benchmarks do not link gopacket, whose 5 MB of tables the collector
// would scan at every cycle.)
func TestPcapReadBack(t *testing.T) {
	lib, err := scenario.Library()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range lib {
		t.Run(sc.Name, func(t *testing.T) {
			var rec trace.Recorder
			if _, err := scenario.Run(sc, scenario.NewSim(1), scenario.Options{Sink: rec.Sink()}); err != nil {
				t.Fatal(err)
			}
			var want []trace.Event
			for _, e := range rec.Events {
				if e.Kind == trace.KindPacket && (e.Packet.Dir == trace.In || e.Packet.OnWire) {
					want = append(want, e)
				}
			}
			var buf bytes.Buffer
			if n, err := trace.WritePcapng(&buf, sc.TraceHosts(), rec.Events); err != nil || n != len(want) {
				t.Fatalf("wrote %d packets, want %d: %v", n, len(want), err)
			}
			r, err := pcapgo.NewNgReader(&buf, pcapgo.DefaultNgReaderOptions)
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range want {
				data, ci, err := r.ReadPacketData()
				if err != nil {
					t.Fatalf("packet %d of %d: %v", i, len(want), err)
				}
				if got := sc.Hosts[ci.InterfaceIndex].Name; got != e.Host {
					t.Errorf("packet %d on %s's interface, seen by %s", i, got, e.Host)
				}
				if got := ci.Timestamp.Sub(trace.PcapEpoch); got != e.At {
					t.Errorf("packet %d at %v, event at %v", i, got, e.At)
				}
				// A capture with IPv6 is Ethernet-framed throughout.
				if ifc, err := r.Interface(ci.InterfaceIndex); err == nil && ifc.LinkType == layers.LinkTypeEthernet {
					data = data[14:]
				}
				seg, err := wire.Parse(data)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				if w := e.Packet.Segment; seg.Seq != w.Seq || seg.Ack != w.Ack || seg.Flags != w.Flags || !bytes.Equal(seg.Payload, w.Payload) || seg.Src != w.Src || seg.DstPort != w.DstPort {
					t.Errorf("packet %d reads back as %+v, was %+v", i, seg, w)
				}
			}
			if _, _, err := r.ReadPacketData(); err == nil {
				t.Errorf("more packets than the %d events", len(want))
			}
			if n := r.NInterfaces(); n != len(sc.Hosts) {
				t.Errorf("%d interfaces, want one per host (%d)", n, len(sc.Hosts))
			}
		})
	}
}
