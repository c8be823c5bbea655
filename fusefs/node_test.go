//go:build linux

package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"

	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// These tests call the nodes' methods directly, without a mount.

func testMountFS(t *testing.T, repo Repository) (*mountFS, *testLog) {
	log := &testLog{t: t}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return newMountFS(ctx, repo, Options{Logf: log.logf}.withDefaults()), log
}

func readNode(t *testing.T, f *fileNode, fh any, off int64, n int) ([]byte, syscall.Errno) {
	t.Helper()
	dest := make([]byte, n)
	res, e := f.Read(context.Background(), fh, dest, off)
	if e != 0 {
		return nil, e
	}
	b, st := res.Bytes(make([]byte, n))
	if !st.Ok() {
		t.Fatalf("ReadResult.Bytes: %v", st)
	}
	return append([]byte(nil), b...), 0
}

func TestFileReadAllRanges(t *testing.T) {
	r := newFakeRepo()
	data := randomData(11, 40)
	copy(data[12:20], make([]byte, 8)) // an all-zero chunk
	node := &tree.Node{Type: tree.File, Size: uint64(len(data))}
	node.Content = r.chunks(data, 3, 1, 8, 8, 5, 7, 100)
	m, _ := testMountFS(t, r)
	f := &fileNode{m: m, node: node}
	for off := 0; off <= len(data)+2; off++ {
		for n := 1; n <= len(data)+3; n++ {
			got, e := readNode(t, f, nil, int64(off), n)
			if e != 0 {
				t.Fatalf("Read(%d, %d): %v", off, n, e)
			}
			want := data[min(off, len(data)):min(off+n, len(data))]
			if !bytes.Equal(got, want) {
				t.Fatalf("Read(%d, %d) = %x, want %x", off, n, got, want)
			}
		}
	}
}

func TestFileReadErrors(t *testing.T) {
	r := newFakeRepo()
	data := randomData(12, 30)
	content := r.chunks(data, 10)
	m, log := testMountFS(t, r)

	// A blob the index does not know: reads before it work, reads of it fail.
	var unknown crypto.ID
	unknown[0] = 0xee
	f := &fileNode{m: m, node: &tree.Node{Type: tree.File, Size: 30, Content: []crypto.ID{content[0], unknown, content[2]}}}
	if got, e := readNode(t, f, nil, 0, 10); e != 0 || !bytes.Equal(got, data[:10]) {
		t.Errorf("before the unknown blob: %v", e)
	}
	if _, e := readNode(t, f, nil, 5, 10); e != syscall.EIO {
		t.Errorf("across the unknown blob: %v, want EIO", e)
	}
	if !log.contains("not in the index") {
		t.Error("no log line for the unknown blob")
	}

	// A size that disagrees with the content, larger or smaller: every
	// read fails (restore and dump fail the file), with one log line.
	for _, size := range []uint64{50, 31, 29, 15, 0} {
		m, log := testMountFS(t, r)
		f = &fileNode{m: m, node: &tree.Node{Type: tree.File, Size: size, Content: content}}
		for _, rd := range []struct{ off, n int }{{0, 5}, {5, 100}, {25, 10}, {40, 10}} {
			if got, e := readNode(t, f, nil, int64(rd.off), rd.n); e != syscall.EIO {
				t.Errorf("size %d, content 30: Read(%d, %d) = %q, %v; want EIO", size, rd.off, rd.n, got, e)
			}
		}
		if n := log.count("its size says"); n != 1 {
			t.Errorf("size %d, content 30: %d log lines, want 1", size, n)
		}
	}

	// A corrupt blob is EIO for the reads needing it only, and is retried.
	r.mu.Lock()
	r.corrupt[content[1]] = true
	r.mu.Unlock()
	m, _ = testMountFS(t, r)
	f = &fileNode{m: m, node: &tree.Node{Type: tree.File, Size: 30, Content: content}}
	if _, e := readNode(t, f, nil, 12, 2); e != syscall.EIO {
		t.Errorf("corrupt: %v", e)
	}
	if _, e := readNode(t, f, nil, 0, 30); e != syscall.EIO {
		t.Errorf("spanning corrupt: %v", e)
	}
	if got, e := readNode(t, f, nil, 20, 10); e != 0 || !bytes.Equal(got, data[20:]) {
		t.Errorf("after corrupt: %v", e)
	}
	r.mu.Lock()
	r.corrupt[content[1]] = false
	r.mu.Unlock()
	if got, e := readNode(t, f, nil, 0, 30); e != 0 || !bytes.Equal(got, data) {
		t.Errorf("after repair: %v", e)
	}

	// A blob whose length differs from the index is not served.
	bad := &lyingRepo{fakeRepo: r}
	m2, _ := testMountFS(t, bad)
	f = &fileNode{m: m2, node: &tree.Node{Type: tree.File, Size: 30, Content: content}}
	if _, e := readNode(t, f, nil, 0, 5); e != syscall.EIO {
		t.Errorf("wrong length: %v, want EIO", e)
	}
}

// lyingRepo returns blobs one byte longer than the index says.
type lyingRepo struct{ *fakeRepo }

func (l *lyingRepo) LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error) {
	b, err := l.fakeRepo.LoadBlob(ctx, id, buf)
	return append(b, 0), err
}

