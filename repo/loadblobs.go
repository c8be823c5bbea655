package repo

import (
	"context"
	"fmt"
	"sort"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// Batched blob loads: across a network every request waits a round trip,
// and the blobs of small files lie side by side in their packs in the
// order they were backed up, so a restore that asks for many at once gets
// them with one ranged request per run of neighbours instead of one per
// blob.
const (
	// batchGap is the largest hole between two blobs of one pack that a
	// single request reads across (the bytes of blobs nobody asked for).
	batchGap = 256 << 10
	// batchRun bounds the bytes of one request.
	batchRun = 8 << 20
)

// batchBlob is one asked-for blob in a run: where it is stored and which
// positions of the caller's list want it.
type batchBlob struct {
	pb  index.PackedBlob
	ids []int
}

// LoadBlobs loads the data blobs ids and calls fn with each one's
// plaintext (or the error of loading it), once per position in ids, in no
// particular order. Blobs stored near each other in one pack are read with
// one request; a run that cannot be read or a blob in it that fails to
// open is loaded again on its own, through LoadBlob, which tries every
// copy. plain is valid only during the call to fn. The error is the
// context's only.
func (r *Repository) LoadBlobs(ctx context.Context, ids []crypto.ID, fn func(i int, plain []byte, err error)) error {
	byPack := map[crypto.ID]map[crypto.ID]*batchBlob{}
	for i, id := range ids {
		locs := r.idx.Lookup(pack.DataBlob, id)
		if len(locs) == 0 {
			locs = r.ixs.pending.Lookup(pack.DataBlob, id)
		}
		if len(locs) == 0 {
			fn(i, nil, fmt.Errorf("%s blob %s: %w", pack.DataBlob, id.Short(), ErrBlobNotFound))
			continue
		}
		pb := locs[0]
		blobs := byPack[pb.PackID]
		if blobs == nil {
			blobs = map[crypto.ID]*batchBlob{}
			byPack[pb.PackID] = blobs
		}
		if b := blobs[id]; b != nil {
			b.ids = append(b.ids, i)
		} else {
			blobs[id] = &batchBlob{pb: pb, ids: []int{i}}
		}
	}
	var buf []byte
	for _, blobs := range byPack {
		sorted := make([]*batchBlob, 0, len(blobs))
		for _, b := range blobs {
			sorted = append(sorted, b)
		}
		sort.Slice(sorted, func(a, b int) bool { return sorted[a].pb.Offset < sorted[b].pb.Offset })
		for len(sorted) > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := batchRunLen(sorted)
			buf = r.loadRun(ctx, sorted[:n], buf, fn)
			sorted = sorted[n:]
		}
	}
	return ctx.Err()
}

// batchRunLen returns how many of the blobs (sorted by offset, in one
// pack) one request reads: neighbours no further apart than batchGap, at
// most batchRun bytes in all.
func batchRunLen(sorted []*batchBlob) int {
	start := uint64(sorted[0].pb.Offset)
	end := start + uint64(sorted[0].pb.Length)
	n := 1
	for ; n < len(sorted); n++ {
		pb := sorted[n].pb
		next := uint64(pb.Offset) + uint64(pb.Length)
		if uint64(pb.Offset) > end+batchGap || next-start > batchRun {
			break
		}
		end = max(end, next)
	}
	return n
}

// loadRun reads one run of blobs of a pack and hands each to fn; buf is a
// plaintext buffer it may reuse, returned for the next run.
func (r *Repository) loadRun(ctx context.Context, run []*batchBlob, buf []byte, fn func(int, []byte, error)) []byte {
	alone := func(b *batchBlob) {
		plain, err := r.LoadTypedBlob(ctx, pack.DataBlob, b.pb.ID, buf)
		if err == nil {
			buf = plain
		}
		for _, i := range b.ids {
			fn(i, plain, err)
		}
	}
	if len(run) == 1 {
		alone(run[0])
		return buf
	}
	start := int64(run[0].pb.Offset)
	var end int64
	for _, b := range run {
		end = max(end, int64(b.pb.Offset)+int64(b.pb.Length))
	}
	h := backend.Handle{Type: backend.PackFile, Name: run[0].pb.PackID.String()}
	data, err := r.be.Load(ctx, h, start, int(end-start))
	if err != nil || int64(len(data)) != end-start {
		for _, b := range run {
			if ctx.Err() != nil {
				return buf
			}
			alone(b)
		}
		return buf
	}
	for _, b := range run {
		off := int64(b.pb.Offset) - start
		plain, err := r.OpenPacked(b.pb, data[off:off+int64(b.pb.Length)], buf)
		if err != nil {
			// Damaged in this read or in storage: LoadTypedBlob reads
			// it again and tries its other copies.
			alone(b)
			continue
		}
		buf = plain
		for _, i := range b.ids {
			fn(i, plain, nil)
		}
	}
	return buf
}
