package tree

import (
	"errors"
	"fmt"
	"io"
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
//
// A Compact too large for memory (SpillOptions) keeps its records, names
// and ids in files (compactFile.go) and reads them through a page cache of
// FilePageMemory bytes; its accessors then return copies, and Err reports
// a failed read.
type Compact struct {
	n      int               // the number of nodes
	dirs   int               // the number of nodes with a subtree
	maxLen int               // the length of the longest name
	recs   []crec            // nil when file holds them
	strs   []byte            // names and link targets
	ids    []crypto.ID       // content of files, then the subtree of a directory
	file   *compactFile      // the records, names and ids, when in files
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

// ErrSpill means a Compact could not be moved to files (SpillOptions): the
// directory could not be written, or is full.
var ErrSpill = errors.New("cannot move a tree to a file")

// DecodeCompact decodes and checks a tree (as Decode does: it accepts
// exactly what Decode accepts) straight into its compact form. The JSON
// Encode writes is read node by node, so the decoder's memory is the
// Compact's and one node's, not that of every decoded node (about 340 bytes
// a node for files of one chunk); anything else goes through Decode.
func DecodeCompact(b []byte) (*Compact, error) {
	return DecodeCompactSpill(b, SpillOptions{})
}

// DecodeCompactSpill is DecodeCompact for a Compact that moves to files as
// spill says.
func DecodeCompactSpill(b []byte, spill SpillOptions) (*Compact, error) {
	c, err := decodePlainCompact(&plainDecoder{b: b, shareIDs: true, ids: []crypto.ID{}}, nodesEstimate(b), len(b)/16, spill.eager(len(b)))
	if err == nil || errors.Is(err, ErrSpill) {
		return c, err
	}
	// Not plain, or refused: Decode decides, and says why.
	t, err := Decode(b)
	if err != nil {
		return nil, err
	}
	return newCompact(t, spill)
}

// ErrNotStreamable means DecodeCompactReader could not read a tree as it
// streams (it is not in the plain form Encode writes, or it is damaged): the
// caller decodes the whole tree with DecodeCompactSpill instead, which
// accepts what Decode accepts and says what is wrong.
var ErrNotStreamable = errors.New("tree cannot be decoded as it streams")

// streamWindow is the first size of DecodeCompactReader's window on the
// stream; it doubles for a node that does not fit.
const streamWindow = 1 << 20

// DecodeCompactReader decodes and checks the tree that r streams, whose
// plain length is about plainLen, into a Compact that moves to files as
// spill says. It reads r to its end and holds only a window of it, about a
// MiB, so a huge tree costs its Compact (or with spill, its page cache),
// not its plaintext. A tree it cannot decode gives an error wrapping
// ErrNotStreamable; a failed read of r, that error.
func DecodeCompactReader(r io.Reader, plainLen int, spill SpillOptions) (*Compact, error) {
	return decodeCompactReader(r, plainLen, spill, streamWindow)
}

func decodeCompactReader(r io.Reader, plainLen int, spill SpillOptions, window int) (*Compact, error) {
	d := &plainDecoder{src: r, window: window, shareIDs: true, ids: []crypto.ID{}}
	d.fill()
	// plainLen comes from the caller, who bounds it (the repository: by
	// the stored length's expansion), and is checked there against what
	// was read: the arrays start at their estimated size, not by doubling
	// up from small (which cost a million files twice their Compact).
	c, err := decodePlainCompact(d, plainLen/256, plainLen/32, spill.eager(plainLen))
	if d.readErr != nil {
		return nil, d.readErr
	}
	if err != nil && !errors.Is(err, ErrSpill) {
		err = fmt.Errorf("%w: %w", ErrNotStreamable, err)
	}
	return c, err
}

// decodePlainCompact decodes the JSON the plain decoder reads into a
// Compact; the builder starts with room for nodes nodes and strs bytes of
// names.
func decodePlainCompact(d *plainDecoder, nodes, strs int, spill SpillOptions) (*Compact, error) {
	bld := compactBuilder{spill: spill}
	defer bld.abort()
	var (
		n    Node
		prev string
	)
	err := d.top(func() {
		bld.init(nodes, strs)
	}, func() error {
		if err := d.nextNode(&n); err != nil {
			return err
		}
		if err := CheckNode(&n, bld.c.n > 0, prev); err != nil {
			return err
		}
		prev = n.Name
		return bld.add(&n)
	})
	if err != nil {
		return nil, err
	}
	return bld.finish()
}

// NewCompact returns the compact form of t, whose nodes must be of known
// types, and sorted by name for Search to find them (Decode returns them
// so; NewCompact does not check the order). Times must be
// representable as nanoseconds since 1970 (as every decoded time is).
// Xattr values are shared with t, not copied.
func NewCompact(t *Tree) (*Compact, error) {
	return newCompact(t, SpillOptions{})
}

func newCompact(t *Tree, spill SpillOptions) (*Compact, error) {
	bld := compactBuilder{spill: spill}
	defer bld.abort()
	names := 0
	for _, n := range t.Nodes {
		if n != nil {
			names += len(n.Name)
		}
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
	return bld.finish()
}

// compactBuilder appends nodes to a Compact, in memory until the arrays
// pass spill.Above, then to files.
type compactBuilder struct {
	c     Compact
	owner map[string]uint32
	// lastOwner and lastIndex are the owner names interned last and
	// their indexes: most nodes of a tree share their user and group.
	lastOwner [2]string
	lastIndex [2]uint32
	spill     SpillOptions
	// nStrs and nIDs are the lengths of the arenas, what is in files
	// included.
	nStrs, nIDs int
	w           *compactWriter // non-nil once the arrays are in files
	done        bool           // finish returned the Compact
}

// spillBatch is how many bytes a builder in files holds before it writes
// them out.
const spillBatch = 256 << 10

func (b *compactBuilder) init(nodes, strs int) {
	if b.spill.now {
		nodes, strs = spillBatch/int(RecordSize), spillBatch
	}
	b.c.recs = make([]crec, 0, nodes)
	b.c.strs = make([]byte, 0, strs)
	b.c.ids = make([]crypto.ID, 0, nodes)
	b.c.owners = []string{""}
	b.owner = map[string]uint32{"": 0}
}

// str appends s to the string arena.
func (b *compactBuilder) str(s string) (span, error) {
	if b.nStrs+len(s) > math.MaxUint32 {
		return span{}, ErrTreeTooLarge
	}
	sp := span{uint32(b.nStrs), uint32(len(s))}
	b.c.strs = append(b.c.strs, s...)
	b.nStrs += len(s)
	return sp, nil
}

// interned returns the index of an owner name.
func (b *compactBuilder) interned(s string) uint32 {
	for i, o := range b.lastOwner {
		if s == o {
			return b.lastIndex[i]
		}
	}
	k, ok := b.owner[s]
	if !ok {
		k = uint32(len(b.c.owners))
		b.c.owners = append(b.c.owners, s)
		b.owner[s] = k
	}
	b.lastOwner[1], b.lastOwner[0] = b.lastOwner[0], s
	b.lastIndex[1], b.lastIndex[0] = b.lastIndex[0], k
	return k
}

func (b *compactBuilder) add(n *Node) error {
	typ, ok := typeIndex(n.Type)
	if !ok {
		return fmt.Errorf("compact tree: node %q has unknown type %q", n.Name, n.Type)
	}
	if b.c.n >= math.MaxInt32 || b.nIDs+len(n.Content)+1 > math.MaxUint32 {
		return ErrTreeTooLarge
	}
	r := crec{
		mtime: timeNS(n.ModTime), atime: timeNS(n.AccessTime), ctime: timeNS(n.ChangeTime),
		size: n.Size, blocks: n.Blocks, links: n.Links, inode: n.Inode, dev: n.DeviceID, rdev: n.Rdev,
		mode: uint32(n.Mode), uid: n.UID, gid: n.GID,
		user: b.interned(n.User), group: b.interned(n.Group),
		typ:     typ,
		fixed:   uint16(n.FixedChunk / FixedChunkUnit),
		content: span{uint32(b.nIDs), uint32(len(n.Content))},
	}
	var err error
	if r.name, err = b.str(n.Name); err != nil {
		return err
	}
	b.c.maxLen = max(b.c.maxLen, len(n.Name))
	if r.link, err = b.str(n.LinkTarget); err != nil {
		return err
	}
	if n.Content != nil {
		r.flags |= flagContent
	}
	b.c.ids = append(b.c.ids, n.Content...)
	b.nIDs += len(n.Content)
	if n.Subtree != nil {
		r.flags |= flagSubtree
		b.c.dirs++
		b.c.ids = append(b.c.ids, *n.Subtree)
		b.nIDs++
	}
	if len(n.Xattrs) > 0 {
		if b.c.xattrs == nil {
			b.c.xattrs = make(map[int32][]Xattr)
		}
		b.c.xattrs[int32(b.c.n)] = n.Xattrs
	}
	b.c.recs = append(b.c.recs, r)
	b.c.n++
	return b.spillSome()
}

// held returns the bytes of the arrays held in memory.
func (b *compactBuilder) held() int64 {
	return RecordSize*int64(len(b.c.recs)) + int64(len(b.c.strs)) + crypto.IDSize*int64(len(b.c.ids))
}

// spillSome moves the arrays to files once they pass spill.Above, and
// from then on writes out what is held every spillBatch bytes.
func (b *compactBuilder) spillSome() error {
	if b.w == nil {
		if b.spill.Above <= 0 || b.held() <= b.spill.Above && !b.spill.now {
			return nil
		}
		f, err := newCompactFile(b.spill.Dir)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrSpill, err)
		}
		b.c.file = f
		b.w = newCompactWriter(f)
	} else if b.held() < spillBatch {
		return nil
	}
	if err := b.w.write(b.c.recs, b.c.strs, b.c.ids); err != nil {
		return fmt.Errorf("%w: %w", ErrSpill, err)
	}
	if cap(b.c.strs) > 2*spillBatch || cap(b.c.recs) > 2*spillBatch/int(RecordSize) || cap(b.c.ids) > 2*spillBatch/crypto.IDSize {
		// The arrays of the tree so far: no longer needed.
		b.c.recs = make([]crec, 0, spillBatch/RecordSize)
		b.c.strs = make([]byte, 0, spillBatch)
		b.c.ids = make([]crypto.ID, 0, spillBatch/crypto.IDSize)
	} else {
		b.c.recs, b.c.strs, b.c.ids = b.c.recs[:0], b.c.strs[:0], b.c.ids[:0]
	}
	return nil
}

// finish returns the Compact, its arrays trimmed to their length, or
// written out to its files.
func (b *compactBuilder) finish() (*Compact, error) {
	if b.w != nil {
		if err := b.w.write(b.c.recs, b.c.strs, b.c.ids); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSpill, err)
		}
		if err := b.w.flush(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSpill, err)
		}
		c := b.c
		c.recs, c.strs, c.ids = nil, nil, nil
		b.done = true
		closeWhenUnreachable(&c)
		return &c, nil
	}
	c := b.c
	c.recs = clip(c.recs)
	c.strs = clip(c.strs)
	c.ids = clip(c.ids)
	b.done = true
	return &c, nil
}

