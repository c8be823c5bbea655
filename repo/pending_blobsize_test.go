package repo_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/index"
	"dj/repo/pack"
)

// TestBlobSizeOfPendingPack: a data blob only in a pack that prune marked
// for deletion (a snapshot may still need it until the next prune
// resurrects the pack) has a size as well as content: the restorer and
// the mount ask BlobSize before they load a blob, and failed on such
// blobs ("is not in the index") while LoadBlob read them.
func TestBlobSizeOfPendingPack(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, be)
	l, err := r.Lock(ctx, repo.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("marked "), 1000)
	id, _, err := r.SaveBlob(ctx, pack.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var pending []index.FilePack
	for pid, blobs := range r.Index().Packs() {
		pending = append(pending, index.FilePack{ID: pid, Blobs: blobs, MarkedAt: time.Now().UnixNano()})
	}
	old, err := r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteIndex(ctx, nil, pending, old); err != nil {
		t.Fatal(err)
	}
	for _, o := range old {
		if err := be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: o.String()}); err != nil {
			t.Fatal(err)
		}
	}
	l.Unlock(ctx)

	r2 := repo.TestOpen(t, be)
	defer r2.Close()
	if r2.HasBlob(pack.DataBlob, id) {
		t.Fatal("a blob of a marked pack is offered for deduplication")
	}
	if n, ok := r2.BlobSize(id); !ok || n != len(data) {
		t.Errorf("BlobSize of a blob in a marked pack: %d, %v; want %d, true", n, ok, len(data))
	}
	got, err := r2.LoadBlob(ctx, id, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("LoadBlob of a blob in a marked pack: %d bytes, %v", len(got), err)
	}
}
