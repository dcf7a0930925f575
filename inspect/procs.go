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
		fdPath := "/proc/" + name + "/fd/"
		d, err := os.Open(fdPath)
		if err != nil {
			continue
		}
		fds, _ := d.Readdirnames(-1)
		d.Close()
		comm := ""
		for _, fd := range fds {
			n, err := unix.Readlink(fdPath+fd, link)
			if err != nil || n < 9 || !bytes.HasPrefix(link[:n], []byte("socket:[")) {
				continue
			}
			ino, err := strconv.ParseUint(string(link[8:n-1]), 10, 32)
			if err != nil || !inodes[uint32(ino)] {
				continue
			}
			if comm == "" {
				comm = readComm(pid)
			}
			fdn, _ := strconv.Atoi(fd)
			if len(out[uint32(ino)]) == 0 {
				want--
			}
			out[uint32(ino)] = append(out[uint32(ino)], Proc{PID: pid, Comm: comm, FD: fdn})
		}
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
