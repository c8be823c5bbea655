package archiver

import (
	"context"
	"errors"
	"testing"
	"time"

	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/tree"
)

// TestSaveTreeRefusesUnreadableTrees: every tree is decoded with the
// reader's decoder before it is saved; one the decoder refuses fails the
// backup and is not written.
func TestSaveTreeRefusesUnreadableTrees(t *testing.T) {
	sub := crypto.ID{1}
	now := time.Unix(1700000000, 0)
	cases := []struct {
		name  string
		nodes []*tree.Node
	}{
		{"symlink with a subtree", []*tree.Node{{Name: "link", Type: tree.Symlink, LinkTarget: "real", Subtree: &sub, ModTime: now}}},
		{"directory without a subtree", []*tree.Node{{Name: "d", Type: tree.Dir, ModTime: now}}},
		{"duplicate names", []*tree.Node{{Name: "f", Type: tree.File}, {Name: "f", Type: tree.File}}},
		{"name with a slash", []*tree.Node{{Name: "a/b", Type: tree.File}}},
		{"unknown type", []*tree.Node{{Name: "x", Type: "door"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			be := mem.New()
			r := repo.TestRepository(t, be)
			a := newArchiver(r, Options{})
			_, err := a.saveTree(ctx, &tree.Tree{Nodes: tc.nodes})
			if !errors.Is(err, ErrInvalidTree) {
				t.Fatalf("saveTree: %v, want ErrInvalidTree", err)
			}
			if a.treeBlobs.Load() != 0 {
				t.Fatal("the tree was saved")
			}
		})
	}
	// A good tree passes.
	r := repo.TestRepository(t, mem.New())
	a := newArchiver(r, Options{})
	if _, err := a.saveTree(context.Background(), &tree.Tree{Nodes: []*tree.Node{{Name: "d", Type: tree.Dir, Subtree: &sub}}}); err != nil {
		t.Fatal(err)
	}
}
