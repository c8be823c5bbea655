package restorer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/tree"
)

func isRoot() bool { return os.Geteuid() == 0 }

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func xattrsSupported(dir string) bool {
	p := filepath.Join(dir, ".probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		return false
	}
	defer os.Remove(p)
	return unix.Setxattr(p, "user.probe", []byte("x"), 0) == nil
}

// sparseSize is the size of the sparse file in the round trip.
const sparseSize = 8 << 20

// makeSourceTree fills dir with every kind of entry and returns the names
// of the hard-linked pair.
func makeSourceTree(t *testing.T, dir string) {
	t.Helper()
	write := func(name string, b []byte, mode uint32) {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, b, 0o600))
		must(t, unix.Chmod(p, mode))
	}
	mkdir := func(name string) { must(t, os.Mkdir(filepath.Join(dir, name), 0o755)) }

	write("a.txt", []byte("hello, world\n"), 0o644)
	write("empty", nil, 0o600)
	write("big.bin", randBytes(1, 5*testChunkSize+123), 0o640)
	write("exact", randBytes(2, 2*testChunkSize), 0o644)
	write("setuid", []byte("#!/bin/sh\n"), 0o4755)
	write("bad\xff\xfename", []byte("not utf-8\n"), 0o644)
	write("zeros", make([]byte, 3*testChunkSize), 0o644)
	mkdir("sub")
	mkdir("sub/deeper")
	write("sub/deeper/file", randBytes(3, 1000), 0o600)
	must(t, os.Symlink("../a.txt", filepath.Join(dir, "sub/link")))
	must(t, os.Symlink("nowhere/at/all", filepath.Join(dir, "dangling")))
	write("hard1", randBytes(4, testChunkSize+7), 0o644)
	must(t, os.Link(filepath.Join(dir, "hard1"), filepath.Join(dir, "sub/hard2")))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	if err := unix.Mknod(filepath.Join(dir, "sock"), unix.S_IFSOCK|0o755, 0); err != nil {
		t.Logf("no socket: %v", err)
	}
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Logf("no device node: %v", err)
	}
	if xattrsSupported(dir) {
		write("xattr.txt", []byte("x"), 0o644)
		p := filepath.Join(dir, "xattr.txt")
		must(t, unix.Setxattr(p, "user.one", []byte("1"), 0))
		must(t, unix.Setxattr(p, "user.bin", []byte{0, 1, 2, 255}, 0))
		must(t, unix.Setxattr(filepath.Join(dir, "sub"), "user.dir", []byte("on a dir"), 0))
	} else {
		t.Log("no user xattrs on this file system")
	}
	// A sparse file: data at the start, a few bytes across a block border,
	// and at the end.
	sp, err := os.Create(filepath.Join(dir, "sparse"))
	must(t, err)
	must(t, sp.Truncate(sparseSize))
	for _, off := range []int64{0, 1<<20 + 4090, sparseSize - 10} {
		_, err := sp.WriteAt([]byte("0123456789"), off)
		must(t, err)
	}
	must(t, sp.Close())
	// A read-only directory with a file in it: works only if directory
	// metadata comes after the children.
	mkdir("ro")
	write("ro/inner.txt", []byte("inside a read-only dir"), 0o444)
	must(t, os.Chmod(filepath.Join(dir, "ro"), 0o555))
	if isRoot() {
		must(t, os.Lchown(filepath.Join(dir, "a.txt"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(dir, "sub/link"), 42, 43))
		must(t, os.Lchown(filepath.Join(dir, "sub"), 7, 8))
	}
	// Distinct ns times on everything, children before their directory.
	i := 0
	var paths []string
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir {
			paths = append(paths, p)
		}
		return err
	}))
	sort.Sort(sort.Reverse(sort.StringSlice(paths))) // children first
	for _, p := range paths {
		i++
		ts := []unix.Timespec{{Sec: 1_000_000_000 + int64(i), Nsec: int64(i) * 7_654_321}, {Sec: 900_000_000 + int64(i), Nsec: 999_999_999 - int64(i)}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// compareRestored checks that dir holds what tree id says.
func compareRestored(t *testing.T, f *fakeLoader, id crypto.ID, dir string, sparseAll bool) {
	t.Helper()
	inodes := map[[2]uint64]uint64{}
	compareDir(t, f, id, dir, sparseAll, fsnode.NewReader(), inodes)
}

func compareDir(t *testing.T, f *fakeLoader, id crypto.ID, dir string, sparseAll bool, r *fsnode.Reader, inodes map[[2]uint64]uint64) {
	t.Helper()
	tr, err := f.LoadTree(context.Background(), id)
	must(t, err)
	entries, err := os.ReadDir(dir)
	must(t, err)
	if len(entries) != len(tr.Nodes) {
		t.Errorf("%s: %d entries, tree has %d", dir, len(entries), len(tr.Nodes))
	}
	for _, want := range tr.Nodes {
		p := filepath.Join(dir, want.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%q: %v", want.Name, err)
			continue
		}
		got, warn, err := r.Node(p, fi)
		must(t, err)
		must(t, warn)
		a, b := *want, *got
		for _, n := range []*tree.Node{&a, &b} {
			n.Inode, n.DeviceID, n.ChangeTime, n.Content, n.Subtree = 0, 0, time.Time{}, nil, nil
			if n.Type != tree.File {
				n.Blocks = 0 // directory sizes depend on their history
			}
		}
		if want.Type == tree.File {
			if want.IsSparse() || sparseAll {
				// Holes stay holes: no more blocks than the source, give or
				// take one file system block.
				if b.Blocks > a.Blocks+8 {
					t.Errorf("%q: %d blocks, source had %d", want.Name, b.Blocks, a.Blocks)
				}
				a.Blocks, b.Blocks = 0, 0
			}
		}
		if !isRoot() {
			a.UID, a.GID, a.User, a.Group = b.UID, b.GID, b.User, b.Group
		}
		if _, seen := inodes[[2]uint64{want.DeviceID, want.Inode}]; seen && want.Links > 1 {
			// One inode has one atime, and reading the first name's
			// content (here and when backing up) moved it.
			a.AccessTime, b.AccessTime = time.Time{}, time.Time{}
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%q differs:\n want %+v\n got  %+v", want.Name, a, b)
		}
		if want.Links > 1 {
			key := [2]uint64{want.DeviceID, want.Inode}
			if ino, ok := inodes[key]; ok && ino != got.Inode {
				t.Errorf("%q: hard link not restored as one (inode %d, first %d)", want.Name, got.Inode, ino)
			}
			inodes[key] = got.Inode
		}
		switch want.Type {
		case tree.File:
			checkContent(t, f, want, p)
		case tree.Dir:
			compareDir(t, f, *want.Subtree, p, sparseAll, r, inodes)
		}
	}
}

// checkContent compares the file at p with the chunks of n, one at a time.
func checkContent(t *testing.T, f *fakeLoader, n *tree.Node, p string) {
	t.Helper()
	fh, err := os.Open(p)
	must(t, err)
	defer fh.Close()
	var buf []byte
	var off int64
	for i, id := range n.Content {
		size, ok := f.BlobSize(id)
		if !ok {
			t.Fatalf("%q: blob %d missing", n.Name, i)
		}
		if allZeroBlob(f, id) && isHole(fh, off, int64(size)) {
			off += int64(size)
			continue
		}
		buf = append(buf[:0], make([]byte, size)...)
		if _, err := fh.ReadAt(buf, off); err != nil {
			t.Errorf("%q: chunk %d at %d: %v", n.Name, i, off, err)
			return
		}
		if crypto.Hash(buf) != id {
			t.Errorf("%q: chunk %d at %d differs", n.Name, i, off)
			return
		}
		off += int64(size)
	}
	if fi, err := fh.Stat(); err != nil || fi.Size() != off {
		t.Errorf("%q: size differs from the chunks' %d bytes", n.Name, off)
	}
}

func allZeroBlob(f *fakeLoader, id crypto.ID) bool { return zeroLoader{f}.IsZeroBlob(id) }

func TestRestoreRoundTrip(t *testing.T) {
	src := t.TempDir()
	makeSourceTree(t, src)
	f := newFakeLoader()
	root := snapshotDir(t, f, src)

	tests := []struct {
		name   string
		loader Loader
		opts   Options
	}{
		{"defaults", f, Options{}},
		{"zero check, verify, one worker", zeroLoader{f}, Options{Verify: true, Workers: 1}},
		{"sparse everywhere", f, Options{Sparse: true, Workers: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Target = t.TempDir()
			opts.Owner = isRoot()
			var mu sync.Mutex
			var warnings []string
			opts.Warn = func(p string, err error) {
				mu.Lock()
				warnings = append(warnings, p+": "+err.Error())
				mu.Unlock()
			}
			var last Progress
			opts.Progress = func(p Progress) { last = p }
			st, err := Restore(context.Background(), tt.loader, root, opts)
			must(t, err)
			if len(st.Errors) > 0 || len(warnings) > 0 {
				t.Fatalf("errors %v, warnings %q", st.Errors, warnings)
			}
			compareRestored(t, f, root, opts.Target, opts.Sparse)

			if st.Files == 0 || st.Dirs != 3 || st.Others < 3 {
				t.Errorf("stats %+v", st)
			}
			if last.FilesDone != last.FilesTotal || last.BytesDone != last.BytesTotal || last.FilesTotal != st.Files || last.BytesTotal != st.Bytes {
				t.Errorf("final progress %+v, stats %+v", last, st)
			}
			// All-zero chunks: holes with Sparse, data without.
			var zs unix.Stat_t
			must(t, unix.Stat(filepath.Join(opts.Target, "zeros"), &zs))
			if opts.Sparse != (zs.Blocks == 0) {
				t.Errorf("zeros: %d blocks with Sparse %v", zs.Blocks, opts.Sparse)
			}
		})
	}
}

// TestRestoreSparseLarge restores a 2 GiB sparse file and checks that it
// takes no more space than the source.
func TestRestoreSparseLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("2 GiB sparse file")
	}
	src := t.TempDir()
	p := filepath.Join(src, "vm.img")
	fh, err := os.Create(p)
	must(t, err)
	const size = 2 << 30
	must(t, fh.Truncate(size))
	for _, off := range []int64{0, 1 << 30, size - 100_000} {
		_, err := fh.WriteAt(randBytes(uint64(off), 100_000), off)
		must(t, err)
	}
	must(t, fh.Close())
	f := newFakeLoader()
	root := snapshotDir(t, f, src)

	target := t.TempDir()
	st, err := Restore(context.Background(), zeroLoader{f}, root, Options{Target: target})
	must(t, err)
	if len(st.Errors) > 0 || st.Bytes != size {
		t.Fatalf("stats %+v", st)
	}
	var a, b unix.Stat_t
	must(t, unix.Stat(p, &a))
	must(t, unix.Stat(filepath.Join(target, "vm.img"), &b))
	t.Logf("source %d blocks, restored %d blocks", a.Blocks, b.Blocks)
	if b.Size != size || b.Blocks > a.Blocks+64 {
		t.Errorf("restored size %d, %d blocks; source %d blocks", b.Size, b.Blocks, a.Blocks)
	}
	compareRestored(t, f, root, target, false)
}

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

