//go:build linux

package fusefs

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"dj/cache"
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
	// mismatch is set when the content's length differs from the file's
	// size: every read fails, as restore and dump fail the file.
	mismatch bool
	// stored marks the chunks handed to the kernel's page cache whole
	// after a random read (see storeChunk).
	stored []atomic.Bool
}

// size returns the length of chunk i (one of the known chunks).
func (c *chunkMap) size(i int) int64 { return c.starts[i+1] - c.starts[i] }

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
		if c.known == len(content) && off != int64(f.node.Size) || off > int64(f.node.Size) || off < 0 {
			// Neither the size nor the content can be trusted: serve
			// neither, as restore and dump refuse the file.
			c.mismatch = true
			f.m.opts.Logf("dj mount: %s: content is %d bytes, its size says %d; reads return EIO", f.path(), off, f.node.Size)
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
	h := newReaderState()
	if f.readState.CompareAndSwap(nil, h) {
		return h
	}
	return f.readState.Load()
}

// Read serves a read in three steps: locate the chunks that hold [off,
// off+len(dest)), ensure (the read-ahead scheduler's policies for this
// read), assemble the reply. Concurrent reads of one file are fine: the
// chunk map is immutable and the blob cache locks itself.
func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	c := f.chunkMap()
	first, last, end, e := f.locate(c, off, len(dest))
	if e != 0 || first < 0 {
		return fuse.ReadResultData(nil), e
	}
	random := f.m.ra.ensure(f, c, off, end, first, last)
	return f.assemble(ctx, c, dest, off, end, first, last, random)
}

// locate returns the chunks first..last that hold the read of n bytes at
// off, and where the read ends (at most the file's size). first is -1 for a
// read that returns no bytes (at or past the end of the file).
func (f *fileNode) locate(c *chunkMap, off int64, n int) (first, last int, end int64, e syscall.Errno) {
	if off < 0 {
		return -1, -1, 0, syscall.EINVAL
	}
	if c.mismatch {
		return -1, -1, 0, syscall.EIO
	}
	size := int64(f.node.Size)
	if off >= size || n == 0 {
		return -1, -1, 0, 0
	}
	end = min(off+int64(n), size)
	if end > c.starts[c.known] {
		if !c.warnedShort.Swap(true) {
			f.m.opts.Logf("dj mount: read %s [%d, %d): beyond the content known to the index (%d bytes); returning EIO", f.path(), off, end, c.starts[c.known])
		}
		return -1, -1, 0, syscall.EIO
	}
	// The chunk holding off: the first whose end lies beyond off.
	first = sort.Search(c.known, func(i int) bool { return c.starts[i+1] > off })
	last = first
	for c.starts[last+1] < end {
		last++
	}
	return first, last, end, 0
}

// assemble builds the reply to the read [off, end) from chunks first..last.
// A read within one chunk is answered with a slice of the cached blob (or of
// the mount's zeros), without copying; a read that spans chunks is copied
// into dest. After a random read, the chunks it loaded go to the kernel's
// page cache whole (readAhead.storeChunk).
func (f *fileNode) assemble(ctx context.Context, c *chunkMap, dest []byte, off, end int64, first, last int, random bool) (fuse.ReadResult, syscall.Errno) {
	if first == last {
		b, e := f.chunk(ctx, c, first, random)
		if e != 0 {
			return nil, e
		}
		start := c.starts[first]
		if b == nil { // all zeros
			if n := int(end - off); n <= len(f.m.zeros) {
				return fuse.ReadResultData(f.m.zeros[:n]), 0
			}
			clear(dest[:end-off])
			return fuse.ReadResultData(dest[:end-off]), 0
		}
		return &blobResult{b: b, data: b.Bytes()[off-start : end-start]}, 0
	}
	pos := off
	for i := first; i <= last; i++ {
		start, stop := c.starts[i], min(c.starts[i+1], end)
		b, e := f.chunk(ctx, c, i, random)
		if e != 0 {
			return nil, e
		}
		if d := dest[pos-off : stop-off]; b == nil {
			clear(d)
		} else {
			copy(d, b.Bytes()[pos-start:stop-start])
			b.Release()
		}
		pos = stop
	}
	return fuse.ReadResultData(dest[:end-off]), 0
}

// chunk returns the plaintext of chunk i, held for the caller, nil for a
// chunk of zeros (the one place that tells them apart: they are never
// loaded), or the errno to reply with. After a random read the chunk goes
// to the kernel's page cache.
func (f *fileNode) chunk(ctx context.Context, c *chunkMap, i int, random bool) (*cache.Blob, syscall.Errno) {
	if c.isZero(f.m.repo, f.node.Content, i) {
		return nil, 0
	}
	b, e := f.blob(ctx, c, i)
	if e == 0 && random {
		f.m.ra.storeChunk(f, c, i, b)
	}
	return b, e
}

// blob returns the plaintext of chunk i through the blob cache, held for
// the caller, or the errno to reply with.
func (f *fileNode) blob(ctx context.Context, c *chunkMap, i int) (*cache.Blob, syscall.Errno) {
	id := f.node.Content[i]
	b, err := f.m.blobs.Acquire(ctx, id, int(c.size(i))+loadSlack, f.m.blobLoader(id, c.size(i)))
	if err != nil {
		e := errno(ctx, err)
		if e == syscall.EIO {
			f.m.logBlobError(f.path(), id, err)
		}
		return nil, e
	}
	return b, 0
}

// loadSlack is the spare capacity a blob's buffer gets past its length: the
// repository decodes a compressed blob into a buffer only with that much to
// spare (repo's decodeSlack), else it makes a new one.
const loadSlack = 64

// blobResult is the reply to a read served from a cached blob without a
// copy: it holds the blob until go-fuse has written the reply to the kernel
// and calls Done (after Read has returned). The mount never sets go-fuse's
// DisableSplice, whose path calls Done before it writes.
type blobResult struct {
	b    *cache.Blob
	data []byte
	done atomic.Bool
}

func (r *blobResult) Size() int { return len(r.data) }

func (r *blobResult) Bytes(buf []byte) ([]byte, fuse.Status) { return r.data, fuse.OK }

func (r *blobResult) Done() {
	if !r.done.Swap(true) {
		r.b.Release()
	}
}

// blobLoader returns the function that loads blob id of the given length,
// into buf when it has room.
func (m *mountFS) blobLoader(id crypto.ID, want int64) func(ctx context.Context, buf []byte) ([]byte, error) {
	return func(ctx context.Context, buf []byte) ([]byte, error) {
		b, err := m.repo.LoadBlob(ctx, id, buf)
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != want {
			return nil, fmt.Errorf("blob is %d bytes, the index says %d", len(b), want)
		}
		return b, nil
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
