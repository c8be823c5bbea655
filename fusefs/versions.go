//go:build linux

package fusefs

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// versionsDir is a directory of the versions view: the union of one path's
// directories across all snapshots. Subdirectories appear under their name;
// every other entry appears once per distinct version as <name>@<time>, the
// time of the first snapshot holding that version. A listing is built when
// the directory is first visited and never changes: the inode numbers of the
// view include the snapshot set, so a new snapshot list gives new inodes.
type versionsDir struct {
	fs.Inode
	roNode
	m         *mountFS
	key       crypto.ID  // the snapshot set
	srcs      []vsrc     // this directory's distinct trees, oldest first
	node      *tree.Node // the newest node of this directory; nil at the top
	mtime     time.Time  // attributes of the top directory
	parentIno uint64

	mu      sync.Mutex
	listing *vlisting
}

var (
	_ fs.NodeGetattrer      = (*versionsDir)(nil)
	_ fs.NodeLookuper       = (*versionsDir)(nil)
	_ fs.NodeOpendirHandler = (*versionsDir)(nil)
	_ fs.NodeGetxattrer     = (*versionsDir)(nil)
	_ fs.NodeListxattrer    = (*versionsDir)(nil)
	_ fs.NodeStatfser       = (*versionsDir)(nil)
)

// vsrc is one version of a directory: the first snapshot holding the tree.
type vsrc struct {
	sn   *snapshot.Snapshot
	tree crypto.ID
}

// ventry is one name of a versions directory.
type ventry struct {
	dir *versionsDir // a subdirectory (not yet an inode)
	sn  *snapshot.Snapshot
	// node is the version's node (for a subdirectory: its newest node)
	node *tree.Node
}

type vlisting struct {
	names   []string // sorted
	entries map[string]ventry
}

// versionsRoot returns the top directory of the versions view of l.
func (m *mountFS) versionsRoot(l *layout, parentIno uint64) *versionsDir {
	v := &versionsDir{m: m, key: l.key, mtime: l.mtime, parentIno: parentIno}
	for _, sn := range l.snaps {
		if len(v.srcs) > 0 && v.srcs[len(v.srcs)-1].tree == sn.Tree {
			continue
		}
		v.srcs = append(v.srcs, vsrc{sn: sn, tree: sn.Tree})
	}
	return v
}

func (v *versionsDir) fillAttr(a *fuse.Attr) {
	if v.node != nil {
		fillAttr(a, v.node, v.m.opts.OwnerRoot)
		return
	}
	v.m.fillDirAttr(a, v.mtime)
}

func (v *versionsDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	v.fillAttr(&out.Attr)
	return 0
}

func (v *versionsDir) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return nodeGetxattr(v.node, attr, dest)
}

func (v *versionsDir) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return nodeListxattr(v.node, dest)
}

// getListing returns the directory's listing, building it on first use.
func (v *versionsDir) getListing(ctx context.Context) (*vlisting, syscall.Errno) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.listing != nil {
		return v.listing, 0
	}
	l, err := v.build(ctx)
	if err != nil {
		e := errno(ctx, err)
		if e == syscall.EIO {
			v.m.opts.Logf("dj mount: versions directory /%s: %v (returning EIO)", v.Path(nil), err)
		}
		return nil, e
	}
	v.listing = l
	return l, 0
}

