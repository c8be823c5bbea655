// Check's entry point: options, result, and the steps it runs in order.
// The steps live by job in check_files.go, check_packs.go (and
// check_subset.go), check_trees.go and check_report.go.

package maint

import (
	"context"
	"runtime"
	"sync"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
)

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
	// IndexLoaded, when set, is called once the index is in memory (the
	// CLI sets its memory limit above it then).
	IndexLoaded func()
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
	// SuggestForgetUnreadable: a snapshot file does not load (damaged,
	// or cut short by an upload that never finished on storage that
	// writes in place); `dj repair snapshots --forget` removes it.
	SuggestForgetUnreadable bool `json:"suggest_forget_unreadable_snapshots"`
	// SuggestPrune: unreferenced packs or superseded index files remain.
	SuggestPrune bool `json:"suggest_prune"`
}

// OK reports whether Check found no errors (warnings are fine).
func (r *CheckResult) OK() bool { return r.Errors == 0 }

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
		unusable: map[packBlob]bool{}, gone: map[crypto.ID]int{}, badBlob: map[BlobRef][]int{}, badNode: map[nodeKey][]int{},
		reported: map[BlobRef]bool{}, unrefBlobs: map[BlobRef]index.PackedBlob{}}
	steps := []func(context.Context) error{c.loadSnapshots, c.loadIndex, c.checkKeysAndNames, c.checkPacks, c.checkTrees, c.checkHardLinks, c.findLost, c.mapAffected}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	c.res.tally()
	return c.res, nil
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
	unusable   map[packBlob]bool // copies of blobs that cannot be read
	// gone maps each pack none of whose indexed blobs can be read (missing
	// from storage, or its header unreadable) to its problem: a whole pack
	// is one entry, not one per blob (an index of 10^7 entries in missing
	// packs made check run out of memory).
	gone map[crypto.ID]int
	// goneLost is set when a gone pack's problem lost blobs: the lost
	// blobs of gone packs are found through the index (lostProblems), not
	// kept in badBlob.
	goneLost   bool
	unrefBlobs map[BlobRef]index.PackedBlob // blobs in packs no index names
	badBlob    map[BlobRef][]int            // lost or missing blobs -> problems
	badNode    map[nodeKey][]int            // files with a size mismatch -> problems
	reported   map[BlobRef]bool             // blobs already reported by the tree walk
	summaries  map[crypto.ID]*treeSummary   // trees decoded by the pack checks
	// The hard-linked inodes of the trees: the first data of each, and
	// those claimed with different data (check_links.go).
	linkData    map[linkInode]crypto.ID
	linkSuspect map[linkInode]bool
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
