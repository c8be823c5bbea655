package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// repositoryLife runs the life of an initialised repository on a remote
// backend: two backups, a restore compared byte for byte, a read through
// the mount (as root with FUSE), check --read-data, forget --keep-last 1
// --prune, repack and check again, and copies to and from a local
// repository (remoteCopies). bigSize sets the size of the large file (several
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
	e.must("repack", "--instant-delete")
	e.must("check", "--read-data")
	remoteCopies(t, e, src)
}

// remoteCopies copies the snapshots of the remote repository of e to a new
// local repository, makes a snapshot there and copies it back: both
// repositories check and restore byte for byte.
func remoteCopies(t *testing.T, e *env, src string) {
	t.Helper()
	remote := ""
	for _, kv := range e.extraEnv {
		if v, ok := strings.CutPrefix(kv, "DJ_REPOSITORY="); ok {
			remote = v
		}
	}
	local := filepath.Join(e.dir, "local-copy")
	pw := filepath.Join(e.dir, "password")
	toLocal := []string{"DJ_REPOSITORY=" + local, "DJ_FROM_REPOSITORY=" + remote, "DJ_FROM_PASSWORD_FILE=" + pw}
	toRemote := []string{"DJ_REPOSITORY=" + remote, "DJ_FROM_REPOSITORY=" + local, "DJ_FROM_PASSWORD_FILE=" + pw}
	run := func(extra []string, args ...string) string {
		t.Helper()
		r := e.runEnv(extra, args...)
		if r.code != 0 {
			t.Fatalf("dj %s (%s): exit %d\n%s%s", strings.Join(args, " "), extra[0], r.code, r.stdout, r.stderr)
		}
		return r.stdout
	}
	run(toLocal, "init")
	run(toLocal, "copy")
	run(toLocal, "check", "--read-data")
	writeFile(t, filepath.Join(src, "d", "third"), []byte("made in the local copy"))
	run(toLocal, "backup", src)
	run(toRemote, "copy")
	run(toRemote, "check", "--read-data")
	if n := strings.Count(run(toRemote, "snapshots", "--json"), `"tree"`); n != 2 {
		t.Fatalf("%d snapshots in %s after copying one back, want 2", n, remote)
	}
	for name, extra := range map[string][]string{"local": toLocal, "remote": toRemote} {
		target := filepath.Join(e.dir, "restored-copy-"+name)
		run(extra, "restore", "latest", "--target", target)
		if out, err := exec.Command("diff", "-r", src, filepath.Join(target, src)).CombinedOutput(); err != nil {
			t.Fatalf("restore of the copy in the %s repository differs from the source: %v\n%s", name, err, out)
		}
	}
}
