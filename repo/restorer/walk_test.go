package restorer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/tree"
	"dj/repo/walk"
)

// sandbox is a directory with a restore target and a victim next to it;
// check fails the test if anything outside the target changed.
type sandbox struct {
	dir, target, victim string
	before              map[string]string
}

func newSandbox(t *testing.T) *sandbox {
	dir := t.TempDir()
	s := &sandbox{dir: dir, target: filepath.Join(dir, "target"), victim: filepath.Join(dir, "victim")}
	must(t, os.Mkdir(s.target, 0o755))
	must(t, os.Mkdir(s.victim, 0o755))
	must(t, os.WriteFile(filepath.Join(s.victim, "passwd"), []byte("root:x:0:0\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(s.victim, "file"), []byte("precious"), 0o600))
	s.before = s.hash(t)
	return s
}

// hash describes everything in the sandbox outside the target.
func (s *sandbox) hash(t *testing.T) map[string]string {
	m := map[string]string{}
	must(t, filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == s.target {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode %o uid %d mtime %d.%d size %d", st.Mode, st.Uid, st.Mtim.Sec, st.Mtim.Nsec, st.Size)
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		m[p] = desc
		return nil
	}))
	return m
}

func (s *sandbox) check(t *testing.T) {
	t.Helper()
	if after := s.hash(t); !reflect.DeepEqual(s.before, after) {
		t.Errorf("outside of the target changed:\n before %q\n after  %q", s.before, after)
	}
}

func TestRestoreHostileTrees(t *testing.T) {
	tests := []struct {
		name string
		// build returns the root tree; s.victim is the directory to attack.
		build     func(f *fakeLoader, s *sandbox) crypto.ID
		plant     func(t *testing.T, s *sandbox) // prepares the target
		errors    int                            // FileErrors expected
		wantFiles []string                       // must exist in the target afterwards
	}{
		{
			name: "invalid names",
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				evil := f.fileNode("x", []byte("evil"))
				var nodes []*tree.Node
				for _, name := range []string{"..", ".", "", "a/b", "../victim/passwd", "/etc/passwd", "x\x00", "\x00"} {
					n := *evil
					n.Name = name
					nodes = append(nodes, &n)
				}
				sub := f.addTree(nodes...)
				return f.addTree(append(nodes, dirNode("d", sub), f.fileNode("ok", []byte("fine")))...)
			},
			errors:    16,
			wantFiles: []string{"ok", "d"},
		},
		{
			name: "symlink then a directory through it",
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				sub := f.addTree(f.fileNode("passwd", []byte("owned")))
				return f.addTree(
					&tree.Node{Name: "evil", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: s.victim},
					dirNode("evil", sub),
				)
			},
			errors:    1,
			wantFiles: []string{"evil"},
		},
		{
			name: "directory then a symlink replacing it",
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				sub := f.addTree(f.fileNode("passwd", bytes.Repeat([]byte("owned"), 100_000)))
				return f.addTree(
					dirNode("evil", sub),
					&tree.Node{Name: "evil", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: s.victim},
				)
			},
			errors:    1,
			wantFiles: []string{"evil/passwd"},
		},
		{
			name: "duplicate names apart, out of order",
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				return f.addTree(f.fileNode("b", []byte("first")), f.fileNode("a", []byte("a")),
					f.fileNode("c", []byte("c")), f.fileNode("b", []byte("second")))
			},
			errors:    1,
			wantFiles: []string{"a", "b", "c"},
		},
		{
			name: "planted symlink to a directory",
			plant: func(t *testing.T, s *sandbox) {
				must(t, os.Symlink(s.victim, filepath.Join(s.target, "d")))
			},
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				return f.addTree(dirNode("d", f.addTree(f.fileNode("passwd", []byte("owned")))))
			},
			wantFiles: []string{"d/passwd"},
		},
		{
			name: "planted symlink to a file",
			plant: func(t *testing.T, s *sandbox) {
				must(t, os.Symlink(filepath.Join(s.victim, "file"), filepath.Join(s.target, "f")))
				must(t, os.Symlink(filepath.Join(s.victim, "passwd"), filepath.Join(s.target, "fifo")))
			},
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				return f.addTree(f.fileNode("f", []byte("owned")),
					&tree.Node{Name: "fifo", Type: tree.FIFO, Mode: os.ModeNamedPipe | 0o777})
			},
			wantFiles: []string{"f", "fifo"},
		},
		{
			name: "planted hard link to a file outside",
			plant: func(t *testing.T, s *sandbox) {
				must(t, os.Link(filepath.Join(s.victim, "file"), filepath.Join(s.target, "f")))
			},
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				return f.addTree(f.fileNode("f", []byte("owned")))
			},
			wantFiles: []string{"f"},
		},
		{
			name: "hard link to a symlink",
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				file := f.fileNode("t", []byte("owned"))
				file.Links, file.Inode, file.DeviceID = 2, 99, 1
				return f.addTree(
					&tree.Node{Name: "s", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: filepath.Join(s.victim, "file"),
						Links: 2, Inode: 99, DeviceID: 1},
					file,
				)
			},
			wantFiles: []string{"s", "t"},
		},
		{
			name: "directory cycle",
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				id := crypto.Hash([]byte("cycle"))
				f.setTree(id, dirNode("again", id), f.fileNode("f", []byte("x")))
				return id
			},
			errors:    1,
			wantFiles: []string{"f"},
		},
		{
			name: "directory without subtree, hostile size",
			build: func(f *fakeLoader, s *sandbox) crypto.ID {
				return f.addTree(&tree.Node{Name: "d", Type: tree.Dir, Mode: os.ModeDir | 0o755},
					&tree.Node{Name: "huge", Type: tree.File, Mode: 0o644, Size: 1 << 63},
					&tree.Node{Name: "null", Type: tree.File, Mode: 0o644, Size: 10, Content: []crypto.ID{{1}}},
					nil)
			},
			errors:    4,
			wantFiles: []string{"huge", "null"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			if tt.plant != nil {
				tt.plant(t, s)
			}
			f := newFakeLoader()
			root := tt.build(f, s)
			st, err := Restore(context.Background(), f, root, Options{Target: s.target, Owner: isRoot(), Workers: 2})
			must(t, err)
			if len(st.Errors) != tt.errors {
				t.Errorf("%d errors, want %d: %v", len(st.Errors), tt.errors, st.Errors)
			}
			for _, e := range st.Errors {
				t.Logf("error: %v", e)
			}
			for _, name := range tt.wantFiles {
				if _, err := os.Lstat(filepath.Join(s.target, name)); err != nil {
					t.Errorf("%s not restored: %v", name, err)
				}
			}
			s.check(t)
			// Nothing was restored as a symlink where a directory was
			// planted, and no restored path leads outside.
			must(t, filepath.WalkDir(s.target, func(p string, d fs.DirEntry, err error) error {
				must(t, err)
				if d.Type().IsRegular() {
					var st syscall.Stat_t
					must(t, syscall.Stat(p, &st))
					if st.Nlink > 1 {
						rel, _ := filepath.Rel(s.target, p)
						if rel != "t" && rel != "s" {
							t.Errorf("%s has %d links", p, st.Nlink)
						}
					}
				}
				return nil
			}))
			var big unix.Stat_t
			if unix.Stat(filepath.Join(s.target, "huge"), &big) == nil && big.Size != 0 {
				t.Errorf("hostile size made a %d byte file", big.Size)
			}
		})
	}
}

