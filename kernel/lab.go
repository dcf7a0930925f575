package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ifName is every host's interface to the lab network, inside its own
// namespace.
const ifName = "eth0"

// gateway is where a host sends packets for addresses no lab host owns
// (spoofed SYN sources): a neighbour entry points it at a MAC no one has,
// so such packets leave on the wire, as the simulator's "lost" packets
// do, instead of waiting for an ARP answer that never comes.
var (
	gateway    = netip.MustParseAddr("169.254.0.1")
	gatewayMAC = net.HardwareAddr{0x02, 0x74, 0x63, 0xff, 0xff, 0xff}
)

// nsHost is one scenario host: a namespace with one interface.
type nsHost struct {
	name   string
	addr   netip.Addr
	nsName string
	ns     netns.NsHandle
	mac    net.HardwareAddr
	index  int // interface index of eth0 inside the namespace
}

// lab is the network of one run: a namespace per host, and a switch
// namespace with a bridge when there are more than two hosts.
type lab struct {
	name     string
	hosts    []*nsHost
	switchNS string
	sw       netns.NsHandle
}

func hostMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x74, 0x63, 0x00, byte(i >> 8), byte(i + 1)}
}

// newLab creates the namespaces and links for the given hosts.
func newLab(names []string, addrs []netip.Addr) (l *lab, err error) {
	l = &lab{name: runName(), sw: netns.None()}
	defer func() {
		if err != nil {
			l.close()
			l = nil
		}
	}()
	for i, n := range names {
		h := &nsHost{name: n, addr: addrs[i], nsName: l.name + "-" + n, mac: hostMAC(i)}
		h.ns, err = newNamedNS(h.nsName)
		if err != nil {
			return l, err
		}
		l.hosts = append(l.hosts, h)
	}
	if len(l.hosts) == 2 {
		err = l.pair(l.hosts[0], l.hosts[1])
	} else {
		err = l.bridge()
	}
	if err != nil {
		return l, err
	}
	for _, h := range l.hosts {
		if err := l.configure(h); err != nil {
			return l, fmt.Errorf("host %s: %w", h.name, err)
		}
	}
	return l, nil
}

// mtu is Ethernet's, so that the MSS is 1460 as in the simulator.
const mtu = 1500

func vethAttrs(name string, mac net.HardwareAddr) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name = name
	a.MTU = mtu
	a.HardwareAddr = mac
	// One segment per packet, as on a real wire and in the simulator:
	// without this TCP hands veth 64 KB GSO packets and a capture sees
	// them unsplit.
	a.GSOMaxSegs = 1
	a.TSOMaxSegs = 1
	return a
}

// pair joins two hosts with one veth pair, created inside the first host's
// namespace so the root namespace never holds it.
func (l *lab) pair(a, b *nsHost) error {
	h, err := netlink.NewHandleAt(a.ns)
	if err != nil {
		return err
	}
	defer h.Delete()
	v := &netlink.Veth{LinkAttrs: vethAttrs(ifName, a.mac), PeerName: ifName,
		PeerHardwareAddr: b.mac, PeerNamespace: netlink.NsFd(int(b.ns))}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s-%s: %w", a.name, b.name, err)
	}
	return nil
}

// bridge puts a bridge in a switch namespace and one veth per host on it.
func (l *lab) bridge() error {
	l.switchNS = l.name + "-switch"
	var err error
	if l.sw, err = newNamedNS(l.switchNS); err != nil {
		return err
	}
	sh, err := netlink.NewHandleAt(l.sw)
	if err != nil {
		return err
	}
	defer sh.Delete()
	ba := netlink.NewLinkAttrs()
	ba.Name = "br0"
	br := &netlink.Bridge{LinkAttrs: ba}
	if err := sh.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge: %w", err)
	}
	for i, host := range l.hosts {
		port := fmt.Sprintf("port%d", i)
		v := &netlink.Veth{LinkAttrs: vethAttrs(port, nil), PeerName: ifName,
			PeerHardwareAddr: host.mac, PeerNamespace: netlink.NsFd(int(host.ns))}
		v.GSOMaxSegs, v.TSOMaxSegs = 1, 1
		if err := sh.LinkAdd(v); err != nil {
			return fmt.Errorf("create veth for %s: %w", host.name, err)
		}
		link, err := sh.LinkByName(port)
		if err != nil {
			return err
		}
		if err := sh.LinkSetMaster(link, br); err != nil {
			return err
		}
		if err := sh.LinkSetUp(link); err != nil {
			return err
		}
	}
	return sh.LinkSetUp(br)
}

// configure brings up lo and eth0 in a host, gives eth0 the host's
// address, a route and a static neighbour entry for every other host, and
// the default route to the black-hole gateway.
func (l *lab) configure(h *nsHost) error {
	nh, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return err
	}
	defer nh.Delete()
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return err
	}
	eth, err := nh.LinkByName(ifName)
	if err != nil {
		return err
	}
	h.index = eth.Attrs().Index
	a := &netlink.Addr{IPNet: &net.IPNet{IP: h.addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := nh.AddrAdd(eth, a); err != nil {
		return fmt.Errorf("address %s: %w", h.addr, err)
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return err
	}
	neigh := func(ip netip.Addr, mac net.HardwareAddr) error {
		return nh.NeighAdd(&netlink.Neigh{LinkIndex: h.index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac})
	}
	for _, o := range l.hosts {
		if o == h {
			continue
		}
		r := &netlink.Route{LinkIndex: h.index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: o.addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := nh.RouteAdd(r); err != nil {
			return fmt.Errorf("route to %s: %w", o.addr, err)
		}
		if err := neigh(o.addr, o.mac); err != nil {
			return fmt.Errorf("neighbour %s: %w", o.addr, err)
		}
	}
	gw := &netlink.Route{LinkIndex: h.index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: gateway.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := nh.RouteAdd(gw); err != nil {
		return fmt.Errorf("gateway route: %w", err)
	}
	if err := neigh(gateway, gatewayMAC); err != nil {
		return fmt.Errorf("gateway neighbour: %w", err)
	}
	def := &netlink.Route{LinkIndex: h.index, Gw: gateway.AsSlice(), Src: h.addr.AsSlice()}
	if err := nh.RouteAdd(def); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

func (l *lab) host(name string) *nsHost {
	for _, h := range l.hosts {
		if h.name == name {
			return h
		}
	}
	return nil
}

// close removes every namespace of the lab. Links inside them go with
// them; the kernel frees a namespace once its last socket is closed, so
// callers close sockets first.
func (l *lab) close() error {
	var errs []error
	for _, h := range l.hosts {
		if h.ns.IsOpen() {
			h.ns.Close()
		}
		if err := deleteNamedNS(h.nsName); err != nil {
			errs = append(errs, err)
		}
	}
	if l.switchNS != "" {
		if l.sw.IsOpen() {
			l.sw.Close()
		}
		if err := deleteNamedNS(l.switchNS); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
