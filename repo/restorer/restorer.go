// Package restorer writes snapshot trees back to the file system with all
// their metadata, and streams single files or directories as tar (dump).
//
// Restore never writes outside its target, whatever the trees say: every
// name is validated again, entries are created with O_NOFOLLOW / O_EXCL
// after removing what was there, and the walk never descends through a
// symlink. File contents are written in parallel, several workers per file
// for large files; directory metadata is applied once everything below a
// directory is done, so restored mtimes stay right.
package restorer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/pathmatch"
	"dj/repo/tree"
)

// Loader is what the restorer needs from a repository.
type Loader interface {
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	// LoadBlob returns the verified plaintext of a data blob; buf may be
	// used for the result.
	LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error)
	BlobSize(id crypto.ID) (int, bool)
	BlobID(plain []byte) crypto.ID
}

// zeroChecker is implemented by loaders that know all-zero blobs from the
// index alone (the repository does).
type zeroChecker interface {
	IsZeroBlob(id crypto.ID) bool
}

// Options tune a restore.
type Options struct {
	// Target is the directory the tree is restored into; it must exist.
	Target string
	// Include and Exclude are path patterns (package pathmatch) matched
	// against paths relative to the restored tree's root, such as
	// "/home/ann/docs".
	Include, Exclude []string
	// Sparse writes every all-zero chunk as a hole; without it only files
	// that were sparse when backed up get holes.
	Sparse bool
	// Verify re-reads each restored file and checks every chunk.
	Verify bool
	// Owner restores ownership (needs root).
	Owner bool
	// Workers is the number of parallel writers (default 2x GOMAXPROCS).
	Workers int
	// Progress is called a few times a second and once at the end.
	Progress func(Progress)
	// Warn reports problems with single items.
	Warn func(path string, err error)
}

// Progress reports a restore in flight.
type Progress struct {
	FilesDone, FilesTotal uint64
	BytesDone, BytesTotal uint64
}

// Stats sums up a restore.
type Stats struct {
	Files, Dirs, Others, Bytes uint64
	Errors                     []FileError
}

// FileError names an item that could not be restored intact.
type FileError struct {
	Path string
	Err  error
}

// chunksPerJob is how many chunks one worker writes before another can take
// over the rest of a big file.
const chunksPerJob = 8

type fileState struct {
	path      string
	rel       string
	node      *tree.Node
	offsets   []int64
	remaining atomic.Int32
	failed    atomic.Bool
	done      func()
}

type job struct {
	f          *fileState
	start, end int // chunk range
}

type dirState struct {
	path    string // in the file system
	rel     string // in the snapshot
	node    *tree.Node
	parent  *dirState
	created bool
	pending sync.WaitGroup
}

type restorer struct {
	l       Loader
	opts    Options
	inc     pathmatch.List
	exc     pathmatch.List
	zero    func(crypto.ID) bool
	jobs    chan job
	hlinks  map[[2]uint64]string
	errMu   sync.Mutex
	errs    []FileError
	files   atomic.Uint64
	dirs    atomic.Uint64
	others  atomic.Uint64
	bytes   atomic.Uint64
	total   Progress
	sparse  bool
	workers int
}

