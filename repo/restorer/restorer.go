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
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/pathmatch"
	"dj/repo/tree"
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
	// Verify reads each restored file back and checks every chunk against
	// its blob id.
	Verify bool
	// Owner restores ownership (needs root; the CLI sets it as root).
	Owner bool
	// Workers is the number of parallel file writers (default 2x
	// GOMAXPROCS).
	Workers int
	// Progress, if set, is called a few times a second and once at the
	// end. Its totals come from a quick walk over the trees first.
	Progress func(Progress)
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
	// Errors names the items that could not be restored intact.
	Errors []FileError
}

// FileError names an item that could not be restored intact.
type FileError struct {
	Path string // in the snapshot, such as "/home/ann/x"
	Err  error
}

func (e FileError) Error() string { return e.Path + ": " + e.Err.Error() }

// Errors a restore reports for hostile or broken trees.
var (
	ErrDuplicateName = errors.New("duplicate name in tree")
	ErrTreeCycle     = errors.New("directory contains itself")
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

// dirState follows a directory whose metadata is applied once everything
// below it is done.
type dirState struct {
	path    string // in the file system
	rel     string // in the snapshot
	node    *tree.Node
	parent  *dirState
	created bool         // set by the walker only
	pending atomic.Int64 // the walk of the directory, subdirectories and files in flight
}

// fileState follows a file whose content is being written.
type fileState struct {
	f         *os.File
	path, rel string
	node      *tree.Node
	dir       *dirState
	offsets   []int64 // offset of each chunk, then the end; -1 when unknown
	sparse    bool
	remaining atomic.Int32 // jobs not yet done
	failed    atomic.Bool
}

type job struct {
	f          *fileState
	start, end int // chunk range
}

// linkKey identifies the inode of a hard-linked node.
type linkKey struct {
	dev, ino uint64
	typ      tree.NodeType
}

type restorer struct {
	l     Loader
	opts  Options
	apply fsnode.ApplyOptions
	inc   pathmatch.List
	exc   pathmatch.List
	zero  func(crypto.ID) bool
	jobs  chan job

	links map[linkKey]string // walker only: first restored path of an inode

	errMu sync.Mutex
	errs  []FileError

	files, dirs, others, bytes atomic.Uint64
	total                      Progress
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
	fi, err := os.Stat(opts.Target)
	if err != nil {
		return Stats{}, fmt.Errorf("restore target: %w", err)
	}
	if !fi.IsDir() {
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
		links: map[linkKey]string{},
		jobs:  make(chan job, opts.Workers),
		zero:  func(crypto.ID) bool { return false },
	}
	if z, ok := l.(zeroChecker); ok {
		r.zero = z.IsZeroBlob
	}
	t, err := l.LoadTree(ctx, rootTree)
	if err != nil {
		return Stats{}, fmt.Errorf("restore: load tree %s: %w", rootTree.Short(), err)
	}
	if opts.Progress != nil {
		r.total = r.count(ctx, t, "/", map[crypto.ID]bool{rootTree: true}, map[linkKey]bool{})
	}

	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for j := range r.jobs {
				if ctx.Err() == nil {
					buf = r.writeChunks(ctx, j, buf)
				}
				r.jobDone(ctx, j.f)
			}
		}()
	}
	stopProgress := r.startProgress()

	top := &dirState{path: filepath.Clean(opts.Target), rel: "/", created: true}
	top.pending.Store(1)
	r.walk(ctx, top, t, map[crypto.ID]bool{rootTree: true})
	r.dirDone(ctx, top)
	close(r.jobs)
	wg.Wait()
	stopProgress()

	r.errMu.Lock()
	stats := Stats{Files: r.files.Load(), Dirs: r.dirs.Load(), Others: r.others.Load(), Bytes: r.bytes.Load(), Errors: r.errs}
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

