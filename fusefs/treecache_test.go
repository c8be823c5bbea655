//go:build linux

package fusefs

import (
	"context"
	"fmt"
	"runtime/debug"
	"testing"
	"time"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// bigDir stores a directory of n files of one chunk each (the chunks are
// not stored: nothing reads them) and returns its tree id.
func bigDir(r *fakeRepo, n int) crypto.ID {
	t := &tree.Tree{Nodes: make([]*tree.Node, n)}
	tm := time.Unix(1700000000, 0)
	for i := range t.Nodes {
		t.Nodes[i] = &tree.Node{Name: fmt.Sprintf("file-%07d", i), Type: tree.File, Mode: 0o644, UID: 1000, GID: 100,
			User: "ann", Group: "users", ModTime: tm, AccessTime: tm, ChangeTime: tm, Size: 1, Links: 1,
			Inode: uint64(1000 + i), Content: []crypto.ID{{byte(i), byte(i >> 8), byte(i >> 16), 1}}}
	}
	return r.addTree(t)
}

// lookups looks up k names of tree id as dirNode.Lookup does, and checks
// what it finds.
func lookups(t *testing.T, c *treeCache, id crypto.ID, n, k int) {
	t.Helper()
	for j := 0; j < k; j++ {
		i := (j * 7919) % n
		ct, err := c.get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("file-%07d", i)
		at, ok := ct.Search(name)
		if !ok || ct.Node(at).Inode != uint64(1000+i) {
			t.Fatalf("lookup of %s: found %v at %d", name, ok, at)
		}
	}
}

// TestTreeCacheSharesBudget looks up names in a tree larger than the
// trees' share of the budget: it is decoded once, stays cached because the
// blob cache gives up room for it, and trees and blobs together stay within
// the budget.
func TestTreeCacheSharesBudget(t *testing.T) {
	const total, n = 64 << 20, 100_000 // an eighth of 64 MiB holds about 50k files
	r := newFakeRepo()
	id := bigDir(r, n)
	c, blobs := newTreeCache(r, total, t.TempDir(), t.Logf)
	lookups(t, c, id, n, 1000)
	if got := r.treeLoads.Load(); got != 1 {
		t.Fatalf("1000 lookups loaded the tree %d times, want once", got)
	}
	ct, _ := c.peek(id)
	size := ct.Memory()
	_, used := c.lru.Stats()
	if size <= total/8 || used != size {
		t.Fatalf("tree of %d bytes, cache holds %d: the test needs a tree larger than the share (%d)", size, used, total/8)
	}
	if b := blobs.MaxBytes(); b+used > total || b < total/2 {
		t.Fatalf("blob cache bound %d with %d bytes of trees: over the budget of %d, or below half of it", b, used, total)
	}
	t.Logf("%d files: compact tree %d bytes (%d a file); blob cache bound %d", n, size, size/n, blobs.MaxBytes())
}

// TestTreeCacheKeepsBigTree looks up names in a tree larger than half the
// budget, which no cache may hold: it is kept aside while in use and
// decoded once, then dropped when idle.
func TestTreeCacheKeepsBigTree(t *testing.T) {
	const total, n = 16 << 20, 100_000 // 13 MB of tree, over half of 16 MiB
	r := newFakeRepo()
	id := bigDir(r, n)
	small := bigDir(r, 10)
	c, blobs := newTreeCache(r, total, t.TempDir(), t.Logf)
	c.idle = 200 * time.Millisecond
	blobMax := blobs.MaxBytes()
	const limit = 1 << 30
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(limit))
	lookups(t, c, id, n, 500)
	kept, _ := c.peek(id)
	if got := debug.SetMemoryLimit(-1); got != limit+kept.Memory() {
		t.Errorf("memory limit %d while the big tree is kept, want %d + %d", got, limit, kept.Memory())
	}
	if got := r.treeLoads.Load(); got != 1 {
		t.Fatalf("500 lookups loaded the tree %d times, want once", got)
	}
	if _, used := c.lru.Stats(); used != 0 || blobs.MaxBytes() != blobMax {
		t.Fatalf("the tree too large for the budget is counted in it: trees %d bytes, blob bound %d", used, blobs.MaxBytes())
	}
	lookups(t, c, small, 10, 10)
	lookups(t, c, id, n, 10)
	if got := r.treeLoads.Load(); got != 2 {
		t.Fatalf("%d tree loads, want 2 (the big tree kept while used, the small one cached)", got)
	}
	time.Sleep(3 * c.idle)
	if c.contains(id) {
		t.Fatal("the big tree is still kept after being idle")
	}
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Errorf("memory limit %d after the big tree was dropped, want %d", got, limit)
	}
	lookups(t, c, id, n, 10)
	if got := r.treeLoads.Load(); got != 3 {
		t.Fatalf("%d tree loads, want 3", got)
	}
}
