// Package walk is the one tree walker of dj. Trees visits every distinct
// tree below a set of roots once, in parallel (check, prune's usage);
// Nodes visits every node below one tree in path order (ls).
package walk

import (
	"context"
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
// tree, or err why it did not load.
type TreeFunc func(root int, id crypto.ID, t *tree.Tree, err error)

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

				var t *tree.Tree
				var err error
				if ctx.Err() == nil {
					t, err = l.LoadTree(ctx, it.id)
					if ctx.Err() == nil {
						fn(it.root, it.id, t, err)
					}
				}
				mu.Lock()
				if err == nil && t != nil && ctx.Err() == nil {
					for _, n := range t.Nodes {
						if n.Type == tree.Dir && n.Subtree != nil && !seen[*n.Subtree] {
							seen[*n.Subtree] = true
							queue = append(queue, item{*n.Subtree, it.root})
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
	t, err := l.LoadTree(ctx, id)
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
	t    *tree.Tree
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
		p.t, p.err = w.l.LoadTree(w.ctx, id)
		<-w.sem
	}()
	return p
}

// visit calls fn for the nodes of t and below; depth counts t's level.
func (w *nodeWalk) visit(t *tree.Tree, prefix string, depth int) error {
	var dirs []int // nodes whose subtrees are listed too
	if depth != 1 {
		for i, n := range t.Nodes {
			if n.Type == tree.Dir && n.Subtree != nil {
				dirs = append(dirs, i)
			}
		}
	}
	loads := make([]*pendingTree, len(dirs))
	for k := range min(prefetch, len(dirs)) {
		loads[k] = w.load(*t.Nodes[dirs[k]].Subtree)
	}
	next := 0 // index into dirs of the next directory node
	for i, n := range t.Nodes {
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
			loads[k+prefetch] = w.load(*t.Nodes[dirs[k+prefetch]].Subtree)
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
	return nil
}
