package maint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// ErrIndexIncomplete means the index lacks packs that are in storage, so
// blobs that look missing may not be: repair the index first.
var ErrIndexIncomplete = errors.New("the index is incomplete; run `dj repair index` first")

// RepairSnapshotsOptions tune RepairSnapshots.
type RepairSnapshotsOptions struct {
	// Snapshots restricts the repair to these snapshots ("latest", ids or
	// id prefixes); empty means every snapshot that passes Filter.
	Snapshots []string
	Filter    snapshot.Filter
	// Forget removes each damaged snapshot once its repaired copy is
	// stored, and, when no snapshots are named, snapshot files that are
	// corrupt.
	Forget bool
	// DryRun reports what would change and writes nothing.
	DryRun bool
	Logf   func(format string, args ...any)
}

// RepairedSnapshot describes one damaged snapshot.
type RepairedSnapshot struct {
	Original crypto.ID `json:"original"`
	// New is the repaired snapshot (nil in a dry run).
	New *crypto.ID `json:"new,omitempty"`
	// DroppedFiles are files left out because data blobs are missing;
	// EmptiedDirs are directories (ending in "/") whose listing cannot be
	// read, kept as empty directories. "/" is the snapshot's root.
	DroppedFiles []string `json:"dropped_files,omitempty"`
	EmptiedDirs  []string `json:"emptied_dirs,omitempty"`
	// Removed is set when Forget removed the original.
	Removed bool `json:"removed"`
}

// RepairSnapshotsResult reports what RepairSnapshots did.
type RepairSnapshotsResult struct {
	Checked  int                `json:"checked"`
	Intact   int                `json:"intact"`
	Repaired []RepairedSnapshot `json:"repaired"`
	// Unreadable snapshot files (corrupt); RemovedUnreadable those of them
	// that Forget removed.
	Unreadable        []crypto.ID `json:"unreadable"`
	RemovedUnreadable []crypto.ID `json:"removed_unreadable"`
	DryRun            bool        `json:"dry_run"`
}

// RepairTag is added to every snapshot RepairSnapshots writes.
const RepairTag = "repaired"

// RepairSnapshots writes, for every selected snapshot whose trees or data
// blobs are missing or damaged, a new snapshot without the damage: files
// whose data blobs are missing are dropped, directories whose listing
// cannot be read become empty directories. The new snapshot has Original
// set to the damaged one and the tag "repaired"; the damaged one is
// removed only with Forget. Intact snapshots are not touched.
//
// A blob counts as missing when no indexed copy is in a stored pack; run
// `dj repair index --read-all-packs` first so that damaged blobs leave the
// index. RepairSnapshots refuses (ErrIndexIncomplete) when index files do
// not load or a pack no index names holds a blob that looks missing.
//
// r must be opened without loading the index.
func RepairSnapshots(ctx context.Context, r *repo.Repository, opts RepairSnapshotsOptions) (*RepairSnapshotsResult, error) {
	logf := logfOrDiscard(opts.Logf)
	res := &RepairSnapshotsResult{DryRun: opts.DryRun, Repaired: []RepairedSnapshot{}, Unreadable: []crypto.ID{}, RemovedUnreadable: []crypto.ID{}}
	all, snapProblems, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range snapProblems {
		if isCorruption(p.Err) {
			res.Unreadable = append(res.Unreadable, p.ID)
		} else if len(opts.Snapshots) == 0 {
			return nil, fmt.Errorf("snapshot %s: %w", p.ID.Short(), p.Err)
		}
	}
	problems, err := r.LoadIndex(ctx, true)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w (index file %s cannot be read: %v)", ErrIndexIncomplete, problems[0].ID.Short(), problems[0].Err)
	}
	var snaps []*snapshot.Snapshot
	if len(opts.Snapshots) > 0 {
		seen := map[crypto.ID]bool{}
		for _, ref := range opts.Snapshots {
			sn, err := snapshot.Find(opts.Filter.Apply(all), ref)
			if err != nil {
				return nil, err
			}
			if !seen[sn.ID] {
				seen[sn.ID] = true
				snaps = append(snaps, sn)
			}
		}
	} else {
		snaps = opts.Filter.Apply(all)
	}
	res.Checked = len(snaps)

	sr := &snapRepairer{r: r, stored: map[crypto.ID]bool{}, missing: BlobSet{}}
	_, sr.pending = r.PendingPacks()
	err = r.Backend().List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := crypto.ParseID(fi.Name); err == nil {
			sr.stored[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	tw := sr.rewriter()
	logf("checking %d snapshots\n", len(snaps))
	var damaged []*snapshot.Snapshot
	var plans []*treePlan
	for _, sn := range snaps {
		p, err := tw.plan(ctx, sn.Tree, "/")
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", sn.ID.Short(), err)
		}
		if p.changed {
			damaged = append(damaged, sn)
			plans = append(plans, p)
		}
	}
	res.Intact = len(snaps) - len(damaged)
	if len(sr.missing) > 0 {
		if err := sr.checkUnreferenced(ctx); err != nil {
			return nil, err
		}
	}

	newRoots := make([]crypto.ID, len(damaged))
	for i, sn := range damaged {
		rs := RepairedSnapshot{Original: sn.ID}
		for _, c := range plans[i].changes("/") {
			switch {
			case c.Kind == nodeDropped:
				rs.DroppedFiles = append(rs.DroppedFiles, c.Path)
			case c.Path == "/":
				rs.EmptiedDirs = append(rs.EmptiedDirs, c.Path)
			default:
				rs.EmptiedDirs = append(rs.EmptiedDirs, c.Path+"/")
			}
		}
		res.Repaired = append(res.Repaired, rs)
		if opts.DryRun {
			continue
		}
		if newRoots[i], err = tw.write(ctx, plans[i]); err != nil {
			return nil, err
		}
	}
	if opts.DryRun {
		return res, nil
	}
	if len(damaged) > 0 {
		if err := r.Flush(ctx); err != nil {
			return nil, fmt.Errorf("write repaired trees: %w", err)
		}
	}
	for i, sn := range damaged {
		ns := *sn
		ns.ID = crypto.ID{}
		ns.Tree = newRoots[i]
		if ns.Original == nil {
			orig := sn.ID
			ns.Original = &orig
		}
		ns.Tags = append([]string(nil), sn.Tags...)
		if !sn.HasTag(RepairTag) {
			ns.Tags = append(ns.Tags, RepairTag)
		}
		if err := r.SaveSnapshot(ctx, &ns); err != nil {
			return nil, err
		}
		id := ns.ID
		res.Repaired[i].New = &id
		logf("snapshot %s repaired as %s\n", sn.ID.Short(), id.Short())
		if opts.Forget {
			if err := r.RemoveSnapshot(ctx, sn.ID); err != nil {
				return nil, fmt.Errorf("remove snapshot %s: %w", sn.ID.Short(), err)
			}
			res.Repaired[i].Removed = true
		}
	}
	if opts.Forget && len(opts.Snapshots) == 0 {
		for _, id := range res.Unreadable {
			if err := r.RemoveSnapshot(ctx, id); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("remove unreadable snapshot %s: %w", id.Short(), err)
			}
			res.RemovedUnreadable = append(res.RemovedUnreadable, id)
		}
	}
	return res, nil
}

