package repo_test

import (
	"context"
	"sync"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// rewriteOnLoad runs rewrite once, just before the first index file is
// loaded through it: what a prune next to an opening backup does between
// the backup's listing of index/ and its loads.
type rewriteOnLoad struct {
	backend.Backend
	mu      sync.Mutex
	rewrite func() // nil once run
}

func (b *rewriteOnLoad) Load(ctx context.Context, h backend.Handle, off int64, n int) ([]byte, error) {
	if h.Type == backend.IndexFile {
		b.mu.Lock()
		if f := b.rewrite; f != nil {
			b.rewrite = nil
			f()
		}
		b.mu.Unlock()
	}
	return b.Backend.Load(ctx, h, off, n)
}

// rewriteIndex writes one index file with the packs of every index file in
// be, superseding them, and removes them: what prune and repair index do.
func rewriteIndex(t *testing.T, w *repo.Repository, be backend.Backend) {
	ctx := context.Background()
	old, err := w.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		t.Error(err)
		return
	}
	var packs []index.FilePack
	for _, id := range old {
		f, err := w.LoadIndexFile(ctx, id)
		if err != nil {
			t.Errorf("load %s: %v", id.Short(), err)
			return
		}
		packs = append(packs, f.Packs...)
	}
	if _, err := w.WriteIndex(ctx, packs, nil, old); err != nil {
		t.Errorf("write index: %v", err)
		return
	}
	for _, id := range old {
		if err := be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}); err != nil {
			t.Errorf("remove %s: %v", id.Short(), err)
		}
	}
}

func (b *rewriteOnLoad) Close() error { return nil }

// Unwrap lets backend.As find the capabilities of the wrapped backend.
func (b *rewriteOnLoad) Unwrap() backend.Backend { return b.Backend }

// TestLoadIndexWhileRewritten: an index file listed by LoadIndex and then
// superseded and removed by another process (prune, repair index) before
// it is loaded is not a problem: its content is in the superseding file,
// which a new listing shows. (A backup started next to a prune failed with
// "index file(s) could not be loaded ... run `dj repair index`".)
func TestLoadIndexWhileRewritten(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	w := repo.TestRepository(t, nopClose{be})
	var ids []crypto.ID
	for i := 0; i < 3; i++ { // three index files
		id, _, err := w.SaveBlob(ctx, pack.DataBlob, []byte{byte(i), 1, 2, 3})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	old, err := w.ListFiles(ctx, backend.IndexFile)
	if err != nil || len(old) != 3 {
		t.Fatalf("index files: %v, %v", old, err)
	}
	rw := &rewriteOnLoad{Backend: be, rewrite: func() { rewriteIndex(t, w, be) }}
	r, err := repo.Open(ctx, rw, repo.TestPassword, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	problems, err := r.LoadIndex(ctx, false)
	if err != nil || len(problems) > 0 {
		t.Fatalf("LoadIndex next to a rewrite: %v, %v", problems, err)
	}
	for _, id := range ids {
		if !r.HasBlob(pack.DataBlob, id) {
			t.Errorf("blob %s missing from the index", id.Short())
		}
	}

	// A refresh (a mount's) that meets a rewrite between its listing and
	// its loads skips the vanished file and finds the new one next time.
	id, _, err := w.SaveBlob(ctx, pack.DataBlob, []byte("written after the open"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rw.mu.Lock()
	rw.rewrite = func() { rewriteIndex(t, w, be) }
	rw.mu.Unlock()
	if _, err := r.RefreshIndex(ctx); err != nil {
		t.Fatalf("refresh next to a rewrite: %v", err)
	}
	if _, err := r.RefreshIndex(ctx); err != nil {
		t.Fatalf("second refresh: %v", err)
	}
	if !r.HasBlob(pack.DataBlob, id) {
		t.Errorf("blob %s saved after the open is missing after two refreshes", id.Short())
	}
}