func TestRestoreIncludeExclude(t *testing.T) {
	f := newFakeLoader()
	docs := f.addTree(f.fileNode("a.odt", []byte("a")), f.fileNode("b.txt", []byte("b")))
	deep := f.addTree(f.fileNode("x.odt", []byte("x")))
	home := f.addTree(dirNode("docs", docs), dirNode("deep", f.addTree(dirNode("er", deep))), f.fileNode("c.odt", []byte("c")))
	root := f.addTree(dirNode("home", home), f.fileNode("top.txt", []byte("t")))

	all := []string{"home/", "home/c.odt", "home/deep/", "home/deep/er/", "home/deep/er/x.odt", "home/docs/", "home/docs/a.odt", "home/docs/b.txt", "top.txt"}
	tests := []struct {
		name             string
		include, exclude []string
		want             []string
	}{
		{"all", nil, nil, all},
		{"include glob", []string{"*.odt"}, nil, []string{"home/", "home/c.odt", "home/deep/", "home/deep/er/", "home/deep/er/x.odt", "home/docs/", "home/docs/a.odt"}},
		{"include dir", []string{"/home/docs"}, nil, []string{"home/", "home/docs/", "home/docs/a.odt", "home/docs/b.txt"}},
		{"exclude dir", nil, []string{"deep"}, []string{"home/", "home/c.odt", "home/docs/", "home/docs/a.odt", "home/docs/b.txt", "top.txt"}},
		{"exclude glob", nil, []string{"*.odt"}, []string{"home/", "home/deep/", "home/deep/er/", "home/docs/", "home/docs/b.txt", "top.txt"}},
		{"both", []string{"/home"}, []string{"/home/docs/*.txt", "er"}, []string{"home/", "home/c.odt", "home/deep/", "home/docs/", "home/docs/a.odt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := t.TempDir()
			st, err := Restore(context.Background(), f, root, Options{Target: target, Include: tt.include, Exclude: tt.exclude})
			must(t, err)
			if len(st.Errors) > 0 {
				t.Fatal(st.Errors)
			}
			var got []string
			must(t, filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
				if p != target {
					rel, _ := filepath.Rel(target, p)
					if d.IsDir() {
						rel += "/"
					}
					got = append(got, rel)
				}
				return err
			}))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("restored %q\n want %q", got, tt.want)
			}
		})
	}
	if _, err := Restore(context.Background(), f, root, Options{Target: t.TempDir(), Include: []string{"[bad"}}); err == nil {
		t.Error("no error for a bad pattern")
	}
}

