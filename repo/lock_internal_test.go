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
