package maint

// Prune's safety argument
//
// Claim: prune never deletes a pack that holds the only copy of a blob that
// a snapshot needs, even while backups run at the same time, as long as
// clocks agree within PruneOptions.ClockSkew and a running dj refreshes its
// lock (a lock not refreshed for 30 minutes is taken as gone).
//
// Deletion is two-phase. Phase 1 (mark): prune loads the snapshot list,
// then the index, and computes the blobs the snapshots use. A pack none of
// whose blobs is used is not deleted but moved to the index's pending list
// with the time T it was marked; so is a pack whose used blobs were copied
// into new packs (repack). A pending pack's blobs stay readable (LoadBlob
// falls back to them) but the index never offers them for deduplication.
// Phase 2 (sweep), in a later prune: a pending pack marked at T is deleted
// only when
//
//	(a) T is older than KeepDelete (default 24h),
//	(b) no live writer lock (a backup's shared lock) was created before
//	    T + ClockSkew, and
//	(c) no blob of the pack is used by a snapshot in the list loaded by this
//	    prune, after the lock check, unless another, non-pending pack holds it.
//
// Why no needed blob is lost. A snapshot refers to a blob either because
// its backup saved the blob or because the backup found it in its index and
// deduplicated against it. Take a blob B that exists only in pending pack P
// marked at T, and a snapshot S that needs B.
//   - If S's backup started after T (+ skew), its index listed P as pending,
//     and pending blobs are never used for deduplication; so that backup
//     saved B itself into a new pack, and B is not only in P. Contradiction.
//   - If S's backup started before T, it held a writer lock created before
//     T. By (b), that backup has finished (or its lock went stale) when
//     phase 2 checks the locks; since the snapshot file is written before the
//     lock is released, S is in the snapshot list phase 2 loads afterwards,
//     and (c) keeps P (it is put back into the index: "resurrected").
//   - S existed when phase 1 ran: then B was used and P was not marked at all
//     (a repacked P is marked only after its used blobs sit in new, indexed
//     packs).
// Packs that no index names (left by an interrupted backup, or uploaded by
// a backup that is still running) are deleted when
//
//	(d) the pack was written more than ClockSkew before this prune listed
//	    the locks (or KeepDelete, when that is shorter: whoever sets it
//	    below the clock skew says the clocks agree), and
//	(e) no live writer lock was created before the pack's time + ClockSkew.
//
// Why no running operation loses a pack it will publish. A writer takes its
// lock before it writes any pack. If its lock was in the listing and live,
// it was created before each of its packs, so (e) keeps them. If its lock
// was not in the listing, it was created after the listing, so all its
// packs are younger than the listing and (d) keeps them. If its lock was
// listed but stale (not refreshed for LockStaleAfter), the writer has lost
// its lock: a dj process whose lock went unrefreshed for longer than
// LockStaleAfter - LockRefreshInterval refuses to write an index or a
// snapshot (repo.ErrLockLost), so the packs it wrote are never named by
// anything. Unindexed packs that are still too young are kept and reported
// with the time from which a prune may delete them.
//
// Crash safety: every step writes before it deletes. New packs are uploaded
// before the index that names them; the new index is written before the
// index files it supersedes are removed, and before any pack is deleted; a
// pack is deleted only after an index without it is stored. Killed at any
// point, the repository has every needed blob indexed (possibly twice, or
// as pending), and the next prune finishes the work.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
)

// PruneOptions tune prune.
type PruneOptions struct {
	// MaxUnused is the share of unused bytes (of all used bytes) that may
	// stay in partly used packs (default 0.05). MaxUnusedBytes, when set,
	// is an absolute limit instead.
	MaxUnused      float64
	MaxUnusedBytes int64
	// MaxRepackBytes bounds how many bytes of packs are repacked (0: no bound).
	MaxRepackBytes int64
	// KeepDelete is how long a marked pack waits before deletion; zero lets
	// the next prune delete it (the CLI's default is DefaultKeepDelete).
	KeepDelete time.Duration
	// InstantDelete deletes unused packs at once. Only for a repository
	// nobody else uses: the caller must hold an exclusive lock.
	InstantDelete bool
	// ClockSkew is the margin allowed between the clocks of hosts (default 5m).
	ClockSkew time.Duration
	// DryRun plans but changes nothing.
	DryRun bool
	// Now is the current time (tests set it).
	Now time.Time
	// Logf receives progress lines.
	Logf func(format string, args ...any)
	// AllowNoSnapshots lets prune go ahead in a repository whose snapshot
	// listing is empty although its index names packs; otherwise it
	// refuses (ErrSuspectListing), since an empty listing may be a
	// failure that did not say so (restic #4612).
	AllowNoSnapshots bool
}

