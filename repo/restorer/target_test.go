package restorer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"dj/repo/tree"
)

// TestRestoreDelete restores with Options.Delete into a target that holds
// more than the snapshot: what the snapshot lacks goes (the patterns
// permitting), a file replaces a non-empty directory, a symlink in the
// target is removed and never followed, and nothing outside the target
// changes.
func TestRestoreDelete(t *testing.T) {
	f := newFakeLoader()
	root := f.addTree(
		f.fileNode("file-was-dir", []byte("now a file")),
		&tree.Node{Name: "link-was-dir", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "x", ModTime: time.Unix(5, 0)},
		dirNode("existing", f.addTree(f.fileNode("new", []byte("new")))),
		dirNode("kept.log", f.addTree(f.fileNode("in", []byte("in")))),
	)
	for _, tt := range []struct {
		name        string
		exclude     []string
		wantDeleted []string
		wantKept    []string
	}{
		{"all", nil,
			[]string{"/existing/old", "/extra-dir", "/extra-file", "/extra-link", "/kept.log/extra.log"},
			nil},
		{"exclude *.log", []string{"*.log"},
			[]string{"/existing/old", "/extra-dir", "/extra-file", "/extra-link"},
			[]string{"kept.log/extra.log"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			target := s.target
			must(t, os.MkdirAll(filepath.Join(target, "file-was-dir/sub"), 0o755))
			must(t, os.WriteFile(filepath.Join(target, "file-was-dir/sub/old"), []byte("old"), 0o644))
			must(t, os.MkdirAll(filepath.Join(target, "link-was-dir"), 0o755))
			must(t, os.WriteFile(filepath.Join(target, "link-was-dir/old"), []byte("old"), 0o644))
			must(t, os.MkdirAll(filepath.Join(target, "existing"), 0o755))
			must(t, os.WriteFile(filepath.Join(target, "existing/old"), []byte("old"), 0o644))
			must(t, os.MkdirAll(filepath.Join(target, "extra-dir/deep"), 0o755))
			must(t, os.WriteFile(filepath.Join(target, "extra-dir/deep/x"), []byte("x"), 0o644))
			must(t, os.WriteFile(filepath.Join(target, "extra-file"), []byte("x"), 0o644))
			must(t, os.Symlink(s.victim, filepath.Join(target, "extra-link")))
			must(t, os.MkdirAll(filepath.Join(target, "kept.log"), 0o755))
			must(t, os.WriteFile(filepath.Join(target, "kept.log/extra.log"), []byte("x"), 0o644))

			var mu sync.Mutex
			var deleted []string
			st, err := Restore(context.Background(), f, root, Options{Target: target, Delete: true, Exclude: tt.exclude,
				Deleted: func(p string) {
					mu.Lock()
					deleted = append(deleted, p)
					mu.Unlock()
				}})
			must(t, err)
			if len(st.Errors) > 0 {
				t.Fatal(st.Errors)
			}
			sort.Strings(deleted)
			if !reflect.DeepEqual(deleted, tt.wantDeleted) || st.Deleted != uint64(len(tt.wantDeleted)) {
				t.Errorf("deleted %q (Stats.Deleted %d), want %q", deleted, st.Deleted, tt.wantDeleted)
			}
			for _, name := range tt.wantDeleted {
				if _, err := os.Lstat(filepath.Join(target, name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is still there: %v", name, err)
				}
			}
			for _, name := range tt.wantKept {
				if _, err := os.Lstat(filepath.Join(target, name)); err != nil {
					t.Errorf("%s should be kept: %v", name, err)
				}
			}
			want := map[string]string{"file-was-dir": "now a file", "existing/new": "new"}
			if tt.exclude == nil {
				want["kept.log/in"] = "in"
			}
			for name, want := range want {
				b, err := os.ReadFile(filepath.Join(target, name))
				if err != nil || string(b) != want {
					t.Errorf("%s = %q, %v; want %q", name, b, err, want)
				}
			}
			if l, err := os.Readlink(filepath.Join(target, "link-was-dir")); err != nil || l != "x" {
				t.Errorf("link-was-dir: %q, %v", l, err)
			}
			s.check(t)
		})
	}
}

// TestRestoreDeleteUnreadableTree: a directory whose tree cannot be read
// whole deletes nothing, since what the snapshot holds there is unknown.
func TestRestoreDeleteUnreadableTree(t *testing.T) {
	f := newFakeLoader()
	broken := f.addTree(f.fileNode("never", []byte("x")))
	f.treeErr[broken] = errors.New("tree pack is corrupt")
	root := f.addTree(dirNode("broken", broken), f.fileNode("good", []byte("good")))
	target := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(target, "broken"), 0o755))
	must(t, os.WriteFile(filepath.Join(target, "broken/mine"), []byte("mine"), 0o644))
	st, err := Restore(context.Background(), f, root, Options{Target: target, Delete: true})
	must(t, err)
	if len(st.Errors) != 1 || st.Deleted != 0 {
		t.Errorf("errors %v, deleted %d; want the broken directory's error and nothing deleted", st.Errors, st.Deleted)
	}
	if b, err := os.ReadFile(filepath.Join(target, "broken/mine")); err != nil || string(b) != "mine" {
		t.Errorf("broken/mine = %q, %v", b, err)
	}
}