// TestRestoreInsensitivePatterns: InsensitiveInclude and
// InsensitiveExclude ignore case and add to Include and Exclude.
func TestRestoreInsensitivePatterns(t *testing.T) {
	f := newFakeLoader()
	docs := f.addTree(f.fileNode("A.ODT", []byte("a")), f.fileNode("b.txt", []byte("b")), f.fileNode("C.Txt", []byte("c")))
	root := f.addTree(dirNode("Docs", docs), f.fileNode("top.odt", []byte("t")))

	tests := []struct {
		name               string
		include, exclude   []string
		iinclude, iexclude []string
		want               []string
	}{
		{"include keeps case", []string{"*.odt"}, nil, nil, nil, []string{"top.odt"}},
		{"iinclude ignores case", nil, nil, []string{"*.odt"}, nil, []string{"Docs/", "Docs/A.ODT", "top.odt"}},
		{"iinclude dir", nil, nil, []string{"/docs"}, nil, []string{"Docs/", "Docs/A.ODT", "Docs/C.Txt", "Docs/b.txt"}},
		{"include and iinclude add up", []string{"b.txt"}, nil, []string{"*.ODT"}, nil, []string{"Docs/", "Docs/A.ODT", "Docs/b.txt", "top.odt"}},
		{"exclude keeps case", nil, []string{"*.txt"}, nil, nil, []string{"Docs/", "Docs/A.ODT", "Docs/C.Txt", "top.odt"}},
		{"iexclude ignores case", nil, nil, nil, []string{"*.TXT"}, []string{"Docs/", "Docs/A.ODT", "top.odt"}},
		{"exclude and iexclude add up", nil, []string{"top.odt"}, nil, []string{"/DOCS/*.txt"}, []string{"Docs/", "Docs/A.ODT"}},
		{"iinclude with iexclude", nil, nil, []string{"/DOCS"}, []string{"a.odt"}, []string{"Docs/", "Docs/C.Txt", "Docs/b.txt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := t.TempDir()
			st, err := Restore(context.Background(), f, root, Options{Target: target, Include: tt.include, Exclude: tt.exclude,
				InsensitiveInclude: tt.iinclude, InsensitiveExclude: tt.iexclude})
			must(t, err)
			if len(st.Errors) > 0 {
				t.Fatal(st.Errors)
			}
			var got []string
			must(t, filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
				if p != target {
					rel, _ := filepath.Rel(target, p)
					if d.IsDir() {
						rel += "/"
					}
					got = append(got, rel)
				}
				return err
			}))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("restored %q\n want %q", got, tt.want)
			}
		})
	}
	for _, o := range []Options{{InsensitiveInclude: []string{"[bad"}}, {InsensitiveExclude: []string{"[bad"}}} {
		o.Target = t.TempDir()
		if _, err := Restore(context.Background(), f, root, o); err == nil {
			t.Errorf("no error for a bad pattern in %+v", o)
		}
	}
}

