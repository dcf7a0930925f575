// Package clitest holds what the tests of internal/cli and internal/full
// share: building the binaries, waiting for a process, listing a
// directory.
package clitest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Build builds the commands under cmd/ (by directory name) side by side
// into a temporary directory and returns that directory. dir is the
// calling package's path from the module root's cmd/ (as "../../cmd/").
func Build(t *testing.T, cmdDir string, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, c := range names {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), cmdDir+c).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	return dir
}

// WaitExit waits for cmd to exit, killing it and failing the test after
// limit, and returns its exit code.
func WaitExit(t *testing.T, cmd *exec.Cmd, limit time.Duration, out *bytes.Buffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the process did not end within %v:\n%.3000s", limit, out.String())
	}
	return cmd.ProcessState.ExitCode()
}

// Names lists a directory, to see that no temporary file was left.
func Names(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return strings.Join(out, " ")
}
