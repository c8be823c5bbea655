package maint_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/mem"
	"dj/maint"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

type keepOpen struct{ backend.Backend }

func (keepOpen) Close() error { return nil }

// fixture is a repository in memory with helpers to add snapshots of
// single files made of given blobs.
type fixture struct {
	t   *testing.T
	be  *mem.Backend
	rng *rand.Rand
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, be: mem.New(), rng: rand.New(rand.NewSource(1))}
	r := repo.TestRepository(t, keepOpen{f.be})
	r.Close()
	return f
}

// open opens the repository without its index (as prune wants it).
func (f *fixture) open() *repo.Repository {
	f.t.Helper()
	r, err := repo.Open(context.Background(), keepOpen{f.be}, repo.TestPassword, repo.Options{PackSize: 64 << 10})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { r.Close() })
	return r
}

func (f *fixture) blob(n int) []byte {
	b := make([]byte, n)
	f.rng.Read(b)
	return b
}

// snapshot saves the blobs as one file and a snapshot naming it; each call
// writes its own packs (one flush).
func (f *fixture) snapshot(r *repo.Repository, blobs ...[]byte) *snapshot.Snapshot {
	f.t.Helper()
	ctx := context.Background()
	if _, err := r.LoadIndex(ctx, false); err != nil {
		f.t.Fatal(err)
	}
	var ids []crypto.ID
	var size uint64
	for _, b := range blobs {
		id, _, err := r.SaveBlob(ctx, pack.DataBlob, b)
		if err != nil {
			f.t.Fatal(err)
		}
		ids = append(ids, id)
		size += uint64(len(b))
	}
	tid, _, err := r.SaveTree(ctx, &tree.Tree{Nodes: []*tree.Node{{Name: "f", Type: tree.File, Mode: 0o644, Size: size, Content: ids}}})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		f.t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: time.Now(), Tree: tid, Paths: []string{"/x"}}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		f.t.Fatal(err)
	}
	return sn
}

func (f *fixture) packCount() int {
	n := 0
	f.be.List(context.Background(), backend.PackFile, func(backend.FileInfo) error { n++; return nil })
	return n
}

// restoreOK checks that every blob of the snapshot's file loads.
func (f *fixture) restoreOK(sn *snapshot.Snapshot, want ...[]byte) {
	f.t.Helper()
	ctx := context.Background()
	r := f.open()
	if _, err := r.LoadIndex(ctx, false); err != nil {
		f.t.Fatal(err)
	}
	n, err := r.FindNode(ctx, sn.Tree, "/f")
	if err != nil {
		f.t.Fatal(err)
	}
	for i, id := range n.Content {
		b, err := r.LoadBlob(ctx, id, nil)
		if err != nil || !bytes.Equal(b, want[i]) {
			f.t.Fatalf("blob %d of snapshot %s: %v", i, sn.ID.Short(), err)
		}
	}
}

func prune(t *testing.T, r *repo.Repository, opts maint.PruneOptions) *maint.PrunePlan {
	t.Helper()
	plan, err := maint.PlanPrune(context.Background(), r, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Execute(context.Background(), r, opts); err != nil {
		t.Fatal(err)
	}
	return plan
}

func TestPruneMarksThenDeletes(t *testing.T) {
	f := newFixture(t)
	keep := f.blob(100 << 10)
	drop := f.blob(100 << 10)
	sn1 := f.snapshot(f.open(), keep)
	sn2 := f.snapshot(f.open(), drop)
	ctx := context.Background()
	if err := f.open().RemoveSnapshot(ctx, sn2.ID); err != nil {
		t.Fatal(err)
	}
	before := f.packCount()

	// Dry run: nothing changes.
	plan := prune(t, f.open(), maint.PruneOptions{DryRun: true, KeepDelete: maint.DefaultKeepDelete})
	if len(plan.Mark) == 0 || f.packCount() != before {
		t.Fatalf("dry run: mark %d, packs %d -> %d", len(plan.Mark), before, f.packCount())
	}
	// Phase 1 marks the unused packs but deletes nothing.
	plan = prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete})
	if len(plan.Mark) == 0 || f.packCount() != before {
		t.Fatalf("phase 1: mark %d, packs %d -> %d", len(plan.Mark), before, f.packCount())
	}
	marks, _ := func() (map[crypto.ID]int64, error) {
		r := f.open()
		_, err := r.LoadIndex(ctx, false)
		m, _ := r.PendingPacks()
		return m, err
	}()
	if len(marks) != len(plan.Mark) {
		t.Fatalf("pending packs %d, marked %d", len(marks), len(plan.Mark))
	}
	// A second prune within keep-delete keeps them.
	plan = prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete})
	if len(plan.Delete) != 0 || plan.KeptPending == 0 {
		t.Fatalf("within keep-delete: delete %d kept %d", len(plan.Delete), plan.KeptPending)
	}
	// Later, they go.
	plan = prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, Now: time.Now().Add(25 * time.Hour)})
	if len(plan.Delete) == 0 || f.packCount() >= before {
		t.Fatalf("after keep-delete: delete %d, packs %d -> %d", len(plan.Delete), before, f.packCount())
	}
	f.restoreOK(sn1, keep)
}