type snapRepairer struct {
	r       *repo.Repository
	pending *index.Index
	stored  map[crypto.ID]bool
	missing BlobSet
}

// available reports whether some indexed copy of a blob is in a stored
// pack.
func (s *snapRepairer) available(t pack.BlobType, id crypto.ID) bool {
	locs := s.r.Index().Lookup(t, id)
	locs = append(locs, s.pending.Lookup(t, id)...)
	for _, l := range locs {
		if s.stored[l.PackID] {
			return true
		}
	}
	return false
}

// isDamage reports whether a tree load error means the tree is lost (not a
// backend failure, which stops the repair).
func isDamage(err error) bool {
	return isCorruption(err) || errors.Is(err, repo.ErrBlobNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, io.ErrUnexpectedEOF)
}

// rewriter returns the tree rewriter of a repair: files whose data blobs
// are missing are dropped, and directories whose tree is lost become empty
// directories (a failing backend stops the repair instead).
func (s *snapRepairer) rewriter() *treeRewriter {
	tw := newTreeRewriter(s.r)
	tw.pathIndependent = true
	tw.keep = func(n *tree.Node, _ string) bool {
		if n.Type != tree.File {
			return true
		}
		ok := true
		for _, b := range n.Content {
			if !s.available(pack.DataBlob, b) {
				s.missing[BlobRef{pack.DataBlob, b}] = struct{}{}
				ok = false
			}
		}
		return ok
	}
	tw.loadFailed = func(_ string, id crypto.ID, err error) error {
		if !isDamage(err) {
			return fmt.Errorf("tree %s: %w", id.Short(), err)
		}
		if !s.available(pack.TreeBlob, id) {
			s.missing[BlobRef{pack.TreeBlob, id}] = struct{}{}
		}
		return nil
	}
	return tw
}

// checkUnreferenced reads the headers of packs no index names; if one of
// them holds an intact copy of a blob that looks missing, the index must be
// repaired first.
func (s *snapRepairer) checkUnreferenced(ctx context.Context) error {
	indexed := s.r.Index().Packs()
	pend := s.pending.Packs()
	var unref []crypto.ID
	for id := range s.stored {
		_, a := indexed[id]
		_, b := pend[id]
		if !a && !b {
			unref = append(unref, id)
		}
	}
	sort.Slice(unref, func(i, j int) bool { return unref[i].String() < unref[j].String() })
	for _, id := range unref {
		fi, err := s.r.Backend().Stat(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()})
		if err != nil {
			continue
		}
		blobs, err := s.r.ReadPackHeader(ctx, id, fi.Size)
		if err != nil {
			continue
		}
		for _, b := range blobs {
			if _, ok := s.missing[BlobRef{b.Type, b.ID}]; !ok {
				continue
			}
			// A damaged copy (left behind by repair index) does not count.
			h := backend.Handle{Type: backend.PackFile, Name: id.String()}
			sealed, err := s.r.Backend().Load(ctx, h, int64(b.Offset), int(b.Length))
			if err == nil {
				_, err = s.r.OpenPacked(index.PackedBlob{Blob: b, PackID: id}, sealed, nil)
			}
			if err == nil || !isDamage(err) {
				return fmt.Errorf("%w: pack %s holds %s blob %s that snapshots need, but no index names it", ErrIndexIncomplete, id.Short(), b.Type, b.ID.Short())
			}
		}
	}
	return nil
}