// count walks the trees for the progress totals, skipping what the walk
// would refuse; the bytes of a hard-linked file count once.
func (r *restorer) count(ctx context.Context, t *tree.Tree, rel string, ancestors map[crypto.ID]bool, links map[linkKey]bool) Progress {
	var p Progress
	for _, n := range t.Nodes {
		if ctx.Err() != nil {
			return p
		}
		if n == nil || tree.ValidName(n.Name) != nil {
			continue
		}
		crel := path.Join(rel, n.Name)
		switch {
		case n.Type == tree.Dir && n.Subtree != nil && !ancestors[*n.Subtree] && r.descend(crel):
			sub, err := r.l.LoadTree(ctx, *n.Subtree)
			if err != nil {
				continue
			}
			ancestors[*n.Subtree] = true
			c := r.count(ctx, sub, crel, ancestors, links)
			delete(ancestors, *n.Subtree)
			p.FilesTotal += c.FilesTotal
			p.BytesTotal += c.BytesTotal
		case n.Type == tree.File && r.selected(crel):
			p.FilesTotal++
			if n.Links > 1 {
				key := linkKey{n.DeviceID, n.Inode, n.Type}
				if links[key] {
					continue
				}
				links[key] = true
			}
			p.BytesTotal += n.Size
		}
	}
	return p
}

// ensureDir creates d and its parents the first time something is restored
// inside it (with Include, directories on the way are created on demand).
func (r *restorer) ensureDir(d *dirState) error {
	if d.created {
		return nil
	}
	if d.parent != nil {
		if err := r.ensureDir(d.parent); err != nil {
			return err
		}
	}
	if err := makeDir(d.path); err != nil {
		return err
	}
	d.created = true
	return nil
}

// makeDir makes p a directory: an existing directory is kept, anything
// else there (a planted symlink, say) is removed first.
func makeDir(p string) error {
	fi, err := os.Lstat(p)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		if err := os.Remove(p); err != nil {
			return err
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		return err
	}
	return nil
}

// clearPath removes whatever is at p, not following a symlink.
func clearPath(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.RemoveAll(p)
	}
	return os.Remove(p)
}

// walk restores the entries of t into d. ancestors holds the trees on the
// way from the root, to refuse cycles.
func (r *restorer) walk(ctx context.Context, d *dirState, t *tree.Tree, ancestors map[crypto.ID]bool) {
	seen := make(map[string]struct{}, len(t.Nodes))
	for _, n := range t.Nodes {
		if ctx.Err() != nil {
			return
		}
		if n == nil {
			r.fail(d.rel, errors.New("tree has a null node"))
			continue
		}
		if err := tree.ValidName(n.Name); err != nil {
			r.fail(path.Join(d.rel, fmt.Sprintf("%q", n.Name)), err)
			continue
		}
		rel := path.Join(d.rel, n.Name)
		if _, dup := seen[n.Name]; dup {
			r.fail(rel, ErrDuplicateName)
			continue
		}
		seen[n.Name] = struct{}{}
		fsPath := filepath.Join(d.path, n.Name)

		if n.Type == tree.Dir {
			r.walkDir(ctx, d, n, fsPath, rel, ancestors)
			continue
		}
		if !r.selected(rel) {
			continue
		}
		if err := r.ensureDir(d); err != nil {
			r.fail(rel, err)
			continue
		}
		if err := clearPath(fsPath); err != nil {
			r.fail(rel, err)
			continue
		}
		if r.link(fsPath, rel, n) {
			continue
		}
		switch n.Type {
		case tree.File:
			r.startFile(ctx, d, fsPath, rel, n)
		case tree.Irregular:
			r.warn(rel, fmt.Errorf("%s file not restored", n.Type))
		default:
			if err := fsnode.CreateSpecial(fsPath, n); err != nil {
				r.fail(rel, err)
				continue
			}
			r.others.Add(1)
			r.applyMeta(fsPath, rel, n, true)
		}
	}
}

