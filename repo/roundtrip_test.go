package repo_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
)

// countingBackend counts the calls that reach a backend, by method and
// file type: on a remote repository each is a round trip.
type countingBackend struct {
	backend.Backend
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingBackend) count(op string, t backend.FileType) {
	c.mu.Lock()
	c.calls[op+" "+string(t)]++
	c.mu.Unlock()
}

func (c *countingBackend) Load(ctx context.Context, h backend.Handle, off int64, n int) ([]byte, error) {
	c.count("load", h.Type)
	return c.Backend.Load(ctx, h, off, n)
}

func (c *countingBackend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	c.count("stat", h.Type)
	return c.Backend.Stat(ctx, h)
}

func (c *countingBackend) Close() error { return nil }

// TestOpenAndLockRequests: opening a repository loads its config file once
// without a separate Stat, and a lock does not load its own lock file.
func TestOpenAndLockRequests(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	repo.TestRepository(t, nopClose{be})
	cb := &countingBackend{Backend: be, calls: map[string]int{}}
	r, err := repo.Open(ctx, cb, repo.TestPassword, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Lock(ctx, repo.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	want := map[string]int{"load config": 1, "load keys": 1}
	for k, n := range cb.calls {
		if want[k] != n {
			t.Errorf("%d calls %q, want %d (all: %v)", n, k, want[k], cb.calls)
		}
	}

	// Without a config file there is no repository, whatever the keys.
	if err := be.Remove(ctx, backend.Handle{Type: backend.ConfigFile}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, nopClose{be}, repo.TestPassword, repo.Options{}); !errors.Is(err, repo.ErrNoRepository) {
		t.Fatalf("open without config: %v, want ErrNoRepository", err)
	}
	if _, err := repo.Open(ctx, nopClose{be}, "wrong", repo.Options{}); !errors.Is(err, repo.ErrNoRepository) {
		t.Fatalf("open without config, wrong password: %v, want ErrNoRepository", err)
	}
}
