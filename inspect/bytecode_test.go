package inspect

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// This file checks the inet_diag bytecode compiler against a Go copy of
// what the kernel does with the program (net/ipv4/inet_diag.c): the audit
// it runs when the request arrives (inet_diag_bc_audit, valid_cc,
// valid_hostcond, valid_port_comparison) and the interpreter it runs for
// every socket (inet_diag_bc_run). The copy is written from the kernel's
// semantics, not from bytecode.go, and the reference is a plain reading of
// Filter's documented meaning.

// Kernel op codes, spelled out again so the test does not trust bytecode.go.
const (
	kNOP   = 0
	kJMP   = 1
	kSGE   = 2
	kSLE   = 3
	kDGE   = 4
	kDLE   = 5
	kSCond = 7
	kDCond = 8
	kSEQ   = 11
	kDEQ   = 12

	afUnspec = 0
	afInet   = 2
	afInet6  = 10
)

// bcEntry is what the kernel knows of a socket when it runs the program
// (struct inet_diag_entry).
type bcEntry struct {
	family       int
	saddr, daddr []byte // 4 bytes for AF_INET, 16 for AF_INET6
	sport, dport uint16
}

// testSock is a synthetic socket: both ends are of one family, as in a
// real socket; an IPv4-mapped IPv6 address makes an AF_INET6 socket.
type testSock struct {
	src, dst     netip.Addr
	sport, dport uint16
}

func (s testSock) String() string {
	return fmt.Sprintf("%v -> %v", netip.AddrPortFrom(s.src, s.sport), netip.AddrPortFrom(s.dst, s.dport))
}

func (s testSock) entry() bcEntry {
	e := bcEntry{family: afInet6, saddr: s.src.AsSlice(), daddr: s.dst.AsSlice(), sport: s.sport, dport: s.dport}
	if s.src.Is4() {
		e.family = afInet
	}
	return e
}

type bcOpView struct {
	code    uint8
	yes, no int
}

func opAt(prog []byte, off int) bcOpView {
	return bcOpView{prog[off], int(prog[off+1]), int(binary.NativeEndian.Uint16(prog[off+2:]))}
}

// kernelAudit is inet_diag_bc_audit.
func kernelAudit(prog []byte) error {
	total := len(prog)
	l := total
	off := 0
	for l > 0 {
		if l < 4 {
			return fmt.Errorf("offset %d: %d bytes left, less than an op", off, l)
		}
		op := opAt(prog, off)
		minLen := 4
		switch op.code {
		case kSCond, kDCond:
			// valid_hostcond
			if l < 4+8 {
				return fmt.Errorf("offset %d: hostcond cut short", off)
			}
			fam, bits := prog[off+4], int(prog[off+5])
			addrLen := 0
			switch fam {
			case afUnspec:
			case afInet:
				addrLen = 4
			case afInet6:
				addrLen = 16
			default:
				return fmt.Errorf("offset %d: hostcond family %d", off, fam)
			}
			minLen = 4 + 8 + addrLen
			if l < minLen {
				return fmt.Errorf("offset %d: hostcond address cut short", off)
			}
			if bits > 8*addrLen {
				return fmt.Errorf("offset %d: prefix length %d for %d address bytes", off, bits, addrLen)
			}
		case kSEQ, kDEQ, kSGE, kSLE, kDGE, kDLE:
			// valid_port_comparison
			if l < 8 {
				return fmt.Errorf("offset %d: port comparison cut short", off)
			}
			minLen = 8
		case kNOP, kJMP:
		default:
			return fmt.Errorf("offset %d: unknown op %d", off, op.code)
		}
		if op.code != kNOP {
			if op.no < minLen || op.no > l+4 || op.no&3 != 0 {
				return fmt.Errorf("offset %d: op %d no=%d invalid (min %d, %d left)", off, op.code, op.no, minLen, l)
			}
			if op.no < l && !validCC(prog, l-op.no) {
				return fmt.Errorf("offset %d: op %d no=%d lands at offset %d, off the yes chain", off, op.code, op.no, off+op.no)
			}
		}
		if op.yes < minLen || op.yes > l+4 || op.yes&3 != 0 {
			return fmt.Errorf("offset %d: op %d yes=%d invalid (min %d, %d left)", off, op.code, op.yes, minLen, l)
		}
		off += op.yes
		l -= op.yes
	}
	if l != 0 {
		return fmt.Errorf("the yes chain ends at %d, not at the end", l)
	}
	return nil
}

