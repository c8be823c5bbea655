package repo_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
)

// slowSaver is an in-memory backend whose saves of packs take a while and
// that asks for saves saves at once (backend.ConcurrentSaver); it records
// the most pack saves it saw at once.
type slowSaver struct {
	backend.Backend
	saves int

	mu         sync.Mutex
	now, most  int
	savedPacks int
}

func (s *slowSaver) SaveConcurrency() int { return s.saves }

func (s *slowSaver) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if h.Type == backend.PackFile {
		s.mu.Lock()
		s.now++
		s.most = max(s.most, s.now)
		s.savedPacks++
		s.mu.Unlock()
		time.Sleep(30 * time.Millisecond)
		defer func() {
			s.mu.Lock()
			s.now--
			s.mu.Unlock()
		}()
	}
	return s.Backend.Save(ctx, h, data)
}

// TestConcurrentSaver: a backup keeps as many packs saving at once as
// the backend asks for (rclone asks for 5), never more, where it keeps 2
// by default; the memory a backup allows for grows with them.
func TestConcurrentSaver(t *testing.T) {
	ctx := context.Background()
	for _, saves := range []int{1, 5} {
		be := &slowSaver{Backend: mem.New(), saves: saves}
		r0 := repo.TestRepository(t, be)
		r0.Close()
		r, err := repo.Open(ctx, be, repo.TestPassword, repo.Options{KDF: &crypto.TestKDF, PackSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, uint64(saves)))
		saved := map[crypto.ID][]byte{}
		for range 200 {
			b := make([]byte, 32<<10)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			id, _, err := r.SaveBlob(ctx, pack.DataBlob, b)
			if err != nil {
				t.Fatal(err)
			}
			saved[id] = b
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// Every blob reads back, byte for byte, from a fresh open.
		r2, err := repo.Open(ctx, be, repo.TestPassword, repo.Options{KDF: &crypto.TestKDF})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r2.LoadIndex(ctx, false); err != nil {
			t.Fatal(err)
		}
		for id, want := range saved {
			got, err := r2.LoadBlob(ctx, id, nil)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("blob %s: %d bytes, %v; want the %d saved", id.Short(), len(got), err, len(want))
			}
		}
		r2.Close()
		want := max(saves, 2)
		if be.most != want {
			t.Errorf("backend asks for %d saves at once: %d packs saved at once at most (of %d), want %d", saves, be.most, be.savedPacks, want)
		}
		r.Close()
	}
}
