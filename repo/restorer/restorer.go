// Package restorer writes snapshot trees back to the file system with all
// their metadata (Restore), and streams single files or directories as tar
// (WriteFile, WriteTar; the dump command).
//
// Safety: Restore never writes outside its target, whatever the trees say.
// Every name is validated again (tree.ValidName), a tree with a duplicate
// name or a subtree that is its own ancestor is refused, whatever is in the
// way of a new entry is removed first (so a planted symlink is replaced, and
// an existing file is never written in place, which might change a hard
// link to a file outside the target), files are created with O_EXCL and
// O_NOFOLLOW, and the walk never descends through a symlink. The guarantee
// assumes nobody else changes the target directory during the restore.
//
// Order: the walker creates directories, files, special files and hard
// links in tree order and hands file contents to parallel workers. A file
// is cut into jobs of a few chunks, so a large file is written by several
// workers at once, each with pwrite at the chunk's offset; memory is bounded
// by one chunk buffer per worker and a short queue. A file gets its
// metadata right after its content, a directory once everything below it
// is done, so directory times stay right.
//
// Damaged files: when a blob of a file cannot be loaded (missing, corrupt),
// or --verify finds a difference, the file is named in Stats.Errors and
// through Options.Warn, and every other file is still restored. The
// partial file is left in place, with zeros (holes) where data is missing,
// so what could be read is not lost; it gets its owner and mode but not its
// times, so its modification time is the time of the restore and marks it
// as not the original.
package restorer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/pathmatch"
	"dj/repo/tree"
	"dj/repo/walk"
)

// Loader is what the restorer needs from a repository.
type Loader interface {
	// LoadTree returns a decoded, validated tree.
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	// LoadBlob returns the plaintext of a data blob after checking its id;
	// buf may be used for the result.
	LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error)
	// BlobSize returns the plaintext length of a data blob from the index.
	BlobSize(id crypto.ID) (int, bool)
	// BlobID returns the keyed blob id of plaintext (for Verify).
	BlobID(plain []byte) crypto.ID
}

// batchLoader is implemented by loaders that read many blobs with few
// requests (the repository reads neighbours in a pack at once): fn gets
// each blob's plaintext, valid only during the call, once per position in
// ids.
type batchLoader interface {
	LoadBlobs(ctx context.Context, ids []crypto.ID, fn func(i int, plain []byte, err error)) error
}

// zeroChecker is implemented by loaders that recognize all-zero blobs from
// the index alone, without loading them (the repository does).
type zeroChecker interface {
	IsZeroBlob(id crypto.ID) bool
}

// Options tune a restore.
type Options struct {
	// Target is the directory the tree is restored into; it must exist.
	Target string
	// Include and Exclude are path patterns as restic's (package
	// pathmatch), matched against paths relative to the restored tree's
	// root such as "/home/ann/docs". A pattern that matches a directory
	// includes or excludes everything below it. Without Include,
	// everything not excluded is restored.
	Include, Exclude []string
	// InsensitiveInclude and InsensitiveExclude are like Include and
	// Exclude but ignore case (restic's --iinclude and --iexclude); they
	// add to them.
	InsensitiveInclude, InsensitiveExclude []string
	// Sparse writes every all-zero block as a hole; without it only files
	// that were sparse when backed up (tree.Node.IsSparse) get holes.
	Sparse bool
	// Delete makes the target's directories hold what the snapshot's do
	// and no more (restic's --delete): an entry of a restored directory
	// that the snapshot does not have is removed, with everything below
	// it, when the include and exclude patterns select its path; and a
	// file, symlink or special file of the snapshot replaces a non-empty
	// directory in its way. Without Delete nothing the target holds is
	// removed but what a restored item replaces: a file, a symlink, an
	// empty directory.
	Delete bool
	// Overwrite says what happens to a file, symlink or special file of
	// the snapshot whose path the target has taken already (default:
	// replace it). With OverwriteNever a file in the way of a directory
	// stays too, and the directory's content is not restored.
	Overwrite Overwrite
	// DryRun writes and removes nothing: the restore decides as it would
	// (what it replaces, keeps, deletes, and the errors of entries in the
	// way) and Stats count it; file contents are not read, so damaged data
	// is not found. Deleted is told what Delete would remove.
	DryRun bool
	// Deleted, if set, is told the path in the snapshot's terms (such as
	// "/home/ann/old") of each entry Delete removed.
	Deleted func(path string)
	// Verify reads each restored file back and checks every chunk against
	// its blob id.
	Verify bool
	// Owner restores ownership (needs root; the CLI sets it as root).
	Owner bool
	// Workers is the number of parallel file writers (default 2x
	// GOMAXPROCS).
	Workers int
	// BatchBytes, when positive and the loader can read many blobs at
	// once, lets a worker take the jobs waiting in the queue with its own,
	// up to about this many bytes, and load their chunks together: across
	// a network the chunks of small files, neighbours in their packs,
	// then cost one request per run instead of one each.
	BatchBytes int
	// Progress, if set, is called a few times a second and once at the
	// end. Its totals come from a quick walk over the trees first.
	Progress func(Progress)
	// AsFile, when set, is asked about every selected directory: when it
	// returns a writer, the directory is restored as one file of its name
	// that the writer fills (a stored Proxmox VE dump, NAME.vma, becomes
	// the VMA file again).
	AsFile func(n *tree.Node) func(ctx context.Context, w io.Writer) error
	// Warn, if set, is told about problems with single items: damaged
	// files, metadata that could not be set. It may be called from several
	// goroutines at once.
	Warn func(path string, err error)
}

