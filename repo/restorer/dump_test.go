package restorer

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/tree"
)

// slowLoader delays each blob load by a random few hundred microseconds,
// so read-ahead loads finish out of order.
type slowLoader struct{ *fakeLoader }

func (s slowLoader) LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error) {
	time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
	return s.fakeLoader.LoadBlob(ctx, id, buf)
}

// failingWriter fails after n bytes.
type failingWriter struct{ n int }

func (w *failingWriter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		return 0, errors.New("disk full")
	}
	w.n -= len(b)
	return len(b), nil
}

func TestWriteFile(t *testing.T) {
	f := newFakeLoader()
	content := randBytes(10, 37*testChunkSize+11)
	n := f.fileNode("f", content)
	missing := f.fileNode("m", randBytes(11, 3*testChunkSize))
	delete(f.blobs, missing.Content[1])
	wrongSize := f.fileNode("w", content)
	wrongSize.Size++

	tests := []struct {
		name    string
		node    *tree.Node
		w       io.Writer
		wantErr string
	}{
		{"content", n, nil, ""},
		{"empty", &tree.Node{Name: "e", Type: tree.File}, nil, ""},
		{"missing blob", missing, nil, "chunk 1"},
		{"size differs", wrongSize, nil, "the snapshot says"},
		{"not a file", &tree.Node{Name: "d", Type: tree.Dir}, nil, "not a file"},
		{"writer fails", n, &failingWriter{n: 3 * testChunkSize}, "disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := tt.w
			if w == nil {
				w = &buf
			}
			err := WriteFile(context.Background(), slowLoader{f}, tt.node, w)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			must(t, err)
			if tt.node == n && !bytes.Equal(buf.Bytes(), content) {
				t.Errorf("content differs: %d bytes, want %d", buf.Len(), len(content))
			}
		})
	}
}

func TestWriteFileCancel(t *testing.T) {
	f := newFakeLoader()
	n := f.fileNode("f", randBytes(12, 20*testChunkSize))
	f.block = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- WriteFile(ctx, f, n, io.Discard) }()
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
		t.Fatal("WriteFile did not stop")
	}
	if got := f.loads.Load(); got > readAheadBlobs+2 {
		t.Errorf("%d loads started for a read-ahead of %d", got, readAheadBlobs)
	}
}

type tarEntry struct {
	hdr     *tar.Header
	content []byte
}

func readTar(t *testing.T, b []byte) map[string]tarEntry {
	t.Helper()
	m := map[string]tarEntry{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return m
		}
		must(t, err)
		c, err := io.ReadAll(tr)
		must(t, err)
		if _, dup := m[hdr.Name]; dup {
			t.Errorf("%q twice in the tar", hdr.Name)
		}
		m[hdr.Name] = tarEntry{hdr, c}
	}
}

func TestWriteTar(t *testing.T) {
	src := t.TempDir()
	makeSourceTree(t, src)
	f := newFakeLoader()
	root := snapshotDir(t, f, src)

	var buf bytes.Buffer
	must(t, WriteTar(context.Background(), f, root, "/home/ann/docs/", &buf))
	got := readTar(t, buf.Bytes())

	// Walk the trees and check each node against its tar entry.
	seen := 0
	links := map[[2]uint64]string{}
	var check func(id crypto.ID, prefix string)
	check = func(id crypto.ID, prefix string) {
		tr, err := f.LoadTree(context.Background(), id)
		must(t, err)
		for _, n := range tr.Nodes {
			name := prefix + "/" + n.Name
			if n.Type == tree.Dir {
				name += "/"
			}
			e, ok := got[name]
			if n.Type == tree.Socket {
				if ok {
					t.Errorf("socket %q in the tar", name)
				}
				continue
			}
			if !ok {
				t.Errorf("%q missing from the tar", name)
				continue
			}
			seen++
			checkTarEntry(t, f, n, e, links)
			if n.Type == tree.Dir {
				check(*n.Subtree, strings.TrimSuffix(name, "/"))
			}
		}
	}
	check(root, "home/ann/docs")
	if seen != len(got) {
		t.Errorf("tar has %d entries, the trees %d", len(got), seen)
	}
}

