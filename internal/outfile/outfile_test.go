package outfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func write(t *testing.T, o *File, s string) {
	t.Helper()
	if _, err := o.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// only lists a directory's names, to see that no temporary file is left.
func only(t *testing.T, dir string, want ...string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("directory holds %v, want %v", got, want)
	}
}

func TestNewFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.svg")
	o, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "half")
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("the path exists before Commit")
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	if read(t, p) != "half" {
		t.Fatal("content")
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o666&^umask() {
		t.Fatalf("mode %v, want %v", fi.Mode().Perm(), 0o666&^umask())
	}
	only(t, dir, "out.svg")

	// Aborted: nothing is left.
	q := filepath.Join(dir, "other.svg")
	o, err = Create(q)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "partial")
	o.Abort()
	only(t, dir, "out.svg")
}

func TestRegularFileKeptUntilCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "keep.html")
	if err := os.WriteFile(p, []byte("before"), 0o640); err != nil {
		t.Fatal(err)
	}
	o, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "new")
	o.Abort()
	if read(t, p) != "before" {
		t.Fatal("an aborted output changed the file")
	}
	only(t, dir, "keep.html")
	o, _ = Create(p)
	write(t, o, "after")
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if read(t, p) != "after" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("content %q mode %v", read(t, p), fi.Mode().Perm())
	}
	only(t, dir, "keep.html")
}

func TestSymlinkStaysALink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.html")
	link := filepath.Join(dir, "link.html")
	os.WriteFile(target, []byte("before"), 0o644)
	if err := os.Symlink("real.html", link); err != nil {
		t.Fatal(err)
	}
	o, err := Create(link)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "x")
	o.Abort()
	if li, err := os.Lstat(link); err != nil || li.Mode()&os.ModeSymlink == 0 || read(t, target) != "before" {
		t.Fatal("an aborted output changed the link or its target")
	}
	o, _ = Create(link)
	write(t, o, "after")
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	if li, err := os.Lstat(link); err != nil || li.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the link was replaced by a file")
	}
	if read(t, target) != "after" {
		t.Fatal("the link's target was not written")
	}
	only(t, dir, "link.html", "real.html")
}

// A device node is written to and never removed, even when writing fails
// (the node of /dev/full) or the output is aborted.
func TestDeviceNodeNeverRemoved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	dir := t.TempDir()
	for _, dev := range []struct {
		name         string
		major, minor uint32
		failWrite    bool
	}{{"full", 1, 7, true}, {"null", 1, 3, false}} {
		p := filepath.Join(dir, dev.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(dev.major, dev.minor))); err != nil {
			t.Skipf("mknod: %v", err)
		}
		o, err := Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.WriteString("data")
		if (err != nil) != dev.failWrite {
			t.Fatalf("%s: write error %v", dev.name, err)
		}
		if dev.failWrite {
			o.Abort()
		} else if err := o.Commit(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			t.Fatalf("%s: the device node is gone or changed: %v %v", dev.name, fi, err)
		}
	}
	only(t, dir, "full", "null")
}

// /dev/stdout and /dev/fd/N name a descriptor the caller shares: they are
// written by appending, never truncated, renamed over or removed.
func TestDescriptorPaths(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := fmt.Sprintf("/dev/fd/%d", w.Fd())
	o, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "through the pipe")
	o.Abort()
	w.Close()
	b, _ := io.ReadAll(r)
	if string(b) != "through the pipe" {
		t.Fatalf("read %q", b)
	}

	// A regular file behind the descriptor (a shell's redirection): what
	// was written there before stays.
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("report\n")
	o, err = Create(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "capture")
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, f.Name()); got != "report\ncapture" {
		t.Fatalf("file behind the descriptor holds %q", got)
	}
	only(t, dir, "stdout")
}

func TestDirectoryRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("err %v", err)
	}
	only(t, dir)
}

// A symlink to a descriptor name, given by a relative path, is still a
// descriptor: appended to, the shell's file behind it kept.
func TestLinkToDescriptor(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "log.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("shell data\n")
	if err := os.Symlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), filepath.Join(dir, "out.svg")); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(dir)
	o, err := Create("out.svg")
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "<svg/>")
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	fi1, _ := f.Stat()
	fi2, _ := os.Stat(filepath.Join(dir, "log.txt"))
	if !os.SameFile(fi1, fi2) || read(t, "log.txt") != "shell data\n<svg/>" {
		t.Fatalf("log.txt replaced or overwritten: %q", read(t, "log.txt"))
	}
	only(t, dir, "log.txt", "out.svg")
}

// A hard link keeps its inode: the content is copied in, both names see it.
func TestHardLinkKeepsInode(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("before"), 0o644)
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	o, err := Create(a)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "partial")
	o.Abort()
	if read(t, a) != "before" {
		t.Fatal("an aborted output changed the file")
	}
	o, _ = Create(a)
	write(t, o, "after")
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	if read(t, a) != "after" || read(t, b) != "after" {
		t.Fatalf("a %q, b %q", read(t, a), read(t, b))
	}
	only(t, dir, "a", "b")
}

// A dangling symlink's target is created on Commit only.
func TestDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link.svg")
	os.Symlink("sub/real.svg", link)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	o, err := Create(link)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "x")
	o.Abort()
	only(t, filepath.Join(dir, "sub"))
	o, _ = Create(link)
	write(t, o, "<svg/>")
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	if li, err := os.Lstat(link); err != nil || li.Mode()&os.ModeSymlink == 0 || read(t, link) != "<svg/>" {
		t.Fatal("the link or its new target is wrong")
	}
	only(t, filepath.Join(dir, "sub"), "real.svg")
}

// A FIFO nobody reads is refused at once instead of hanging; one with a
// reader is written.
func TestFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Skip(err)
	}
	if _, err := Create(p); err == nil || !strings.Contains(err.Error(), "nobody reads") {
		t.Fatalf("a FIFO without reader: %v", err)
	}
	r, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	o, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	write(t, o, "through")
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 16)
	n, _ := r.Read(b)
	if string(b[:n]) != "through" {
		t.Fatalf("read %q", b[:n])
	}
}

// A regular file under /dev (tmpfs /dev/shm) is an ordinary file: replaced,
// not appended to.
func TestRegularFileUnderDev(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "outfile-test-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "r.svg")
	for _, s := range []string{"first", "second"} {
		o, err := Create(p)
		if err != nil {
			t.Fatal(err)
		}
		write(t, o, s)
		if err := o.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if read(t, p) != "second" {
		t.Fatalf("holds %q", read(t, p))
	}
}
