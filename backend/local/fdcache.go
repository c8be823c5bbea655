package local

import (
	"container/list"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// maxOpenPacks bounds the pack files kept open for reading.
const maxOpenPacks = 64

// fdCache keeps recently read pack files open. Reading many blobs of one
// pack through one open file lets the kernel see a sequential reader and
// read ahead (each open starts a new read-ahead window), and saves an open,
// fstat and close per blob. Packs are write-once, so a cached file never
// shows stale content; a pack removed by this process is dropped from the
// cache, one removed by another process stays readable until evicted.
type fdCache struct {
	mu    sync.Mutex
	files map[string]*cachedFile
	lru   *list.List // of *cachedFile, most recent first
}

type cachedFile struct {
	path    string
	f       *os.File
	size    int64
	refs    int
	evicted bool
	elem    *list.Element

	raMu    sync.Mutex
	lastEnd int64 // end of the previous read
	streak  int   // reads in a row that moved forward
	raEnd   int64 // end of the range already asked for with WILLNEED

	// For reads around the page cache (see readDirect): the file opened
	// with O_DIRECT (nil where the file system refuses it) and mapped, to
	// ask mincore which of its pages are cached. Made on first use.
	directOnce sync.Once
	direct     *os.File
	mapped     []byte
}

// close closes the file and what readDirect made for it.
func (cf *cachedFile) close() {
	cf.f.Close()
	if cf.direct != nil {
		cf.direct.Close()
	}
	if cf.mapped != nil {
		_ = unix.Munmap(cf.mapped)
	}
}

// Pack read-ahead. Readers of a snapshot (a mount serving tar or cp -r, a
// restore) take the blobs of a pack in increasing order, but with gaps (the
// blobs of the other open pack, or of files not asked for), and the
// kernel's read-ahead only follows reads that continue where the last one
// ended: on a cold cache every small blob cost a disk round trip. A read
// that starts at most raGap after the previous one ended, the second such
// read in a row, asks the kernel to load the next raWindow bytes of the
// pack in the background.
const (
	raGap    = 2 << 20
	raWindow = 4 << 20
)

// readAhead notes a read of [off, off+n) and starts the kernel reading
// ahead when the reads move forward through the file.
func (cf *cachedFile) readAhead(off, n int64) {
	cf.raMu.Lock()
	if cf.lastEnd > 0 && off >= cf.lastEnd-n && off <= cf.lastEnd+raGap {
		cf.streak++
	} else {
		cf.streak = 0
	}
	cf.lastEnd = off + n
	var from, to int64
	// Two forward moves in a row: random readers land forward of the last
	// read now and then, and must not make the disk read ahead for them.
	if cf.streak >= 2 && off+n+raWindow/2 > cf.raEnd {
		from = max(off+n, cf.raEnd)
		to = min(cf.size, off+n+raWindow)
		cf.raEnd = to
	}
	cf.raMu.Unlock()
	if to > from {
		_ = unix.Fadvise(int(cf.f.Fd()), from, to-from, unix.FADV_WILLNEED)
	}
}

func newFDCache() *fdCache {
	return &fdCache{files: map[string]*cachedFile{}, lru: list.New()}
}

// acquire returns the open file for path; release it when done.
func (c *fdCache) acquire(path string) (*cachedFile, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cf, ok := c.files[path]; ok {
		cf.refs++
		c.lru.MoveToFront(cf.elem)
		return cf, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	cf := &cachedFile{path: path, f: f, size: fi.Size(), refs: 1}
	cf.elem = c.lru.PushFront(cf)
	c.files[path] = cf
	for c.lru.Len() > maxOpenPacks {
		c.dropLocked(c.lru.Back().Value.(*cachedFile))
	}
	return cf, nil
}

// release gives a file back; an evicted file is closed by its last user.
func (c *fdCache) release(cf *cachedFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cf.refs--
	if cf.evicted && cf.refs == 0 {
		cf.close()
	}
}

// invalidate drops path from the cache (the file was removed or replaced).
func (c *fdCache) invalidate(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cf, ok := c.files[path]; ok {
		c.dropLocked(cf)
	}
}

func (c *fdCache) dropLocked(cf *cachedFile) {
	delete(c.files, cf.path)
	c.lru.Remove(cf.elem)
	cf.evicted = true
	if cf.refs == 0 {
		cf.close()
	}
}

// closeAll closes every cached file.
func (c *fdCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cf := range c.files {
		c.dropLocked(cf)
	}
}
