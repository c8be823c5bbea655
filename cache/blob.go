package cache

import (
	"context"
	"sync"
	"sync/atomic"

	"dj/repo/crypto"
)

// BlobCache is a byte-bounded LRU of decoded blobs with single-flight
// loading: concurrent misses for one ID call load once. It is safe for
// concurrent use.
//
// Each cached plaintext is a Blob that counts its holders: the cache while
// it keeps the blob, and every caller of Acquire until it calls Release. A
// blob nobody holds any more gives its buffer to the next load, which then
// needs no fresh (zeroed) memory: a mount's sequential reader passes through
// hundreds of megabytes of blobs a second. A holder may hand the bytes on
// (go-fuse writes a read's reply after Read has returned) as long as it
// releases only once they are no longer used.
type BlobCache struct {
	lru  *LRU[crypto.ID, *Blob]
	pool bufPool
}

// Blob is the plaintext of a cached blob, shared by its holders.
type Blob struct {
	data []byte
	refs atomic.Int32
	pool *bufPool
}

// Bytes returns the plaintext. It must not be modified, nor used after the
// holder's Release.
func (b *Blob) Bytes() []byte { return b.data }

// Hold adds a holder; the caller must hold b already (one who holds it
// hands a hold to another, such as a goroutine that outlives its own).
func (b *Blob) Hold() *Blob {
	if b.refs.Add(1) <= 1 {
		panic("cache: Hold of a blob nobody held")
	}
	return b
}

// Release ends one holder's use. The last one gives the buffer back for
// reuse.
func (b *Blob) Release() {
	switch n := b.refs.Add(-1); {
	case n == 0:
		data := b.data
		b.data = nil // a use after release fails loudly, under -race too
		if poisonReleased {
			for i := range data[:cap(data)] {
				data[:cap(data)][i] = 0xA5
			}
		}
		if b.pool != nil {
			b.pool.put(data)
		}
	case n < 0:
		panic("cache: a blob released more often than held")
	}
}

// NewBlobCache returns a cache that keeps up to maxBytes of blob plaintext.
func NewBlobCache(maxBytes int64) *BlobCache {
	c := &BlobCache{}
	c.lru = NewLRU[crypto.ID, *Blob](maxBytes, func(b *Blob) int64 { return int64(cap(b.data)) })
	c.lru.hold = func(b *Blob) { b.refs.Add(1) }
	c.lru.drop = (*Blob).Release
	c.pool.setMax(maxBytes)
	return c
}

// Acquire returns blob id, held for the caller, who must Release it. On a
// miss it calls load with a buffer to decode into (recycled, of at least
// want bytes, or nil): load returns the plaintext, in buf or not.
// Concurrent misses for one ID call load once; errors are not cached. A
// caller whose ctx is cancelled returns ctx.Err() promptly while the load
// continues for the other callers; load's context is cancelled only when
// no caller waits any more.
func (c *BlobCache) Acquire(ctx context.Context, id crypto.ID, want int, load func(ctx context.Context, buf []byte) ([]byte, error)) (*Blob, error) {
	return c.lru.Get(ctx, id, func(ctx context.Context) (*Blob, error) {
		buf := c.pool.get(want)
		b, err := load(ctx, buf)
		if err != nil || !sameArray(b, buf) {
			c.pool.put(buf)
		}
		if err != nil {
			return nil, err
		}
		blob := &Blob{data: b, pool: &c.pool}
		blob.refs.Store(1) // the cache's, which LRU.drop releases
		return blob, nil
	})
}

// sameArray reports whether a and b start at the same element.
func sameArray(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// Get returns the plaintext of blob id like Acquire, for callers that keep
// it: its buffer is never recycled.
func (c *BlobCache) Get(ctx context.Context, id crypto.ID, load func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	b, err := c.Acquire(ctx, id, 0, func(ctx context.Context, _ []byte) ([]byte, error) { return load(ctx) })
	if err != nil {
		return nil, err
	}
	return b.Bytes(), nil // held for good
}

// Remove drops a blob from the cache; holders keep their blob.
func (c *BlobCache) Remove(id crypto.ID) { c.lru.Remove(id) }

// Demote makes a blob the first to be evicted: its reader is done with it,
// but another file that shares the blob may still ask for it.
func (c *BlobCache) Demote(id crypto.ID) { c.lru.Demote(id) }

// Contains reports whether blob id is cached.
func (c *BlobCache) Contains(id crypto.ID) bool { return c.lru.Contains(id) }

// Recycled returns how many loads decoded into the buffer of a released
// blob.
func (c *BlobCache) Recycled() int64 { return c.pool.reused.Load() }

// Stats returns the number of cached blobs and their total size in bytes.
func (c *BlobCache) Stats() (blobs int, bytes int64) { return c.lru.Stats() }

// bufPool keeps the buffers of released blobs for later loads, up to a
// byte bound (and one buffer whatever its size).
type bufPool struct {
	mu    sync.Mutex
	free  [][]byte
	bytes int64
	max   int64
	// reused counts the buffers handed out by get.
	reused atomic.Int64
}

// poolShare is the share of the cache's bound the pool may hold beyond
// its first buffer: 1/16. A sequential reader's passed blobs come back one
// by one and go straight to the next loads, so the pool rarely holds more
// than a buffer or two.
const poolShare = 16

// setMax bounds the pool for a cache of cacheBytes.
func (p *bufPool) setMax(cacheBytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.max = cacheBytes / poolShare
	for p.bytes > p.max && len(p.free) > 0 {
		p.bytes -= int64(cap(p.free[0]))
		p.free = p.free[1:]
	}
}

// get returns a kept buffer of at least n and at most 2n bytes (the
// smallest), or nil.
func (p *bufPool) get(n int) []byte {
	if n <= 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	best := -1
	for i, b := range p.free {
		if c := cap(b); c >= n && c <= 2*n && (best < 0 || c < cap(p.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	b := p.free[best]
	last := len(p.free) - 1
	p.free[best] = p.free[last]
	p.free[last] = nil
	p.free = p.free[:last]
	p.bytes -= int64(cap(b))
	p.reused.Add(1)
	return b[:0]
}

// put keeps b for a later get, while the pool has room.
func (p *bufPool) put(b []byte) {
	if cap(b) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) > 0 && p.bytes+int64(cap(b)) > p.max {
		return
	}
	p.free = append(p.free, b[:0])
	p.bytes += int64(cap(b))
}