// Progress reports a restore in flight.
type Progress struct {
	FilesDone, FilesTotal uint64
	BytesDone, BytesTotal uint64
}

// Stats sums up a restore.
type Stats struct {
	// Files counts regular files including hard links, Dirs the
	// directories restored, Others symlinks and special files.
	Files, Dirs, Others uint64
	// Bytes is the content written, holes included.
	Bytes uint64
	// Skipped counts the entries Options.Overwrite left as they were,
	// SkippedBytes the size of those that are files.
	Skipped, SkippedBytes uint64
	// Deleted counts the entries Options.Delete removed from the target
	// (a directory with all it held counts once).
	Deleted uint64
	// Errors names the items that could not be restored intact.
	Errors []FileError
}

// FileError names an item that could not be restored intact.
type FileError struct {
	Path string // in the snapshot, such as "/home/ann/x"
	Err  error
}

func (e FileError) Error() string { return e.Path + ": " + e.Err.Error() }

// Errors a restore reports for hostile or broken trees, and for a target
// whose entries it leaves in place.
var (
	ErrDuplicateName = errors.New("duplicate name in tree")
	ErrTreeCycle     = errors.New("directory contains itself")
	// ErrDirInTheWay: the target holds a non-empty directory where the
	// snapshot has a file, a symlink or a special file. The directory is
	// left as it is unless Options.Delete.
	ErrDirInTheWay = errors.New("a non-empty directory is in the way; left as it is (restore with --delete to replace it)")
	// ErrFileInTheWay: with OverwriteNever, the target holds something
	// other than a directory where the snapshot has a directory.
	ErrFileInTheWay = errors.New("something other than a directory is in the way; left as it is (--overwrite never)")
)

const (
	// chunksPerJob is how many chunks one worker writes before the rest of
	// a big file can go to another worker.
	chunksPerJob = 8
	// holeBlock is the granularity of holes in sparse files.
	holeBlock = 4096
	// progressInterval is the time between progress reports.
	progressInterval = 250 * time.Millisecond
)

type restorer struct {
	l     Loader
	opts  Options
	apply fsnode.ApplyOptions
	inc   pathmatch.List
	exc   pathmatch.List
	zero  func(crypto.ID) bool
	jobs  chan job
	// batcher is the loader's batch reads when Options.BatchBytes asks
	// for them, else nil.
	batcher batchLoader

	links map[tree.LinkKey]string // walker only: first restored path of an inode

	errMu sync.Mutex
	errs  []FileError

	files, dirs, others, bytes, deleted atomic.Uint64
	skipped, skippedBytes               atomic.Uint64
	total                               Progress
}

// compilePatterns compiles patterns that match case, then patterns that
// ignore it, into one list.
func compilePatterns(exact, fold []string) (pathmatch.List, error) {
	l, err := pathmatch.CompileList(exact, false)
	if err != nil {
		return nil, err
	}
	lf, err := pathmatch.CompileList(fold, true)
	if err != nil {
		return nil, err
	}
	return append(l, lf...), nil
}

