package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"dj/internal/testserver"
)

// TestResticRestServer runs dj against restic's own rest-server (v0.14.0,
// built from the module proxy), as DESIGN.md promises: the whole life of a
// repository, over the protocol restic's users already run.
func TestResticRestServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds restic's rest-server")
	}
	e := newEnv(t)
	url := testserver.StartRestServer(t, filepath.Join(e.dir, "served"))
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url)
	src := filepath.Join(e.dir, "src")
	big := bytes.Repeat([]byte("rest-server "), 700_000)
	writeFile(t, filepath.Join(src, "big"), big)
	writeFile(t, filepath.Join(src, "d", "small"), []byte("small"))

	if r := e.run("snapshots"); r.code != 10 {
		t.Fatalf("snapshots before init: exit %d, want 10 (no repository)\n%s", r.code, r.stderr)
	}
	e.must("init")
	e.must("backup", src)
	writeFile(t, filepath.Join(src, "d", "new"), []byte("second"))
	e.must("backup", src)
	target := filepath.Join(e.dir, "restored")
	e.must("restore", "latest", "--target", target)
	for name, want := range map[string][]byte{"big": big, "d/small": []byte("small"), "d/new": []byte("second")} {
		got, err := os.ReadFile(filepath.Join(target, src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("restored %s: %d bytes, %v", name, len(got), err)
		}
	}
	e.must("check", "--read-data")
	e.must("forget", "--keep-last", "1", "--prune")
	e.must("check", "--read-data")
	if out := e.must("snapshots", "--json"); bytes.Count([]byte(out), []byte(`"tree"`)) != 1 {
		t.Fatalf("after forget --keep-last 1: %s", out)
	}
}
