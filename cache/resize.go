package cache

// SetMaxBytes changes the cache's byte bound, evicting the least recently
// used values until the new bound holds. Caches that share one memory
// budget (the mount's trees and blobs) move the bound between them.
func (c *LRU[K, V]) SetMaxBytes(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxBytes = n
	c.evict()
}

// evict drops the least recently used values until the byte bound holds.
// c.mu must be held.
func (c *LRU[K, V]) evict() {
	for c.bytes > c.maxBytes {
		el := c.order.Back()
		if el == nil {
			break
		}
		c.remove(el.Value.(*entry[K, V]).key)
	}
}

// SetMaxBytes changes the byte bound of the cache (see LRU.SetMaxBytes).
func (c *BlobCache) SetMaxBytes(n int64) {
	c.lru.SetMaxBytes(n)
	c.pool.setMax(n)
}

// MaxBytes returns the cache's byte bound.
func (c *BlobCache) MaxBytes() int64 { return c.lru.MaxBytes() }
