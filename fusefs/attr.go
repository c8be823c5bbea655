//go:build linux

package fusefs

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/tree"
)

// Inode numbers are hashes, stable across mounts and never derived from
// content (go-fuse treats nodes with equal numbers as one inode). They lie
// in [2, 2^63): 1 is the root, and go-fuse's automatic numbers start at 2^63.
const (
	inoTagChild    = 'c' // a node in a snapshot: (snapshot, parent, name)
	inoTagHardlink = 'h' // a hard-linked file: (snapshot, device, inode)
	inoTagMeta     = 'm' // a directory of the layout: (path)
	inoTagVersions = 'v' // a directory of the versions view: (snapshot set, parent, name)
)

func hashIno(tag byte, id crypto.ID, a, b uint64, name string) uint64 {
	h := fnv.New64a()
	var buf [1 + crypto.IDSize + 16]byte
	buf[0] = tag
	copy(buf[1:], id[:])
	binary.LittleEndian.PutUint64(buf[1+crypto.IDSize:], a)
	binary.LittleEndian.PutUint64(buf[1+crypto.IDSize+8:], b)
	h.Write(buf[:])
	h.Write([]byte(name))
	ino := h.Sum64() & (1<<63 - 1)
	if ino < 2 {
		ino += 2
	}
	return ino
}

// nodeIno returns the inode number of a tree node named name in the
// directory parentIno of snapshot snID. Hard-linked files share the number
// derived from their device and inode, and their data: nodes that claim
// one inode with different contents are not links to one file
// (tree.LinkKey), and go-fuse would serve them as one.
func nodeIno(snID crypto.ID, parentIno uint64, name string, n *tree.Node) uint64 {
	if n != nil && n.IsHardLink() && n.Inode != 0 {
		return linkIno(snID, n, n.LinkData())
	}
	return hashIno(inoTagChild, snID, parentIno, 0, name)
}

// compactIno is nodeIno for node i of t, whose Head is h.
func compactIno(snID crypto.ID, parentIno uint64, name string, t *tree.Compact, i int, h *tree.Node) uint64 {
	if h.IsHardLink() && h.Inode != 0 {
		return linkIno(snID, h, t.LinkData(i))
	}
	return hashIno(inoTagChild, snID, parentIno, 0, name)
}

// linkIno returns the inode number of a hard-linked node with the given
// LinkData.
func linkIno(snID crypto.ID, n *tree.Node, data crypto.ID) uint64 {
	return hashIno(inoTagHardlink, snID, n.DeviceID, n.Inode, string(n.Type)+"\x00"+string(data[:]))
}

// metaIno returns the inode number of the layout directory at path p.
func metaIno(p string) uint64 {
	if p == "" {
		return fuse.FUSE_ROOT_ID
	}
	return hashIno(inoTagMeta, crypto.ID{}, 0, 0, p)
}

// versionsIno returns the inode number of a versions directory.
func versionsIno(key crypto.ID, parentIno uint64, name string) uint64 {
	return hashIno(inoTagVersions, key, parentIno, 0, name)
}

// typeBits returns the S_IFMT bits of a node type.
func typeBits(t tree.NodeType) uint32 {
	switch t {
	case tree.Dir:
		return syscall.S_IFDIR
	case tree.Symlink:
		return syscall.S_IFLNK
	case tree.Dev:
		return syscall.S_IFBLK
	case tree.CharDev:
		return syscall.S_IFCHR
	case tree.FIFO:
		return syscall.S_IFIFO
	case tree.Socket:
		return syscall.S_IFSOCK
	default: // File, Irregular
		return syscall.S_IFREG
	}
}

