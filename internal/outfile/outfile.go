// Package outfile writes a command's output files so that a run that
// fails, is refused or is interrupted never destroys what the path named
// before: a new or regular file is written to a temporary file beside it
// and renamed into place only on Commit; anything else (a device node, a
// FIFO, /dev/stdout, a path under /proc) is written in place and never
// removed, truncated or renamed over.
package outfile

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// File is one output being written.
type File struct {
	name    string   // the path as given, for messages
	target  string   // the path the result is renamed to (symlinks resolved)
	f       *os.File // where writes go
	temp    bool     // f is a temporary file beside target
	mode    os.FileMode
	owner   *syscall.Stat_t // the replaced file's owner, to keep it
	trunc   bool            // an in-place regular file: truncate at the first write
	written bool
	ended   bool
}

// Create prepares path for writing without touching what is there.
// A directory is refused.
func Create(path string) (*File, error) {
	if path == "" {
		return nil, errors.New("outfile: empty path")
	}
	o := &File{name: path}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if li, lerr := os.Lstat(path); lerr == nil && li.Mode()&os.ModeSymlink != 0 {
			// A dangling symlink: write through it, and leave the link.
			return o.inPlace(os.O_WRONLY | os.O_CREATE | os.O_TRUNC)
		}
		o.target, o.mode = path, 0o666&^umask()
		return o.tempBeside()
	case err != nil:
		return nil, err
	case fi.IsDir():
		return nil, fmt.Errorf("%s is a directory", path)
	case !fi.Mode().IsRegular() || special(path):
		// A device, FIFO or socket, or a name the kernel makes
		// (/dev/stdout, /dev/fd/N, /proc/...) that may stand for a
		// descriptor shared with the shell: append, so that nothing
		// written there before is overwritten.
		return o.inPlace(os.O_WRONLY | os.O_APPEND)
	}
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	if special(target) {
		return o.inPlace(os.O_WRONLY | os.O_APPEND)
	}
	o.target, o.mode = target, fi.Mode().Perm()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		o.owner = st
	}
	if _, err := o.tempBeside(); err != nil {
		// The directory is not writable but the file may be: write it in
		// place, truncating it only once the result is ready.
		if _, ierr := o.inPlace(os.O_WRONLY); ierr != nil {
			return nil, err
		}
		o.trunc = true
	}
	return o, nil
}

// special reports a path under /dev or /proc: names whose writes reach a
// device or another process's descriptor.
func special(p string) bool {
	p = filepath.Clean(p)
	return strings.HasPrefix(p, "/dev/") || strings.HasPrefix(p, "/proc/")
}

func (o *File) inPlace(flags int) (*File, error) {
	f, err := os.OpenFile(o.name, flags, 0o666)
	if err != nil {
		return nil, err
	}
	o.f = f
	return o, nil
}

func (o *File) tempBeside() (*File, error) {
	dir, base := filepath.Split(o.target)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tcplab-*")
	if err != nil {
		return nil, err
	}
	o.f, o.temp = f, true
	return o, nil
}

// Name is the path as given.
func (o *File) Name() string { return o.name }

// Write writes to the output (the temporary file, or the path itself).
func (o *File) Write(p []byte) (int, error) {
	if o.ended {
		return 0, os.ErrClosed
	}
	if o.trunc && !o.written {
		if err := o.f.Truncate(0); err != nil {
			return 0, err
		}
	}
	o.written = true
	return o.f.Write(p)
}

// WriteString writes a string.
func (o *File) WriteString(s string) (int, error) { return o.Write([]byte(s)) }

// Commit makes what was written the content of the path: the temporary
// file gets the mode (and, as root, the owner) of the file it replaces,
// or the usual mode of a new file, and is renamed into place.
func (o *File) Commit() error {
	if o.ended {
		return os.ErrClosed
	}
	o.ended = true
	if !o.temp {
		if o.trunc && !o.written {
			if err := o.f.Truncate(0); err != nil {
				o.f.Close()
				return fmt.Errorf("%s: %w", o.name, err)
			}
		}
		if err := o.f.Close(); err != nil {
			return fmt.Errorf("%s: %w", o.name, err)
		}
		return nil
	}
	tmp := o.f.Name()
	err := o.f.Chmod(o.mode)
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
		return fmt.Errorf("%s: %w", o.name, err)
	}
	return nil
}

// Abort drops what was written: the temporary file is removed, and a
// path written in place is left as it is. It does nothing after Commit.
func (o *File) Abort() {
	if o.ended {
		return
	}
	o.ended = true
	o.f.Close()
	if o.temp {
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
