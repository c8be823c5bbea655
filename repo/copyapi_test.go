package repo_test

import (
	"context"
	"errors"
	"math/rand"
	"testing"

	"dj/backend"
	"dj/backend/fault"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
)

// IndexUploaded indexes the packs uploaded so far, leaves the packs being
// filled open, and still indexes the saved packs after an upload failed.
func TestIndexUploaded(t *testing.T) {
	ctx := context.Background()
	be := fault.New(mem.New())
	r, err := repo.Init(ctx, be, repo.TestPassword, repo.Options{KDF: &crypto.TestKDF, PackSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewSource(1))
	save := func(n int) []crypto.ID {
		var ids []crypto.ID
		for range n {
			b := make([]byte, 1500)
			rng.Read(b)
			id, _, err := r.SaveBlob(ctx, pack.DataBlob, b)
			if err != nil {
				return ids
			}
			ids = append(ids, id)
		}
		return ids
	}
	indexed := func() int {
		o, err := repo.Open(ctx, be, repo.TestPassword, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.LoadIndex(ctx, false); err != nil {
			t.Fatal(err)
		}
		return o.Index().Len()
	}

	save(20)
	n, err := r.IndexUploaded(ctx, true)
	if err != nil || n == 0 {
		t.Fatalf("IndexUploaded: %d packs, %v", n, err)
	}
	first := indexed()
	if first == 0 || first >= 20 {
		t.Fatalf("%d blobs indexed; want those of the uploaded packs only", first)
	}
	if n, err := r.IndexUploaded(ctx, true); n != 0 || err != nil {
		t.Fatalf("second IndexUploaded: %d packs, %v", n, err)
	}

	// Uploads fail from now on: what was saved before still gets indexed.
	be.Add(fault.Rule{Op: fault.Save, Type: backend.PackFile, Nth: 2, Times: -1})
	save(40)
	if err := r.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded although uploads failed")
	}
	n, err = r.IndexUploaded(ctx, true)
	if !errors.Is(err, fault.ErrInjected) || n != 1 {
		t.Fatalf("IndexUploaded after a failed upload: %d packs, %v", n, err)
	}
	if got := indexed(); got <= first {
		t.Fatalf("%d blobs indexed after the failure, %d before", got, first)
	}
}
