//go:build linux

package fusefs

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// fileNode is a regular file inside a snapshot.
type fileNode struct {
	fs.Inode
	roNode
	m    *mountFS
	node *tree.Node

	chunksOnce sync.Once
	chunks     *chunkMap

	// readState tracks the reader's position for read-ahead (files of
	// more than one chunk only).
	readState atomic.Pointer[readerState]
}

var (
	_ fs.NodeGetattrer     = (*fileNode)(nil)
	_ fs.NodeOpener        = (*fileNode)(nil)
	_ fs.NodeFlusher       = (*fileNode)(nil)
	_ fs.NodeReader        = (*fileNode)(nil)
	_ fs.NodeGetxattrer    = (*fileNode)(nil)
	_ fs.NodeListxattrer   = (*fileNode)(nil)
	_ fs.NodeStatfser      = (*fileNode)(nil)
	_ fs.NodeSetattrer     = (*fileNode)(nil)
	_ fs.NodeSetxattrer    = (*fileNode)(nil)
	_ fs.NodeRemovexattrer = (*fileNode)(nil)
)

// chunkMap maps file offsets to the blobs of a file.
type chunkMap struct {
	// starts[i] is the offset of chunk i; starts[known] is where the
	// chunks of known size end.
	starts []int64
	// known is the number of leading chunks whose size the index knows.
	known int
	// zero caches whether each chunk is all zeros: 0 unknown, 1 zero,
	// 2 not zero. It is filled in as chunks are read, because asking the
	// repository may cost a hash of that many zero bytes.
	zero []atomic.Uint32
	// warnedShort is set once a read past the known content was logged.
	warnedShort atomic.Bool
	// stored marks the chunks handed to the kernel's page cache whole
	// after a random read (see storeChunk).
	stored []atomic.Bool
}

// isZero reports whether chunk i of content is all zeros.
func (c *chunkMap) isZero(repo Repository, content []crypto.ID, i int) bool {
	switch c.zero[i].Load() {
	case 1:
		return true
	case 2:
		return false
	}
	z := repo.IsZeroBlob(content[i])
	v := uint32(2)
	if z {
		v = 1
	}
	c.zero[i].Store(v)
	return z
}

// chunkMap returns the file's chunk offsets, computed once from the index.
func (f *fileNode) chunkMap() *chunkMap {
	f.chunksOnce.Do(func() {
		content := f.node.Content
		c := &chunkMap{
			starts: make([]int64, 1, len(content)+1),
			zero:   make([]atomic.Uint32, len(content)),
			stored: make([]atomic.Bool, len(content)),
		}
		var off int64
		for i, id := range content {
			n, ok := f.m.repo.BlobSize(id)
			if !ok || n < 0 {
				f.m.opts.Logf("dj mount: %s: blob %s is not in the index; reads from offset %d on return EIO", f.path(), id.Short(), off)
				break
			}
			off += int64(n)
			c.starts = append(c.starts, off)
			c.known = i + 1
		}
		if off < int64(f.node.Size) && c.known == len(content) {
			f.m.opts.Logf("dj mount: %s: content is %d bytes, its size says %d; reads past the content return EIO", f.path(), off, f.node.Size)
		}
		f.chunks = c
	})
	return f.chunks
}

func (f *fileNode) path() string { return "/" + f.Path(nil) }

func (f *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, f.node, f.m.opts.OwnerRoot)
	return 0
}

func (f *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(f.node.Xattrs, attr, dest)
}

func (f *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(f.node.Xattrs, dest)
}

// readerState tracks a file's reader for read-ahead; reads need no lock.
type readerState struct {
	// next is where the previous read ended.
	next atomic.Int64
	// ahead is the next chunk to load ahead of the reader, target the
	// chunk where read-ahead stops.
	ahead, target atomic.Int64
	// running counts this file's read-ahead workers.
	running atomic.Int32
}

// Open tells the kernel that files need no opening (ENOSYS): from then on it
// opens and closes files of this mount without asking, which saves three of
// the four requests a small file costs (OPEN, FLUSH, RELEASE; READ is
// left), and keeps their page cache across opens (FOPEN_KEEP_CACHE is the
// kernel's default for such files). Writes never get here: the mount is
// read-only, and the kernel refuses them itself.
func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, syscall.ENOSYS
}

