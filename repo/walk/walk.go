// Package walk is the one tree walker of dj. Trees visits every distinct
// tree below a set of roots once, in parallel (check, prune's usage);
// Nodes visits every node below one tree in path order (ls).
package walk

import (
	"context"
	"path"
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
func Nodes(ctx context.Context, l Loader, id crypto.ID, prefix string, depth int, fn NodeFunc) error {
	if depth == 0 {
		return nil
	}
	t, err := l.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		p := path.Join(prefix, n.Name)
		if err := fn(p, n); err != nil {
			return err
		}
		if n.Type == tree.Dir && n.Subtree != nil {
			if err := Nodes(ctx, l, *n.Subtree, p, depth-1, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
