package integration

// Backup paths that run through symlinked directories (dj issue 8): the
// snapshot must be readable, hold the files, and match restic's layout.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBackupThroughSymlinkedDir(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "t")
	writeFile(t, filepath.Join(src, "real", "file"), []byte("hi\n"))
	writeFile(t, filepath.Join(src, "real", "sub", "x"), []byte("x\n"))
	if err := os.Symlink("real", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	rr := newResticRepo(t, false)
	cases := []struct {
		paths []string
		want  []string
	}{
		{[]string{"link/file"}, []string{"/link dir", "/link/file file"}},
		{[]string{"link/sub"}, []string{"/link dir", "/link/sub dir", "/link/sub/x file"}},
		{[]string{"link/file", "real/file"}, []string{"/link dir", "/link/file file", "/real dir", "/real/file file"}},
		{[]string{"link"}, []string{"/link symlink"}},
		// Given as itself and as the parent of another path: restic makes
		// it the directory it points to, with all its entries.
		{[]string{"link", "link/file"}, []string{"/link dir", "/link/file file", "/link/sub dir", "/link/sub/x file"}},
	}
	for _, tc := range cases {
		var args []string
		for _, p := range tc.paths {
			args = append(args, filepath.Join(src, p))
		}
		out := e.must(append([]string{"backup"}, args...)...)
		if !strings.Contains(out, "snapshot ") {
			t.Fatalf("backup %v: %s", tc.paths, out)
		}
		got := lsJSON(t, e.must("ls", "--json", "latest"), src)
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("backup %v: snapshot holds\n%s\nwant\n%s", tc.paths, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
		if rr != nil {
			rr.must(append([]string{"backup", "-q"}, args...)...)
			if rgot := lsJSON(t, rr.must("ls", "--json", "latest"), src); strings.Join(rgot, "\n") != strings.Join(got, "\n") {
				t.Errorf("backup %v: dj stores\n%s\nrestic stores\n%s", tc.paths, strings.Join(got, "\n"), strings.Join(rgot, "\n"))
			}
		}
	}
	// The data is there: check finds nothing wrong, restore brings it back.
	e.must("check", "--read-data")
	e.must("backup", filepath.Join(src, "link", "file"))
	dst := filepath.Join(e.dir, "restored")
	e.must("restore", "latest", "--target", dst)
	if b, err := os.ReadFile(filepath.Join(dst, src, "link", "file")); err != nil || string(b) != "hi\n" {
		t.Fatalf("restored link/file: %q, %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(dst, src, "link")); err != nil || !fi.IsDir() {
		t.Fatalf("restored link: %v, %v (want a directory)", fi, err)
	}
}

// TestBackupProcSelf: /proc/self is a symlink; a path below it gives a
// readable snapshot (the file itself cannot be read: exit 3, as restic).
func TestBackupProcSelf(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	r := e.run("backup", "/proc/self/mem")
	if r.code != 0 && r.code != 3 {
		t.Fatalf("backup /proc/self/mem: exit %d\n%s", r.code, r.stderr)
	}
	got := lsJSON(t, e.must("ls", "--json", "latest"), "")
	if len(got) < 2 || got[0] != "/proc dir" || got[1] != "/proc/self dir" {
		t.Fatalf("snapshot of /proc/self/mem holds %v", got)
	}
	e.must("check")
}

// TestBackupUnchangedDirKeepsTree: reading an unchanged tree between two
// backups (ls -R, cat) moves access times, which must not change any tree.
func TestBackupUnchangedDirKeepsTree(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	for _, name := range []string{"a/f1", "a/b/f2", "a/b/c/f3", "d/f4", "e/f/f5"} {
		writeFile(t, filepath.Join(src, name), []byte(name))
	}
	if err := os.Symlink("a/f1", filepath.Join(src, "l")); err != nil {
		t.Fatal(err)
	}
	// Old times, so that relatime moves the access times on reads.
	old := time.Now().Add(-2 * time.Hour)
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&os.ModeSymlink == 0 {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	before := ancestorStamps(src)
	first := backupSummary(t, e, src)
	shell(t, "ls -lR "+src+" >/dev/null && find "+src+" -type f -exec cat {} + >/dev/null && cat "+src+"/l >/dev/null")
	second := backupSummary(t, e, src)
	// Other programs may touch the directories above src (/tmp): only
	// those may change.
	moved := 0
	for i, s := range ancestorStamps(src) {
		if s != before[i] {
			moved++
		}
	}
	if second.DirsChanged > moved || second.FilesChanged != 0 || second.FilesNew != 0 {
		t.Fatalf("unchanged tree: dirs changed %d (directories above it moved: %d), files changed %d, new %d",
			second.DirsChanged, moved, second.FilesChanged, second.FilesNew)
	}
	if moved == 0 && second.tree != first.tree {
		t.Fatalf("unchanged tree: root tree %s, then %s", first.tree, second.tree)
	}
}

// ancestorStamps returns the mtime and ctime of each directory above path.
func ancestorStamps(path string) []string {
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
