package maint

import (
	"context"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// treeStore is what a treeRewriter needs from a repository.
type treeStore interface {
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	SaveTree(ctx context.Context, t *tree.Tree) (crypto.ID, bool, error)
}

// treeChangeKind says how a rewrite changed a node.
type treeChangeKind int

const (
	// nodeDropped: the node was left out of its directory.
	nodeDropped treeChangeKind = iota
	// dirEmptied: the directory's tree could not be loaded; it is kept
	// as an empty directory.
	dirEmptied
)

// treeChange is one node a rewrite changes.
type treeChange struct {
	Path string // "/" for the root, "/a/b" below it
	Kind treeChangeKind
	Type tree.NodeType // of a dropped node
}

// treeRewriter rewrites snapshot trees in two passes: plan decides what
// changes, loading each tree once and writing nothing (a dry run stops
// there); write then saves the changed trees bottom-up. Unchanged subtrees
// keep their ids and are never saved again; a changed tree shared by
// several snapshots is saved once. repair snapshots and rewrite both use
// it: they differ only in which nodes they drop and in what a tree that
// cannot be loaded means.
type treeRewriter struct {
	store treeStore
	// keep decides whether a node stays in its directory; path is the
	// node's path below the root ("/a/b"). A dropped directory is not
	// descended into. nil keeps every node.
	keep func(n *tree.Node, path string) bool
	// loadFailed is called when the tree id at path cannot be loaded:
	// nil replaces it with an empty tree (a dirEmptied change), an error
	// stops the plan. A nil loadFailed stops on every load error.
	loadFailed func(path string, id crypto.ID, err error) error
	// pathIndependent says that keep and loadFailed do not look at the
	// path, so a tree found at several paths is planned once. Otherwise
	// plans are remembered per tree and path (in a series of backups the
	// same directory mostly holds the same tree, so that is nearly as
	// good).
	pathIndependent bool

	memo  map[planKey]*treePlan
	empty *crypto.ID // the empty tree, once saved
}

type planKey struct {
	id   crypto.ID
	path string
}

// treePlan is what changes in one tree. Paths in it are relative to the
// tree, so that a plan can be shared by every place the tree occurs.
type treePlan struct {
	id      crypto.ID // the tree as it is
	broken  bool      // it cannot be loaded: written as the empty tree
	changed bool
	entries []planEntry // the changed nodes, in tree order
	// files and bytes count the file nodes (and their sizes) in the
	// rewritten tree, subtrees included.
	files, bytes uint64
	written      *crypto.ID
}

// planEntry is one changed node of a tree: dropped, or a directory whose
// subtree changes.
type planEntry struct {
	index int // in the tree's node list
	name  string
	typ   tree.NodeType
	sub   *treePlan // nil: the node is dropped
}

func newTreeRewriter(store treeStore) *treeRewriter {
	return &treeRewriter{store: store, memo: map[planKey]*treePlan{}}
}

func childPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// plan decides what changes in the tree id found at path ("/" for a
// snapshot's root) and below it.
func (w *treeRewriter) plan(ctx context.Context, id crypto.ID, path string) (*treePlan, error) {
	key := planKey{id: id}
	if !w.pathIndependent {
		key.path = path
	}
	if p, ok := w.memo[key]; ok {
		return p, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := &treePlan{id: id}
	t, err := w.store.LoadTree(ctx, id)
	if err != nil {
		if w.loadFailed == nil {
			return nil, err
		}
		if err := w.loadFailed(path, id, err); err != nil {
			return nil, err
		}
		p.broken, p.changed = true, true
		w.memo[key] = p
		return p, nil
	}
	for i, n := range t.Nodes {
		np := childPath(path, n.Name)
		if w.keep != nil && !w.keep(n, np) {
			p.changed = true
			p.entries = append(p.entries, planEntry{index: i, name: n.Name, typ: n.Type})
			continue
		}
		switch {
		case n.Type == tree.File:
			p.files++
			p.bytes += n.Size
		case n.Type == tree.Dir && n.Subtree != nil:
			sub, err := w.plan(ctx, *n.Subtree, np)
			if err != nil {
				return nil, err
			}
			p.files += sub.files
			p.bytes += sub.bytes
			if sub.changed {
				p.changed = true
				p.entries = append(p.entries, planEntry{index: i, name: n.Name, typ: n.Type, sub: sub})
			}
		}
	}
	w.memo[key] = p
	return p, nil
}

// changes lists what the plan changes, in tree order, with paths below
// path (where the planned tree is).
func (p *treePlan) changes(path string) []treeChange {
	var out []treeChange
	p.appendChanges(path, &out)
	return out
}

func (p *treePlan) appendChanges(path string, out *[]treeChange) {
	if p.broken {
		*out = append(*out, treeChange{Path: path, Kind: dirEmptied, Type: tree.Dir})
		return
	}
	for _, e := range p.entries {
		np := childPath(path, e.name)
		if e.sub == nil {
			*out = append(*out, treeChange{Path: np, Kind: nodeDropped, Type: e.typ})
		} else {
			e.sub.appendChanges(np, out)
		}
	}
}

// write saves the planned tree and the changed trees below it that are not
// saved yet, and returns the tree's new id (its old one when nothing
// changed). The blobs are durable only after the repository is flushed.
func (w *treeRewriter) write(ctx context.Context, p *treePlan) (crypto.ID, error) {
	if !p.changed {
		return p.id, nil
	}
	if p.written != nil {
		return *p.written, nil
	}
	if p.broken {
		if w.empty == nil {
			id, _, err := w.store.SaveTree(ctx, &tree.Tree{})
			if err != nil {
				return crypto.ID{}, err
			}
			w.empty = &id
		}
		p.written = w.empty
		return *w.empty, nil
	}
	t, err := w.store.LoadTree(ctx, p.id)
	if err != nil {
		return crypto.ID{}, err
	}
	out := &tree.Tree{Nodes: make([]*tree.Node, 0, len(t.Nodes))}
	entries := p.entries
	for i, n := range t.Nodes {
		if len(entries) > 0 && entries[0].index == i {
			e := entries[0]
			entries = entries[1:]
			if e.sub == nil {
				continue
			}
			newID, err := w.write(ctx, e.sub)
			if err != nil {
				return crypto.ID{}, err
			}
			nn := *n
			nn.Subtree = &newID
			n = &nn
		}
		out.Nodes = append(out.Nodes, n)
	}
	id, _, err := w.store.SaveTree(ctx, out)
	if err != nil {
		return crypto.ID{}, err
	}
	p.written = &id
	return id, nil
}
