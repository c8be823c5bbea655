package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"sort"
	"sync"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
)

// indexSet is the bookkeeping of index files: which ones this handle loaded
// or wrote, which ones it saw listed, and the packs that prune marked for
// deletion. Its lock guards only this bookkeeping; the index itself
// (Repository.idx) and the pending index have their own.
type indexSet struct {
	mu sync.Mutex
	// files are the index files loaded or written by this handle: their
	// ids only (their entries are in the index; keeping the decoded files
	// too held every entry twice).
	files  map[crypto.ID]bool
	listed map[crypto.ID]bool  // every index file seen, superseded ones too
	marks  map[crypto.ID]int64 // pending pack -> when it was marked (Unix ns)

	// pending holds the blobs of packs marked for deletion: a read-only
	// fallback for loads, never used for deduplication. Set once.
	pending *index.Index
}

func newIndexSet() indexSet {
	return indexSet{files: map[crypto.ID]bool{}, listed: map[crypto.ID]bool{}, marks: map[crypto.ID]int64{}, pending: index.New()}
}

// SaveIndexFile writes an index file.
func (r *Repository) SaveIndexFile(ctx context.Context, f *index.File) (crypto.ID, error) {
	if err := r.locks.check(); err != nil {
		return crypto.ID{}, err
	}
	id, err := r.SaveFile(ctx, backend.IndexFile, f.Encode())
	if err != nil {
		return id, fmt.Errorf("save index: %w", err)
	}
	r.ixs.mu.Lock()
	r.ixs.files[id] = true
	r.ixs.mu.Unlock()
	return id, nil
}

// IndexFiles returns the ids of the index files loaded or written by this
// handle (LoadIndexFile reads one again).
func (r *Repository) IndexFiles() map[crypto.ID]bool {
	r.ixs.mu.Lock()
	defer r.ixs.mu.Unlock()
	out := make(map[crypto.ID]bool, len(r.ixs.files))
	for k := range r.ixs.files {
		out[k] = true
	}
	return out
}

// ListedIndexFiles returns every index file seen when the index was
// loaded or refreshed, including the superseded ones that were skipped.
// Whoever rewrites the whole index must supersede all of them: superseding
// only the loaded ones would bring an old, skipped file back to life once
// the file that superseded it is gone.
func (r *Repository) ListedIndexFiles() []crypto.ID {
	r.ixs.mu.Lock()
	defer r.ixs.mu.Unlock()
	out := make([]crypto.ID, 0, len(r.ixs.listed))
	for id := range r.ixs.listed {
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
	r.noteIndexFile(id, f)
	r.idx.AddFile(f)
}

// noteIndexFile records an index file and its packs marked for deletion;
// its packs go into the index separately.
func (r *Repository) noteIndexFile(id crypto.ID, f *index.File) {
	r.ixs.mu.Lock()
	r.ixs.files[id] = true
	r.ixs.listed[id] = true
	for _, p := range f.Pending {
		if old, ok := r.ixs.marks[p.ID]; !ok || p.MarkedAt < old {
			r.ixs.marks[p.ID] = p.MarkedAt
		}
	}
	r.ixs.mu.Unlock()
	for _, p := range f.Pending {
		r.ixs.pending.AddPack(p.ID, p.Blobs)
	}
}

// PendingPacks returns the packs marked for deletion by prune, with the
// time (Unix ns) they were marked. Their blobs are readable but are not
// used for deduplication.
func (r *Repository) PendingPacks() (map[crypto.ID]int64, *index.Index) {
	r.ixs.mu.Lock()
	defer r.ixs.mu.Unlock()
	out := make(map[crypto.ID]int64, len(r.ixs.marks))
	for k, v := range r.ixs.marks {
		out[k] = v
	}
	return out, r.ixs.pending
}

// RefreshIndex loads index files written since the index was loaded (by
// other processes: a backup that finished while a mount runs) and returns
// how many it added. A listed file gone by the time it is loaded is
// skipped, as LoadIndex explains.
func (r *Repository) RefreshIndex(ctx context.Context) (int, error) {
	ids, err := r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		r.ixs.mu.Lock()
		_, known := r.ixs.files[id]
		r.ixs.mu.Unlock()
		if known {
			continue
		}
		f, err := r.LoadIndexFile(ctx, id)
		if errors.Is(err, fs.ErrNotExist) {
			// Rewritten since the listing (LoadIndex): the superseding
			// file is listed now or at the next refresh.
			continue
		}
		if err != nil {
			return n, err
		}
		r.addIndexFile(id, f)
		n++
	}
	if n > 0 {
		r.idx.Compact()
	}
	return n, nil
}

