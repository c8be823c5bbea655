// Package fusefs serves the snapshots of a repository as a read-only FUSE
// file system (go-fuse/v2 node API).
//
// The layout of a mount (the default path templates) is
//
//	snapshots/<time>/...          one directory per snapshot, and snapshots/latest -> <time>
//	ids/<short id>/...
//	hosts/<host>/<time>/...       and hosts/<host>/latest
//	tags/<tag>/<time>/...         and tags/<tag>/latest
//	versions/<path>/<name>@<time> every distinct version of each file across all snapshots
//
// A snapshot's root tree is the root of its directory: the backed-up path
// /home/ann/docs is at <time>/home/ann/docs. Everything is loaded lazily:
// trees when a directory is visited, blobs when a file is read. The snapshot
// list is re-read at most every Options.Refresh, and at once (at most once a
// second) when an unknown name is looked up in a snapshot-list directory.
//
// Requests per file. DESIGN.md has Open return FOPEN_KEEP_CACHE; the mount
// goes further and tells the kernel that neither files nor directories need
// opening (Open and OPENDIR answer ENOSYS, see noOpendirFS): the kernel then
// opens them itself, with FOPEN_KEEP_CACHE (and FOPEN_CACHE_DIR) as its
// default, and sends no OPEN, FLUSH, RELEASE, OPENDIR or RELEASEDIR. A walk
// that copies a tree costs one READ per small file and two READDIRPLUS per
// directory. Read-ahead state therefore belongs to the file, not to an open
// handle. Which listed entries carry attributes (and so become inodes
// without a LOOKUP) is learned per calling thread (listing.go): a walker
// that stats what it lists gets them all, one that never does (find) gets
// the files' names alone.
//
// The layers a read(2) passes through, top down:
//
//  1. The kernel's caches. Page cache (file data, kept across opens because
//     files need no open), dentry and attribute caches (long timeouts inside
//     snapshots, short ones for the changing snapshot lists), and the
//     readdir cache (directories need no open either; layout directories
//     change their mtime with the snapshot set). Most reads of a warm mount
//     end here and never reach the daemon. The daemon fills the page cache
//     ahead of time with FUSE_NOTIFY_STORE (one-chunk sibling files, the
//     whole chunk of a random read). The dentries and inodes of looked-up
//     entries stay until memory pressure evicts them, and go-fuse keeps an
//     inode here for each; past a budget (an eighth of Options.CacheSize
//     at 1 KiB an entry) the mount tells the kernel to drop the oldest
//     (inodes.go), so a walk that stats every file stays within the cache
//     size whatever the snapshot holds.
//  2. The mount's caches, bounded together by Options.CacheSize: decoded
//     blobs (cache.BlobCache, single-flight, 7/8 of the size) and decoded
//     trees in their compact form (treecache.go: an eighth, growing to half
//     when a huge directory needs it, the blob cache giving up that room; a
//     tree larger than a quarter lives in temporary files behind a page
//     cache of a few MiB).
//     A read finds the chunk that holds its offset (binary search over
//     cumulative chunk sizes) and takes the blob from here, loading it once
//     however many readers ask. A blob counts its holders (the cache, a
//     reply until go-fuse has written it, a page-cache store); when the
//     last lets go, its buffer is decoded into by a later load instead of
//     fresh memory being zeroed for it.
//  3. The repository and the backend: index lookup, one ranged read of the
//     blob, open, decompress, verify the id. What the backend does below
//     that (the local backend's page-cache checks, O_DIRECT for large
//     uncached ranges, pack read-ahead) stays in the backend, behind the
//     capabilities of package backend.
//
// A READ is served in three steps (fileNode.Read): locate the chunks that
// hold the range (binary search over cumulative chunk sizes), ensure (the
// read-ahead scheduler's policies for this read), assemble the reply (a
// slice of one cached blob, or a copy of several; chunks of zeros are never
// loaded).
//
// Everything the daemon loads before a request asks for it goes through one
// scheduler, readAhead (readahead.go), under one limit of concurrent
// background loads per mount: a sequential reader's next chunks; the later
// chunks of a read spanning several; the first chunk of the files that follow
// a file being read from its start, stored straight into the kernel's page
// cache when that is the whole file (tar, cp -r and rsync then find most
// files cached); the whole chunk of a random read, stored into the page cache
// (a reader that seeks pays for one blob, not one per page); and the subtrees
// of a listed directory, down the tree (find, du). Blobs a sequential reader
// has passed are demoted in the blob cache, not removed: another file may
// share them.
//
// The files: mount.go mounts and unmounts (plumbing), mountfs.go holds the
// state every node shares, treecache.go the tree cache, layout.go, meta.go
// and versions.go the synthesized directories, dir.go and file.go the nodes
// of a snapshot's trees, readahead.go the scheduler, noopendir.go the
// no-open protocol, inodes.go the bound on looked-up entries.
//
// Mounting works on Linux; elsewhere Mount returns ErrNoFUSE.
package fusefs

