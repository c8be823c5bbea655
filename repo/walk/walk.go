// Package walk is the one tree walker of dj. Trees visits every distinct
// tree below a set of roots once, in parallel (check, prune's usage);
// Nodes visits every node below one tree in path order (ls); Load gives
// walkers of their own (restore, dump, diff, copy) a tree to read node by
// node. Every tree comes as a List: in compact form when the loader can
// decode one (a sixth of the memory of decoded nodes), so a directory of a
// million files costs about 165 MB in Trees and a few MiB elsewhere.
package walk

import (
	"context"
	"fmt"
	"path"
	"runtime"
	"sync"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// Loader loads a tree blob by its id.
type Loader interface {
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
}

// TreeFunc is called by Trees for each tree: root is the index (in the
// roots given to Trees) of the root it was first reached from, t is the
// tree (held in memory whole: none of its nodes can fail to read), or err
// why it did not load.
type TreeFunc func(root int, id crypto.ID, t List, err error)

// Trees loads every tree reachable from roots once, with a fixed number of
// workers, and calls fn (concurrently, in no fixed order) for each, with
// the load error if it failed. Subtrees of trees that loaded are visited
// too. Memory is bounded by the queue of tree ids, not by goroutines.
//
// Once ctx ends, no tree is loaded and fn is not called again; Trees then
// returns ctx.Err(). To stop early, fn cancels ctx.
func Trees(ctx context.Context, l Loader, roots []crypto.ID, workers int, fn TreeFunc) error {
	if workers < 1 {
		workers = 1
	}
	type item struct {
		id   crypto.ID
		root int
	}
	var (
		mu     sync.Mutex
		cond   = sync.NewCond(&mu)
		queue  []item
		seen   = map[crypto.ID]bool{}
		active int
	)
	for i, id := range roots {
		if !seen[id] {
			seen[id] = true
			queue = append(queue, item{id, i})
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				for len(queue) == 0 && active > 0 {
					cond.Wait()
				}
				if len(queue) == 0 {
					mu.Unlock()
					cond.Broadcast()
					return
				}
				it := queue[len(queue)-1]
				queue = queue[:len(queue)-1]
				active++
				mu.Unlock()

				var t List
				var err error
				if ctx.Err() == nil {
					t, err = load(ctx, l, it.id, tree.SpillOptions{})
					if ctx.Err() == nil {
						fn(it.root, it.id, t, err)
					}
				}
				mu.Lock()
				if err == nil && ctx.Err() == nil {
					for i := range t.Len() {
						if sub, ok := t.Dir(i); ok && !seen[sub] {
							seen[sub] = true
							queue = append(queue, item{sub, it.root})
						}
					}
				}
				active--
				mu.Unlock()
				cond.Broadcast()
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// NodeFunc is called by Nodes for each node with its path.
type NodeFunc func(p string, n *tree.Node) error

// CompactLoader is implemented by loaders that decode a tree into its
// compact form (the repository does). Trees, Nodes and Load load trees
// that way when they can and make their nodes one at a time as they are
// read. In Nodes and Load a tree larger than spillAbove moves to temporary
// files: a directory of a million files is listed in a few tens of MiB
// instead of the gigabyte its decoded nodes take. Trees keeps every tree
// in memory (about 165 MB for that directory): check and prune trust what
// it reads, and a tree in files can fail a read after it loaded.
type CompactLoader interface {
	LoadCompactTree(ctx context.Context, id crypto.ID, spill tree.SpillOptions) (*tree.Compact, error)
}

// spillAbove is the size of the compact trees Nodes keeps in memory (about
// 400,000 entries).
const spillAbove = 64 << 20

// List is a loaded tree, read node by node (Load).
type List interface {
	Len() int
	// Name returns the name of node i.
	Name(i int) string
	// Node returns node i; for a compact tree a node made for the call.
	Node(i int) *tree.Node
	// Dir returns the subtree of node i if it is a directory that has one.
	Dir(i int) (crypto.ID, bool)
	// Head returns node i's type, mode, owner ids, times and numbers
	// (tree.Compact.Head), without allocating.
	Head(i int) tree.Node
	// Content returns the content ids of node i; the caller must not
	// modify them.
	Content(i int) []crypto.ID
	// Find returns the node named name (made for the call), or nil.
	Find(name string) *tree.Node
	// Err reports a failed read of a tree kept in files.
	Err() error
}

// TreeList returns a decoded tree as a List.
func TreeList(t *tree.Tree) List { return treeList{t} }

// treeList is a decoded tree.
type treeList struct{ t *tree.Tree }

func (l treeList) Len() int              { return len(l.t.Nodes) }
func (l treeList) Node(i int) *tree.Node { return l.t.Nodes[i] }
func (l treeList) Name(i int) string     { return l.t.Nodes[i].Name }
func (l treeList) Err() error            { return nil }
func (l treeList) Head(i int) tree.Node {
	n := *l.t.Nodes[i]
	n.Name, n.User, n.Group, n.LinkTarget = "", "", "", ""
	n.Content, n.Subtree, n.Xattrs = nil, nil, nil
	return n
}
func (l treeList) Content(i int) []crypto.ID {
	return l.t.Nodes[i].Content
}
func (l treeList) Find(name string) *tree.Node {
	return l.t.Find(name)
}
func (l treeList) Dir(i int) (crypto.ID, bool) {
	if n := l.t.Nodes[i]; n.Type == tree.Dir && n.Subtree != nil {
		return *n.Subtree, true
	}
	return crypto.ID{}, false
}

// CompactList returns a compact tree as a List.
func CompactList(c *tree.Compact) List { return compactList{c} }

// compactList is a compact tree.
type compactList struct{ *tree.Compact }

func (l compactList) Find(name string) *tree.Node {
	if i, ok := l.Search(name); ok {
		return l.Node(i)
	}
	return nil
}

func (l compactList) Dir(i int) (crypto.ID, bool) {
	if l.Type(i) != tree.Dir {
		return crypto.ID{}, false
	}
	return l.Subtree(i)
}

// Load loads the tree id: in compact form when l is a CompactLoader, a
// tree over 64 MiB then kept in files, so that a walker holds one node at a
// time of even the largest directory; decoded whole otherwise.
func Load(ctx context.Context, l Loader, id crypto.ID) (List, error) {
	return load(ctx, l, id, tree.SpillOptions{Above: spillAbove})
}

// load loads the tree id as Load does, a compact tree moving to files as
// spill says (never with SpillOptions{}).
func load(ctx context.Context, l Loader, id crypto.ID, spill tree.SpillOptions) (List, error) {
	if cl, ok := l.(CompactLoader); ok {
		c, err := cl.LoadCompactTree(ctx, id, spill)
		if err != nil {
			return nil, err
		}
		return compactList{c}, nil
	}
	t, err := l.LoadTree(ctx, id)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("tree %s: the loader returned no tree", id.Short())
	}
	return TreeList(t), nil
}

// Nodes calls fn for every node below the tree id in path order: depth
// first, each directory before its contents, nodes in the order of their
// tree (sorted by name). A node's path is prefix joined with the names
// leading to it. depth is how many levels of trees are loaded (1: only
// the nodes of id; -1: all). It stops at the first error, of a load or of
// fn, and returns it. A tree met at several paths is visited at each.
//
// fn is called from the caller's goroutine, one node at a time, while the
// next subtrees load in the background: up to prefetch subtrees ahead on
// each level of the path being listed, with at most 4×GOMAXPROCS loads at
// once. Nodes returns only when every load it started has ended.
func Nodes(ctx context.Context, l Loader, id crypto.ID, prefix string, depth int, fn NodeFunc) error {
	if depth == 0 {
		return nil
	}
	t, err := Load(ctx, l, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &nodeWalk{ctx: ctx, l: l, fn: fn, sem: make(chan struct{}, 4*runtime.GOMAXPROCS(0))}
	err = w.visit(t, prefix, depth)
	cancel()
	w.wg.Wait()
	return err
}

// prefetch is how many subtrees of one tree Nodes loads ahead.
const prefetch = 8

// nodeWalk is the state of one Nodes call.
type nodeWalk struct {
	ctx context.Context
	l   Loader
	fn  NodeFunc
	sem chan struct{} // bounds the loads running at once
	wg  sync.WaitGroup
}

// pendingTree is a tree loading in the background; done closes when t or
// err is set.
type pendingTree struct {
	done chan struct{}
	t    List
	err  error
}

// load starts loading a tree in the background.
func (w *nodeWalk) load(id crypto.ID) *pendingTree {
	p := &pendingTree{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer close(p.done)
		select {
		case w.sem <- struct{}{}:
		case <-w.ctx.Done():
			p.err = w.ctx.Err()
			return
		}
		p.t, p.err = Load(w.ctx, w.l, id)
		<-w.sem
	}()
	return p
}

// visit calls fn for the nodes of t and below; depth counts t's level.
func (w *nodeWalk) visit(t List, prefix string, depth int) error {
	var dirs []int // nodes whose subtrees are listed too
	if depth != 1 {
		for i := range t.Len() {
			if _, ok := t.Dir(i); ok {
				dirs = append(dirs, i)
			}
		}
	}
	subtree := func(k int) crypto.ID { id, _ := t.Dir(dirs[k]); return id }
	loads := make([]*pendingTree, len(dirs))
	for k := range min(prefetch, len(dirs)) {
		loads[k] = w.load(subtree(k))
	}
	next := 0 // index into dirs of the next directory node
	for i := range t.Len() {
		n := t.Node(i)
		p := path.Join(prefix, n.Name)
		if err := w.fn(p, n); err != nil {
			return err
		}
		if next == len(dirs) || dirs[next] != i {
			continue
		}
		k := next
		next++
		if k+prefetch < len(dirs) {
			loads[k+prefetch] = w.load(subtree(k + prefetch))
		}
		pt := loads[k]
		loads[k] = nil
		<-pt.done
		if pt.err != nil {
			return pt.err
		}
		if err := w.visit(pt.t, p, depth-1); err != nil {
			return err
		}
	}
	return t.Err()
}
