package restorer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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

// TestRestoreOverwrite restores over existing entries in each
// Options.Overwrite mode.
func TestRestoreOverwrite(t *testing.T) {
	f := newFakeLoader()
	mtime := time.Unix(2_000_000_000, 0)
	withTime := func(n *tree.Node) *tree.Node { n.ModTime = mtime; return n }
	root := f.addTree(
		withTime(f.fileNode("same", []byte("snapshot"))),
		withTime(f.fileNode("older", []byte("snapshot"))),
		withTime(f.fileNode("newer", []byte("snapshot"))),
		withTime(f.fileNode("missing", []byte("snapshot"))),
		dirNode("dir", f.addTree(withTime(f.fileNode("in", []byte("snapshot"))))),
	)
	// What the target had, by name: the content and the modification
	// time relative to the snapshot's.
	existing := map[string]time.Duration{"same": 0, "older": -time.Hour, "newer": time.Hour, "dir": 0}
	for _, tt := range []struct {
		mode    Overwrite
		kept    []string // names whose old content stays
		skipped uint64
		errs    int
	}{
		{OverwriteAlways, nil, 0, 0},
		{OverwriteIfChanged, []string{"same"}, 1, 0},
		{OverwriteIfNewer, []string{"same", "newer"}, 2, 0},
		{OverwriteNever, []string{"same", "older", "newer", "dir"}, 3, 1},
	} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			if m, err := ParseOverwrite(tt.mode.String()); err != nil || m != tt.mode {
				t.Fatalf("ParseOverwrite(%q) = %v, %v", tt.mode, m, err)
			}
			target := t.TempDir()
			for name, d := range existing {
				p := filepath.Join(target, name)
				must(t, os.WriteFile(p, []byte("original"), 0o600)) // as long as "snapshot"
				must(t, os.Chtimes(p, mtime.Add(d), mtime.Add(d)))
			}
			st, err := Restore(context.Background(), f, root, Options{Target: target, Overwrite: tt.mode})
			must(t, err)
			if len(st.Errors) != tt.errs || st.Skipped != tt.skipped || st.SkippedBytes != 8*tt.skipped {
				t.Errorf("errors %v, skipped %d (%d bytes); want %d errors, %d skipped", st.Errors, st.Skipped, st.SkippedBytes, tt.errs, tt.skipped)
			}
			for _, e := range st.Errors {
				if !errors.Is(e.Err, ErrFileInTheWay) {
					t.Errorf("%v: want ErrFileInTheWay", e)
				}
			}
			kept := map[string]bool{}
			for _, name := range tt.kept {
				kept[name] = true
			}
			for _, name := range []string{"same", "older", "newer", "missing", "dir"} {
				want := "snapshot"
				if kept[name] {
					want = "original"
				}
				p := filepath.Join(target, name)
				if name == "dir" && !kept[name] {
					p = filepath.Join(p, "in")
				}
				if b, err := os.ReadFile(p); err != nil || string(b) != want {
					t.Errorf("%s = %q, %v; want %q", name, b, err, want)
				}
			}
			// if-changed sets the metadata of the file it keeps.
			if tt.mode == OverwriteIfChanged {
				fi, err := os.Stat(filepath.Join(target, "same"))
				if err != nil || fi.Mode().Perm() != 0o644 {
					t.Errorf("same: mode %v, %v; want the snapshot's 0644", fi.Mode(), err)
				}
			}
		})
	}
	if _, err := ParseOverwrite("sometimes"); err == nil {
		t.Error("ParseOverwrite accepted \"sometimes\"")
	}
}

// treeState describes every entry below dir: type, mode, size, mtime,
// content or link target.
func treeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + l
		}
		m[p] = desc
		return nil
	}))
	return m
}

