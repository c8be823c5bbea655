package repo

import (
	"context"
	"fmt"
	"runtime"

	"golang.org/x/sync/errgroup"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
)

// SaveIndexFile writes an index file.
func (r *Repository) SaveIndexFile(ctx context.Context, f *index.File) (crypto.ID, error) {
	if err := r.locks.check(); err != nil {
		return crypto.ID{}, err
	}
	id, err := r.SaveFile(ctx, backend.IndexFile, f.Encode())
	if err != nil {
		return id, fmt.Errorf("save index: %w", err)
	}
	r.packer.mu.Lock()
	r.indexFiles[id] = f
	r.packer.mu.Unlock()
	return id, nil
}

// IndexFiles returns the index files loaded or written by this handle.
func (r *Repository) IndexFiles() map[crypto.ID]*index.File {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	out := make(map[crypto.ID]*index.File, len(r.indexFiles))
	for k, v := range r.indexFiles {
		out[k] = v
	}
	return out
}

// ListedIndexFiles returns every index file seen when the index was
// loaded or refreshed, including the superseded ones that were skipped.
// Whoever rewrites the whole index must supersede all of them: superseding
// only the loaded ones would bring an old, skipped file back to life once
// the file that superseded it is gone.
func (r *Repository) ListedIndexFiles() []crypto.ID {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	out := make([]crypto.ID, 0, len(r.listedIndex))
	for id := range r.listedIndex {
		out = append(out, id)
	}
	return out
}

// IndexProblem is an index file that could not be loaded.
type IndexProblem struct {
	ID  crypto.ID
	Err error
}

// addIndexFile adds a loaded index file: its packs to the index, its
// pending packs to the read-only fallback index.
func (r *Repository) addIndexFile(id crypto.ID, f *index.File) {
	r.packer.mu.Lock()
	r.indexFiles[id] = f
	r.listedIndex[id] = true
	for _, p := range f.Pending {
		if old, ok := r.pendingMarks[p.ID]; !ok || p.MarkedAt < old {
			r.pendingMarks[p.ID] = p.MarkedAt
		}
	}
	r.packer.mu.Unlock()
	r.idx.AddFile(f)
	for _, p := range f.Pending {
		r.pending.AddPack(p.ID, p.Blobs)
	}
}

// PendingPacks returns the packs marked for deletion by prune, with the
// time (Unix ns) they were marked. Their blobs are readable but are not
// used for deduplication.
func (r *Repository) PendingPacks() (map[crypto.ID]int64, *index.Index) {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	out := make(map[crypto.ID]int64, len(r.pendingMarks))
	for k, v := range r.pendingMarks {
		out[k] = v
	}
	return out, r.pending
}

// RefreshIndex loads index files written since the index was loaded (by
// other processes: a backup that finished while a mount runs) and returns
// how many it added.
func (r *Repository) RefreshIndex(ctx context.Context) (int, error) {
	ids, err := r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		r.packer.mu.Lock()
		_, known := r.indexFiles[id]
		r.packer.mu.Unlock()
		if known {
			continue
		}
		body, err := r.LoadFile(ctx, backend.IndexFile, id)
		if err != nil {
			return n, err
		}
		f, err := index.DecodeFile(body)
		if err != nil {
			return n, fmt.Errorf("%w: index/%s: %w", ErrCorrupt, id, err)
		}
		r.addIndexFile(id, f)
		n++
	}
	if n > 0 {
		r.idx.Compact()
	}
	return n, nil
}

// LoadIndex reads every index file into memory. Index files that fail to
// load are returned as problems (and make the returned error non-nil unless
// tolerate is set); superseded files are skipped.
func (r *Repository) LoadIndex(ctx context.Context, tolerate bool) ([]IndexProblem, error) {
	ids, err := r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return nil, err
	}
	files := make([]*index.File, len(ids))
	errs := make([]error, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0) * 2)
	for i, id := range ids {
		g.Go(func() error {
			body, err := r.LoadFile(gctx, backend.IndexFile, id)
			if err == nil {
				files[i], err = index.DecodeFile(body)
				if err != nil {
					err = fmt.Errorf("%w: index/%s: %w", ErrCorrupt, id, err)
				}
			}
			errs[i] = err
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	r.packer.mu.Lock()
	for _, id := range ids {
		r.listedIndex[id] = true
	}
	r.packer.mu.Unlock()
	superseded := map[crypto.ID]bool{}
	var problems []IndexProblem
	for i, f := range files {
		if errs[i] != nil {
			problems = append(problems, IndexProblem{ids[i], errs[i]})
			continue
		}
		for _, s := range f.Supersedes {
			superseded[s] = true
		}
	}
	for i, f := range files {
		if f == nil || superseded[ids[i]] {
			continue
		}
		r.addIndexFile(ids[i], f)
	}
	r.idx.Compact()
	r.pending.Compact()
	if len(problems) > 0 && !tolerate {
		return problems, fmt.Errorf("%d index file(s) could not be loaded, first: %w (run `dj repair index`)", len(problems), problems[0].Err)
	}
	return problems, nil
}
