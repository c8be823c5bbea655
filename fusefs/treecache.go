//go:build linux

package fusefs

import (
	"context"
	"errors"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"dj/cache"
	"dj/repo/crypto"
	"dj/repo/tree"
)

// compactLoader may be implemented by a Repository that decodes trees
// straight into their compact form (repo.Repository does): a huge tree then
// costs its plaintext and its Compact while it loads, not every decoded
// node as well.
type compactLoader interface {
	LoadCompactTree(ctx context.Context, id crypto.ID, spill tree.SpillOptions) (*tree.Compact, error)
}

// treeCache holds the decoded trees of a mount in their compact form
// (tree.Compact, about 165 bytes a file against 340 decoded), and shares the
// mount's one memory budget (Options.CacheSize) with the blob cache: trees
// have a share of an eighth, and may grow to half the budget, the blob
// cache giving up what they take beyond their share.
//
// A tree whose Compact would take more than a quarter of the budget (half
// of what trees may hold; a directory of about 800,000 files with the
// default 512 MiB, 100,000 with 64 MiB) moves to temporary files in
// Options.SpillDir as it is decoded, and is read through a page cache of
// tree.FilePageMemory bytes, which is all it counts for here: memory stays
// within the budget whatever the directory's size, and each lookup is a
// binary search over the files' cached pages. The repository decodes such
// trees as they decompress (repo.LoadCompactTree), so not even their
// plaintext is held whole.
//
// A tree that still ends up larger than half the budget in memory (a
// repository without compactLoader, a tree the stream decoder refuses, or
// a spill directory that cannot be written) cannot be cached. The one used
// last is kept aside (big) while it is in use, and dropped bigIdle after
// its last use: a listing or walk of a huge directory asks for its tree in
// every request, and decoding it each time made listing quadratic. Its
// memory is then above the budget; and the Go runtime's soft memory limit
// (which dj mount sets to the cache size and a margin) is raised by the
// tree's size while it is kept: with a live heap above the limit the
// garbage collector ran without pause, and a listing of a million files
// took five times as long.
type treeCache struct {
	lru   *cache.LRU[crypto.ID, *tree.Compact]
	blobs *cache.BlobCache
	repo  Repository
	// total is the budget of trees and blobs; share the trees' own part,
	// minBlobs the least the blob cache keeps.
	total, share, minBlobs int64

	mu      sync.Mutex
	blobMax int64         // the blob cache's bound, as last set
	big     *tree.Compact // the last tree too large for the cache, or nil
	bigID   crypto.ID
	bigUsed time.Time
	bigTime *time.Timer
	idle    time.Duration // how long big is kept after its last use
	// bigLimit is what the runtime's memory limit was raised by for big.
	bigLimit int64

	spillDir string               // where trees move to files
	logf     func(string, ...any) // the mount's log
}

// bigIdle is how long an uncacheable tree is kept after its last use.
const bigIdle = 5 * time.Second

// Minimum sizes of the caches, for tiny budgets.
const (
	minTreeBytes = 4 << 20
	minBlobBytes = 16 << 20
)

// newTreeCache returns the tree cache of a mount whose trees and blobs share
// total bytes, and the blob cache it shares them with.
func newTreeCache(repo Repository, total int64, spillDir string, logf func(string, ...any)) (*treeCache, *cache.BlobCache) {
	share := max(total/8, minTreeBytes)
	blobMax := max(total-share, minBlobBytes)
	c := &treeCache{
		lru:      cache.NewLRU[crypto.ID, *tree.Compact](max(total/2, share), (*tree.Compact).Memory),
		blobs:    cache.NewBlobCache(blobMax),
		repo:     repo,
		total:    total,
		share:    share,
		minBlobs: min(blobMax, max(total/2, minBlobBytes)),
		blobMax:  blobMax,
		idle:     bigIdle,
		spillDir: spillDir,
		logf:     logf,
	}
	return c, c.blobs
}

// get returns a tree through the cache.
func (c *treeCache) get(ctx context.Context, id crypto.ID) (*tree.Compact, error) {
	if t := c.bigTree(id); t != nil {
		return t, nil
	}
	t, err := c.getCached(ctx, id)
	if err == nil && t.Err() != nil {
		// A tree in files that could not be read: loaded again.
		c.logf("dj mount: tree %s: %v; loading it again", id.Short(), t.Err())
		c.lru.Remove(id)
		t, err = c.getCached(ctx, id)
	}
	return t, err
}