func TestPruneRepacksPartlyUsedPacks(t *testing.T) {
	f := newFixture(t)
	// One snapshot of 20 blobs spread over the open packs, then one that
	// keeps every other blob: the packs become partly used.
	var all, half [][]byte
	for i := 0; i < 20; i++ {
		b := f.blob(2 << 10)
		all = append(all, b)
		if i%2 == 0 {
			half = append(half, b)
		}
	}
	sn1 := f.snapshot(f.open(), all...)
	sn2 := f.snapshot(f.open(), half...)
	if err := f.open().RemoveSnapshot(context.Background(), sn1.ID); err != nil {
		t.Fatal(err)
	}
	plan := prune(t, f.open(), maint.PruneOptions{MaxUnused: 0.0001, KeepDelete: maint.DefaultKeepDelete})
	if len(plan.Repack) == 0 {
		t.Fatalf("nothing repacked: repack %v mark %v", plan.Repack, plan.Mark)
	}
	f.restoreOK(sn2, half...)
	plan = prune(t, f.open(), maint.PruneOptions{InstantDelete: true})
	f.restoreOK(sn2, half...)
	if plan.UnusedBlobs != 0 {
		t.Fatalf("unused blobs left after repack and delete: %d", plan.UnusedBlobs)
	}
}

// A backup that deduplicated against a blob before prune marked its pack
// must not lose it: the next prune puts the pack back into the index.
func TestPruneResurrectsPacksANewSnapshotNeeds(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	x := f.blob(50 << 10)
	old := f.snapshot(f.open(), x)

	// A "backup" opens the repository and loads its index now.
	backup := f.open()
	if _, err := backup.LoadIndex(ctx, false); err != nil {
		t.Fatal(err)
	}
	lock, err := backup.Lock(ctx, repo.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile the old snapshot is forgotten and prune marks x's pack.
	if err := f.open().RemoveSnapshot(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	plan := prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, AllowNoSnapshots: true})
	if len(plan.Mark) == 0 {
		t.Fatal("x's pack was not marked")
	}
	// The running backup finds x in its (old) index and only refers to it.
	xid := backup.BlobID(x)
	if !backup.HasBlob(pack.DataBlob, xid) {
		t.Fatal("the backup's index should still list x")
	}
	tid, _, err := backup.SaveTree(ctx, &tree.Tree{Nodes: []*tree.Node{{Name: "f", Type: tree.File, Size: uint64(len(x)), Content: []crypto.ID{xid}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := backup.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: time.Now(), Tree: tid, Paths: []string{"/x"}}
	if err := backup.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	// While the backup's writer lock is held, no marked pack may be
	// deleted, however old the mark; the pack the new snapshot needs is put
	// back into the index.
	plan = prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, Now: time.Now().Add(48 * time.Hour)})
	if len(plan.Delete) != 0 {
		t.Fatalf("deleted %d packs while a writer that started before the mark runs", len(plan.Delete))
	}
	if len(plan.Resurrect) == 0 {
		t.Fatalf("pack not resurrected: resurrect %v, mark %v", plan.Resurrect, plan.Mark)
	}
	f.restoreOK(sn, x)
	lock.Unlock(ctx)
	// And it stays.
	prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, Now: time.Now().Add(96 * time.Hour)})
	f.restoreOK(sn, x)
}

