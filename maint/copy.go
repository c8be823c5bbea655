package maint

import (
	"context"
	"fmt"
	"slices"
	"time"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// CopySource is the repository snapshots are copied from, with its index
// loaded (*repo.Repository).
type CopySource interface {
	Snapshots(ctx context.Context) ([]*snapshot.Snapshot, []repo.SnapshotProblem, error)
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	// LoadBlob returns the verified plaintext of a data blob, appended to
	// buf[:0] when it fits.
	LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error)
	// BlobSize returns the plaintext length of a data blob.
	BlobSize(id crypto.ID) (int, bool)
}

// CopyTarget is the repository snapshots are copied into, with its index
// loaded (*repo.Repository).
type CopyTarget interface {
	Snapshots(ctx context.Context) ([]*snapshot.Snapshot, []repo.SnapshotProblem, error)
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	HasBlob(t pack.BlobType, id crypto.ID) bool
	BlobSize(id crypto.ID) (int, bool)
	// SaveBlob stores plain under its id (keyed with the target's id key)
	// unless the target has it, and reports whether it was new.
	SaveBlob(ctx context.Context, t pack.BlobType, plain []byte) (crypto.ID, bool, error)
	// Flush uploads the packs being filled and indexes every pack written.
	Flush(ctx context.Context) error
	// IndexUploaded indexes the packs uploaded so far (see
	// repo.Repository.IndexUploaded).
	IndexUploaded(ctx context.Context, settle bool) (int, error)
	SaveSnapshot(ctx context.Context, sn *snapshot.Snapshot) error
}

// CopyOptions tune Copy.
type CopyOptions struct {
	// Snapshots names the snapshots to copy ("latest", ids or id
	// prefixes); empty means every snapshot that passes Filter. Filter
	// applies to "latest" too.
	Snapshots []string
	Filter    snapshot.Filter
	// Workers is how many data blobs are loaded and saved at once
	// (default twice GOMAXPROCS, at most 8).
	Workers int
	// CheckpointInterval is how often the packs uploaded so far are
	// indexed, so that an interrupted copy leaves data the next run reuses
	// (default 2 minutes).
	CheckpointInterval time.Duration
	// Progress, when set, is called (never concurrently) every
	// ProgressInterval (default 1s) and once at the end.
	Progress         func(CopyProgress)
	ProgressInterval time.Duration
	// Logf receives restic's lines about each snapshot.
	Logf func(format string, args ...any)
}

// CopyProgress is reported while Copy runs.
type CopyProgress struct {
	SnapshotsDone  int `json:"snapshots_done"`
	SnapshotsTotal int `json:"snapshots_total"`
	// Blobs and Bytes count the source's data blobs handled (read, or
	// known in the target without reading) and their plaintext size.
	Blobs uint64 `json:"blobs"`
	Bytes uint64 `json:"bytes"`
	// BytesRead is the plaintext read from the source.
	BytesRead uint64 `json:"bytes_read"`
	// DataBlobsAdded, TreeBlobsAdded and BytesAdded count blobs the
	// target did not have, and their plaintext size.
	DataBlobsAdded uint64 `json:"data_blobs_added"`
	TreeBlobsAdded uint64 `json:"tree_blobs_added"`
	BytesAdded     uint64 `json:"bytes_added"`
}

// CopiedSnapshot is one source snapshot Copy handled.
type CopiedSnapshot struct {
	Source crypto.ID `json:"source"`
	// Target is the copy: written now, or found from an earlier copy
	// (Skipped).
	Target  crypto.ID `json:"target"`
	Skipped bool      `json:"skipped"`
}

// CopyResult reports what Copy did.
type CopyResult struct {
	Snapshots []CopiedSnapshot `json:"snapshots"`
	Copied    int              `json:"snapshots_copied"`
	Skipped   int              `json:"snapshots_skipped"`
	CopyProgress
}

