// Package archiver makes snapshots: it walks the given paths, splits file
// contents into content-defined chunks, saves new chunks and the directory
// trees through the repository, and writes the snapshot.
//
// Work runs as a pipeline: one walker goroutine reads directories and
// metadata; file workers read and chunk files; blob workers hash, compress
// and encrypt chunks (the CPU-heavy stage, one worker per core). Chunk
// buffers come from a bounded pool, which bounds memory. A directory's tree
// is saved by its own goroutine once all its children are done, so the
// walker never waits for file contents.
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
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/chunker"
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

type future struct {
	done chan struct{}
	node *tree.Node // nil when the item was skipped
	err  error
}

func doneFuture(n *tree.Node) *future {
	f := &future{done: make(chan struct{}), node: n}
	close(f.done)
	return f
}

type blobJob struct {
	buf []byte
	res *blobResult
}

type blobResult struct {
	done  chan struct{}
	id    crypto.ID
	added bool
	err   error
}

type fileJob struct {
	path  string
	fi    os.FileInfo
	node  *tree.Node
	prev  *tree.Node
	fut   *future
	start time.Time // set by saveFile
}

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

type hardlinkEntry struct {
	done    chan struct{}
	content []crypto.ID
	ok      bool
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
	return a
}

// startWorkers starts the file and blob workers and returns a function that
// stops them after the queues drain.
func (a *archiver) startWorkers(ctx context.Context) func() {
	// The walker runs ahead of the file workers by up to prefetchAhead
	// files, and asks the kernel to start reading each one (prefetch), so
	// the disk has many requests outstanding while the workers compress.
	a.fileJobs = make(chan fileJob, prefetchAhead)
	a.blobJobs = make(chan blobJob, a.opts.BlobWorkers)
	// Chunk buffers in flight: enough to keep every blob worker busy while
	// file workers fill more. Each holds at most one chunk (max 8 MiB).
	nbuf := a.opts.BlobWorkers + a.opts.FileWorkers
	a.bufs = make(chan []byte, nbuf)
	for i := 0; i < nbuf; i++ {
		a.bufs <- nil
	}
	var fwg, bwg sync.WaitGroup
	for i := 0; i < a.opts.FileWorkers; i++ {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			ch := chunker.NewWithSizes(nil, a.repo.Gear(), a.minSize, a.avgSize, a.maxSize)
			for job := range a.fileJobs {
				a.saveFile(ctx, ch, job)
			}
		}()
	}
	for i := 0; i < a.opts.BlobWorkers; i++ {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			for job := range a.blobJobs {
				job.res.id, job.res.added, job.res.err = a.saveData(ctx, job.buf)
				a.putChunkBuf(job.buf)
				close(job.res.done)
			}
		}()
	}
	return func() {
		close(a.fileJobs)
		fwg.Wait()
		close(a.blobJobs)
		bwg.Wait()
	}
}

// dirWalkers is how many directories are walked at once besides the
// walker's own.
const dirWalkers = 8

// prefetchAhead is how many files the walker queues, and asks the kernel to
// read ahead, before the file workers take them.
const prefetchAhead = 64

// prefetchBytes is how much of a file prefetch asks the kernel to read.
const prefetchBytes = 1 << 20

