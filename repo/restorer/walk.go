// The walk of the trees: directories, special files and hard links in tree
// order, and the count of what a restore will write.

package restorer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sync/atomic"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/tree"
	"dj/repo/walk"

	"golang.org/x/sys/unix"
)

// dirState follows a directory whose metadata is applied once everything
// below it is done.
type dirState struct {
	path    string // in the file system
	rel     string // in the snapshot
	node    *tree.Node
	parent  *dirState
	created bool // set by the walker only
	// planned (Options.DryRun, set by the walker only): the directory is
	// not in the target yet, or something else is at its path, so
	// nothing below it is either.
	planned bool
	pending atomic.Int64 // the walk of the directory, subdirectories and files in flight
}

// count walks the trees for the progress totals, skipping what the walk
// would refuse; the bytes of a hard-linked file count once.
func (r *restorer) count(ctx context.Context, t walk.List, rel string, ancestors map[crypto.ID]bool, links map[tree.LinkKey]bool) Progress {
	var p Progress
	for i := range t.Len() {
		if ctx.Err() != nil {
			return p
		}
		n := t.Node(i)
		if n == nil || tree.ValidName(n.Name) != nil {
			continue
		}
		crel := path.Join(rel, n.Name)
		switch {
		case n.Type == tree.Dir && n.Subtree != nil && !ancestors[*n.Subtree] && r.descend(crel):
			sub, err := walk.Load(ctx, r.l, *n.Subtree)
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
			if n.IsHardLink() {
				key := n.LinkKey()
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
	if r.opts.DryRun {
		if err := r.planDir(d); err != nil {
			return err
		}
	} else if err := makeDir(d.path, r.opts.Overwrite == OverwriteNever); err != nil {
		return err
	}
	d.created = true
	return nil
}

// makeDir makes p a directory: an existing directory is kept, anything
// else there (a planted symlink, say) is removed first, unless keep: then
// the error is ErrFileInTheWay.
func makeDir(p string, keep bool) error {
	fi, err := os.Lstat(p)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil && keep:
		return ErrFileInTheWay
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

// planDir decides what makeDir would do with d's path without doing it
// (Options.DryRun): keep a directory, make one (planned), or with
// OverwriteNever refuse what is in the way.
func (r *restorer) planDir(d *dirState) error {
	if d.parent != nil && d.parent.planned {
		d.planned = true
		return nil
	}
	fi, err := os.Lstat(d.path)
	switch {
	case err == nil && fi.IsDir():
	case err == nil && r.opts.Overwrite == OverwriteNever:
		return ErrFileInTheWay
	default:
		d.planned = true
	}
	return nil
}

// clearPath removes whatever is at p, not following a symlink, to make
// room for a file, a symlink or a special file. A directory goes only when
// it is empty, or with replaceDirs (Options.Delete) with all it holds:
// otherwise it is left alone and the error is ErrDirInTheWay, so that a
// restore into a directory in use never deletes what the user has below a
// name the snapshot holds as a file.
// With dry, it removes nothing and only reports ErrDirInTheWay.
func clearPath(p string, replaceDirs, dry bool) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if dry {
		if fi.IsDir() && !replaceDirs && !emptyDir(p) {
			return ErrDirInTheWay
		}
		return nil
	}
	if !fi.IsDir() {
		return os.Remove(p)
	}
	if replaceDirs {
		return os.RemoveAll(p)
	}
	err = unix.Rmdir(p)
	if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return ErrDirInTheWay
	}
	if err != nil {
		return &os.PathError{Op: "remove", Path: p, Err: err}
	}
	return nil
}

// makeRoom clears fsPath for an entry of d (clearPath) and reports whether
// the entry is to be written. A dry run clears nothing, only reports what
// is in the way, and counts the entry (count) instead of writing it; in a
// directory it would make (planned) nothing is in the way.
func (r *restorer) makeRoom(d *dirState, fsPath, rel string, count func()) bool {
	if !d.planned {
		if err := clearPath(fsPath, r.opts.Delete, r.opts.DryRun); err != nil {
			r.fail(rel, err)
			return false
		}
	}
	if r.opts.DryRun {
		count()
		return false
	}
	return true
}

// emptyDir reports whether directory p holds nothing (or cannot be read).
func emptyDir(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return true
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}

// walk restores the entries of t into d. ancestors holds the trees on the
// way from the root, to refuse cycles.
func (r *restorer) walk(ctx context.Context, d *dirState, t walk.List, ancestors map[crypto.ID]bool) {
	names := nameSet{t: t}
	for i := range t.Len() {
		if ctx.Err() != nil {
			return
		}
		n := t.Node(i)
		if n == nil {
			r.fail(d.rel, errors.New("tree has a null node"))
			continue
		}
		if err := tree.ValidName(n.Name); err != nil {
			r.fail(path.Join(d.rel, fmt.Sprintf("%q", n.Name)), err)
			continue
		}
		rel := path.Join(d.rel, n.Name)
		if names.dup(i, n.Name) {
			r.fail(rel, ErrDuplicateName)
			continue
		}
		fsPath := filepath.Join(d.path, n.Name)

		if n.Type == tree.Dir {
			if r.opts.AsFile != nil && r.selected(rel) {
				if write := r.opts.AsFile(n); write != nil {
					r.writeAsFile(ctx, d, fsPath, rel, n, write)
					continue
				}
			}
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
		if n.Type == tree.Irregular {
			// Nothing is written, so what the target has there stays.
			r.warn(rel, fmt.Errorf("%s file not restored", n.Type))
			continue
		}
		if r.keepExisting(fsPath, rel, n) {
			continue
		}
		if !r.makeRoom(d, fsPath, rel, func() { r.countDry(n) }) {
			continue
		}
		if r.link(fsPath, rel, n) {
			continue
		}
		switch n.Type {
		case tree.File:
			r.startFile(ctx, d, fsPath, rel, n)
		default:
			if err := fsnode.CreateSpecial(fsPath, n); err != nil {
				r.fail(rel, err)
				continue
			}
			r.others.Add(1)
			r.applyMeta(fsPath, rel, n, true)
		}
	}
	// A tree kept in files that could not be read back gave zeroed nodes.
	if err := t.Err(); err != nil && ctx.Err() == nil {
		r.fail(d.rel, fmt.Errorf("directory could not be read: %w", err))
	}
	if r.opts.Delete && d.created && ctx.Err() == nil {
		r.deleteExtra(d, t)
	}
}

// writeAsFile restores directory n of d as one file that write fills
// (Options.AsFile), owned as the directory, mode 0600, with its times.
func (r *restorer) writeAsFile(ctx context.Context, d *dirState, fsPath, rel string, n *tree.Node, write func(context.Context, io.Writer) error) {
	if err := r.ensureDir(d); err != nil {
		r.fail(rel, err)
		return
	}
	if !r.makeRoom(d, fsPath, rel, func() { r.files.Add(1) }) {
		return
	}
	f, err := os.OpenFile(fsPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		r.fail(rel, err)
		return
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = write(ctx, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.fail(rel, err)
		return
	}
	r.files.Add(1)
	c := *n
	c.Type, c.Mode, c.Subtree, c.Xattrs = tree.File, 0o600, nil, nil
	r.applyMeta(fsPath, rel, &c, true)
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
	t, err := walk.Load(ctx, r.l, *n.Subtree)
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

// nameSet finds the names a tree holds twice. Every tree the repository
// decodes has its names sorted and unique, so while they come in order a
// name is compared with the one before it alone; a map of the names is
// made only when they do not (a loader that does not check its trees), and
// never for the million names of a huge directory.
type nameSet struct {
	t       walk.List
	prev    string
	hasPrev bool
	seen    map[string]struct{}
}

// dup reports whether name, the name of node i, came before in the tree.
// Names are passed in tree order, each valid one once.
func (s *nameSet) dup(i int, name string) bool {
	if s.seen == nil {
		if !s.hasPrev || name > s.prev {
			s.prev, s.hasPrev = name, true
			return false
		}
		s.seen = make(map[string]struct{}, i)
		for j := range i {
			if n := s.t.Node(j); n != nil {
				s.seen[n.Name] = struct{}{}
			}
		}
	}
	if _, ok := s.seen[name]; ok {
		return true
	}
	s.seen[name] = struct{}{}
	return false
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
			if !r.opts.DryRun {
				r.applyMeta(d.path, d.rel, d.node, true)
			}
		}
	}
}

// link makes fsPath a hard link to an earlier restored copy of the same
// inode and reports whether it did (or failed trying). The first copy of an
// inode is remembered. Nodes that claim one inode but hold different data
// are not links to one file (tree.LinkKey): each is restored on its own.
func (r *restorer) link(fsPath, rel string, n *tree.Node) bool {
	if !n.IsHardLink() {
		return false
	}
	key := n.LinkKey()
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
