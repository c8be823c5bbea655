package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"dj/repo"
)

// TestWithTestLock: DJ_TEST_LOCK shortens the lock timing only in the
// insecure test mode.
func TestWithTestLock(t *testing.T) {
	for _, tc := range []struct {
		kdf, spec      string
		refresh, stale time.Duration
	}{
		{"1", "refresh=300ms,stale=2s", 300 * time.Millisecond, 2 * time.Second},
		{"", "refresh=300ms,stale=2s", 0, 0},
		{"0", "refresh=300ms,stale=2s", 0, 0},
		{"1", "stale=5s,bogus=1,refresh=x", 0, 5 * time.Second},
		{"1", "", 0, 0},
	} {
		t.Setenv("DJ_INSECURE_TEST_KDF", tc.kdf)
		t.Setenv(testLockEnv, tc.spec)
		o := withTestLock(repo.Options{})
		if o.LockRefresh != tc.refresh || o.LockStale != tc.stale {
			t.Errorf("KDF=%q %s=%q: refresh %v, stale %v; want %v, %v", tc.kdf, testLockEnv, tc.spec, o.LockRefresh, o.LockStale, tc.refresh, tc.stale)
		}
	}
}

// TestAbortCommand: abortCommand cancels the command's context with a
// cause that abortCause reports; a plain cancellation has no cause.
func TestAbortCommand(t *testing.T) {
	ctx, cancel := withAbort(context.Background())
	defer cancel(nil)
	if abortCause(ctx) != nil {
		t.Fatal("cause before the abort")
	}
	abortCommand(ctx, repo.ErrLockLost)
	if ctx.Err() == nil || !errors.Is(abortCause(ctx), repo.ErrLockLost) {
		t.Fatalf("after abortCommand: err %v, cause %v", ctx.Err(), abortCause(ctx))
	}
	ctx2, cancel2 := withAbort(context.Background())
	cancel2(nil)
	if abortCause(ctx2) != nil {
		t.Fatalf("a plain cancellation has cause %v", abortCause(ctx2))
	}
	abortCommand(context.Background(), repo.ErrLockLost) // no-op, no panic
}
