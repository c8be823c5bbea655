package integration

import (
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
	if r := e.run("snapshots"); r.code != 10 {
		t.Fatalf("snapshots before init: exit %d, want 10 (no repository)\n%s", r.code, r.stderr)
	}
	e.must("init")
	repositoryLife(t, e, 8_000_000)
}
