package maint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
	"dj/repo/walk"
)

// TreeLoader loads a tree blob by its id.
type TreeLoader interface {
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
}

// BlobSizer reports the plaintext length of a blob; *index.Index has this
// method.
type BlobSizer interface {
	PlainLength(t pack.BlobType, id crypto.ID) (int, bool)
}

// The modifiers of a Change (restic's letters).
const (
	ModAdded    = "+" // the entry exists only in the second snapshot
	ModRemoved  = "-" // the entry exists only in the first snapshot
	ModModified = "M" // a file's content or a symlink's target changed
	ModType     = "T" // the entry changed its type, e.g. a file became a directory
	ModMetadata = "U" // only metadata changed (reported with DiffOptions.Metadata)
)

// Change is one difference between two trees.
type Change struct {
	// Path starts with "/" (the compared root) and ends with "/" when the
	// entry is a directory (in the second snapshot, for T changes).
	Path string `json:"path"`
	// Modifier is one of ModAdded, ModRemoved, ModModified, ModType and
	// ModMetadata.
	Modifier string `json:"modifier"`
	// Before and After are the entry in the first and second snapshot; nil
	// where it does not exist.
	Before *tree.Node `json:"-"`
	After  *tree.Node `json:"-"`
}

// DiffStat counts what one side of a diff has that the other has not.
type DiffStat struct {
	// Files, Dirs and Others count added (or removed) entries by type,
	// including everything inside added (removed) directories.
	Files  int `json:"files"`
	Dirs   int `json:"dirs"`
	Others int `json:"others"`
	// DataBlobs and TreeBlobs count distinct blobs referenced only by this
	// side; Bytes is their plaintext size (needs DiffOptions.Sizes).
	DataBlobs int    `json:"data_blobs"`
	TreeBlobs int    `json:"tree_blobs"`
	Bytes     uint64 `json:"bytes"`
}

func (s *DiffStat) addNode(n *tree.Node) {
	switch n.Type {
	case tree.File:
		s.Files++
	case tree.Dir:
		s.Dirs++
	default:
		s.Others++
	}
}

// DiffStats sums up a diff, in the JSON shape of restic's diff statistics.
type DiffStats struct {
	// ChangedFiles counts files (not symlinks) whose content changed.
	ChangedFiles int      `json:"changed_files"`
	Added        DiffStat `json:"added"`
	Removed      DiffStat `json:"removed"`
	// UnknownSizes counts counted blobs whose size DiffOptions.Sizes did
	// not know; their bytes are missing from Bytes.
	UnknownSizes int `json:"-"`
}

// DiffOptions tunes Diff.
type DiffOptions struct {
	// Metadata reports entries whose metadata changed (mode, owner, times,
	// xattrs, size, links, inode, device; for a directory also its content
	// tree) with ModMetadata, as restic's --metadata does.
	Metadata bool
	// Path restricts the comparison to this directory of both trees (e.g.
	// "/home/ann"); Change paths are then relative to it. Empty or "/" is
	// the whole tree.
	Path string
	// Sizes, when set, gives the blob sizes that DiffStat.Bytes sums.
	Sizes BlobSizer
	// ExactStats makes the blob counts exactly restic's: a blob that also
	// occurs inside a subtree both snapshots share is not counted as added
	// or removed. That needs loading the shared subtrees once each (as
	// restic does), which Diff skips otherwise. Without it, such a blob
	// (say, a file copied out of an unchanged directory) is counted too.
	ExactStats bool
}

// Errors of Diff.
var (
	// ErrPathNotFound is returned when DiffOptions.Path does not exist in a tree.
	ErrPathNotFound = errors.New("path not found")
	// ErrNotDir is returned when DiffOptions.Path is not a directory in a tree.
	ErrNotDir = errors.New("not a directory")
	// ErrBadTree is returned for a tree that breaks the tree rules (unsorted,
	// duplicate or invalid names, a directory without subtree) or nests
	// deeper than any real file system.
	ErrBadTree = errors.New("invalid tree")
)

// maxTreeDepth bounds the recursion; a path of this many levels exceeds any
// real file system's path length limit, so only a corrupt or cyclic tree
// gets there.
const maxTreeDepth = 4096

// blobRef names a blob of either type; a data and a tree blob may share an id.
type blobRef struct {
	id   crypto.ID
	tree bool
}

type blobSet map[blobRef]struct{}

func (s blobSet) addNode(n *tree.Node) {
	switch n.Type {
	case tree.File:
		for _, id := range n.Content {
			s[blobRef{id, false}] = struct{}{}
		}
	case tree.Dir:
		if n.Subtree != nil {
			s[blobRef{*n.Subtree, true}] = struct{}{}
		}
	}
}

