package repo

import (
	"context"
	"errors"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo/index"
	"dj/repo/snapshot"
)

// TestLockLostStopsWrites: a backup whose lock went unrefreshed past the
// point where others may call it stale (a stopped process, a suspended
// laptop) must not publish an index or a snapshot, because a prune may
// meanwhile have deleted the packs they would name; and a later refresh
// must not make the lock look live again.
func TestLockLostStopsWrites(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepository(t, be)
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	sn := &snapshot.Snapshot{Time: time.Now(), Paths: []string{"/x"}}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatalf("snapshot with a live lock: %v", err)
	}

	// The process was stopped for 26 minutes: the refresher never ran.
	l.mu.Lock()
	l.lastOK = l.lastOK.Add(-26 * time.Minute)
	l.mu.Unlock()
	if err := r.SaveSnapshot(ctx, sn); !errors.Is(err, ErrLockLost) {
		t.Fatalf("snapshot after the lock was lost: %v, want ErrLockLost", err)
	}
	if _, err := r.SaveIndexFile(ctx, &index.File{}); !errors.Is(err, ErrLockLost) {
		t.Fatalf("index after the lock was lost: %v, want ErrLockLost", err)
	}
	// A refresh now would succeed on the storage, but the lock stays lost.
	l.mu.Lock()
	l.lastOK = time.Now().Round(0)
	l.mu.Unlock()
	if err := r.CheckLocks(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("a lost lock came back: %v", err)
	}
	var n int
	be.List(ctx, backend.SnapshotFile, func(backend.FileInfo) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d snapshot files, want only the one written before the loss", n)
	}
}

// TestLockUnlockForgetsLock: an unlocked lock no longer guards writes.
func TestLockUnlockForgetsLock(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t, mem.New())
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.lastOK = l.lastOK.Add(-time.Hour)
	l.mu.Unlock()
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.CheckLocks(); err != nil {
		t.Fatalf("an unlocked lock still counts: %v", err)
	}
}

// stuckLocks is a backend whose listing of locks fails and whose removals
// hang until their context ends, as an unreachable server behind the
// retry layer.
type stuckLocks struct{ backend.Backend }

func (s stuckLocks) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t == backend.LockFile {
		return errors.New("server unreachable")
	}
	return s.Backend.List(ctx, t, fn)
}

func (s stuckLocks) Remove(ctx context.Context, h backend.Handle) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestLockRemovalAfterFailureBounded: when taking the lock fails after its
// file was written, the removal of that file ends within LockRemoveTimeout
// even though the storage never answers.
func TestLockRemovalAfterFailureBounded(t *testing.T) {
	r := TestRepository(t, mem.New())
	r.be = stuckLocks{r.be}
	start := time.Now()
	if _, err := r.Lock(context.Background(), LockShared); err == nil {
		t.Fatal("Lock succeeded although the locks cannot be listed")
	}
	if d := time.Since(start); d < LockRemoveTimeout || d > LockRemoveTimeout+2*time.Second {
		t.Errorf("Lock returned after %v, want about %v", d, LockRemoveTimeout)
	}
}
