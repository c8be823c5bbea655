package maint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"time"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// RepackOptions tune Repack.
type RepackOptions struct {
	// PackSize is the target pack size (default: the repository's).
	PackSize int
	// Compression, when set, recompresses every blob of every pack at this
	// level ("fastest", "default", "better", "best") where that saves space.
	Compression string
	// MinFill: packs smaller than MinFill*PackSize are merged (default 0.5).
	MinFill float64
	// InstantDelete deletes the old packs at once instead of marking them
	// (the caller must hold an exclusive lock).
	InstantDelete bool
	DryRun        bool
	Logf          func(format string, args ...any)
	Now           time.Time
}

// RepackStats reports what Repack did.
type RepackStats struct {
	PacksBefore       int   `json:"packs_before"`
	PacksAfter        int   `json:"packs_after"`
	PacksRewritten    int   `json:"packs_rewritten"`
	PacksWritten      int   `json:"packs_written"`
	BlobsMoved        int   `json:"blobs_moved"`
	BlobsRecompressed int   `json:"blobs_recompressed"`
	BytesBefore       int64 `json:"bytes_before"`
	BytesAfter        int64 `json:"bytes_after"`
	DryRun            bool  `json:"dry_run"` // PacksWritten, PacksAfter and BytesAfter are estimates then

}

// Repack rewrites small packs into full ones (and, with Compression, every
// pack with recompressed blobs). Every blob is decrypted and verified before
// it is written again; the old packs become pending (see prune.go) after the
// new index is stored, or are deleted at once with InstantDelete. r must
// have its index loaded.
func Repack(ctx context.Context, r *repo.Repository, opts RepackOptions) (RepackStats, error) {
	if opts.PackSize == 0 {
		opts.PackSize = r.PackSize()
	}
	if opts.MinFill == 0 {
		opts.MinFill = 0.5
	}
	opts.Logf = logfOrDiscard(opts.Logf)
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	st := RepackStats{DryRun: opts.DryRun}
	packs := r.Index().Packs()
	st.PacksBefore = len(packs)
	var chosen []crypto.ID
	for id, blobs := range packs {
		if opts.Compression != "" || packBytes(blobs) < int64(opts.MinFill*float64(opts.PackSize)) {
			chosen = append(chosen, id)
		}
	}
	sortIDs(chosen)
	// Merging a single small pack with nothing gains nothing.
	if opts.Compression == "" && len(chosen) < 2 {
		chosen = nil
	}
	for _, id := range chosen {
		st.BytesBefore += packBytes(packs[id])
	}
	st.PacksRewritten = len(chosen)
	if len(chosen) == 0 {
		st.PacksAfter = st.PacksBefore
		return st, nil
	}
	if opts.DryRun {
		// The same plan as the real run below: the same packs, the same
		// blobs (each once); only the number of new packs is an estimate,
		// since the writer spreads blobs over several open packs at random.
		bytesByType := map[pack.BlobType]int64{}
		done := map[BlobRef]bool{}
		for _, pid := range chosen {
			for _, b := range packs[pid] {
				ref := BlobRef{b.Type, b.ID}
				if done[ref] {
					continue
				}
				done[ref] = true
				st.BlobsMoved++
				if opts.Compression != "" {
					st.BlobsRecompressed++
				}
				bytesByType[b.Type] += int64(b.Length)
				st.BytesAfter += int64(b.Length)
			}
		}
		for _, n := range bytesByType {
			st.PacksWritten += int((n + int64(opts.PackSize) - 1) / int64(opts.PackSize))
		}
		st.PacksAfter = st.PacksBefore - len(chosen) + st.PacksWritten
		return st, nil
	}
	r.SetPackSize(opts.PackSize)
	if opts.Compression != "" {
		if err := r.SetCompression(opts.Compression); err != nil {
			return st, err
		}
	}
	supersedes := r.ListedIndexFiles()
	done := map[BlobRef]bool{}
	for i, pid := range chosen {
		opts.Logf("repacking pack %d of %d\n", i+1, len(chosen))
		n, err := r.CopyBlobs(ctx, pid, packs[pid], func(b pack.Blob) bool {
			ref := BlobRef{b.Type, b.ID}
			if done[ref] {
				return false
			}
			done[ref] = true
			return true
		}, repo.CopyBlobsOptions{Recompress: opts.Compression != ""})
		st.BlobsMoved += n
		if opts.Compression != "" {
			st.BlobsRecompressed += n
		}
		if err != nil {
			return st, copyFailed(err)
		}
	}
	newPacks, err := r.FlushPacks(ctx)
	if err != nil {
		return st, fmt.Errorf("write new packs: %w", err)
	}
	st.PacksWritten = len(newPacks)
	for _, p := range newPacks {
		st.BytesAfter += packBytes(p.Blobs)
	}
	// New index: untouched packs and new ones; old packs become pending.
	isChosen := map[crypto.ID]bool{}
	for _, id := range chosen {
		isChosen[id] = true
	}
	var keep, pending []index.FilePack
	for id, blobs := range packs {
		if !isChosen[id] {
			keep = append(keep, index.FilePack{ID: id, Blobs: blobs})
		}
	}
	keep = append(keep, newPacks...)
	marks, pendingIdx := r.PendingPacks()
	pendingBlobs := pendingIdx.Packs()
	for id, ns := range marks {
		pending = append(pending, index.FilePack{ID: id, Blobs: pendingBlobs[id], MarkedAt: ns})
	}
	if !opts.InstantDelete {
		for _, id := range chosen {
			pending = append(pending, index.FilePack{ID: id, Blobs: packs[id], MarkedAt: opts.Now.UnixNano()})
		}
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i].ID.String() < keep[j].ID.String() })
	if _, err := r.WriteIndex(ctx, keep, pending, supersedes); err != nil {
		return st, err
	}
	for _, id := range supersedes {
		if err := r.Backend().Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return st, fmt.Errorf("remove superseded index %s: %w", id.Short(), err)
		}
	}
	if opts.InstantDelete {
		for _, id := range chosen {
			if err := r.Backend().Remove(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return st, fmt.Errorf("delete pack %s: %w", id.Short(), err)
			}
		}
	}
	st.PacksAfter = st.PacksBefore - len(chosen) + len(newPacks)
	return st, nil
}
