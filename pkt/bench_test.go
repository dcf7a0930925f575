package pkt

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkEngineCorpus plays every .pkt file under a directory on the
// engine, one after the other: one iteration is the whole corpus. The
// directory is TCPLAB_PKT_CORPUS (packetdrill's gtests/net/tcp, say,
// which this repository does not hold), else the project's own testdata.
func BenchmarkEngineCorpus(b *testing.B) {
	dir := os.Getenv("TCPLAB_PKT_CORPUS")
	if dir == "" {
		dir = "testdata"
	}
	var scripts []*Script
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".pkt") {
			return err
		}
		s, err := ParseFile(p)
		if err != nil {
			return nil // a script that does not parse is not played
		}
		scripts = append(scripts, s)
		dirs = append(dirs, filepath.Dir(p))
		return nil
	})
	if err != nil || len(scripts) == 0 {
		b.Fatalf("no scripts under %s: %v", dir, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, s := range scripts {
			RunEngine(s, Options{Dir: dirs[j], Seed: 1})
		}
	}
	b.ReportMetric(float64(len(scripts)), "scripts")
}
