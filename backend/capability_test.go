package backend_test

import (
	"context"
	"os"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/fault"
	"dj/backend/local"
	"dj/backend/mem"
	"dj/backend/retry"
	"dj/cache"
	"dj/repo"
	"dj/repo/pack"
)

// wrapped returns a local repository backend behind retry, fault injection
// and the disk cache, as a remote-looking chain of decorators would be.
func wrapped(t *testing.T) (backend.Backend, *local.Local) {
	t.Helper()
	l, err := local.Create(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return retry.New(fault.New(cache.NewDisk(l, t.TempDir(), 0)), retry.Options{}), l
}

// TestAsFindsCapabilitiesThroughDecorators: every capability the local
// backend has is found through any chain of decorators, and it is the
// local backend's own.
func TestAsFindsCapabilitiesThroughDecorators(t *testing.T) {
	be, l := wrapped(t)
	check := func(name string, got any, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("%s: not found through retry+fault+cache", name)
			return
		}
		if got != any(l) {
			t.Errorf("%s: found %T, want the local backend", name, got)
		}
	}
	s, ok := backend.As[backend.Stager](be)
	check("Stager", s, ok)
	rl, ok := backend.As[backend.RangeLoader](be)
	check("RangeLoader", rl, ok)
	il, ok := backend.As[backend.IntoLoader](be)
	check("IntoLoader", il, ok)
	p, ok := backend.As[backend.Prefetcher](be)
	check("Prefetcher", p, ok)
	ul, ok := backend.As[backend.UncachedLoader](be)
	check("UncachedLoader", ul, ok)
	tc, ok := backend.As[backend.TempCleaner](be)
	check("TempCleaner", tc, ok)

	// The in-memory backend has none of them, wrapped or not.
	m := retry.New(mem.New(), retry.Options{})
	if _, ok := backend.As[backend.Stager](m); ok {
		t.Error("mem claims Stager")
	}
	if _, ok := backend.As[backend.RangeLoader](m); ok {
		t.Error("mem claims RangeLoader")
	}
}

// TestFastPathsTakenThroughDecorators: a repository on a wrapped local
// backend still stages its packs inside the repository (no temporary file
// in TMPDIR, no copy) and reads blobs back through the range loader.
func TestFastPathsTakenThroughDecorators(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	be, _ := wrapped(t)
	ctx := context.Background()
	r := repo.TestRepository(t, be)
	// Watch TMPDIR while packs are written: a pack staged outside the
	// repository would appear there.
	seen := make(chan string, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				close(seen)
				return
			case <-time.After(time.Millisecond):
			}
			if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
				seen <- ents[0].Name()
				<-stop
				close(seen)
				return
			}
		}
	}()
	data := make([]byte, 1<<20)
	for i := 0; i < 8; i++ {
		data[0] = byte(i)
		if _, _, err := r.SaveBlob(ctx, pack.DataBlob, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if name, ok := <-seen; ok {
		t.Fatalf("a pack was staged in TMPDIR (%s): the Stager fast path was not taken through the decorators", name)
	}
	if _, err := r.LoadBlob(ctx, r.BlobID(data), nil); err != nil {
		t.Fatalf("load through the wrapped backend: %v", err)
	}
}
