// The walk and the trees: saveEntry starts every entry of a directory
// (files go to the file workers, directories are walked by up to
// dirWalkers goroutines), and finishDir saves a directory's tree once its
// children are done.

package archiver

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
)

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

// dirWalkers is how many directories are walked at once besides the
// walker's own.
const dirWalkers = 8

func (a *archiver) saveTree(ctx context.Context, t *tree.Tree) (crypto.ID, error) {
	b, err := t.Encode()
	if err != nil {
		// A name twice: the decoder would refuse the tree.
		return crypto.ID{}, fmt.Errorf("%w: %v", ErrInvalidTree, err)
	}
	// Decode it as every reader will (tree.Check, one node at a time): a
	// tree dj cannot read back must fail the backup, never become a
	// snapshot.
	if _, err := tree.Check(b); err != nil {
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
	openPath := path
	if a.opts.ReadSpecial && fi.Mode()&os.ModeSymlink != 0 {
		// A symlink to a block device (/dev/vg0/disk -> ../dm-3) is read
		// as the device, as borg's --read-special does.
		if st, err := os.Stat(path); err == nil && isDevice(st) {
			if real, err := filepath.EvalSymlinks(path); err == nil {
				fi, openPath = st, real
			}
		}
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
		if prev != nil && !isDevice(fi) && a.unchanged(prev, node) && a.allKnown(prev.Content) {
			node.Content = prev.Content
			a.bytes.Add(node.Size)
			a.filesUnmod.Add(1)
			if a.opts.ItemDone != nil {
				a.opts.ItemDone(Item{Path: path, Action: ItemUnchanged})
			}
			return doneFuture(node)
		}
		f := &future{done: make(chan struct{})}
		fd := openAhead(openPath, node.Size)
		a.queued.Add(1)
		select {
		case a.fileJobs <- fileJob{path: path, fi: fi, node: node, prev: prev, fut: f, fd: fd}:
		case <-ctx.Done():
			if fd >= 0 {
				_ = unix.Close(fd)
			}
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

// isDevice reports whether fi is a block device (read as a file with
// Options.ReadSpecial).
func isDevice(fi os.FileInfo) bool {
	return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// deviceSize returns the size of the block device at path (which may be
// a symlink to it).
func deviceSize(path string) (uint64, error) {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	fd, err := openForReading(path)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	end, err := unix.Seek(fd, 0, io.SeekEnd)
	if err != nil {
		return 0, &os.PathError{Op: "seek", Path: path, Err: err}
	}
	return uint64(end), nil
}

// node returns the metadata of the file at path; its atime is its mtime
// unless WithAtime is set.
func (a *archiver) node(path string, fi os.FileInfo) (*tree.Node, error, error) {
	n, warn, err := a.meta.Node(path, fi)
	if err == nil && !a.opts.WithAtime {
		n.AccessTime = n.ModTime
	}
	if err == nil && a.opts.ReadSpecial && n.Type == tree.Dev {
		size, serr := deviceSize(path)
		if serr != nil {
			return nil, nil, serr
		}
		n.Type, n.Mode, n.Rdev = tree.File, n.Mode.Perm()|n.Mode&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky), 0
		n.Size, n.Blocks = size, (size+511)/512
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
