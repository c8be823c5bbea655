package repo_test

import (
	"context"
	"sync"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/pack"
	"dj/repo/tree"
)

// kindRecorder records the pack kind each pack's Save carries.
type kindRecorder struct {
	backend.Backend
	mu    sync.Mutex
	kinds map[backend.PackKind]int
}

func (k *kindRecorder) Close() error { return nil }

func (k *kindRecorder) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if h.Type == backend.PackFile {
		k.mu.Lock()
		k.kinds[backend.PackKindFrom(ctx)]++
		k.mu.Unlock()
	}
	return k.Backend.Save(ctx, h, data)
}

// TestPackKindReachesTheBackend shows that a pack's save says whether it
// holds trees or data (S3 keeps tree packs out of cold storage classes).
func TestPackKindReachesTheBackend(t *testing.T) {
	rec := &kindRecorder{Backend: mem.New(), kinds: map[backend.PackKind]int{}}
	r := repo.TestRepository(t, rec)
	ctx := context.Background()
	if _, _, err := r.SaveBlob(ctx, pack.DataBlob, []byte("some data")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.SaveTree(ctx, &tree.Tree{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if rec.kinds[backend.DataPack] != 1 || rec.kinds[backend.TreePack] != 1 || rec.kinds[backend.UnknownPack] != 0 {
		t.Fatalf("pack kinds saved: %v, want one data and one tree pack", rec.kinds)
	}
}
