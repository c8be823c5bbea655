//go:build linux

package fusefs

import (
	"context"
	"sync/atomic"

	"dj/cache"
	"dj/repo/crypto"
	"dj/repo/tree"
)

// readAhead is the mount's one read-ahead scheduler. Every load the mount
// starts before a request needs it goes through here, under one limit
// (slots): a sequential reader's next chunks, the later chunks of a read that
// spans several, the first chunks of the files that follow one being read
// (a tree copier's next files), and the subtrees of a listed directory (a
// walker's next directories). It also decides what leaves the mount's cache
// early: a chunk a sequential reader has passed is demoted, not removed,
// because another file may share the blob. What one read(2) can trigger is
// therefore written in this file and nowhere else; the backend's own hints
// (the local backend's page-cache checks and pack read-ahead) stay in the
// backend, behind the capabilities of package backend.
//
// Every policy is non-blocking for the request that triggers it: when all
// slots are busy, the policy stops, and the request (or the next one) loads
// what it needs itself. Background loads run under the mount's context and
// end with the mount.
type readAhead struct {
	ctx   context.Context
	repo  Repository
	blobs *cache.BlobCache
	// loadBlob returns the loader of one blob of the given length.
	loadBlob func(id crypto.ID, want int64) func(ctx context.Context, buf []byte) ([]byte, error)
	// loadTree loads a tree through the tree cache; hasTree reports whether
	// it is cached.
	loadTree func(ctx context.Context, id crypto.ID) (*tree.Compact, error)
	hasTree  func(id crypto.ID) bool

	// slots bounds the background loads of the whole mount, blobs and
	// trees together.
	slots chan struct{}
	// treeQueue holds subtrees to load; treeWorkers goroutines take them.
	treeQueue chan crypto.ID
	// blobsAhead and perFile are the sequential read-ahead's depth and its
	// concurrent loads per file (readAheadBlobs and readAheadPerFile, more
	// for a remote repository).
	blobsAhead, perFile int
}

// Read-ahead limits.
const (
	readAheadSlots   = 16 // concurrent background loads per mount (blobs and trees)
	readAheadBlobs   = 4  // chunks loaded ahead of a sequential reader
	readAheadPerFile = 2  // concurrent sequential read-ahead loads per file
	// For a remote repository: with a 20 ms round trip and blobs of about
	// 1 MiB, two loads in flight cap a reader near 50 MB/s.
	remoteSlots        = 48
	remoteBlobsAhead   = 16
	remoteAheadPerFile = 12
	siblingsAhead      = 16 // files whose first chunk is loaded ahead of a tree copier
	treeWorkers        = 4  // goroutines loading queued subtrees
	treeQueueLen       = 1 << 14
	// passedBehind is how many chunks behind a sequential reader a chunk is
	// demoted: the kernel's requests arrive slightly out of order, so the
	// previous ones may still be asked for.
	passedBehind = 3
	// seqSlack is how many read lengths a read may start from where the
	// previous one ended and still count as sequential.
	seqSlack = 4
)

// start starts the tree workers; they stop with ra.ctx.
func (ra *readAhead) start() {
	for range treeWorkers {
		go ra.treeWorker()
	}
}

