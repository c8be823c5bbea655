//go:build linux

package fusefs

import (
	"context"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"dj/repo/snapshot"
)

// metaNode is a directory of the snapshot layout (the root, snapshots/,
// hosts/<host>/ ...). Its content follows the current snapshot list, so the
// kernel may cache its entries and attributes only briefly; it keeps its
// listing until the directory's mtime changes with the snapshot set, which
// it notices when it asks for the attributes again (metaTimeout).
type metaNode struct {
	fs.Inode
	roNode
	m    *mountFS
	path string
}

var (
	_ fs.NodeGetattrer = (*metaNode)(nil)
	_ fs.NodeLookuper  = (*metaNode)(nil)
	_ fs.NodeReaddirer = (*metaNode)(nil)
	_ fs.NodeStatfser  = (*metaNode)(nil)
)

// metaRoot reads the snapshot list and returns the root of the layout.
func (m *mountFS) metaRoot(ctx context.Context) (fs.InodeEmbedder, error) {
	s, err := newSnapshotList(ctx, m)
	if err != nil {
		return nil, err
	}
	m.snaps = s
	return &metaNode{m: m, path: ""}, nil
}

func (n *metaNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	l := n.m.snaps.get()
	n.m.fillDirAttr(&out.Attr, l.mtime)
	out.SetTimeout(n.m.metaTimeout())
	return 0
}

func (n *metaNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	l := n.m.snaps.get()
	e, ok := l.lookup(n.path, name)
	if !ok && !strings.HasPrefix(name, ".") {
		// Perhaps a snapshot made since the list was read. (Names
		// starting with a dot are probes by shells and desktops.)
		if l2 := n.m.snaps.missed(); l2 != l {
			l = l2
			e, ok = l.lookup(n.path, name)
		}
	}
	if !ok {
		out.SetEntryTimeout(noTimeout) // don't cache the absence
		return nil, syscall.ENOENT
	}
	return n.child(ctx, l, name, e, out), 0
}

// metaTimeout is how long the kernel may keep the attributes of a layout
// directory: at most the refresh interval, so that a listing made after
// the interval asks for them, and the refresh they cause shows up.
func (m *mountFS) metaTimeout() time.Duration {
	if m.opts.Refresh > 0 && m.opts.Refresh < shortTimeout {
		return m.opts.Refresh
	}
	return shortTimeout
}

// lookup returns the entry name in directory dir.
func (l *layout) lookup(dir, name string) (metaEntry, bool) {
	d, ok := l.dirs[dir]
	if !ok {
		return metaEntry{}, false
	}
	e, ok := d.entries[name]
	return e, ok
}

// child makes the inode of entry e, named name, and fills out.
func (n *metaNode) child(ctx context.Context, l *layout, name string, e metaEntry, out *fuse.EntryOut) *fs.Inode {
	m := n.m
	ino := n.StableAttr().Ino
	out.SetEntryTimeout(shortTimeout)
	out.SetAttrTimeout(m.metaTimeout())
	switch e.kind {
	case kindSnapshot:
		out.SetAttrTimeout(longTimeout)
		m.fillSnapshotRootAttr(&out.Attr, e.sn)
		return n.NewInode(ctx, m.snapshotRoot(e.sn, ino), fs.StableAttr{Mode: syscall.S_IFDIR, Ino: metaChildIno(l, n.path, ino, name, e)})
	case kindLink:
		lk := &linkNode{m: m, sn: e.sn, target: e.target}
		lk.fillAttr(&out.Attr)
		return n.NewInode(ctx, lk, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: metaChildIno(l, n.path, ino, name, e)})
	case kindVersions:
		out.SetAttrTimeout(longTimeout)
		v := m.versionsRoot(l, ino)
		v.fillAttr(&out.Attr)
		return n.NewInode(ctx, v, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: metaChildIno(l, n.path, ino, name, e)})
	default:
		m.fillDirAttr(&out.Attr, l.mtime)
		return n.NewInode(ctx, &metaNode{m: m, path: joinPath(n.path, name)}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: metaChildIno(l, n.path, ino, name, e)})
	}
}

// metaChildIno returns the inode number of entry e of a layout directory.
func metaChildIno(l *layout, dir string, parentIno uint64, name string, e metaEntry) uint64 {
	switch e.kind {
	case kindSnapshot, kindLink:
		// The snapshot is part of the identity: when the name comes to
		// mean another snapshot, it is another inode.
		return hashIno(inoTagChild, e.sn.ID, parentIno, 0, name)
	case kindVersions:
		return versionsIno(l.key, parentIno, name)
	default:
		return metaIno(joinPath(dir, name))
	}
}

func (n *metaNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	l := n.m.snaps.get()
	ino := n.StableAttr().Ino
	d := l.dirs[n.path]
	if d == nil {
		return fs.NewListDirStream(nil), 0
	}
	entries := make([]fuse.DirEntry, 0, len(d.names)+2)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: ino},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: metaIno(parentPath(n.path))})
	for _, name := range d.names {
		e := d.entries[name]
		mode := uint32(syscall.S_IFDIR)
		if e.kind == kindLink {
			mode = syscall.S_IFLNK
		}
		entries = append(entries, fuse.DirEntry{Name: name, Mode: mode, Ino: metaChildIno(l, n.path, ino, name, e)})
	}
	return fs.NewListDirStream(entries), 0
}

// parentPath returns the directory of a slash-separated path; the root is
// its own parent.
func parentPath(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return ""
}

// linkNode is a "latest" symlink of the layout.
type linkNode struct {
	fs.Inode
	roNode
	m      *mountFS
	sn     *snapshot.Snapshot
	target string
}

var (
	_ fs.NodeGetattrer  = (*linkNode)(nil)
	_ fs.NodeReadlinker = (*linkNode)(nil)
)

func (lk *linkNode) fillAttr(a *fuse.Attr) {
	lk.m.fillDirAttr(a, lk.sn.Time)
	a.Mode = syscall.S_IFLNK | 0o777
	a.Nlink = 1
	a.Size = uint64(len(lk.target))
}

func (lk *linkNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	lk.fillAttr(&out.Attr)
	out.SetTimeout(shortTimeout)
	return 0
}

func (lk *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(lk.target), 0
}
