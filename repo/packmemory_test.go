package repo_test

import (
	"context"
	"testing"

	"dj/backend/local"
	"dj/backend/mem"
	"dj/repo"
)

// TestPackMemory: packs filled in memory (any backend without a local
// staging file) count in the memory a backup must allow for; packs staged
// in local files do not.
func TestPackMemory(t *testing.T) {
	be, err := local.Create(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if n := repo.TestRepository(t, be).PackMemory(); n != 0 {
		t.Errorf("local repository: PackMemory %d, want 0 (packs are staged in files)", n)
	}
	r := repo.TestRepository(t, mem.New())
	if n, min := r.PackMemory(), int64(4*16<<20); n < min {
		t.Errorf("in-memory packs: PackMemory %d, want at least four 16 MiB packs (%d)", n, min)
	}
}
