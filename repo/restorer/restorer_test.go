package restorer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
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