// Flush tells the kernel that closing a file needs no word to the daemon.
func (f *fileNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// reader returns the file's read-ahead state, made on its first read. It
// belongs to the file, not to an open (the kernel does not tell the daemon
// about opens, see Open).
func (f *fileNode) reader() *readerState {
	if h := f.readState.Load(); h != nil {
		return h
	}
	h := &readerState{}
	h.next.Store(math.MinInt64 / 2) // the first read is not sequential
	if f.readState.CompareAndSwap(nil, h) {
		return h
	}
	return f.readState.Load()
}

// Read serves a read. Concurrent reads of one file are fine: the chunk map
// is immutable and the blob cache locks itself.
func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	size := int64(f.node.Size)
	if off >= size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), size)
	if off == 0 {
		if name, parent := f.Parent(); parent != nil {
			if d, ok := parent.Operations().(*dirNode); ok {
				d.prefetchSiblings(name)
			}
		}
	}
	c := f.chunkMap()
	if end > c.starts[c.known] {
		if c.warnedShort.Swap(true) {
			return nil, syscall.EIO
		}
		f.m.opts.Logf("dj mount: read %s [%d, %d): beyond the content known to the index (%d bytes); returning EIO", f.path(), off, end, c.starts[c.known])
		return nil, syscall.EIO
	}
	// The chunk holding off: the first whose end lies beyond off.
	first := sort.Search(c.known, func(i int) bool { return c.starts[i+1] > off })
	last := first
	for c.starts[last+1] < end {
		last++
	}
	random := false
	if c.known > 1 {
		seq := f.readAhead(f.reader(), c, off, end, last)
		random = !seq
		if seq && first > 2 {
			// A sequential reader is done with the chunk three before this
			// one (the kernel's requests arrive slightly out of order, so
			// the previous ones may still be asked for), and the kernel
			// keeps what it read in the page cache (FOPEN_KEEP_CACHE):
			// keeping it here too would only grow the heap, and fresh
			// memory costs page faults on every blob.
			f.m.blobs.Remove(f.node.Content[first-3])
		}
	}

	if first == last {
		start := c.starts[first]
		n := int(end - off)
		if c.isZero(f.m.repo, f.node.Content, first) {
			if n <= len(f.m.zeros) {
				return fuse.ReadResultData(f.m.zeros[:n]), 0
			}
			clear(dest[:n])
			return fuse.ReadResultData(dest[:n]), 0
		}
		b, e := f.blob(ctx, c, first)
		if e != 0 {
			return nil, e
		}
		if random {
			f.storeChunk(c, first, b)
		}
		return fuse.ReadResultData(b[off-start : end-start]), 0
	}

	// The read spans chunks: load the later ones while waiting for the first.
	for i := first + 1; i <= last; i++ {
		if id := f.node.Content[i]; !f.m.blobs.Contains(id) && !c.isZero(f.m.repo, f.node.Content, i) {
			loader := f.m.blobLoader(id, c.starts[i+1]-c.starts[i])
			go func() { _, _ = f.m.blobs.Get(f.m.bgctx, id, loader) }()
		}
	}
	pos := off
	for i := first; i <= last; i++ {
		start, stop := c.starts[i], min(c.starts[i+1], end)
		d := dest[pos-off : stop-off]
		if c.isZero(f.m.repo, f.node.Content, i) {
			clear(d)
		} else {
			b, e := f.blob(ctx, c, i)
			if e != 0 {
				return nil, e
			}
			copy(d, b[pos-start:stop-start])
			if random {
				f.storeChunk(c, i, b)
			}
		}
		pos = stop
	}
	return fuse.ReadResultData(dest[:end-off]), 0
}

// storeChunk hands the whole plaintext b of chunk i to the kernel's page
// cache (FUSE NOTIFY_STORE), once per chunk, in the background. A random
// reader (a database, fio, a video player seeking) pays for a whole blob to
// read a page of it; storing the rest makes its next reads anywhere in that
// blob page-cache hits that never reach the daemon, and the kernel, not this
// process's heap, holds the bytes (it drops them under memory pressure and
// the next read comes back here). It runs after the read's reply has gone
// out: the kernel locks the pages a READ fills, and a store into them
// before the reply would wait on itself.
func (f *fileNode) storeChunk(c *chunkMap, i int, b []byte) {
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
	if size := int64(f.node.Size); off+int64(len(b)) > size {
		// Content longer than the file's size (a damaged tree): a store
		// past the end would make the kernel grow the file.
		if off >= size {
			return
		}
		b = b[:size-off]
	}
	go func() { _ = f.WriteCache(off, b) }()
}

