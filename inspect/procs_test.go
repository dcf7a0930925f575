package inspect

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// ownInode opens a listener and returns its socket's inode.
func ownInode(t *testing.T) uint32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

func TestFindOwners(t *testing.T) {
	ino := ownInode(t)
	all := FindOwners(map[uint32]bool{ino: true, 0: true}, true)
	if len(all[ino]) != 1 || all[ino][0].PID != os.Getpid() || all[ino][0].FD <= 2 {
		t.Fatalf("FindOwners: %+v, want this process (pid %d) once", all[ino], os.Getpid())
	}
	if len(all[0]) != 0 {
		t.Errorf("inode 0 has owners: %+v", all[0])
	}
	some := FindSomeOwners(map[uint32]bool{ino: true}, 1<<20)
	if len(some[ino]) != 1 || some[ino][0].PID != os.Getpid() {
		t.Errorf("FindSomeOwners with a large budget: %+v", some[ino])
	}
	// A budget of one stops after the first chunk of the first process,
	// which is not this test (PID 1 runs the machine's init).
	if os.Getpid() != 1 {
		if none := FindSomeOwners(map[uint32]bool{ino: true}, 1); len(none[ino]) != 0 {
			t.Errorf("FindSomeOwners with a budget of 1 found %+v", none[ino])
		}
	}
	if got := FindOwners(nil, true); len(got) != 0 {
		t.Errorf("no inodes asked, got %v", got)
	}
}

func TestInodeOf(t *testing.T) {
	for in, want := range map[string]uint32{"1": 1, "4294967295": 4294967295, "123456": 123456} {
		if got, ok := inodeOf([]byte(in)); !ok || got != want {
			t.Errorf("inodeOf(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "4294967296", "12a", "99999999999"} {
		if _, ok := inodeOf([]byte(in)); ok {
			t.Errorf("inodeOf(%q) accepted", in)
		}
	}
}