// prefetch asks the kernel to start reading the beginning of a file into
// the page cache without waiting for it. On a cold cache, small files are
// otherwise read one at a time per worker, and the disk idles while the
// workers compress. Errors are ignored: the worker's own read reports them.
func prefetch(path string, size uint64) {
	if size == 0 {
		return
	}
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Open(path, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM { // O_NOATIME needs the file's owner or CAP_FOWNER
		fd, err = unix.Open(path, flags, 0)
	}
	if err != nil {
		return
	}
	_ = unix.Fadvise(fd, 0, int64(min(size, prefetchBytes)), unix.FADV_WILLNEED)
	_ = unix.Close(fd)
}

// chunkBufSize is the capacity of the pooled chunk buffers: twice the
// average chunk size holds all but a few percent of chunks.
func (a *archiver) chunkBufSize() int { return min(a.maxSize, 2*a.avgSize) }

// putChunkBuf returns a chunk buffer to the pool. One that grew for an
// unusually large chunk is dropped (and replaced when next needed), so the
// pool's memory stays at its size however large the chunks were.
func (a *archiver) putChunkBuf(b []byte) {
	if cap(b) > a.chunkBufSize() {
		b = nil
	}
	a.bufs <- b[:0]
}

func (a *archiver) saveData(ctx context.Context, data []byte) (crypto.ID, bool, error) {
	if a.opts.DryRun {
		id := a.repo.BlobID(data)
		return id, !a.repo.HasBlob(pack.DataBlob, id), nil
	}
	id, added, err := a.repo.SaveBlob(ctx, pack.DataBlob, data)
	if added {
		a.added.Add(uint64(len(data)))
		a.dataBlobs.Add(1)
		if a.opts.ItemDone != nil {
			a.newBlobs.Store(id, uint64(len(data)))
		}
	}
	return id, added, err
}

func (a *archiver) saveTree(ctx context.Context, t *tree.Tree) (crypto.ID, error) {
	b, err := t.Encode()
	if err != nil {
		return crypto.ID{}, err
	}
	// Decode it as every reader will: a tree dj cannot read back must
	// fail the backup, never become a snapshot.
	if _, err := tree.Decode(b); err != nil {
		return crypto.ID{}, fmt.Errorf("%w: %v", ErrInvalidTree, err)
	}
	if a.opts.DryRun {
		return a.repo.BlobID(b), nil
	}
	id, added, err := a.repo.SaveBlob(ctx, pack.TreeBlob, b)
	if added {
		a.treeBlobs.Add(1)
		a.added.Add(uint64(len(b)))
	}
	return id, err
}

func (a *archiver) warn(path string, err error) {
	a.errCount.Add(1)
	if a.opts.Warn != nil {
		a.opts.Warn(path, err)
	}
}

// loadPrev loads the parent's tree for a directory, or nil.
func (a *archiver) loadPrev(ctx context.Context, id *crypto.ID) *tree.Tree {
	if id == nil {
		return nil
	}
	t, err := a.repo.LoadTree(ctx, *id)
	if err != nil {
		return nil // the parent is only an optimisation
	}
	return t
}

func prevChild(prev *tree.Tree, name string) *tree.Node {
	if prev == nil {
		return nil
	}
	return prev.Find(name)
}

func subtreeOf(n *tree.Node) *crypto.ID {
	if n == nil || n.Type != tree.Dir {
		return nil
	}
	return n.Subtree
}

// saveEntry starts saving one file system entry and returns its future.
func (a *archiver) saveEntry(ctx context.Context, path string, fi os.FileInfo, prev *tree.Node) *future {
	if err := ctx.Err(); err != nil {
		f := doneFuture(nil)
		f.err = err
		return f
	}
	node, warn, err := a.node(path, fi)
	if err != nil {
		a.warn(path, err)
		return doneFuture(nil)
	}
	if warn != nil {
		a.warn(path, warn)
	}
	switch node.Type {
	case tree.Dir:
		// Directories are walked by several goroutines: on a cold cache
		// each lstat and each directory read waits for the disk, and an
		// unchanged re-backup is nothing but those waits.
		select {
		case a.dirSem <- struct{}{}:
		default:
			return a.saveDir(ctx, path, fi, node, prev)
		}
		f := &future{done: make(chan struct{})}
		go func() {
			inner := a.saveDir(ctx, path, fi, node, prev)
			<-a.dirSem
			<-inner.done
			f.node, f.err = inner.node, inner.err
			close(f.done)
		}()
		return f
	case tree.File:
		a.files.Add(1)
		if prev != nil && a.unchanged(prev, node) && a.allKnown(prev.Content) {
			node.Content = prev.Content
			a.bytes.Add(node.Size)
			a.filesUnmod.Add(1)
			if a.opts.ItemDone != nil {
				a.opts.ItemDone(Item{Path: path, Action: ItemUnchanged})
			}
			return doneFuture(node)
		}
		f := &future{done: make(chan struct{})}
		prefetch(path, node.Size)
		a.queued.Add(1)
		select {
		case a.fileJobs <- fileJob{path: path, fi: fi, node: node, prev: prev, fut: f}:
		case <-ctx.Done():
			a.queued.Add(-1)
			f.err = ctx.Err()
			close(f.done)
		}
		return f
	default:
		// Symlinks, devices, fifos and sockets are not counted as files,
		// as restic does not count them.
		return doneFuture(node)
	}
}

// node returns the metadata of the file at path; its atime is its mtime
// unless WithAtime is set.
func (a *archiver) node(path string, fi os.FileInfo) (*tree.Node, error, error) {
	n, warn, err := a.meta.Node(path, fi)
	if err == nil && !a.opts.WithAtime {
		n.AccessTime = n.ModTime
	}
	return n, warn, err
}

// unchanged reports whether a file looks unmodified since the parent
// snapshot, so its content can be reused without reading it.
func (a *archiver) unchanged(prev, cur *tree.Node) bool {
	return prev.Type == tree.File && prev.Size == cur.Size && prev.ModTime.Equal(cur.ModTime) &&
		(a.opts.IgnoreCtime || prev.ChangeTime.Equal(cur.ChangeTime)) &&
		(a.opts.IgnoreInode || prev.Inode == cur.Inode)
}

func (a *archiver) allKnown(ids []crypto.ID) bool {
	for _, id := range ids {
		if !a.repo.HasBlob(pack.DataBlob, id) {
			return false
		}
	}
	return true
}

func (a *archiver) saveDir(ctx context.Context, path string, fi os.FileInfo, node *tree.Node, prev *tree.Node) *future {
	prevTree := a.loadPrev(ctx, subtreeOf(prev))
	f, err := os.Open(path)
	var names []string
	if err == nil {
		names, err = f.Readdirnames(-1)
		f.Close()
	}
	if err != nil {
		a.warn(path, err)
	}
	sort.Strings(names)
	var tags []string
	if len(a.opts.ExcludeIfPresent) > 0 {
		tags = a.taggedBy(path)
	}
	var futs []*future
	for _, name := range names {
		if excludedByTag(tags, name) {
			continue
		}
		cpath := filepath.Join(path, name)
		cfi, err := os.Lstat(cpath)
		if err != nil {
			a.warn(cpath, err)
			continue
		}
		if a.opts.Exclude != nil && a.opts.Exclude(cpath, cfi) {
			continue
		}
		if cfi.IsDir() && a.opts.OneFileSystem {
			if st, ok := cfi.Sys().(*syscall.Stat_t); ok && !a.devices[st.Dev] {
				continue
			}
		}
		futs = append(futs, a.saveEntry(ctx, cpath, cfi, prevChild(prevTree, name)))
	}
	return a.finishDir(ctx, path, node, futs, prev != nil, subtreeOf(prev))
}

// finishDir saves the directory's tree once all children are done, in a
// goroutine of its own, and returns the directory's future.
func (a *archiver) finishDir(ctx context.Context, path string, node *tree.Node, futs []*future, hadPrev bool, prevID *crypto.ID) *future {
	f := &future{done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(f.done)
		t := &tree.Tree{Nodes: make([]*tree.Node, 0, len(futs))}
		for _, cf := range futs {
			select {
			case <-cf.done:
			case <-ctx.Done():
				f.err = ctx.Err()
				return
			}
			if cf.err != nil {
				f.err = cf.err
				return
			}
			if cf.node != nil {
				t.Nodes = append(t.Nodes, cf.node)
			}
		}
		id, err := a.saveTree(ctx, t)
		if err != nil {
			f.err = fmt.Errorf("save tree of %s: %w", path, err)
			return
		}
		node.Subtree = &id
		node.Size = 0
		if path == "/" {
			// The root is no node of any tree: not counted (as in restic).
			f.node = node
			return
		}
		a.dirDone(t, path, start, hadPrev, prevID, id)
		switch {
		case !hadPrev:
			a.dirsNew.Add(1)
		case prevID != nil && *prevID == id:
			a.dirsUnmod.Add(1)
		default:
			a.dirsChanged.Add(1)
		}
		a.dirs.Add(1)
		f.node = node
	}()
	return f
}

// saveFile reads, chunks and saves one file (run by a file worker).
func (a *archiver) saveFile(ctx context.Context, ch *chunker.Chunker, job fileJob) {
	defer close(job.fut.done)
	n := job.node
	a.current.Store(&job.path)
	job.start = time.Now()
	a.reading.Store(job.path, struct{}{})
	defer a.reading.Delete(job.path)
	defer a.queued.Add(-1)
	st, _ := job.fi.Sys().(*syscall.Stat_t)
	// Hard links: read the content once per run.
	if st != nil && st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		a.hlMu.Lock()
		e, seen := a.hardlinks[key]
		if !seen {
			e = &hardlinkEntry{done: make(chan struct{})}
			a.hardlinks[key] = e
		}
		a.hlMu.Unlock()
		if seen {
			<-e.done
			if e.ok {
				n.Content = e.content
				a.bytes.Add(n.Size)
				a.countFile(job)
				job.fut.node = n
				return
			}
		} else {
			defer func() {
				e.ok = job.fut.node != nil && job.fut.err == nil
				e.content = n.Content
				close(e.done)
			}()
		}
	}
	content, err := a.readContent(ctx, ch, job.path, n)
	if err != nil {
		if ctx.Err() != nil {
			job.fut.err = ctx.Err()
			return
		}
		a.warn(job.path, err)
		a.files.Add(^uint64(0)) // left out of the snapshot: not processed
		return
	}
	n.Content = content
	a.countFile(job)
	job.fut.node = n
}

