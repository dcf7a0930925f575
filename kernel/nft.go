package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/tcplab/tcplab/sim"
	"github.com/tcplab/tcplab/trace"
)

// firewall holds one host's nftables table "tcplab" with an input and an
// output chain, inside the host's namespace only.
type firewall struct {
	conn          *nftables.Conn
	table         *nftables.Table
	input, output *nftables.Chain
	// dups: the ip and ip6 tables that copy marked packets, made with
	// the first duplicate rule.
	dups []*nftables.Table
}

// dupMark marks a packet that a duplicate rule took. nftables' dup
// works only in tables of the ip and ip6 families, not in the lab's inet
// table: there the rule marks the packet and accepts it (the first rule
// that acts decides), and a chain of each family that runs after the
// lab's copies marked packets to their destination. The copy carries the
// mark too, and passes the lab's output chain untouched when it goes
// through it in turn.
const dupMark = 0x74636c64

const nftTable = "tcplab"

func newFirewall(nsFd int) (*firewall, error) {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	f := &firewall{conn: c}
	f.table = c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable})
	accept := nftables.ChainPolicyAccept
	f.input = c.AddChain(&nftables.Chain{Name: "input", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	f.output = c.AddChain(&nftables.Chain{Name: "output", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("nftables table: %w", err)
	}
	return f, nil
}

// ruleTag marks a rule with tcplab's rule ID in its user data.
func ruleTag(id int) []byte { return []byte(fmt.Sprintf("tcplab:%d", id)) }

// expressible reports why nftables cannot do what a rule asks, or nil.
func expressible(r *sim.Rule) error {
	switch r.Action {
	case sim.Delay:
		return fmt.Errorf("rule %q delays packets: that needs the netem qdisc, which this kernel lacks (CONFIG_NET_SCH_NETEM); nftables cannot hold a packet back", r.Summary())
	case sim.Duplicate:
		if r.Dir == trace.In {
			return fmt.Errorf("rule %q duplicates incoming packets: nftables' dup sends the copy out of the host, so only `out` rules can duplicate", r.Summary())
		}
	}
	return nil
}

// add installs a rule at the end of its chain.
func (f *firewall) add(id int, r *sim.Rule) error {
	if err := expressible(r); err != nil {
		return err
	}
	if r.Action == sim.Duplicate {
		if err := f.dupTables(); err != nil {
			return fmt.Errorf("nftables rule %q: %w", r.Summary(), err)
		}
	}
	chain := f.input
	if r.Dir == trace.Out {
		chain = f.output
	}
	ex := ruleExprs(r)
	f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: chain, Exprs: ex, UserData: ruleTag(id)})
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("nftables rule %q: %w", r.Summary(), err)
	}
	return nil
}

// remove deletes the rule installed under id.
func (f *firewall) remove(id int, dir trace.Dir) error {
	chain := f.input
	if dir == trace.Out {
		chain = f.output
	}
	rules, err := f.conn.GetRules(f.table, chain)
	if err != nil {
		return fmt.Errorf("nftables list: %w", err)
	}
	for _, r := range rules {
		if bytes.Equal(r.UserData, ruleTag(id)) {
			if err := f.conn.DelRule(r); err != nil {
				return err
			}
			return f.conn.Flush()
		}
	}
	return fmt.Errorf("nftables rule %d not found", id)
}

// dupTables makes, once, what copies the packets duplicate rules mark.
func (f *firewall) dupTables() error {
	if f.dups != nil {
		return nil
	}
	mark := binary.NativeEndian.AppendUint32(nil, dupMark)
	isMarked := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark},
	}
	f.conn.InsertRule(&nftables.Rule{Table: f.table, Chain: f.output,
		Exprs: append(slices.Clone(isMarked), &expr.Verdict{Kind: expr.VerdictAccept})})
	accept := nftables.ChainPolicyAccept
	for _, fam := range []struct {
		family   nftables.TableFamily
		off, len uint32
	}{{nftables.TableFamilyIPv4, 16, 4}, {nftables.TableFamilyIPv6, 24, 16}} {
		t := f.conn.AddTable(&nftables.Table{Family: fam.family, Name: nftTable})
		c := f.conn.AddChain(&nftables.Chain{Name: "dup", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter + 1), Policy: &accept})
		f.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: append(slices.Clone(isMarked),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.off, Len: fam.len},
			&expr.Dup{RegAddr: 1})})
		f.dups = append(f.dups, t)
	}
	if err := f.conn.Flush(); err != nil {
		f.dups = nil
		return err
	}
	return nil
}

