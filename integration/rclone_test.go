package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rcloneEnv returns the environment that makes dj reach the repository
// at dir through rclone (`rclone serve restic --stdio` on a local path),
// with an empty rclone config of e's own.
func rcloneEnv(t *testing.T, e *env, dir string) []string {
	t.Helper()
	requireCmd(t, "rclone")
	conf := filepath.Join(e.dir, "rclone.conf")
	writeFile(t, conf, nil)
	return []string{"DJ_REPOSITORY=rclone:" + dir, "RCLONE_CONFIG=" + conf}
}

// TestRclone runs the life of a repository (repositoryLife) through rclone
// (`rclone serve restic --stdio` on a local path, the remote every rclone
// has); a missing rclone or repository fails in one line.
func TestRclone(t *testing.T) {
	e := newEnv(t)
	repoDir := filepath.Join(e.dir, "remote", "repo")
	e.extraEnv = append(e.extraEnv, rcloneEnv(t, e, repoDir)...)
	if r := e.run("snapshots"); r.code != 10 || !strings.Contains(r.stderr, "rclone:") {
		t.Fatalf("snapshots before init: exit %d, want 10 naming the location\n%s", r.code, r.stderr)
	}
	e.must("init")
	repositoryLife(t, e, 15_000_000)
	// The files rclone wrote are the repository, laid out as restic's.
	for _, p := range []string{"config", "keys", "data", "index", "snapshots"} {
		if _, err := os.Stat(filepath.Join(repoDir, p)); err != nil {
			t.Errorf("layout: %v", err)
		}
	}
	r := e.runEnv([]string{"DJ_REPOSITORY=rclone:" + repoDir}, "snapshots", "-o", "rclone.program=/nonexistent/rclone")
	if r.code == 0 || !strings.Contains(r.stderr, "rclone.program") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("missing rclone program: exit %d\n%s", r.code, r.stderr)
	}
}