// build merges the directory's trees into a listing.
func (v *versionsDir) build(ctx context.Context) (*vlisting, error) {
	type version struct {
		sn   *snapshot.Snapshot
		node *tree.Node
	}
	type acc struct {
		dir      *versionsDir
		versions []version
		last     *tree.Node // the last version seen
	}
	accs := make(map[string]*acc)
	for _, s := range v.srcs {
		t, err := v.m.loadTree(ctx, s.tree)
		if err != nil {
			return nil, err
		}
		for _, n := range t.Nodes {
			if tree.ValidName(n.Name) != nil {
				continue
			}
			a := accs[n.Name]
			if a == nil {
				a = &acc{}
				accs[n.Name] = a
			}
			if n.Type == tree.Dir {
				if n.Subtree == nil {
					continue
				}
				if a.dir == nil {
					a.dir = &versionsDir{m: v.m, key: v.key}
				}
				if k := len(a.dir.srcs); k == 0 || a.dir.srcs[k-1].tree != *n.Subtree {
					a.dir.srcs = append(a.dir.srcs, vsrc{sn: s.sn, tree: *n.Subtree})
				}
				a.dir.node = n
				continue
			}
			if a.last == nil || !sameVersion(a.last, n) {
				a.versions = append(a.versions, version{sn: s.sn, node: n})
			}
			a.last = n
		}
	}

	names := make([]string, 0, len(accs))
	for name := range accs {
		names = append(names, name)
	}
	sort.Strings(names)
	l := &vlisting{entries: make(map[string]ventry)}
	for _, name := range names {
		if a := accs[name]; a.dir != nil {
			l.entries[name] = ventry{dir: a.dir, node: a.dir.node}
		}
	}
	for _, name := range names {
		for _, ver := range accs[name].versions {
			base := name + "@" + v.m.versionTime(ver.sn)
			vn := base
			for i := 1; ; i++ {
				if _, taken := l.entries[vn]; !taken {
					break
				}
				vn = base + "-" + strconv.Itoa(i)
			}
			l.entries[vn] = ventry{sn: ver.sn, node: ver.node}
		}
	}
	l.names = make([]string, 0, len(l.entries))
	long, first := 0, ""
	for name := range l.entries {
		if len(name) > maxNameLen {
			if long++; first == "" || name < first {
				first = name
			}
			continue
		}
		l.names = append(l.names, name)
	}
	if long > 0 {
		v.m.logLongNames("/"+v.Path(nil), long, first)
	}
	sort.Strings(l.names)
	return l, nil
}

// versionTime formats a snapshot's time for a version's name.
func (m *mountFS) versionTime(sn *snapshot.Snapshot) string {
	return strings.ReplaceAll(sn.Time.Local().Format(m.opts.TimeTemplate), "/", "-")
}

// sameVersion reports whether two nodes have the same content and metadata
// (access and change times, inode and link count are not compared: they
// change without the file changing).
func sameVersion(a, b *tree.Node) bool {
	return a.Type == b.Type && a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID &&
		a.User == b.User && a.Group == b.Group && a.ModTime.Equal(b.ModTime) &&
		a.Size == b.Size && a.Rdev == b.Rdev && a.LinkTarget == b.LinkTarget &&
		slices.Equal(a.Content, b.Content) &&
		slices.EqualFunc(a.Xattrs, b.Xattrs, func(x, y tree.Xattr) bool {
			return x.Name == y.Name && bytes.Equal(x.Value, y.Value)
		})
}

func (v *versionsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	l, e := v.getListing(ctx)
	if e != 0 {
		return nil, e
	}
	ent, ok := l.entries[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	ino := v.StableAttr().Ino
	if ent.dir != nil {
		d := &versionsDir{m: v.m, key: v.key, srcs: ent.dir.srcs, node: ent.dir.node, parentIno: ino}
		d.fillAttr(&out.Attr)
		return v.NewInode(ctx, d, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: versionsIno(v.key, ino, name)}), 0
	}
	return v.m.newTreeChild(ctx, &v.Inode, ent.sn, ino, name, ent.node, out), 0
}

func (v *versionsDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	l, e := v.getListing(ctx)
	if e != 0 {
		return nil, 0, e
	}
	ino := v.StableAttr().Ino
	entries := make([]fuse.DirEntry, 0, len(l.names)+2)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: ino},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: v.parentIno})
	for _, name := range l.names {
		ent := l.entries[name]
		if ent.dir != nil {
			entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: versionsIno(v.key, ino, name)})
			continue
		}
		entries = append(entries, fuse.DirEntry{Name: name, Mode: typeBits(ent.node.Type), Ino: nodeIno(ent.sn.ID, ino, name, ent.node)})
	}
	return fs.NewListDirStream(entries), fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}