// encodeDev turns a device number as Go's stat reports it (glibc encoding)
// into the kernel's 32-bit encoding that FUSE passes.
func encodeDev(rdev uint64) uint32 {
	major := uint32((rdev>>8)&0xfff) | uint32((rdev>>32)&^0xfff)
	minor := uint32(rdev&0xff) | uint32((rdev>>12)&^0xff)
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// setTime stores t as seconds and nanoseconds; the zero time stays 0.
func setTime(sec *uint64, nsec *uint32, t time.Time) {
	if t.IsZero() {
		return
	}
	*sec = uint64(t.Unix())
	*nsec = uint32(t.Nanosecond())
}

// fillAttr sets the attributes of a tree node.
func fillAttr(a *fuse.Attr, n *tree.Node, ownerRoot bool) {
	a.Mode = typeBits(n.Type) | setIDBits(fsnode.UnixMode(n.Mode), n, ownerRoot)
	a.Size = n.Size
	switch n.Type {
	case tree.Symlink:
		a.Size = uint64(len(n.LinkTarget))
	case tree.Irregular:
		a.Size = 0
	}
	a.Blocks = n.Blocks
	a.Blksize = 4096
	a.Nlink = uint32(min(n.Links, 1<<32-1))
	if a.Nlink == 0 {
		a.Nlink = 1
		if n.Type == tree.Dir {
			a.Nlink = 2
		}
	}
	if !ownerRoot {
		a.Uid, a.Gid = n.UID, n.GID
	}
	if n.Type == tree.Dev || n.Type == tree.CharDev {
		a.Rdev = encodeDev(n.Rdev)
	}
	setTime(&a.Atime, &a.Atimensec, n.AccessTime)
	setTime(&a.Mtime, &a.Mtimensec, n.ModTime)
	setTime(&a.Ctime, &a.Ctimensec, n.ChangeTime)
}

// noID is (uid_t)-1, which chown(2) reads as "leave unchanged".
const noID = 1<<32 - 1

// setIDBits returns mode without the setuid (setgid) bit when the mount
// does not show the stored owner (group): with --owner-root, or when the
// stored id is noID. The mount is nosuid, but a copy made with cp -a as
// root would be a root-owned set-id file that the snapshot never had
// (restore drops the bits in the same cases).
func setIDBits(mode uint32, n *tree.Node, ownerRoot bool) uint32 {
	if ownerRoot || n.UID == noID {
		mode &^= syscall.S_ISUID
	}
	if ownerRoot || n.GID == noID {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// fillDirAttr sets the attributes of a synthesized directory.
func (m *mountFS) fillDirAttr(a *fuse.Attr, t time.Time) {
	a.Mode = syscall.S_IFDIR | 0o555
	a.Nlink = 2
	a.Uid, a.Gid = m.uid, m.gid
	a.Blksize = 4096
	setTime(&a.Atime, &a.Atimensec, t)
	setTime(&a.Mtime, &a.Mtimensec, t)
	setTime(&a.Ctime, &a.Ctimensec, t)
}

// getxattr implements the getxattr contract over stored attributes.
func getxattr(xs []tree.Xattr, name string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range xs {
		if x.Name == name {
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	return 0, syscall.ENODATA
}

// listxattr implements the listxattr contract: NUL-terminated names.
func listxattr(xs []tree.Xattr, dest []byte) (uint32, syscall.Errno) {
	size := 0
	for _, x := range xs {
		size += len(x.Name) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, x := range xs {
		off += copy(dest[off:], x.Name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

// roNode gives every node the read-only behaviour of the file system.
type roNode struct{}

// Statfs reports a read-only file system without free space.
func (roNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{}
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

// Setattr refuses changes.
func (roNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// Setxattr refuses changes.
func (roNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

// Removexattr refuses changes.
func (roNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.EROFS
}

// Access allows reading and searching; the kernel checks permissions itself
// unless the mount has no default_permissions, and then everyone may read.
func (roNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	if mask&2 != 0 { // W_OK
		return syscall.EROFS
	}
	return 0
}

// nodeGetxattr serves getxattr of a tree node; a directory without one (a
// snapshot's root) has no attributes.
func nodeGetxattr(n *tree.Node, attr string, dest []byte) (uint32, syscall.Errno) {
	if n == nil {
		return 0, syscall.ENODATA
	}
	return getxattr(n.Xattrs, attr, dest)
}

// nodeListxattr serves listxattr of a tree node, or of none (no attributes).
func nodeListxattr(n *tree.Node, dest []byte) (uint32, syscall.Errno) {
	if n == nil {
		return 0, 0
	}
	return listxattr(n.Xattrs, dest)
}
