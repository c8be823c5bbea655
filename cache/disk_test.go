package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"dj/backend"
	"dj/backend/mem"
)

const testRepoID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestDiskCache(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	data := []byte("an index file")
	sum := sha256.Sum256(data)
	h := backend.Handle{Type: backend.IndexFile, Name: hex.EncodeToString(sum[:])}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	d := NewDisk(be, base, 0)
	d.SetRepositoryID(testRepoID)
	dir := filepath.Join(base, testRepoID)
	if b, err := d.Load(ctx, h, 0, 0); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("first load: %v", err)
	}
	// Served from the cache even when the remote copy is gone.
	be.Remove(ctx, h)
	if b, err := d.Load(ctx, h, 0, 0); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("cached load: %v", err)
	}
	// A damaged cached copy is not served.
	os.WriteFile(filepath.Join(dir, "index", h.Name), []byte("damaged"), 0o600)
	if _, err := d.Load(ctx, h, 0, 0); err == nil {
		t.Fatal("damaged cache copy served")
	}
	// Prune drops what the repository no longer has.
	be.Save(ctx, h, data)
	d.Load(ctx, h, 0, 0)
	be.Remove(ctx, h)
	if err := d.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "index", h.Name)); !os.IsNotExist(err) {
		t.Fatal("pruned file still cached")
	}
}

func TestDiskListDropsStaleCopies(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	base := t.TempDir()
	d := NewDisk(be, base, 0)
	d.SetRepositoryID(testRepoID)
	keep, gone := []byte("kept snapshot"), []byte("forgotten snapshot")
	var hs []backend.Handle
	for _, b := range [][]byte{keep, gone} {
		sum := sha256.Sum256(b)
		h := backend.Handle{Type: backend.SnapshotFile, Name: hex.EncodeToString(sum[:])}
		if err := d.Save(ctx, h, b); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	be.Remove(ctx, hs[1]) // another machine forgot it
	n := 0
	if err := d.List(ctx, backend.SnapshotFile, func(backend.FileInfo) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("List: %d files, %v", n, err)
	}
	for i, want := range []bool{true, false} {
		_, err := os.Stat(filepath.Join(base, testRepoID, "snapshots", hs[i].Name))
		if got := err == nil; got != want {
			t.Errorf("snapshot %d cached: %v, want %v", i, got, want)
		}
	}
}
