package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/tcplab/tcplab/inspect"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ifName is every host's interface to the lab network, inside its own
// namespace; tunName is the stack's under a packetdrill script, named as
// packetdrill names it, so that its shell lines (tc ... dev tun0) apply.
const (
	ifName  = "eth0"
	tunName = "tun0"
)

// gateway is where a host sends packets for addresses no lab host owns
// (spoofed SYN sources): a neighbour entry points it at a MAC no one has,
// so such packets leave on the wire, as the simulator's "lost" packets
// do, instead of waiting for an ARP answer that never comes.
var (
	gateway    = netip.MustParseAddr("169.254.0.1")
	gateway6   = netip.MustParseAddr("fd74:6370::1") // the same, for IPv6
	gatewayMAC = net.HardwareAddr{0x02, 0x74, 0x63, 0xff, 0xff, 0xff}
)

// nsHost is one scenario host: a namespace with one interface.
type nsHost struct {
	name   string
	addr   netip.Addr // zero for an IPv6-only host
	addr6  netip.Addr // zero for an IPv4-only host
	nsName string
	ns     netns.NsHandle
	mac    net.HardwareAddr
	index  int  // interface index of eth0 inside the namespace
	peer   bool // a program plays it (a packetdrill script)
	// tun is the host's eth0 when it is a TUN device (the stack under
	// test of a lab with a peer); nil for a veth.
	tun *os.File
}

// lab is the network of one run: a namespace per host, and a switch
// namespace holding the other end of every host's veth, where tcplab's
// link carries frames between them with the simulator's delay.
type lab struct {
	name     string
	hosts    []*nsHost
	switchNS string
	sw       netns.NsHandle
	link     *link
	// tso: a lab with a peer (a packetdrill script) is built as
	// packetdrill's: the stack under test has a TUN device with TSO and
	// checksum offload (it hands whole TSO packets to the link, and takes
	// larger-than-MTU script packets as GSO packets), and the peer's
	// veth and switch port carry packets of any size.
	tso bool
}

func hostMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x74, 0x63, 0x00, byte(i >> 8), byte(i + 1)}
}
func portMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x74, 0x63, 0x01, byte(i >> 8), byte(i + 1)}
}

// newLab creates the namespaces and links for the given hosts.
func newLab(names []string, addrs, addrs6 []netip.Addr, peers []bool, delay time.Duration) (l *lab, err error) {
	l = &lab{name: runName(), sw: netns.None()}
	for _, p := range peers {
		l.tso = l.tso || p
	}
	defer func() {
		if err != nil {
			l.close()
			l = nil
		}
	}()
	l.switchNS = l.name + "-switch"
	if l.sw, err = newNamedNS(l.switchNS, netns.None()); err != nil {
		return l, err
	}
	// Host namespaces are made from inside the switch namespace so that
	// each gets a small TCP hash table of its own: with the machine's
	// shared one (262,144 buckets here) every sock_diag dump walks it
	// all and takes 2 ms.
	err = inspect.InNetns(l.sw, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_child_ehash_entries", []byte("1024"), 0)
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return l, fmt.Errorf("tcp_child_ehash_entries: %w", err)
	}
	for i, n := range names {
		h := &nsHost{name: n, addr: addrs[i], addr6: addrs6[i], nsName: l.name + "-" + n, mac: hostMAC(i), peer: peers[i]}
		h.ns, err = newNamedNS(h.nsName, l.sw)
		if err != nil {
			return l, err
		}
		l.hosts = append(l.hosts, h)
	}
	// The switch's own ends of the veths speak no IPv6: they would send
	// their neighbour solicitations, router solicitations and MLD
	// reports straight to the hosts.
	err = inspect.InNetns(l.sw, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return l, fmt.Errorf("no IPv6 on the switch: %w", err)
	}
	ports, err := l.wires()
	if err != nil {
		return l, err
	}
	for _, h := range l.hosts {
		if err := l.configure(h); err != nil {
			return l, fmt.Errorf("host %s: %w", h.name, err)
		}
	}
	var ps []*port
	err = inspect.InNetns(l.sw, func() error {
		for i, idx := range ports {
			if t := l.hosts[i].tun; t != nil {
				ps = append(ps, tunPort(t, l.hosts[i]))
				continue
			}
			p, err := openPort(idx, l.hosts[i].mac)
			if err != nil {
				for _, q := range ps {
					q.wait.Close()
					if q.fd >= 0 {
						unix.Close(q.fd)
					}
				}
				return fmt.Errorf("switch port for %s: %w", l.hosts[i].name, err)
			}
			ps = append(ps, p)
		}
		return nil
	})
	if err != nil {
		return l, err
	}
	l.link = newLink(delay, ps, addrs)
	return l, l.ready()
}

