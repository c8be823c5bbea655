//go:build linux

package fusefs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// dirNode is a directory inside a snapshot, or a snapshot's root.
type dirNode struct {
	fs.Inode
	roNode
	m         *mountFS
	sn        *snapshot.Snapshot
	subtree   crypto.ID
	node      *tree.Node // nil for a snapshot's root
	parentIno uint64

	// siblingsAhead is the index of the last entry whose content
	// readAhead.siblings has asked for.
	siblingsAhead atomic.Int64
	// subtreesQueued is set once the directory's subtrees were queued for
	// background loading.
	subtreesQueued atomic.Bool
	// longNamesNoted is set once the names too long to list were logged.
	longNamesNoted atomic.Bool
}

var (
	_ fs.NodeGetattrer      = (*dirNode)(nil)
	_ fs.NodeLookuper       = (*dirNode)(nil)
	_ fs.NodeOpendirHandler = (*dirNode)(nil)
	_ fs.NodeGetxattrer     = (*dirNode)(nil)
	_ fs.NodeListxattrer    = (*dirNode)(nil)
	_ fs.NodeStatfser       = (*dirNode)(nil)
	_ fs.NodeSetattrer      = (*dirNode)(nil)
	_ fs.NodeAccesser       = (*dirNode)(nil)
	_ fs.NodeSetxattrer     = (*dirNode)(nil)
	_ fs.NodeRemovexattrer  = (*dirNode)(nil)
	_ fs.NodeReaddirer      = (*dirNode)(nil)
)

// snapshotRoot returns the node of a snapshot's root directory.
func (m *mountFS) snapshotRoot(sn *snapshot.Snapshot, parentIno uint64) *dirNode {
	return &dirNode{m: m, sn: sn, subtree: sn.Tree, parentIno: parentIno}
}

// fillSnapshotRootAttr sets the attributes of a snapshot's root directory.
func (m *mountFS) fillSnapshotRootAttr(a *fuse.Attr, sn *snapshot.Snapshot) {
	m.fillDirAttr(a, sn.Time)
}

func (d *dirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if d.node != nil {
		fillAttr(&out.Attr, d.node, d.m.opts.OwnerRoot)
	} else {
		d.m.fillSnapshotRootAttr(&out.Attr, d.sn)
	}
	return 0
}

// tree returns the directory's tree, or the errno to reply with.
func (d *dirNode) tree(ctx context.Context) (*tree.Compact, syscall.Errno) {
	t, err := d.m.compactTree(ctx, d.subtree)
	if err != nil {
		e := errno(ctx, err)
		if e == syscall.EIO {
			d.m.opts.Logf("dj mount: directory %s: tree %s: %v (returning EIO)", d.path(), d.subtree.Short(), err)
		}
		return nil, e
	}
	return t, 0
}

// path returns the node's path in the mount, for log lines.
func (d *dirNode) path() string { return "/" + d.Path(nil) }

// Lookup answers the kernel's LOOKUP of a name in the directory; a file
// looked up tells the listing policy that the caller stats what it lists.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	child, e := d.lookup(ctx, name, out)
	if e == 0 && child.StableAttr().Mode&syscall.S_IFMT != syscall.S_IFDIR {
		d.m.listing.lookedUp(callerPid(ctx))
	}
	return child, e
}

// lookup makes the inode of the entry name.
func (d *dirNode) lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, e := d.tree(ctx)
	if e != 0 {
		return nil, e
	}
	i, ok := t.Search(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	// The node is a copy: an inode the kernel keeps must not keep the tree.
	return d.m.newTreeChild(ctx, &d.Inode, d.sn, d.StableAttr().Ino, name, t.Node(i), out), 0
}

// OpendirHandle lists the directory. Its content never changes, so the
// kernel may cache the listing.
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	t, e := d.tree(ctx)
	if e != 0 {
		return nil, 0, e
	}
	d.noteLongNames(t)
	// Every READDIR request opens a handle; the subtrees are queued once.
	if !d.subtreesQueued.Swap(true) {
		d.m.ra.subtrees(t)
	}
	return &treeDirStream{d: d, t: t, listed: -1}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// plusEntries is the size of the largest directory whose READDIRPLUS
// replies carry the entries' attributes. Each such entry becomes an inode
// here and in the kernel, kept until the kernel forgets it (about 1 KiB a
// file in this process: go-fuse's inode, the node, its tree.Node); a
// directory of a million files listed that way held a gigabyte. Larger
// directories are listed with names and types alone, as READDIR does: ls -f
// and find need no more, and what is stat'ed is looked up one by one.
const plusEntries = 1 << 14

