package tree

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"unsafe"

	"dj/repo/crypto"
)

// Compact is a decoded, checked tree in the form a long-lived cache keeps
// (the mount's): one fixed-size record per node in one array, the names and
// link targets in one byte arena, the content and subtree ids in one id
// arena, user and group names interned. It costs about half the memory of
// the nodes Decode returns (120 bytes per node plus its name and ids,
// against about 340 for a file of one chunk), holds no pointer per node (the
// garbage collector never scans its nodes), and its nodes are made on
// demand: Node returns a fresh copy that does not pin the arrays, so a
// caller may keep one node of a huge tree without keeping the tree.
//
// A Compact is immutable and safe for concurrent use.
type Compact struct {
	recs   []crec
	strs   []byte            // names and link targets
	ids    []crypto.ID       // content of files, then the subtree of a directory
	owners []string          // distinct user and group names; owners[0] is ""
	xattrs map[int32][]Xattr // the nodes that have extended attributes
}

// span is a range of an arena.
type span struct{ off, n uint32 }

// crec is one node of a Compact. It holds no pointers.
type crec struct {
	mtime, atime, ctime                   int64
	size, blocks, links, inode, dev, rdev uint64
	name, link, content                   span
	mode, uid, gid                        uint32
	user, group                           uint32 // indexes into owners
	fixed                                 uint16 // FixedChunk / FixedChunkUnit
	typ                                   uint8  // index into compactTypes
	flags                                 uint8
}

// Flags of a crec.
const (
	// flagSubtree: the id after the content is the node's subtree.
	flagSubtree = 1 << iota
	// flagContent: Content was not nil (it may be empty).
	flagContent
)

// compactTypes are the node types a Compact holds, by crec.typ.
var compactTypes = [...]NodeType{File, Dir, Symlink, Dev, CharDev, FIFO, Socket, Irregular}

// RecordSize is the fixed cost of one node of a Compact, in bytes.
const RecordSize = int64(unsafe.Sizeof(crec{}))

// ErrTreeTooLarge is returned when a tree does not fit the 32-bit offsets
// of a Compact (more than 4 GiB of names or 2^32 ids).
var ErrTreeTooLarge = errors.New("tree too large")

// DecodeCompact decodes and checks a tree (as Decode does: it accepts
// exactly what Decode accepts) straight into its compact form. The JSON
// Encode writes is read node by node, so the decoder's memory is the
// Compact's and one node's, not that of every decoded node (about 340 bytes
// a node for files of one chunk); anything else goes through Decode.
func DecodeCompact(b []byte) (*Compact, error) {
	if c, err := decodePlainCompact(b); err == nil {
		return c, nil
	}
	// Not plain, or refused: Decode decides, and says why.
	t, err := Decode(b)
	if err != nil {
		return nil, err
	}
	return NewCompact(t)
}

// decodePlainCompact is DecodeCompact for the JSON the plain decoder reads.
func decodePlainCompact(b []byte) (*Compact, error) {
	d := plainDecoder{b: b}
	var (
		bld  compactBuilder
		n    Node
		prev string
		err  error
	)
	err = d.top(func() {
		bld.init(nodesEstimate(b), len(b)/16)
	}, func() error {
		n = Node{}
		if err := d.node(&n); err != nil {
			return err
		}
		if err := checkNode(&n, len(bld.c.recs) > 0, prev); err != nil {
			return err
		}
		prev = n.Name
		return bld.add(&n)
	})
	if err != nil {
		return nil, err
	}
	return bld.finish(), nil
}

// NewCompact returns the compact form of t, whose nodes must be of known
// types, and sorted by name for Search to find them (Decode returns them
// so; NewCompact does not check the order). Times must be
// representable as nanoseconds since 1970 (as every decoded time is).
// Xattr values are shared with t, not copied.
func NewCompact(t *Tree) (*Compact, error) {
	var bld compactBuilder
	names := 0
	for _, n := range t.Nodes {
		names += len(n.Name)
	}
	bld.init(len(t.Nodes), names)
	for _, n := range t.Nodes {
		if n == nil {
			return nil, errors.New("compact tree: nil node")
		}
		if err := bld.add(n); err != nil {
			return nil, err
		}
	}
	return bld.finish(), nil
}

