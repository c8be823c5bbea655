package retry_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/backend/retry"
)

// flakyRanger is a mem backend with a LoadRange whose first calls fail.
type flakyRanger struct {
	*mem.Backend
	failures atomic.Int32
	calls    atomic.Int32
}

func (f *flakyRanger) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return nil, errors.New("connection reset")
	}
	data, err := f.Load(ctx, h, offset, length)
	return append(buf[:0], data...), err
}

func TestWrapKeepsRangeLoader(t *testing.T) {
	f := &flakyRanger{Backend: mem.New()}
	f.failures.Store(2)
	ctx := context.Background()
	h := backend.Handle{Type: backend.SnapshotFile, Name: "abcd"}
	if err := f.Save(ctx, h, []byte("hello world")); err != nil {
		t.Fatal(err)
	}
	be := retry.Wrap(f, fast)
	rl, ok := backend.As[backend.RangeLoader](be)
	if !ok {
		t.Fatal("no RangeLoader through retry.Wrap")
	}
	if rl == backend.RangeLoader(f) {
		t.Fatal("backend.As found the RangeLoader beneath the retries")
	}
	got, err := rl.LoadRange(ctx, h, 6, 5, make([]byte, 0, 64))
	if err != nil || string(got) != "world" || f.calls.Load() != 3 {
		t.Fatalf("LoadRange: %q, %v after %d calls; want \"world\" after 3", got, err, f.calls.Load())
	}
	if _, ok := backend.As[backend.RangeLoader](retry.Wrap(mem.New(), fast)); ok {
		t.Error("retry.Wrap claims a RangeLoader its backend lacks")
	}
}
