// Package cache holds the in-memory caches of decoded repository data: a
// byte-bounded least-recently-used cache with single-flight loading, and the
// blob cache built on it that serves the read path of a mount.
//
// DESIGN.md names golang-lru/v2 for the LRU; the cache keeps its own list
// (container/list) instead, because the mount's read-ahead demotes values
// (LRU.Demote: evict first, keep while wanted), which golang-lru's simplelru
// cannot do.
package cache

import (
	"container/list"
	"context"
	"fmt"
	"sync"
)

// LRU is a byte-bounded least-recently-used cache with single-flight
// loading: concurrent misses for one key call load once and share its result.
// Errors are not cached. It is safe for concurrent use.
//
// Values are never modified or recycled by the cache: a value handed out stays
// valid (and unchanged) for as long as the caller holds it, even after it has
// been evicted. A cache made with holders (BlobCache) counts who holds each
// value, so that its owner can recycle the value once nobody does.
type LRU[K comparable, V any] struct {
	maxBytes int64
	size     func(V) int64
	// hold, when set, is called for every value Get returns, under mu (a
	// value cannot be dropped between its lookup and its hold); drop is
	// called, under mu, when the cache lets go of a value it kept or
	// refused to keep. Values reach drop after their size was last asked.
	hold, drop func(V)

	mu sync.Mutex
	// order holds the entries, most recently used at the front; items
	// maps each key to its element.
	order    list.List
	items    map[K]*list.Element
	bytes    int64
	inflight map[K]*call[V]
	// demoted holds the keys of demoted values in the order of demotion;
	// demotedBytes is their size, at most demotedMax (see Demote).
	demoted      list.List
	demotedBytes int64
	demotedMax   int64
}

// entry is one cached value.
type entry[K comparable, V any] struct {
	key K
	val V
	// dem is the entry's element in LRU.demoted, nil unless demoted.
	dem *list.Element
}

// call is one running load, shared by every caller waiting for its key.
type call[V any] struct {
	done    chan struct{} // closed when val and err are set
	val     V
	err     error
	waiters int                // callers still waiting; guarded by LRU.mu
	cancel  context.CancelFunc // cancels the load's context
}

// NewLRU returns a cache that holds values up to a total of maxBytes, as
// measured by size. A value larger than maxBytes is returned to its callers
// but not kept.
func NewLRU[K comparable, V any](maxBytes int64, size func(V) int64) *LRU[K, V] {
	return &LRU[K, V]{
		maxBytes:   maxBytes,
		size:       size,
		items:      make(map[K]*list.Element),
		inflight:   make(map[K]*call[V]),
		demotedMax: maxBytes / demotedShare,
	}
}

// Get returns the value for key, calling load on a miss. Concurrent misses
// for one key call load once. load runs in its own goroutine with a context
// that is cancelled only when every caller waiting for it has gone; a caller
// whose ctx is cancelled returns ctx.Err() at once while the load continues
// for the others. The value is cached only when load succeeds.
func (c *LRU[K, V]) Get(ctx context.Context, key K, load func(ctx context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		e := el.Value.(*entry[K, V])
		c.undemote(e)
		if c.hold != nil {
			c.hold(e.val)
		}
		c.mu.Unlock()
		return e.val, nil
	}
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		var zero V
		return zero, err
	}
	cl := c.inflight[key]
	if cl == nil {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cl = &call[V]{done: make(chan struct{}), cancel: cancel}
		c.inflight[key] = cl
		go c.run(lctx, key, cl, load)
	}
	cl.waiters++
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cl.val, cl.err
	case <-ctx.Done():
	}

	c.mu.Lock()
	select {
	case <-cl.done:
		// The load finished while we were giving up: use its result.
		c.mu.Unlock()
		return cl.val, cl.err
	default:
	}
	cl.waiters--
	if cl.waiters == 0 && c.inflight[key] == cl {
		// Nobody wants the result any more. Callers arriving from now on
		// start a fresh load instead of joining this doomed one.
		delete(c.inflight, key)
		cl.cancel()
	}
	c.mu.Unlock()
	var zero V
	return zero, ctx.Err()
}

