package tree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"testing/iotest"
	"time"

	"dj/repo/crypto"
)

// TestDecodeCompactReaderAgrees checks that a tree streamed through a small
// window, in memory or moved to files, holds what DecodeCompact holds, and
// that what DecodeCompact refuses the stream refuses too (as not streamable,
// for the caller to decode whole).
func TestDecodeCompactReaderAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	spills := []SpillOptions{{}, {Dir: t.TempDir(), Above: 1}, {Dir: t.TempDir(), Above: 600}}
	for round := 0; round < 200; round++ {
		tr := randomTree(rng, rng.IntN(30))
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		inputs := [][]byte{b}
		for m := 0; m < 5 && len(b) > 0; m++ {
			inputs = append(inputs, mangle(rng, b))
		}
		for _, in := range inputs {
			want, werr := DecodeCompact(in)
			for _, spill := range spills {
				for _, window := range []int{16, 100, 4096} {
					r := iotest.HalfReader(bytes.NewReader(in))
					got, gerr := decodeCompactReader(r, len(in), spill, window)
					if werr != nil {
						if gerr == nil {
							t.Fatalf("%q: DecodeCompact refuses (%v), the stream (window %d) decodes it", in, werr, window)
						}
						if !errors.Is(gerr, ErrNotStreamable) {
							t.Fatalf("%q: stream error %v does not wrap ErrNotStreamable", in, gerr)
						}
						continue
					}
					if gerr != nil {
						// The stream may refuse what only Decode reads
						// (escapes): then the caller decodes it whole.
						if !errors.Is(gerr, ErrNotStreamable) {
							t.Fatalf("%q: window %d: %v", in, window, gerr)
						}
						if _, err := decodePlain(in); err == nil {
							t.Fatalf("%q: window %d: the stream refuses a plain tree: %v", in, window, gerr)
						}
						continue
					}
					checkCompact(t, got, want.Tree())
					if spill.Above == 1 && want.Len() > 0 && !got.InFiles() {
						t.Fatalf("a tree of %d nodes is not in files with Above 1", want.Len())
					}
					if err := got.Err(); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}

// TestDecodeCompactReaderReadError checks that a stream that fails midway
// gives its error, not a shorter tree.
func TestDecodeCompactReaderReadError(t *testing.T) {
	b, err := bigTree(2000).Encode()
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(b[:len(b)/2]), iotest.ErrReader(boom))
	if _, err := decodeCompactReader(r, len(b), SpillOptions{}, 1024); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
	// Cut at a node's end: still refused, the array is not closed.
	cut := bytes.LastIndex(b[:len(b)/2], []byte("},{")) + 1
	if _, err := decodeCompactReader(bytes.NewReader(b[:cut]), len(b), SpillOptions{}, 1024); err == nil {
		t.Fatal("a tree cut after a node decodes")
	}
}

// bigTree returns a tree of n ordinary files of one chunk each.
func bigTree(n int) *Tree {
	tr := &Tree{}
	for i := 0; i < n; i++ {
		tm := time.Unix(1700000000+int64(i), 12345)
		tr.Nodes = append(tr.Nodes, &Node{Name: fmt.Sprintf("file-%08d", i), Type: File, Mode: 0o644, UID: 1000, GID: 100,
			User: "ann", Group: "users", ModTime: tm, AccessTime: tm, ChangeTime: tm, Size: 100, Blocks: 8, Links: 1,
			Inode: uint64(1e7 + i), DeviceID: 2049, Content: []crypto.ID{{byte(i), byte(i >> 8), 7}}})
	}
	return tr
}

// TestCompactInFiles checks a tree larger than the page cache moved to
// files: every accessor agrees with the tree in memory, its memory is the
// page cache's, its files are gone from the directory, and they are closed
// once the tree is garbage.
func TestCompactInFiles(t *testing.T) {
	dir := t.TempDir()
	tr := bigTree(60000) // records alone: 7 MB, past the page cache
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := DecodeCompact(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCompactReader(bytes.NewReader(b), len(b), SpillOptions{Dir: dir, Above: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if !c.InFiles() {
		t.Fatal("not in files")
	}
	if m := c.Memory(); m > FilePageMemory+4096 {
		t.Errorf("Memory() = %d, want about %d", m, FilePageMemory)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left in the directory: %v", ents)
	}
	checkCompact(t, c, mem.Tree())
	// Random lookups, the page cache evicting.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		i := rng.IntN(mem.Len())
		if k, ok := c.Search(mem.Name(i)); !ok || k != i {
			t.Fatalf("Search(%q) = %d %v, want %d", mem.Name(i), k, ok, i)
		}
		if c.LinkData(i) != mem.LinkData(i) {
			t.Fatalf("node %d: LinkData differs", i)
		}
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	// A read that fails: zeros, and Err says so.
	c.file.close()
	c.file.mu.Lock()
	clear(c.file.where)
	c.file.slots = nil
	c.file.mu.Unlock()
	if c.Name(5) != "" || c.Err() == nil {
		t.Fatalf("after the files closed: name %q, Err %v", c.Name(5), c.Err())
	}
}

// TestCompactSpillFails checks that a directory that cannot take the files
// gives ErrSpill, not a tree.
func TestCompactSpillFails(t *testing.T) {
	b, err := bigTree(100).Encode()
	if err != nil {
		t.Fatal(err)
	}
	bad := SpillOptions{Dir: "/nonexistent/dj-spill", Above: 1}
	if _, err := DecodeCompactSpill(b, bad); !errors.Is(err, ErrSpill) {
		t.Fatalf("DecodeCompactSpill: %v, want ErrSpill", err)
	}
	if _, err := DecodeCompactReader(bytes.NewReader(b), len(b), bad); !errors.Is(err, ErrSpill) {
		t.Fatalf("DecodeCompactReader: %v, want ErrSpill", err)
	}
}

// FuzzDecodeCompactReader checks that a tree streamed through a small
// window and moved to files decodes as DecodeCompact does, and that what
// DecodeCompact refuses the stream refuses too.
func FuzzDecodeCompactReader(f *testing.F) {
	addSeeds(f, 13, 14)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		want, werr := DecodeCompact(b)
		got, gerr := decodeCompactReader(iotest.HalfReader(bytes.NewReader(b)), len(b), SpillOptions{Dir: dir, Above: 64}, 32)
		switch {
		case werr != nil && gerr == nil:
			t.Fatalf("DecodeCompact refuses (%v), the stream decodes", werr)
		case gerr != nil && !errors.Is(gerr, ErrNotStreamable):
			t.Fatalf("stream: %v", gerr)
		case werr == nil && gerr == nil:
			checkCompact(t, got, want.Tree())
		}
	})
}