// walkDir restores directory n of d.
func (r *restorer) walkDir(ctx context.Context, d *dirState, n *tree.Node, fsPath, rel string, ancestors map[crypto.ID]bool) {
	if !r.descend(rel) {
		return
	}
	if n.Subtree == nil {
		r.fail(rel, errors.New("directory without a subtree"))
		return
	}
	if ancestors[*n.Subtree] {
		r.fail(rel, ErrTreeCycle)
		return
	}
	child := &dirState{path: fsPath, rel: rel, node: n, parent: d}
	if r.selected(rel) {
		if err := r.ensureDir(child); err != nil {
			r.fail(rel, err)
			return
		}
	}
	child.pending.Store(1)
	d.pending.Add(1)
	defer r.dirDone(ctx, child)
	t, err := r.l.LoadTree(ctx, *n.Subtree)
	if err != nil {
		if ctx.Err() == nil {
			r.fail(rel, fmt.Errorf("directory could not be read: %w", err))
		}
		return
	}
	ancestors[*n.Subtree] = true
	r.walk(ctx, child, t, ancestors)
	delete(ancestors, *n.Subtree)
}

// dirDone drops one count on d; the last one applies d's metadata and
// passes on to the parent.
func (r *restorer) dirDone(ctx context.Context, d *dirState) {
	for ; d != nil; d = d.parent {
		if d.pending.Add(-1) != 0 {
			return
		}
		if d.node != nil && d.created && ctx.Err() == nil {
			r.dirs.Add(1)
			r.applyMeta(d.path, d.rel, d.node, true)
		}
	}
}

// link makes fsPath a hard link to an earlier restored copy of the same
// inode and reports whether it did (or failed trying). The first copy of an
// inode is remembered.
func (r *restorer) link(fsPath, rel string, n *tree.Node) bool {
	if n.Links < 2 {
		return false
	}
	key := linkKey{n.DeviceID, n.Inode, n.Type}
	first, ok := r.links[key]
	if !ok {
		r.links[key] = fsPath
		return false
	}
	// link(2) never follows a symlink, and first is a path this restore
	// created inside the target.
	if err := os.Link(first, fsPath); err != nil {
		r.fail(rel, fmt.Errorf("hard link: %w", err))
		return true
	}
	if n.Type == tree.File {
		r.files.Add(1)
	} else {
		r.others.Add(1)
	}
	return true
}

// startFile creates the file and hands its content to the workers.
func (r *restorer) startFile(ctx context.Context, d *dirState, fsPath, rel string, n *tree.Node) {
	f, err := os.OpenFile(fsPath, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		r.fail(rel, err)
		return
	}
	fs := &fileState{f: f, path: fsPath, rel: rel, node: n, dir: d, sparse: r.opts.Sparse || n.IsSparse()}
	fs.offsets = make([]int64, len(n.Content)+1)
	var missing error
	for i, id := range n.Content {
		size, ok := r.l.BlobSize(id)
		if !ok || fs.offsets[i] < 0 {
			if missing == nil {
				missing = fmt.Errorf("chunk %d (blob %s) is not in the index", i, id.Short())
			}
			fs.offsets[i+1] = -1
			continue
		}
		fs.offsets[i+1] = fs.offsets[i] + int64(size)
	}
	end := fs.offsets[len(n.Content)]
	switch {
	case missing != nil:
		r.failFile(fs, missing)
		end = 0
		for _, off := range fs.offsets {
			end = max(end, off)
		}
	case uint64(end) != n.Size:
		// Trust the content: a hostile size must not make a huge file.
		r.failFile(fs, fmt.Errorf("content is %d bytes, the snapshot says %d", end, n.Size))
	}
	if err := f.Truncate(end); err != nil {
		r.failFile(fs, err)
	}
	njobs := (len(n.Content) + chunksPerJob - 1) / chunksPerJob
	d.pending.Add(1)
	fs.remaining.Store(int32(njobs) + 1) // +1 until all jobs are queued
	for i := 0; i < len(n.Content); i += chunksPerJob {
		j := job{f: fs, start: i, end: min(i+chunksPerJob, len(n.Content))}
		select {
		case r.jobs <- j:
		case <-ctx.Done():
			r.jobDone(ctx, fs)
		}
	}
	r.jobDone(ctx, fs)
}