// treeDirStream lists a snapshot directory. Its positions are positions
// in the tree: entry k of ".", "..", node 0, node 1, ... has offset k+1,
// whether or not a node is skipped for an invalid name, so a stream opened
// for any READDIR request seeks to its offset in O(1) and makes only the
// entries that request returns. (The kernel lists a directory in requests
// of a few dozen entries, each on a new handle because directories need no
// open: a stream that made the whole listing first was quadratic in the
// directory's size.)
type treeDirStream struct {
	d    *dirNode
	t    *tree.Compact
	idx  int    // position of the next entry
	name string // the name of the node at idx, once skipInvalid has read it
	head tree.Node
	// listed and listedName are the tree index and name of the node Next
	// returned last (listed is -1 before one), listedDir whether it is a
	// directory: the READDIRPLUS reply's Lookup of that entry then needs
	// no search of the tree.
	listed     int
	listedName string
	listedDir  bool
	// mode is what this reply's entries carry (listing.go), once known;
	// probed is set once the reply has left out a probe's attributes.
	mode      listMode
	modeKnown bool
	probed    bool
}

var (
	_ fs.FileLookuper     = (*treeDirStream)(nil)
	_ fs.FileReaddirenter = (*treeDirStream)(nil)
	_ fs.FileSeekdirer    = (*treeDirStream)(nil)
	_ fs.FileReleasedirer = (*treeDirStream)(nil)
	_ fs.DirStream        = (*treeDirStream)(nil)
)

// end is the position past the last entry.
func (s *treeDirStream) end() int { return s.t.Len() + 2 }

// skipInvalid moves past nodes whose names the mount does not show, and
// reads the name of the next node.
func (s *treeDirStream) skipInvalid() {
	for s.idx >= 2 && s.idx < s.end() {
		if s.name == "" {
			s.name, s.head = s.t.Entry(s.idx - 2)
		}
		if showable(s.name) {
			return
		}
		s.idx++
		s.name = ""
	}
}

// HasNext reports whether an entry follows.
func (s *treeDirStream) HasNext() bool {
	s.skipInvalid()
	return s.idx < s.end()
}

// Next returns the next entry.
func (s *treeDirStream) Next() (fuse.DirEntry, syscall.Errno) {
	if !s.HasNext() {
		return fuse.DirEntry{}, syscall.EINVAL
	}
	d := s.d
	var e fuse.DirEntry
	switch s.idx {
	case 0:
		e = fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.StableAttr().Ino}
	case 1:
		e = fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: d.parentIno}
	default:
		i := s.idx - 2
		e = fuse.DirEntry{Name: s.name, Mode: typeBits(s.head.Type), Ino: compactIno(d.sn.ID, d.StableAttr().Ino, s.name, s.t, i, &s.head)}
		s.listed, s.listedName, s.listedDir = i, s.name, s.head.Type == tree.Dir
	}
	s.idx++
	s.name = ""
	e.Off = uint64(s.idx)
	return e, 0
}

// Readdirent returns the next entry, or nil at the end.
func (s *treeDirStream) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !s.HasNext() {
		return nil, 0
	}
	e, errno := s.Next()
	return &e, errno
}

// Seekdir moves to the entry after offset off.
func (s *treeDirStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(s.end()) {
		return syscall.EINVAL
	}
	s.idx = int(off)
	s.name, s.listed, s.listedDir = "", -1, false
	return 0
}

// Lookup makes the inode of the entry a READDIRPLUS reply has just listed
// (go-fuse calls it for each), or, in a directory of more than plusEntries
// or for a file the listing policy leaves out (fileAttributes), declines:
// the entry then goes out with its name and type alone (node id 0, which
// the kernel takes as "no attributes", not as a missing entry).
func (s *treeDirStream) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if child := s.d.GetChild(name); child != nil {
		if ga, ok := child.Operations().(fs.NodeGetattrer); ok {
			var a fuse.AttrOut
			if e := ga.Getattr(ctx, nil, &a); e == 0 {
				out.Attr = a.Attr
			}
		}
		return child, 0
	}
	if s.t.Len() > plusEntries {
		return nil, syscall.ENOENT
	}
	if s.listed >= 0 && name == s.listedName {
		if !s.listedDir && !s.fileAttributes(ctx) {
			return nil, syscall.ENOENT
		}
		d := s.d
		return d.m.newTreeChild(ctx, &d.Inode, d.sn, d.StableAttr().Ino, name, s.t.Node(s.listed), out), 0
	}
	return s.d.lookup(ctx, name, out)
}

// fileAttributes reports whether the reply gives the attributes of the
// file it lists now, as the listing policy says for the caller: a probe is
// left without them once per reply while the caller is unknown.
func (s *treeDirStream) fileAttributes(ctx context.Context) bool {
	pol := s.d.m.listing
	if !s.modeKnown {
		s.mode, s.modeKnown = pol.mode(callerPid(ctx)), true
	}
	switch s.mode {
	case listStats:
		return true
	case listNames:
		return false
	}
	if s.probed {
		return true
	}
	s.probed = true
	pol.probe(callerPid(ctx), s.d.StableAttr().Ino)
	return false
}

// Close does nothing: the stream holds no resources.
func (s *treeDirStream) Close() {}