// ready waits until every interface of the lab is operationally up: a
// veth passes packets only once the kernel's link watch has activated it,
// which can take tens of milliseconds after it was set up.
func (l *lab) ready() error {
	deadline := time.Now().Add(3 * time.Second)
	check := func(ns netns.NsHandle, names ...string) error {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			return err
		}
		defer h.Delete()
		for _, n := range names {
			for {
				link, err := h.LinkByName(n)
				if err != nil {
					return err
				}
				if link.Attrs().OperState == netlink.OperUp {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("interface %s is still %v after 3s", n, link.Attrs().OperState)
				}
				time.Sleep(time.Millisecond)
			}
		}
		return nil
	}
	var ports []string
	for i, h := range l.hosts {
		if h.tun != nil {
			continue // a TUN device is up once set up (its state stays unknown)
		}
		ports = append(ports, fmt.Sprintf("port%d", i))
		if err := check(h.ns, ifName); err != nil {
			return fmt.Errorf("host %s: %w", h.name, err)
		}
	}
	return check(l.sw, ports...)
}

// mtu is Ethernet's, so that the MSS is 1460 as in the simulator.
const mtu = 1500

// bigMTU is the MTU of a tso lab's switch ports and of its peer: the
// largest IPv4 packet fits.
const bigMTU = 65535

func vethAttrs(name string, mac net.HardwareAddr, tso bool) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name = name
	a.MTU = mtu
	a.HardwareAddr = mac
	if tso {
		a.MTU = bigMTU
		return a
	}
	// One segment per packet, as on a real wire and in the simulator:
	// without this TCP hands veth 64 KB GSO packets and a capture sees
	// them unsplit.
	a.GSOMaxSegs = 1
	a.TSOMaxSegs = 1
	return a
}

// wires creates, inside the switch namespace, one veth per host whose
// other end (eth0) goes into the host's namespace, and returns the ports'
// interface indexes. The root namespace never holds any of them.
func (l *lab) wires() ([]int, error) {
	sh, err := netlink.NewHandleAt(l.sw)
	if err != nil {
		return nil, err
	}
	defer sh.Delete()
	var idx []int
	for i, host := range l.hosts {
		if l.tso && !host.peer {
			if err := l.makeTun(host); err != nil {
				return nil, fmt.Errorf("tun device for %s: %w", host.name, err)
			}
			idx = append(idx, -1)
			continue
		}
		name := fmt.Sprintf("port%d", i)
		v := &netlink.Veth{LinkAttrs: vethAttrs(name, portMAC(i), l.tso), PeerName: ifName,
			PeerHardwareAddr: host.mac, PeerNamespace: netlink.NsFd(int(host.ns))}
		if err := sh.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("create veth for %s: %w", host.name, err)
		}
		link, err := sh.LinkByName(name)
		if err != nil {
			return nil, err
		}
		if err := sh.LinkSetUp(link); err != nil {
			return nil, err
		}
		idx = append(idx, link.Attrs().Index)
	}
	return idx, nil
}