// Restore restores the tree root so that its entries appear under
// opts.Target. Problems with single items are collected in Stats.Errors
// (and reported via Warn); the returned error is for the restore as a
// whole (a missing target, cancellation).
func Restore(ctx context.Context, l Loader, root crypto.ID, opts Options) (Stats, error) {
	st, err := os.Stat(opts.Target)
	if err != nil {
		return Stats{}, fmt.Errorf("restore target: %w", err)
	}
	if !st.IsDir() {
		return Stats{}, fmt.Errorf("restore target %s is not a directory", opts.Target)
	}
	inc, err := pathmatch.CompileList(opts.Include, false)
	if err != nil {
		return Stats{}, err
	}
	exc, err := pathmatch.CompileList(opts.Exclude, false)
	if err != nil {
		return Stats{}, err
	}
	if opts.Workers <= 0 {
		opts.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	r := &restorer{l: l, opts: opts, inc: inc, exc: exc, hlinks: map[[2]uint64]string{}, workers: opts.Workers}
	r.zero = func(crypto.ID) bool { return false }
	if z, ok := l.(zeroChecker); ok {
		r.zero = z.IsZeroBlob
	}
	if opts.Progress != nil {
		r.total = r.count(ctx, root, "/")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.jobs = make(chan job, opts.Workers)
	var wg sync.WaitGroup
	for i := 0; i < opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for j := range r.jobs {
				buf = r.writeChunks(ctx, j, buf)
			}
		}()
	}
	stopProgress := r.startProgress()
	top := &dirState{path: filepath.Clean(opts.Target), rel: "/", created: true}
	r.walk(ctx, top, root)
	top.pending.Wait()
	close(r.jobs)
	wg.Wait()
	stopProgress()
	stats := Stats{Files: r.files.Load(), Dirs: r.dirs.Load(), Others: r.others.Load(), Bytes: r.bytes.Load(), Errors: r.errs}
	if err := ctx.Err(); err != nil {
		return stats, err
	}
	return stats, nil
}

func (r *restorer) fail(p string, err error) {
	r.errMu.Lock()
	r.errs = append(r.errs, FileError{Path: p, Err: err})
	r.errMu.Unlock()
	if r.opts.Warn != nil {
		r.opts.Warn(p, err)
	}
}

func (r *restorer) warn(p string, err error) {
	if r.opts.Warn != nil {
		r.opts.Warn(p, err)
	}
}

func (r *restorer) selected(rel string) bool {
	if r.exc.Match(rel) {
		return false
	}
	return len(r.inc) == 0 || r.inc.Match(rel)
}

func (r *restorer) descend(rel string) bool {
	if r.exc.Match(rel) {
		return false
	}
	return len(r.inc) == 0 || r.inc.Match(rel) || r.inc.MatchChildren(rel)
}

// count pre-walks the trees for progress totals.
func (r *restorer) count(ctx context.Context, id crypto.ID, rel string) Progress {
	var p Progress
	t, err := r.l.LoadTree(ctx, id)
	if err != nil {
		return p
	}
	for _, n := range t.Nodes {
		if tree.ValidName(n.Name) != nil {
			continue
		}
		crel := path.Join(rel, n.Name)
		switch {
		case n.Type == tree.Dir && n.Subtree != nil && r.descend(crel):
			c := r.count(ctx, *n.Subtree, crel)
			p.FilesTotal += c.FilesTotal
			p.BytesTotal += c.BytesTotal
		case n.Type == tree.File && r.selected(crel):
			p.FilesTotal++
			p.BytesTotal += n.Size
		}
	}
	return p
}

// ensureDir creates d (and its parents) the first time something is
// restored inside it.
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

// makeDir creates a directory, replacing a non-directory (a planted
// symlink, say) that is in the way.
func makeDir(p string) error {
	fi, err := os.Lstat(p)
	if err == nil {
		if fi.IsDir() {
			return nil
		}
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err = os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory after creating it", p)
	}
	return nil
}

// clearPath removes whatever non-directory is at p.
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

// walk restores the entries of a tree into d. File contents go to the
// workers; d.pending counts what is still in flight below d.
func (r *restorer) walk(ctx context.Context, d *dirState, id crypto.ID) {
	t, err := r.l.LoadTree(ctx, id)
	if err != nil {
		r.fail(d.rel, fmt.Errorf("directory could not be read: %w", err))
		return
	}
	for _, n := range t.Nodes {
		if ctx.Err() != nil {
			return
		}
		if err := tree.ValidName(n.Name); err != nil {
			r.fail(path.Join(d.rel, "?"), err)
			continue
		}
		rel := path.Join(d.rel, n.Name)
		fsPath := filepath.Join(d.path, n.Name)
		switch n.Type {
		case tree.Dir:
			if n.Subtree == nil || !r.descend(rel) {
				continue
			}
			child := &dirState{path: fsPath, rel: rel, node: n, parent: d}
			if r.selected(rel) {
				if err := r.ensureDir(child); err != nil {
					r.fail(rel, err)
					continue
				}
			}
			d.pending.Add(1)
			r.walk(ctx, child, *n.Subtree)
			go func() {
				child.pending.Wait()
				if child.created {
					r.dirs.Add(1)
					r.applyMeta(child.path, child.rel, child.node)
				}
				d.pending.Done()
			}()
		case tree.File:
			if !r.selected(rel) {
				continue
			}
			if err := r.ensureDir(d); err != nil {
				r.fail(rel, err)
				continue
			}
			r.startFile(d, fsPath, rel, n)
		default:
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
			if err := createSpecial(fsPath, n); err != nil {
				r.fail(rel, err)
				continue
			}
			r.others.Add(1)
			r.applyMeta(fsPath, rel, n)
		}
	}
}

