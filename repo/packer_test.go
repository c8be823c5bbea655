package repo_test

import (
	"context"
	"errors"
	"math/rand"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/fault"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/pack"
)

// gatedBackend holds every pack upload until release is closed, and
// records how many were in Save at once.
type gatedBackend struct {
	backend.Backend
	release        chan struct{}
	inSave, maxIn  atomic.Int32
	started, saved atomic.Int32
}

func (g *gatedBackend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if h.Type == backend.PackFile {
		n := g.inSave.Add(1)
		for {
			m := g.maxIn.Load()
			if n <= m || g.maxIn.CompareAndSwap(m, n) {
				break
			}
		}
		g.started.Add(1)
		<-g.release
		defer g.inSave.Add(-1)
		defer g.saved.Add(1)
	}
	return g.Backend.Save(ctx, h, data)
}

func (g *gatedBackend) Close() error { return nil }

// TestSaveBlobDoesNotWaitForUploads: the blob stage hands full packs to the
// upload stage and goes on while uploads hang, until the bounded queue of
// finished packs is full; then it waits (memory stays bounded). Uploads
// run at most two at once, and Flush writes every pack.
func TestSaveBlobDoesNotWaitForUploads(t *testing.T) {
	ctx := context.Background()
	g := &gatedBackend{Backend: mem.New(), release: make(chan struct{})}
	r := repo.TestRepository(t, g)
	r.SetPackSize(4 << 10) // every blob below fills a pack on its own
	rng := rand.New(rand.NewSource(1))
	blob := func() []byte {
		b := make([]byte, 5000)
		rng.Read(b)
		return b
	}
	const free = 4 // uploads in flight + queue: full packs that cost a SaveBlob no wait
	var blobs [][]byte
	for i := 0; i < free+1; i++ {
		blobs = append(blobs, blob())
	}
	done := make(chan int, len(blobs))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, b := range blobs {
			if _, _, err := r.SaveBlob(ctx, pack.DataBlob, b); err != nil {
				t.Error(err)
			}
			done <- i
		}
	}()
	for i := 0; i < free; i++ {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("SaveBlob %d waits for a hanging upload with %d packs queued", i, i)
		}
	}
	select {
	case i := <-done:
		t.Fatalf("SaveBlob %d went on with %d full packs waiting: the upload queue is not bounded", i, free)
	case <-time.After(200 * time.Millisecond):
	}
	if n := g.started.Load(); n != 2 {
		t.Errorf("%d uploads started at once, want 2", n)
	}
	close(g.release)
	wg.Wait()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if m := g.maxIn.Load(); m > 2 {
		t.Errorf("%d uploads ran at once, want at most 2", m)
	}
	if n := r.Index().Len(); n != len(blobs) {
		t.Fatalf("index has %d blobs, want %d", n, len(blobs))
	}
	if n := g.saved.Load(); int(n) < len(blobs) {
		t.Fatalf("%d packs saved, want at least %d", n, len(blobs))
	}
}

// TestUploadErrorStopsTheBackup: a pack that cannot be saved fails the
// flush (no index file names it), and the SaveBlob calls after it learn
// of it too.
func TestUploadErrorStopsTheBackup(t *testing.T) {
	ctx := context.Background()
	f := fault.New(mem.New())
	f.FailNth(fault.Save, backend.PackFile, 1, syscall.ENOSPC)
	r := repo.TestRepository(t, nopClose{f})
	r.SetPackSize(4 << 10)
	rng := rand.New(rand.NewSource(3))
	var saveErr error
	for i := 0; i < 50 && saveErr == nil; i++ {
		b := make([]byte, 5000)
		rng.Read(b)
		_, _, saveErr = r.SaveBlob(ctx, pack.DataBlob, b)
		time.Sleep(time.Millisecond) // let the uploads run
	}
	if !errors.Is(saveErr, syscall.ENOSPC) {
		t.Errorf("SaveBlob after a failed upload: %v, want ENOSPC", saveErr)
	}
	if err := r.Flush(ctx); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Flush: %v, want ENOSPC", err)
	}
	n := 0
	_ = f.List(ctx, backend.IndexFile, func(backend.FileInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d index files written after a failed upload", n)
	}
}