func (a *archiver) countFile(job fileJob) {
	action := ItemNew
	if job.prev == nil {
		a.filesNew.Add(1)
	} else if sameContent(job.prev.Content, job.node.Content) {
		a.filesUnmod.Add(1)
		action = ItemUnchanged
	} else {
		a.filesChanged.Add(1)
		action = ItemModified
	}
	if a.opts.ItemDone != nil {
		a.opts.ItemDone(Item{Path: job.path, Action: action, Duration: time.Since(job.start),
			DataAdded: a.claimAdded(job.node.Content)})
	}
}

// claimAdded returns the plaintext size of the blobs among ids that this
// run added and no other finished file has claimed, and claims them.
func (a *archiver) claimAdded(ids []crypto.ID) uint64 {
	var n uint64
	for _, id := range ids {
		if v, ok := a.newBlobs.LoadAndDelete(id); ok {
			n += v.(uint64)
		}
	}
	return n
}

// dirDone reports a finished directory to ItemDone.
func (a *archiver) dirDone(t *tree.Tree, path string, start time.Time, hadPrev bool, prevID *crypto.ID, id crypto.ID) {
	if a.opts.ItemDone == nil {
		return
	}
	it := Item{Path: path, Dir: true, Action: ItemModified, Duration: time.Since(start)}
	switch {
	case !hadPrev:
		it.Action = ItemNew
	case prevID != nil && *prevID == id:
		it.Action, it.Duration = ItemUnchanged, 0
	}
	if it.Action != ItemUnchanged {
		// Encoded again only for verbose listings; saveTree keeps its bytes to itself.
		if b, err := t.Encode(); err == nil {
			it.TreeSize = uint64(len(b))
		}
	}
	a.opts.ItemDone(it)
}

