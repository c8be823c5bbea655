package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// LoadTypedBlob returns the plaintext of a blob, appended to buf[:0] when it
// fits. The plaintext is verified against id; a blob stored twice is read
// from the second copy if the first is damaged.
func (r *Repository) LoadTypedBlob(ctx context.Context, t pack.BlobType, id crypto.ID, buf []byte) ([]byte, error) {
	locs := r.idx.Lookup(t, id)
	if len(locs) == 0 {
		// A blob only in a pack that prune marked for deletion is still
		// readable until the pack is really gone.
		locs = r.ixs.pending.Lookup(t, id)
	}
	if len(locs) == 0 {
		return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), ErrBlobNotFound)
	}
	var firstErr error
	for _, pb := range locs {
		out, err := r.loadPacked(ctx, pb, buf)
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// ErrBlobNotFound means the index does not know a blob.
var ErrBlobNotFound = errors.New("blob not in index")

// maxTreePacks bounds the set of tree packs already prefetched; when it is
// full it starts over.
const maxTreePacks = 4096

// treePackRefresh is how long a prefetched tree pack counts as cached: a
// walk that outlasts it asks again, which costs the kernel only a look at
// its page cache when the pack is still there and brings it back when
// memory pressure (or drop_caches) took it.
const treePackRefresh = 200 * time.Millisecond

// treePackCache remembers when each tree pack was last prefetched; its lock
// guards only that.
type treePackCache struct {
	mu   sync.Mutex
	last map[crypto.ID]time.Time
}

// due reports whether pack should be prefetched at now, and if so records
// that it is.
func (c *treePackCache) due(pack crypto.ID, now time.Time) bool {
	c.mu.Lock()
	last, seen := c.last[pack]
	due := !seen || now.Sub(last) > treePackRefresh
	if due {
		if len(c.last) >= maxTreePacks {
			clear(c.last)
		}
		c.last[pack] = now
	}
	c.mu.Unlock()
	return due
}

// prefetchTreePack asks the backend to start reading the whole tree pack
// that holds a tree about to be loaded, once per treePackRefresh. Packs
// hold trees or data, never both, and the trees of one snapshot sit
// together in a few packs: a walk (find, tar, ls -R through a mount,
// restore, diff, check) then reads each tree pack sequentially, instead
// of its trees one by one in walk order with a disk round trip each.
func (r *Repository) prefetchTreePack(ctx context.Context, h backend.Handle, pack crypto.ID) {
	p, ok := backend.As[backend.Prefetcher](r.be)
	if !ok {
		return
	}
	if r.treePacks.due(pack, time.Now()) {
		p.Prefetch(ctx, h)
	}
}

func (r *Repository) loadPacked(ctx context.Context, pb index.PackedBlob, buf []byte) ([]byte, error) {
	sealed, release, err := r.loadSealed(ctx, pb)
	if err != nil {
		return nil, err
	}
	defer release()
	plain, err := r.OpenPacked(pb, sealed, buf)
	if err != nil && ctx.Err() == nil {
		// A download that came back damaged (or short) is tried once more,
		// straight from the storage, before the blob counts as damaged.
		h := backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}
		if again, err2 := r.be.Load(ctx, h, int64(pb.Offset), int(pb.Length)); err2 == nil {
			if p2, err2 := r.OpenPacked(pb, again, buf); err2 == nil {
				return p2, nil
			}
		}
	}
	return plain, err
}

// loadSealed returns the stored bytes of a blob, by the backend's fastest
// way, and a function that gives their buffer back once they are used.
func (r *Repository) loadSealed(ctx context.Context, pb index.PackedBlob) (sealed []byte, release func(), err error) {
	h := backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}
	if pb.Type == pack.TreeBlob {
		r.prefetchTreePack(ctx, h, pb.PackID)
	}
	release = func() {}
	var tl backend.TreePackLoader
	if pb.Type == pack.TreeBlob {
		tl, _ = backend.As[backend.TreePackLoader](r.be)
	}
	if tl != nil {
		sealed, err = tl.LoadTreePack(ctx, h, int64(pb.Offset), int(pb.Length))
	} else if rl, ok := backend.As[backend.RangeLoader](r.be); ok {
		b := r.getBuf(int(pb.Length) + backend.RangeSlack)
		sealed, err = rl.LoadRange(ctx, h, int64(pb.Offset), int(pb.Length), b[:cap(b)])
		release = func() { r.putBuf(b) }
	} else if il, ok := backend.As[backend.IntoLoader](r.be); ok {
		sealed = r.getBuf(int(pb.Length))[:pb.Length]
		err = il.LoadInto(ctx, h, int64(pb.Offset), sealed)
		release = func() { r.putBuf(sealed) }
	} else {
		sealed, err = r.be.Load(ctx, h, int64(pb.Offset), int(pb.Length))
	}
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("%s blob %s in pack %s: %w", pb.Type, pb.ID.Short(), pb.PackID.Short(), err)
	}
	return sealed, release, nil
}

// decodeSlack is the spare capacity a decompression buffer gets past the
// blob's plain length: with at least 16 bytes to spare, klauspost/compress
// (v1.20.3) decodes every block with its wide copies; a buffer of the
// exact length makes it use the byte-exact ("safe") copies for a blob's
// last block, which is every block of a blob under 128 KiB. A test of the
// Go tree's files decoded about 15% faster with the slack.
const decodeSlack = 64