type differ struct {
	l      TreeLoader
	opts   DiffOptions
	fn     func(Change) error
	stats  DiffStats
	before blobSet // blobs seen on the first side
	after  blobSet // blobs seen on the second side
	shared []crypto.ID
}

// Diff compares the trees a and b (usually two snapshots' root trees) and
// calls fn for each change, depth first with the entries of a directory in
// name order and a directory's contents right after it. Directories present
// in both trees with equal subtree ids are skipped without loading. The
// entries inside an added or removed directory are reported one by one, and
// so are those of a directory that replaced, or was replaced by, another
// type.
//
// A file is ModModified when its content list or size changed, a symlink
// when its target changed; an entry that changed type is ModType; with
// opts.Metadata any other difference is ModMetadata. An error from fn stops
// the walk and is returned.
func Diff(ctx context.Context, l TreeLoader, a, b crypto.ID, opts DiffOptions, fn func(Change) error) (DiffStats, error) {
	d := &differ{l: l, opts: opts, fn: fn, before: blobSet{}, after: blobSet{}}
	var err error
	if a, err = d.resolve(ctx, a, opts.Path); err != nil {
		return DiffStats{}, err
	}
	if b, err = d.resolve(ctx, b, opts.Path); err != nil {
		return DiffStats{}, err
	}
	d.before[blobRef{a, true}] = struct{}{}
	d.after[blobRef{b, true}] = struct{}{}
	if a != b {
		if err := d.diffTree(ctx, "/", a, b, 0); err != nil {
			return DiffStats{}, err
		}
	}

	removed := minus(d.before, d.after)
	added := minus(d.after, d.before)
	if opts.ExactStats && len(d.shared) > 0 {
		if err := d.dropShared(ctx, removed, added); err != nil {
			return DiffStats{}, err
		}
	}
	d.countBlobs(removed, &d.stats.Removed)
	d.countBlobs(added, &d.stats.Added)
	return d.stats, nil
}

// resolve follows p from the tree root and returns the subtree id there.
func (d *differ) resolve(ctx context.Context, root crypto.ID, p string) (crypto.ID, error) {
	id := root
	walked := ""
	for _, name := range strings.Split(path.Clean("/"+p), "/") {
		if name == "" {
			continue
		}
		t, err := d.open(ctx, id, walked+"/")
		if err != nil {
			return crypto.ID{}, err
		}
		walked += "/" + name
		n, err := t.find(name)
		if err != nil {
			return crypto.ID{}, err
		}
		switch {
		case n == nil:
			return crypto.ID{}, fmt.Errorf("%w: %q in tree %s", ErrPathNotFound, walked, root.Short())
		case n.Type != tree.Dir:
			return crypto.ID{}, fmt.Errorf("%q in tree %s: %w", walked, root.Short(), ErrNotDir)
		}
		id = *n.Subtree
	}
	return id, nil
}

// treeReader reads the nodes of one loaded tree in order, checking each as
// it comes: a tree of a million entries is never decoded whole (walk.Load).
type treeReader struct {
	t   walk.List
	id  crypto.ID
	at  string
	i   int        // index of cur
	cur *tree.Node // node i; nil past the last
}

// open loads the tree id found at at and reads its first node.
func (d *differ) open(ctx context.Context, id crypto.ID, at string) (*treeReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := walk.Load(ctx, d.l, id)
	if err != nil {
		return nil, fmt.Errorf("load tree %s at %q: %w", id.Short(), at, err)
	}
	r := &treeReader{t: t, id: id, at: at, i: -1}
	return r, r.next()
}

// next moves to the next node and checks it: a null node or one
// tree.CheckNode refuses makes the tree bad (the repository refuses such
// trees when it decodes them; other loaders may not).
func (r *treeReader) next() error {
	var prev string
	if r.cur != nil {
		prev = r.cur.Name
	}
	r.i++
	r.cur = nil
	if r.i >= r.t.Len() {
		if err := r.t.Err(); err != nil {
			return fmt.Errorf("load tree %s at %q: %w", r.id.Short(), r.at, err)
		}
		return nil
	}
	n := r.t.Node(r.i)
	if n == nil {
		return fmt.Errorf("tree %s at %q: %w: null node", r.id.Short(), r.at, ErrBadTree)
	}
	if err := tree.CheckNode(n, r.i > 0, prev); err != nil {
		return fmt.Errorf("tree %s at %q: %w: %w", r.id.Short(), r.at, ErrBadTree, err)
	}
	r.cur = n
	return nil
}

