// Package outfile writes a command's output files so that a run that
// fails, is refused or is interrupted never destroys what the path named
// before, and a run that finishes changes only the file's content:
//
//   - a new file, or a regular file this process may replace (one link,
//     owned by this user or written by root), is written to a temporary
//     file beside it and renamed into place on Commit, keeping the old
//     file's mode (and, as root, its owner);
//   - any other regular file (a hard link, someone else's file in a
//     sticky directory, a file in a directory this user cannot write) is
//     written to a temporary file and copied into the original on Commit;
//   - a device, a FIFO, or a name that leads through /proc (/dev/stdout,
//     /dev/fd/N: a descriptor shared with the shell) is written in place,
//     appending, and never truncated, renamed over or removed.
//
// Symlinks are followed: the link stays and its target is written (also a
// dangling link's target, created only on Commit).
package outfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

type mode uint8

const (
	replace  mode = iota // temporary file beside the target, renamed over it
	copyBack             // temporary file, copied into the target on Commit
	inPlace              // the path itself, opened for appending
)

// File is one output being written.
type File struct {
	name   string // the path as given, for messages
	target string // the file the result goes to (symlinks resolved)
	how    mode
	f      *os.File // where writes go: the temporary file, or the path
	dst    *os.File // copyBack: the target, opened at Create
	perm   os.FileMode
	owner  *syscall.Stat_t // replace: the replaced file's owner
	ended  bool
}

// Create prepares path for writing without touching what is there. A
// directory, a FIFO nobody reads and a path that cannot be written are
// refused at once, before any run.
func Create(path string) (*File, error) {
	o, err := create(path)
	if err == nil {
		open.Lock()
		open.files[o] = true
		open.Unlock()
	}
	return o, err
}

// open is every File not yet committed or aborted, for RemoveTemporaries.
var open = struct {
	sync.Mutex
	files map[*File]bool
}{files: map[*File]bool{}}

// RemoveTemporaries removes the temporary file of every output not yet
// committed, for a process about to exit at once (a second interrupt). It
// closes nothing: a Close would wait for a write blocked on a FIFO.
func RemoveTemporaries() {
	open.Lock()
	defer open.Unlock()
	for f := range open.files {
		if f.how != inPlace {
			os.Remove(f.f.Name())
		}
	}
}

func (o *File) forget() {
	open.Lock()
	delete(open.files, o)
	open.Unlock()
}

func create(path string) (*File, error) {
	if path == "" {
		return nil, errors.New("outfile: empty path")
	}
	if strings.HasSuffix(path, "/") {
		return nil, fmt.Errorf("%s names a directory", path)
	}
	o := &File{name: path}
	target, viaProc, err := resolve(path)
	if err != nil {
		return nil, err
	}
	o.target = target
	if viaProc {
		if f := ownDescriptor(target); f != nil {
			// This process's own descriptor (/dev/stdout): share it,
			// and its offset, rather than open the file again.
			o.how, o.f = inPlace, f
			return o, nil
		}
		return o.openInPlace()
	}
	fi, err := os.Stat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		o.how, o.perm = replace, 0o666&^umask()
		if err := o.tempIn(filepath.Dir(target)); err != nil {
			return nil, fmt.Errorf("cannot create %s: %w", path, err)
		}
		return o, nil
	case err != nil:
		return nil, err
	case fi.IsDir():
		return nil, fmt.Errorf("%s is a directory", path)
	case !fi.Mode().IsRegular():
		return o.openInPlace()
	}
	o.perm = fi.Mode().Perm()
	st, _ := fi.Sys().(*syscall.Stat_t)
	euid := os.Geteuid()
	if euid != 0 && unix.Access(target, unix.W_OK) != nil {
		// A read-only file, also one's own, is not written (as a
		// shell's > would not).
		return nil, fmt.Errorf("%s: %w", path, os.ErrPermission)
	}
	if st != nil && st.Nlink == 1 && (euid == 0 || int(st.Uid) == euid) {
		o.how, o.owner = replace, st
		if o.tempIn(filepath.Dir(target)) == nil {
			return o, nil
		}
	}
	// Keep the file itself: write aside, copy in on Commit.
	o.how = copyBack
	if o.dst, err = os.OpenFile(target, os.O_WRONLY, 0); err != nil {
		return nil, err
	}
	if o.tempIn(filepath.Dir(target)) != nil {
		if err := o.tempIn(""); err != nil {
			o.dst.Close()
			return nil, fmt.Errorf("no room for a temporary copy of %s: %w", path, err)
		}
	}
	return o, nil
}