// DefaultKeepDelete is how long marked packs wait unless told otherwise.
const DefaultKeepDelete = 24 * time.Hour

// PrunePlan is what prune will do (or, with DryRun, would do).
type PrunePlan struct {
	Snapshots                 int
	UsedBlobs, UnusedBlobs    int
	UsedBytes, UnusedBytes    int64
	Duplicates                int
	PacksTotal                int
	Mark                      []crypto.ID // fully unused packs: to pending
	Repack                    []crypto.ID // partly used packs: copy used blobs, then to pending
	RepackBytes               int64
	Delete                    []crypto.ID // pending packs whose time has come
	DeleteBytes               int64
	Resurrect                 []crypto.ID // pending packs a snapshot needs again
	Unindexed                 []crypto.ID // packs no index names, old enough to delete
	UnindexedBytes            int64
	UnindexedWaiting          []WaitingPack // packs no index names, too young to delete yet
	KeptPending               int           // pending packs not yet old enough
	FreedBytesNow, FreedLater int64
	WaitingForWriter          bool
	MissingBlobs              []BlobRef // used but not in any index: prune refuses
	usedBlobs                 BlobSet
	chosen                    map[BlobRef]crypto.ID // the copy of each used blob that counts
	keep                      map[crypto.ID]bool    // packs staying in the index
	packSizes                 map[crypto.ID]int64
	packBlobs                 map[crypto.ID][]pack.Blob
	pendingKeep               map[crypto.ID]int64
	supersedes                []crypto.ID
}

// WaitingPack is a pack that prune leaves for now, with the earliest time
// a later prune may delete it (zero when that depends on a running writer:
// it becomes deletable once the writer is done).
type WaitingPack struct {
	ID          crypto.ID
	Size        int64
	DeletableAt time.Time
	// Writer is true when a live writer lock older than the pack keeps it.
	Writer bool
}

// ErrMissingBlobs means snapshots need blobs that no pack holds: the
// repository is damaged, and prune refuses to change anything.
var ErrMissingBlobs = errors.New("snapshots need blobs that are in no pack")

// ErrSuspectListing means a listing of the repository (snapshots, index
// files or packs) disagrees with what the rest of the repository says:
// prune refuses, rather than delete data because a listing came back
// empty or short without an error (restic #4612).
var ErrSuspectListing = errors.New("a listing of the repository looks incomplete")