// find returns the node named name, or nil if there is none, by a binary
// search of the tree (a path through a directory of a million files costs
// a few reads, not a million nodes).
func (r *treeReader) find(name string) (*tree.Node, error) {
	n := r.t.Find(name)
	if err := r.t.Err(); err != nil {
		return nil, fmt.Errorf("load tree %s at %q: %w", r.id.Short(), r.at, err)
	}
	if n != nil && n.Type == tree.Dir && n.Subtree == nil {
		return nil, fmt.Errorf("tree %s at %q: %w: directory %q has no subtree", r.id.Short(), r.at, ErrBadTree, n.Name)
	}
	return n, nil
}

func (d *differ) emit(p, mod string, before, after *tree.Node) error {
	return d.fn(Change{Path: p, Modifier: mod, Before: before, After: after})
}

// diffTree compares the trees ida and idb found at prefix (which ends in "/").
func (d *differ) diffTree(ctx context.Context, prefix string, ida, idb crypto.ID, depth int) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("%w: deeper than %d levels at %q", ErrBadTree, maxTreeDepth, prefix)
	}
	ta, err := d.open(ctx, ida, prefix)
	if err != nil {
		return err
	}
	tb, err := d.open(ctx, idb, prefix)
	if err != nil {
		return err
	}
	for ta.cur != nil || tb.cur != nil {
		var n1, n2 *tree.Node
		var errA, errB error
		switch a, b := ta.cur, tb.cur; {
		case b == nil || (a != nil && a.Name < b.Name):
			n1, errA = a, ta.next()
		case a == nil || b.Name < a.Name:
			n2, errB = b, tb.next()
		default:
			n1, n2, errA, errB = a, b, ta.next(), tb.next()
		}
		if err := errors.Join(errA, errB); err != nil {
			return err
		}
		var err error
		switch {
		case n2 == nil:
			err = d.oneSided(ctx, prefix, n1, ModRemoved, &d.stats.Removed, d.before, depth)
		case n1 == nil:
			err = d.oneSided(ctx, prefix, n2, ModAdded, &d.stats.Added, d.after, depth)
		default:
			err = d.both(ctx, prefix, n1, n2, depth)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// both handles an entry present on both sides.
func (d *differ) both(ctx context.Context, prefix string, n1, n2 *tree.Node, depth int) error {
	d.before.addNode(n1)
	d.after.addNode(n2)
	p := prefix + n2.Name
	if n2.Type == tree.Dir {
		p += "/"
	}
	mod := modifier(n1, n2, d.opts.Metadata)
	if mod == ModModified && n1.Type == tree.File {
		d.stats.ChangedFiles++
	}
	if mod != "" {
		if err := d.emit(p, mod, n1, n2); err != nil {
			return err
		}
	}
	switch {
	case n1.Type == tree.Dir && n2.Type == tree.Dir:
		if *n1.Subtree == *n2.Subtree {
			if d.opts.ExactStats {
				d.shared = append(d.shared, *n1.Subtree)
			}
			return nil
		}
		return d.diffTree(ctx, p, *n1.Subtree, *n2.Subtree, depth+1)
	case n1.Type == tree.Dir:
		return d.walk(ctx, prefix+n1.Name+"/", *n1.Subtree, ModRemoved, &d.stats.Removed, d.before, depth+1)
	case n2.Type == tree.Dir:
		return d.walk(ctx, p, *n2.Subtree, ModAdded, &d.stats.Added, d.after, depth+1)
	}
	return nil
}

// oneSided reports an entry that exists on one side only, and everything
// below it.
func (d *differ) oneSided(ctx context.Context, prefix string, n *tree.Node, mod string, st *DiffStat, set blobSet, depth int) error {
	p := prefix + n.Name
	if n.Type == tree.Dir {
		p += "/"
	}
	st.addNode(n)
	set.addNode(n)
	before, after := n, (*tree.Node)(nil)
	if mod == ModAdded {
		before, after = nil, n
	}
	if err := d.emit(p, mod, before, after); err != nil {
		return err
	}
	if n.Type == tree.Dir {
		return d.walk(ctx, p, *n.Subtree, mod, st, set, depth+1)
	}
	return nil
}

// walk reports every entry of the tree id (at prefix) as added or removed.
func (d *differ) walk(ctx context.Context, prefix string, id crypto.ID, mod string, st *DiffStat, set blobSet, depth int) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("%w: deeper than %d levels at %q", ErrBadTree, maxTreeDepth, prefix)
	}
	t, err := d.open(ctx, id, prefix)
	if err != nil {
		return err
	}
	for t.cur != nil {
		n := t.cur
		if err := t.next(); err != nil {
			return err
		}
		if err := d.oneSided(ctx, prefix, n, mod, st, set, depth); err != nil {
			return err
		}
	}
	return nil
}

