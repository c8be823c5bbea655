package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// fill is a loader that writes blob i's content into buf (or a new buffer)
// and counts the loads that reused a buffer.
func fill(i, n int, reused *int64, mu *sync.Mutex) func(context.Context, []byte) ([]byte, error) {
	return func(_ context.Context, buf []byte) ([]byte, error) {
		if cap(buf) >= n {
			mu.Lock()
			*reused++
			mu.Unlock()
			buf = buf[:n]
		} else {
			buf = make([]byte, n)
		}
		for j := range buf {
			buf[j] = byte(i + j)
		}
		return buf, nil
	}
}

func sameAs(b []byte, i, n int) error {
	if len(b) != n {
		return fmt.Errorf("blob %d: %d bytes, want %d", i, len(b), n)
	}
	for j := range b {
		if b[j] != byte(i+j) {
			return fmt.Errorf("blob %d: byte %d is %d, want %d (its buffer was reused while held)", i, j, b[j], byte(i+j))
		}
	}
	return nil
}

// TestBlobCacheRecycles: the buffer of a blob nobody holds goes to the
// next load; a blob still held (by a reader, or by a hold handed on) keeps
// its bytes however many loads and evictions pass meanwhile.
func TestBlobCacheRecycles(t *testing.T) {
	ctx := context.Background()
	const n = 1000
	c := NewBlobCache(3 * n) // room for 3
	c.pool.setMax(32 * n)    // a pool of 4 blobs
	var reused int64
	var mu sync.Mutex
	held, err := c.Acquire(ctx, testID(0), n, fill(0, n, &reused, &mu))
	if err != nil {
		t.Fatal(err)
	}
	handed := held.Hold()
	held.Release()
	for i := 1; i < 20; i++ {
		b, err := c.Acquire(ctx, testID(i), n, fill(i, n, &reused, &mu))
		if err != nil {
			t.Fatal(err)
		}
		if err := sameAs(b.Bytes(), i, n); err != nil {
			t.Fatal(err)
		}
		b.Release()
		if err := sameAs(handed.Bytes(), 0, n); err != nil {
			t.Fatal(err)
		}
	}
	if reused == 0 {
		t.Fatal("no load reused the buffer of an evicted blob")
	}
	handed.Release()
	if handed.Bytes() != nil {
		t.Error("a blob released by its last holder still has its bytes")
	}
	// Released more often than held: a loud failure, not a reuse.
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a second release of a blob did not panic")
			}
		}()
		handed.Release()
	}()
}

// TestBlobCacheHoldersRace: readers take blobs from a small cache (so
// that blobs are evicted and their buffers reused all the time), keep some
// for a while, hand some to goroutines that release later, and compare
// every byte; under -race a use of a recycled buffer is also a data race.
func TestBlobCacheHoldersRace(t *testing.T) {
	const (
		n       = 4096
		blobs   = 64
		readers = 8
		rounds  = 400
	)
	c := NewBlobCache(8 * n)
	var reused int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, readers*rounds)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			for range rounds {
				i := rng.IntN(blobs)
				b, err := c.Acquire(context.Background(), testID(i), n, fill(i, n, &reused, &mu))
				if err != nil {
					errs <- err
					continue
				}
				switch rng.IntN(3) {
				case 0:
					if err := sameAs(b.Bytes(), i, n); err != nil {
						errs <- err
					}
					b.Release()
				case 1: // held across other loads
					time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
					if err := sameAs(b.Bytes(), i, n); err != nil {
						errs <- err
					}
					b.Release()
				case 2: // handed on, as the mount hands a reply to go-fuse
					h := b.Hold()
					b.Release()
					wait := time.Duration(rng.IntN(100)) * time.Microsecond
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(wait)
						if err := sameAs(h.Bytes(), i, n); err != nil {
							errs <- err
						}
						h.Release()
					}()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if reused == 0 {
		t.Fatal("no buffer was reused: the test proves nothing")
	}
	t.Logf("%d loads reused a buffer", reused)
}