func sameContent(a, b []crypto.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// errChanged is wrapped into warnings for files modified during reading.
var errChanged = errors.New("file changed while it was read")

func (a *archiver) readContent(ctx context.Context, ch *chunker.Chunker, path string, n *tree.Node) ([]crypto.ID, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NOATIME, 0)
	if err != nil && errors.Is(err, syscall.EPERM) {
		f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if dr := newDirectReader(f, int64(n.Size)); dr != nil {
		defer dr.Close()
		r = dr
	}
	ids, size, err := a.chunkStream(ctx, ch, r)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err == nil {
		if uint64(st.Size) != n.Size || st.Mtim != timespec(n.ModTime) || size != n.Size {
			n.Size = size
			a.warn(path, errChanged)
		}
	}
	return ids, nil
}

// chunkStream chunks r and saves the chunks through the blob workers,
// returning the blob ids in order and the number of bytes read.
func (a *archiver) chunkStream(ctx context.Context, ch *chunker.Chunker, r io.Reader) ([]crypto.ID, uint64, error) {
	ch.Reset(r)
	var results []*blobResult
	var size uint64
	for {
		var buf []byte
		select {
		case buf = <-a.bufs:
		case <-ctx.Done():
			waitAll(results)
			return nil, 0, ctx.Err()
		}
		if buf == nil {
			buf = make([]byte, 0, a.chunkBufSize())
		}
		chunk, err := ch.Next(buf)
		if err == io.EOF {
			a.putChunkBuf(buf)
			break
		}
		if err != nil {
			a.putChunkBuf(buf)
			waitAll(results)
			return nil, 0, err
		}
		size += uint64(len(chunk))
		a.bytes.Add(uint64(len(chunk)))
		res := &blobResult{done: make(chan struct{})}
		results = append(results, res)
		if len(chunk) < a.minSize && len(results) == 1 {
			// A small file is one chunk: save it here rather than hand it over.
			res.id, res.added, res.err = a.saveData(ctx, chunk)
			a.putChunkBuf(chunk)
			close(res.done)
			continue
		}
		select {
		case a.blobJobs <- blobJob{buf: chunk, res: res}:
		case <-ctx.Done():
			a.putChunkBuf(chunk)
			close(res.done)
			waitAll(results)
			return nil, 0, ctx.Err()
		}
	}
	waitAll(results)
	ids := make([]crypto.ID, len(results))
	for i, r := range results {
		if r.err != nil {
			return nil, 0, r.err
		}
		ids[i] = r.id
	}
	return ids, size, nil
}

func timespec(t time.Time) syscall.Timespec {
	return syscall.NsecToTimespec(t.UnixNano())
}

func waitAll(rs []*blobResult) {
	for _, r := range rs {
		<-r.done
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
		BackupStart: a.start, BackupEnd: end,
		FilesNew: a.filesNew.Load(), FilesChanged: a.filesChanged.Load(), FilesUnmodified: a.filesUnmod.Load(),
		DirsNew: a.dirsNew.Load(), DirsChanged: a.dirsChanged.Load(), DirsUnmodified: a.dirsUnmod.Load(),
		DataBlobs: a.dataBlobs.Load(), TreeBlobs: a.treeBlobs.Load(), DataAdded: a.added.Load(),
		DataAddedPacked:     a.addedPacked.Load(),
		TotalFilesProcessed: a.files.Load(), TotalBytesProcessed: a.bytes.Load(), Errors: a.errCount.Load(),
	}
}

func (a *archiver) progress() Progress {
	p := Progress{
		Elapsed: time.Since(a.start), FilesDone: a.files.Load(), DirsDone: a.dirs.Load(),
		BytesDone: a.bytes.Load(), BytesAdded: a.added.Load(), Errors: a.errCount.Load(),
		ScanDone: a.scanDone.Load(), TotalFiles: a.totalFiles.Load(), TotalBytes: a.totalBytes.Load(),
	}
	if c := a.current.Load(); c != nil {
		p.Current = *c
	}
	if q := a.queued.Load(); q > 0 {
		p.FilesDone -= min(p.FilesDone, uint64(q)) // the files done, not the files found
	}
	a.reading.Range(func(k, _ any) bool {
		p.CurrentFiles = append(p.CurrentFiles, k.(string))
		return true
	})
	sort.Strings(p.CurrentFiles)
	return p
}

func (a *archiver) startProgress() func() {
	if a.opts.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(a.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				a.opts.Progress(a.progress())
				return
			case <-t.C:
				a.opts.Progress(a.progress())
			}
		}
	}()
	return func() { close(stop); <-done }
}

