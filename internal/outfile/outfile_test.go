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