// startFile creates the file (or a hard link to an earlier copy) and hands
// its content to the workers.
func (r *restorer) startFile(d *dirState, fsPath, rel string, n *tree.Node) {
	if err := clearPath(fsPath); err != nil {
		r.fail(rel, err)
		return
	}
	if n.Links > 1 {
		key := [2]uint64{n.DeviceID, n.Inode}
		if first, ok := r.hlinks[key]; ok {
			if err := os.Link(first, fsPath); err != nil {
				r.fail(rel, fmt.Errorf("hard link: %w", err))
			} else {
				r.files.Add(1)
			}
			return
		}
		r.hlinks[key] = fsPath
	}
	f, err := os.OpenFile(fsPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		r.fail(rel, err)
		return
	}
	err = f.Truncate(int64(n.Size))
	f.Close()
	if err != nil {
		r.fail(rel, err)
		return
	}
	fs := &fileState{path: fsPath, rel: rel, node: n}
	fs.offsets = make([]int64, len(n.Content)+1)
	for i, id := range n.Content {
		size, ok := r.l.BlobSize(id)
		if !ok {
			size = -1
		}
		if size < 0 {
			fs.offsets[i+1] = -1
			continue
		}
		if fs.offsets[i] < 0 {
			fs.offsets[i+1] = -1
			continue
		}
		fs.offsets[i+1] = fs.offsets[i] + int64(size)
	}
	njobs := (len(n.Content) + chunksPerJob - 1) / chunksPerJob
	if njobs == 0 {
		r.finishFile(fs)
		return
	}
	d.pending.Add(1)
	fs.done = d.pending.Done
	fs.remaining.Store(int32(njobs))
	for i := 0; i < len(n.Content); i += chunksPerJob {
		r.jobs <- job{f: fs, start: i, end: min(i+chunksPerJob, len(n.Content))}
	}
}