// LoadIndexFile loads and decodes one index file.
func (r *Repository) LoadIndexFile(ctx context.Context, id crypto.ID) (*index.File, error) {
	body, err := r.LoadFile(ctx, backend.IndexFile, id)
	if err != nil {
		return nil, err
	}
	f, err := index.DecodeFile(body)
	if err != nil {
		return nil, fmt.Errorf("%w: index/%s: %w", ErrCorrupt, id, err)
	}
	return f, nil
}

// LoadIndex reads every index file into memory. Index files that fail to
// load are returned as problems (and make the returned error non-nil unless
// tolerate is set); superseded files are skipped. A listed file that is
// gone when it is loaded was rewritten by another process (prune, repair
// index: WriteIndex's superseding files come first, the removals after), so
// the index is listed again, at most indexRelists times, and the files
// listed last are what counts.
func (r *Repository) LoadIndex(ctx context.Context, tolerate bool) ([]IndexProblem, error) {
	loaded := map[crypto.ID]*index.File{}
	failed := map[crypto.ID]error{}
	var ids []crypto.ID
	for attempt := 0; ; attempt++ {
		var err error
		if ids, err = r.ListFiles(ctx, backend.IndexFile); err != nil {
			return nil, err
		}
		var toLoad []crypto.ID
		for _, id := range ids {
			if loaded[id] == nil {
				toLoad = append(toLoad, id)
			}
		}
		files, errs, err := loadEach(ctx, toLoad, runtime.GOMAXPROCS(0)*2, r.LoadIndexFile)
		if err != nil {
			return nil, err
		}
		clear(failed)
		vanished := false
		for i, id := range toLoad {
			if errs[i] != nil {
				failed[id] = errs[i]
				vanished = vanished || errors.Is(errs[i], fs.ErrNotExist)
				continue
			}
			loaded[id] = files[i]
		}
		if !vanished || attempt == indexRelists {
			break
		}
	}
	r.ixs.mu.Lock()
	for _, id := range ids {
		r.ixs.listed[id] = true
	}
	r.ixs.mu.Unlock()
	superseded := map[crypto.ID]bool{}
	for _, id := range ids {
		if f := loaded[id]; f != nil {
			for _, s := range f.Supersedes {
				superseded[s] = true
			}
		}
	}
	var problems []IndexProblem
	for _, id := range ids {
		// A file still listed but gone, whose content another file holds,
		// is a removal the listing has not caught up with.
		if err := failed[id]; err != nil && !(superseded[id] && errors.Is(err, fs.ErrNotExist)) {
			problems = append(problems, IndexProblem{id, err})
		}
	}
	var live []*index.File
	for _, id := range ids {
		f := loaded[id]
		if f == nil || superseded[id] {
			continue
		}
		r.noteIndexFile(id, f)
		live = append(live, f)
	}
	r.idx.AddFiles(live)
	r.ixs.pending.Compact()
	if len(problems) > 0 && !tolerate {
		return problems, fmt.Errorf("%d index file(s) could not be loaded, first: %w (run `dj repair index`)", len(problems), problems[0].Err)
	}
	return problems, nil
}

// indexRelists bounds how often LoadIndex lists the index again when
// listed files vanished before they were loaded.
const indexRelists = 3

// maxBlobsPerIndexFile keeps index files small enough to load quickly.
const maxBlobsPerIndexFile = 100_000

// WriteIndex stores packs and pending packs (with their MarkedAt) in new
// index files of bounded size. The last file written lists supersedes, so
// a reader that lists the index while the files are written sees either
// the old files and some new ones (their union is complete) or every new
// file. The caller removes the superseded files afterwards. It returns how
// many files were written.
func (r *Repository) WriteIndex(ctx context.Context, packs, pending []index.FilePack, supersedes []crypto.ID) (int, error) {
	sort.Slice(packs, func(i, j int) bool { return packs[i].ID.String() < packs[j].ID.String() })
	sort.Slice(pending, func(i, j int) bool { return pending[i].ID.String() < pending[j].ID.String() })
	var files []*index.File
	cur := &index.File{}
	n := 0
	flush := func() {
		files = append(files, cur)
		cur = &index.File{}
		n = 0
	}
	for _, p := range packs {
		if n > 0 && n+len(p.Blobs) > maxBlobsPerIndexFile {
			flush()
		}
		cur.Packs = append(cur.Packs, p)
		n += len(p.Blobs)
	}
	for _, p := range pending {
		if n > 0 && n+len(p.Blobs) > maxBlobsPerIndexFile {
			flush()
		}
		cur.Pending = append(cur.Pending, p)
		n += len(p.Blobs)
	}
	flush()
	// Only the last file supersedes the old ones: a reader that lists the
	// index while the files are written sees either some new files and all
	// old ones (their union is complete), or every new file.
	files[len(files)-1].Supersedes = supersedes
	for _, f := range files {
		if _, err := r.SaveIndexFile(ctx, f); err != nil {
			return 0, err
		}
	}
	return len(files), nil
}
