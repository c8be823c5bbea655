package maint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// Severity says whether a problem is damage (an error) or a state that
// needs no repair (a warning).
type Severity string

// The severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// ProblemKind classifies a problem found by Check.
type ProblemKind string

// The kinds of problems.
const (
	// Errors.
	KindSnapshotUnreadable ProblemKind = "snapshot_unreadable" // snapshot file does not load (includes a name/content mismatch)
	KindIndexUnreadable    ProblemKind = "index_unreadable"    // index file does not load
	KindKeyUnreadable      ProblemKind = "key_unreadable"      // key file does not load or parse
	KindFileHash           ProblemKind = "file_hash"           // a file's name is not the SHA-256 of its bytes
	KindTreeUnreadable     ProblemKind = "tree_unreadable"     // tree blob in the index that does not load or decode
	KindBlobMissing        ProblemKind = "blob_missing"        // a snapshot needs a blob that no index lists
	KindSizeMismatch       ProblemKind = "size_mismatch"       // a file's size differs from the sum of its blobs
	KindPackMissing        ProblemKind = "pack_missing"        // an indexed pack is not in storage
	KindPackHeader         ProblemKind = "pack_header"         // a pack's header cannot be read or parsed
	KindPackMismatch       ProblemKind = "pack_mismatch"       // index entries that the pack header does not confirm
	KindPackHash           ProblemKind = "pack_hash"           // --read-data: pack content does not match its name
	KindBlobDamaged        ProblemKind = "blob_damaged"        // --read-data: a blob does not decrypt or verify

	// Warnings.
	KindBlobPending      ProblemKind = "blob_pending"      // a snapshot needs a blob only found in a pack marked for deletion
	KindPackUnreferenced ProblemKind = "pack_unreferenced" // a pack no index names (a running or interrupted backup)
	KindPackExtraBlobs   ProblemKind = "pack_extra_blobs"  // a pack holds blobs its index entry does not list
	KindPendingGone      ProblemKind = "pending_gone"      // a pack marked for deletion is already deleted
	KindIndexSuperseded  ProblemKind = "index_superseded"  // a superseded index file is still stored
	KindInvalidName      ProblemKind = "invalid_name"      // a stored file whose name is not an id
	KindFileVanished     ProblemKind = "file_vanished"     // an index or snapshot file was removed while check ran
)

// ProblemBlob names a blob in a problem report.
type ProblemBlob struct {
	Type string    `json:"type"`
	ID   crypto.ID `json:"id"`
}

// AffectedPath is a file or directory (ending in "/") of one or more
// snapshots that loses data because of a problem. A directory means that
// directory's listing and everything below it.
type AffectedPath struct {
	Path      string      `json:"path"`
	Snapshots []crypto.ID `json:"snapshots"`
}

// Problem is one thing Check found wrong. It names the file of the
// repository, the pack and the blobs concerned, and, for lost data, the
// paths of the snapshots that are affected.
type Problem struct {
	Severity Severity    `json:"severity"`
	Kind     ProblemKind `json:"kind"`
	Message  string      `json:"message"`
	// File is the repository file concerned, like "index/<id>" or
	// "data/ab/<id>".
	File     string        `json:"file,omitempty"`
	Pack     *crypto.ID    `json:"pack,omitempty"`
	Snapshot *crypto.ID    `json:"snapshot,omitempty"`
	Blobs    []ProblemBlob `json:"blobs,omitempty"`
	// LostBlobs counts the blobs of the problem for which no intact copy
	// remains; when it is zero the damage costs no data.
	LostBlobs int            `json:"lost_blobs,omitempty"`
	Affected  []AffectedPath `json:"affected,omitempty"`

	candidates []BlobRef // blobs whose copy in Pack is unusable
}

// CheckProgress is reported while Check runs.
type CheckProgress struct {
	Phase       string // "snapshots", "index", "keys", "packs", "read-data", "trees", "affected"
	Done, Total int64  // items (packs, trees) done and expected (0: unknown)
	Bytes       int64  // bytes read so far in "read-data"
	TotalBytes  int64  // bytes to read in "read-data"
}

// CheckOptions tune Check.
type CheckOptions struct {
	// ReadData loads every pack (or the Subset) whole and decrypts and
	// verifies every blob in it; see Check for why that covers every byte.
	ReadData bool
	// PackHashes also compares each pack's SHA-256 with its name when
	// reading data (what restic's check does; it finds no damage that the
	// blob checks miss, and costs about a quarter of the time).
	PackHashes bool
	// Subset limits ReadData to some packs; nil reads all.
	Subset *Subset
	// Workers is how many packs are checked at once (default GOMAXPROCS).
	// Reading data holds one whole pack in memory per worker, and one per
	// reader (CheckReaders) loading the next.
	Workers int
	// Progress, when set, is called (never concurrently) as Check advances.
	Progress func(CheckProgress)
}

// CheckResult is what Check found.
type CheckResult struct {
	Problems         []*Problem  `json:"-"`
	Errors           int         `json:"num_errors"`
	Warnings         int         `json:"num_warnings"`
	Snapshots        int         `json:"snapshots"`
	IndexFiles       int         `json:"index_files"`
	Packs            int         `json:"packs"`
	PacksRead        int         `json:"packs_read"`
	BytesRead        int64       `json:"bytes_read"`
	Trees            int         `json:"trees"`
	BrokenPacks      []crypto.ID `json:"broken_packs"`
	UnreferencedPack int         `json:"unreferenced_packs"`
	// SuggestRepairIndex: `dj repair index` would fix (some of) the errors.
	SuggestRepairIndex bool `json:"suggest_repair_index"`
	// SuggestRepairSnapshots: data is lost; `dj repair snapshots` writes
	// snapshots without it.
	SuggestRepairSnapshots bool `json:"suggest_repair_snapshots"`
	// SuggestPrune: unreferenced packs or superseded index files remain.
	SuggestPrune bool `json:"suggest_prune"`
}

// OK reports whether Check found no errors (warnings are fine).
func (r *CheckResult) OK() bool { return r.Errors == 0 }