// Restore restores the tree rootTree so that its entries appear under
// opts.Target. Problems with single items are collected in Stats.Errors
// (and reported via Warn) and do not stop the restore; the returned error
// is for the restore as a whole: a bad target or pattern, cancellation.
func Restore(ctx context.Context, l Loader, rootTree crypto.ID, opts Options) (Stats, error) {
	// A dry run may name a target the restore would make (the CLI makes
	// it): everything below is then new.
	fi, err := os.Stat(opts.Target)
	targetMissing := opts.DryRun && errors.Is(err, os.ErrNotExist)
	if err != nil && !targetMissing {
		return Stats{}, fmt.Errorf("restore target: %w", err)
	}
	if !targetMissing && !fi.IsDir() {
		return Stats{}, fmt.Errorf("restore target %s is not a directory", opts.Target)
	}
	inc, err := compilePatterns(opts.Include, opts.InsensitiveInclude)
	if err != nil {
		return Stats{}, fmt.Errorf("include: %w", err)
	}
	exc, err := compilePatterns(opts.Exclude, opts.InsensitiveExclude)
	if err != nil {
		return Stats{}, fmt.Errorf("exclude: %w", err)
	}
	if opts.Workers <= 0 {
		opts.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	r := &restorer{
		l: l, opts: opts, inc: inc, exc: exc,
		apply: fsnode.ApplyOptions{Owner: opts.Owner},
		links: map[tree.LinkKey]string{},
		jobs:  make(chan job, opts.Workers),
		zero:  func(crypto.ID) bool { return false },
	}
	if z, ok := l.(zeroChecker); ok {
		r.zero = z.IsZeroBlob
	}
	if b, ok := l.(batchLoader); ok && opts.BatchBytes > 0 {
		r.batcher = b
	}
	t, err := walk.Load(ctx, l, rootTree)
	if err != nil {
		return Stats{}, fmt.Errorf("restore: load tree %s: %w", rootTree.Short(), err)
	}
	if opts.Progress != nil {
		r.total = r.count(ctx, t, "/", map[crypto.ID]bool{rootTree: true}, map[tree.LinkKey]bool{})
	}

	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			var batch []job
			for j := range r.jobs {
				batch = r.gather(append(batch[:0], j))
				if ctx.Err() == nil {
					if r.batcher == nil {
						// Without batching, gather takes no
						// more jobs.
						buf = r.writeChunks(ctx, j, buf)
					} else {
						r.writeBatch(ctx, batch)
					}
				}
				for _, b := range batch {
					r.jobDone(ctx, b.f)
				}
			}
		}()
	}
	stopProgress := r.startProgress()

	top := &dirState{path: filepath.Clean(opts.Target), rel: "/", created: true, planned: targetMissing}
	top.pending.Store(1)
	r.walk(ctx, top, t, map[crypto.ID]bool{rootTree: true})
	r.dirDone(ctx, top)
	close(r.jobs)
	wg.Wait()
	stopProgress()

	r.errMu.Lock()
	stats := Stats{Files: r.files.Load(), Dirs: r.dirs.Load(), Others: r.others.Load(), Bytes: r.bytes.Load(), Deleted: r.deleted.Load(),
		Skipped: r.skipped.Load(), SkippedBytes: r.skippedBytes.Load(), Errors: r.errs}
	r.errMu.Unlock()
	if err := ctx.Err(); err != nil {
		return stats, fmt.Errorf("restore: %w", err)
	}
	return stats, nil
}

// fail records an item that could not be restored intact.
func (r *restorer) fail(rel string, err error) {
	r.errMu.Lock()
	r.errs = append(r.errs, FileError{Path: rel, Err: err})
	r.errMu.Unlock()
	r.warn(rel, err)
}

func (r *restorer) warn(rel string, err error) {
	if r.opts.Warn != nil {
		r.opts.Warn(rel, err)
	}
}

// selected reports whether rel is restored with everything below it.
func (r *restorer) selected(rel string) bool {
	if r.exc.Match(rel) {
		return false
	}
	return len(r.inc) == 0 || r.inc.Match(rel)
}

// descend reports whether something at or below directory rel may be
// restored.
func (r *restorer) descend(rel string) bool {
	if r.exc.Match(rel) {
		return false
	}
	return len(r.inc) == 0 || r.inc.Match(rel) || r.inc.MatchChildren(rel)
}

// startProgress reports progress until the returned function is called,
// which reports once more.
func (r *restorer) startProgress() func() {
	if r.opts.Progress == nil {
		return func() {}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	report := func() {
		p := r.total
		p.FilesDone, p.BytesDone = r.files.Load()+r.skipped.Load(), r.bytes.Load()+r.skippedBytes.Load()
		r.opts.Progress(p)
	}
	go func() {
		defer close(done)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		report()
	}
}