// acquire takes a slot without waiting; it reports whether it got one.
func (ra *readAhead) acquire() bool {
	select {
	case ra.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// acquireWait takes a slot, waiting for one; it reports false when the mount
// ends first.
func (ra *readAhead) acquireWait() bool {
	select {
	case ra.slots <- struct{}{}:
		return true
	case <-ra.ctx.Done():
		return false
	}
}

func (ra *readAhead) release() { <-ra.slots }

// blob starts loading blob id (want bytes) into the cache in the background
// and hands the plaintext to then (when not nil) once loaded. It reports
// false when every slot is busy. Errors are left to the request that needs
// the blob.
func (ra *readAhead) blob(id crypto.ID, want int64, then func([]byte)) bool {
	if then == nil && ra.blobs.Contains(id) {
		return true
	}
	if ra.repo.IsZeroBlob(id) {
		return true
	}
	if !ra.acquire() {
		return false
	}
	go func() {
		defer ra.release()
		b, err := ra.blobs.Acquire(ra.ctx, id, int(want)+loadSlack, ra.loadBlob(id, want))
		if err != nil {
			return
		}
		if then != nil {
			then(b.Bytes()) // done with the bytes when it returns
		}
		b.Release()
	}()
	return true
}

// ensure runs the policies of one read of chunks first..last of f, [off,
// end): the siblings of a file read from its start, the sequential
// read-ahead (or, for a random read, nothing ahead), and the later chunks of
// a read that spans several. It reports whether the read is random (not
// following the previous read of a file of more than one chunk).
func (ra *readAhead) ensure(f *fileNode, c *chunkMap, off, end int64, first, last int) (random bool) {
	if off == 0 {
		if name, parent := f.Parent(); parent != nil {
			if d, ok := parent.Operations().(*dirNode); ok {
				ra.siblings(d, name)
			}
		}
	}
	if c.known > 1 {
		seq := ra.sequential(f, c, off, end, last)
		random = !seq
		if seq && first >= passedBehind {
			// The kernel keeps what it read in its page cache
			// (FOPEN_KEEP_CACHE); this copy is the first to go.
			ra.blobs.Demote(f.node.Content[first-passedBehind])
		}
	}
	for i := first + 1; i <= last; i++ {
		if !c.isZero(ra.repo, f.node.Content, i) && !ra.blob(f.node.Content[i], c.size(i), nil) {
			break // the read loads the rest itself
		}
	}
	return random
}

// readerState tracks a file's reader for read-ahead; reads need no lock.
// It belongs to the file, not to an open: the kernel does not tell the
// daemon about opens (see fileNode.Open).
type readerState struct {
	// next is where the previous read ended.
	next atomic.Int64
	// ahead is the next chunk to load ahead of the reader, target the
	// chunk where read-ahead stops.
	ahead, target atomic.Int64
	// running counts this file's read-ahead workers.
	running atomic.Int32
}

// newReaderState returns the state of a file not read yet.
func newReaderState() *readerState {
	// A read from the start of a file counts as sequential (cat, cp, tar
	// and rsync start there); a first read anywhere else does not.
	return &readerState{}
}

// sequential keeps up to ra.blobsAhead chunks after last loading into the
// cache while f is read sequentially, and reports whether the read [off,
// end) was sequential.
func (ra *readAhead) sequential(f *fileNode, c *chunkMap, off, end int64, last int) bool {
	h := f.reader()
	prev := h.next.Swap(end)
	if w := seqSlack * (end - off); off < prev-w || off > prev+w {
		// Not sequential: stop reading ahead.
		h.target.Store(int64(last + 1))
		h.ahead.Store(int64(last + 1))
		return false
	}
	advance(&h.ahead, int64(last+1))
	advance(&h.target, int64(min(last+1+ra.blobsAhead, c.known)))
	for h.ahead.Load() < h.target.Load() {
		n := h.running.Load()
		if n >= int32(ra.perFile) {
			return true
		}
		if h.running.CompareAndSwap(n, n+1) {
			go ra.sequentialWorker(f, h, c)
		}
	}
	return true
}

// sequentialWorker loads the chunks between h.ahead and h.target, one at a
// time, until there are none left.
func (ra *readAhead) sequentialWorker(f *fileNode, h *readerState, c *chunkMap) {
	for {
		if ra.ctx.Err() != nil {
			h.running.Add(-1)
			return
		}
		k, ok := claimChunk(h)
		if !ok {
			h.running.Add(-1)
			// A read may have raised the target after the claim failed
			// and, seeing this worker still running, started none.
			if h.ahead.Load() >= h.target.Load() {
				return
			}
			if h.running.Add(1) > int32(ra.perFile) {
				h.running.Add(-1)
				return
			}
			continue
		}
		id := f.node.Content[k]
		if ra.blobs.Contains(id) || c.isZero(ra.repo, f.node.Content, k) {
			continue
		}
		// A sequential reader's next chunks are worth waiting for a slot.
		if !ra.acquireWait() {
			h.running.Add(-1)
			return
		}
		// A chunk the reader has passed meanwhile needs no loading: it may
		// even have been evicted behind the reader.
		if c.starts[k+1] > h.next.Load() {
			if b, err := ra.blobs.Acquire(ra.ctx, id, int(c.size(k))+loadSlack, ra.loadBlob(id, c.size(k))); err == nil {
				b.Release()
			}
		}
		ra.release()
	}
}

// claimChunk takes the next chunk to read ahead, if any is left.
func claimChunk(h *readerState) (int, bool) {
	for {
		k := h.ahead.Load()
		if k >= h.target.Load() {
			return 0, false
		}
		if h.ahead.CompareAndSwap(k, k+1) {
			return int(k), true
		}
	}
}

// advance raises v to at least to; it reports whether it did.
func advance(v *atomic.Int64, to int64) bool {
	for {
		cur := v.Load()
		if cur >= to {
			return false
		}
		if v.CompareAndSwap(cur, to) {
			return true
		}
	}
}

// storeChunk hands the whole plaintext b of chunk i of f to the kernel's
// page cache (FUSE NOTIFY_STORE), once per chunk, in the background, after a
// random read of it. A random reader (a database, fio, a video player
// seeking) pays for a whole blob to read a page of it; storing the rest
// makes its next reads anywhere in that blob page-cache hits that never
// reach the daemon, and the kernel, not this process's heap, holds the bytes
// (it drops them under memory pressure and the next read comes back here).
// It runs after the read's reply has gone out: the kernel locks the pages a
// READ fills, and a store into them before the reply would wait on itself.
func (ra *readAhead) storeChunk(f *fileNode, c *chunkMap, i int, blob *cache.Blob) {
	if c.stored[i].Load() {
		return // the common case on a random reader's later reads
	}
	if _, parent := f.Parent(); parent == nil {
		return // not in a mounted tree (unit tests)
	}
	if c.stored[i].Swap(true) {
		return
	}
	off := c.starts[i]
	b := blob.Bytes()
	if size := int64(f.node.Size); off+int64(len(b)) > size {
		// Content longer than the file's size (a damaged tree): a store
		// past the end would make the kernel grow the file.
		if off >= size {
			return
		}
		b = b[:size-off]
	}
	// The kernel now holds the chunk: a sequential reader's next READ
	// starts at its end, and must count as sequential.
	if h := f.reader(); h.next.Load() < off+int64(len(b)) && h.next.Load() >= off {
		h.next.Store(off + int64(len(b)))
	}
	blob.Hold() // for the store, which outlives the read
	go func() {
		defer blob.Release()
		_ = f.WriteCache(off, b)
	}()
}

// siblings starts loading the first chunk of the files that follow name in
// directory d, when a reader starts on a file: programs that copy a tree
// (tar, cp -r, rsync) read its files one after another in directory order,
// each waiting for its blob, and this gives them the next ones decoded. A
// file of one chunk goes straight into the kernel's page cache too: its
// reader then finds it there and sends no READ at all.
func (ra *readAhead) siblings(d *dirNode, name string) {
	t, ok := d.m.trees.peek(d.subtree)
	if !ok || t == nil {
		return
	}
	i, ok := t.Search(name)
	if !ok {
		return
	}
	end := int64(min(i+siblingsAhead, t.Len()-1))
	for {
		done := d.siblingsAhead.Load()
		if done >= end || end-done < siblingsAhead/2 && done > int64(i) {
			return
		}
		if d.siblingsAhead.CompareAndSwap(done, end) {
			break
		}
	}
	for j := i + 1; j <= int(end); j++ {
		content := t.Content(j)
		if t.Type(j) != tree.File || len(content) == 0 {
			continue
		}
		want, ok := ra.repo.BlobSize(content[0])
		if !ok || want < 0 {
			continue // the read reports it
		}
		var store func([]byte)
		if child := d.GetChild(t.Name(j)); child != nil && len(content) == 1 {
			size := int(t.Size(j))
			store = func(b []byte) {
				if len(b) == size {
					_ = child.WriteCache(0, b)
				}
			}
		}
		if !ra.blob(content[0], int64(want), store) {
			// Every slot is busy: the next file read from its start asks
			// again from here.
			d.siblingsAhead.CompareAndSwap(end, int64(j-1))
			return
		}
	}
}

// subtrees queues the subtrees of t, a directory being listed, for loading
// in the background, and the workers go on down the tree: a walk (find,
// tar, rsync, du) finds them decoded when it gets there instead of loading
// one tree at a time. It never blocks: when the queue is full the walk loads
// the rest itself.
func (ra *readAhead) subtrees(t *tree.Compact) {
	if t.Subtrees() == 0 {
		return
	}
	for i := range t.Len() {
		id, ok := t.Subtree(i)
		if !ok || ra.hasTree(id) {
			continue
		}
		select {
		case ra.treeQueue <- id:
		default:
			return
		}
	}
}

// treeWorker loads queued subtrees until the mount ends, each under a slot,
// and queues their subtrees in turn.
func (ra *readAhead) treeWorker() {
	for {
		select {
		case <-ra.ctx.Done():
			return
		case id := <-ra.treeQueue:
			if ra.hasTree(id) || !ra.acquireWait() {
				continue
			}
			t, err := ra.loadTree(ra.ctx, id)
			ra.release()
			if err == nil {
				ra.subtrees(t)
			}
		}
	}
}