// Subset selects the packs that --read-data-subset reads: packs whose id's
// first byte modulo M is N-1 ("n/m"), a random share of the packs ("x%"), or
// random data packs until at least a total size is reached ("5G"; as in
// restic, the size is a lower bound: a subset of 10M reads at least one data
// pack whatever its size).
type Subset struct {
	N, M     int
	Fraction float64
	Bytes    int64
}

// String renders the subset as it is written on the command line.
func (s *Subset) String() string {
	switch {
	case s.M > 0:
		return fmt.Sprintf("%d/%d", s.N, s.M)
	case s.Fraction > 0:
		return strconv.FormatFloat(s.Fraction*100, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(s.Bytes, 10)
}

// choose returns the packs of the subset.
// isData tells data packs from tree packs.
func (s *Subset) choose(ids []crypto.ID, sizes map[crypto.ID]int64, isData func(crypto.ID) bool) map[crypto.ID]bool {
	out := map[crypto.ID]bool{}
	if s == nil {
		for _, id := range ids {
			out[id] = true
		}
		return out
	}
	if s.M > 0 {
		for _, id := range ids {
			if int(id[0])%s.M == s.N-1 {
				out[id] = true
			}
		}
		return out
	}
	order := append([]crypto.ID(nil), ids...)
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	if s.Fraction > 0 {
		n := int(math.Ceil(s.Fraction * float64(len(order))))
		for _, id := range order[:min(n, len(order))] {
			out[id] = true
		}
		return out
	}
	// Data packs first (in random order): the size counts the data that is
	// read; tree packs are read by every check's walk anyway.
	sort.SliceStable(order, func(i, j int) bool { return isData(order[i]) && !isData(order[j]) })
	var total int64
	for _, id := range order {
		if total >= s.Bytes {
			break
		}
		total += sizes[id]
		out[id] = true
	}
	return out
}

// Check verifies a repository: snapshots, index files, key files and the
// names of those files; that every indexed pack exists and its header
// agrees with the index; that every tree of every snapshot loads and every
// blob a snapshot names is indexed; and, with ReadData, every blob inside
// the packs. It names each problem, and for lost data the files and
// directories of the snapshots that are affected.
//
// Reading data verifies every byte of a pack without hashing the whole
// file: the header is sealed, and parsing it checks that its entries tile
// the pack exactly (blob after blob from offset 0 up to the header, whose
// length the last 4 bytes give); every blob is sealed with its type and id
// as associated data, and opens only if none of its bytes changed, nonce
// included; and its plaintext must hash to its id. So a changed, missing or
// added byte anywhere fails a seal or the tiling. The one thing left is the
// file's name: a pack stored under another pack's name is caught by the
// comparison of its header with the index, unless both list the same blobs
// at the same places, in which case either serves equally. Packs whose
// header does not parse, or that hold padding (which dj never writes, and
// whose bytes no seal covers), are hashed as well, as all packs are with
// PackHashes.
//
// r must be opened without loading the index: Check reads the snapshot
// list first and the index second (tolerating broken index files, which it
// reports). The returned error is for failures that stop the check (the
// backend cannot list files, the context ends); damage is reported in the
// result.
func Check(ctx context.Context, r *repo.Repository, opts CheckOptions) (*CheckResult, error) {
	if opts.Workers <= 0 {
		// Packs are read by separate readers, so workers only compute.
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	c := &checker{r: r, opts: opts, res: &CheckResult{},
		unusable: map[packBlob]bool{}, badBlob: map[BlobRef][]int{}, badNode: map[nodeKey][]int{},
		reported: map[BlobRef]bool{}, unrefBlobs: map[BlobRef]index.PackedBlob{}}
	steps := []func(context.Context) error{c.loadSnapshots, c.loadIndex, c.checkKeysAndNames, c.checkPacks, c.checkTrees, c.findLost, c.mapAffected}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	res := c.res
	sortProblems(res.Problems)
	broken := map[crypto.ID]bool{}
	for _, p := range res.Problems {
		if p.Severity == SeverityError {
			res.Errors++
		} else {
			res.Warnings++
		}
		switch p.Kind {
		case KindPackMissing, KindPackHeader, KindPackMismatch, KindPackHash, KindBlobDamaged:
			if p.Severity == SeverityError && p.Pack != nil {
				broken[*p.Pack] = true
			}
		}
		switch p.Kind {
		case KindIndexUnreadable, KindPackMismatch:
			res.SuggestRepairIndex = true
		case KindPackMissing, KindPackHeader, KindBlobDamaged, KindPackHash:
			if p.Severity == SeverityError {
				res.SuggestRepairIndex = true
			}
		case KindPackUnreferenced, KindIndexSuperseded:
			res.SuggestPrune = true
		}
		if p.Severity == SeverityError && len(p.Affected) > 0 {
			res.SuggestRepairSnapshots = true
		}
	}
	for id := range broken {
		res.BrokenPacks = append(res.BrokenPacks, id)
	}
	sortIDs(res.BrokenPacks)
	return res, nil
}

type packBlob struct {
	pack crypto.ID
	ref  BlobRef
}

type nodeKey struct {
	tree crypto.ID
	name string
}

type checker struct {
	r    *repo.Repository
	opts CheckOptions
	res  *CheckResult

	snaps      []*snapshot.Snapshot
	stored     map[crypto.ID]int64       // packs in storage and their sizes
	indexed    map[crypto.ID][]pack.Blob // normal packs of the index
	pending    map[crypto.ID][]pack.Blob // packs marked for deletion
	pendingIdx *index.Index

	mu         sync.Mutex
	progressMu sync.Mutex
	unusable   map[packBlob]bool            // copies of blobs that cannot be read
	unrefBlobs map[BlobRef]index.PackedBlob // blobs in packs no index names
	badBlob    map[BlobRef][]int            // lost or missing blobs -> problems
	badNode    map[nodeKey][]int            // files with a size mismatch -> problems
	reported   map[BlobRef]bool             // blobs already reported by the tree walk
	summaries  map[crypto.ID]*treeSummary   // trees decoded by the pack checks
}

func (c *checker) add(p *Problem) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.Problems = append(c.res.Problems, p)
	return len(c.res.Problems) - 1
}

func (c *checker) progress(p CheckProgress) {
	if c.opts.Progress == nil {
		return
	}
	c.progressMu.Lock()
	c.opts.Progress(p)
	c.progressMu.Unlock()
}

func idPtr(id crypto.ID) *crypto.ID { return &id }

func packFile(id crypto.ID) string {
	return backend.Handle{Type: backend.PackFile, Name: id.String()}.String()
}

func problemBlobs(refs []BlobRef) []ProblemBlob {
	out := make([]ProblemBlob, 0, len(refs))
	for _, b := range refs {
		out = append(out, ProblemBlob{Type: b.Type.String(), ID: b.ID})
	}
	return out
}

func refsOf(blobs []pack.Blob) []BlobRef {
	out := make([]BlobRef, 0, len(blobs))
	for _, b := range blobs {
		out = append(out, BlobRef{b.Type, b.ID})
	}
	return out
}

func (c *checker) loadSnapshots(ctx context.Context) error {
	c.progress(CheckProgress{Phase: "snapshots"})
	snaps, problems, err := c.r.Snapshots(ctx)
	if err != nil {
		return err
	}
	c.snaps = snaps
	c.res.Snapshots = len(snaps)
	for _, p := range problems {
		file := backend.Handle{Type: backend.SnapshotFile, Name: p.ID.String()}.String()
		if errors.Is(p.Err, fs.ErrNotExist) {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindFileVanished, Snapshot: idPtr(p.ID), File: file,
				Message: fmt.Sprintf("snapshot %s was removed while check ran (by forget or prune)", p.ID.Short())})
			continue
		}
		c.add(&Problem{Severity: SeverityError, Kind: KindSnapshotUnreadable, Snapshot: idPtr(p.ID), File: file,
			Message: fmt.Sprintf("snapshot %s cannot be read: %v", p.ID.Short(), p.Err)})
	}
	return nil
}

