package cache

import (
	"context"
	"testing"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/tree"
)

// writeTestTree makes a repository in be with one tree and returns the
// tree's id and the repository id.
func writeTestTree(t *testing.T, be backend.Backend) (crypto.ID, string) {
	t.Helper()
	ctx := context.Background()
	r := repo.TestRepository(t, be)
	id, _, err := r.SaveTree(ctx, &tree.Tree{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return id, r.Config().ID
}

func openTestRepo(t *testing.T, be backend.Backend) *repo.Repository {
	t.Helper()
	return repo.TestOpen(t, be)
}
