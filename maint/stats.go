package maint

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// StatsMode says what Stats counts; the modes are restic's.
type StatsMode string

// The stats modes.
const (
	// StatsRestoreSize: the size of everything a restore of the snapshots
	// writes; every node counts as a file, hard links count their size
	// once per snapshot.
	StatsRestoreSize StatsMode = "restore-size"
	// StatsFilesByContents: files that are unique by content, and their size.
	StatsFilesByContents StatsMode = "files-by-contents"
	// StatsBlobsPerFile: for each file unique by content, the data blobs
	// unique per path, and their plaintext size.
	StatsBlobsPerFile StatsMode = "blobs-per-file"
	// StatsRawData: the blobs (data and tree) the snapshots use, each once,
	// as stored (compressed and encrypted), with compression and
	// deduplication figures.
	StatsRawData StatsMode = "raw-data"
)

// StatsModes lists the modes for help texts.
var StatsModes = []StatsMode{StatsRestoreSize, StatsFilesByContents, StatsBlobsPerFile, StatsRawData}

// ParseStatsMode checks a mode name.
func ParseStatsMode(s string) (StatsMode, error) {
	for _, m := range StatsModes {
		if string(m) == s {
			return m, nil
		}
	}
	names := make([]string, len(StatsModes))
	for i, m := range StatsModes {
		names[i] = string(m)
	}
	return "", fmt.Errorf("unknown stats mode %q (want %s)", s, strings.Join(names, ", "))
}

// Stats is the result of ComputeStats. The JSON field names are restic's;
// the raw-data mode adds dj's figures.
type Stats struct {
	TotalSize uint64 `json:"total_size"`
	// Raw-data only: plaintext size of the blobs.
	TotalUncompressedSize uint64 `json:"total_uncompressed_size,omitempty"`
	// Raw-data only: TotalUncompressedSize / TotalSize.
	CompressionRatio float64 `json:"compression_ratio,omitempty"`
	// Raw-data only: percentage of the plaintext bytes stored compressed.
	CompressionProgress float64 `json:"compression_progress,omitempty"`
	// Raw-data only: percentage of the plaintext bytes saved by storage.
	CompressionSpaceSaving float64 `json:"compression_space_saving,omitempty"`
	// Raw-data only: the restore size of the snapshots and RestoreSize /
	// plaintext size of the data blobs (how many bytes of files each
	// stored byte of unique data stands for, before compression).
	RestoreSize    uint64  `json:"restore_size,omitempty"`
	DedupRatio     float64 `json:"dedup_ratio,omitempty"`
	TotalFileCount uint64  `json:"total_file_count"`
	TotalBlobCount uint64  `json:"total_blob_count,omitempty"`
	SnapshotsCount int     `json:"snapshots_count"`
}