func (c *checker) loadIndex(ctx context.Context) error {
	c.progress(CheckProgress{Phase: "index"})
	problems, err := c.r.LoadIndex(ctx, true)
	if err != nil {
		return err
	}
	bad := map[crypto.ID]bool{}
	for _, p := range problems {
		bad[p.ID] = true
		file := backend.Handle{Type: backend.IndexFile, Name: p.ID.String()}.String()
		if errors.Is(p.Err, fs.ErrNotExist) {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindFileVanished, File: file,
				Message: fmt.Sprintf("index file %s was removed while check ran (a prune or repair ran at the same time); if blobs are reported missing, run check again", p.ID.Short())})
			continue
		}
		c.add(&Problem{Severity: SeverityError, Kind: KindIndexUnreadable, File: file,
			Message: fmt.Sprintf("index file %s cannot be read: %v", p.ID.Short(), p.Err)})
	}
	loaded := c.r.IndexFiles()
	c.res.IndexFiles = len(loaded)
	ids, err := c.r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return err
	}
	sortIDs(ids)
	for _, id := range ids {
		if _, ok := loaded[id]; ok || bad[id] {
			continue
		}
		c.add(&Problem{Severity: SeverityWarning, Kind: KindIndexSuperseded,
			File:    backend.Handle{Type: backend.IndexFile, Name: id.String()}.String(),
			Message: fmt.Sprintf("index file %s is superseded by a newer one but still stored (left by an interrupted prune or repair)", id.Short())})
	}
	c.indexed = c.r.Index().Packs()
	marks, pidx := c.r.PendingPacks()
	c.pendingIdx = pidx
	c.pending = map[crypto.ID][]pack.Blob{}
	for id, blobs := range pidx.Packs() {
		if _, ok := c.indexed[id]; !ok {
			c.pending[id] = blobs
		}
	}
	for id := range marks {
		if _, ok := c.pending[id]; !ok {
			if _, ok := c.indexed[id]; !ok {
				c.pending[id] = nil // a pending pack without blobs
			}
		}
	}
	return nil
}

// maxKeyFileSize bounds a key file read by check.
const maxKeyFileSize = 64 << 10

// checkKeysAndNames checks key files (hash and syntax) and reports stored
// files whose names are not ids. Index and snapshot files had their names
// checked while loading.
func (c *checker) checkKeysAndNames(ctx context.Context) error {
	c.progress(CheckProgress{Phase: "keys"})
	be := c.r.Backend()
	for _, t := range []backend.FileType{backend.KeyFile, backend.IndexFile, backend.SnapshotFile} {
		var odd []string
		err := be.List(ctx, t, func(fi backend.FileInfo) error {
			if _, err := crypto.ParseID(fi.Name); err != nil {
				odd = append(odd, fi.Name)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list %s: %w", t, err)
		}
		sort.Strings(odd)
		for _, name := range odd {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindInvalidName, File: string(t) + "/" + name,
				Message: fmt.Sprintf("%s/%s is not named by an id; dj ignores it", t, name)})
		}
	}
	ids, err := c.r.ListFiles(ctx, backend.KeyFile)
	if err != nil {
		return err
	}
	sortIDs(ids)
	for _, id := range ids {
		h := backend.Handle{Type: backend.KeyFile, Name: id.String()}
		fi, err := be.Stat(ctx, h)
		if err == nil && fi.Size > maxKeyFileSize {
			err = fmt.Errorf("%d bytes is too large for a key file", fi.Size)
		}
		var data []byte
		if err == nil {
			data, err = be.Load(ctx, h, 0, 0)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.add(&Problem{Severity: SeverityError, Kind: KindKeyUnreadable, File: h.String(),
				Message: fmt.Sprintf("key %s cannot be read: %v", id.Short(), err)})
			continue
		}
		if crypto.Hash(data) != id {
			c.add(&Problem{Severity: SeverityError, Kind: KindFileHash, File: h.String(),
				Message: fmt.Sprintf("key %s: content does not match its name", id.Short())})
			continue
		}
		if _, err := crypto.ParseKeyFile(data); err != nil {
			c.add(&Problem{Severity: SeverityError, Kind: KindKeyUnreadable, File: h.String(),
				Message: fmt.Sprintf("key %s cannot be parsed: %v", id.Short(), err)})
		}
	}
	return nil
}

type packJob struct {
	id      crypto.ID
	size    int64
	blobs   []pack.Blob // index entries (nil for unreferenced packs)
	read    bool        // load the whole pack and verify it
	unref   bool        // no index names the pack
	pending bool
}

type packResult struct {
	problems []*Problem
	bytes    int64
	header   []pack.Blob
}