// validCC reports whether walking the yes chain from the start reaches
// the point where cc bytes are left.
func validCC(prog []byte, cc int) bool {
	l, off := len(prog), 0
	for l >= 0 {
		if cc > l {
			return false
		}
		if cc == l {
			return true
		}
		if l < 4 {
			return false
		}
		yes := int(prog[off+1])
		if yes < 4 || yes&3 != 0 {
			return false
		}
		l -= yes
		off += yes
	}
	return false
}

// bitsMatch compares the first bits bits of a and b (bitstring_match).
func bitsMatch(a, b []byte, bits int) bool {
	for i := 0; i < bits; i++ {
		if (a[i/8]>>(7-i%8))&1 != (b[i/8]>>(7-i%8))&1 {
			return false
		}
	}
	return true
}

// kernelRun is inet_diag_bc_run: true when the socket is chosen.
func kernelRun(prog []byte, e bcEntry) (bool, error) {
	l, off := len(prog), 0
	for l > 0 {
		if off < 0 || off+4 > len(prog) {
			return false, fmt.Errorf("walked to offset %d of %d", off, len(prog))
		}
		op := opAt(prog, off)
		holds := true
		operand := func() uint16 { return binary.NativeEndian.Uint16(prog[off+6:]) } // op[1].no
		switch op.code {
		case kNOP:
		case kJMP:
			holds = false
		case kSGE:
			holds = e.sport >= operand()
		case kSLE:
			holds = e.sport <= operand()
		case kDGE:
			holds = e.dport >= operand()
		case kDLE:
			holds = e.dport <= operand()
		case kSEQ:
			holds = e.sport == operand()
		case kDEQ:
			holds = e.dport == operand()
		case kSCond, kDCond:
			fam, bits := int(prog[off+4]), int(prog[off+5])
			port := int32(binary.NativeEndian.Uint32(prog[off+8:]))
			addr := prog[off+12:]
			ep, ea := e.dport, e.daddr
			if op.code == kSCond {
				ep, ea = e.sport, e.saddr
			}
			switch {
			case port != -1 && port != int32(ep):
				holds = false
			case fam != afUnspec && fam != e.family:
				holds = false
				if e.family == afInet6 && fam == afInet {
					mapped := make([]byte, 12)
					mapped[10], mapped[11] = 0xff, 0xff
					if string(ea[:12]) == string(mapped) && bitsMatch(ea[12:], addr, bits) {
						holds = true
					}
				}
			case bits == 0:
			default:
				holds = bitsMatch(ea, addr, bits)
			}
		default:
			return false, fmt.Errorf("offset %d: unknown op %d", off, op.code)
		}
		step := op.no
		if holds {
			step = op.yes
		}
		if step < 4 {
			return false, fmt.Errorf("offset %d: step %d would not advance", off, step)
		}
		off += step
		l -= step
	}
	return l == 0, nil
}

