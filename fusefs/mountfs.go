//go:build linux

package fusefs

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"

	"dj/cache"
	"dj/repo/crypto"
)

// mountFS is the state shared by every node of one mount.
type mountFS struct {
	bgctx context.Context // lives as long as the mount; for read-ahead
	repo  Repository
	opts  Options
	uid   uint32 // owner of the synthesized directories
	gid   uint32

	blobs *cache.BlobCache
	trees *treeCache // shares one budget with blobs (treecache.go)

	snaps *snapshotList // nil for a SubRoot mount

	// zeros serves reads of all-zero chunks; it is never written.
	zeros []byte
	// ra is the mount's read-ahead scheduler (readahead.go).
	ra *readAhead
	// entries bounds the looked-up entries the kernel keeps (inodes.go).
	entries *entryBudget
	// listing decides which listed entries carry attributes (listing.go).
	listing *listingPolicy
	// reported remembers blobs whose failure has been logged, so that a
	// broken blob read through many requests logs once.
	reportedMu sync.Mutex
	reported   map[crypto.ID]struct{}
}

// maxReported bounds the blobs whose failure is remembered as logged.
const maxReported = 4096

func newMountFS(bgctx context.Context, repo Repository, opts Options) *mountFS {
	trees, blobs := newTreeCache(repo, opts.CacheSize, opts.SpillDir, opts.Logf)
	m := &mountFS{
		bgctx:    bgctx,
		repo:     repo,
		opts:     opts,
		uid:      uint32(os.Getuid()),
		gid:      uint32(os.Getgid()),
		blobs:    blobs,
		trees:    trees,
		zeros:    make([]byte, 1<<20),
		reported: make(map[crypto.ID]struct{}),
		entries:  newEntryBudget(entriesFor(opts.CacheSize)),
		listing:  newListingPolicy(),
	}
	go m.entries.run(bgctx)
	if opts.OwnerRoot {
		m.uid, m.gid = 0, 0
	}
	m.ra = &readAhead{
		ctx:        bgctx,
		repo:       repo,
		blobs:      m.blobs,
		loadBlob:   m.blobLoader,
		loadTree:   m.compactTree,
		hasTree:    m.trees.contains,
		slots:      make(chan struct{}, readAheadSlots),
		treeQueue:  make(chan crypto.ID, treeQueueLen),
		blobsAhead: readAheadBlobs, perFile: readAheadPerFile,
	}
	if opts.Remote {
		m.ra.slots = make(chan struct{}, remoteSlots)
		m.ra.blobsAhead, m.ra.perFile = remoteBlobsAhead, remoteAheadPerFile
	}
	m.ra.start()
	return m
}

// logBlobError logs the failure to load a blob, once per blob.
func (m *mountFS) logBlobError(path string, id crypto.ID, err error) {
	m.reportedMu.Lock()
	_, seen := m.reported[id]
	if !seen && len(m.reported) < maxReported {
		m.reported[id] = struct{}{}
	}
	m.reportedMu.Unlock()
	if !seen {
		m.opts.Logf("dj mount: read %s: blob %s: %v (returning EIO)", path, id.Short(), err)
	}
}

// errno maps an error from a load to the errno of a FUSE reply: EINTR when
// the request was interrupted, EIO otherwise.
func errno(ctx context.Context, err error) syscall.Errno {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return syscall.EINTR
	}
	return syscall.EIO
}