// writeChunks writes one range of a file's chunks.
func (r *restorer) writeChunks(ctx context.Context, j job, buf []byte) []byte {
	fs := j.f
	for i := j.start; i < j.end; i++ {
		if ctx.Err() != nil {
			return buf
		}
		off, next := fs.offsets[i], fs.offsets[i+1]
		if off < 0 || next < 0 {
			continue // reported by startFile
		}
		id := fs.node.Content[i]
		if fs.sparse && r.zero(id) {
			r.bytes.Add(uint64(next - off))
			continue
		}
		b, err := r.l.LoadBlob(ctx, id, buf)
		if err != nil {
			if ctx.Err() == nil {
				r.failFile(fs, fmt.Errorf("chunk %d at offset %d: %w", i, off, err))
			}
			continue
		}
		buf = b
		if int64(len(b)) != next-off {
			r.failFile(fs, fmt.Errorf("chunk %d at offset %d: %d bytes, the index says %d", i, off, len(b), next-off))
			continue
		}
		if err := writeAt(fs.f, b, off, fs.sparse); err != nil {
			r.failFile(fs, err)
			return buf
		}
		r.bytes.Add(uint64(len(b)))
	}
	return buf
}

// writeAt writes b at off. With sparse set it skips the all-zero blocks
// (aligned to the file offset), which stay holes since the file was
// truncated to its size, empty, before.
func writeAt(f *os.File, b []byte, off int64, sparse bool) error {
	if !sparse {
		_, err := f.WriteAt(b, off)
		return err
	}
	start := -1 // of the current run of data blocks
	for i := 0; i < len(b); {
		end := min(len(b), i+holeBlock-int((off+int64(i))%holeBlock))
		if allZero(b[i:end]) {
			if start >= 0 {
				if _, err := f.WriteAt(b[start:i], off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i = end
	}
	if start >= 0 {
		_, err := f.WriteAt(b[start:], off+int64(start))
		return err
	}
	return nil
}

// zeroPage is compared against, never written.
var zeroPage [holeBlock]byte

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func (r *restorer) failFile(fs *fileState, err error) {
	if !fs.failed.Swap(true) {
		r.fail(fs.rel, err)
	}
}

// jobDone drops one count on fs; the last one finishes the file: verify,
// close, metadata, and the count on its directory.
func (r *restorer) jobDone(ctx context.Context, fs *fileState) {
	if fs.remaining.Add(-1) != 0 {
		return
	}
	if ctx.Err() != nil {
		fs.f.Close()
		r.dirDone(ctx, fs.dir)
		return
	}
	if r.opts.Verify && !fs.failed.Load() {
		if err := r.verify(fs); err != nil {
			r.failFile(fs, fmt.Errorf("verify: %w", err))
		}
	}
	if err := fs.f.Close(); err != nil {
		r.failFile(fs, err)
	}
	r.files.Add(1)
	r.applyMeta(fs.path, fs.rel, fs.node, !fs.failed.Load())
	r.dirDone(ctx, fs.dir)
}

// verify reads the restored file back and checks every chunk.
func (r *restorer) verify(fs *fileState) error {
	var buf []byte
	for i, id := range fs.node.Content {
		off, size := fs.offsets[i], fs.offsets[i+1]-fs.offsets[i]
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := fs.f.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read chunk %d at offset %d: %w", i, off, err)
		}
		if r.l.BlobID(buf) != id {
			return fmt.Errorf("chunk %d at offset %d differs from the snapshot", i, off)
		}
	}
	fi, err := fs.f.Stat()
	if err != nil {
		return err
	}
	if end := fs.offsets[len(fs.node.Content)]; fi.Size() != end {
		return fmt.Errorf("file is %d bytes, the snapshot says %d", fi.Size(), end)
	}
	return nil
}

// applyMeta sets the metadata of n on p; without times the modification
// time stays that of the restore (for damaged files).
func (r *restorer) applyMeta(p, rel string, n *tree.Node, times bool) {
	if !times {
		c := *n
		c.ModTime = time.Now()
		c.AccessTime = c.ModTime
		n = &c
	}
	warn, err := fsnode.Apply(p, n, r.apply)
	if warn != nil {
		r.warn(rel, warn)
	}
	if err != nil {
		r.fail(rel, fmt.Errorf("metadata: %w", err))
	}
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
		p.FilesDone, p.BytesDone = r.files.Load(), r.bytes.Load()
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
