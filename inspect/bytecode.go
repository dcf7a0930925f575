package inspect

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// inet_diag bytecode operations (include/uapi/linux/inet_diag.h). Each op
// is {code u8, yes u8, no u16}: when its condition holds the program goes
// on yes bytes, otherwise no bytes. A socket is chosen when the program
// ends exactly at its end; jumping 4 bytes past the end rejects it.
const (
	bcJMP   = 1
	bcSGE   = 2
	bcSLE   = 3
	bcDGE   = 4
	bcDLE   = 5
	bcSCond = 7
	bcDCond = 8
	bcSEQ   = 11
	bcDEQ   = 12
)

// bcTest is one condition: its ops, before the yes/no jumps are filled in.
// Every op's yes goes to the next op; only no is patched.
type bcTest [][]byte

// bcOp is an op and its operand; yes is its own length.
func bcOp(code uint8, operand []byte) []byte {
	op := make([]byte, 4+len(operand))
	op[0] = code
	op[1] = uint8(len(op))
	copy(op[4:], operand)
	return op
}

func portOperand(p uint16) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint16(b[2:], p) // read as the next op's "no" field
	return b
}

func portTest(r PortRange, local bool) bcTest {
	eq, ge, le := uint8(bcDEQ), uint8(bcDGE), uint8(bcDLE)
	if local {
		eq, ge, le = bcSEQ, bcSGE, bcSLE
	}
	if r.Lo == r.Hi {
		return bcTest{bcOp(eq, portOperand(r.Lo))}
	}
	return bcTest{bcOp(ge, portOperand(r.Lo)), bcOp(le, portOperand(r.Hi))}
}

// hostTest matches an address prefix (struct inet_diag_hostcond, port -1
// for any port). An IPv4 prefix also matches IPv4-mapped IPv6 sockets.
func hostTest(p netip.Prefix, local bool) bcTest {
	code := uint8(bcDCond)
	if local {
		code = bcSCond
	}
	a := p.Addr()
	fam := uint8(unix.AF_INET6)
	raw := a.AsSlice()
	if a.Is4() {
		fam = unix.AF_INET
	}
	cond := make([]byte, 8+len(raw))
	cond[0] = fam
	cond[1] = uint8(p.Bits())
	binary.NativeEndian.PutUint32(cond[4:], 0xffffffff) // port -1
	copy(cond[8:], raw)
	return bcTest{bcOp(code, cond)}
}

// bytecode compiles the filter's ports and addresses. Within one kind the
// tests are alternatives: a test that holds falls into a JMP past the
// others; a test that fails jumps over that JMP to the next alternative,
// or out of the program when it was the last. This keeps every jump
// target on the chain of yes jumps, which the kernel's audit requires.
func (f Filter) bytecode() ([]byte, error) {
	var clauses [][]bcTest
	add := func(n int, mk func(int) bcTest) {
		if n == 0 {
			return
		}
		var alts []bcTest
		for i := range n {
			alts = append(alts, mk(i))
		}
		clauses = append(clauses, alts)
	}
	for _, r := range append(f.SPort[:len(f.SPort):len(f.SPort)], f.DPort...) {
		if r.Lo > r.Hi {
			return nil, fmt.Errorf("port range %d-%d is empty", r.Lo, r.Hi)
		}
	}
	for _, p := range append(f.Src[:len(f.Src):len(f.Src)], f.Dst...) {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid address prefix")
		}
	}
	add(len(f.SPort), func(i int) bcTest { return portTest(f.SPort[i], true) })
	add(len(f.DPort), func(i int) bcTest { return portTest(f.DPort[i], false) })
	add(len(f.Src), func(i int) bcTest { return hostTest(f.Src[i], true) })
	add(len(f.Dst), func(i int) bcTest { return hostTest(f.Dst[i], false) })
	if len(clauses) == 0 {
		return nil, nil
	}
	// Lay out the ops to learn each one's offset, then patch the jumps.
	type placed struct {
		op  []byte
		pos int
	}
	var prog []byte
	var fixes []func(total int)
	for _, alts := range clauses {
		var jmps []placed
		for ai, alt := range alts {
			last := ai == len(alts)-1
			var tests []placed
			for _, op := range alt {
				tests = append(tests, placed{op, len(prog)})
				prog = append(prog, op...)
			}
			var jmp placed
			if !last {
				jmp = placed{[]byte{bcJMP, 4, 0, 0}, len(prog)}
				prog = append(prog, jmp.op...)
				jmps = append(jmps, jmp)
			}
			next := len(prog) // the next alternative starts here
			for _, t := range tests {
				if last {
					fixes = append(fixes, func(total int) { putNo(prog, t.pos, total-t.pos+4) })
				} else {
					putNo(prog, t.pos, next-t.pos)
				}
			}
		}
		end := len(prog)
		for _, j := range jmps {
			putNo(prog, j.pos, end-j.pos)
		}
	}
	for _, fix := range fixes {
		fix(len(prog))
	}
	if len(prog) > 0xffff-4 {
		return nil, fmt.Errorf("filter too long (%d bytes of bytecode)", len(prog))
	}
	return prog, nil
}

func putNo(prog []byte, pos, no int) {
	binary.NativeEndian.PutUint16(prog[pos+2:], uint16(no))
}
