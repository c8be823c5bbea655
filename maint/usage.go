package maint

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// BlobRef names a blob of either type.
type BlobRef struct {
	Type pack.BlobType
	ID   crypto.ID
}

// BlobSet is a set of blobs.
type BlobSet map[BlobRef]struct{}

// Has reports whether the set holds the blob.
func (s BlobSet) Has(t pack.BlobType, id crypto.ID) bool {
	_, ok := s[BlobRef{t, id}]
	return ok
}

// UsedBlobs walks the trees of the snapshots in parallel and returns every
// tree and data blob they reference. Each tree is loaded once. A tree that
// cannot be loaded is an error: nothing may be deleted while we cannot see
// everything that is in use.
func UsedBlobs(ctx context.Context, l TreeLoader, snapshots []*snapshot.Snapshot) (BlobSet, error) {
	used := BlobSet{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, 4*runtime.GOMAXPROCS(0))
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	// visit claims a tree id and loads it in a new goroutine; the semaphore
	// is taken inside that goroutine, so visiting never blocks the caller.
	var visit func(id crypto.ID, where string)
	visit = func(id crypto.ID, where string) {
		mu.Lock()
		ref := BlobRef{pack.TreeBlob, id}
		if _, seen := used[ref]; seen {
			mu.Unlock()
			return
		}
		used[ref] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			t, err := l.LoadTree(ctx, id)
			<-sem
			if err != nil {
				fail(fmt.Errorf("tree %s (%s): %w", id.Short(), where, err))
				return
			}
			mu.Lock()
			for _, n := range t.Nodes {
				for _, c := range n.Content {
					used[BlobRef{pack.DataBlob, c}] = struct{}{}
				}
			}
			mu.Unlock()
			for _, n := range t.Nodes {
				if n.Type == tree.Dir && n.Subtree != nil {
					visit(*n.Subtree, where)
				}
			}
		}()
	}
	for _, sn := range snapshots {
		visit(sn.Tree, "snapshot "+sn.ID.Short())
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return used, nil
}