func TestFileReadAhead(t *testing.T) {
	r := newFakeRepo()
	const chunk = 1000
	data := randomData(13, 20*chunk)
	node := &tree.Node{Type: tree.File, Size: uint64(len(data)), Content: r.chunks(data, chunk)}
	m, _ := testMountFS(t, r)
	f := &fileNode{m: m, node: node}
	// Files need no open: the kernel then opens them itself, and reads
	// come without a handle.
	if fh, _, e := f.Open(context.Background(), syscall.O_RDONLY); e != syscall.ENOSYS || fh != nil {
		t.Fatalf("Open: %v, handle %v; want ENOSYS and none", e, fh)
	}
	var fh fs.FileHandle
	waitLoaded := func(ids ...crypto.ID) bool {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			all := true
			for _, id := range ids {
				if !m.blobs.Contains(id) {
					all = false
				}
			}
			if all {
				return true
			}
			time.Sleep(time.Millisecond)
		}
		return false
	}

	// A first read from the start counts as sequential (cat, cp and tar
	// start there): the next blobs are loaded ahead at once.
	readNode(t, f, fh, 0, 500)
	if !waitLoaded(node.Content[1 : 1+readAheadBlobs]...) {
		t.Fatal("the blobs after a read from the start were not loaded ahead")
	}
	// The second, continuing read keeps the window.
	readNode(t, f, fh, 500, 500)
	time.Sleep(20 * time.Millisecond)
	if m.blobs.Contains(node.Content[1+readAheadBlobs]) {
		t.Errorf("read ahead more than %d blobs", readAheadBlobs)
	}
	// Reading on keeps the window ahead of the reader; each blob loads once.
	for off := int64(1000); off < int64(len(data)); off += 500 {
		if got, e := readNode(t, f, fh, off, 500); e != 0 || !bytes.Equal(got, data[off:off+500]) {
			t.Fatalf("read at %d: %v", off, e)
		}
	}
	for i, id := range node.Content {
		if n := r.loadCount(id); n != 1 {
			t.Errorf("blob %d loaded %d times", i, n)
		}
	}

	// A random reader gets no read-ahead.
	r2 := newFakeRepo()
	node2 := &tree.Node{Type: tree.File, Size: uint64(len(data)), Content: r2.chunks(data, chunk)}
	m2, _ := testMountFS(t, r2)
	f2 := &fileNode{m: m2, node: node2}
	for _, off := range []int64{15000, 2000, 18000, 5000} {
		readNode(t, f2, nil, off, 100)
	}
	time.Sleep(20 * time.Millisecond)
	if n := r2.blobLoads.Load(); n != 4 {
		t.Errorf("random reads loaded %d blobs, want 4", n)
	}

	// Writes are refused at open.
	if _, _, e := f.Open(context.Background(), syscall.O_RDWR); e != syscall.EROFS {
		t.Errorf("open for writing: %v", e)
	}
}

func TestFileZeroChunks(t *testing.T) {
	r := newFakeRepo()
	data := make([]byte, 3000)
	copy(data[2500:], "tail")
	node := &tree.Node{Type: tree.File, Size: uint64(len(data)), Content: r.chunks(data, 1000)}
	m, _ := testMountFS(t, r)
	f := &fileNode{m: m, node: node}
	for _, rg := range [][2]int{{0, 1000}, {10, 20}, {500, 1000}, {0, 3000}} {
		got, e := readNode(t, f, nil, int64(rg[0]), rg[1])
		if e != 0 || !bytes.Equal(got, data[rg[0]:min(rg[0]+rg[1], len(data))]) {
			t.Errorf("read %v: %v", rg, e)
		}
	}
	if n := r.blobLoads.Load(); n != 1 {
		t.Errorf("%d blob loads, want 1 (the zero chunks are not loaded)", n)
	}
}

// TestTreeDirStreamSeeks lists a directory the way the kernel does when
// directories need no open: every request on a fresh stream that seeks to
// the offset where the last request ended. The result is the whole
// listing once, in order, without the invalid names; and a stream only
// makes the entries a request returns.
func TestTreeDirStreamSeeks(t *testing.T) {
	tr := &tree.Tree{}
	var want []string
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("f%04d", i)
		if i%97 == 5 {
			name = "bad/name" // never shown
		} else {
			want = append(want, name)
		}
		tr.Nodes = append(tr.Nodes, &tree.Node{Name: name, Type: tree.File})
	}
	ct, err := tree.NewCompact(tr)
	if err != nil {
		t.Fatal(err)
	}
	d := &dirNode{sn: &snapshot.Snapshot{}, parentIno: 7}
	var got []string
	seen := map[uint64]bool{}
	var off uint64
	for req := 0; ; req++ {
		s := &treeDirStream{d: d, t: ct, listed: -1}
		if errno := s.Seekdir(context.Background(), off); errno != 0 {
			t.Fatalf("seek to %d: %v", off, errno)
		}
		n := 0
		for ; n < 37; n++ {
			e, errno := s.Readdirent(context.Background())
			if errno != 0 {
				t.Fatal(errno)
			}
			if e == nil {
				break
			}
			if e.Off <= off || seen[e.Off] {
				t.Fatalf("entry %q has offset %d after offset %d", e.Name, e.Off, off)
			}
			seen[e.Off] = true
			off = e.Off
			if e.Name != "." && e.Name != ".." {
				got = append(got, e.Name)
				// The READDIRPLUS reply's Lookup of this entry takes
				// the node at s.listed: it must be the entry's.
				if s.listed < 0 || s.listedName != e.Name || ct.Name(s.listed) != e.Name {
					t.Fatalf("entry %q: the stream holds node %d (%q) as listed", e.Name, s.listed, s.listedName)
				}
			}
		}
		if n == 0 {
			break
		}
		if req > 100 {
			t.Fatal("the listing does not end")
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listing differs: got %d names, want %d", len(got), len(want))
	}
	if s := (&treeDirStream{d: d, t: ct}); s.Seekdir(context.Background(), uint64(len(tr.Nodes)+3)) == 0 {
		t.Fatal("seek past the end accepted")
	}
}
