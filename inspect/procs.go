package inspect

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Proc is a process holding a socket open.
type Proc struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	FD   int    `json:"fd,omitempty"`
}

// Owners maps socket inodes to the processes that hold them.
type Owners map[uint32][]Proc

// FindOwners walks /proc/*/fd looking for the given socket inodes and
// returns who holds each. It stops early once every inode has an owner
// and all is false; with all set it finds every holder (a socket can be
// shared by a parent and its children). Inode 0 (TIME_WAIT, requests)
// has no owner. Processes the caller may not look into are skipped.
func FindOwners(inodes map[uint32]bool, all bool) Owners {
	out := Owners{}
	want := 0
	for ino := range inodes {
		if ino != 0 {
			want++
		}
	}
	if want == 0 {
		return out
	}
	procDir, err := os.Open("/proc")
	if err != nil {
		return out
	}
	defer procDir.Close()
	names, _ := procDir.Readdirnames(-1)
	link := make([]byte, 64)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		// Reading links relative to the directory saves the kernel a path
		// walk per descriptor.
		dfd, err := unix.Open("/proc/"+name+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		d := os.NewFile(uintptr(dfd), name)
		fds, _ := d.Readdirnames(-1)
		comm := ""
		for _, fd := range fds {
			n, err := unix.Readlinkat(dfd, fd, link)
			if err != nil || n < 9 || !bytes.HasPrefix(link[:n], []byte("socket:[")) {
				continue
			}
			ino, ok := inodeOf(link[8 : n-1])
			if !ok || !inodes[ino] {
				continue
			}
			if comm == "" {
				comm = readComm(pid)
			}
			fdn, _ := strconv.Atoi(fd)
			if len(out[ino]) == 0 {
				want--
			}
			out[ino] = append(out[ino], Proc{PID: pid, Comm: comm, FD: fdn})
			if want == 0 && !all {
				break
			}
		}
		d.Close()
		if want == 0 && !all {
			break
		}
	}
	return out
}

func readComm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// inodeOf reads the digits of "socket:[N]" without allocating.
func inodeOf(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return uint32(v), v <= 0xffffffff
}
