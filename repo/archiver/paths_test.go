package archiver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"dj/backend/mem"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// listSnapshot walks a snapshot with the reader's decoder (LoadTree) and
// returns every path under prefix with its node type, as "path type".
func listSnapshot(t *testing.T, r *repo.Repository, sn *snapshot.Snapshot, prefix string) []string {
	t.Helper()
	var out []string
	var walk func(dir string, id crypto.ID)
	walk = func(dir string, id crypto.ID) {
		tr, err := r.LoadTree(context.Background(), id)
		if err != nil {
			t.Fatalf("snapshot %s: tree of %q: %v", sn.ID.Short(), dir, err)
		}
		for _, n := range tr.Nodes {
			p := dir + "/" + n.Name
			if strings.HasPrefix(p, prefix+"/") {
				out = append(out, strings.TrimPrefix(p, prefix)+" "+string(n.Type))
			}
			if n.Type == tree.Dir {
				walk(p, *n.Subtree)
			}
		}
	}
	walk("", sn.Tree)
	sort.Strings(out)
	return out
}

// symlinkTree makes src/real/{file,sub/x} and src/link -> real.
func symlinkTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for _, name := range []string{"real/file", "real/sub/x"} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("real", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	return src
}

func TestBackupPathThroughSymlinkedDir(t *testing.T) {
	src := symlinkTree(t)
	cases := []struct {
		name  string
		paths []string
		want  []string
	}{
		{"file under a symlinked dir", []string{"link/file"},
			[]string{"/link dir", "/link/file file"}},
		{"dir under a symlinked dir", []string{"link/sub"},
			[]string{"/link dir", "/link/sub dir", "/link/sub/x file"}},
		{"through the link and the real path", []string{"link/file", "real/file"},
			[]string{"/link dir", "/link/file file", "/real dir", "/real/file file"}},
		{"the symlink itself", []string{"link"},
			[]string{"/link symlink"}},
		// restic: a path that is also the parent of another given path is a
		// directory holding everything the link points to.
		{"the symlink and a path under it", []string{"link", "link/file"},
			[]string{"/link dir", "/link/file file", "/link/sub dir", "/link/sub/x file"}},
		{"a path under it and the symlink", []string{"link/sub/x", "link"},
			[]string{"/link dir", "/link/file file", "/link/sub dir", "/link/sub/x file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			be := mem.New()
			r := repo.TestRepository(t, be)
			var paths []string
			for _, p := range tc.paths {
				paths = append(paths, filepath.Join(src, p))
			}
			sn, err := archiver.Backup(ctx, r, paths, archiver.Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := listSnapshot(t, repo.TestOpen(t, be), sn, src)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("snapshot holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestSymlinkedParentHasTargetMetadata: a parent reached through a symlink
// is stored as the directory the symlink resolves to.
func TestSymlinkedParentHasTargetMetadata(t *testing.T) {
	src := symlinkTree(t)
	if err := os.Chmod(filepath.Join(src, "real"), 0o705); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := repo.TestRepository(t, mem.New())
	sn, err := archiver.Backup(ctx, r, []string{filepath.Join(src, "link", "file")}, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.FindNode(ctx, sn.Tree, filepath.Join(src, "link"))
	if err != nil {
		t.Fatal(err)
	}
	if n.Type != tree.Dir || n.Mode.Perm() != 0o705 || n.Name != "link" {
		t.Fatalf("link stored as %s %v %q, want the directory it points to", n.Type, n.Mode, n.Name)
	}
}

// TestUnchangedTreeKeepsItsID: reading a directory between two backups
// (which moves the access times of directories and files) must not change
// any tree, and no directory counts as changed.
func TestUnchangedTreeKeepsItsID(t *testing.T) {
	src := t.TempDir()
	for _, name := range []string{"a/f1", "a/b/f2", "c/f3"} {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("a/f1", filepath.Join(src, "l"))
	readAll := func() {
		filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				os.ReadFile(p)
			}
			if err == nil && fi.Mode()&os.ModeSymlink != 0 {
				os.ReadFile(p) // through the link
			}
			return nil
		})
	}
	// relatime moves an access time only when it is not newer than the
	// modification time: make sure the reads below do move them.
	old := time.Now().Add(-time.Hour)
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&os.ModeSymlink == 0 {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	ctx := context.Background()
	r := repo.TestRepository(t, mem.New())
	before := ancestorTimes(src)
	sn1, err := archiver.Backup(ctx, r, []string{src}, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	readAll()
	sn2, err := archiver.Backup(ctx, r, []string{src}, archiver.Options{Parent: sn1})
	if err != nil {
		t.Fatal(err)
	}
	// Other programs may write to the directories above src (/tmp);
	// those are the only ones allowed to change.
	moved := 0
	for i, ts := range ancestorTimes(src) {
		if ts != before[i] {
			moved++
		}
	}
	n1, _ := r.FindNode(ctx, sn1.Tree, src)
	n2, _ := r.FindNode(ctx, sn2.Tree, src)
	if *n1.Subtree != *n2.Subtree || int(sn2.Summary.DirsChanged) > moved || (moved == 0 && sn2.Tree != sn1.Tree) {
		t.Fatalf("unchanged directory: trees %s -> %s, summary %+v", sn1.Tree.Short(), sn2.Tree.Short(), sn2.Summary)
	}

	// --with-atime stores the real access times.
	sn3, err := archiver.Backup(ctx, r, []string{src}, archiver.Options{WithAtime: true})
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.FindNode(ctx, sn3.Tree, filepath.Join(src, "a", "f1"))
	if err != nil {
		t.Fatal(err)
	}
	if n.AccessTime.Equal(n.ModTime) {
		t.Fatalf("--with-atime: atime %v equals mtime", n.AccessTime)
	}
	n, _ = r.FindNode(ctx, sn2.Tree, filepath.Join(src, "a", "f1"))
	if !n.AccessTime.Equal(n.ModTime) {
		t.Fatalf("without --with-atime: atime %v, mtime %v", n.AccessTime, n.ModTime)
	}
}

// ancestorTimes returns the mtime and ctime of each directory above path.
func ancestorTimes(path string) []string {
	var out []string
	for p := filepath.Dir(path); ; p = filepath.Dir(p) {
		var st syscall.Stat_t
		syscall.Stat(p, &st)
		out = append(out, fmt.Sprint(st.Mtim, st.Ctim))
		if p == "/" {
			return out
		}
	}
}
