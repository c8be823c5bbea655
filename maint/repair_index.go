package maint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// RepairIndexOptions tune RepairIndex.
type RepairIndexOptions struct {
	// ReadAllPacks loads every pack whole and verifies every blob; damaged
	// blobs are left out of the index, and the intact blobs of a damaged
	// pack are copied into new packs.
	ReadAllPacks bool
	// Workers is how many packs are read at once (default GOMAXPROCS).
	Workers int
	// Progress, when set, is called (never concurrently) after each pack.
	Progress func(done, total int, bytes int64)
	// Logf receives progress lines.
	Logf func(format string, args ...any)
}

// BrokenPack is a pack RepairIndex could not index as it is.
type BrokenPack struct {
	Pack  crypto.ID `json:"pack"`
	Error string    `json:"error"`
	// Salvaged blobs were verified and copied into new packs (or, for a
	// pack marked for deletion, kept in the index); Lost blobs were
	// damaged. A pack whose header cannot be read and that no index
	// named loses all its blobs, and their number is unknown.
	Salvaged int `json:"salvaged_blobs"`
	Lost     int `json:"lost_blobs"`
}

// RepairIndexResult reports what RepairIndex did.
type RepairIndexResult struct {
	Packs             int          `json:"packs"`         // packs in the new index
	PendingPacks      int          `json:"pending_packs"` // of which marked for deletion
	Blobs             int          `json:"blobs"`
	PacksAdded        []crypto.ID  `json:"packs_added"`   // packs no index named before
	PacksDropped      []crypto.ID  `json:"packs_dropped"` // indexed packs missing from storage
	BrokenPacks       []BrokenPack `json:"broken_packs"`
	BlobsSalvaged     int          `json:"blobs_salvaged"`
	BlobsLost         int          `json:"blobs_lost"`
	PacksWritten      int          `json:"packs_written"` // new packs with salvaged blobs
	BytesRead         int64        `json:"bytes_read"`
	OldIndexProblems  int          `json:"old_index_problems"` // old index files that did not load
	IndexFilesWritten int          `json:"index_files_written"`
	IndexFilesRemoved int          `json:"index_files_removed"`
}

// isCorruption reports whether err means damaged data (as opposed to a
// failing backend, for which repair stops instead of dropping data).
func isCorruption(err error) bool {
	return errors.Is(err, pack.ErrCorrupt) || errors.Is(err, repo.ErrCorrupt) || errors.Is(err, index.ErrCorrupt)
}