// modifier returns the change letter for an entry present on both sides,
// or "" when nothing reportable changed.
func modifier(a, b *tree.Node, metadata bool) string {
	switch {
	case a.Type != b.Type:
		return ModType
	case a.Type == tree.File && (a.Size != b.Size || !slices.Equal(a.Content, b.Content)):
		return ModModified
	case a.Type == tree.Symlink && a.LinkTarget != b.LinkTarget:
		return ModModified
	case metadata && !sameNode(a, b):
		return ModMetadata
	}
	return ""
}

// sameNode reports whether two nodes agree in everything stored about them.
func sameNode(a, b *tree.Node) bool {
	if a.Name != b.Name || a.Type != b.Type || a.Mode != b.Mode ||
		a.UID != b.UID || a.GID != b.GID || a.User != b.User || a.Group != b.Group ||
		!a.ModTime.Equal(b.ModTime) || !a.AccessTime.Equal(b.AccessTime) || !a.ChangeTime.Equal(b.ChangeTime) ||
		a.Size != b.Size || a.Blocks != b.Blocks || a.Links != b.Links || a.Inode != b.Inode ||
		a.DeviceID != b.DeviceID || a.Rdev != b.Rdev || a.LinkTarget != b.LinkTarget ||
		!slices.Equal(a.Content, b.Content) || !sameXattrs(a.Xattrs, b.Xattrs) {
		return false
	}
	if (a.Subtree == nil) != (b.Subtree == nil) {
		return false
	}
	return a.Subtree == nil || *a.Subtree == *b.Subtree
}

// sameXattrs compares extended attributes regardless of their order.
func sameXattrs(a, b []tree.Xattr) bool {
	if len(a) != len(b) {
		return false
	}
	sorted := func(x []tree.Xattr) []tree.Xattr {
		s := append([]tree.Xattr(nil), x...)
		sort.Slice(s, func(i, j int) bool {
			if s[i].Name != s[j].Name {
				return s[i].Name < s[j].Name
			}
			return bytes.Compare(s[i].Value, s[j].Value) < 0
		})
		return s
	}
	sa, sb := sorted(a), sorted(b)
	for i := range sa {
		if sa[i].Name != sb[i].Name || !bytes.Equal(sa[i].Value, sb[i].Value) {
			return false
		}
	}
	return true
}

// minus returns the blobs of a that are not in b.
func minus(a, b blobSet) blobSet {
	out := blobSet{}
	for r := range a {
		if _, ok := b[r]; !ok {
			out[r] = struct{}{}
		}
	}
	return out
}

// dropShared removes from removed and added every blob that occurs inside
// one of the shared (skipped) subtrees, loading each distinct tree once.
func (d *differ) dropShared(ctx context.Context, removed, added blobSet) error {
	visited := map[crypto.ID]bool{}
	type item struct {
		id    crypto.ID
		depth int
	}
	var stack []item
	for _, id := range d.shared {
		stack = append(stack, item{id, 0})
	}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visited[it.id] {
			continue
		}
		visited[it.id] = true
		if it.depth > maxTreeDepth {
			return fmt.Errorf("%w: shared tree %s nests deeper than %d levels", ErrBadTree, it.id.Short(), maxTreeDepth)
		}
		t, err := d.open(ctx, it.id, "(shared tree)")
		if err != nil {
			return err
		}
		for t.cur != nil {
			n := t.cur
			if err := t.next(); err != nil {
				return err
			}
			switch n.Type {
			case tree.File:
				for _, id := range n.Content {
					delete(removed, blobRef{id, false})
					delete(added, blobRef{id, false})
				}
			case tree.Dir:
				delete(removed, blobRef{*n.Subtree, true})
				delete(added, blobRef{*n.Subtree, true})
				stack = append(stack, item{*n.Subtree, it.depth + 1})
			}
		}
	}
	return nil
}

func (d *differ) countBlobs(set blobSet, st *DiffStat) {
	for r := range set {
		t := pack.DataBlob
		if r.tree {
			t = pack.TreeBlob
			st.TreeBlobs++
		} else {
			st.DataBlobs++
		}
		if d.opts.Sizes == nil {
			continue
		}
		if n, ok := d.opts.Sizes.PlainLength(t, r.id); ok && n >= 0 {
			st.Bytes += uint64(n)
		} else {
			d.stats.UnknownSizes++
		}
	}
}