// compactBuilder appends nodes to a Compact.
type compactBuilder struct {
	c      Compact
	owner  map[string]uint32
	typeOf map[NodeType]uint8
}

func (b *compactBuilder) init(nodes, strs int) {
	b.c.recs = make([]crec, 0, nodes)
	b.c.strs = make([]byte, 0, strs)
	b.c.ids = make([]crypto.ID, 0, nodes)
	b.c.owners = []string{""}
	b.owner = map[string]uint32{"": 0}
	b.typeOf = make(map[NodeType]uint8, len(compactTypes))
	for i, t := range compactTypes {
		b.typeOf[t] = uint8(i)
	}
}

// str appends s to the string arena.
func (b *compactBuilder) str(s string) (span, error) {
	if len(b.c.strs)+len(s) > math.MaxUint32 {
		return span{}, ErrTreeTooLarge
	}
	sp := span{uint32(len(b.c.strs)), uint32(len(s))}
	b.c.strs = append(b.c.strs, s...)
	return sp, nil
}

// interned returns the index of an owner name.
func (b *compactBuilder) interned(s string) uint32 {
	k, ok := b.owner[s]
	if !ok {
		k = uint32(len(b.c.owners))
		b.c.owners = append(b.c.owners, s)
		b.owner[s] = k
	}
	return k
}

func (b *compactBuilder) add(n *Node) error {
	typ, ok := b.typeOf[n.Type]
	if !ok {
		return fmt.Errorf("compact tree: node %q has unknown type %q", n.Name, n.Type)
	}
	if len(b.c.recs) >= math.MaxInt32 || len(b.c.ids)+len(n.Content)+1 > math.MaxUint32 {
		return ErrTreeTooLarge
	}
	r := crec{
		mtime: timeNS(n.ModTime), atime: timeNS(n.AccessTime), ctime: timeNS(n.ChangeTime),
		size: n.Size, blocks: n.Blocks, links: n.Links, inode: n.Inode, dev: n.DeviceID, rdev: n.Rdev,
		mode: uint32(n.Mode), uid: n.UID, gid: n.GID,
		user: b.interned(n.User), group: b.interned(n.Group),
		typ:     typ,
		fixed:   uint16(n.FixedChunk / FixedChunkUnit),
		content: span{uint32(len(b.c.ids)), uint32(len(n.Content))},
	}
	var err error
	if r.name, err = b.str(n.Name); err != nil {
		return err
	}
	if r.link, err = b.str(n.LinkTarget); err != nil {
		return err
	}
	if n.Content != nil {
		r.flags |= flagContent
	}
	b.c.ids = append(b.c.ids, n.Content...)
	if n.Subtree != nil {
		r.flags |= flagSubtree
		b.c.ids = append(b.c.ids, *n.Subtree)
	}
	if len(n.Xattrs) > 0 {
		if b.c.xattrs == nil {
			b.c.xattrs = make(map[int32][]Xattr)
		}
		b.c.xattrs[int32(len(b.c.recs))] = n.Xattrs
	}
	b.c.recs = append(b.c.recs, r)
	return nil
}

// finish returns the Compact, its arrays trimmed to their length.
func (b *compactBuilder) finish() *Compact {
	c := b.c
	c.recs = clip(c.recs)
	c.strs = clip(c.strs)
	c.ids = clip(c.ids)
	return &c
}

// clip returns s in an array of its length when the spare capacity is worth
// a copy.
func clip[T any](s []T) []T {
	if cap(s)-len(s) <= len(s)/16 {
		return s[:len(s):len(s)]
	}
	return append(make([]T, 0, len(s)), s...)
}

