package repo_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
)

// countLoads counts the loads of pack files.
type countLoads struct {
	backend.Backend
	packs atomic.Int64
}

func (c *countLoads) Load(ctx context.Context, h backend.Handle, off int64, n int) ([]byte, error) {
	if h.Type == backend.PackFile {
		c.packs.Add(1)
	}
	return c.Backend.Load(ctx, h, off, n)
}

// TestLoadBlobs: many small neighbouring blobs come back right with a few
// requests; a duplicate position gets its blob twice, a missing id its
// error, and a damaged blob only its own error while its neighbours load.
func TestLoadBlobs(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	r.SetPackSize(1 << 20)
	rng := rand.New(rand.NewSource(3))
	var ids []crypto.ID
	want := map[crypto.ID][]byte{}
	for i := 0; i < 300; i++ {
		b := make([]byte, 1+rng.Intn(16<<10))
		if i%3 == 0 {
			rng.Read(b) // incompressible; the others compress
		} else {
			for j := range b {
				b[j] = byte(i + j%7)
			}
		}
		id, _, err := r.SaveBlob(ctx, pack.DataBlob, b)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		want[id] = b
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Damage blob 150 in storage.
	bad := ids[150]
	loc := r.Index().Lookup(pack.DataBlob, bad)[0]
	h := backend.Handle{Type: backend.PackFile, Name: loc.PackID.String()}
	raw, _ := be.Load(ctx, h, 0, 0)
	raw[loc.Offset+loc.Length/2] ^= 1
	if err := be.Save(ctx, h, raw); err != nil {
		t.Fatal(err)
	}

	cl := &countLoads{Backend: be}
	r2 := repo.TestOpen(t, nopClose{cl})
	missing := crypto.Hash([]byte("not stored"))
	ask := append(append([]crypto.ID{}, ids...), ids[7], missing)
	var mu sync.Mutex
	got := make([][]byte, len(ask))
	errs := make([]error, len(ask))
	calls := make([]int, len(ask))
	if err := r2.LoadBlobs(ctx, ask, func(i int, plain []byte, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls[i]++
		got[i] = append([]byte(nil), plain...)
		errs[i] = err
	}); err != nil {
		t.Fatal(err)
	}
	for i, id := range ask {
		switch {
		case calls[i] != 1:
			t.Fatalf("position %d: %d calls, want 1", i, calls[i])
		case id == missing:
			if !errors.Is(errs[i], repo.ErrBlobNotFound) {
				t.Errorf("missing blob: %v", errs[i])
			}
		case id == bad:
			if !errors.Is(errs[i], repo.ErrCorrupt) {
				t.Errorf("damaged blob: %v", errs[i])
			}
		case errs[i] != nil || !bytes.Equal(got[i], want[id]):
			t.Fatalf("position %d: %v, %d bytes, want %d", i, errs[i], len(got[i]), len(want[id]))
		}
	}
	packs := len(r2.Index().Packs())
	t.Logf("%d blobs in %d packs: %d pack requests", len(ids), packs, cl.packs.Load())
	// One run per pack (the packs are 1 MiB), plus the damaged blob read
	// again alone (twice: LoadTypedBlob retries a damaged read once).
	if n := cl.packs.Load(); n > int64(packs)+3 {
		t.Errorf("%d pack requests for %d blobs in %d packs", n, len(ids), packs)
	}
}
