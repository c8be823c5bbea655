package repo

import (
	"context"
	"fmt"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
)

// LoadCompactTree loads, verifies and decodes a tree blob into the compact
// form a long-lived cache keeps (tree.Compact): the tree is decoded node by
// node, never whole, so a huge tree costs its plaintext and its Compact.
func (r *Repository) LoadCompactTree(ctx context.Context, id crypto.ID) (*tree.Compact, error) {
	b, err := r.LoadTypedBlob(ctx, pack.TreeBlob, id, nil)
	if err != nil {
		return nil, err
	}
	c, err := tree.DecodeCompact(b)
	if err != nil {
		return nil, fmt.Errorf("%w: tree %s: %w", ErrCorrupt, id.Short(), err)
	}
	return c, nil
}
