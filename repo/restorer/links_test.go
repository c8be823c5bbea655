package restorer

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// linkConflictTree returns a tree whose nodes a, b and sub/c all claim
// device 1, inode 5 and two links: a and sub/c hold "one", b holds "two".
// Only a and sub/c are links to one file.
func linkConflictTree(f *fakeLoader) crypto.ID {
	link := func(name, content string) *tree.Node {
		n := f.fileNode(name, []byte(content))
		n.Links, n.Inode, n.DeviceID = 2, 5, 1
		return n
	}
	sub := f.addTree(link("c", "one"))
	return f.addTree(link("a", "one"), link("b", "two"), dirNode("sub", sub))
}

// TestRestoreHardLinkConflict restores nodes that claim one inode with
// different contents: each keeps its own content (restore made them one
// file with the first one's content), and those with the same content are
// still hard links.
func TestRestoreHardLinkConflict(t *testing.T) {
	f := newFakeLoader()
	root := linkConflictTree(f)
	dir := t.TempDir()
	st, err := Restore(context.Background(), f, root, Options{Target: dir, Owner: isRoot(), Workers: 2})
	must(t, err)
	if len(st.Errors) != 0 {
		t.Errorf("errors: %v", st.Errors)
	}
	ino := map[string]uint64{}
	for name, want := range map[string]string{"a": "one", "b": "two", "sub/c": "one"} {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		must(t, err)
		if string(got) != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
		var s syscall.Stat_t
		must(t, syscall.Stat(p, &s))
		ino[name] = s.Ino
	}
	if ino["a"] != ino["sub/c"] {
		t.Error("a and sub/c (same inode, same content) are not hard links")
	}
	if ino["a"] == ino["b"] {
		t.Error("a and b (same inode, different content) are one file")
	}
}

// TestWriteTarHardLinkConflict is TestRestoreHardLinkConflict for dump.
func TestWriteTarHardLinkConflict(t *testing.T) {
	f := newFakeLoader()
	root := linkConflictTree(f)
	var buf bytes.Buffer
	must(t, WriteTar(context.Background(), f, root, "", &buf))
	m := readTar(t, buf.Bytes())
	for name, want := range map[string]string{"a": "one", "b": "two"} {
		e, ok := m[name]
		if !ok {
			t.Fatalf("%s not in the tar: %v", name, keys(m))
		}
		if e.hdr.Typeflag != tar.TypeReg || string(e.content) != want {
			t.Errorf("%s: type %c, content %q; want a regular file of %q", name, e.hdr.Typeflag, e.content, want)
		}
	}
	if e := m["sub/c"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != "a" {
		t.Errorf("sub/c is not a link to a: %+v", e.hdr)
	}
}

// TestRestoreLongName restores a directory holding a name longer than the
// file system's limit: one error naming the entry, and the rest restored.
func TestRestoreLongName(t *testing.T) {
	f := newFakeLoader()
	long := strings.Repeat("l", 300)
	sub := f.addTree(f.fileNode("inner", []byte("in")))
	root := f.addTree(f.fileNode("a", []byte("a")), dirNode(long+"d", sub), f.fileNode(long, []byte("long")), f.fileNode("z", []byte("z")))
	dir := t.TempDir()
	st, err := Restore(context.Background(), f, root, Options{Target: dir, Owner: isRoot(), Workers: 2})
	must(t, err)
	for _, e := range st.Errors {
		t.Logf("error: %v", e)
	}
	if len(st.Errors) != 2 {
		t.Errorf("%d errors, want 2 (the file and the directory)", len(st.Errors))
	}
	for _, e := range st.Errors {
		if !strings.Contains(e.Error(), "llllllllll") || !strings.Contains(e.Error(), "too long") {
			t.Errorf("error does not name the entry and say why: %v", e)
		}
	}
	for _, name := range []string{"a", "z"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != name {
			t.Errorf("%s: %q, %v", name, b, err)
		}
	}
}

// TestRestoreSetIDWithoutOwner restores set-id files whose owner the
// restore cannot set as stored: uid and gid 4294967295 ((uid_t)-1, which
// chown reads as "leave unchanged"; restore made a root-owned setuid file
// without a word), and, as non-root, another user's. The setuid and setgid
// bits are dropped with one warning naming the file; a set-id file whose
// owner is set keeps them.
func TestRestoreSetIDWithoutOwner(t *testing.T) {
	f := newFakeLoader()
	setid := os.ModeSetuid | os.ModeSetgid | os.ModeSticky | 0o777
	node := func(name string, uid, gid uint32) *tree.Node {
		n := f.fileNode(name, []byte("#!/bin/sh\n"))
		n.Mode, n.UID, n.GID = setid, uid, gid
		return n
	}
	me, mygid := uint32(os.Getuid()), uint32(os.Getgid())
	other := uint32(12345)
	if me == other {
		other++
	}
	root := f.addTree(node("minus1", 1<<32-1, 1<<32-1), node("mine", me, mygid), node("other", other, other),
		node("uid-minus1", 1<<32-1, mygid))
	dir := t.TempDir()
	var warns []string
	var mu sync.Mutex
	st, err := Restore(context.Background(), f, root, Options{Target: dir, Owner: isRoot(), Workers: 2,
		Warn: func(rel string, err error) {
			mu.Lock()
			warns = append(warns, rel+": "+err.Error())
			mu.Unlock()
		}})
	must(t, err)
	if len(st.Errors) != 0 {
		t.Errorf("errors: %v", st.Errors)
	}
	want := map[string]uint32{"minus1": 0o1777, "mine": 0o7777, "other": 0o1777, "uid-minus1": 0o3777}
	if isRoot() {
		want["other"] = 0o7777 // root sets any owner
	}
	for name, mode := range want {
		var s syscall.Stat_t
		must(t, syscall.Lstat(filepath.Join(dir, name), &s))
		if got := s.Mode & 0o7777; got != mode {
			t.Errorf("%s: mode %o owner %d:%d, want mode %o", name, got, s.Uid, s.Gid, mode)
		}
		n := 0
		for _, w := range warns {
			if strings.HasPrefix(w, "/"+name+":") {
				n++
			}
		}
		if wantWarn := mode != 0o7777; (n == 1) != wantWarn || n > 1 {
			t.Errorf("%s: %d warnings, want %v: %q", name, n, wantWarn, warns)
		}
	}
	for _, w := range warns {
		t.Logf("warning: %s", w)
	}
}

// TestWriteTarSetIDWithoutOwner: dump leaves out the setuid (setgid) bit
// of a file whose owner (group) is (uid_t)-1, which tar run as root would
// leave as root.
func TestWriteTarSetIDWithoutOwner(t *testing.T) {
	f := newFakeLoader()
	n := f.fileNode("minus1", []byte("x"))
	n.Mode, n.UID, n.GID = os.ModeSetuid|os.ModeSetgid|os.ModeSticky|0o777, 1<<32-1, 1<<32-1
	m := f.fileNode("mine", []byte("y"))
	m.Mode, m.UID, m.GID = os.ModeSetuid|os.ModeSetgid|0o755, 5, 6
	var buf bytes.Buffer
	must(t, WriteTar(context.Background(), f, f.addTree(n, m), "", &buf))
	tr := readTar(t, buf.Bytes())
	if got := tr["minus1"].hdr.Mode; got != 0o1777 {
		t.Errorf("minus1: mode %o, want 1777", got)
	}
	if got := tr["mine"].hdr.Mode; got != 0o6755 {
		t.Errorf("mine: mode %o, want 6755", got)
	}
}
