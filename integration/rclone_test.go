package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRclone runs the life of a repository through rclone (`rclone serve
// restic --stdio` on a local path, the remote every rclone has): init,
// backups, a restore byte for byte, a read through the mount, check
// --read-data, forget --prune; and a missing rclone or repository fails in
// one line.
func TestRclone(t *testing.T) {
	requireCmd(t, "rclone")
	e := newEnv(t)
	repoDir := filepath.Join(e.dir, "remote", "repo")
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rclone:"+repoDir, "RCLONE_CONFIG="+filepath.Join(e.dir, "rclone.conf"))
	if err := os.WriteFile(filepath.Join(e.dir, "rclone.conf"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.run("snapshots"); r.code != 10 || !strings.Contains(r.stderr, "rclone:") {
		t.Fatalf("snapshots before init: exit %d, want 10 naming the location\n%s", r.code, r.stderr)
	}
	src := filepath.Join(e.dir, "src")
	big := bytes.Repeat([]byte("through rclone "), 1_000_000)
	writeFile(t, filepath.Join(src, "big"), big)
	writeFile(t, filepath.Join(src, "d", "small"), []byte("small"))
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