// maxExpansion bounds the buffer made for a compressed blob by its stored
// length: the plain length comes from the index, and a hostile index entry
// claiming 512 MiB for a small blob made every read of it allocate that
// much (the mount held 550 MB for one). Content that really expands more
// grows the buffer as it is decoded.
const maxExpansion = 64

// OpenPacked decrypts, decompresses and verifies the stored bytes of a blob.
func (r *Repository) OpenPacked(pb index.PackedBlob, sealed []byte, buf []byte) ([]byte, error) {
	fail := func(err error) error {
		return fmt.Errorf("%w: %s blob %s in pack %s: %w", ErrCorrupt, pb.Type, pb.ID.Short(), pb.PackID.Short(), err)
	}
	if pb.Compressed {
		content, err := pack.OpenBlob(r.key, r.getBuf(len(sealed)), pb.Type, pb.ID, sealed)
		if err != nil {
			return nil, fail(err)
		}
		defer r.putBuf(content)
		if want := min(int(pb.PlainLength), maxExpansion*len(content)+decodeSlack) + decodeSlack; cap(buf) < want {
			buf = make([]byte, 0, want)
		}
		plain, err := r.decompress(content, buf[:0], int(pb.PlainLength))
		if err != nil {
			return nil, fail(err)
		}
		if len(plain) != int(pb.PlainLength) {
			return nil, fail(fmt.Errorf("length %d, index says %d", len(plain), pb.PlainLength))
		}
		if r.key.BlobID(plain) != pb.ID {
			return nil, fail(errors.New("content does not match its id"))
		}
		return plain, nil
	}
	plain, err := pack.OpenBlob(r.key, buf[:0], pb.Type, pb.ID, sealed)
	if err != nil {
		return nil, fail(err)
	}
	if r.key.BlobID(plain) != pb.ID {
		return nil, fail(errors.New("content does not match its id"))
	}
	return plain, nil
}

// BlobSize returns the plaintext length of a data blob from the index; like
// LoadTypedBlob it falls back to packs marked for deletion, whose blobs a
// snapshot may need until a prune resurrects them.
func (r *Repository) BlobSize(id crypto.ID) (int, bool) {
	if n, ok := r.idx.PlainLength(pack.DataBlob, id); ok {
		return n, true
	}
	return r.ixs.pending.PlainLength(pack.DataBlob, id)
}

// maxZeroSizes bounds the cache of zero-blob ids by size, for sizes up to
// smallZero and for larger ones each.
const maxZeroSizes = 64

// smallZero is the size up to which any zero blob is recognized.
const smallZero = 64 << 10

// IsZeroBlob reports whether a data blob's plaintext is all zeros, using
// only the index: it compares id with the id of that many zero bytes. Only
// the sizes a run of zeros is stored in are considered: the chunker's
// maximum (a run of zeros is cut there), multiples of 4 KiB (the fixed
// chunks of disk images) and small files; a blob of another size is read
// as any other. Hashing the zeros of every size met cost a cold read of a
// 1 GiB file 8% of the mount's CPU.
func (r *Repository) IsZeroBlob(id crypto.ID) bool {
	n, ok := r.BlobSize(id)
	if !ok || n > r.cfg.ChunkerMax {
		// No chunk is larger than the chunker's maximum; a (hostile)
		// index entry that says so would have made it hash that many
		// zeros (512 MiB allocated by the mount for one file).
		return false
	}
	if n != r.cfg.ChunkerMax && n%4096 != 0 && n > smallZero {
		return false
	}
	small := n <= smallZero
	r.zeroMu.Lock()
	zid, ok := r.zeroIDs[n]
	full := r.zeroSmall >= maxZeroSizes
	if !small {
		full = len(r.zeroIDs)-r.zeroSmall >= maxZeroSizes
	}
	r.zeroMu.Unlock()
	if !ok && full && n != r.cfg.ChunkerMax {
		return false
	}
	if !ok {
		zid = r.key.BlobID(make([]byte, n))
		r.zeroMu.Lock()
		if _, dup := r.zeroIDs[n]; !dup && small {
			r.zeroSmall++
		}
		r.zeroIDs[n] = zid
		r.zeroMu.Unlock()
	}
	return zid == id
}

// LoadBlob is LoadTypedBlob for data blobs (the shape the restorer and the
// mount need).
func (r *Repository) LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error) {
	return r.LoadTypedBlob(ctx, pack.DataBlob, id, buf)
}

// ReadPackHeader loads and parses the header of a stored pack.
func (r *Repository) ReadPackHeader(ctx context.Context, id crypto.ID, size int64) ([]pack.Blob, error) {
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	n := int64(pack.EagerTail)
	if n > size {
		n = size
	}
	tail, err := r.be.Load(ctx, h, size-n, int(n))
	if err != nil {
		return nil, fmt.Errorf("load header of %s: %w", h, err)
	}
	if len(tail) >= 4 {
		hl, err := pack.HeaderLength(tail[len(tail)-4:], size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h, err)
		}
		if hl+4 > len(tail) {
			tail, err = r.be.Load(ctx, h, size-int64(hl)-4, hl+4)
			if err != nil {
				return nil, fmt.Errorf("load header of %s: %w", h, err)
			}
		}
	}
	blobs, err := pack.ParseTail(r.key, tail, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	return blobs, nil
}

// HasBlob reports whether the index knows a blob.
func (r *Repository) HasBlob(t pack.BlobType, id crypto.ID) bool { return r.idx.Has(t, id) }