// abort closes the files of a Compact that finish did not return.
func (b *compactBuilder) abort() {
	if !b.done && b.c.file != nil {
		b.c.file.close()
	}
}

// clip returns s in an array of its length when the spare capacity is worth
// a copy.
func clip[T any](s []T) []T {
	if cap(s)-len(s) <= len(s)/16 {
		return s[:len(s):len(s)]
	}
	return append(make([]T, 0, len(s)), s...)
}

// typeIndex returns the index of t in compactTypes.
func typeIndex(t NodeType) (uint8, bool) {
	for i, ct := range compactTypes {
		if ct == t {
			return uint8(i), true
		}
	}
	return 0, false
}

// Len returns the number of nodes.
func (c *Compact) Len() int { return c.n }

// rec returns the record of node i.
func (c *Compact) rec(i int) crec {
	if c.file == nil {
		return c.recs[i]
	}
	if uint(i) >= uint(c.n) {
		panic(fmt.Sprintf("tree: node %d of a Compact of %d", i, c.n))
	}
	return c.file.rec(i)
}

// strAt returns a span of the string arena (a copy when in files).
func (c *Compact) strAt(sp span) []byte {
	if c.file == nil {
		return c.strs[sp.off : sp.off+sp.n]
	}
	return c.file.strs(sp)
}