// checkPacks compares storage with the index, then checks the header of
// every pack (and with ReadData, its content) in parallel.
func (c *checker) checkPacks(ctx context.Context) error {
	c.stored = map[crypto.ID]int64{}
	var odd []string
	err := c.r.Backend().List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := crypto.ParseID(fi.Name); err == nil {
			c.stored[id] = fi.Size
		} else {
			odd = append(odd, fi.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	sort.Strings(odd)
	for _, name := range odd {
		c.add(&Problem{Severity: SeverityWarning, Kind: KindInvalidName, File: string(backend.PackFile) + "/" + name,
			Message: fmt.Sprintf("pack file %s is not named by an id; dj ignores it", name)})
	}
	var jobs []packJob
	var indexedIDs []crypto.ID
	for id := range c.indexed {
		indexedIDs = append(indexedIDs, id)
	}
	for id := range c.pending {
		indexedIDs = append(indexedIDs, id)
	}
	sortIDs(indexedIDs)
	for _, id := range indexedIDs {
		blobs, ok := c.indexed[id]
		pending := !ok
		if pending {
			blobs = c.pending[id]
		}
		blobs = dedupBlobs(blobs)
		size, ok := c.stored[id]
		if !ok {
			refs := refsOf(blobs)
			for _, ref := range refs {
				c.unusable[packBlob{id, ref}] = true
			}
			if pending {
				c.add(&Problem{Severity: SeverityWarning, Kind: KindPendingGone, Pack: idPtr(id), File: packFile(id),
					Message:    fmt.Sprintf("pack %s, marked for deletion, is already deleted (a prune ran meanwhile, or was interrupted)", id.Short()),
					candidates: refs})
				continue
			}
			c.add(&Problem{Severity: SeverityError, Kind: KindPackMissing, Pack: idPtr(id), File: packFile(id),
				Blobs: problemBlobs(refs), candidates: refs,
				Message: fmt.Sprintf("pack %s is in the index but missing from storage (%d blobs)", id.Short(), len(blobs))})
			continue
		}
		jobs = append(jobs, packJob{id: id, size: size, blobs: blobs, pending: pending})
	}
	c.res.Packs = len(jobs)
	var unref []crypto.ID
	for id := range c.stored {
		_, a := c.indexed[id]
		_, b := c.pending[id]
		if !a && !b {
			unref = append(unref, id)
		}
	}
	sortIDs(unref)
	c.res.UnreferencedPack = len(unref)
	for _, id := range unref {
		jobs = append(jobs, packJob{id: id, size: c.stored[id], unref: true})
	}
	if c.opts.ReadData {
		var ids []crypto.ID
		for _, j := range jobs {
			if !j.unref {
				ids = append(ids, j.id)
			}
		}
		chosen := c.opts.Subset.choose(ids, c.stored, func(id crypto.ID) bool {
			blobs := c.indexed[id]
			return len(blobs) > 0 && blobs[0].Type == pack.DataBlob
		})
		for i := range jobs {
			jobs[i].read = chosen[jobs[i].id]
		}
		// Largest packs first: the pass then ends on small ones, and no
		// core waits alone on a large pack at the end.
		sort.SliceStable(jobs, func(a, b int) bool {
			return jobs[a].read && !jobs[b].read || jobs[a].read == jobs[b].read && jobs[a].size > jobs[b].size
		})
	}
	var totalBytes int64
	for _, j := range jobs {
		if j.read {
			totalBytes += j.size
		}
	}
	phase := "packs"
	if c.opts.ReadData {
		phase = "read-data"
	}
	results := make([]packResult, len(jobs))
	var (
		done      int64
		bytesDone int64
		wmu       sync.Mutex
		wg        sync.WaitGroup
	)
	c.progress(CheckProgress{Phase: phase, Total: int64(len(jobs)), TotalBytes: totalBytes})
	// Readers load the packs to read, in job order, into a few buffers;
	// workers verify them in the order they arrive (a large pack still
	// being read holds up no worker). Reading and verifying overlap, and
	// memory holds at most cap(free) packs.
	var maxRead int64
	for _, j := range jobs {
		if j.read && j.size <= pack.MaxPackSize {
			maxRead = max(maxRead, (j.size+4095)&^4095)
		}
	}
	const readers = CheckReaders
	free := make(chan []byte, c.opts.Workers+readers)
	for range cap(free) {
		free <- nil
	}
	ready := make(chan loadedPack, len(jobs))
	var nextRead atomic.Int64
	var rg sync.WaitGroup
	for range readers {
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				i := int(nextRead.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				if !jobs[i].read || ctx.Err() != nil {
					ready <- loadedPack{i: i, err: ctx.Err()}
					continue
				}
				var buf []byte
				select {
				case buf = <-free:
				case <-ctx.Done():
					ready <- loadedPack{i: i, err: ctx.Err()}
					continue
				}
				if buf == nil {
					// Room for the largest pack at once: a buffer that
					// grows pack by pack is garbage many times over. (Go
					// aligns allocations this large to pages, as reads
					// around the page cache want.)
					buf = make([]byte, maxRead)
				}
				data, err := c.loadPack(ctx, jobs[i], buf)
				ready <- loadedPack{i: i, data: data, buf: buf, err: err}
			}
		}()
	}
	go func() {
		rg.Wait()
		close(ready)
	}()
	for w := 0; w < c.opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var plain []byte
			for lp := range ready {
				i := lp.i
				if ctx.Err() == nil {
					results[i], plain = c.checkPack(ctx, jobs[i], lp, plain)
				}
				if jobs[i].read {
					if lp.data != nil {
						lp.buf = lp.data[:cap(lp.data)]
					}
					free <- lp.buf // never blocks: buffers go back where they came from
				}
				if ctx.Err() != nil {
					continue // let the readers run out
				}
				if jobs[i].pending {
					// Damage in a pack marked for deletion costs nothing
					// unless a snapshot still needs its blobs, which the
					// tree walk reports as missing.
					for _, p := range results[i].problems {
						if p.Severity == SeverityError {
							p.Severity = SeverityWarning
							p.Message += " (the pack is marked for deletion)"
						}
					}
				}
				wmu.Lock()
				done++
				bytesDone += results[i].bytes
				p := CheckProgress{Phase: phase, Done: done, Total: int64(len(jobs)), Bytes: bytesDone, TotalBytes: totalBytes}
				wmu.Unlock()
				c.progress(p)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, j := range jobs {
		res := results[i]
		if j.read {
			c.res.PacksRead++
			c.res.BytesRead += res.bytes
		}
		if j.unref {
			for _, b := range res.header {
				ref := BlobRef{b.Type, b.ID}
				if _, ok := c.unrefBlobs[ref]; !ok {
					c.unrefBlobs[ref] = index.PackedBlob{Blob: b, PackID: j.id}
				}
			}
		}
		for _, p := range res.problems {
			if p.Pack != nil {
				for _, ref := range p.candidates {
					c.unusable[packBlob{*p.Pack, ref}] = true
				}
			}
			c.add(p)
		}
	}
	return nil
}

// CheckReaders is the number of goroutines that read packs for
// check --read-data. They mostly wait for the disk, and should have Ps of
// their own (GOMAXPROCS above CheckOptions.Workers), or each finished read
// waits for a busy worker to be preempted before the next one is issued.
const CheckReaders = 2

// dedupBlobs drops repeated entries (a pack listed in two index files).
func dedupBlobs(blobs []pack.Blob) []pack.Blob {
	seen := make(map[pack.Blob]bool, len(blobs))
	out := blobs[:0:0]
	for _, b := range blobs {
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out
}

// loadedPack is a pack read for a worker: its bytes (in buf's storage),
// or why it could not be read.
type loadedPack struct {
	i    int // the job
	data []byte
	buf  []byte
	err  error
}

// loadPack reads a whole pack, into buf's storage where it can. On local
// disk it reads around the page cache: a check of stored data must see what
// the disk holds, not a cached copy (and it spares the kernel a copy).
func (c *checker) loadPack(ctx context.Context, j packJob, buf []byte) ([]byte, error) {
	if j.size > pack.MaxPackSize {
		return nil, fmt.Errorf("%w: %d bytes is larger than the maximum pack size", pack.ErrCorrupt, j.size)
	}
	h := backend.Handle{Type: backend.PackFile, Name: j.id.String()}
	if ul, ok := backend.As[backend.UncachedLoader](c.r.Backend()); ok {
		return ul.LoadUncached(ctx, h, buf)
	}
	return c.r.Backend().Load(ctx, h, 0, 0)
}

// checkPack checks one pack: its header against the index entries, and
// with j.read (lp holds the pack) every blob. buf is scratch for plaintext,
// returned for reuse.
func (c *checker) checkPack(ctx context.Context, j packJob, lp loadedPack, buf []byte) (packResult, []byte) {
	var res packResult
	id := j.id
	file := packFile(id)
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	var (
		header []pack.Blob
		data   []byte
		err    error
	)
	if j.read {
		data, err = lp.data, lp.err
		res.bytes = int64(len(data))
		if err == nil {
			header, err = pack.ParseTail(c.r.Key(), data, int64(len(data)))
			if err != nil {
				err = fmt.Errorf("%s: %w", h, err)
			}
			if (c.opts.PackHashes || err != nil || hasPadding(header)) && crypto.Hash(data) != id {
				res.problems = append(res.problems, &Problem{Severity: SeverityError, Kind: KindPackHash, Pack: idPtr(id), File: file,
					Message: fmt.Sprintf("pack %s: content does not match its name (the file is damaged)", id.Short())})
			}
		}
	} else {
		header, err = c.r.ReadPackHeader(ctx, id, j.size)
	}
	if ctx.Err() != nil {
		return res, buf
	}
	if err != nil {
		if j.unref {
			res.problems = append(res.problems, &Problem{Severity: SeverityWarning, Kind: KindPackUnreferenced, Pack: idPtr(id), File: file,
				Message: fmt.Sprintf("pack %s is not in any index, and its header cannot be read: %v", id.Short(), err)})
			return res, buf
		}
		p := &Problem{Severity: SeverityError, Kind: KindPackHeader, Pack: idPtr(id), File: file,
			Message: fmt.Sprintf("header of pack %s cannot be read: %v", id.Short(), err)}
		if data == nil {
			// Without the data we cannot tell which blobs are intact: count
			// them all as unusable.
			p.candidates = refsOf(j.blobs)
			p.Blobs = problemBlobs(p.candidates)
		} else {
			p.Message += " (its indexed blobs are verified one by one)"
		}
		res.problems = append(res.problems, p)
		if data == nil {
			return res, buf
		}
	}
	res.header = header
	if j.unref {
		res.problems = append(res.problems, &Problem{Severity: SeverityWarning, Kind: KindPackUnreferenced, Pack: idPtr(id), File: file,
			Message: fmt.Sprintf("pack %s (%d blobs) is not in any index (a backup is running or was interrupted, or repair left a damaged pack; prune removes such packs)", id.Short(), len(header))})
		return res, buf
	}
	if err == nil {
		res.problems = append(res.problems, compareHeader(id, j.blobs, header)...)
	}
	if data == nil {
		return res, buf
	}
	// Verify every blob: the header's when it parsed, else the index's.
	inIndex := make(map[pack.Blob]bool, len(j.blobs))
	for _, b := range j.blobs {
		inIndex[b] = true
	}
	toVerify := header
	if err != nil {
		toVerify = j.blobs
	}
	var damagedIndexed, damagedExtra []BlobRef
	var firstErr error
	for _, b := range toVerify {
		if b.Type == pack.PaddingBlob {
			continue
		}
		end := int64(b.Offset) + int64(b.Length)
		var verr error
		if end > int64(len(data)) {
			verr = fmt.Errorf("blob %s lies beyond the end of the pack", b.ID.Short())
		} else {
			buf, verr = c.r.OpenPacked(index.PackedBlob{Blob: b, PackID: id}, data[b.Offset:end], buf)
		}
		if verr == nil {
			if b.Type == pack.TreeBlob && inIndex[b] {
				c.keepSummary(b.ID, buf)
			}
			continue
		}
		if firstErr == nil {
			firstErr = verr
		}
		if inIndex[b] {
			damagedIndexed = append(damagedIndexed, BlobRef{b.Type, b.ID})
		} else {
			damagedExtra = append(damagedExtra, BlobRef{b.Type, b.ID})
		}
	}
	if len(damagedIndexed) > 0 {
		res.problems = append(res.problems, &Problem{Severity: SeverityError, Kind: KindBlobDamaged, Pack: idPtr(id), File: file,
			Blobs: problemBlobs(damagedIndexed), candidates: damagedIndexed,
			Message: fmt.Sprintf("pack %s: %d blob(s) are damaged, first: %v", id.Short(), len(damagedIndexed), firstErr)})
	}
	if len(damagedExtra) > 0 {
		res.problems = append(res.problems, &Problem{Severity: SeverityWarning, Kind: KindBlobDamaged, Pack: idPtr(id), File: file,
			Blobs:   problemBlobs(damagedExtra),
			Message: fmt.Sprintf("pack %s: %d damaged blob(s) that no index lists (nothing needs them)", id.Short(), len(damagedExtra))})
	}
	return res, buf
}

// hasPadding reports whether a pack header lists padding, whose bytes no
// seal covers.
func hasPadding(blobs []pack.Blob) bool {
	for _, b := range blobs {
		if b.Type == pack.PaddingBlob {
			return true
		}
	}
	return false
}

// compareHeader checks that every index entry of a pack is in its header
// with the same place and sizes. Header entries the index lacks are only a
// warning (repair index drops damaged blobs; nothing refers to them).
func compareHeader(id crypto.ID, indexed, header []pack.Blob) []*Problem {
	type key struct {
		ref    BlobRef
		offset uint32
	}
	inHeader := make(map[key]pack.Blob, len(header))
	for _, b := range header {
		inHeader[key{BlobRef{b.Type, b.ID}, b.Offset}] = b
	}
	seen := make(map[key]bool, len(indexed))
	var wrong []BlobRef
	for _, b := range indexed {
		k := key{BlobRef{b.Type, b.ID}, b.Offset}
		seen[k] = true
		if hb, ok := inHeader[k]; !ok || hb != b {
			wrong = append(wrong, k.ref)
		}
	}
	var out []*Problem
	if len(wrong) > 0 {
		out = append(out, &Problem{Severity: SeverityError, Kind: KindPackMismatch, Pack: idPtr(id), File: packFile(id),
			Blobs: problemBlobs(wrong), candidates: wrong,
			Message: fmt.Sprintf("pack %s: %d index entries are not in the pack header as indexed", id.Short(), len(wrong))})
	}
	var extra []BlobRef
	for _, b := range header {
		if !seen[key{BlobRef{b.Type, b.ID}, b.Offset}] {
			extra = append(extra, BlobRef{b.Type, b.ID})
		}
	}
	if len(extra) > 0 {
		out = append(out, &Problem{Severity: SeverityWarning, Kind: KindPackExtraBlobs, Pack: idPtr(id), File: packFile(id),
			Blobs:   problemBlobs(extra),
			Message: fmt.Sprintf("pack %s holds %d blob(s) its index entry does not list", id.Short(), len(extra))})
	}
	return out
}

// usable reports whether some indexed copy of a blob (normal, or pending
// when pending is set) can be read, as far as the pack checks know.
func (c *checker) usable(ref BlobRef, pending bool) bool {
	locs := c.r.Index().Lookup(ref.Type, ref.ID)
	if pending {
		locs = append(locs, c.pendingIdx.Lookup(ref.Type, ref.ID)...)
	}
	for _, l := range locs {
		if !c.unusable[packBlob{l.PackID, ref}] {
			return true
		}
	}
	return false
}

// checkTrees loads every tree of every snapshot once and checks that the
// blobs they name are indexed and that file sizes add up.
func (c *checker) checkTrees(ctx context.Context) error {
	roots := make([]crypto.ID, 0, len(c.snaps))
	for _, sn := range c.snaps {
		roots = append(roots, sn.Tree)
	}
	var trees int64
	err := walkTrees(ctx, summaryLoader{c}, roots, 4*c.opts.Workers, func(id crypto.ID, t *tree.Tree, err error) {
		c.mu.Lock()
		trees++
		n := trees
		s := c.summaries[id]
		c.mu.Unlock()
		if n%256 == 0 {
			c.progress(CheckProgress{Phase: "trees", Done: n})
		}
		ref := BlobRef{pack.TreeBlob, id}
		if err != nil {
			c.treeFailed(ctx, ref, err)
			return
		}
		if s == nil {
			s = c.summarize(id, t)
		}
		c.applySummary(ctx, id, s)
	})
	c.res.Trees = int(trees)
	c.summaries = nil
	return err
}

// treeSummary is what the tree walk needs to know of one tree: its
// subtrees, and what its file nodes need that the index lacks.
type treeSummary struct {
	subtrees   []crypto.ID
	notIndexed bool      // the tree itself is only in packs marked for deletion
	missing    []BlobRef // data blobs in no index
	pending    []BlobRef // data blobs only in packs marked for deletion
	mismatches []sizeMismatch
}

type sizeMismatch struct {
	name      string
	size, sum uint64
}

// summarize checks a tree's file nodes against the index.
func (c *checker) summarize(id crypto.ID, t *tree.Tree) *treeSummary {
	idx := c.r.Index()
	s := &treeSummary{notIndexed: !idx.Has(pack.TreeBlob, id)}
	for _, node := range t.Nodes {
		switch node.Type {
		case tree.Dir:
			if node.Subtree != nil {
				s.subtrees = append(s.subtrees, *node.Subtree)
			}
		case tree.File:
			var sum uint64
			known := true
			for _, b := range node.Content {
				n, ok := idx.PlainLength(pack.DataBlob, b)
				if !ok {
					n, ok = c.pendingIdx.PlainLength(pack.DataBlob, b)
					if !ok {
						s.missing = append(s.missing, BlobRef{pack.DataBlob, b})
						known = false
						continue
					}
					s.pending = append(s.pending, BlobRef{pack.DataBlob, b})
				}
				sum += uint64(n)
			}
			if known && sum != node.Size {
				s.mismatches = append(s.mismatches, sizeMismatch{node.Name, node.Size, sum})
			}
		}
	}
	return s
}

// applySummary reports what a tree reached from a snapshot lacks.
func (c *checker) applySummary(ctx context.Context, id crypto.ID, s *treeSummary) {
	if s.notIndexed {
		c.blobProblem(ctx, BlobRef{pack.TreeBlob, id}, true)
	}
	for _, ref := range s.missing {
		c.blobProblem(ctx, ref, false)
	}
	for _, ref := range s.pending {
		c.blobProblem(ctx, ref, true)
	}
	for _, m := range s.mismatches {
		i := c.add(&Problem{Severity: SeverityError, Kind: KindSizeMismatch,
			Message: fmt.Sprintf("file %q in tree %s has size %d, but its blobs hold %d bytes", m.name, id.Short(), m.size, m.sum)})
		c.mu.Lock()
		c.badNode[nodeKey{id, m.name}] = append(c.badNode[nodeKey{id, m.name}], i)
		c.mu.Unlock()
	}
}

// keepSummary records the summary of a tree blob that the pack checks
// verified, so the tree walk need not load the tree again: with
// --read-data the trees are decoded while the workers would otherwise wait
// for storage, and the walk only follows the subtrees.
func (c *checker) keepSummary(id crypto.ID, plain []byte) {
	c.mu.Lock()
	_, done := c.summaries[id]
	c.mu.Unlock()
	if done {
		return
	}
	t, err := tree.Decode(plain)
	if err != nil {
		return // the walk loads it and reports why it does not decode
	}
	s := c.summarize(id, t)
	c.mu.Lock()
	if c.summaries == nil {
		c.summaries = map[crypto.ID]*treeSummary{}
	}
	c.summaries[id] = s
	c.mu.Unlock()
}

// summaryLoader serves the tree walk: a tree summarized during the pack
// checks comes back as its subtrees alone; others load from the repository.
type summaryLoader struct{ c *checker }

func (l summaryLoader) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	l.c.mu.Lock()
	s := l.c.summaries[id]
	l.c.mu.Unlock()
	if s == nil {
		return l.c.r.LoadTree(ctx, id)
	}
	t := &tree.Tree{Nodes: make([]*tree.Node, len(s.subtrees))}
	for i := range s.subtrees {
		t.Nodes[i] = &tree.Node{Type: tree.Dir, Subtree: &s.subtrees[i]}
	}
	return t, nil
}

// treeFailed records a tree that did not load.
func (c *checker) treeFailed(ctx context.Context, ref BlobRef, err error) {
	if errors.Is(err, repo.ErrBlobNotFound) {
		c.blobProblem(ctx, ref, false)
		return
	}
	if !c.r.Index().Has(ref.Type, ref.ID) {
		// Only in packs marked for deletion.
		if !c.usable(ref, true) {
			c.blobProblem(ctx, ref, true)
			return
		}
	} else if !c.usable(ref, false) {
		return // a pack problem covers it; findLost maps it
	}
	c.mu.Lock()
	if c.reported[ref] {
		c.mu.Unlock()
		return
	}
	c.reported[ref] = true
	c.mu.Unlock()
	i := c.add(&Problem{Severity: SeverityError, Kind: KindTreeUnreadable, Blobs: problemBlobs([]BlobRef{ref}),
		Message: fmt.Sprintf("tree %s cannot be loaded: %v", ref.ID.Short(), err)})
	c.mu.Lock()
	c.badBlob[ref] = append(c.badBlob[ref], i)
	c.mu.Unlock()
}

// blobProblem reports a blob a snapshot needs that is not in the index
// (inPending: it is only in packs marked for deletion), once per blob.
func (c *checker) blobProblem(ctx context.Context, ref BlobRef, inPending bool) {
	c.mu.Lock()
	if c.reported[ref] {
		c.mu.Unlock()
		return
	}
	c.reported[ref] = true
	unref, inUnref := c.unrefBlobs[ref]
	c.mu.Unlock()
	if inPending {
		if c.usable(ref, true) {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindBlobPending, Blobs: problemBlobs([]BlobRef{ref}),
				Message: fmt.Sprintf("%s blob %s is only in a pack marked for deletion; the next prune keeps that pack", ref.Type, ref.ID.Short())})
			return
		}
		// Its pending packs are gone or unreadable: it is missing.
	}
	p := &Problem{Severity: SeverityError, Kind: KindBlobMissing, Blobs: problemBlobs([]BlobRef{ref}),
		Message: fmt.Sprintf("%s blob %s is needed but is in no index", ref.Type, ref.ID.Short())}
	if inUnref {
		p.Pack = idPtr(unref.PackID)
		p.File = packFile(unref.PackID)
		if err := c.verifyCopy(ctx, unref); err != nil {
			p.Message = fmt.Sprintf("%s blob %s is needed but is in no index; the copy in unreferenced pack %s is damaged: %v", ref.Type, ref.ID.Short(), unref.PackID.Short(), err)
		} else {
			p.Message = fmt.Sprintf("%s blob %s is needed but only pack %s holds it, which no index names (run `dj repair index`)", ref.Type, ref.ID.Short(), unref.PackID.Short())
			c.mu.Lock()
			c.res.SuggestRepairIndex = true
			c.mu.Unlock()
		}
	}
	i := c.add(p)
	c.mu.Lock()
	c.badBlob[ref] = append(c.badBlob[ref], i)
	c.mu.Unlock()
}