func TestRestoreDamaged(t *testing.T) {
	f := newFakeLoader()
	good := f.fileNode("good", randBytes(5, 3*testChunkSize))
	bad := f.fileNode("bad", randBytes(6, 3*testChunkSize+5))
	bad.ModTime = time.Unix(1_000_000, 0)
	missing := f.fileNode("missing", randBytes(7, testChunkSize))
	f.blobErr[bad.Content[1]] = errors.New("ciphertext verification failed")
	delete(f.blobs, missing.Content[0])
	brokenDir := f.addTree(f.fileNode("never", []byte("x")))
	f.treeErr[brokenDir] = errors.New("tree pack is corrupt")
	sub := f.addTree(f.fileNode("also-good", []byte("fine")))
	root := f.addTree(bad, dirNode("broken", brokenDir), good, missing, dirNode("sub", sub))

	target := t.TempDir()
	var mu sync.Mutex
	warned := map[string]bool{}
	st, err := Restore(context.Background(), f, root, Options{Target: target, Workers: 3, Warn: func(p string, err error) {
		mu.Lock()
		warned[p] = true
		mu.Unlock()
	}})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	var failed []string
	for _, e := range st.Errors {
		failed = append(failed, e.Path)
	}
	sort.Strings(failed)
	if want := []string{"/bad", "/broken", "/missing"}; !reflect.DeepEqual(failed, want) {
		t.Errorf("errors for %q, want %q (%v)", failed, want, st.Errors)
	}
	for _, p := range failed {
		if !warned[p] {
			t.Errorf("no warning for %s", p)
		}
	}
	checkContent(t, f, good, filepath.Join(target, "good"))
	checkContent(t, f, sub0(t, f, sub), filepath.Join(target, "sub/also-good"))
	// The damaged file is left with its intact parts and a zeroed gap, and
	// the time of the restore.
	b, err := os.ReadFile(filepath.Join(target, "bad"))
	must(t, err)
	var want bytes.Buffer
	for i, id := range bad.Content {
		if i == 1 {
			want.Write(make([]byte, testChunkSize))
			continue
		}
		want.Write(f.blobs[id])
	}
	if !bytes.Equal(b, want.Bytes()) {
		t.Errorf("damaged file: %d bytes, want the intact chunks around a hole", len(b))
	}
	if fi, _ := os.Stat(filepath.Join(target, "bad")); fi.ModTime().Equal(bad.ModTime) {
		t.Errorf("damaged file got the snapshot's mtime")
	}
	if fi, err := os.Stat(filepath.Join(target, "broken")); err != nil || !fi.IsDir() {
		t.Errorf("unreadable directory not created: %v", err)
	}
}

