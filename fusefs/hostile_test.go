//go:build linux

package fusefs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"dj/repo/snapshot"
	"dj/repo/tree"
)

// mountHostile mounts a repository of one snapshot of entries and returns
// the snapshot's directory in the mount, and the mount's log.
func mountHostile(t *testing.T, entries []fentry) (string, *testLog) {
	t.Helper()
	r := newFakeRepo()
	sn := &snapshot.Snapshot{Time: t0, Hostname: "h", Tree: r.build(entries), Paths: []string{"/"}}
	r.addSnapshot(sn)
	mnt, _, log := mountTest(t, r, Options{})
	return filepath.Join(mnt, "snapshots", timeName(sn)), log
}

// TestMountHardLinkConflict mounts nodes that claim one inode with
// different contents: each reads its own content (the mount served the
// first one looked up for both), and those with the same content still
// share an inode.
func TestMountHardLinkConflict(t *testing.T) {
	link := tree.Node{Mode: 0o644, Links: 2, Inode: 5, DeviceID: 1}
	dir, _ := mountHostile(t, []fentry{
		{path: "a", data: []byte("one"), node: link},
		{path: "b", data: []byte("two"), node: link},
		{path: "sub/c", data: []byte("one"), node: link},
	})
	ino := map[string]uint64{}
	for _, name := range []string{"a", "b", "sub/c", "b", "a"} {
		want := map[string]string{"a": "one", "b": "two", "sub/c": "one"}[name]
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		ino[name] = st.Ino
	}
	if ino["a"] != ino["sub/c"] {
		t.Error("a and sub/c (same inode, same content) have different inode numbers")
	}
	if ino["a"] == ino["b"] {
		t.Error("a and b (same inode, different content) share an inode number")
	}
}

// TestMountSizeMismatch reads files whose content's length differs from
// their size through the mount: EIO (the mount served the first bytes of a
// file whose size is smaller than its content), and one log line each.
func TestMountSizeMismatch(t *testing.T) {
	dir, log := mountHostile(t, []fentry{
		{path: "ok", data: []byte("fine")},
		{path: "short", data: []byte("0123456789"), node: tree.Node{Size: 4}},
		{path: "long", data: []byte("0123456789"), node: tree.Node{Size: 20}},
	})
	if b, err := os.ReadFile(filepath.Join(dir, "ok")); err != nil || string(b) != "fine" {
		t.Errorf("ok: %q, %v", b, err)
	}
	for _, name := range []string{"short", "long"} {
		for range 2 {
			if b, err := os.ReadFile(filepath.Join(dir, name)); !errors.Is(err, syscall.EIO) {
				t.Errorf("%s: read %q, %v; want EIO", name, b, err)
			}
		}
	}
	if n := log.count("its size says"); n != 2 {
		t.Errorf("%d log lines about sizes, want 2", n)
	}
}