// ComputeStats walks the trees of the snapshots and counts what mode asks
// for. r must have its index loaded. Subtrees shared between snapshots are
// read once.
func ComputeStats(ctx context.Context, r *repo.Repository, snaps []*snapshot.Snapshot, mode StatsMode) (*Stats, error) {
	_, pending := r.PendingPacks()
	w := &statsWalker{r: r, idx: r.Index(), pending: pending, st: &Stats{SnapshotsCount: len(snaps)},
		sizeMemo: map[crypto.ID]sizeTotals{}, seen: map[crypto.ID]bool{}}
	switch mode {
	case StatsRestoreSize:
		for _, sn := range snaps {
			t, err := w.restoreSize(ctx, sn.Tree, map[[2]uint64]bool{}, "snapshot "+sn.ID.Short())
			if err != nil {
				return nil, err
			}
			w.st.TotalSize += t.size
			w.st.TotalFileCount += t.count
		}
	case StatsFilesByContents, StatsBlobsPerFile:
		w.contents = map[crypto.ID]bool{}
		w.pathBlobs = map[string]map[crypto.ID]bool{}
		for _, sn := range snaps {
			if err := w.unique(ctx, sn.Tree, "/", mode, "snapshot "+sn.ID.Short()); err != nil {
				return nil, err
			}
		}
	case StatsRawData:
		w.used = BlobSet{}
		for _, sn := range snaps {
			t, err := w.restoreSize(ctx, sn.Tree, map[[2]uint64]bool{}, "snapshot "+sn.ID.Short())
			if err != nil {
				return nil, err
			}
			w.st.RestoreSize += t.size
		}
		if err := w.rawData(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown stats mode %q", mode)
	}
	return w.st, nil
}

type sizeTotals struct {
	size, count uint64
	hardlinks   bool // the subtree has hard-linked files: not memoised
}

type statsWalker struct {
	r       *repo.Repository
	idx     *index.Index
	pending *index.Index
	st      *Stats

	sizeMemo  map[crypto.ID]sizeTotals
	seen      map[crypto.ID]bool // trees already walked
	used      BlobSet            // raw-data: blobs in use
	contents  map[crypto.ID]bool // files seen, by content
	pathBlobs map[string]map[crypto.ID]bool
}

func (w *statsWalker) loadTree(ctx context.Context, id crypto.ID, where string) (*tree.Tree, error) {
	t, err := w.r.LoadTree(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("tree %s (%s): %w (run `dj check`)", id.Short(), where, err)
	}
	if w.used != nil && !w.seen[id] {
		w.used[BlobRef{pack.TreeBlob, id}] = struct{}{}
		for _, n := range t.Nodes {
			for _, b := range n.Content {
				w.used[BlobRef{pack.DataBlob, b}] = struct{}{}
			}
		}
	}
	w.seen[id] = true
	return t, nil
}

// restoreSize returns the size and node count of a subtree; hl holds the
// hard-linked inodes already counted in this snapshot.
func (w *statsWalker) restoreSize(ctx context.Context, id crypto.ID, hl map[[2]uint64]bool, where string) (sizeTotals, error) {
	if t, ok := w.sizeMemo[id]; ok && !t.hardlinks {
		return t, nil
	}
	if err := ctx.Err(); err != nil {
		return sizeTotals{}, err
	}
	t, err := w.loadTree(ctx, id, where)
	if err != nil {
		return sizeTotals{}, err
	}
	var tot sizeTotals
	for _, n := range t.Nodes {
		tot.count++
		switch n.Type {
		case tree.File:
			if n.Links > 1 && n.Inode != 0 {
				tot.hardlinks = true
				k := [2]uint64{n.DeviceID, n.Inode}
				if hl[k] {
					continue
				}
				hl[k] = true
			}
			tot.size += n.Size
		case tree.Dir:
			if n.Subtree == nil {
				continue
			}
			sub, err := w.restoreSize(ctx, *n.Subtree, hl, where)
			if err != nil {
				return sizeTotals{}, err
			}
			tot.size += sub.size
			tot.count += sub.count
			tot.hardlinks = tot.hardlinks || sub.hardlinks
		}
	}
	w.sizeMemo[id] = tot
	return tot, nil
}

// contentKey identifies a file by its content (the list of its blobs).
func contentKey(ids []crypto.ID) crypto.ID {
	h := sha256.New()
	for _, id := range ids {
		h.Write(id[:])
	}
	var k crypto.ID
	h.Sum(k[:0])
	return k
}

// unique counts files unique by content (and, for blobs-per-file, their
// blobs per path). A subtree walked before holds only files whose content
// was seen, so it is skipped.
func (w *statsWalker) unique(ctx context.Context, id crypto.ID, dir string, mode StatsMode, where string) error {
	if w.seen[id] {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := w.loadTree(ctx, id, where)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		p := dir + n.Name
		switch n.Type {
		case tree.Dir:
			if n.Subtree != nil {
				if err := w.unique(ctx, *n.Subtree, p+"/", mode, where); err != nil {
					return err
				}
			}
		case tree.File:
			k := contentKey(n.Content)
			if w.contents[k] {
				continue
			}
			w.contents[k] = true
			if mode == StatsFilesByContents {
				w.st.TotalFileCount++
				w.st.TotalSize += n.Size
				continue
			}
			for _, b := range n.Content {
				set := w.pathBlobs[p]
				if set == nil {
					set = map[crypto.ID]bool{}
					w.pathBlobs[p] = set
					w.st.TotalFileCount++
				}
				if set[b] {
					continue
				}
				pb, ok := w.lookup(pack.DataBlob, b)
				if !ok {
					return fmt.Errorf("data blob %s of %s (%s) is not in the index (run `dj check`)", b.Short(), p, where)
				}
				set[b] = true
				w.st.TotalSize += uint64(pb.PlainLength)
				w.st.TotalBlobCount++
			}
		}
	}
	return nil
}

func (w *statsWalker) lookup(t pack.BlobType, id crypto.ID) (index.PackedBlob, bool) {
	if l := w.idx.Lookup(t, id); len(l) > 0 {
		return l[0], true
	}
	if l := w.pending.Lookup(t, id); len(l) > 0 {
		return l[0], true
	}
	return index.PackedBlob{}, false
}

// rawData sums the stored and plaintext sizes of the blobs in use.
func (w *statsWalker) rawData() error {
	var compressedPlain, dataPlain uint64
	for ref := range w.used {
		pb, ok := w.lookup(ref.Type, ref.ID)
		if !ok {
			return fmt.Errorf("%s blob %s is not in the index (run `dj check`)", ref.Type, ref.ID.Short())
		}
		w.st.TotalBlobCount++
		w.st.TotalSize += uint64(pb.Length)
		w.st.TotalUncompressedSize += uint64(pb.PlainLength)
		if pb.Compressed {
			compressedPlain += uint64(pb.PlainLength)
		}
		if ref.Type == pack.DataBlob {
			dataPlain += uint64(pb.PlainLength)
		}
	}
	st := w.st
	if st.TotalSize > 0 {
		st.CompressionRatio = float64(st.TotalUncompressedSize) / float64(st.TotalSize)
	}
	if st.TotalUncompressedSize > 0 {
		st.CompressionProgress = 100 * float64(compressedPlain) / float64(st.TotalUncompressedSize)
		st.CompressionSpaceSaving = 100 * (1 - float64(st.TotalSize)/float64(st.TotalUncompressedSize))
	}
	if dataPlain > 0 {
		st.DedupRatio = float64(st.RestoreSize) / float64(dataPlain)
	}
	return nil
}
