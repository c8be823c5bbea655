// Package archiver makes snapshots: it walks the given paths, splits file
// contents into content-defined chunks, saves new chunks and the directory
// trees through the repository, and writes the snapshot.
//
// Work runs as a pipeline of stages, none of which waits for another's
// I/O: one walker goroutine reads directories and metadata (tree.go); file
// workers read and chunk files (file.go); blob workers hash, compress and
// encrypt chunks (the CPU-heavy stage, one worker per core) and hand the
// sealed blobs to the repository's packer, whose uploads are a stage of
// their own with a bounded queue (pipeline.go, repo/packer.go). Chunk
// buffers come from a bounded pool, which bounds memory. A directory's tree
// is saved by its own goroutine once all its children are done, so the
// walker never waits for file contents. scan.go counts the files ahead of
// the backup and reports progress; this file holds the entry point, the
// options and the end of a backup (index, snapshot).
//
// Reading is arranged so that the disk is busy while the cores compress:
// the walker queues files well ahead of the workers and asks the kernel to
// start reading each (prefetch), and large files that are not cached are
// read with O_DIRECT one block ahead (direct.go), which also spares the
// kernel's copy and the user's page cache.
package archiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// Repository is what the archiver needs from a repository.
type Repository interface {
	SaveBlob(ctx context.Context, t pack.BlobType, plain []byte) (crypto.ID, bool, error)
	BlobID(plain []byte) crypto.ID
	HasBlob(t pack.BlobType, id crypto.ID) bool
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	// FlushPacks uploads the packs being filled and returns the packs
	// written since the last flush; SaveIndexFile then records them.
	FlushPacks(ctx context.Context) ([]index.FilePack, error)
	SaveIndexFile(ctx context.Context, f *index.File) (crypto.ID, error)
	SaveSnapshot(ctx context.Context, sn *snapshot.Snapshot) error
	Gear() *[256]uint64
	ChunkerSizes() (min, avg, max int)
}

// Options configure a backup run.
type Options struct {
	// Exclude reports whether a path (lstat'ed as fi) is left out. It is
	// asked about every entry and about the given paths themselves, never
	// about the directories on the way to a given path.
	Exclude func(path string, fi os.FileInfo) bool
	// ExcludeIfPresent leaves out the content of every directory that
	// holds one of these tag files, except the tag file itself (restic's
	// --exclude-if-present; --exclude-caches is CacheDirTag).
	ExcludeIfPresent []TagFile
	// OneFileSystem keeps the walk on the file systems of the given paths.
	OneFileSystem bool
	// Parent is the snapshot whose unchanged files are reused without
	// reading them (same type, size, mtime, ctime and inode).
	Parent *snapshot.Snapshot
	// IgnoreInode and IgnoreCtime leave the inode number and the change
	// time out of the comparison with the parent: for file systems whose
	// inode numbers or ctimes are not stable (network and FUSE mounts).
	IgnoreInode, IgnoreCtime bool
	// SkipIfUnchanged writes no snapshot when the new tree equals the
	// parent's; Backup then returns the unsaved snapshot, whose ID is null.
	SkipIfUnchanged bool
	// WithAtime stores the access times of files and directories. Without
	// it a node's atime is its mtime (restic's default), so that reading a
	// directory, the backup's own reads included, does not change its tree.
	WithAtime bool
	// Snapshot metadata.
	Hostname, Username string
	UID, GID           uint32
	Tags               []string
	Time               time.Time
	ProgramVersion     string
	// DryRun reads and chunks everything but saves nothing.
	DryRun bool
	// Progress is called about every ProgressInterval and once at the end.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// Scan counts files and bytes ahead of the backup, for an ETA.
	Scan bool
	// Warn is called for every file that could not be read fully; the
	// snapshot is still written.
	Warn func(path string, err error)
	// FileWorkers and BlobWorkers size the pipeline (defaults: 2x and 1x
	// GOMAXPROCS). FileWorkers is how many files are read at once
	// (restic's --read-concurrency); each of them also chunks what it reads.
	FileWorkers, BlobWorkers int
	// FixedChunks, when set, says which files (by path, lstat'ed as fi)
	// are cut into fixed-size chunks of FixedChunkSize bytes instead of
	// content-defined ones: disk images, whose unchanged regions then stay
	// whole chunks at fixed places (--chunker-files). The tree records the
	// size (tree.Node.FixedChunk), and a file whose node in the parent
	// snapshot has one keeps it, with or without this option.
	FixedChunks func(path string, fi os.FileInfo) bool
	// FixedChunkSize is the size of fixed chunks (chunker.FixedSize when 0).
	FixedChunkSize int
	// ReadSpecial backs up the contents of block devices instead of their
	// nodes (borg's --read-special): each becomes a file of the device's
	// size in fixed-size chunks, read on every backup (a device's times
	// do not change with its content), and whose unchanged chunks cost
	// only their hashing.
	ReadSpecial bool
	// ItemDone, when set, is called for every regular file and directory
	// the backup has finished (from many goroutines at once), for verbose
	// listings. Other nodes (symlinks, devices) are not reported.
	ItemDone func(Item)
}