// TestRestoreDryRun: a dry run changes nothing in the target and counts
// what the real restore then does, in every mode.
func TestRestoreDryRun(t *testing.T) {
	f := newFakeLoader()
	mtime := time.Unix(2_000_000_000, 0)
	a := f.fileNode("a", []byte("snapshot a"))
	a.ModTime = mtime
	root := f.addTree(
		a,
		f.fileNode("file-was-dir", []byte("now a file")),
		&tree.Node{Name: "link", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "a", ModTime: mtime},
		dirNode("dir", f.addTree(f.fileNode("in", []byte("in")), dirNode("new-dir", f.addTree(f.fileNode("deep", []byte("deep")))))),
		dirNode("dir-was-file", f.addTree(f.fileNode("x", []byte("x")))),
	)
	for _, opts := range []Options{
		{},
		{Delete: true},
		{Overwrite: OverwriteNever},
		{Overwrite: OverwriteIfNewer, Delete: true},
		{Exclude: []string{"/dir"}, Delete: true},
	} {
		t.Run(fmt.Sprintf("delete %v overwrite %v exclude %v", opts.Delete, opts.Overwrite, opts.Exclude), func(t *testing.T) {
			target := t.TempDir()
			for name, content := range map[string]string{"a": "old a", "file-was-dir/mine": "mine", "dir/extra": "extra", "dir-was-file": "file", "top-extra": "t"} {
				p := filepath.Join(target, name)
				must(t, os.MkdirAll(filepath.Dir(p), 0o755))
				must(t, os.WriteFile(p, []byte(content), 0o644))
			}
			must(t, os.Symlink("/", filepath.Join(target, "link")))
			before := treeState(t, target)

			dry := opts
			dry.Target, dry.DryRun = target, true
			var mu sync.Mutex
			var wouldDelete []string
			dry.Deleted = func(p string) { mu.Lock(); wouldDelete = append(wouldDelete, p); mu.Unlock() }
			want, err := Restore(context.Background(), f, root, dry)
			must(t, err)
			if after := treeState(t, target); !reflect.DeepEqual(before, after) {
				t.Fatalf("the dry run changed the target:\n before %q\n after  %q", before, after)
			}

			real := opts
			real.Target = target
			var deleted []string
			real.Deleted = func(p string) { mu.Lock(); deleted = append(deleted, p); mu.Unlock() }
			got, err := Restore(context.Background(), f, root, real)
			must(t, err)
			sort.Strings(wouldDelete)
			sort.Strings(deleted)
			if !reflect.DeepEqual(wouldDelete, deleted) {
				t.Errorf("dry run would delete %q, the restore deleted %q", wouldDelete, deleted)
			}
			errPaths := func(st Stats) []string {
				var p []string
				for _, e := range st.Errors {
					p = append(p, e.Path+": "+e.Err.Error())
				}
				sort.Strings(p)
				return p
			}
			if !reflect.DeepEqual(errPaths(want), errPaths(got)) {
				t.Errorf("dry run errors %q, the restore's %q", errPaths(want), errPaths(got))
			}
			want.Errors, got.Errors = nil, nil
			if !reflect.DeepEqual(want, got) {
				t.Errorf("dry run counted %+v, the restore %+v", want, got)
			}
		})
	}
}

// TestRestoreDryRunMissingTarget: a dry run into a target that does not
// exist makes nothing and counts what a restore into an empty one does.
func TestRestoreDryRunMissingTarget(t *testing.T) {
	f := newFakeLoader()
	root := f.addTree(f.fileNode("a", []byte("aaa")), dirNode("d", f.addTree(f.fileNode("b", []byte("bb")))))
	missing := filepath.Join(t.TempDir(), "new")
	want, err := Restore(context.Background(), f, root, Options{Target: missing, DryRun: true, Delete: true})
	must(t, err)
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dry run made the target: %v", err)
	}
	empty := t.TempDir()
	got, err := Restore(context.Background(), f, root, Options{Target: empty, Delete: true})
	must(t, err)
	if !reflect.DeepEqual(want, got) || got.Files != 2 || got.Bytes != 5 {
		t.Errorf("dry run counted %+v, the restore %+v", want, got)
	}
}