// resolve follows path's symlinks to the file they lead to, saying
// whether the way passes through /proc (a descriptor: /dev/stdout is
// /proc/self/fd/1). A dangling link resolves to its missing target.
func resolve(path string) (string, bool, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", false, err
	}
	for range 40 {
		dir, err := filepath.EvalSymlinks(filepath.Dir(p))
		if err != nil {
			return "", false, err
		}
		p = filepath.Join(dir, filepath.Base(p))
		if p == "/proc" || strings.HasPrefix(p, "/proc/") {
			return p, true, nil
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return p, false, nil
		}
		if err != nil {
			return "", false, err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return p, false, nil
		}
		t, err := os.Readlink(p)
		if err != nil {
			return "", false, err
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = filepath.Clean(t)
	}
	return "", false, fmt.Errorf("%s: too many levels of symbolic links", path)
}

// openInPlace opens the path for appending. The open does not wait for a
// FIFO's reader: a FIFO nobody reads is an error, not a hang.
func (o *File) openInPlace() (*File, error) {
	f, err := os.OpenFile(o.name, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ENXIO) {
		if fi, serr := os.Stat(o.name); serr == nil && fi.Mode()&os.ModeNamedPipe != 0 {
			return nil, fmt.Errorf("%s is a FIFO that nobody reads", o.name)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, err
	}
	o.how, o.f = inPlace, f
	return o, nil
}

// ownDescriptor duplicates this process's descriptor N when p is
// /proc/PID/fd/N of this process, or returns nil.
func ownDescriptor(p string) *os.File {
	rest, ok := strings.CutPrefix(p, "/proc/"+strconv.Itoa(os.Getpid())+"/fd/")
	if !ok {
		return nil
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return nil
	}
	fd, err := unix.Dup(n)
	if err != nil {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), p)
}

// tempIn creates the temporary file in dir ("": the system's).
func (o *File) tempIn(dir string) error {
	f, err := os.CreateTemp(dir, "."+filepath.Base(o.target)+".tcplab-*")
	if err != nil {
		return err
	}
	o.f = f
	return nil
}

// Name is the path as given.
func (o *File) Name() string { return o.name }

// Write writes to the output.
func (o *File) Write(p []byte) (int, error) {
	if o.ended {
		return 0, os.ErrClosed
	}
	return o.f.Write(p)
}

// WriteString writes a string.
func (o *File) WriteString(s string) (int, error) { return o.Write([]byte(s)) }

// Commit makes what was written the content of the path.
func (o *File) Commit() error {
	if o.ended {
		return os.ErrClosed
	}
	o.ended = true
	o.forget()
	var err error
	switch o.how {
	case inPlace:
		err = o.f.Close()
	case replace:
		tmp := o.f.Name()
		err = o.f.Chmod(o.perm)
		if err == nil && o.owner != nil && os.Geteuid() == 0 {
			err = o.f.Chown(int(o.owner.Uid), int(o.owner.Gid))
		}
		if cerr := o.f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, o.target)
		}
		if err != nil {
			os.Remove(tmp)
		}
	case copyBack:
		err = o.copyIn()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", o.name, err)
	}
	return nil
}

// copyIn copies the temporary file into the target and removes it.
func (o *File) copyIn() error {
	defer os.Remove(o.f.Name())
	defer o.f.Close()
	defer o.dst.Close()
	if _, err := o.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := o.dst.Truncate(0); err != nil {
		return err
	}
	if _, err := io.Copy(o.dst, o.f); err != nil {
		return err
	}
	return o.dst.Close()
}

// Abort drops what was written: the temporary file is removed, and the
// path is left as it was. It does nothing after Commit, so it can be
// deferred.
func (o *File) Abort() {
	if o.ended {
		return
	}
	o.ended = true
	o.forget()
	o.f.Close()
	if o.dst != nil {
		o.dst.Close()
	}
	if o.how != inPlace {
		os.Remove(o.f.Name())
	}
}

// umask is the process's file mode creation mask, read without changing
// it (setting it to read it would race with other goroutines' creates).
func umask() os.FileMode {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0o022
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return os.FileMode(m) & 0o777
			}
		}
	}
	return 0o022
}