// TestRestoreOverExisting restores into a target that already holds
// things: files are replaced, directories merged, and nothing the user has
// below a directory is deleted to make room for a file (restic restores a
// file over a non-empty directory only with --delete, as Options.Delete
// does here).
func TestRestoreOverExisting(t *testing.T) {
	f := newFakeLoader()
	root := f.addTree(
		f.fileNode("file-was-dir", []byte("now a file")),
		f.fileNode("file-was-empty-dir", []byte("was empty")),
		&tree.Node{Name: "link-was-dir", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "x", ModTime: time.Unix(5, 0)},
		&tree.Node{Name: "irregular-was-file", Type: tree.Irregular, Mode: os.ModeIrregular | 0o644},
		dirNode("dir-was-file", f.addTree(f.fileNode("in", []byte("in")))),
		f.fileNode("shorter", []byte("short")),
		dirNode("existing", f.addTree(f.fileNode("new", []byte("new")))),
	)
	prepare := func(t *testing.T) string {
		target := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(target, "file-was-dir/sub"), 0o755))
		must(t, os.WriteFile(filepath.Join(target, "file-was-dir/sub/precious"), []byte("precious"), 0o644))
		must(t, os.MkdirAll(filepath.Join(target, "file-was-empty-dir"), 0o755))
		must(t, os.MkdirAll(filepath.Join(target, "link-was-dir"), 0o755))
		must(t, os.WriteFile(filepath.Join(target, "link-was-dir/mine"), []byte("mine"), 0o644))
		must(t, os.WriteFile(filepath.Join(target, "irregular-was-file"), []byte("untouched"), 0o644))
		must(t, os.WriteFile(filepath.Join(target, "dir-was-file"), []byte("old"), 0o644))
		must(t, os.WriteFile(filepath.Join(target, "shorter"), bytes.Repeat([]byte("long"), 1000), 0o644))
		must(t, os.MkdirAll(filepath.Join(target, "existing"), 0o755))
		must(t, os.WriteFile(filepath.Join(target, "existing/old"), []byte("kept"), 0o644))
		return target
	}
	check := func(t *testing.T, target string, want map[string]string) {
		t.Helper()
		for name, w := range want {
			b, err := os.ReadFile(filepath.Join(target, name))
			if err != nil || string(b) != w {
				t.Errorf("%s = %q, %v; want %q", name, b, err, w)
			}
		}
	}

	t.Run("default", func(t *testing.T) {
		target := prepare(t)
		st, err := Restore(context.Background(), f, root, Options{Target: target})
		must(t, err)
		failed := map[string]bool{}
		for _, e := range st.Errors {
			failed[e.Path] = true
			if !errors.Is(e.Err, ErrDirInTheWay) {
				t.Errorf("%v: want ErrDirInTheWay", e)
			}
		}
		if !reflect.DeepEqual(failed, map[string]bool{"/file-was-dir": true, "/link-was-dir": true}) {
			t.Errorf("errors for %v, want /file-was-dir and /link-was-dir", st.Errors)
		}
		check(t, target, map[string]string{
			"file-was-dir/sub/precious": "precious", "link-was-dir/mine": "mine",
			"file-was-empty-dir": "was empty", "irregular-was-file": "untouched",
			"dir-was-file/in": "in", "shorter": "short", "existing/new": "new", "existing/old": "kept",
		})
	})
}

func TestNameSet(t *testing.T) {
	for _, tt := range []struct {
		names []string
		dups  []bool
	}{
		{[]string{"a", "b", "c"}, []bool{false, false, false}},
		{[]string{"a", "a", "b"}, []bool{false, true, false}},
		{[]string{"b", "a", "b"}, []bool{false, false, true}},
		{[]string{"a", "c", "b", "c", "a"}, []bool{false, false, false, true, true}},
	} {
		nodes := make([]*tree.Node, len(tt.names))
		for i, name := range tt.names {
			nodes[i] = &tree.Node{Name: name, Type: tree.File}
		}
		s := nameSet{t: walk.TreeList(&tree.Tree{Nodes: nodes})}
		for i, name := range tt.names {
			if got := s.dup(i, name); got != tt.dups[i] {
				t.Errorf("%v: name %d (%s): dup %v, want %v", tt.names, i, name, got, tt.dups[i])
			}
		}
	}
}