// run performs one load and publishes its result.
func (c *LRU[K, V]) run(ctx context.Context, key K, cl *call[V], load func(ctx context.Context) (V, error)) {
	v, err := safeLoad(ctx, load)
	c.mu.Lock()
	if err == nil {
		// Every caller waiting gets the value: hold it for each before
		// the cache may drop it.
		if c.hold != nil {
			for range cl.waiters {
				c.hold(v)
			}
		}
		c.add(key, v)
	}
	if c.inflight[key] == cl {
		delete(c.inflight, key)
	}
	cl.val, cl.err = v, err
	close(cl.done)
	c.mu.Unlock()
	cl.cancel()
}

// safeLoad calls load and turns a panic into an error, so that waiters are
// released and the process survives a bug in a loader.
func safeLoad[V any](ctx context.Context, load func(ctx context.Context) (V, error)) (v V, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero V
			v, err = zero, fmt.Errorf("cache: load panicked: %v", r)
		}
	}()
	return load(ctx)
}

// add inserts v and evicts the least recently used values until the byte
// bound holds. c.mu must be held.
func (c *LRU[K, V]) add(key K, v V) {
	n := c.size(v)
	if n > c.maxBytes {
		if c.drop != nil {
			c.drop(v)
		}
		return
	}
	c.remove(key)
	c.items[key] = c.order.PushFront(&entry[K, V]{key: key, val: v})
	c.bytes += n
	c.evict()
}

// remove drops key, if cached. c.mu must be held.
func (c *LRU[K, V]) remove(key K) {
	el, ok := c.items[key]
	if !ok {
		return
	}
	e := el.Value.(*entry[K, V])
	c.undemote(e)
	c.order.Remove(el)
	delete(c.items, key)
	c.bytes -= c.size(e.val)
	if c.drop != nil {
		c.drop(e.val)
	}
}

// undemote takes e off the demoted list, if it is on it. c.mu must be held.
func (c *LRU[K, V]) undemote(e *entry[K, V]) {
	if e.dem == nil {
		return
	}
	c.demoted.Remove(e.dem)
	e.dem = nil
	c.demotedBytes -= c.size(e.val)
}

// Remove drops key from the cache (a load in flight is not affected).
func (c *LRU[K, V]) Remove(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(key)
}

// demotedShare is the share of the cache demoted values may hold: 1/16.
const demotedShare = 16

// Demote makes key the first value to be evicted, without dropping it at
// once: a caller done with a value says so, and a value another caller
// still wants stays for a while (and moves up again when it is asked for).
// Demoted values are dropped, oldest demotion first, as soon as together
// they exceed 1/16 of the cache, even when the cache has room: a stream
// of values read once (a file read from start to end) then keeps the heap
// small, and the memory they held is reused instead of fresh memory being
// faulted in for every new value.
func (c *LRU[K, V]) Demote(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return
	}
	c.order.MoveToBack(el)
	e := el.Value.(*entry[K, V])
	if e.dem != nil {
		return
	}
	e.dem = c.demoted.PushBack(key)
	c.demotedBytes += c.size(e.val)
	for c.demotedBytes > c.demotedMax {
		c.remove(c.demoted.Front().Value.(K))
	}
}

// Peek returns the cached value for key without loading it or changing its
// recency.
func (c *LRU[K, V]) Peek(key K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		return el.Value.(*entry[K, V]).val, true
	}
	var zero V
	return zero, false
}

// Contains reports whether key is cached.
func (c *LRU[K, V]) Contains(key K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[key]
	return ok
}

// Stats returns the number of cached values and their total size.
func (c *LRU[K, V]) Stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.bytes
}

// MaxBytes returns the byte bound (given to NewLRU, or SetMaxBytes).
func (c *LRU[K, V]) MaxBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxBytes
}