// Releasedir does nothing either.
func (s *treeDirStream) Releasedir(ctx context.Context, releaseFlags uint32) {}

// Readdir lists the directory (go-fuse uses OpendirHandle instead; this
// serves callers of the plain interface).
func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	t, e := d.tree(ctx)
	if e != 0 {
		return nil, e
	}
	d.noteLongNames(t)
	return fs.NewListDirStream(d.m.treeEntries(d.sn.ID, d.StableAttr().Ino, d.parentIno, t)), 0
}

// maxNameLen is the longest name the kernel passes (NAME_MAX): a listing
// with a longer one failed whole (EIO from getdents, so ls showed the
// directory empty), and no path could name it anyway.
const maxNameLen = 255

// showable reports whether the mount lists a node's name: a valid name
// (tree.ValidName) the kernel accepts.
func showable(name string) bool {
	return len(name) <= maxNameLen && tree.ValidName(name) == nil
}

// noteLongNames logs, once for the directory, the names it does not list
// because they are longer than the kernel's limit.
func (d *dirNode) noteLongNames(t *tree.Compact) {
	if t.MaxNameLen() <= maxNameLen || d.longNamesNoted.Swap(true) {
		return
	}
	n, first := 0, -1
	for i := range t.Len() {
		if t.NameLen(i) > maxNameLen {
			if n++; first < 0 {
				first = i
			}
		}
	}
	if n > 0 {
		d.m.logLongNames(d.path(), n, t.Name(first))
	}
}

// logLongNames logs the names of directory dir that are not listed.
func (m *mountFS) logLongNames(dir string, n int, first string) {
	m.opts.Logf("dj mount: %s: %d names longer than %d bytes (the kernel's limit) are not listed, the first %.40q… (%d bytes); dj dump can read them", dir, n, maxNameLen, first, len(first))
}

func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return nodeGetxattr(d.node, attr, dest)
}

func (d *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return nodeListxattr(d.node, dest)
}

// treeEntries returns the listing of a tree: ".", ".." and the valid names
// in the tree's (sorted) order.
func (m *mountFS) treeEntries(snID crypto.ID, ino, parentIno uint64, t *tree.Compact) []fuse.DirEntry {
	entries := make([]fuse.DirEntry, 0, t.Len()+2)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: ino},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parentIno})
	for i := range t.Len() {
		name, h := t.Entry(i)
		if !showable(name) {
			continue
		}
		entries = append(entries, fuse.DirEntry{Name: name, Mode: typeBits(h.Type), Ino: compactIno(snID, ino, name, t, i, &h)})
	}
	return entries
}

// newTreeChild makes the inode of tree node n, named name in directory
// parent (inode number parentIno) of snapshot sn, and fills out.
func (m *mountFS) newTreeChild(ctx context.Context, parent *fs.Inode, sn *snapshot.Snapshot, parentIno uint64, name string, n *tree.Node, out *fuse.EntryOut) *fs.Inode {
	ino := nodeIno(sn.ID, parentIno, name, n)
	var ops fs.InodeEmbedder
	switch n.Type {
	case tree.Dir:
		d := &dirNode{m: m, sn: sn, node: n, parentIno: parentIno}
		if n.Subtree != nil {
			d.subtree = *n.Subtree
		}
		ops = d
	case tree.File:
		ops = &fileNode{m: m, node: n}
	default:
		ops = &otherNode{m: m, node: n}
	}
	fillAttr(&out.Attr, n, m.opts.OwnerRoot)
	if n.Type != tree.Dir {
		m.entries.add(parent, name)
	}
	return parent.NewInode(ctx, ops, fs.StableAttr{Mode: typeBits(n.Type), Ino: ino})
}

// subRoot returns the root node of a mount of one snapshot directory.
func (m *mountFS) subRoot(ctx context.Context, r *SubRoot) (fs.InodeEmbedder, error) {
	sn := r.Snapshot
	if sn == nil {
		return nil, errors.New("fusefs: SubRoot without a snapshot")
	}
	root := m.snapshotRoot(sn, fuse.FUSE_ROOT_ID)
	p := strings.Trim(path.Clean("/"+r.Path), "/")
	if p == "" {
		return root, nil
	}
	walked := ""
	for _, elem := range strings.Split(p, "/") {
		walked += "/" + elem
		t, err := m.compactTree(ctx, root.subtree)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: load %s: %w", sn.ID.Short(), path.Dir(walked), err)
		}
		var n *tree.Node
		if i, ok := t.Search(elem); ok {
			n = t.Node(i)
		}
		switch {
		case n == nil:
			return nil, fmt.Errorf("snapshot %s has no %s", sn.ID.Short(), walked)
		case n.Type != tree.Dir || n.Subtree == nil:
			return nil, fmt.Errorf("snapshot %s: %s is not a directory", sn.ID.Short(), walked)
		}
		root = &dirNode{m: m, sn: sn, subtree: *n.Subtree, node: n, parentIno: fuse.FUSE_ROOT_ID}
	}
	return root, nil
}