func (f *firewall) close() error {
	for _, t := range f.dups {
		f.conn.DelTable(t)
	}
	f.conn.DelTable(f.table)
	err := f.conn.Flush()
	f.conn.CloseLasting()
	return err
}

// ruleExprs translates a lab rule: IPv4 TCP, then each match field, then
// the packet's place among the matching packets (skip, count), the
// probability, and the action.
func ruleExprs(r *sim.Rule) []expr.Any {
	// A rule with addresses matches their family; one without matches
	// IPv4 and IPv6 alike, as the simulator's do.
	v6 := r.SrcAddr.IsValid() && r.SrcAddr.Addr().Is6() || r.DstAddr.IsValid() && r.DstAddr.Addr().Is6()
	var ex []expr.Any
	switch {
	case v6:
		ex = append(ex, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}})
	case r.SrcAddr.IsValid() || r.DstAddr.IsValid():
		ex = append(ex, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}})
	}
	ex = append(ex,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	)
	if r.FlagsMask != 0 {
		ex = append(ex,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{byte(r.FlagsMask)}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(r.FlagsValue)}})
	}
	port := func(off uint32, p uint16) {
		ex = append(ex,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, p)})
	}
	// addr matches a prefix at an offset of the network header: IPv4's
	// addresses at 12 and 16, IPv6's at 8 and 24.
	addr := func(off uint32, p netip.Prefix) {
		n := uint32(p.Addr().BitLen() / 8)
		mask := make([]byte, n)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		a := p.Masked().Addr().AsSlice()
		ex = append(ex,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a})
	}
	if r.SrcPort != 0 {
		port(0, r.SrcPort)
	}
	if r.DstPort != 0 {
		port(2, r.DstPort)
	}
	srcOff, dstOff := uint32(12), uint32(16)
	if v6 {
		srcOff, dstOff = 8, 24
	}
	if r.SrcAddr.IsValid() {
		addr(srcOff, r.SrcAddr)
	}
	if r.DstAddr.IsValid() {
		addr(dstOff, r.DstAddr)
	}
	// numgen inc counts only the packets that got this far, so its value
	// is the packet's index among the matching ones. Registers hold it in
	// host order; cmp compares bytes, hence the conversion.
	num := func(typ uint32, mod uint32) {
		ex = append(ex,
			&expr.Numgen{Register: 1, Type: typ, Modulus: mod},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4})
	}
	cmp := func(op expr.CmpOp, v uint32) {
		ex = append(ex, &expr.Cmp{Op: op, Register: 1, Data: binary.BigEndian.AppendUint32(nil, v)})
	}
	if r.Skip > 0 || r.Count > 0 {
		num(unix.NFT_NG_INCREMENTAL, math.MaxInt32)
		if r.Skip > 0 {
			cmp(expr.CmpOpGte, uint32(r.Skip))
		}
		if r.Count > 0 {
			cmp(expr.CmpOpLt, uint32(r.Skip+r.Count))
		}
	}
	if r.Probability > 0 && r.Probability < 1 {
		const scale = 1_000_000
		num(unix.NFT_NG_RANDOM, scale)
		cmp(expr.CmpOpLt, uint32(r.Probability*scale))
	}
	ex = append(ex, &expr.Counter{})
	switch r.Action {
	case sim.Drop:
		ex = append(ex, &expr.Verdict{Kind: expr.VerdictDrop})
	case sim.Reject:
		ex = append(ex, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	case sim.Duplicate:
		// Mark the packet for the dup tables (see dupMark), and let it go.
		ex = append(ex,
			&expr.Immediate{Register: 1, Data: binary.NativeEndian.AppendUint32(nil, dupMark)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
			&expr.Verdict{Kind: expr.VerdictAccept})
	}
	return ex
}
