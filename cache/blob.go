package cache

import (
	"context"

	"dj/repo/crypto"
)

// BlobCache is a byte-bounded LRU of decoded blobs with single-flight
// loading: concurrent misses for one ID call load once. Returned slices are
// immutable and never recycled, so they may be handed to the kernel (go-fuse
// writes a read's result after Read has returned) and kept after eviction.
// It is safe for concurrent use.
type BlobCache struct {
	lru *LRU[crypto.ID, []byte]
}

// NewBlobCache returns a cache that keeps up to maxBytes of blob plaintext.
func NewBlobCache(maxBytes int64) *BlobCache {
	return &BlobCache{lru: NewLRU[crypto.ID, []byte](maxBytes, func(b []byte) int64 { return int64(cap(b)) })}
}

// Get returns the blob id, calling load on a miss. Concurrent misses for one
// ID call load once; errors are not cached. A caller whose ctx is cancelled
// returns ctx.Err() promptly while the load continues for the other callers;
// load's context is cancelled only when no caller waits any more. The caller
// must not modify the returned slice.
func (c *BlobCache) Get(ctx context.Context, id crypto.ID, load func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	return c.lru.Get(ctx, id, load)
}

// Remove drops a blob from the cache; slices already handed out stay valid.
func (c *BlobCache) Remove(id crypto.ID) { c.lru.Remove(id) }

// Demote makes a blob the first to be evicted: its reader is done with it,
// but another file that shares the blob may still ask for it.
func (c *BlobCache) Demote(id crypto.ID) { c.lru.Demote(id) }

// Contains reports whether blob id is cached.
func (c *BlobCache) Contains(id crypto.ID) bool { return c.lru.Contains(id) }

// Stats returns the number of cached blobs and their total size in bytes.
func (c *BlobCache) Stats() (blobs int, bytes int64) { return c.lru.Stats() }