// idsAt returns a span of the id arena (a copy when in files).
func (c *Compact) idsAt(sp span) []crypto.ID {
	if c.file == nil {
		return c.ids[sp.off : sp.off+sp.n : sp.off+sp.n]
	}
	return c.file.ids(sp)
}

// nameBytes returns node i's name in the arena.
func (c *Compact) nameBytes(i int) []byte {
	return c.strAt(c.rec(i).name)
}

// NameLen returns the length in bytes of the name of node i.
func (c *Compact) NameLen(i int) int { return int(c.rec(i).name.n) }

// Name returns the name of node i (a copy that does not pin the tree).
func (c *Compact) Name(i int) string { return string(c.nameBytes(i)) }

// Search returns the index of the node named name, and whether there is one.
func (c *Compact) Search(name string) (int, bool) {
	i := sort.Search(c.n, func(i int) bool { return string(c.nameBytes(i)) >= name })
	return i, i < c.n && string(c.nameBytes(i)) == name
}

// MaxNameLen returns the length of the longest name in the tree.
func (c *Compact) MaxNameLen() int { return c.maxLen }

// Subtrees returns the number of nodes with a subtree.
func (c *Compact) Subtrees() int { return c.dirs }

// Entry returns the name of node i and its Head, with one read of its
// record: what a directory listing needs of each node.
func (c *Compact) Entry(i int) (string, Node) {
	r := c.rec(i)
	return string(c.strAt(r.name)), head(&r)
}

