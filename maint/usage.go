package maint

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/walk"
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
	)
	roots := make([]crypto.ID, len(snapshots))
	for i, sn := range snapshots {
		roots[i] = sn.Tree
	}
	err := walk.Trees(ctx, l, roots, 4*runtime.GOMAXPROCS(0), func(root int, id crypto.ID, t walk.List, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("tree %s (snapshot %s): %w", id.Short(), snapshots[root].ID.Short(), err)
			}
			cancel()
			return
		}
		used[BlobRef{pack.TreeBlob, id}] = struct{}{}
		for i := range t.Len() {
			for _, c := range t.Content(i) {
				used[BlobRef{pack.DataBlob, c}] = struct{}{}
			}
		}
	})
	if firstErr != nil {
		return nil, firstErr
	}
	if err != nil {
		return nil, err
	}
	return used, nil
}