// Len returns the number of nodes.
func (c *Compact) Len() int { return len(c.recs) }

// nameBytes returns node i's name in the arena.
func (c *Compact) nameBytes(i int) []byte {
	r := &c.recs[i]
	return c.strs[r.name.off : r.name.off+r.name.n]
}

// NameLen returns the length in bytes of the name of node i.
func (c *Compact) NameLen(i int) int { return int(c.recs[i].name.n) }

// Name returns the name of node i (a copy that does not pin the tree).
func (c *Compact) Name(i int) string { return string(c.nameBytes(i)) }

// Search returns the index of the node named name, and whether there is one.
func (c *Compact) Search(name string) (int, bool) {
	i := sort.Search(len(c.recs), func(i int) bool { return string(c.nameBytes(i)) >= name })
	return i, i < len(c.recs) && string(c.nameBytes(i)) == name
}

// Type returns the type of node i.
func (c *Compact) Type(i int) NodeType { return compactTypes[c.recs[i].typ] }

// Size returns the size of node i.
func (c *Compact) Size(i int) uint64 { return c.recs[i].size }

// Content returns the content ids of node i. The slice is the tree's own:
// callers must not modify it, and holding it keeps the id arena.
func (c *Compact) Content(i int) []crypto.ID {
	r := &c.recs[i]
	return c.ids[r.content.off : r.content.off+r.content.n : r.content.off+r.content.n]
}

// Subtree returns the subtree of node i, and whether it has one.
func (c *Compact) Subtree(i int) (crypto.ID, bool) {
	r := &c.recs[i]
	if r.flags&flagSubtree == 0 {
		return crypto.ID{}, false
	}
	return c.ids[r.content.off+r.content.n], true
}

// Head returns node i without its name, strings, content, subtree and
// xattrs: its type, mode, owner ids, times and numbers. It allocates
// nothing.
func (c *Compact) Head(i int) Node {
	r := &c.recs[i]
	return Node{
		Type: compactTypes[r.typ], Mode: os.FileMode(r.mode), UID: r.uid, GID: r.gid,
		ModTime: nsTime(r.mtime), AccessTime: nsTime(r.atime), ChangeTime: nsTime(r.ctime),
		Size: r.size, Blocks: r.blocks, Links: r.links, Inode: r.inode, DeviceID: r.dev, Rdev: r.rdev,
		FixedChunk: uint64(r.fixed) * FixedChunkUnit,
	}
}

// Node returns node i, freshly made: it shares nothing with the tree but
// the xattr values.
func (c *Compact) Node(i int) *Node {
	r := &c.recs[i]
	n := c.Head(i)
	n.Name = c.Name(i)
	n.User, n.Group = c.owners[r.user], c.owners[r.group]
	n.LinkTarget = string(c.strs[r.link.off : r.link.off+r.link.n])
	if r.flags&flagContent != 0 {
		n.Content = append(make([]crypto.ID, 0, r.content.n), c.Content(i)...)
	}
	if id, ok := c.Subtree(i); ok {
		n.Subtree = &id
	}
	if xs := c.xattrs[int32(i)]; len(xs) > 0 {
		n.Xattrs = append([]Xattr(nil), xs...)
	}
	return &n
}

// Tree returns every node, freshly made.
func (c *Compact) Tree() *Tree {
	t := &Tree{Nodes: make([]*Node, len(c.recs))}
	for i := range c.recs {
		t.Nodes[i] = c.Node(i)
	}
	return t
}

// Memory returns the bytes the tree takes.
func (c *Compact) Memory() int64 {
	n := int64(128) + RecordSize*int64(cap(c.recs)) + int64(cap(c.strs)) + crypto.IDSize*int64(cap(c.ids))
	for _, s := range c.owners {
		n += 16 + int64(len(s))
	}
	for _, xs := range c.xattrs {
		n += 64
		for _, x := range xs {
			n += 48 + int64(len(x.Name)+len(x.Value))
		}
	}
	return n
}
