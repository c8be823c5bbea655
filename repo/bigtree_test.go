package repo_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"dj/backend/mem"
	"dj/repo"
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