// RepairIndex rebuilds the index from the pack headers in storage and
// replaces every index file with the new ones: packs missing from storage
// leave the index, packs no index named join it, packs marked for deletion
// stay marked. A pack whose header is damaged has the blobs its old index
// entries name verified, and the intact ones copied into new packs. Errors
// of the backend stop the repair before anything is removed.
//
// r must be opened without loading the index. After RepairIndex the
// handle's in-memory index is stale: open the repository again to use it.
func RepairIndex(ctx context.Context, r *repo.Repository, opts RepairIndexOptions) (*RepairIndexResult, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	logf := logfOrDiscard(opts.Logf)
	// Empty lists, not nil ones: the JSON output shows [].
	res := &RepairIndexResult{PacksAdded: []crypto.ID{}, PacksDropped: []crypto.ID{}, BrokenPacks: []BrokenPack{}}
	// Index files first, packs second: a pack named by an index file we
	// supersede was stored before that file, so the pack listing has it.
	oldFiles, err := r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return nil, err
	}
	logf("loading %d index files\n", len(oldFiles))
	problems, err := r.LoadIndex(ctx, true)
	if err != nil {
		return nil, err
	}
	res.OldIndexProblems = len(problems)
	known := r.Index().Packs()
	marks, pidx := r.PendingPacks()
	oldPending := pidx.Packs()

	stored := map[crypto.ID]int64{}
	err = r.Backend().List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := crypto.ParseID(fi.Name); err == nil {
			stored[id] = fi.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	for id := range known {
		if _, ok := stored[id]; !ok {
			res.PacksDropped = append(res.PacksDropped, id)
		}
	}
	for id := range marks {
		if _, ok := stored[id]; !ok {
			if _, ok := known[id]; !ok {
				res.PacksDropped = append(res.PacksDropped, id)
			}
		}
	}
	ids := make([]crypto.ID, 0, len(stored))
	for id := range stored {
		ids = append(ids, id)
		_, a := known[id]
		_, b := marks[id]
		if !a && !b {
			res.PacksAdded = append(res.PacksAdded, id)
		}
	}
	sortIDs(ids)
	sortIDs(res.PacksAdded)
	sortIDs(res.PacksDropped)
	logf("reading %d packs\n", len(ids))

	type outcome struct {
		blobs   []pack.Blob // entries to index; nil: leave the pack out
		broken  *BrokenPack
		salvage []pack.Blob // verified blobs of a damaged pack, to copy
		bytes   int64
		pending bool
	}
	results := make([]outcome, len(ids))
	var (
		mu        sync.Mutex
		next      int
		done      int
		bytesRead int64
		firstErr  error
		wg        sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				id := ids[i]
				_, isNormal := known[id]
				_, isMarked := marks[id]
				pending := isMarked && !isNormal
				old := known[id]
				if pending {
					old = oldPending[id]
				}
				o := outcome{pending: pending}
				var err error
				o.blobs, o.broken, o.salvage, o.bytes, buf, err = scanPack(ctx, r, id, stored[id], dedupBlobs(old), pending, opts.ReadAllPacks, buf)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				results[i] = o
				done++
				bytesRead += o.bytes
				if opts.Progress != nil {
					opts.Progress(done, len(ids), bytesRead)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("repair index stopped, nothing was removed: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.BytesRead = bytesRead

	// Copy the intact blobs of damaged packs that no indexed pack holds
	// (a damaged pack left unreferenced by an earlier repair is not
	// copied twice).
	have := map[BlobRef]bool{}
	for _, o := range results {
		if o.blobs != nil && !o.pending {
			for _, b := range o.blobs {
				have[BlobRef{b.Type, b.ID}] = true
			}
		}
	}
	for i, o := range results {
		_, err := r.CopyBlobs(ctx, ids[i], o.salvage, func(b pack.Blob) bool {
			ref := BlobRef{b.Type, b.ID}
			if have[ref] {
				return false
			}
			have[ref] = true
			return true
		}, repo.CopyBlobsOptions{Damaged: func(b pack.Blob, _ error) {
			// Another damaged pack may hold an intact copy.
			delete(have, BlobRef{b.Type, b.ID})
			o.broken.Salvaged--
			o.broken.Lost++
		}})
		if err != nil {
			return nil, fmt.Errorf("repair index stopped, nothing was removed: %w", err)
		}
	}
	salvaged, err := r.FlushPacks(ctx)
	if err != nil {
		return nil, fmt.Errorf("write salvaged blobs: %w", err)
	}
	res.PacksWritten = len(salvaged)
	packs := append([]index.FilePack(nil), salvaged...)
	var pending []index.FilePack
	for i, id := range ids {
		o := results[i]
		if o.broken != nil {
			res.BrokenPacks = append(res.BrokenPacks, *o.broken)
			res.BlobsSalvaged += o.broken.Salvaged
			res.BlobsLost += o.broken.Lost
		}
		if o.blobs == nil {
			continue
		}
		if o.pending {
			pending = append(pending, index.FilePack{ID: id, Blobs: o.blobs, MarkedAt: marks[id]})
		} else {
			packs = append(packs, index.FilePack{ID: id, Blobs: o.blobs})
		}
	}
	res.Packs = len(packs) + len(pending)
	res.PendingPacks = len(pending)
	for _, p := range packs {
		res.Blobs += len(p.Blobs)
	}
	for _, p := range pending {
		res.Blobs += len(p.Blobs)
	}
	logf("writing the new index: %d packs, %d blobs\n", res.Packs, res.Blobs)
	n, err := WriteIndex(ctx, r, packs, pending, oldFiles)
	if err != nil {
		return res, err
	}
	res.IndexFilesWritten = n
	for _, id := range oldFiles {
		err := r.Backend().Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("remove old index %s: %w", id.Short(), err)
		}
		res.IndexFilesRemoved++
	}
	return res, nil
}

// scanPack reads one pack's header (or with readAll, the whole pack) and
// returns the entries to index. A damaged pack that is not pending is left
// out of the index, and its verified blobs are returned to be copied into
// new packs. The error is non-nil only for failures that are not damage.
func scanPack(ctx context.Context, r *repo.Repository, id crypto.ID, size int64, old []pack.Blob, pending, readAll bool,
	buf []byte) (blobs []pack.Blob, broken *BrokenPack, salvage []pack.Blob, n int64, _ []byte, _ error) {
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	if !readAll {
		header, err := r.ReadPackHeader(ctx, id, size)
		if err == nil {
			return header, nil, nil, 0, buf, nil
		}
		if !isCorruption(err) {
			return nil, nil, nil, 0, buf, err
		}
		broken = &BrokenPack{Pack: id, Error: err.Error()}
		// Verify the blobs the old index knew, one ranged read each.
		var good []pack.Blob
		for _, b := range old {
			sealed, err := r.Backend().Load(ctx, h, int64(b.Offset), int(b.Length))
			if errors.Is(err, io.ErrUnexpectedEOF) {
				broken.Lost++
				continue
			}
			if err != nil {
				return nil, nil, nil, 0, buf, err
			}
			n += int64(len(sealed))
			if buf, err = r.OpenPacked(index.PackedBlob{Blob: b, PackID: id}, sealed, buf); err != nil {
				broken.Lost++
				continue
			}
			good = append(good, b)
		}
		blobs, salvage = keepIntact(good, pending, broken)
		return blobs, broken, salvage, n, buf, nil
	}
	if size > pack.MaxPackSize {
		return nil, &BrokenPack{Pack: id, Error: fmt.Sprintf("%d bytes is larger than the maximum pack size", size)}, nil, 0, buf, nil
	}
	data, err := r.Backend().Load(ctx, h, 0, 0)
	if err != nil {
		return nil, nil, nil, 0, buf, err
	}
	n = int64(len(data))
	var problems []string
	hashOK := crypto.Hash(data) == id
	if !hashOK {
		problems = append(problems, "content does not match its name")
	}
	entries, herr := pack.ParseTail(r.Key(), data, int64(len(data)))
	if herr != nil {
		problems = append(problems, herr.Error())
		entries = old
	}
	var good []pack.Blob
	lost := 0
	for _, b := range entries {
		if b.Type == pack.PaddingBlob {
			continue
		}
		end := int64(b.Offset) + int64(b.Length)
		if end > int64(len(data)) {
			lost++
			continue
		}
		var verr error
		if buf, verr = r.OpenPacked(index.PackedBlob{Blob: b, PackID: id}, data[b.Offset:end], buf); verr != nil {
			lost++
			continue
		}
		good = append(good, b)
	}
	if hashOK && herr == nil && lost == 0 {
		return entries, nil, nil, n, buf, nil
	}
	if lost > 0 {
		problems = append(problems, fmt.Sprintf("%d damaged blob(s)", lost))
	}
	broken = &BrokenPack{Pack: id, Lost: lost}
	for i, p := range problems {
		if i > 0 {
			broken.Error += "; "
		}
		broken.Error += p
	}
	blobs, salvage = keepIntact(good, pending, broken)
	return blobs, broken, salvage, n, buf, nil
}

// keepIntact decides what happens to the verified blobs of a damaged
// pack: a pending pack keeps them in place (it is deleted later anyway);
// otherwise they are to be copied into new packs, and the damaged pack
// leaves the index (prune deletes it as an unreferenced pack).
func keepIntact(good []pack.Blob, pending bool, broken *BrokenPack) (keep, toCopy []pack.Blob) {
	broken.Salvaged = len(good)
	if pending {
		if len(good) == 0 {
			return nil, nil
		}
		return good, nil
	}
	return nil, good
}