// verifyCopy loads and verifies one stored copy of a blob.
func (c *checker) verifyCopy(ctx context.Context, pb index.PackedBlob) error {
	h := backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}
	sealed, err := c.r.Backend().Load(ctx, h, int64(pb.Offset), int(pb.Length))
	if err != nil {
		return err
	}
	_, err = c.r.OpenPacked(pb, sealed, nil)
	return err
}

// findLost decides, for the pack-level problems, which blobs have no
// intact copy left, and records them for mapAffected.
func (c *checker) findLost(context.Context) error {
	for i, p := range c.res.Problems {
		if len(p.candidates) == 0 || p.Severity != SeverityError {
			continue
		}
		for _, ref := range p.candidates {
			if c.usable(ref, true) {
				continue
			}
			p.LostBlobs++
			c.badBlob[ref] = append(c.badBlob[ref], i)
		}
		if p.LostBlobs == 0 && p.Severity == SeverityError {
			p.Message += "; every blob has an intact copy in another pack"
		}
	}
	return nil
}

type affectedHit struct {
	path     string // relative to the tree, directories end in "/"
	problems []int
}

// mapAffected walks the snapshots to find the files and directories that
// use lost blobs, and attaches them to the problems. It runs only when
// there are such blobs; each tree is loaded once.
func (c *checker) mapAffected(ctx context.Context) error {
	if len(c.badBlob) == 0 && len(c.badNode) == 0 {
		return nil
	}
	c.progress(CheckProgress{Phase: "affected"})
	memo := map[crypto.ID][]affectedHit{}
	var walk func(id crypto.ID) ([]affectedHit, error)
	walk = func(id crypto.ID) ([]affectedHit, error) {
		if hits, ok := memo[id]; ok {
			return hits, nil
		}
		memo[id] = nil // cycles cannot occur (ids are hashes), but be safe
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t, err := c.r.LoadTree(ctx, id)
		if err != nil {
			return nil, nil // reported where it is referenced
		}
		var hits []affectedHit
		for _, n := range t.Nodes {
			switch {
			case n.Type == tree.Dir && n.Subtree != nil:
				if ps := c.badBlob[BlobRef{pack.TreeBlob, *n.Subtree}]; len(ps) > 0 {
					hits = append(hits, affectedHit{n.Name + "/", ps})
					continue
				}
				sub, err := walk(*n.Subtree)
				if err != nil {
					return nil, err
				}
				for _, h := range sub {
					hits = append(hits, affectedHit{n.Name + "/" + h.path, h.problems})
				}
			case n.Type == tree.File:
				var ps []int
				for _, b := range n.Content {
					ps = append(ps, c.badBlob[BlobRef{pack.DataBlob, b}]...)
				}
				ps = append(ps, c.badNode[nodeKey{id, n.Name}]...)
				if len(ps) > 0 {
					hits = append(hits, affectedHit{n.Name, uniqueInts(ps)})
				}
			}
		}
		memo[id] = hits
		return hits, nil
	}
	type pk struct {
		problem int
		path    string
	}
	where := map[pk]int{} // -> index into the problem's Affected
	addHit := func(i int, path string, sn crypto.ID) {
		p := c.res.Problems[i]
		k := pk{i, path}
		j, ok := where[k]
		if !ok {
			j = len(p.Affected)
			where[k] = j
			p.Affected = append(p.Affected, AffectedPath{Path: path})
		}
		a := &p.Affected[j]
		if n := len(a.Snapshots); n == 0 || a.Snapshots[n-1] != sn {
			a.Snapshots = append(a.Snapshots, sn)
		}
	}
	for _, sn := range c.snaps {
		if ps := c.badBlob[BlobRef{pack.TreeBlob, sn.Tree}]; len(ps) > 0 {
			for _, i := range ps {
				addHit(i, "/", sn.ID)
			}
			continue
		}
		hits, err := walk(sn.Tree)
		if err != nil {
			return err
		}
		for _, h := range hits {
			for _, i := range h.problems {
				addHit(i, "/"+h.path, sn.ID)
			}
		}
	}
	for _, p := range c.res.Problems {
		sort.Slice(p.Affected, func(i, j int) bool { return p.Affected[i].Path < p.Affected[j].Path })
	}
	return nil
}