// scan counts the files and bytes to back up, for the progress ETA.
func (a *archiver) scan(ctx context.Context, paths []string) {
	for _, p := range paths {
		if fi, err := os.Lstat(p); err == nil && !a.excludedLeaf(p, fi) {
			a.scanEntry(ctx, p, fi)
		}
	}
	if ctx.Err() == nil { // a scan cut short has no totals
		a.scanDone.Store(true)
	}
}

func (a *archiver) scanEntry(ctx context.Context, path string, fi os.FileInfo) {
	if ctx.Err() != nil {
		return
	}
	if !fi.IsDir() {
		if fi.Mode().IsRegular() { // counted as the backup counts files
			a.totalFiles.Add(1)
			a.totalBytes.Add(uint64(fi.Size()))
		}
		return
	}
	names, _ := readDirNames(path)
	var tags []string
	if len(a.opts.ExcludeIfPresent) > 0 {
		tags = a.taggedBy(path)
	}
	for _, name := range names {
		if excludedByTag(tags, name) {
			continue
		}
		cpath := filepath.Join(path, name)
		cfi, err := os.Lstat(cpath)
		if err != nil || (a.opts.Exclude != nil && a.opts.Exclude(cpath, cfi)) {
			continue
		}
		a.scanEntry(ctx, cpath, cfi)
	}
}