// Type returns the type of node i.
func (c *Compact) Type(i int) NodeType { return compactTypes[c.rec(i).typ] }

// Size returns the size of node i.
func (c *Compact) Size(i int) uint64 { return c.rec(i).size }

// Content returns the content ids of node i. For a tree in memory the
// slice is the tree's own: callers must not modify it, and holding it
// keeps the id arena; for a tree in files it is a copy.
func (c *Compact) Content(i int) []crypto.ID {
	return c.idsAt(c.rec(i).content)
}

// Subtree returns the subtree of node i, and whether it has one.
func (c *Compact) Subtree(i int) (crypto.ID, bool) {
	r := c.rec(i)
	return c.subtree(&r)
}

func (c *Compact) subtree(r *crec) (crypto.ID, bool) {
	if r.flags&flagSubtree == 0 {
		return crypto.ID{}, false
	}
	return c.idsAt(span{r.content.off + r.content.n, 1})[0], true
}

// Head returns node i without its name, strings, content, subtree and
// xattrs: its type, mode, owner ids, times and numbers. It allocates
// nothing.
func (c *Compact) Head(i int) Node {
	r := c.rec(i)
	return head(&r)
}

func head(r *crec) Node {
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
	r := c.rec(i)
	n := head(&r)
	n.Name = string(c.strAt(r.name))
	n.User, n.Group = c.owners[r.user], c.owners[r.group]
	n.LinkTarget = string(c.strAt(r.link))
	if r.flags&flagContent != 0 {
		n.Content = append(make([]crypto.ID, 0, r.content.n), c.idsAt(r.content)...)
	}
	if id, ok := c.subtree(&r); ok {
		n.Subtree = &id
	}
	if xs := c.xattrs[int32(i)]; len(xs) > 0 {
		n.Xattrs = append([]Xattr(nil), xs...)
	}
	return &n
}

// Tree returns every node, freshly made.
func (c *Compact) Tree() *Tree {
	t := &Tree{Nodes: make([]*Node, c.n)}
	for i := range c.n {
		t.Nodes[i] = c.Node(i)
	}
	return t
}

// InFiles reports whether the tree's records, names and ids are in files.
func (c *Compact) InFiles() bool { return c.file != nil }

// Err returns the first failed read of a Compact in files: the accessors
// returned zeros for what it could not read. It is nil for a Compact in
// memory.
func (c *Compact) Err() error {
	if c.file == nil {
		return nil
	}
	return c.file.error()
}

// Memory returns the bytes the tree takes in memory.
func (c *Compact) Memory() int64 {
	n := int64(128) + RecordSize*int64(cap(c.recs)) + int64(cap(c.strs)) + crypto.IDSize*int64(cap(c.ids))
	if c.file != nil {
		n += FilePageMemory
	}
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
