package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// repositoryLife runs the life of an initialised repository on a remote
// backend: two backups, a restore compared byte for byte, a read through
// the mount (as root with FUSE), check --read-data, forget --keep-last 1
// --prune and check again. bigSize sets the size of the large file (several
// packs when over 16 MB).
func repositoryLife(t *testing.T, e *env, bigSize int) {
	t.Helper()
	src := filepath.Join(e.dir, "src")
	big := bytes.Repeat([]byte("remote life "), bigSize/12)
	writeFile(t, filepath.Join(src, "big"), big)
	writeFile(t, filepath.Join(src, "d", "small"), []byte("small"))
	e.must("backup", src)
	writeFile(t, filepath.Join(src, "d", "new"), []byte("second"))
	e.must("backup", src)
	if out := e.must("snapshots", "--json"); strings.Count(out, `"tree"`) != 2 {
		t.Fatalf("snapshots after two backups: %s", out)
	}
	target := filepath.Join(e.dir, "restored")
	e.must("restore", "latest", "--target", target)
	for name, want := range map[string][]byte{"big": big, "d/small": []byte("small"), "d/new": []byte("second")} {
		got, err := os.ReadFile(filepath.Join(target, src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("restored %s: %d bytes, %v", name, len(got), err)
		}
	}
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/dev/fuse"); err == nil {
			m := e.mount()
			got, err := os.ReadFile(filepath.Join(m.dir, "snapshots", "latest", src, "big"))
			if err != nil || !bytes.Equal(got, big) {
				t.Errorf("read through the mount: %d bytes, %v", len(got), err)
			}
			m.stop()
		}
	}
	e.must("check", "--read-data")
	e.must("forget", "--keep-last", "1", "--prune")
	e.must("check", "--read-data")
	if out := e.must("snapshots", "--json"); strings.Count(out, `"tree"`) != 1 {
		t.Fatalf("after forget --keep-last 1: %s", out)
	}
}
