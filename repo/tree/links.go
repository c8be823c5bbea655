package tree

import (
	"crypto/sha256"
	"encoding/binary"

	"dj/repo/crypto"
)

// LinkKey identifies what the hard links to one inode share: the device
// and inode the node was backed up from, its type, and its data (see
// LinkData). Nodes with equal keys are links to one file; two nodes that
// claim the same device and inode but hold different data are not (a
// hostile or damaged tree, or an inode reused while the backup ran), and
// restore, dump and the mount keep them apart.
type LinkKey struct {
	DeviceID, Inode uint64
	Type            NodeType
	Data            crypto.ID
}

// IsHardLink reports whether n claims to be one of several links to an
// inode: it is not a directory and its link count is above one.
func (n *Node) IsHardLink() bool { return n.Type != Dir && n.Links > 1 }

// LinkKey returns the node's LinkKey.
func (n *Node) LinkKey() LinkKey {
	return LinkKey{n.DeviceID, n.Inode, n.Type, n.LinkData()}
}

// LinkData returns a hash of what the links to one inode share: size,
// content, link target and device number.
func (n *Node) LinkData() crypto.ID {
	return linkData(n.Size, n.Rdev, []byte(n.LinkTarget), n.Content)
}

// LinkData returns node i's LinkData without making the node.
func (c *Compact) LinkData(i int) crypto.ID {
	r := c.rec(i)
	return linkData(r.size, r.rdev, c.strAt(r.link), c.idsAt(r.content))
}

func linkData(size, rdev uint64, target []byte, content []crypto.ID) crypto.ID {
	h := sha256.New()
	var buf [24]byte
	binary.LittleEndian.PutUint64(buf[0:], size)
	binary.LittleEndian.PutUint64(buf[8:], rdev)
	binary.LittleEndian.PutUint64(buf[16:], uint64(len(target)))
	h.Write(buf[:])
	h.Write(target)
	for _, id := range content {
		h.Write(id[:])
	}
	var id crypto.ID
	h.Sum(id[:0])
	return id
}