// Copy copies snapshots from src into dst, whose master keys differ: every
// blob the target lacks is decrypted, hashed with the target's id key and
// stored there. Data blobs keep their boundaries (nothing is chunked
// again) but get new ids, so every tree is rewritten bottom up with the
// new ids. A source snapshot is skipped when the target has a copy of it:
// a snapshot whose original is the source's original (or id) and whose
// time, host, user, paths and tags match (restic's rule, without the tree,
// whose id differs between the repositories).
//
// Earlier copies tell which target blob holds which source blob: a file
// that has the same metadata and blob sizes in an earlier source snapshot
// and in its copy maps its blobs without reading them, so copying the next
// snapshot of a series reads only the changed files. Within a run each
// source tree is rewritten once.
//
// Order keeps the target safe: packs, then the index, then the snapshot;
// the packs uploaded so far are indexed every CheckpointInterval and when
// the copy stops, so an interrupted copy leaves data the next run reuses
// and never a snapshot whose data is missing.
func Copy(ctx context.Context, src CopySource, dst CopyTarget, opts CopyOptions) (res *CopyResult, err error) {
	logf := logfOrDiscard(opts.Logf)
	srcAll, problems, err := src.Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	for _, p := range problems {
		logf("warning: source snapshot %s cannot be read: %v\n", p.ID.Short(), p.Err)
	}
	selected, err := selectSnapshots(srcAll, opts.Snapshots, opts.Filter)
	if err != nil {
		return nil, err
	}
	dstAll, problems, err := dst.Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	for _, p := range problems {
		logf("warning: target snapshot %s cannot be read: %v\n", p.ID.Short(), p.Err)
	}

	// Target snapshots by the persistent id of what they were copied
	// from, and the pairs (source snapshot, its copy) known so far.
	copies := map[crypto.ID][]*snapshot.Snapshot{}
	for _, d := range dstAll {
		copies[persistentID(d)] = append(copies[persistentID(d)], d)
	}
	var pairs []copyPair
	for _, s := range srcAll {
		for _, d := range copies[persistentID(s)] {
			if similarSnapshots(s, d) {
				pairs = append(pairs, copyPair{s, d.Tree})
			}
		}
	}

	c := newCopier(ctx, src, dst, opts)
	c.snapshotsTotal = len(selected)
	res = &CopyResult{Snapshots: []CopiedSnapshot{}}
	stop := c.background(ctx)
	defer func() {
		stop()
		if err != nil {
			// Index what reached the target, whatever stopped the copy.
			ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			_, _ = dst.IndexUploaded(ictx, true)
			cancel()
		}
		c.report()
		if res != nil {
			res.CopyProgress = c.progress()
		}
	}()

	for _, sn := range selected {
		logf("\nsnapshot %s of %v at %s)\n", sn.ID.Short(), sn.Paths, sn.Time)
		if d := findCopy(copies[persistentID(sn)], sn); d != nil {
			logf("skipping source snapshot %s, was already copied to snapshot %s\n", sn.ID.Short(), d.ID.Short())
			res.Snapshots = append(res.Snapshots, CopiedSnapshot{Source: sn.ID, Target: d.ID, Skipped: true})
			res.Skipped++
			c.snapshotsDone.Add(1)
			continue
		}
		logf("  copy started, this may take a while...\n")
		var hint *treePair
		if p := bestPair(pairs, sn); p != nil {
			hint = &treePair{src: p.src.Tree, dst: p.dstTree}
		}
		root, err := c.copyTree(ctx, sn.Tree, "/", hint)
		if err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Short(), err)
		}
		if err := dst.Flush(ctx); err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Short(), err)
		}
		ns := *sn
		ns.ID = crypto.ID{}
		ns.Tree = root
		ns.Parent = nil // the parent is a source snapshot
		orig := persistentID(sn)
		ns.Original = &orig
		ns.Paths = append([]string(nil), sn.Paths...)
		ns.Tags = append([]string(nil), sn.Tags...)
		if err := dst.SaveSnapshot(ctx, &ns); err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Short(), err)
		}
		logf("snapshot %s saved\n", ns.ID.Short())
		res.Snapshots = append(res.Snapshots, CopiedSnapshot{Source: sn.ID, Target: ns.ID})
		res.Copied++
		c.snapshotsDone.Add(1)
		copies[orig] = append(copies[orig], &ns)
		pairs = append(pairs, copyPair{sn, root})
	}
	return res, nil
}

// selectSnapshots resolves refs (or applies the filter when there are
// none) and orders the result oldest first, so that each copy can learn
// from the copy of its predecessor.
func selectSnapshots(all []*snapshot.Snapshot, refs []string, f snapshot.Filter) ([]*snapshot.Snapshot, error) {
	out, err := SelectSnapshots(all, refs, f)
	if err != nil {
		return nil, err
	}
	out = append([]*snapshot.Snapshot(nil), out...)
	snapshot.SortByTime(out)
	return out, nil
}

// persistentID is the id that names a snapshot across copies: its
// original, or its own id.
func persistentID(sn *snapshot.Snapshot) crypto.ID {
	if sn.Original != nil {
		return *sn.Original
	}
	return sn.ID
}

// similarSnapshots reports whether b can be a copy of a: everything but
// the parent, the original and the tree (its id depends on the
// repository) matches.
func similarSnapshots(a, b *snapshot.Snapshot) bool {
	return a.Time.Equal(b.Time) && a.Hostname == b.Hostname && a.Username == b.Username &&
		a.UID == b.UID && a.GID == b.GID && slices.Equal(a.Paths, b.Paths) && slices.Equal(a.Tags, b.Tags)
}

// findCopy returns the copy of sn among the target snapshots with its
// persistent id, or nil.
func findCopy(candidates []*snapshot.Snapshot, sn *snapshot.Snapshot) *snapshot.Snapshot {
	for _, d := range candidates {
		if similarSnapshots(sn, d) {
			return d
		}
	}
	return nil
}

// copyPair is a source snapshot and the root tree of its copy.
type copyPair struct {
	src     *snapshot.Snapshot
	dstTree crypto.ID
}

// bestPair picks the earlier copy most like sn: the same paths, then the
// same host, then the nearest in time.
func bestPair(pairs []copyPair, sn *snapshot.Snapshot) *copyPair {
	var best *copyPair
	var bestRank int
	var bestDist time.Duration
	for i := range pairs {
		p := &pairs[i]
		rank := 0
		if !p.src.HasPaths(sn.Paths) {
			rank += 2
		}
		if p.src.Hostname != sn.Hostname {
			rank++
		}
		dist := p.src.Time.Sub(sn.Time).Abs()
		if best == nil || rank < bestRank || (rank == bestRank && dist < bestDist) {
			best, bestRank, bestDist = p, rank, dist
		}
	}
	return best
}