// makeTun creates the host's interface as a TUN device (tun0), as packetdrill's:
// IP packets without a header of their own, each after a
// virtio_net_hdr, with checksum and TSO offload, so that the stack hands
// it whole TSO packets and takes GSO packets from it. The device lives as
// long as its descriptor, which the lab's link reads and writes.
func (l *lab) makeTun(h *nsHost) error {
	return inspect.InNetns(h.ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(tunName)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
		h.tun = os.NewFile(uintptr(fd), "tcplab-tun")
		return nil
	})
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
	name := ifName
	if h.tun != nil {
		name = tunName
	}
	eth, err := nh.LinkByName(name)
	if err != nil {
		return err
	}
	h.index = eth.Attrs().Index
	if h.tun != nil {
		return l.configureTun(nh, h, eth)
	}
	if l.tso {
		// The peer takes any packet the script sends.
		if err := nh.LinkSetMTU(eth, bigMTU); err != nil {
			return fmt.Errorf("MTU of %s: %w", h.name, err)
		}
	} else if err := nh.LinkSetGSOMaxSegs(eth, 1); err != nil {
		// The peer end of a veth does not take the attributes given at
		// creation: without this TCP sends 5-segment GSO packets through it.
		return fmt.Errorf("one segment per packet on %s: %w", h.name, err)
	}
	if h.addr6.IsValid() {
		// No duplicate address detection: the address works at once. No
		// router solicitations: routes are static.
		if err := inspect.InNetns(h.ns, func() error {
			for _, f := range []string{"all/accept_dad", "default/accept_dad", ifName + "/accept_dad", "all/disable_ipv6", ifName + "/disable_ipv6", ifName + "/router_solicitations"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f, []byte("0"), 0); err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
			}
			return nil
		}); err != nil {
			return err
		}
	} else if err := inspect.InNetns(h.ns, func() error {
		// No IPv6 on an IPv4 host's link: its neighbour and multicast
		// chatter would cross the lab's link for nothing.
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifName+"/disable_ipv6", []byte("1"), 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil // a kernel without IPv6
		}
		return err
	}); err != nil {
		return fmt.Errorf("disable IPv6 on %s: %w", h.name, err)
	}
	for _, ha := range []netip.Addr{h.addr, h.addr6} {
		if !ha.IsValid() {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ha.AsSlice(), Mask: net.CIDRMask(ha.BitLen(), ha.BitLen())}}
		if ha.Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := nh.AddrAdd(eth, a); err != nil {
			return fmt.Errorf("address %s: %w", ha, err)
		}
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return err
	}
	neigh := func(ip netip.Addr, mac net.HardwareAddr) error {
		fam := netlink.FAMILY_V4
		if ip.Is6() {
			fam = netlink.FAMILY_V6
		}
		return nh.NeighAdd(&netlink.Neigh{LinkIndex: h.index, Family: fam,
			State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac})
	}
	for _, o := range l.hosts {
		if o == h {
			continue
		}
		for _, oa := range []netip.Addr{o.addr, o.addr6} {
			if !oa.IsValid() || (oa.Is4() && !h.addr.IsValid()) || (oa.Is6() && !h.addr6.IsValid()) {
				continue
			}
			r := &netlink.Route{LinkIndex: h.index, Scope: netlink.SCOPE_LINK,
				Dst: &net.IPNet{IP: oa.AsSlice(), Mask: net.CIDRMask(oa.BitLen(), oa.BitLen())}}
			if err := nh.RouteAdd(r); err != nil {
				return fmt.Errorf("route to %s: %w", oa, err)
			}
			if err := neigh(oa, o.mac); err != nil {
				return fmt.Errorf("neighbour %s: %w", oa, err)
			}
		}
	}
	for _, gwa := range []netip.Addr{gateway, gateway6} {
		src := h.addr
		if gwa.Is6() {
			src = h.addr6
		}
		if !src.IsValid() {
			continue
		}
		gw := &netlink.Route{LinkIndex: h.index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: gwa.AsSlice(), Mask: net.CIDRMask(gwa.BitLen(), gwa.BitLen())}}
		if err := nh.RouteAdd(gw); err != nil {
			return fmt.Errorf("gateway route: %w", err)
		}
		if err := neigh(gwa, gatewayMAC); err != nil {
			return fmt.Errorf("gateway neighbour: %w", err)
		}
		def := &netlink.Route{LinkIndex: h.index, Gw: gwa.AsSlice(), Src: src.AsSlice()}
		if gwa.Is6() {
			def.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := nh.RouteAdd(def); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
	}
	return nil
}

// configureTun gives a TUN eth0 Ethernet's MTU (the MSS is 1460), the
// host's address and routes to the other hosts and everywhere else
// through it: a TUN device has no neighbours.
func (l *lab) configureTun(nh *netlink.Handle, h *nsHost, eth netlink.Link) error {
	if err := nh.LinkSetMTU(eth, mtu); err != nil {
		return fmt.Errorf("MTU of %s: %w", h.name, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: h.addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := nh.AddrAdd(eth, a); err != nil {
		return fmt.Errorf("address %s: %w", h.addr, err)
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return err
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
	}
	def := &netlink.Route{LinkIndex: h.index, Scope: netlink.SCOPE_LINK, Src: h.addr.AsSlice()}
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
	if l.link != nil {
		l.link.close()
		l.link = nil
	}
	for _, h := range l.hosts {
		if h.tun != nil {
			h.tun.Close() // already closed by the link, if it was made
		}
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