// ItemAction says what a backup did with a file or directory.
type ItemAction int

// The actions of an Item.
const (
	ItemNew       ItemAction = iota + 1 // not in the parent snapshot
	ItemModified                        // in the parent snapshot, with other content
	ItemUnchanged                       // in the parent snapshot, with the same content
)

// Item reports one file or directory a backup has finished (Options.ItemDone).
type Item struct {
	Path   string
	Dir    bool
	Action ItemAction
	// Duration is the time spent saving the item: reading a file, or a
	// directory's children and its tree (0 for files reused from the parent).
	Duration time.Duration
	// DataAdded is the plaintext size of the data blobs the file added to
	// the repository (a blob shared by files in flight at once counts for
	// the first of them to finish).
	DataAdded uint64
	// TreeSize is the size of a directory's encoded tree (0 when the
	// directory is unchanged).
	TreeSize uint64
}

// Progress reports a backup in flight.
type Progress struct {
	Elapsed             time.Duration
	FilesDone, DirsDone uint64
	BytesDone           uint64
	BytesAdded          uint64
	TotalFiles          uint64 // from the scan; 0 until it has finished
	TotalBytes          uint64
	ScanDone            bool
	Errors              uint64
	Current             string
	// CurrentFiles are the files being read now, sorted.
	CurrentFiles []string
}

// ErrIncomplete is returned (wrapped) with a valid snapshot when some files
// could not be read.
var ErrIncomplete = errors.New("backup incomplete: some files could not be read")

// ErrInvalidTree is returned (wrapped) when the backup made a tree that
// the reader's decoder refuses; no such tree and no snapshot is written.
var ErrInvalidTree = errors.New("refusing to write a tree that cannot be read back")

type archiver struct {
	repo Repository
	opts Options
	meta *fsnode.Reader
	// dirSem bounds the goroutines walking directories besides the
	// walker itself.
	dirSem chan struct{}
	start  time.Time

	minSize, avgSize, maxSize int

	fileJobs chan fileJob
	blobJobs chan blobJob
	bufs     chan []byte
	// bufCap is the capacity of the pooled chunk buffers.
	bufCap int
	// zeroIDs holds the blob id of a chunk of zeros, by length.
	zeroIDs sync.Map // int -> crypto.ID

	devices map[uint64]bool // with OneFileSystem: the allowed st_dev values

	hlMu      sync.Mutex
	hardlinks map[[2]uint64]*hardlinkEntry

	files, dirs, bytes, added, errCount atomic.Uint64
	addedPacked                         atomic.Uint64
	filesNew, filesChanged, filesUnmod  atomic.Uint64
	dirsNew, dirsChanged, dirsUnmod     atomic.Uint64
	dataBlobs, treeBlobs                atomic.Uint64
	totalFiles, totalBytes              atomic.Uint64
	scanDone                            atomic.Bool
	current                             atomic.Pointer[string]

	// reading holds the paths of the files being read now, queued counts
	// the files queued for or being read (for Progress).
	reading sync.Map
	queued  atomic.Int64
	// newBlobs holds, with ItemDone set, the data blobs this run added and
	// no finished file has claimed yet, with their plaintext sizes.
	newBlobs sync.Map // crypto.ID -> uint64
}