// wantMatch is what the filter means: kinds all hold, one alternative of
// each kind holds, ranges include their ends, a prefix holds its
// addresses, and an IPv4 prefix also holds IPv4-mapped IPv6 addresses.
func wantMatch(f Filter, s testSock) bool {
	anyPort := func(rs []PortRange, p uint16) bool {
		if len(rs) == 0 {
			return true
		}
		for _, r := range rs {
			if r.Lo <= p && p <= r.Hi {
				return true
			}
		}
		return false
	}
	anyPrefix := func(ps []netip.Prefix, a netip.Addr) bool {
		if len(ps) == 0 {
			return true
		}
		for _, p := range ps {
			if p.Addr().Is4() {
				if u := a.Unmap(); u.Is4() && p.Contains(u) {
					return true
				}
			} else if a.Is6() && p.Contains(a) {
				return true
			}
		}
		return false
	}
	return anyPort(f.SPort, s.sport) && anyPort(f.DPort, s.dport) && anyPrefix(f.Src, s.src) && anyPrefix(f.Dst, s.dst)
}

func filterString(f Filter) string {
	var parts []string
	for _, r := range f.SPort {
		parts = append(parts, fmt.Sprintf("sport %d-%d", r.Lo, r.Hi))
	}
	for _, r := range f.DPort {
		parts = append(parts, fmt.Sprintf("dport %d-%d", r.Lo, r.Hi))
	}
	for _, p := range f.Src {
		parts = append(parts, "src "+p.String())
	}
	for _, p := range f.Dst {
		parts = append(parts, "dst "+p.String())
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// checkFilter compiles f, audits the program and compares the kernel's
// verdict with the filter's meaning on every socket. It returns how many
// sockets were chosen.
func checkFilter(t testing.TB, f Filter, socks []testSock) int {
	t.Helper()
	prog, err := f.bytecode()
	if err != nil {
		t.Fatalf("%s: %v", filterString(f), err)
	}
	if len(f.SPort)+len(f.DPort)+len(f.Src)+len(f.Dst) == 0 {
		if prog != nil {
			t.Fatalf("empty filter compiled to %x", prog)
		}
		return len(socks)
	}
	if len(prog) == 0 {
		t.Fatalf("%s: no bytecode", filterString(f))
	}
	if err := kernelAudit(prog); err != nil {
		t.Fatalf("%s: the kernel would reject the program: %v\n%x", filterString(f), err, prog)
	}
	chosen := 0
	for _, s := range socks {
		got, err := kernelRun(prog, s.entry())
		if err != nil {
			t.Fatalf("%s on %v: %v\n%x", filterString(f), s, err, prog)
		}
		if want := wantMatch(f, s); got != want {
			t.Fatalf("%s on %v: kernel says %v, the filter means %v\n%x", filterString(f), s, got, want, prog)
		}
		if got {
			chosen++
		}
	}
	return chosen
}

var (
	testPorts  = []uint16{0, 1, 22, 79, 80, 81, 442, 443, 444, 7999, 8000, 8001, 8079, 8080, 8081, 32768, 65534, 65535}
	testAddrs4 = []string{"0.0.0.0", "10.0.0.1", "10.0.0.0", "10.127.255.255", "10.128.0.1", "10.255.255.255", "11.0.0.1", "127.0.0.1", "192.168.1.10", "192.168.1.11", "255.255.255.255"}
	testAddrs6 = []string{"::", "::1", "fe80::1", "2001:db8::1", "2001:db8::2", "2001:db8:1::5", "2001:db9::1", "ffff::1",
		"::ffff:10.0.0.1", "::ffff:10.200.0.1", "::ffff:127.0.0.1", "::ffff:192.168.1.10", "::ffff:11.0.0.1", "::10.0.0.1", "64:ff9b::a00:1"}
)

// testSockets is a mix of IPv4 and IPv6 sockets over the test addresses
// and ports: every address at each end, every port at each end.
func testSockets() []testSock {
	var out []testSock
	for _, list := range [][]string{testAddrs4, testAddrs6} {
		for i, a := range list {
			for j, b := range list {
				for k, p := range testPorts {
					q := testPorts[(k*7+i+3*j)%len(testPorts)]
					out = append(out, testSock{netip.MustParseAddr(a), netip.MustParseAddr(b), p, q})
				}
			}
		}
	}
	return out
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestBytecodeMatchesKernelSemantics(t *testing.T) {
	socks := testSockets()
	filters := []Filter{
		{},
		{SPort: []PortRange{{80, 80}}},
		{DPort: []PortRange{{443, 443}}},
		{SPort: []PortRange{{0, 0}}},
		{SPort: []PortRange{{65535, 65535}}},
		{SPort: []PortRange{{8000, 8080}}},
		{DPort: []PortRange{{0, 65535}}},
		{DPort: []PortRange{{0, 80}}},
		{DPort: []PortRange{{8080, 65535}}},
		{SPort: []PortRange{{80, 80}, {443, 443}}},
		{SPort: []PortRange{{80, 80}, {443, 443}, {8000, 8080}}},
		{SPort: []PortRange{{8000, 8080}, {22, 22}, {32768, 65535}, {1, 1}}},
		{DPort: []PortRange{{80, 81}, {442, 444}}},
		{SPort: []PortRange{{80, 80}}, DPort: []PortRange{{443, 443}}},
		{SPort: []PortRange{{80, 80}, {8080, 8080}}, DPort: []PortRange{{32768, 65535}, {22, 22}}},
		{Src: pfx("10.0.0.0/8")},
		{Src: pfx("10.0.0.1/32")},
		{Src: pfx("10.0.0.0/9")},
		{Src: pfx("10.128.0.0/9")},
		{Src: pfx("10.0.0.0/31")},
		{Src: pfx("0.0.0.0/0")},
		{Dst: pfx("127.0.0.0/8")},
		{Dst: pfx("192.168.1.10/31", "11.0.0.0/8")},
		{Src: pfx("::1/128")},
		{Src: pfx("::/0")},
		{Src: pfx("2001:db8::/32")},
		{Src: pfx("2001:db8::/33")},
		{Dst: pfx("2001:db8::2/127")},
		{Dst: pfx("fe80::/10", "2001:db8:1::/48")},
		{Src: pfx("::ffff:10.0.0.0/104")},
		{Src: pfx("::ffff:0.0.0.0/96")},
		{Src: pfx("10.0.0.0/8", "::1/128")},
		{Src: pfx("0.0.0.0/0", "::/0")},
		{Src: pfx("10.0.0.1/32"), Dst: pfx("2001:db8::/32")},
		{Src: pfx("10.0.0.0/8"), Dst: pfx("127.0.0.1/32", "192.168.0.0/16")},
		{SPort: []PortRange{{80, 80}}, Src: pfx("10.0.0.0/8")},
		{SPort: []PortRange{{8000, 8080}, {443, 443}}, DPort: []PortRange{{32768, 65535}},
			Src: pfx("10.0.0.0/8", "2001:db8::/32"), Dst: pfx("127.0.0.0/8", "::ffff:192.168.1.0/120", "::/0")},
		{SPort: []PortRange{{0, 65535}}, DPort: []PortRange{{0, 65535}}, Src: pfx("0.0.0.0/0", "::/0"), Dst: pfx("0.0.0.0/0", "::/0")},
		// A prefix written with host bits: the kernel compares only the
		// prefix's bits.
		{Src: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("10.1.2.3"), 8)}},
		{Dst: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("2001:db8::ffff"), 32)}},
	}
	for _, f := range filters {
		n := checkFilter(t, f, socks)
		t.Logf("%s: %d of %d sockets", filterString(f), n, len(socks))
	}

	// The sockets the tests need are there: an IPv4 prefix holds an
	// IPv4-mapped address, and not an IPv6 one.
	mapped := testSock{netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("::1"), 80, 80}
	native := testSock{netip.MustParseAddr("::10.0.0.1"), netip.MustParseAddr("::1"), 80, 80}
	prog, _ := Filter{Src: pfx("10.0.0.0/8")}.bytecode()
	if ok, _ := kernelRun(prog, mapped.entry()); !ok {
		t.Error("10.0.0.0/8 does not hold ::ffff:10.0.0.1")
	}
	if ok, _ := kernelRun(prog, native.entry()); ok {
		t.Error("10.0.0.0/8 holds ::10.0.0.1")
	}
	prog, _ = Filter{Src: pfx("::/0")}.bytecode()
	if ok, _ := kernelRun(prog, testSock{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 1, 1}.entry()); ok {
		t.Error("::/0 holds an IPv4 socket")
	}
}