// blob returns the plaintext of chunk i through the blob cache, or the
// errno to reply with.
func (f *fileNode) blob(ctx context.Context, c *chunkMap, i int) ([]byte, syscall.Errno) {
	id := f.node.Content[i]
	want := c.starts[i+1] - c.starts[i]
	b, err := f.m.blobs.Get(ctx, id, f.m.blobLoader(id, want))
	if err != nil {
		e := errno(ctx, err)
		if e == syscall.EIO {
			f.m.logBlobError(f.path(), id, err)
		}
		return nil, e
	}
	return b, 0
}

// blobLoader returns the function that loads blob id of the given length.
func (m *mountFS) blobLoader(id crypto.ID, want int64) func(ctx context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		b, err := m.repo.LoadBlob(ctx, id, nil)
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != want {
			return nil, fmt.Errorf("blob is %d bytes, the index says %d", len(b), want)
		}
		return b, nil
	}
}

// seqSlack is how many read lengths a read may start from where the
// previous one ended and still count as sequential: the kernel's read-ahead
// requests arrive slightly out of order.
const seqSlack = 4

// readAhead keeps up to readAheadBlobs chunks after last loading into the
// cache in the background while the file is read sequentially, and
// reports whether the read was sequential.
func (f *fileNode) readAhead(h *readerState, c *chunkMap, off, end int64, last int) bool {
	prev := h.next.Swap(end)
	if w := seqSlack * (end - off); off < prev-w || off > prev+w {
		// Not sequential: stop reading ahead.
		h.target.Store(int64(last + 1))
		h.ahead.Store(int64(last + 1))
		return false
	}
	advance(&h.ahead, int64(last+1))
	advance(&h.target, int64(min(last+1+readAheadBlobs, c.known)))
	for h.ahead.Load() < h.target.Load() {
		n := h.running.Load()
		if n >= readAheadPerHandle {
			return true
		}
		if h.running.CompareAndSwap(n, n+1) {
			go f.readAheadWorker(h, c)
		}
	}
	return true
}

// readAheadWorker loads the chunks between h.ahead and h.target, one at a
// time, until there are none left.
func (f *fileNode) readAheadWorker(h *readerState, c *chunkMap) {
	m := f.m
	for {
		if m.bgctx.Err() != nil {
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
			if h.running.Add(1) > readAheadPerHandle {
				h.running.Add(-1)
				return
			}
			continue
		}
		id := f.node.Content[k]
		if m.blobs.Contains(id) || c.isZero(m.repo, f.node.Content, k) {
			continue
		}
		select {
		case m.prefetchSem <- struct{}{}:
		case <-m.bgctx.Done():
			h.running.Add(-1)
			return
		}
		// A chunk the reader has passed meanwhile needs no loading: it may
		// even have been evicted behind the reader.
		if c.starts[k+1] <= h.next.Load() {
			<-m.prefetchSem
			continue
		}
		// Errors are left to the read that needs the blob.
		_, _ = m.blobs.Get(m.bgctx, id, m.blobLoader(id, c.starts[k+1]-c.starts[k]))
		<-m.prefetchSem
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

// otherNode is a symlink, device, fifo, socket or irregular file.
type otherNode struct {
	fs.Inode
	roNode
	m    *mountFS
	node *tree.Node
}

var (
	_ fs.NodeGetattrer   = (*otherNode)(nil)
	_ fs.NodeReadlinker  = (*otherNode)(nil)
	_ fs.NodeGetxattrer  = (*otherNode)(nil)
	_ fs.NodeListxattrer = (*otherNode)(nil)
	_ fs.NodeStatfser    = (*otherNode)(nil)
)

func (o *otherNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, o.node, o.m.opts.OwnerRoot)
	return 0
}

func (o *otherNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if o.node.Type != tree.Symlink {
		return nil, syscall.EINVAL
	}
	return []byte(o.node.LinkTarget), 0
}

func (o *otherNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(o.node.Xattrs, attr, dest)
}

func (o *otherNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(o.node.Xattrs, dest)
}
