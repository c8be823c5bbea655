package repo

import (
	"context"
	"fmt"

	"github.com/klauspost/compress/zstd"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
)

// LoadCompactTree loads, verifies and decodes a tree blob into the compact
// form a long-lived cache keeps (tree.Compact): the tree is decoded node by
// node, never whole, so a huge tree costs its plaintext and its Compact.
func (r *Repository) LoadCompactTree(ctx context.Context, id crypto.ID) (*tree.Compact, error) {
	return loadTree(ctx, r, id, tree.DecodeCompact)
}

// loadTree loads and verifies a tree blob and decodes it with decode.
func loadTree[T any](ctx context.Context, r *Repository, id crypto.ID, decode func([]byte) (T, error)) (T, error) {
	var zero T
	b, err := r.LoadTypedBlob(ctx, pack.TreeBlob, id, nil)
	if err != nil {
		return zero, err
	}
	t, err := decode(b)
	if err != nil {
		return zero, fmt.Errorf("%w: tree %s: %w", ErrCorrupt, id.Short(), err)
	}
	return t, nil
}

// bigPlain is the plaintext length from which a blob is decompressed by a
// decoder of its own.
const bigPlain = 16 << 20

// decompress appends the zstd decoding of content to dst. The shared
// decoder (r.dec) keeps the last output of each of its block decoders
// until that block decoder is used again (klauspost/compress v1.20.3): a
// 64 MB tree blob stayed on the heap after its tree was decoded and
// dropped, up to one such blob per core. Blobs of plain bytes from
// bigPlain on (huge trees) get a decoder of their own, dropped with them.
func (r *Repository) decompress(content, dst []byte, plain int) ([]byte, error) {
	if plain < bigPlain {
		return r.dec.DecodeAll(content, dst)
	}
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(pack.MaxBlobSize))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DecodeAll(content, dst)
}