// writeChunks writes one range of a file's chunks; the last job of a file
// finishes it.
func (r *restorer) writeChunks(ctx context.Context, j job, buf []byte) []byte {
	fs := j.f
	n := fs.node
	defer func() {
		if fs.remaining.Add(-1) == 0 {
			r.finishFile(fs)
			fs.done()
		}
	}()
	f, err := os.OpenFile(fs.path, os.O_WRONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		r.failFile(fs, err)
		return buf
	}
	defer f.Close()
	sparse := r.opts.Sparse || n.IsSparse()
	for i := j.start; i < j.end; i++ {
		if ctx.Err() != nil {
			return buf
		}
		id := n.Content[i]
		off := fs.offsets[i]
		if off < 0 {
			r.failFile(fs, fmt.Errorf("chunk %d (blob %s) is not in the index", i, id.Short()))
			continue
		}
		if sparse && r.zero(id) {
			size := fs.offsets[i+1] - off
			r.bytes.Add(uint64(size))
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
		r.bytes.Add(uint64(len(b)))
		if sparse {
			err = writeSparse(f, b, off)
		} else {
			_, err = f.WriteAt(b, off)
		}
		if err != nil {
			r.failFile(fs, err)
			return buf
		}
	}
	return buf
}

func (r *restorer) failFile(fs *fileState, err error) {
	if fs.failed.Swap(true) {
		return
	}
	r.fail(fs.rel, err)
}

// holeBlock is the granularity at which zeros become holes: the file
// system block size on every common Linux file system.
const holeBlock = 4096

// writeSparse writes b at off, leaving aligned all-zero blocks unwritten
// (they read back as zeros from the file's holes: it was truncated to its
// full size before).
func writeSparse(f *os.File, b []byte, off int64) error {
	start := -1 // start of the pending run of data
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		_, err := f.WriteAt(b[start:end], off+int64(start))
		start = -1
		return err
	}
	for i := 0; i < len(b); {
		// Blocks follow the file's alignment, not the chunk's.
		next := i + holeBlock - int((off+int64(i))%holeBlock)
		if next > len(b) {
			next = len(b)
		}
		if allZero(b[i:next]) {
			if err := flush(i); err != nil {
				return err
			}
		} else if start < 0 {
			start = i
		}
		i = next
	}
	return flush(len(b))
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// finishFile applies metadata and, with Verify, checks the content.
func (r *restorer) finishFile(fs *fileState) {
	if r.opts.Verify && !fs.failed.Load() {
		if err := r.verify(fs); err != nil {
			r.failFile(fs, fmt.Errorf("verify: %w", err))
		}
	}
	r.files.Add(1)
	r.applyMeta(fs.path, fs.rel, fs.node)
}

func (r *restorer) verify(fs *fileState) error {
	f, err := os.Open(fs.path)
	if err != nil {
		return err
	}
	defer f.Close()
	var buf []byte
	for i, id := range fs.node.Content {
		size := fs.offsets[i+1] - fs.offsets[i]
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := f.ReadAt(buf, fs.offsets[i]); err != nil {
			return fmt.Errorf("read chunk %d: %w", i, err)
		}
		if r.l.BlobID(buf) != id {
			return fmt.Errorf("chunk %d at offset %d differs from the snapshot", i, fs.offsets[i])
		}
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(fs.node.Size) {
		return fmt.Errorf("size differs from the snapshot")
	}
	return nil
}

func (r *restorer) applyMeta(p, rel string, n *tree.Node) {
	if err := applyMeta(p, n, r.opts.Owner); err != nil {
		r.warn(rel, err)
	}
}

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
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				report()
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func() { close(stop); <-done }
}

// createSpecial creates a symlink, device node, fifo or socket.
func createSpecial(p string, n *tree.Node) error {
	switch n.Type {
	case tree.Symlink:
		return os.Symlink(n.LinkTarget, p)
	case tree.Dev:
		return unix.Mknod(p, unix.S_IFBLK|0o600, int(n.Rdev))
	case tree.CharDev:
		return unix.Mknod(p, unix.S_IFCHR|0o600, int(n.Rdev))
	case tree.FIFO:
		return unix.Mkfifo(p, 0o600)
	case tree.Socket:
		return unix.Mknod(p, unix.S_IFSOCK|0o600, 0)
	}
	return fmt.Errorf("cannot restore a node of type %q", n.Type)
}

// applyMeta sets owner, mode, xattrs and times, in that order (chown clears
// setuid bits, times last because the others change ctime/mtime).
func applyMeta(p string, n *tree.Node, owner bool) error {
	var errs []error
	if owner {
		if err := os.Lchown(p, int(n.UID), int(n.GID)); err != nil {
			errs = append(errs, fmt.Errorf("chown: %w", err))
		}
	}
	if n.Type != tree.Symlink {
		if err := os.Chmod(p, unixMode(n.Mode)); err != nil {
			errs = append(errs, fmt.Errorf("chmod: %w", err))
		}
	}
	for _, x := range n.Xattrs {
		if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
			if n.Type == tree.Symlink && errors.Is(err, unix.EPERM) {
				continue
			}
			errs = append(errs, fmt.Errorf("xattr %s: %w", x.Name, err))
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(n.AccessTime.UnixNano()), unix.NsecToTimespec(n.ModTime.UnixNano())}
	if n.AccessTime.IsZero() {
		ts[0] = ts[1]
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		errs = append(errs, fmt.Errorf("set times: %w", err))
	}
	return errors.Join(errs...)
}

// unixMode keeps permission, setuid, setgid and sticky bits of a Go mode
// for os.Chmod.
func unixMode(m os.FileMode) os.FileMode {
	return m & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
}