func uniqueInts(xs []int) []int {
	if len(xs) < 2 {
		return xs
	}
	sort.Ints(xs)
	out := xs[:1]
	for _, x := range xs[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}

// walkTrees loads every tree reachable from roots once, with a fixed number
// of workers, and calls fn (concurrently) for each, with the load error if
// it failed. Subtrees of trees that loaded are visited too. Memory is
// bounded by the queue of tree ids, not by goroutines.
func walkTrees(ctx context.Context, l TreeLoader, roots []crypto.ID, workers int, fn func(id crypto.ID, t *tree.Tree, err error)) error {
	if workers < 1 {
		workers = 1
	}
	var (
		mu     sync.Mutex
		cond   = sync.NewCond(&mu)
		queue  []crypto.ID
		seen   = map[crypto.ID]bool{}
		active int
	)
	for _, id := range roots {
		if !seen[id] {
			seen[id] = true
			queue = append(queue, id)
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				for len(queue) == 0 && active > 0 {
					cond.Wait()
				}
				if len(queue) == 0 {
					mu.Unlock()
					cond.Broadcast()
					return
				}
				id := queue[len(queue)-1]
				queue = queue[:len(queue)-1]
				active++
				mu.Unlock()

				var t *tree.Tree
				var err error
				if ctx.Err() == nil {
					t, err = l.LoadTree(ctx, id)
					if ctx.Err() == nil {
						fn(id, t, err)
					}
				}
				mu.Lock()
				if err == nil && t != nil && ctx.Err() == nil {
					for _, n := range t.Nodes {
						if n.Type == tree.Dir && n.Subtree != nil && !seen[*n.Subtree] {
							seen[*n.Subtree] = true
							queue = append(queue, *n.Subtree)
						}
					}
				}
				active--
				mu.Unlock()
				cond.Broadcast()
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// kindRank orders problems in reports: by the phase that finds them.
var kindRank = map[ProblemKind]int{
	KindSnapshotUnreadable: 0, KindIndexUnreadable: 1, KindIndexSuperseded: 2, KindKeyUnreadable: 3, KindFileHash: 4,
	KindInvalidName: 5, KindFileVanished: 5, KindPackMissing: 6, KindPendingGone: 7, KindPackHeader: 8, KindPackHash: 9, KindPackMismatch: 10,
	KindBlobDamaged: 11, KindPackExtraBlobs: 12, KindPackUnreferenced: 13, KindTreeUnreadable: 14, KindBlobMissing: 15,
	KindBlobPending: 16, KindSizeMismatch: 17,
}

// sortProblems orders problems deterministically: by kind, then by file,
// pack and first blob.
func sortProblems(ps []*Problem) {
	first := func(p *Problem) string {
		if len(p.Blobs) > 0 {
			return p.Blobs[0].ID.String()
		}
		return ""
	}
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if kindRank[a.Kind] != kindRank[b.Kind] {
			return kindRank[a.Kind] < kindRank[b.Kind]
		}
		if a.File != b.File {
			return a.File < b.File
		}
		if fa, fb := first(a), first(b); fa != fb {
			return fa < fb
		}
		return a.Message < b.Message
	})
}
