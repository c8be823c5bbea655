//go:build linux

package fusefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TestMountLongNames lists a directory holding names longer than the
// kernel's limit (255 bytes): the other entries are listed (the kernel
// failed the whole listing, and ls showed the directory empty), the long
// ones are skipped with one log line for each directory.
func TestMountLongNames(t *testing.T) {
	long := []string{strings.Repeat("l", 256), strings.Repeat("m", 1100), strings.Repeat("n", 5000)}
	entries := []fentry{{path: "a", data: []byte("a")}, {path: "z", data: []byte("z")}, {path: "d/ok", data: []byte("ok")}}
	for _, name := range long {
		entries = append(entries, fentry{path: name, data: []byte("long")}, fentry{path: "d/" + name, data: []byte("long")})
	}
	entries = append(entries, fentry{path: strings.Repeat("k", 255), data: []byte("max")})
	dir, log := mountHostile(t, entries)
	for range 2 {
		for _, sub := range []string{"", "d"} {
			des, err := os.ReadDir(filepath.Join(dir, sub))
			var got []string
			for _, de := range des {
				got = append(got, de.Name())
			}
			want := []string{"a", "d", strings.Repeat("k", 255), "z"}
			if sub == "d" {
				want = []string{"ok"}
			}
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("ls %q: %v, %v; want %v", sub, shorten(got), err, shorten(want))
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, strings.Repeat("k", 255))); err != nil || string(b) != "max" {
		t.Errorf("255-byte name: %q, %v", b, err)
	}
	// The versions view lists what fits, and no name of 255 bytes fits
	// with the snapshot's time appended.
	vers := filepath.Join(dir, "../../versions")
	des, err := os.ReadDir(vers)
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
	}
	tm := filepath.Base(dir)
	if want := []string{"a@" + tm, "d", "z@" + tm}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ls versions: %v, %v; want %v", shorten(got), err, want)
	}
	if n := log.count("longer than"); n != 3 {
		t.Errorf("%d log lines about long names, want 3 (one a directory)", n)
	}
}

// shorten abbreviates long names for messages.
func shorten(names []string) []string {
	var out []string
	for _, n := range names {
		if len(n) > 20 {
			n = fmt.Sprintf("%s…(%d bytes)", n[:10], len(n))
		}
		out = append(out, n)
	}
	return out
}