// Backup backs up paths and returns the saved snapshot. When some files
// could not be read the snapshot is still saved and the error wraps
// ErrIncomplete.
func Backup(ctx context.Context, repo Repository, paths []string, opts Options) (*snapshot.Snapshot, error) {
	if len(paths) == 0 {
		return nil, errors.New("no paths to back up")
	}
	abs, err := CleanPaths(paths)
	if err != nil {
		return nil, err
	}
	a := newArchiver(repo, opts)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := a.startWorkers(ctx)

	if opts.OneFileSystem {
		for _, p := range abs {
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err == nil {
				a.devices[st.Dev] = true
			}
		}
	}
	if opts.Scan {
		go a.scan(ctx, outermost(abs))
	}
	stopProgress := a.startProgress()

	var parentRoot *crypto.ID
	if opts.Parent != nil {
		id := opts.Parent.Tree
		parentRoot = &id
	}
	rootFut := a.saveRoot(ctx, buildVirtual(abs), parentRoot)
	<-rootFut.done
	stop()
	stopProgress()
	if rootFut.err != nil {
		return nil, rootFut.err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return a.finish(ctx, abs, *rootFut.node.Subtree)
}

func newArchiver(repo Repository, opts Options) *archiver {
	if opts.FileWorkers <= 0 {
		opts.FileWorkers = 2 * runtime.GOMAXPROCS(0)
	}
	if opts.BlobWorkers <= 0 {
		opts.BlobWorkers = runtime.GOMAXPROCS(0)
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = time.Second
	}
	if opts.Time.IsZero() {
		opts.Time = time.Now()
	}
	a := &archiver{repo: repo, opts: opts, meta: fsnode.NewReader(), start: time.Now(), dirSem: make(chan struct{}, dirWalkers),
		devices: map[uint64]bool{}, hardlinks: map[[2]uint64]*hardlinkEntry{}}
	a.minSize, a.avgSize, a.maxSize = repo.ChunkerSizes()
	a.bufCap = min(a.maxSize, 2*a.avgSize)
	if opts.FixedChunks != nil || opts.ReadSpecial {
		a.bufCap = max(a.bufCap, a.fixedSize())
	}
	return a
}

func (a *archiver) warn(path string, err error) {
	a.errCount.Add(1)
	if a.opts.Warn != nil {
		a.opts.Warn(path, err)
	}
}

// flush uploads the packs being filled, writes the index of the packs
// this backup wrote and counts their blobs' stored bytes.
func (a *archiver) flush(ctx context.Context) error {
	written, err := a.repo.FlushPacks(ctx)
	if err != nil || len(written) == 0 {
		return err
	}
	for _, p := range written {
		for _, b := range p.Blobs {
			a.addedPacked.Add(uint64(b.Length))
		}
	}
	_, err = a.repo.SaveIndexFile(ctx, &index.File{Packs: written})
	return err
}

// finish flushes packs and index and writes the snapshot.
func (a *archiver) finish(ctx context.Context, paths []string, root crypto.ID) (*snapshot.Snapshot, error) {
	if !a.opts.DryRun {
		if err := a.flush(ctx); err != nil {
			return nil, err
		}
	}
	end := time.Now()
	sn := &snapshot.Snapshot{
		Time: a.opts.Time, Tree: root, Paths: paths, Hostname: a.opts.Hostname, Username: a.opts.Username,
		UID: a.opts.UID, GID: a.opts.GID, Tags: a.opts.Tags, ProgramVersion: a.opts.ProgramVersion,
		Summary: a.summary(end),
	}
	if a.opts.Parent != nil {
		id := a.opts.Parent.ID
		sn.Parent = &id
	}
	skip := a.opts.SkipIfUnchanged && a.opts.Parent != nil && a.opts.Parent.Tree == root
	if !a.opts.DryRun && !skip {
		if err := a.repo.SaveSnapshot(ctx, sn); err != nil {
			return nil, err
		}
	}
	if a.errCount.Load() > 0 {
		return sn, fmt.Errorf("%w (%d errors)", ErrIncomplete, a.errCount.Load())
	}
	return sn, nil
}

func (a *archiver) summary(end time.Time) *snapshot.Summary {
	return &snapshot.Summary{
		BackupStart: a.start, BackupEnd: end, Errors: a.errCount.Load(),
		Counts: snapshot.Counts{FilesNew: a.filesNew.Load(), FilesChanged: a.filesChanged.Load(), FilesUnmodified: a.filesUnmod.Load(),
			DirsNew: a.dirsNew.Load(), DirsChanged: a.dirsChanged.Load(), DirsUnmodified: a.dirsUnmod.Load(),
			DataBlobs: a.dataBlobs.Load(), TreeBlobs: a.treeBlobs.Load(), DataAdded: a.added.Load(),
			DataAddedPacked:     a.addedPacked.Load(),
			TotalFilesProcessed: a.files.Load(), TotalBytesProcessed: a.bytes.Load()},
	}
}