func (o *PruneOptions) defaults() {
	if o.MaxUnused == 0 && o.MaxUnusedBytes == 0 {
		o.MaxUnused = 0.05
	}
	if o.ClockSkew == 0 {
		o.ClockSkew = 5 * time.Minute
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	o.Logf = logfOrDiscard(o.Logf)
}

// PlanPrune decides what to prune. r must be opened without loading the
// index: PlanPrune loads the snapshot list first and the index second, so
// every snapshot it sees has its blobs in the index it loads.
func PlanPrune(ctx context.Context, r *repo.Repository, opts PruneOptions) (*PrunePlan, error) {
	opts.defaults()
	// Locks first: a writer that finishes after this point started before
	// it, and its lock's creation time is what rule (b) compares.
	locks, err := r.ListLocks(ctx)
	if err != nil {
		return nil, err
	}
	var oldestWriter time.Time
	for _, l := range locks {
		if l.Kind == repo.LockShared && !l.Stale() && (oldestWriter.IsZero() || l.Created.Before(oldestWriter)) {
			oldestWriter = l.Created
		}
	}
	opts.Logf("loading snapshots\n")
	snaps, problems, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("snapshot %s cannot be read (%v): prune needs every snapshot; run `dj check` and `dj repair snapshots`", problems[0].ID.Short(), problems[0].Err)
	}
	opts.Logf("loading index\n")
	if _, err := r.LoadIndex(ctx, false); err != nil {
		return nil, err
	}
	if n := len(r.Index().Packs()); len(snaps) == 0 && n > 0 && !opts.AllowNoSnapshots {
		return nil, fmt.Errorf("%w: no snapshot was listed, but the index names %d packs; nothing was changed "+
			"(if the repository really has no snapshots left, run prune with --unsafe-allow-no-snapshots)", ErrSuspectListing, n)
	}
	opts.Logf("finding data in use by %d snapshots\n", len(snaps))
	used, err := UsedBlobs(ctx, r, snaps)
	if err != nil {
		return nil, fmt.Errorf("cannot list the data in use, nothing was changed: %w", err)
	}

	plan := &PrunePlan{Snapshots: len(snaps), usedBlobs: used, keep: map[crypto.ID]bool{},
		packSizes: map[crypto.ID]int64{}, pendingKeep: map[crypto.ID]int64{}}
	plan.supersedes = r.ListedIndexFiles()
	plan.packBlobs = r.Index().Packs()
	marks, pendingIdx := r.PendingPacks()
	pendingBlobs := pendingIdx.Packs()

	// Which copy of each used blob counts: the first in pack id order, so
	// duplicates make the other copies unused.
	chosen := map[BlobRef]crypto.ID{}
	plan.chosen = chosen
	packIDs := make([]crypto.ID, 0, len(plan.packBlobs))
	for id := range plan.packBlobs {
		packIDs = append(packIDs, id)
	}
	sort.Slice(packIDs, func(i, j int) bool { return packIDs[i].String() < packIDs[j].String() })
	for _, pid := range packIDs {
		for _, b := range plan.packBlobs[pid] {
			ref := BlobRef{b.Type, b.ID}
			if _, ok := used[ref]; !ok {
				continue
			}
			if _, ok := chosen[ref]; ok {
				plan.Duplicates++
				continue
			}
			chosen[ref] = pid
		}
	}
	// Used blobs in no normal pack: resurrect a pending pack that has them,
	// or refuse.
	for ref := range used {
		if _, ok := chosen[ref]; ok {
			continue
		}
		found := false
		for pid, blobs := range pendingBlobs {
			for _, b := range blobs {
				if b.Type == ref.Type && b.ID == ref.ID {
					found = true
					if !contains(plan.Resurrect, pid) {
						plan.Resurrect = append(plan.Resurrect, pid)
					}
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			plan.MissingBlobs = append(plan.MissingBlobs, ref)
		}
	}
	if len(plan.MissingBlobs) > 0 {
		return plan, fmt.Errorf("%w: %d blobs, e.g. %s blob %s; nothing was changed (run `dj check` and `dj repair`)",
			ErrMissingBlobs, len(plan.MissingBlobs), plan.MissingBlobs[0].Type, plan.MissingBlobs[0].ID.Short())
	}

	// Classify normal packs.
	type candidate struct {
		id           crypto.ID
		used, unused int64
	}
	var partly []candidate
	var unusedInPartly int64
	for _, pid := range packIDs {
		var u, un int64
		for _, b := range plan.packBlobs[pid] {
			ref := BlobRef{b.Type, b.ID}
			if chosen[ref] == pid {
				if _, ok := used[ref]; ok {
					u += int64(b.Length)
					plan.UsedBlobs++
					continue
				}
			}
			un += int64(b.Length)
			plan.UnusedBlobs++
		}
		plan.UsedBytes += u
		plan.UnusedBytes += un
		plan.packSizes[pid] = u + un
		plan.PacksTotal++
		switch {
		case u == 0:
			plan.Mark = append(plan.Mark, pid)
		case un > 0:
			partly = append(partly, candidate{pid, u, un})
			unusedInPartly += un
			plan.keep[pid] = true
		default:
			plan.keep[pid] = true
		}
	}
	// Repack the packs with the largest unused share until what stays
	// unused is within the limit.
	limit := opts.MaxUnusedBytes
	if limit == 0 {
		limit = int64(opts.MaxUnused * float64(plan.UsedBytes))
	}
	sort.Slice(partly, func(i, j int) bool {
		ri := float64(partly[i].unused) / float64(partly[i].used+partly[i].unused)
		rj := float64(partly[j].unused) / float64(partly[j].used+partly[j].unused)
		if ri != rj {
			return ri > rj
		}
		return partly[i].id.String() < partly[j].id.String()
	})
	for _, c := range partly {
		if unusedInPartly <= limit {
			break
		}
		if opts.MaxRepackBytes > 0 && plan.RepackBytes+c.used+c.unused > opts.MaxRepackBytes {
			continue
		}
		plan.Repack = append(plan.Repack, c.id)
		plan.RepackBytes += c.used + c.unused
		unusedInPartly -= c.unused
		delete(plan.keep, c.id)
	}

	// Pending packs: resurrect, delete, or keep waiting.
	writerBlocks := func(markedAt time.Time) bool {
		return !oldestWriter.IsZero() && oldestWriter.Before(markedAt.Add(opts.ClockSkew))
	}
	for pid, ns := range marks {
		if contains(plan.Resurrect, pid) {
			continue
		}
		markedAt := time.Unix(0, ns)
		size := packBytes(pendingBlobs[pid])
		switch {
		case opts.InstantDelete:
			plan.Delete = append(plan.Delete, pid)
			plan.DeleteBytes += size
		case opts.Now.Sub(markedAt) >= opts.KeepDelete && !writerBlocks(markedAt):
			plan.Delete = append(plan.Delete, pid)
			plan.DeleteBytes += size
		default:
			if writerBlocks(markedAt) {
				plan.WaitingForWriter = true
			}
			plan.pendingKeep[pid] = ns
			plan.KeptPending++
			plan.FreedLater += size
		}
	}
	// Packs that no index names. A KeepDelete shorter than the clock skew
	// shortens rule (d)'s margin too: the user says the clocks agree.
	unindexedMargin := min(opts.ClockSkew, opts.KeepDelete)
	listed := 0 // indexed packs the listing shows
	err = r.Backend().List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		id, err := crypto.ParseID(fi.Name)
		if err != nil {
			return nil
		}
		if _, ok := plan.packBlobs[id]; ok {
			listed++
			return nil
		}
		if _, ok := marks[id]; ok {
			return nil
		}
		// Rules (d) and (e) of the safety argument. opts.Now was taken
		// before the locks were listed. A pack of unknown age counts as
		// young: it may be a running backup's.
		switch {
		case opts.InstantDelete,
			!fi.ModTime.IsZero() && opts.Now.Sub(fi.ModTime) >= unindexedMargin && !writerBlocks(fi.ModTime):
			plan.Unindexed = append(plan.Unindexed, id)
			plan.UnindexedBytes += fi.Size
		default:
			w := WaitingPack{ID: id, Size: fi.Size, Writer: writerBlocks(fi.ModTime)}
			if !fi.ModTime.IsZero() && !w.Writer {
				w.DeletableAt = fi.ModTime.Add(unindexedMargin)
			}
			plan.UnindexedWaiting = append(plan.UnindexedWaiting, w)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The listings must agree with each other: every pack the index names
	// is listed, and packs no index names (deleted as left over by an
	// interrupted backup) are never all there is while no index file was
	// listed. Otherwise a listing came back short.
	if missing := len(plan.packBlobs) - listed; missing > 0 {
		return nil, fmt.Errorf("%w: the index names %d packs the pack listing lacks (%d listed); nothing was changed "+
			"(run `dj check`; if the packs are really gone, `dj repair index`)", ErrSuspectListing, missing, listed)
	}
	if len(plan.Unindexed) > 0 && len(plan.supersedes) == 0 && len(plan.packBlobs) == 0 {
		return nil, fmt.Errorf("%w: no index file was listed, and %d packs would be deleted as unindexed; nothing was changed "+
			"(if the index is really lost, run `dj repair index` first)", ErrSuspectListing, len(plan.Unindexed))
	}
	var freedRepack int64
	for _, id := range plan.Repack {
		for _, b := range plan.packBlobs[id] {
			if chosen[BlobRef{b.Type, b.ID}] != id {
				freedRepack += int64(b.Length)
			}
		}
	}
	plan.FreedBytesNow = plan.DeleteBytes + plan.UnindexedBytes
	var marked int64
	for _, id := range plan.Mark {
		marked += plan.packSizes[id]
	}
	if opts.InstantDelete {
		plan.FreedBytesNow += marked + freedRepack
	} else {
		plan.FreedLater += marked + freedRepack
	}
	if opts.InstantDelete && len(plan.Mark)+len(plan.Repack) > 0 {
		// Nothing protects the packs of a snapshot the listing left out
		// but the listing itself (without --instant-delete, marked packs
		// wait and the next prune brings them back): list several times
		// more, and refuse if any listing shows a snapshot the first did
		// not. One repeat was not enough: the fault battery met storage
		// that cut two listings in a row the same way, and a kept
		// snapshot lost its data.
		listed := map[crypto.ID]bool{}
		for _, sn := range snaps {
			listed[sn.ID] = true
		}
		for range instantDeleteRelistings {
			again, err := r.ListFiles(ctx, backend.SnapshotFile)
			if err != nil {
				return nil, err
			}
			for _, id := range again {
				if !listed[id] {
					return nil, fmt.Errorf("%w: snapshot %s was not in the first listing of the snapshots; nothing was changed", ErrSuspectListing, id.Short())
				}
			}
		}
	}
	sortIDs(plan.Mark)
	sortIDs(plan.Repack)
	sortIDs(plan.Delete)
	sortIDs(plan.Resurrect)
	sortIDs(plan.Unindexed)
	sort.Slice(plan.UnindexedWaiting, func(i, j int) bool {
		return plan.UnindexedWaiting[i].ID.String() < plan.UnindexedWaiting[j].ID.String()
	})
	return plan, nil
}

// instantDeleteRelistings is how many times more prune lists the
// snapshots before it deletes at once: storage that drops entries from a
// listing without an error would have to drop the same ones from every
// listing to make prune delete a kept snapshot's data.
const instantDeleteRelistings = 4

func packBytes(blobs []pack.Blob) int64 {
	var n int64
	for _, b := range blobs {
		n += int64(b.Length)
	}
	return n
}

func contains(ids []crypto.ID, id crypto.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func sortIDs(ids []crypto.ID) {
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
}