func TestPruneRefusesWhenBlobsAreMissing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.blob(10 << 10)
	f.snapshot(f.open(), a)
	f.snapshot(f.open(), f.blob(10<<10))
	// Delete every pack and index: the snapshots' blobs are gone.
	var packs []string
	f.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error { packs = append(packs, fi.Name); return nil })
	for _, p := range packs {
		f.be.Remove(ctx, backend.Handle{Type: backend.PackFile, Name: p})
	}
	// Recreate an index-less state: index files still name the packs, so
	// drop them too and keep the snapshots.
	var idx []string
	f.be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error { idx = append(idx, fi.Name); return nil })
	for _, p := range idx {
		f.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: p})
	}
	_, err := maint.PlanPrune(ctx, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete})
	if err == nil {
		t.Fatal("prune went ahead with missing data")
	}
	if !errors.Is(err, maint.ErrMissingBlobs) && !errors.Is(err, repo.ErrBlobNotFound) {
		t.Fatalf("unexpected error: %v", err)
	}
}

// TestPruneUnindexedPacks: the packs of an interrupted backup (no index
// names them, no lock covers them) are deleted by a plain prune once they
// are older than the clock-skew margin, whatever --keep-delete says;
// younger ones are kept and named with the time they become deletable.
func TestPruneUnindexedPacks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.snapshot(f.open(), f.blob(10<<10))
	countPacks := func() (n int) {
		f.be.List(ctx, backend.PackFile, func(backend.FileInfo) error { n++; return nil })
		return n
	}
	before := countPacks()
	// An interrupted backup: a pack without index.
	r := f.open()
	if _, err := r.LoadIndex(ctx, false); err != nil {
		t.Fatal(err)
	}
	r.SaveBlob(ctx, pack.DataBlob, f.blob(10<<10))
	if _, err := r.FlushPacks(ctx); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	plan := prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, DryRun: true})
	if len(plan.Unindexed) != 0 {
		t.Fatal("a pack written seconds ago was deleted: it may be a running backup's")
	}
	if len(plan.UnindexedWaiting) != 1 {
		t.Fatalf("the young unindexed pack is not named: %+v", plan.UnindexedWaiting)
	}
	w := plan.UnindexedWaiting[0]
	if w.Writer || w.DeletableAt.Before(written.Add(4*time.Minute)) || w.DeletableAt.After(written.Add(6*time.Minute)) {
		t.Fatalf("deletable at %v, want about 5 minutes after %v", w.DeletableAt, written)
	}
	// Ten minutes later a plain prune (24h keep-delete) deletes it.
	plan = prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, Now: time.Now().Add(10 * time.Minute)})
	if len(plan.Unindexed) != 1 || len(plan.UnindexedWaiting) != 0 {
		t.Fatalf("old unindexed pack not deleted: %d deleted, %d waiting", len(plan.Unindexed), len(plan.UnindexedWaiting))
	}
	if n := countPacks(); n != before {
		t.Fatalf("%d packs left, want the snapshot's %d", n, before)
	}
}

// TestPruneUnindexedPacksOfRunningBackup: a live writer lock older than an
// unindexed pack keeps it, however old the pack is.
func TestPruneUnindexedPacksOfRunningBackup(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.snapshot(f.open(), f.blob(10<<10))
	r := f.open()
	lock, err := r.Lock(ctx, repo.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock(ctx)
	if _, err := r.LoadIndex(ctx, false); err != nil {
		t.Fatal(err)
	}
	r.SaveBlob(ctx, pack.DataBlob, f.blob(10<<10))
	if _, err := r.FlushPacks(ctx); err != nil {
		t.Fatal(err)
	}
	plan := prune(t, f.open(), maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, Now: time.Now().Add(20 * time.Minute)})
	if len(plan.Unindexed) != 0 {
		t.Fatal("the pack of a running backup was deleted")
	}
	if len(plan.UnindexedWaiting) != 1 || !plan.UnindexedWaiting[0].Writer {
		t.Fatalf("the running backup's pack is not named as waiting for it: %+v", plan.UnindexedWaiting)
	}
}
