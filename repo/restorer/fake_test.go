package restorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/tree"
)

// testChunkSize is the fixed chunk size of the test splitter.
const testChunkSize = 64 << 10

var errNotFound = errors.New("not found")

// fakeLoader is an in-memory Loader: trees and blobs in maps, blob ids are
// SHA-256. Trees are returned as stored, unvalidated, so tests can build
// hostile ones.
type fakeLoader struct {
	mu      sync.Mutex
	trees   map[crypto.ID]*tree.Tree
	blobs   map[crypto.ID][]byte
	treeErr map[crypto.ID]error
	blobErr map[crypto.ID]error
	// corrupt makes LoadBlob return wrong bytes for these ids without an
	// error, as a loader with a bug would.
	corrupt map[crypto.ID]bool
	// block, when set, makes LoadBlob wait for it to close or ctx.
	block   chan struct{}
	loads   atomic.Int64
	nextID  int
	zeroIDs map[int]crypto.ID
}

func newFakeLoader() *fakeLoader {
	return &fakeLoader{
		trees: map[crypto.ID]*tree.Tree{}, blobs: map[crypto.ID][]byte{},
		treeErr: map[crypto.ID]error{}, blobErr: map[crypto.ID]error{}, corrupt: map[crypto.ID]bool{},
		zeroIDs: map[int]crypto.ID{},
	}
}

func (f *fakeLoader) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.treeErr[id]; err != nil {
		return nil, err
	}
	t, ok := f.trees[id]
	if !ok {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), errNotFound)
	}
	return t, nil
}

func (f *fakeLoader) LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error) {
	f.loads.Add(1)
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.blobErr[id]; err != nil {
		return nil, err
	}
	b, ok := f.blobs[id]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", id.Short(), errNotFound)
	}
	buf = append(buf[:0], b...)
	if f.corrupt[id] && len(buf) > 0 {
		buf[len(buf)/2] ^= 0x55
	}
	return buf, nil
}

func (f *fakeLoader) BlobSize(id crypto.ID) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blobs[id]
	return len(b), ok
}

func (f *fakeLoader) BlobID(plain []byte) crypto.ID { return crypto.Hash(plain) }

// zeroLoader adds the index-only zero blob check the repository has: the
// id is compared with that of as many zero bytes.
type zeroLoader struct{ *fakeLoader }

func (z zeroLoader) IsZeroBlob(id crypto.ID) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	b, ok := z.blobs[id]
	if !ok {
		return false
	}
	zid, ok := z.zeroIDs[len(b)]
	if !ok {
		zid = crypto.Hash(make([]byte, len(b)))
		z.zeroIDs[len(b)] = zid
	}
	return zid == id
}

// addBlob stores a blob and returns its id.
func (f *fakeLoader) addBlob(b []byte) crypto.ID {
	id := crypto.Hash(b)
	f.mu.Lock()
	f.blobs[id] = append([]byte(nil), b...)
	f.mu.Unlock()
	return id
}

// addTree stores the nodes as they are (unsorted, duplicates and invalid
// names kept) under a fresh id.
func (f *fakeLoader) addTree(nodes ...*tree.Node) crypto.ID {
	f.mu.Lock()
	f.nextID++
	id := crypto.Hash(fmt.Appendf(nil, "tree %d", f.nextID))
	f.mu.Unlock()
	f.setTree(id, nodes...)
	return id
}

func (f *fakeLoader) setTree(id crypto.ID, nodes ...*tree.Node) {
	f.mu.Lock()
	f.trees[id] = &tree.Tree{Nodes: nodes}
	f.mu.Unlock()
}

// split stores content in fixed-size chunks and returns their ids.
func (f *fakeLoader) split(r io.Reader) ([]crypto.ID, uint64, error) {
	var ids []crypto.ID
	var size uint64
	buf := make([]byte, testChunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			ids = append(ids, f.addBlob(buf[:n]))
			size += uint64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ids, size, nil
		}
		if err != nil {
			return nil, 0, err
		}
	}
}

// splitFile is split for a file of the given size that does not read its
// holes (a 2 GiB sparse file takes no time).
func (f *fakeLoader) splitFile(fh *os.File, size int64) ([]crypto.ID, error) {
	var ids []crypto.ID
	buf := make([]byte, testChunkSize)
	zeros := map[int64]crypto.ID{}
	for off := int64(0); off < size; off += testChunkSize {
		n := min(testChunkSize, size-off)
		if isHole(fh, off, n) {
			id, ok := zeros[n]
			if !ok {
				id = f.addBlob(make([]byte, n))
				zeros[n] = id
			}
			ids = append(ids, id)
			continue
		}
		if _, err := fh.ReadAt(buf[:n], off); err != nil {
			return nil, err
		}
		ids = append(ids, f.addBlob(buf[:n]))
	}
	return ids, nil
}

// isHole reports whether fh has no data in [off, off+n).
func isHole(fh *os.File, off, n int64) bool {
	data, err := unix.Seek(int(fh.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true // no data after off
	}
	return err == nil && data >= off+n
}

// fileNode is a regular file node with content.
func (f *fakeLoader) fileNode(name string, content []byte) *tree.Node {
	n := &tree.Node{Name: name, Type: tree.File, Mode: 0o644, Size: uint64(len(content)), Blocks: uint64(len(content)+511) / 512}
	for off := 0; off < len(content); off += testChunkSize {
		n.Content = append(n.Content, f.addBlob(content[off:min(off+testChunkSize, len(content))]))
	}
	return n
}

func dirNode(name string, sub crypto.ID) *tree.Node {
	return &tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o755, Subtree: &sub}
}

// snapshotDir stores the directory dir as trees and blobs, the way the
// archiver does, and returns the root tree id.
func snapshotDir(t *testing.T, f *fakeLoader, dir string) crypto.ID {
	t.Helper()
	return snapshotDirWith(t, f, fsnode.NewReader(), dir)
}

func snapshotDirWith(t *testing.T, f *fakeLoader, r *fsnode.Reader, dir string) crypto.ID {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tr tree.Tree
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		n, warn, err := r.Node(p, fi)
		if err != nil || warn != nil {
			t.Fatalf("%s: warn %v, err %v", p, warn, err)
		}
		switch n.Type {
		case tree.File:
			fh, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			n.Content, err = f.splitFile(fh, fi.Size())
			fh.Close()
			if err != nil {
				t.Fatal(err)
			}
		case tree.Dir:
			id := snapshotDirWith(t, f, r, p)
			n.Subtree = &id
		}
		tr.Nodes = append(tr.Nodes, n)
	}
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := tree.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	id := crypto.Hash(b)
	f.mu.Lock()
	f.trees[id] = decoded
	f.mu.Unlock()
	return id
}

// dump is a debugging aid: the JSON of a tree.
func (f *fakeLoader) dump(id crypto.ID) string {
	t, err := f.LoadTree(context.Background(), id)
	if err != nil {
		return err.Error()
	}
	b, _ := json.MarshalIndent(t, "", "  ")
	return string(b)
}