func checkTarEntry(t *testing.T, f *fakeLoader, n *tree.Node, e tarEntry, links map[[2]uint64]string) {
	t.Helper()
	h := e.hdr
	if h.Uid != int(n.UID) || h.Gid != int(n.GID) || h.Uname != n.User || h.Gname != n.Group {
		t.Errorf("%q: owner %d:%d %s:%s", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
	}
	if !h.ModTime.Equal(n.ModTime) || !h.AccessTime.Equal(n.AccessTime) || !h.ChangeTime.Equal(n.ChangeTime) {
		t.Errorf("%q: times %v %v %v, want %v %v %v", h.Name, h.ModTime, h.AccessTime, h.ChangeTime, n.ModTime, n.AccessTime, n.ChangeTime)
	}
	if uint32(h.Mode) != fsnode.UnixMode(n.Mode) {
		t.Errorf("%q: mode %o, want %o", h.Name, h.Mode, fsnode.UnixMode(n.Mode))
	}
	for _, x := range n.Xattrs {
		if v, ok := h.PAXRecords["SCHILY.xattr."+x.Name]; !ok || v != string(x.Value) {
			t.Errorf("%q: xattr %q = %q, want %q", h.Name, x.Name, v, x.Value)
		}
	}
	if n.Links > 1 {
		key := [2]uint64{n.DeviceID, n.Inode}
		if first, ok := links[key]; ok {
			if h.Typeflag != tar.TypeLink || h.Linkname != first {
				t.Errorf("%q: type %c link %q, want a hard link to %q", h.Name, h.Typeflag, h.Linkname, first)
			}
			return
		}
		links[key] = h.Name
	}
	want := map[tree.NodeType]byte{tree.File: tar.TypeReg, tree.Dir: tar.TypeDir, tree.Symlink: tar.TypeSymlink,
		tree.CharDev: tar.TypeChar, tree.Dev: tar.TypeBlock, tree.FIFO: tar.TypeFifo}[n.Type]
	if h.Typeflag != want {
		t.Errorf("%q: type %c, want %c", h.Name, h.Typeflag, want)
	}
	switch n.Type {
	case tree.File:
		var c bytes.Buffer
		must(t, WriteFile(context.Background(), f, n, &c))
		if !bytes.Equal(e.content, c.Bytes()) {
			t.Errorf("%q: content differs", h.Name)
		}
	case tree.Symlink:
		if h.Linkname != n.LinkTarget {
			t.Errorf("%q: target %q", h.Name, h.Linkname)
		}
	case tree.CharDev, tree.Dev:
		if uint32(h.Devmajor) != unix.Major(n.Rdev) || uint32(h.Devminor) != unix.Minor(n.Rdev) {
			t.Errorf("%q: device %d,%d", h.Name, h.Devmajor, h.Devminor)
		}
	}
}

func TestWriteTarPrefix(t *testing.T) {
	f := newFakeLoader()
	root := f.addTree(f.fileNode("a", []byte("a")), dirNode("d", f.addTree(f.fileNode("b", []byte("b")))))
	for _, tt := range []struct{ prefix, want string }{
		{"", "a d/ d/b"},
		{"/", "a d/ d/b"},
		{"x", "x/a x/d/ x/d/b"},
		{"/x/y/", "x/y/a x/y/d/ x/y/d/b"},
	} {
		var buf bytes.Buffer
		must(t, WriteTar(context.Background(), f, root, tt.prefix, &buf))
		var names []string
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, err)
			names = append(names, h.Name)
		}
		if got := strings.Join(names, " "); got != tt.want {
			t.Errorf("prefix %q: %s, want %s", tt.prefix, got, tt.want)
		}
	}
}

