package tree

import (
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
)

// TestDecodeCompactAgrees checks that DecodeCompact accepts exactly what
// Decode accepts and holds the same nodes, on encoded random trees and on
// mangled ones.
func TestDecodeCompactAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for round := 0; round < 200; round++ {
		tr := randomTree(rng, rng.IntN(12))
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		agreeCompact(t, b)
		for m := 0; m < 10 && len(b) > 0; m++ {
			agreeCompact(t, mangle(rng, b))
		}
	}
}

// agreeCompact fails the test if DecodeCompact and Decode disagree on b.
func agreeCompact(t *testing.T, b []byte) {
	t.Helper()
	want, werr := Decode(b)
	got, gerr := DecodeCompact(b)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%q: Decode: %v, DecodeCompact: %v", b, werr, gerr)
	}
	if werr != nil {
		if werr.Error() != gerr.Error() {
			t.Fatalf("%q: Decode says %v, DecodeCompact %v", b, werr, gerr)
		}
		return
	}
	checkCompact(t, got, want)
}

// checkCompact compares every accessor of c with the nodes of want.
func checkCompact(t *testing.T, c *Compact, want *Tree) {
	t.Helper()
	if c.Len() != len(want.Nodes) {
		t.Fatalf("%d nodes, want %d", c.Len(), len(want.Nodes))
	}
	if got := c.Tree(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Tree():\n%#v\nwant\n%#v", got.Nodes, want.Nodes)
	}
	for i, n := range want.Nodes {
		if c.Name(i) != n.Name || c.Type(i) != n.Type || c.Size(i) != n.Size {
			t.Fatalf("node %d: name %q type %s size %d, want %q %s %d", i, c.Name(i), c.Type(i), c.Size(i), n.Name, n.Type, n.Size)
		}
		if k, ok := c.Search(n.Name); !ok || k != i {
			t.Fatalf("Search(%q) = %d, %v; want %d", n.Name, k, ok, i)
		}
		if _, ok := c.Search(n.Name + "\x00"); ok {
			t.Fatalf("Search found a name not in the tree")
		}
		if st, ok := c.Subtree(i); ok != (n.Subtree != nil) || ok && st != *n.Subtree {
			t.Fatalf("node %d: Subtree %v %v", i, st, ok)
		}
		if len(c.Content(i)) != len(n.Content) {
			t.Fatalf("node %d: %d content ids, want %d", i, len(c.Content(i)), len(n.Content))
		}
		h := c.Head(i)
		if h.Links != n.Links || h.Inode != n.Inode || h.DeviceID != n.DeviceID || !h.ModTime.Equal(n.ModTime) || h.Mode != n.Mode {
			t.Fatalf("node %d: Head %#v", i, h)
		}
	}
}

// TestCompactNodeIsACopy checks that a node taken from a Compact can be
// changed without changing the tree.
func TestCompactNodeIsACopy(t *testing.T) {
	tr := sampleTree()
	tr.Sort()
	c, err := NewCompact(tr)
	if err != nil {
		t.Fatal(err)
	}
	for i := range tr.Nodes {
		n := c.Node(i)
		if len(n.Content) > 0 {
			n.Content[0][0] ^= 0xff
		}
		if n.Subtree != nil {
			n.Subtree[0] ^= 0xff
		}
	}
	checkCompact(t, c, tr)
}

// TestCompactMemory checks that Memory accounts for what a Compact holds
// on the heap, and that it is well below the decoded nodes.
func TestCompactMemory(t *testing.T) {
	const n = 20000
	tr := bigTree(n) // ordinary files of one chunk, as a big directory holds
	big := tr
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC() // twice: sync.Pool keeps a victim cache for one cycle
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	h0 := heap()
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	h1 := heap()
	c, err := DecodeCompact(b)
	if err != nil {
		t.Fatal(err)
	}
	h2 := heap()
	decoded, compact := int64(h1-h0), int64(h2-h1)
	runtime.KeepAlive(d)
	runtime.KeepAlive(b)
	if m := c.Memory(); compact > m+m/10 || compact < m-m/5 {
		t.Errorf("Memory() = %d, the heap grew by %d", m, compact)
	}
	if compact > decoded*3/5 {
		t.Errorf("compact tree takes %d bytes, the decoded one %d", compact, decoded)
	}
	t.Logf("%d nodes: decoded %d B/node, compact %d B/node (Memory %d)", n, decoded/n, compact/n, c.Memory()/n)
	runtime.KeepAlive(c)
	runtime.KeepAlive(tr)
	runtime.KeepAlive(big)
}

func FuzzDecodeCompact(f *testing.F) {
	addSeeds(f, 11, 12)
	f.Fuzz(func(t *testing.T, b []byte) { agreeCompact(t, b) })
}
