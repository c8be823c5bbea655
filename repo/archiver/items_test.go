package archiver_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"dj/backend/mem"
	"dj/repo"
	"dj/repo/archiver"
)

// TestItemDoneAndCounts checks the verbose item reports against the
// summary: every regular file and directory is reported once, with the
// action its summary counter says; symlinks and fifos count nowhere.
func TestItemDoneAndCounts(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, be)
	src := t.TempDir()
	for name, body := range map[string]string{"a": "alpha", "sub/b": "beta", "sub/deep/c": strings.Repeat("c", 5000)} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}

	run := func(parent bool) []archiver.Item {
		var mu sync.Mutex
		var items []archiver.Item
		opts := archiver.Options{Hostname: "h", ItemDone: func(it archiver.Item) {
			mu.Lock()
			items = append(items, it)
			mu.Unlock()
		}}
		if parent {
			list, _, err := r.Snapshots(ctx)
			if err != nil || len(list) == 0 {
				t.Fatalf("snapshots: %v", err)
			}
			opts.Parent = list[len(list)-1]
		}
		sn, err := archiver.Backup(ctx, r, []string{src}, opts)
		if err != nil {
			t.Fatal(err)
		}
		s := sn.Summary
		count := map[[2]any]uint64{}
		for _, it := range items {
			count[[2]any{it.Dir, it.Action}]++
		}
		want := map[[2]any]uint64{
			{false, archiver.ItemNew}: s.FilesNew, {false, archiver.ItemModified}: s.FilesChanged, {false, archiver.ItemUnchanged}: s.FilesUnmodified,
			{true, archiver.ItemNew}: s.DirsNew, {true, archiver.ItemModified}: s.DirsChanged, {true, archiver.ItemUnchanged}: s.DirsUnmodified,
		}
		for k, n := range want {
			if count[k] != n {
				t.Errorf("dir=%v action %v: %d items, summary says %d", k[0], k[1], count[k], n)
			}
		}
		if s.TotalFilesProcessed != s.FilesNew+s.FilesChanged+s.FilesUnmodified || s.TotalFilesProcessed != 3 {
			t.Errorf("total files processed %d, want 3 (new %d changed %d unmodified %d)", s.TotalFilesProcessed, s.FilesNew, s.FilesChanged, s.FilesUnmodified)
		}
		return items
	}

	items := run(false)
	var dirs []string
	var added uint64
	for _, it := range items {
		if it.Dir {
			dirs = append(dirs, it.Path)
			if it.TreeSize == 0 {
				t.Errorf("new directory %s: no tree size", it.Path)
			}
		} else {
			added += it.DataAdded
		}
	}
	sort.Strings(dirs)
	// Every directory from the top down to the deepest, but not the root.
	if want := strings.Count(src, "/") + 2; len(dirs) != want || dirs[0] == "/" {
		t.Errorf("directories reported: %v, want %d without /", dirs, want)
	}
	if added != 5+4+5000 {
		t.Errorf("files added %d bytes, want %d", added, 5+4+5000)
	}

	if err := os.WriteFile(filepath.Join(src, "sub/b"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	items = run(true)
	byPath := map[string]archiver.Item{}
	for _, it := range items {
		byPath[it.Path] = it
	}
	if it := byPath[filepath.Join(src, "sub/b")]; it.Action != archiver.ItemModified || it.DataAdded != 7 {
		t.Errorf("changed file: %+v", it)
	}
	if it := byPath[filepath.Join(src, "a")]; it.Action != archiver.ItemUnchanged || it.DataAdded != 0 {
		t.Errorf("unchanged file: %+v", it)
	}
	if it := byPath[filepath.Join(src, "sub/deep")]; !it.Dir || it.Action != archiver.ItemUnchanged {
		t.Errorf("unchanged directory: %+v", it)
	}
	if it := byPath[filepath.Join(src, "sub")]; !it.Dir || it.Action != archiver.ItemModified || it.TreeSize == 0 {
		t.Errorf("changed directory: %+v", it)
	}
}