func sub0(t *testing.T, f *fakeLoader, id crypto.ID) *tree.Node {
	tr, err := f.LoadTree(context.Background(), id)
	must(t, err)
	return tr.Nodes[0]
}

func TestRestoreVerify(t *testing.T) {
	f := newFakeLoader()
	n := f.fileNode("f", randBytes(8, 4*testChunkSize))
	ok := f.fileNode("ok", randBytes(9, 2*testChunkSize))
	f.corrupt[n.Content[2]] = true
	root := f.addTree(n, ok)
	for _, verify := range []bool{false, true} {
		t.Run(fmt.Sprint("verify=", verify), func(t *testing.T) {
			st, err := Restore(context.Background(), f, root, Options{Target: t.TempDir(), Verify: verify})
			must(t, err)
			switch {
			case !verify && len(st.Errors) != 0:
				t.Errorf("errors without verify: %v", st.Errors)
			case verify && (len(st.Errors) != 1 || st.Errors[0].Path != "/f" || !strings.Contains(st.Errors[0].Err.Error(), "chunk 2")):
				t.Errorf("errors %v, want chunk 2 of /f", st.Errors)
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

func TestRestoreTarget(t *testing.T) {
	f := newFakeLoader()
	root := f.addTree(f.fileNode("f", []byte("x")))
	file := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(file, nil, 0o600))
	for _, target := range []string{filepath.Join(t.TempDir(), "missing"), file} {
		if _, err := Restore(context.Background(), f, root, Options{Target: target}); err == nil {
			t.Errorf("%s: no error", target)
		}
	}
	// A root tree that cannot be loaded fails the restore as a whole.
	if _, err := Restore(context.Background(), f, crypto.ID{1}, Options{Target: t.TempDir()}); !errors.Is(err, errNotFound) {
		t.Errorf("missing root tree: err = %v", err)
	}
}

func TestRestoreOverExisting(t *testing.T) {
	f := newFakeLoader()
	root := f.addTree(
		f.fileNode("file-was-dir", []byte("now a file")),
		dirNode("dir-was-file", f.addTree(f.fileNode("in", []byte("in")))),
		f.fileNode("shorter", []byte("short")),
		dirNode("existing", f.addTree(f.fileNode("new", []byte("new")))),
	)
	target := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(target, "file-was-dir/sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(target, "dir-was-file"), []byte("old"), 0o644))
	must(t, os.WriteFile(filepath.Join(target, "shorter"), bytes.Repeat([]byte("long"), 1000), 0o644))
	must(t, os.MkdirAll(filepath.Join(target, "existing"), 0o755))
	must(t, os.WriteFile(filepath.Join(target, "existing/old"), []byte("kept"), 0o644))
	st, err := Restore(context.Background(), f, root, Options{Target: target})
	must(t, err)
	if len(st.Errors) > 0 {
		t.Fatal(st.Errors)
	}
	for name, want := range map[string]string{"file-was-dir": "now a file", "dir-was-file/in": "in", "shorter": "short", "existing/new": "new", "existing/old": "kept"} {
		b, err := os.ReadFile(filepath.Join(target, name))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
}

func TestRestoreCancel(t *testing.T) {
	f := newFakeLoader()
	var nodes []*tree.Node
	content := randBytes(1, 3*testChunkSize)
	for i := range 50 {
		nodes = append(nodes, f.fileNode(fmt.Sprintf("f%02d", i), content))
	}
	root := f.addTree(nodes...)
	f.block = make(chan struct{}) // every blob load hangs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Restore(ctx, f, root, Options{Target: t.TempDir(), Workers: 2})
		done <- err
	}()
	for f.loads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Restore did not stop after cancellation")
	}
	if n := f.loads.Load(); n > 10 {
		t.Errorf("%d blob loads after cancellation", n)
	}
}

func TestWriteAtSparse(t *testing.T) {
	block := func(fill byte) []byte { return bytes.Repeat([]byte{fill}, holeBlock) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name       string
		data       []byte
		off        int64
		wantBlocks int64 // allocated 4 KiB blocks
	}{
		{"all zero", cat(block(0), block(0), block(0)), 0, 0},
		{"data in the middle", cat(block(0), block(1), block(0)), 0, 1},
		{"unaligned offset", cat(block(0), block(1), block(0)), 100, 2},
		{"two runs", cat(block(1), block(0), block(0), block(2), block(2)), holeBlock, 3},
		{"short tail", cat(block(0), []byte{1}), 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			fh, err := os.Create(p)
			must(t, err)
			defer fh.Close()
			size := tt.off + int64(len(tt.data)) + 3*holeBlock
			must(t, fh.Truncate(size))
			must(t, writeAt(fh, tt.data, tt.off, true))
			must(t, fh.Sync())
			got, err := io.ReadAll(io.NewSectionReader(fh, tt.off, int64(len(tt.data))))
			must(t, err)
			if !bytes.Equal(got, tt.data) {
				t.Error("content differs")
			}
			var st unix.Stat_t
			must(t, unix.Fstat(int(fh.Fd()), &st))
			if st.Blocks*512 != tt.wantBlocks*holeBlock {
				t.Errorf("%d bytes allocated, want %d", st.Blocks*512, tt.wantBlocks*holeBlock)
			}
		})
	}
}

// BenchmarkRestore restores 256 MiB in 16 files of 1 MiB chunks plus 2,000
// small files.
func BenchmarkRestore(b *testing.B) {
	f := newFakeLoader()
	var nodes []*tree.Node
	var total int64
	for i := range 16 {
		n := &tree.Node{Name: fmt.Sprintf("big%02d", i), Type: tree.File, Mode: 0o644}
		for j := range 16 {
			n.Content = append(n.Content, f.addBlob(randBytes(uint64(i*100+j), 1<<20)))
		}
		n.Size = 16 << 20
		total += 16 << 20
		nodes = append(nodes, n)
	}
	var small []*tree.Node
	for i := range 2000 {
		small = append(small, f.fileNode(fmt.Sprintf("s%04d", i), randBytes(uint64(i), 4096)))
		total += 4096
	}
	root := f.addTree(append(nodes, dirNode("small", f.addTree(small...)))...)
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		target := b.TempDir()
		st, err := Restore(context.Background(), f, root, Options{Target: target})
		if err != nil || len(st.Errors) > 0 {
			b.Fatal(err, st.Errors)
		}
		b.StopTimer()
		os.RemoveAll(target)
		b.StartTimer()
	}
}
