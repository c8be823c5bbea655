package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/zstd"

	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/tree"
)

// LoadCompactTree loads, verifies and decodes a tree blob into the compact
// form a long-lived cache keeps (tree.Compact), which moves to files as
// spill says. A big tree is decoded as it decompresses (streamTree), so it
// costs its stored bytes and its Compact, not its plaintext as well; with
// spill, a directory of a million files loads in a few tens of MiB.
func (r *Repository) LoadCompactTree(ctx context.Context, id crypto.ID, spill tree.SpillOptions) (*tree.Compact, error) {
	locs := r.idx.Lookup(pack.TreeBlob, id)
	if len(locs) == 0 {
		locs = r.ixs.pending.Lookup(pack.TreeBlob, id)
	}
	if len(locs) > 0 && locs[0].Compressed && locs[0].PlainLength >= streamTree {
		c, err := r.streamCompactTree(ctx, locs[0], spill)
		if err == nil || errors.Is(err, tree.ErrSpill) || ctx.Err() != nil {
			return c, err
		}
		// Not streamable, damaged, or a failed download: the whole blob's
		// path decides, with its second try and second copies.
	}
	return loadTree(ctx, r, id, func(b []byte) (*tree.Compact, error) {
		return tree.DecodeCompactSpill(b, spill)
	})
}

// streamTree is the plain length from which a compressed tree is decoded
// as it decompresses.
const streamTree = 4 << 20

// streamCompactTree decrypts a tree blob, and decodes it as it
// decompresses, hashing it on the way: the Compact is returned only when
// the plaintext matches the blob's id and length.
func (r *Repository) streamCompactTree(ctx context.Context, pb index.PackedBlob, spill tree.SpillOptions) (*tree.Compact, error) {
	fail := func(err error) error {
		return fmt.Errorf("%w: %s blob %s in pack %s: %w", ErrCorrupt, pb.Type, pb.ID.Short(), pb.PackID.Short(), err)
	}
	sealed, release, err := r.loadSealed(ctx, pb)
	if err != nil {
		return nil, err
	}
	content, err := pack.OpenBlob(r.key, nil, pb.Type, pb.ID, sealed)
	release()
	if err != nil {
		return nil, fail(err)
	}
	zr, err := zstd.NewReader(bytes.NewReader(content), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(pack.MaxBlobSize), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, fail(err)
	}
	defer zr.Close()
	hr := &hashReader{r: io.LimitReader(zr, int64(pb.PlainLength)+1), h: r.key.BlobHasher()}
	// The index's plain length sizes the Compact's arrays: bounded by what
	// the stored bytes can expand to, against a hostile index entry.
	c, err := tree.DecodeCompactReader(hr, min(int(pb.PlainLength), maxExpansion*len(content)), spill)
	if err != nil {
		if errors.Is(err, tree.ErrSpill) {
			return nil, err
		}
		return nil, fail(err)
	}
	if hr.n != int64(pb.PlainLength) {
		return nil, fail(fmt.Errorf("length %d, index says %d", hr.n, pb.PlainLength))
	}
	var got crypto.ID
	hr.h.Sum(got[:0])
	if got != pb.ID {
		return nil, fail(errors.New("content does not match its id"))
	}
	return c, nil
}

// hashReader hashes and counts what is read through it.
type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// loadTree loads and verifies a tree blob and decodes it with decode.
func loadTree[T any](ctx context.Context, r *Repository, id crypto.ID, decode func([]byte) (T, error)) (T, error) {
	var zero T
	b, err := r.LoadTypedBlob(ctx, pack.TreeBlob, id, nil)
	if err != nil {
		return zero, err
	}
	t, err := decode(b)
	if errors.Is(err, tree.ErrSpill) {
		return zero, fmt.Errorf("tree %s: %w", id.Short(), err)
	}
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