// getCached returns a tree through the LRU.
func (c *treeCache) getCached(ctx context.Context, id crypto.ID) (*tree.Compact, error) {
	t, err := c.lru.Get(ctx, id, func(ctx context.Context) (*tree.Compact, error) {
		t, err := c.load(ctx, id)
		if err == nil && t.Memory() > c.lru.MaxBytes() {
			c.keepBig(id, t)
		}
		return t, err
	})
	if err == nil {
		// Cheap (two uncontended locks); after a load in flight for
		// another caller, the first get to see its tree counted moves the
		// bound.
		c.rebalance()
	}
	return t, err
}

// spill returns where and from what size a tree being loaded moves to
// files: from half of what the trees' cache holds, so a huge directory
// costs its page cache (tree.FilePageMemory) instead of a budget it would
// fill alone.
func (c *treeCache) spill() tree.SpillOptions {
	return tree.SpillOptions{Dir: c.spillDir, Above: c.lru.MaxBytes() / 2}
}

// load loads and decodes a tree.
func (c *treeCache) load(ctx context.Context, id crypto.ID) (*tree.Compact, error) {
	if cl, ok := c.repo.(compactLoader); ok {
		t, err := cl.LoadCompactTree(ctx, id, c.spill())
		if errors.Is(err, tree.ErrSpill) {
			// Better a tree beyond the budget than a directory that
			// cannot be listed.
			c.logf("dj mount: tree %s: %v; keeping it in memory", id.Short(), err)
			t, err = cl.LoadCompactTree(ctx, id, tree.SpillOptions{})
		}
		if err == nil && t == nil {
			err = errors.New("repository returned no tree")
		}
		return t, err
	}
	t, err := c.repo.LoadTree(ctx, id)
	if err == nil && t == nil {
		err = errors.New("repository returned no tree")
	}
	if err != nil {
		return nil, err
	}
	return tree.NewCompact(t)
}

// peek returns a cached tree without loading it.
func (c *treeCache) peek(id crypto.ID) (*tree.Compact, bool) {
	if t := c.bigTree(id); t != nil {
		return t, true
	}
	return c.lru.Peek(id)
}

// contains reports whether a tree is cached.
func (c *treeCache) contains(id crypto.ID) bool {
	_, ok := c.peek(id)
	return ok
}

// bigTree returns the tree kept aside, if it is id.
func (c *treeCache) bigTree(id crypto.ID) *tree.Compact {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.big == nil || c.bigID != id {
		return nil
	}
	c.bigUsed = time.Now()
	return c.big
}

// keepBig keeps t, too large for the cache, aside until bigIdle after its
// last use.
func (c *treeCache) keepBig(id crypto.ID, t *tree.Compact) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.big, c.bigID, c.bigUsed = t, id, time.Now()
	c.raiseLimit(t.Memory())
	if c.bigTime == nil {
		c.bigTime = time.AfterFunc(c.idle, c.dropBig)
	} else {
		c.bigTime.Reset(c.idle)
	}
}

// dropBig drops the tree kept aside once it has not been used for c.idle.
func (c *treeCache) dropBig() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.big == nil {
		return
	}
	if idle := time.Since(c.bigUsed); idle < c.idle {
		c.bigTime.Reset(c.idle - idle)
		return
	}
	c.big = nil
	c.raiseLimit(0)
}

// raiseLimit sets what the runtime's soft memory limit is raised by for
// the tree kept aside to n bytes (when a limit is set at all). c.mu must be
// held.
func (c *treeCache) raiseLimit(n int64) {
	cur := debug.SetMemoryLimit(-1)
	if cur == math.MaxInt64 {
		return
	}
	debug.SetMemoryLimit(max(cur-c.bigLimit+n, 1))
	c.bigLimit = n
}

// rebalance gives the blob cache what the trees leave of the budget.
func (c *treeCache) rebalance() {
	_, used := c.lru.Stats()
	want := max(c.total-max(used, c.share), c.minBlobs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if want != c.blobMax {
		c.blobMax = want
		c.blobs.SetMaxBytes(want)
	}
}

// compactTree returns a directory's tree through the tree cache.
func (m *mountFS) compactTree(ctx context.Context, id crypto.ID) (*tree.Compact, error) {
	return m.trees.get(ctx, id)
}

// loadTree returns a tree through the tree cache, its nodes freshly made
// (the versions view keeps some of them).
func (m *mountFS) loadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	t, err := m.trees.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return t.Tree(), nil
}
