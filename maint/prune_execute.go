package maint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// Carrying out a prune plan: Execute and its repacking.

// PruneStats reports what Execute did.
type PruneStats struct {
	PacksMarked, PacksRepacked, PacksDeleted, PacksResurrected, PacksWritten int
	BlobsMoved                                                               int
	BytesDeleted                                                             int64
	IndexFilesWritten, IndexFilesRemoved                                     int
	TempFilesRemoved                                                         int
	// PacksRetained counts packs (BytesRetained their bytes) the storage
	// refused to delete because they are under retention (S3 Object
	// Lock): no index lists them any more, and a prune after RetainedUntil
	// deletes them (they are then unindexed packs older than the margin).
	PacksRetained int
	BytesRetained int64
	// IndexFilesRetained counts superseded index files kept the same way;
	// loading skips them, because the new index supersedes them.
	IndexFilesRetained int
	// RetainedUntil is the latest end of those retentions the storage
	// reported (zero when it said none).
	RetainedUntil time.Time
}

// retained notes a file the storage refused to remove under retention.
func (st *PruneStats) retained(err error) {
	if t, ok := backend.RetainedUntil(err); ok && t.After(st.RetainedUntil) {
		st.RetainedUntil = t
	}
}

// Execute carries out the plan: repack, write the new index, remove the
// superseded index files, then delete packs, in that order (see the safety
// argument at the top of this file).
func (p *PrunePlan) Execute(ctx context.Context, r *repo.Repository, opts PruneOptions) (PruneStats, error) {
	opts.defaults()
	var st PruneStats
	if opts.DryRun {
		return st, nil
	}
	now := opts.Now.UnixNano()
	// 1. Repack: copy the used blobs of the chosen packs into new packs,
	// verifying each blob (decrypt and hash) before it is copied.
	var newPacks []index.FilePack
	if len(p.Repack) > 0 {
		copied := map[BlobRef]bool{}
		for i, pid := range p.Repack {
			opts.Logf("repacking pack %d of %d\n", i+1, len(p.Repack))
			n, err := repackOne(ctx, r, pid, p.packBlobs[pid], p.usedBlobs, copied, p.keep, p.chosen)
			if err != nil {
				return st, err
			}
			st.BlobsMoved += n
		}
		var err error
		newPacks, err = r.FlushPacks(ctx)
		if err != nil {
			return st, fmt.Errorf("write repacked data: %w", err)
		}
		st.PacksWritten = len(newPacks)
		st.PacksRepacked = len(p.Repack)
	}

	// 2. The new index: kept and new packs; pending packs with their marks.
	var packs, pending []index.FilePack
	for pid, blobs := range p.packBlobs {
		if p.keep[pid] {
			packs = append(packs, index.FilePack{ID: pid, Blobs: blobs})
		}
	}
	packs = append(packs, newPacks...)
	_, pendingIdx := r.PendingPacks()
	pendingBlobs := pendingIdx.Packs()
	for _, pid := range p.Resurrect {
		packs = append(packs, index.FilePack{ID: pid, Blobs: pendingBlobs[pid]})
	}
	for pid, ns := range p.pendingKeep {
		pending = append(pending, index.FilePack{ID: pid, Blobs: pendingBlobs[pid], MarkedAt: ns})
	}
	markNow := append(append([]crypto.ID(nil), p.Mark...), p.Repack...)
	if !opts.InstantDelete {
		for _, pid := range markNow {
			pending = append(pending, index.FilePack{ID: pid, Blobs: p.packBlobs[pid], MarkedAt: now})
		}
	}
	written, err := r.WriteIndex(ctx, packs, pending, p.supersedes)
	if err != nil {
		return st, err
	}
	st.IndexFilesWritten = written
	st.PacksMarked = len(p.Mark)
	st.PacksResurrected = len(p.Resurrect)
	for _, id := range p.supersedes {
		err := r.Backend().Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()})
		switch {
		case errors.Is(err, backend.ErrRetained):
			st.IndexFilesRetained++
			st.retained(err)
			continue
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return st, fmt.Errorf("remove superseded index %s: %w", id.Short(), err)
		}
		st.IndexFilesRemoved++
	}

	// Temporary files of uploads that were killed (by a crash, or a
	// killed prune) go once they are as old as a pack would have to be.
	if tc, ok := backend.As[backend.TempCleaner](r.Backend()); ok {
		if n, err := tc.RemoveStaleTemp(ctx, max(opts.KeepDelete, time.Hour)); err == nil {
			st.TempFilesRemoved = n
		}
	}

	// 3. Delete packs that no index needs any more; not if our own lock
	// was lost meanwhile (another prune may be at work).
	if err := r.CheckLocks(); err != nil {
		return st, err
	}
	del := append(append([]crypto.ID(nil), p.Delete...), p.Unindexed...)
	if opts.InstantDelete {
		del = append(del, markNow...)
	}
	for i, pid := range del {
		if i%50 == 0 {
			opts.Logf("deleting packs: %d of %d\n", i, len(del))
		}
		h := backend.Handle{Type: backend.PackFile, Name: pid.String()}
		fi, err := r.Backend().Stat(ctx, h)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return st, err
		}
		err = r.Backend().Remove(ctx, h)
		switch {
		case errors.Is(err, backend.ErrRetained):
			st.PacksRetained++
			st.BytesRetained += fi.Size
			st.retained(err)
			continue
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return st, fmt.Errorf("delete pack %s: %w", pid.Short(), err)
		}
		st.PacksDeleted++
		st.BytesDeleted += fi.Size
	}
	return st, nil
}

// repackOne copies the used blobs of one pack that are not already in a
// kept pack into the packs being written. It loads the pack once.
func repackOne(ctx context.Context, r *repo.Repository, pid crypto.ID, blobs []pack.Blob, used BlobSet,
	copied map[BlobRef]bool, keep map[crypto.ID]bool, chosen map[BlobRef]crypto.ID) (int, error) {
	n, err := r.CopyBlobs(ctx, pid, blobs, func(b pack.Blob) bool {
		ref := BlobRef{b.Type, b.ID}
		if _, ok := used[ref]; !ok || copied[ref] || keep[chosen[ref]] {
			return false
		}
		copied[ref] = true
		return true
	}, repo.CopyBlobsOptions{})
	if err != nil {
		return n, fmt.Errorf("repack: %w", copyFailed(err))
	}
	return n, nil
}

// copyFailed adds to an error of repo.CopyBlobs what the user should do
// next, when the pack is damaged.
func copyFailed(err error) error {
	switch {
	case errors.Is(err, repo.ErrPackShort):
		return fmt.Errorf("%w; nothing was deleted (run `dj check`)", err)
	case errors.Is(err, repo.ErrCorrupt):
		return fmt.Errorf("%w; nothing was deleted (run `dj check` and `dj repair`)", err)
	}
	return err
}