import (
	"context"
	"errors"
	"time"

	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// Repository is what a mount needs from a repository. All methods must be
// safe for concurrent use.
type Repository interface {
	// Snapshots returns the current snapshot list, freshly read from the
	// repository. It is called at mount time and on each refresh (see also
	// IndexReloader).
	Snapshots(ctx context.Context) ([]*snapshot.Snapshot, error)
	// LoadTree returns a decoded, validated tree.
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	// LoadBlob returns the verified plaintext of a data blob. buf, when not
	// nil, may be used for the result: the mount passes the buffers of
	// blobs it no longer holds (cache.BlobCache). The returned slice is the
	// mount's: the repository must not keep or reuse it.
	LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error)
	// BlobSize returns the plaintext length of a data blob from the index.
	BlobSize(id crypto.ID) (int, bool)
	// IsZeroBlob reports whether a data blob's plaintext is all zeros; such
	// blobs are served without loading them.
	IsZeroBlob(id crypto.ID) bool
}

// IndexReloader may be implemented by a Repository that must reload its
// index before it can load the trees and blobs of snapshots made after it
// was opened. ReloadIndex is called when a refresh finds new snapshots,
// before they are shown; when it fails, the new snapshots stay hidden until
// the next refresh.
type IndexReloader interface {
	ReloadIndex(ctx context.Context) error
}

// SubRoot selects one snapshot, and optionally one directory in it, to be
// mounted as the root of the file system instead of the snapshot listing.
type SubRoot struct {
	Snapshot *snapshot.Snapshot
	// Path is a slash-separated directory path inside the snapshot, such as
	// "/home/ann"; empty or "/" is the snapshot's root.
	Path string
}

// Defaults of Options.
const (
	DefaultCacheSize    = 512 << 20
	DefaultRefresh      = 30 * time.Second
	DefaultTimeTemplate = "2006-01-02T15:04:05Z07:00"
)

// DefaultPathTemplates returns the path templates used when
// Options.PathTemplates is empty. In a template, %i is the short snapshot
// ID, %I the full ID, %h the host name, %u the user name, %t a tag (one path
// per tag), %T the snapshot time formatted with the time template and %% a
// percent sign. A template ending in %T also gets a "latest" symlink in the
// directory holding the times.
func DefaultPathTemplates() []string {
	return []string{"ids/%i", "snapshots/%T", "hosts/%h/%T", "tags/%t/%T"}
}

// Options configure a mount. The zero value mounts every snapshot with the
// default layout.
type Options struct {
	// Filter selects the snapshots shown.
	Filter snapshot.Filter
	// PathTemplates lay out the snapshot directories (see
	// DefaultPathTemplates); empty means the defaults. The view
	// "versions" is added at the root unless a template uses that name.
	PathTemplates []string
	// TimeTemplate formats snapshot times (Go layout, in the local time zone
	// of the process); empty means DefaultTimeTemplate. It may contain "/"
	// to build nested directories.
	TimeTemplate string

	// CacheSize bounds the memory of decoded blobs and trees (bytes);
	// 0 means DefaultCacheSize. A tree larger than a quarter of it (a
	// directory of about 800,000 files with the default) moves to
	// temporary files in SpillDir and is read through a page cache of
	// a few MiB (treecache.go).
	CacheSize int64
	// SpillDir is where trees too large for the cache are kept in files
	// (removed from the directory as soon as they are open); empty means
	// os.TempDir() ($TMPDIR, or /tmp).
	SpillDir string
	// Refresh is how often the snapshot list may be re-read; 0 means
	// DefaultRefresh.
	Refresh time.Duration

	// AllowOther lets other users access the mount (FUSE allow_other).
	AllowOther bool
	// OwnerRoot shows every file as owned by root (uid and gid 0).
	OwnerRoot bool
	// NoDefaultPermissions leaves permission checks out of the kernel
	// (no default_permissions), so with AllowOther everyone reads everything.
	NoDefaultPermissions bool
	// DebugFUSE logs every FUSE request.
	DebugFUSE bool
	// FsName is the mount's source name, as shown by df and in /proc/mounts,
	// such as "dj:1a2b3c4d"; empty means "dj".
	FsName string

	// Root, when set, mounts one snapshot (or one directory of it) as the
	// root of the file system.
	Root *SubRoot

	// Remote says the repository lies across a network: the read-ahead
	// keeps more blobs in flight, to hide each request's round trip.
	Remote bool

	// Logf receives log lines, such as the cause of an EIO; nil means the
	// standard logger.
	Logf func(format string, args ...any)
}

// Errors returned by Mount, for errors.Is. Their messages say what to do.
var (
	// ErrMountpoint means the mountpoint cannot be used.
	ErrMountpoint = errors.New("unusable mountpoint")
	// ErrNoFUSE means FUSE is not available on this system.
	ErrNoFUSE = errors.New("FUSE is not available")
)
