package repo_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
)

// TestTreeLargerThan64MiB saves and loads the tree of a directory whose JSON
// is larger than 64 MiB (the former blob limit, about 200k files with
// ordinary names): such a directory must back up and read back.
func TestTreeLargerThan64MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 70 MB tree")
	}
	ctx := context.Background()
	r := repo.TestRepository(t, mem.New())
	pad := strings.Repeat("n", 200)
	const n = 240_000
	tr := &tree.Tree{Nodes: make([]*tree.Node, n)}
	for i := range tr.Nodes {
		tr.Nodes[i] = &tree.Node{Name: fmt.Sprintf("%s-%07d", pad, i), Type: tree.File, Mode: 0o644}
	}
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) <= 64<<20 {
		t.Fatalf("tree JSON is %d bytes; the test wants more than 64 MiB", len(b))
	}
	id, _, err := r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatalf("save a tree of %d bytes: %v", len(b), err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := r.LoadTree(ctx, id)
	if err != nil || len(got.Nodes) != n || got.Nodes[n-1].Name != tr.Nodes[n-1].Name {
		t.Fatalf("load the tree back: %v", err)
	}
}

// bigFileTree returns a directory of n ordinary files.
func bigFileTree(n int) *tree.Tree {
	tr := &tree.Tree{Nodes: make([]*tree.Node, n)}
	for i := range tr.Nodes {
		tm := time.Unix(1700000000+int64(i), 0)
		tr.Nodes[i] = &tree.Node{Name: fmt.Sprintf("file-%07d", i), Type: tree.File, Mode: 0o644, Size: uint64(i),
			ModTime: tm, AccessTime: tm, ChangeTime: tm, Inode: uint64(i), Links: 1, User: "ann", Group: "users",
			Content: []crypto.ID{{byte(i), byte(i >> 8), byte(i >> 16)}}}
	}
	return tr
}

// TestLoadCompactTreeStreamsAndSpills loads a tree of more than streamTree
// plain bytes, which is decoded as it decompresses: into memory, and moved
// to files when spill says so. A damaged stored copy fails as corrupt (from
// the whole blob's path) and is never returned as a tree.
func TestLoadCompactTreeStreamsAndSpills(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 30 MB tree")
	}
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	const n = 100_000
	tr := bigFileTree(n)
	id, _, err := r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	loc := r.Index().Lookup(pack.TreeBlob, id)[0]
	if loc.PlainLength < 4<<20 || !loc.Compressed {
		t.Fatalf("tree of %d plain bytes (compressed %v): the test needs a streamed one", loc.PlainLength, loc.Compressed)
	}
	check := func(c *tree.Compact) {
		t.Helper()
		if c.Len() != n {
			t.Fatalf("%d nodes, want %d", c.Len(), n)
		}
		for _, i := range []int{0, 1, n / 2, n - 1} {
			if got := c.Node(i); !reflect.DeepEqual(got, tr.Nodes[i]) {
				t.Fatalf("node %d: %+v, want %+v", i, got, tr.Nodes[i])
			}
		}
		if k, ok := c.Search(tr.Nodes[777].Name); !ok || k != 777 {
			t.Fatalf("Search: %d %v", k, ok)
		}
	}
	inMem, err := r.LoadCompactTree(ctx, id, tree.SpillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check(inMem)
	if inMem.InFiles() {
		t.Fatal("in files without spill options")
	}
	dir := t.TempDir()
	spilled, err := r.LoadCompactTree(ctx, id, tree.SpillOptions{Dir: dir, Above: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	check(spilled)
	if !spilled.InFiles() || spilled.Memory() > 2*tree.FilePageMemory {
		t.Fatalf("in files %v, memory %d", spilled.InFiles(), spilled.Memory())
	}
	if _, err := r.LoadCompactTree(ctx, id, tree.SpillOptions{Dir: dir + "/missing", Above: 1 << 20}); !errors.Is(err, tree.ErrSpill) {
		t.Fatalf("spill to a missing directory: %v, want ErrSpill", err)
	}

	flipStoredByte(t, be, loc) // damage the stored tree
	r2 := repo.TestOpen(t, nopClose{be})
	if c, err := r2.LoadCompactTree(ctx, id, tree.SpillOptions{Dir: dir, Above: 1 << 20}); !errors.Is(err, repo.ErrCorrupt) || c != nil {
		t.Fatalf("damaged tree: %v, want ErrCorrupt", err)
	}
}