func TestWriteTarHostile(t *testing.T) {
	tests := []struct {
		name    string
		build   func(f *fakeLoader) crypto.ID
		wantErr error
	}{
		{"dotdot", func(f *fakeLoader) crypto.ID { return f.addTree(f.fileNode("..", []byte("x"))) }, tree.ErrInvalidName},
		{"slash", func(f *fakeLoader) crypto.ID {
			return f.addTree(dirNode("d", f.addTree(f.fileNode("a/../../b", []byte("x")))))
		}, tree.ErrInvalidName},
		{"cycle", func(f *fakeLoader) crypto.ID {
			id := crypto.Hash([]byte("loop"))
			f.setTree(id, dirNode("again", id))
			return id
		}, ErrTreeCycle},
		{"missing tree", func(f *fakeLoader) crypto.ID { return f.addTree(dirNode("d", crypto.ID{9})) }, errNotFound},
		{"missing blob", func(f *fakeLoader) crypto.ID {
			return f.addTree(&tree.Node{Name: "f", Type: tree.File, Size: 1, Content: []crypto.ID{{7}}})
		}, errNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeLoader()
			root := tt.build(f)
			if err := WriteTar(context.Background(), f, root, "p", io.Discard); !errors.Is(err, tt.wantErr) {
				t.Errorf("tar: err = %v, want %v", err, tt.wantErr)
			}
			if err := WriteZip(context.Background(), f, root, "p", io.Discard); !errors.Is(err, tt.wantErr) {
				t.Errorf("zip: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestWriteTarOddNames(t *testing.T) {
	f := newFakeLoader()
	long := strings.Repeat("n", 200)
	file := f.fileNode("bad\xff\xfename", []byte("x"))
	file.User, file.Group = strings.Repeat("u", 40), "g"
	file.Xattrs = []tree.Xattr{{Name: "user.k", Value: []byte{0, 1, 2}}, {Name: "user.a=b", Value: []byte("dropped")}}
	root := f.addTree(file, dirNode(long, f.addTree(f.fileNode(long, []byte("deep")))))
	var buf bytes.Buffer
	must(t, WriteTar(context.Background(), f, root, "", &buf))
	got := readTar(t, buf.Bytes())
	e, ok := got["bad\xff\xfename"]
	if !ok {
		t.Fatalf("non-UTF-8 name lost: %q", keys(got))
	}
	if e.hdr.Uname != file.User || e.hdr.PAXRecords["SCHILY.xattr.user.k"] != "\x00\x01\x02" {
		t.Errorf("header %+v", e.hdr)
	}
	if _, ok := e.hdr.PAXRecords["SCHILY.xattr.user.a=b"]; ok {
		t.Error("xattr name with '=' written")
	}
	if e, ok := got[long+"/"+long]; !ok || string(e.content) != "deep" {
		t.Errorf("long path missing: %q", keys(got))
	}
}

func keys(m map[string]tarEntry) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestWriteTarExtract extracts a dump with GNU tar, when there is one, and
// compares the result with the trees.
func TestWriteTarExtract(t *testing.T) {
	tarPath, err := lookTar()
	if err != nil {
		t.Skip("no tar:", err)
	}
	f := newFakeLoader()
	content := randBytes(13, 3*testChunkSize)
	a := f.fileNode("a", content)
	a.ModTime = time.Unix(1_234_567_890, 123_456_789)
	a.Mode = 0o640
	root := f.addTree(a, &tree.Node{Name: "l", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "a", ModTime: time.Unix(5, 0)})
	var buf bytes.Buffer
	must(t, WriteTar(context.Background(), f, root, "out", &buf))
	dir := t.TempDir()
	out, err := runTar(tarPath, dir, &buf)
	if err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	b, err := os.ReadFile(dir + "/out/a")
	must(t, err)
	fi, err := os.Stat(dir + "/out/a")
	must(t, err)
	if !bytes.Equal(b, content) || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(a.ModTime) {
		t.Errorf("extracted a: %d bytes, mode %v, mtime %v", len(b), fi.Mode(), fi.ModTime())
	}
	if target, err := os.Readlink(dir + "/out/l"); err != nil || target != "a" {
		t.Errorf("extracted l: %q %v", target, err)
	}
}

func lookTar() (string, error) { return exec.LookPath("tar") }

func runTar(tarPath, dir string, in io.Reader) ([]byte, error) {
	cmd := exec.Command(tarPath, "-x", "-p", "-f", "-", "-C", dir)
	cmd.Stdin = in
	return cmd.CombinedOutput()
}

// TestWriteZip dumps a source tree as zip, reads the archive back with
// archive/zip and compares every entry with the source on disk: content,
// mode and mtime (to the second). Special files are left out.
func TestWriteZip(t *testing.T) {
	src := t.TempDir()
	makeSourceTree(t, src)
	f := newFakeLoader()
	root := snapshotDir(t, f, src)

	var buf bytes.Buffer
	must(t, WriteZip(context.Background(), f, root, "/home/ann/docs/", &buf))
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	must(t, err)
	entries := map[string]*zip.File{}
	for _, zf := range zr.File {
		if _, dup := entries[zf.Name]; dup {
			t.Errorf("%q twice in the zip", zf.Name)
		}
		entries[zf.Name] = zf
	}

	seen := 0
	must(t, filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		name := "home/ann/docs/" + rel
		fi, err := os.Lstat(p)
		must(t, err)
		if fi.IsDir() {
			name += "/"
		}
		zf, ok := entries[name]
		if fi.Mode()&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
			if ok {
				t.Errorf("special file %q in the zip", name)
			}
			return nil
		}
		if !ok {
			t.Errorf("%q missing from the zip", name)
			return nil
		}
		seen++
		if zf.Mode() != fi.Mode() {
			t.Errorf("%q: mode %v, want %v", name, zf.Mode(), fi.Mode())
		}
		if zf.Modified.Unix() != fi.ModTime().Unix() {
			t.Errorf("%q: mtime %v, want %v", name, zf.Modified, fi.ModTime())
		}
		var want []byte
		switch {
		case fi.Mode().IsRegular():
			want, err = os.ReadFile(p)
			must(t, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			must(t, err)
			want = []byte(target)
		}
		rc, err := zf.Open()
		must(t, err)
		got, err := io.ReadAll(rc)
		must(t, err)
		rc.Close()
		if !bytes.Equal(got, want) {
			t.Errorf("%q: content differs: %d bytes, want %d", name, len(got), len(want))
		}
		return nil
	}))
	if seen != len(entries) {
		t.Errorf("zip has %d entries, the source %d", len(entries), seen)
	}
	if zf := entries["home/ann/docs/big.bin"]; zf != nil && zf.Method != zip.Deflate {
		t.Errorf("files stored with method %d, want deflate", zf.Method)
	}
}

// TestWriteZipUnzip extracts a dump with Info-ZIP's unzip, when there is
// one: the tool users meet keeps content, symlinks, modes and mtimes.
func TestWriteZipUnzip(t *testing.T) {
	unzip, err := exec.LookPath("unzip")
	if err != nil {
		t.Skip("no unzip:", err)
	}
	f := newFakeLoader()
	content := randBytes(14, 3*testChunkSize)
	a := f.fileNode("a", content)
	a.ModTime = time.Unix(1_234_567_890, 0)
	a.Mode = 0o640
	root := f.addTree(a, &tree.Node{Name: "l", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "a", ModTime: time.Unix(5, 0)})
	dir := t.TempDir()
	zipPath := filepath.Join(dir, "out.zip")
	var buf bytes.Buffer
	must(t, WriteZip(context.Background(), f, root, "out", &buf))
	must(t, os.WriteFile(zipPath, buf.Bytes(), 0o600))
	if out, err := exec.Command(unzip, "-q", zipPath, "-d", dir).CombinedOutput(); err != nil {
		t.Fatalf("unzip: %v\n%s", err, out)
	}
	b, err := os.ReadFile(dir + "/out/a")
	must(t, err)
	fi, err := os.Stat(dir + "/out/a")
	must(t, err)
	if !bytes.Equal(b, content) || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(a.ModTime) {
		t.Errorf("extracted a: %d bytes, mode %v, mtime %v", len(b), fi.Mode(), fi.ModTime())
	}
	if target, err := os.Readlink(dir + "/out/l"); err != nil || target != "a" {
		t.Errorf("extracted l: %q %v", target, err)
	}
}
