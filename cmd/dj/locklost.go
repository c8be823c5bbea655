package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"dj/repo"
)

// testLockEnv names the variable with which the end-to-end tests shorten
// the lock timing in the insecure test mode: "refresh=DURATION,stale=DURATION",
// so that a test of a lock gone stale need not wait half an hour.
const testLockEnv = "DJ_TEST_LOCK"

// withTestLock returns o with the lock timing of DJ_TEST_LOCK in the
// insecure test mode (DJ_INSECURE_TEST_KDF=1), and o itself otherwise.
// Malformed values are ignored: only tests set it.
func withTestLock(o repo.Options) repo.Options {
	v := os.Getenv(testLockEnv)
	if v == "" || os.Getenv("DJ_INSECURE_TEST_KDF") != "1" {
		return o
	}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		d, err := time.ParseDuration(val)
		if err != nil || d <= 0 {
			continue
		}
		switch k {
		case "refresh":
			o.LockRefresh = d
		case "stale":
			o.LockStale = d
		}
	}
	return o
}

// abortKey keys the function that cancels the whole command with a
// cause (withAbort).
type abortKey struct{}

// withAbort returns a context that abortCommand can cancel with a cause,
// which run reports instead of "interrupted".
func withAbort(ctx context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	return context.WithValue(ctx, abortKey{}, cancel), cancel
}

// abortCommand cancels the command's context with cause; it does nothing
// for a context not made by withAbort.
func abortCommand(ctx context.Context, cause error) {
	if cancel, ok := ctx.Value(abortKey{}).(context.CancelCauseFunc); ok {
		cancel(cause)
	}
}

// abortCause returns the cause with which abortCommand cancelled ctx, or
// nil.
func abortCause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// watchLock cancels the command (abortCommand) when the lock is found
// lost, so that it stops writing at once rather than at its next check;
// the returned function ends the watch.
func watchLock(ctx context.Context, l *repo.Lock) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-l.Lost():
			abortCommand(ctx, l.Check())
		case <-done:
		case <-ctx.Done():
		}
	}()
	return func() { close(done) }
}
