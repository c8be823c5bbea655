package repo_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
)

// CopyBlobs re-saves the kept blobs of a pack, sealed as they are or
// recompressed, stops at a damaged blob, and skips it when told to.
func TestCopyBlobs(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, be)
	var plains [][]byte
	for i := range 8 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 1000+i)
		if _, _, err := r.SaveBlob(ctx, pack.DataBlob, b); err != nil {
			t.Fatal(err)
		}
		plains = append(plains, b)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	packs := r.Index().Packs()
	// The packer fills two packs at once: take the one with more blobs.
	var pid crypto.ID
	var blobs []pack.Blob
	for id, bs := range packs {
		if len(bs) > len(blobs) {
			pid, blobs = id, bs
		}
	}
	if len(blobs) < 2 {
		t.Fatalf("largest pack has %d blobs", len(blobs))
	}
	all := func(pack.Blob) bool { return true }

	for _, opts := range []repo.CopyBlobsOptions{{}, {Recompress: true}} {
		skip := blobs[0].ID
		n, err := r.CopyBlobs(ctx, pid, blobs, func(b pack.Blob) bool { return b.ID != skip }, opts)
		if err != nil || n != len(blobs)-1 {
			t.Fatalf("%+v: copied %d, %v; want %d", opts, n, err, len(blobs)-1)
		}
		written, err := r.FlushPacks(ctx)
		got := 0
		for _, p := range written {
			got += len(p.Blobs)
		}
		if err != nil || got != len(blobs)-1 {
			t.Fatalf("%+v: flush: %v, %d blobs written, want %d", opts, err, got, len(blobs)-1)
		}
	}

	// Damage the first blob of the pack.
	h := backend.Handle{Type: backend.PackFile, Name: pid.String()}
	data, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data = append([]byte(nil), data...)
	data[blobs[0].Offset+blobs[0].Length/2] ^= 1
	if err := be.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CopyBlobs(ctx, pid, blobs, all, repo.CopyBlobsOptions{}); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("damaged pack: %v, want ErrCorrupt", err)
	}
	var damaged []crypto.ID
	n, err := r.CopyBlobs(ctx, pid, blobs, all, repo.CopyBlobsOptions{Damaged: func(b pack.Blob, _ error) { damaged = append(damaged, b.ID) }})
	if err != nil || n != len(blobs)-1 || len(damaged) != 1 || damaged[0] != blobs[0].ID {
		t.Fatalf("with Damaged: copied %d, %v, damaged %v", n, err, damaged)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range plains {
		got, err := r.LoadBlob(ctx, r.BlobID(p), nil)
		if err != nil && !errors.Is(err, repo.ErrCorrupt) {
			t.Fatal(err)
		}
		if err == nil && !bytes.Equal(got, p) {
			t.Fatal("blob content changed")
		}
	}
}
