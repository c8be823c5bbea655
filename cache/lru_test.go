package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dj/repo/crypto"
)

func testID(i int) crypto.ID {
	var id crypto.ID
	copy(id[:], fmt.Sprintf("blob-%08d", i))
	return id
}

func blobOf(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i + j)
	}
	return b
}

func TestBlobCacheBound(t *testing.T) {
	tests := []struct {
		name     string
		maxBytes int64
		blobSize int
		blobs    int
		wantMax  int // blobs that fit
	}{
		{"exact fit", 4096, 1024, 10, 4},
		{"partial", 4000, 1024, 10, 3},
		{"larger than bound", 1000, 1024, 5, 0},
		{"one", 1024, 1024, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewBlobCache(tt.maxBytes)
			ctx := context.Background()
			for i := 0; i < tt.blobs; i++ {
				b, err := c.Get(ctx, testID(i), func(context.Context) ([]byte, error) { return blobOf(i, tt.blobSize), nil })
				if err != nil {
					t.Fatal(err)
				}
				if len(b) != tt.blobSize || b[0] != byte(i) {
					t.Fatalf("blob %d: wrong content", i)
				}
				n, bytes := c.Stats()
				if bytes > tt.maxBytes {
					t.Fatalf("after %d blobs: %d bytes cached, bound %d", i+1, bytes, tt.maxBytes)
				}
				if n > tt.wantMax {
					t.Fatalf("after %d blobs: %d cached, want at most %d", i+1, n, tt.wantMax)
				}
			}
			n, _ := c.Stats()
			if n != tt.wantMax {
				t.Fatalf("%d blobs cached, want %d", n, tt.wantMax)
			}
			// The most recent ones are kept, the oldest evicted.
			for i := 0; i < tt.blobs; i++ {
				want := i >= tt.blobs-tt.wantMax
				if got := c.Contains(testID(i)); got != want {
					t.Errorf("blob %d cached = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestBlobCacheLRUOrder(t *testing.T) {
	c := NewBlobCache(3 * 100)
	ctx := context.Background()
	get := func(i int) {
		t.Helper()
		if _, err := c.Get(ctx, testID(i), func(context.Context) ([]byte, error) { return blobOf(i, 100), nil }); err != nil {
			t.Fatal(err)
		}
	}
	get(0)
	get(1)
	get(2)
	get(0) // 0 is now the most recent; 1 is the oldest
	get(3)
	if c.Contains(testID(1)) {
		t.Error("blob 1 should have been evicted")
	}
	for _, i := range []int{0, 2, 3} {
		if !c.Contains(testID(i)) {
			t.Errorf("blob %d should be cached", i)
		}
	}
}

func TestBlobCacheEvictedSliceUnchanged(t *testing.T) {
	c := NewBlobCache(100)
	ctx := context.Background()
	first, _ := c.Get(ctx, testID(0), func(context.Context) ([]byte, error) { return blobOf(0, 100), nil })
	want := append([]byte(nil), first...)
	for i := 1; i < 50; i++ {
		if _, err := c.Get(ctx, testID(i), func(context.Context) ([]byte, error) { return blobOf(i, 100), nil }); err != nil {
			t.Fatal(err)
		}
	}
	if string(first) != string(want) {
		t.Fatal("an evicted blob was modified")
	}
}

func TestBlobCacheSingleFlight(t *testing.T) {
	c := NewBlobCache(1 << 20)
	var calls atomic.Int32
	release := make(chan struct{})
	load := func(context.Context) ([]byte, error) {
		calls.Add(1)
		<-release
		return []byte("content"), nil
	}
	const n = 32
	var wg sync.WaitGroup
	results := make([][]byte, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = c.Get(context.Background(), testID(1), load)
		}()
	}
	// Let every goroutine join the load before it completes.
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if got := calls.Load(); got != 1 {
		t.Fatalf("load called %d times, want 1", got)
	}
	for i := range results {
		if errs[i] != nil || string(results[i]) != "content" {
			t.Fatalf("caller %d: %q, %v", i, results[i], errs[i])
		}
	}
}

func TestBlobCacheErrorNotCached(t *testing.T) {
	c := NewBlobCache(1 << 20)
	ctx := context.Background()
	errBroken := errors.New("broken blob")
	var calls int
	_, err := c.Get(ctx, testID(1), func(context.Context) ([]byte, error) { calls++; return nil, errBroken })
	if !errors.Is(err, errBroken) {
		t.Fatalf("got %v, want %v", err, errBroken)
	}
	if c.Contains(testID(1)) {
		t.Fatal("an error result was cached")
	}
	b, err := c.Get(ctx, testID(1), func(context.Context) ([]byte, error) { calls++; return []byte("ok"), nil })
	if err != nil || string(b) != "ok" {
		t.Fatalf("second Get: %q, %v", b, err)
	}
	if calls != 2 {
		t.Fatalf("load called %d times, want 2", calls)
	}
}

func TestBlobCachePanicIsError(t *testing.T) {
	c := NewBlobCache(1 << 20)
	_, err := c.Get(context.Background(), testID(1), func(context.Context) ([]byte, error) { panic("boom") })
	if err == nil {
		t.Fatal("a panicking load returned no error")
	}
}

func TestBlobCacheWaiterCancel(t *testing.T) {
	c := NewBlobCache(1 << 20)
	release := make(chan struct{})
	started := make(chan struct{})
	var loadCtxErr atomic.Value
	load := func(ctx context.Context) ([]byte, error) {
		close(started)
		<-release
		if err := ctx.Err(); err != nil {
			loadCtxErr.Store(err)
		}
		return []byte("content"), nil
	}

	// A patient caller starts the load.
	patient := make(chan error, 1)
	go func() {
		b, err := c.Get(context.Background(), testID(1), load)
		if err == nil && string(b) != "content" {
			err = fmt.Errorf("wrong content %q", b)
		}
		patient <- err
	}()
	<-started

	// An impatient caller joins and gives up.
	ctx, cancel := context.WithCancel(context.Background())
	impatient := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, testID(1), load)
		impatient <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-impatient:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled waiter did not return")
	}

	close(release)
	if err := <-patient; err != nil {
		t.Fatal(err)
	}
	if v := loadCtxErr.Load(); v != nil {
		t.Fatalf("load context was cancelled although a caller still waited: %v", v)
	}
	if !c.Contains(testID(1)) {
		t.Fatal("the completed load was not cached")
	}
}

func TestBlobCacheAllWaitersCancel(t *testing.T) {
	c := NewBlobCache(1 << 20)
	loadCancelled := make(chan struct{})
	first := true
	var mu sync.Mutex
	load := func(ctx context.Context) ([]byte, error) {
		mu.Lock()
		isFirst := first
		first = false
		mu.Unlock()
		if !isFirst {
			return []byte("fresh"), nil
		}
		<-ctx.Done()
		close(loadCancelled)
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, testID(1), load)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	select {
	case <-loadCancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the load was not cancelled after its only waiter left")
	}
	// A new caller starts a fresh load rather than joining the cancelled one.
	b, err := c.Get(context.Background(), testID(1), load)
	if err != nil || string(b) != "fresh" {
		t.Fatalf("after cancel: %q, %v", b, err)
	}
}

func TestBlobCacheCancelledBeforeStart(t *testing.T) {
	c := NewBlobCache(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Get(ctx, testID(1), func(context.Context) ([]byte, error) {
		t.Error("load called with a cancelled context")
		return nil, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

// TestBlobCacheHammer runs many goroutines over a small key space with a small
// bound, random errors and random cancellations; run it with -race.
func TestBlobCacheHammer(t *testing.T) {
	const (
		keys     = 64
		blobSize = 1000
		maxBytes = 16 * blobSize
	)
	c := NewBlobCache(maxBytes)
	var loads atomic.Int64
	workers := 16
	iters := 2000
	if testing.Short() {
		iters = 300
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < iters; i++ {
				k := r.IntN(keys)
				ctx := context.Background()
				var cancel context.CancelFunc = func() {}
				if r.IntN(10) == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Duration(r.IntN(200))*time.Microsecond)
				}
				fail := r.IntN(20) == 0
				b, err := c.Get(ctx, testID(k), func(context.Context) ([]byte, error) {
					loads.Add(1)
					if r := rand.IntN(100); r < 5 {
						time.Sleep(time.Duration(r) * 10 * time.Microsecond)
					}
					if fail {
						return nil, errors.New("injected")
					}
					return blobOf(k, blobSize), nil
				})
				cancel()
				if err == nil {
					if len(b) != blobSize || b[0] != byte(k) || b[blobSize-1] != byte(k+blobSize-1) {
						t.Errorf("key %d: wrong content", k)
						return
					}
				}
				if _, bytes := c.Stats(); bytes > maxBytes {
					t.Errorf("bound exceeded: %d > %d", bytes, maxBytes)
					return
				}
			}
		}()
	}
	wg.Wait()
	if loads.Load() == 0 {
		t.Fatal("no loads")
	}
}

// TestLRUDemote shows that a demoted value is evicted first, stays while the
// demoted values fit in their share, and is kept when asked for again.
func TestLRUDemote(t *testing.T) {
	ctx := context.Background()
	c := NewLRU[int, int](32, func(int) int64 { return 1 }) // demoted share: 2
	get := func(k int) {
		if _, err := c.Get(ctx, k, func(context.Context) (int, error) { return k, nil }); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 32 {
		get(k)
	}
	c.Demote(31) // used last, but now the first to go
	get(100)
	if c.Contains(31) || !c.Contains(0) {
		t.Fatalf("after demoting 31 and adding 100: 31 cached %v, 0 cached %v", c.Contains(31), c.Contains(0))
	}
	c.Demote(5)
	c.Demote(6)
	if !c.Contains(5) || !c.Contains(6) {
		t.Fatal("demoted values within their share were dropped")
	}
	c.Demote(7) // the share is 2: the oldest demotion goes
	if c.Contains(5) || !c.Contains(6) || !c.Contains(7) {
		t.Fatalf("over the demoted share: 5 %v 6 %v 7 %v, want false true true", c.Contains(5), c.Contains(6), c.Contains(7))
	}
	get(6) // asked for again: no longer demoted
	c.Demote(8)
	c.Demote(9)
	if !c.Contains(6) || c.Contains(7) || !c.Contains(8) || !c.Contains(9) {
		t.Fatalf("after promoting 6: 6 %v 7 %v 8 %v 9 %v, want true false true true", c.Contains(6), c.Contains(7), c.Contains(8), c.Contains(9))
	}
	c.Demote(1000) // not cached: no effect
	if n, bytes := c.Stats(); n != 30 || bytes != 30 {
		t.Fatalf("stats %d %d, want 30 30", n, bytes)
	}
}

func TestLRUSetMaxBytes(t *testing.T) {
	c := NewLRU[int, []byte](100, func(b []byte) int64 { return int64(len(b)) })
	ctx := context.Background()
	for k := 0; k < 5; k++ {
		if _, err := c.Get(ctx, k, func(context.Context) ([]byte, error) { return make([]byte, 20), nil }); err != nil {
			t.Fatal(err)
		}
	}
	c.SetMaxBytes(50)
	if n, b := c.Stats(); n != 2 || b != 40 || c.MaxBytes() != 50 {
		t.Fatalf("after shrinking: %d values, %d bytes, bound %d", n, b, c.MaxBytes())
	}
	if !c.Contains(4) || !c.Contains(3) || c.Contains(2) {
		t.Fatal("shrinking did not evict the least recently used values")
	}
	c.SetMaxBytes(200)
	if _, err := c.Get(ctx, 9, func(context.Context) ([]byte, error) { return make([]byte, 150), nil }); err != nil || !c.Contains(9) {
		t.Fatalf("after growing, a value of 150 bytes is not kept (%v)", err)
	}
}