// TestBytecodeManyAlternatives: long programs stay within the audit and
// the 16-bit jumps; too long ones are refused before the kernel sees them.
func TestBytecodeManyAlternatives(t *testing.T) {
	socks := testSockets()
	var f Filter
	for i := range 2000 {
		f.SPort = append(f.SPort, PortRange{uint16(20000 + 2*i), uint16(20000 + 2*i)})
	}
	f.SPort = append(f.SPort, PortRange{8080, 8080})
	for i := range 500 {
		f.DPort = append(f.DPort, PortRange{uint16(1000 + 10*i), uint16(1004 + 10*i)})
	}
	f.DPort = append(f.DPort, PortRange{443, 443})
	checkFilter(t, f, socks)

	var big Filter
	for i := range 6000 {
		big.Src = append(big.Src, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	if prog, err := big.bytecode(); err == nil {
		t.Errorf("%d prefixes compiled to %d bytes, over the 16-bit limit", len(big.Src), len(prog))
	} else if !strings.Contains(err.Error(), "too long") {
		t.Errorf("error %v", err)
	}
	// Just under the limit: 2730 IPv4 prefixes of 24 bytes each.
	var fit Filter
	for i := range (0xffff - 4) / 24 {
		fit.Src = append(fit.Src, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	fit.Src = append(fit.Src[:len(fit.Src)-1], netip.MustParsePrefix("192.168.1.0/24"))
	checkFilter(t, fit, socks)
}

func TestBytecodeErrors(t *testing.T) {
	for _, f := range []Filter{
		{SPort: []PortRange{{80, 79}}},
		{DPort: []PortRange{{1, 1}, {9000, 8000}}},
		{Src: []netip.Prefix{{}}},
		{Dst: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), {}}},
	} {
		if prog, err := f.bytecode(); err == nil {
			t.Errorf("%s compiled to %x", filterString(f), prog)
		}
	}
}

// TestBytecodeLeavesFilterAlone: compiling must not write into the
// arrays behind the caller's slices (append on a slice with spare
// capacity would).
func TestBytecodeLeavesFilterAlone(t *testing.T) {
	ports := []PortRange{{80, 80}, {1, 1}}
	prefixes := pfx("10.0.0.0/8", "192.168.0.0/16")
	f := Filter{SPort: ports[:1], DPort: []PortRange{{443, 443}}, Src: prefixes[:1], Dst: pfx("::1/128")}
	if _, err := f.bytecode(); err != nil {
		t.Fatal(err)
	}
	if ports[1] != (PortRange{1, 1}) {
		t.Errorf("bytecode overwrote the caller's port array: %v", ports)
	}
	if prefixes[1] != netip.MustParsePrefix("192.168.0.0/16") {
		t.Errorf("bytecode overwrote the caller's prefix array: %v", prefixes)
	}
}

// TestKernelModel checks the model itself on hand-written programs, so
// that agreement with bytecode.go means something.
func TestKernelModel(t *testing.T) {
	op := func(code, yes uint8, no uint16) []byte {
		b := []byte{code, yes, 0, 0}
		binary.NativeEndian.PutUint16(b[2:], no)
		return b
	}
	cat := func(ops ...[]byte) []byte {
		var b []byte
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	e := testSock{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 80, 5000}.entry()
	for _, c := range []struct {
		name   string
		prog   []byte
		audit  bool
		chosen bool
	}{
		{"nop", op(kNOP, 4, 0), true, true},
		{"sport == 80", cat(op(kSEQ, 8, 12), op(0, 0, 80)), true, true},
		{"sport == 81", cat(op(kSEQ, 8, 12), op(0, 0, 81)), true, false},
		{"sport >= 80 jumps to the end", cat(op(kSGE, 8, 8), op(0, 0, 80)), true, true},
		{"jmp past the end", op(kJMP, 4, 8), true, false},
		{"jmp to the end", op(kJMP, 4, 4), true, true},
		{"yes not a multiple of 4", cat(op(kSEQ, 6, 12), op(0, 0, 80)), false, false},
		{"no too far", cat(op(kSEQ, 8, 16), op(0, 0, 80)), false, false},
		{"no into an operand", cat(op(kSEQ, 8, 4), op(0, 0, 80), op(kNOP, 4, 0)), false, false},
		{"no shorter than the op", cat(op(kSEQ, 8, 4), op(0, 0, 80)), false, false},
		{"cut short", op(kSEQ, 8, 12), false, false},
		{"unknown op", op(99, 4, 4), false, false},
		{"yes chain overshoots", cat(op(kNOP, 8, 0)), false, false},
	} {
		err := kernelAudit(c.prog)
		if (err == nil) != c.audit {
			t.Errorf("%s: audit %v, want pass=%v", c.name, err, c.audit)
		}
		if err != nil {
			continue
		}
		got, err := kernelRun(c.prog, e)
		if err != nil || got != c.chosen {
			t.Errorf("%s: chosen %v %v, want %v", c.name, got, err, c.chosen)
		}
	}
	// Hostconds: 10.0.0.0/8, any port.
	cond := func(code, fam, bits uint8, port int32, addr ...byte) []byte {
		b := op(code, uint8(12+len(addr)), uint16(12+len(addr)+4))
		c := make([]byte, 8)
		c[0], c[1] = fam, bits
		binary.NativeEndian.PutUint32(c[4:], uint32(port))
		return cat(b, c, addr)
	}
	for _, c := range []struct {
		name   string
		prog   []byte
		sock   testSock
		chosen bool
	}{
		{"v4 in v4", cond(kSCond, afInet, 8, -1, 10, 0, 0, 0), testSock{netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("1.1.1.1"), 1, 2}, true},
		{"v4 not in v4", cond(kSCond, afInet, 8, -1, 10, 0, 0, 0), testSock{netip.MustParseAddr("11.9.9.9"), netip.MustParseAddr("1.1.1.1"), 1, 2}, false},
		{"v4 in mapped v6", cond(kSCond, afInet, 8, -1, 10, 0, 0, 0), testSock{netip.MustParseAddr("::ffff:10.9.9.9"), netip.MustParseAddr("::1"), 1, 2}, true},
		{"v4 /0 against native v6", cond(kSCond, afInet, 0, -1, 0, 0, 0, 0), testSock{netip.MustParseAddr("::1"), netip.MustParseAddr("::1"), 1, 2}, false},
		{"port given and equal", cond(kDCond, afInet, 0, 2, 0, 0, 0, 0), testSock{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("1.1.1.1"), 1, 2}, true},
		{"port given and different", cond(kDCond, afInet, 0, 3, 0, 0, 0, 0), testSock{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("1.1.1.1"), 1, 2}, false},
		{"9 bits", cond(kDCond, afInet, 9, -1, 10, 128, 0, 0), testSock{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.200.1.1"), 1, 2}, true},
		{"9 bits, other half", cond(kDCond, afInet, 9, -1, 10, 128, 0, 0), testSock{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.100.1.1"), 1, 2}, false},
	} {
		if err := kernelAudit(c.prog); err != nil {
			t.Errorf("%s: audit %v", c.name, err)
			continue
		}
		got, err := kernelRun(c.prog, c.sock.entry())
		if err != nil || got != c.chosen {
			t.Errorf("%s: chosen %v %v, want %v", c.name, got, err, c.chosen)
		}
	}
}

func TestParsePorts(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []PortRange
	}{
		{nil, nil},
		{[]string{"80"}, []PortRange{{80, 80}}},
		{[]string{":443"}, []PortRange{{443, 443}}},
		{[]string{"8000-8080"}, []PortRange{{8000, 8080}}},
		{[]string{"80,443", "8000-8080"}, []PortRange{{80, 80}, {443, 443}, {8000, 8080}}},
		{[]string{" 22 , :80 "}, []PortRange{{22, 22}, {80, 80}}},
		{[]string{"0", "65535"}, []PortRange{{0, 0}, {65535, 65535}}},
		{[]string{"80-80"}, []PortRange{{80, 80}}},
		{[]string{""}, nil},
	} {
		got, err := ParsePorts(c.in)
		if err != nil {
			t.Errorf("ParsePorts(%q): %v", c.in, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ParsePorts(%q) = %v, want %v", c.in, got, c.want)
		}
	}
	for _, in := range []string{"http", "65536", "99999", "-1", "80-", "-80", "8000-80", "1-2-3", "80 81", "0x50", "80,abc", "::80"} {
		got, err := ParsePorts([]string{in})
		if err == nil {
			t.Errorf("ParsePorts(%q) = %v, want an error", in, got)
		}
	}
	if _, err := ParsePorts([]string{"8000-80"}); err == nil || !strings.Contains(err.Error(), "8000 is above 80") {
		t.Errorf("8000-80: %v", err)
	}
}

func TestParsePrefixes(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []string
	}{
		{[]string{"10.0.0.1"}, []string{"10.0.0.1/32"}},
		{[]string{"10.1.2.3/8"}, []string{"10.0.0.0/8"}},
		{[]string{"::1"}, []string{"::1/128"}},
		{[]string{"[::1]"}, []string{"::1/128"}},
		{[]string{"2001:db8::1/32"}, []string{"2001:db8::/32"}},
		{[]string{"10.0.0.0/8,::/0", " 127.0.0.1 "}, []string{"10.0.0.0/8", "::/0", "127.0.0.1/32"}},
		{[]string{"0.0.0.0/0"}, []string{"0.0.0.0/0"}},
		{[]string{""}, nil},
	} {
		got, err := ParsePrefixes(c.in)
		if err != nil {
			t.Errorf("ParsePrefixes(%q): %v", c.in, err)
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if strings.Join(s, " ") != strings.Join(c.want, " ") {
			t.Errorf("ParsePrefixes(%q) = %v, want %v", c.in, s, c.want)
		}
	}
	for _, in := range []string{"10.0.0", "10.0.0.0/33", "::1/129", "host.example", "10.0.0.0/", "/8", "10.0.0.256", "1.2.3.4/-1"} {
		got, err := ParsePrefixes([]string{in})
		if err == nil {
			t.Errorf("ParsePrefixes(%q) = %v, want an error", in, got)
		}
	}
}

// filterFromBytes builds a filter from fuzz input, and sockets near its
// ports and inside and around its prefixes.
func filterFromBytes(data []byte) (Filter, []testSock, bool) {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	u16 := func() uint16 { return uint16(next())<<8 | uint16(next()) }
	var f Filter
	valid := true
	for n := 0; len(data) > 0 && n < 48; n++ {
		op := next()
		switch op % 4 {
		case 0, 1:
			lo, hi := u16(), u16()
			if op&0x10 != 0 {
				hi = lo // a single port
			} else if op&0x20 != 0 && lo > hi {
				lo, hi = hi, lo
			}
			if lo > hi {
				valid = false
			}
			if op%4 == 0 {
				f.SPort = append(f.SPort, PortRange{lo, hi})
			} else {
				f.DPort = append(f.DPort, PortRange{lo, hi})
			}
		case 2, 3:
			var a netip.Addr
			switch (op >> 2) % 3 {
			case 0:
				a = netip.AddrFrom4([4]byte{next(), next(), next(), next()})
			case 1:
				var b [16]byte
				for i := range b {
					b[i] = next()
				}
				a = netip.AddrFrom16(b)
			case 2:
				a = netip.AddrFrom16(netip.AddrFrom4([4]byte{next(), next(), next(), next()}).As16())
			}
			p := netip.PrefixFrom(a, int(next())%(a.BitLen()+1))
			if op&0x80 != 0 {
				p = p.Masked()
			}
			if op%4 == 2 {
				f.Src = append(f.Src, p)
			} else {
				f.Dst = append(f.Dst, p)
			}
		}
	}
	// Sockets: the fixed set's corners, plus ones built around the filter.
	ports := []uint16{0, 1, 80, 443, 65535}
	for _, r := range append(append([]PortRange{}, f.SPort...), f.DPort...) {
		ports = append(ports, r.Lo, r.Hi, r.Lo-1, r.Hi+1, r.Lo/2+r.Hi/2)
	}
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:10.0.0.1")}
	for _, p := range append(append([]netip.Prefix{}, f.Src...), f.Dst...) {
		a := p.Addr()
		addrs = append(addrs, a, flipBit(a, p.Bits()-1), flipBit(a, p.Bits()), flipBit(a, a.BitLen()-1))
		if a.Is4() {
			addrs = append(addrs, netip.AddrFrom16(a.As16()), netip.AddrFrom16(flipBit(a, p.Bits()).As16()))
		} else if a.Is4In6() {
			addrs = append(addrs, a.Unmap())
		}
	}
	// Keep each run quick: at most 32 ports and 32 addresses.
	ports, addrs = spread(ports, 32), spread(addrs, 32)
	var socks []testSock
	for i, a := range addrs {
		for j, b := range addrs {
			if a.Is4() != b.Is4() {
				continue
			}
			socks = append(socks, testSock{a, b, ports[(i+j)%len(ports)], ports[(i*3+j+1)%len(ports)]})
			socks = append(socks, testSock{b, a, ports[(i+2*j)%len(ports)], ports[(j+5*i)%len(ports)]})
		}
	}
	for i, p := range ports {
		for j, q := range ports {
			a := addrs[(i+j)%len(addrs)]
			b := addrs[(i*j)%len(addrs)]
			if a.Is4() != b.Is4() {
				b = a
			}
			socks = append(socks, testSock{a, b, p, q})
		}
	}
	return f, socks, valid
}

// spread keeps at most n of xs, spread over the whole list.
func spread[T any](xs []T, n int) []T {
	if len(xs) <= n {
		return xs
	}
	out := make([]T, 0, n)
	for i := range n {
		out = append(out, xs[i*len(xs)/n])
	}
	return out
}

// flipBit flips bit i (0 is the top bit) of a; out of range leaves a.
func flipBit(a netip.Addr, i int) netip.Addr {
	if i < 0 || i >= a.BitLen() {
		return a
	}
	b := a.AsSlice()
	b[i/8] ^= 0x80 >> (i % 8)
	out, _ := netip.AddrFromSlice(b)
	return out
}

func FuzzBytecode(f *testing.F) {
	f.Add([]byte{0x10, 0, 80})
	f.Add([]byte{0x00, 0x1f, 0x40, 0x1f, 0x90, 0x11, 0x01, 0xbb, 0, 0})
	f.Add([]byte{0x82, 10, 0, 0, 0, 8, 0x86, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 128})
	f.Add([]byte{0x8b, 127, 0, 0, 1, 8, 0x83, 192, 168, 0, 0, 16, 0x12, 0, 22})
	f.Add([]byte{0x00, 0x20, 0x00, 0x10, 0x00, 0x30, 0, 1, 0, 2, 0x02, 10, 1, 2, 3, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		flt, socks, valid := filterFromBytes(data)
		if !valid {
			if prog, err := flt.bytecode(); err == nil {
				t.Fatalf("%s: an empty range compiled to %x", filterString(flt), prog)
			}
			return
		}
		checkFilter(t, flt, socks)
	})
}
