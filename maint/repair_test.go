package maint

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// readableFiles walks a snapshot with the repository's own loaders and
// returns every file whose directories and data all load, with content.
func readableFiles(t *testing.T, r *repo.Repository, root crypto.ID) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	var walk func(id crypto.ID, dir string)
	walk = func(id crypto.ID, dir string) {
		tr, err := r.LoadTree(ctx, id)
		if err != nil {
			return
		}
		for _, n := range tr.Nodes {
			switch n.Type {
			case tree.Dir:
				walk(*n.Subtree, dir+n.Name+"/")
			case tree.File:
				var data []byte
				ok := true
				for _, b := range n.Content {
					plain, err := r.LoadBlob(ctx, b, nil)
					if err != nil {
						ok = false
						break
					}
					data = append(data, plain...)
				}
				if ok {
					out[dir+n.Name] = data
				}
			}
		}
	}
	walk(root, "/")
	return out
}

func sortedKeys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// repairAll runs repair index (optionally reading all packs) and repair
// snapshots --forget, then checks that the repository is clean and that
// every file that was readable before is still there, byte for byte.
func repairAll(t *testing.T, f *chkFixture, readAll bool) (*RepairIndexResult, *RepairSnapshotsResult) {
	t.Helper()
	ctx := context.Background()
	// What can still be read, per snapshot, before repairing (the index
	// is first repaired without removing anything the loaders need).
	ri, err := RepairIndex(ctx, f.open(t), RepairIndexOptions{ReadAllPacks: readAll})
	if err != nil {
		t.Fatal(err)
	}
	r := f.openIndexed(t)
	before := map[crypto.ID]map[string][]byte{}
	for _, sn := range f.snaps {
		before[sn.ID] = readableFiles(t, r, sn.Tree)
	}
	rs, err := RepairSnapshots(ctx, f.open(t), RepairSnapshotsOptions{Forget: true})
	if err != nil {
		t.Fatal(err)
	}
	res := f.check(t, CheckOptions{ReadData: true})
	if !res.OK() {
		dumpProblems(t, res)
		t.Fatal("check fails after repair")
	}
	r = f.openIndexed(t)
	snaps, _, err := r.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byOriginal := map[crypto.ID]*snapshot.Snapshot{}
	for _, sn := range snaps {
		if sn.Original != nil {
			byOriginal[*sn.Original] = sn
		} else {
			byOriginal[sn.ID] = sn
		}
	}
	for i, orig := range f.snaps {
		sn := byOriginal[orig.ID]
		if sn == nil {
			t.Fatalf("snapshot %s has neither itself nor a repaired copy", orig.ID.Short())
		}
		got := readableFiles(t, r, sn.Tree)
		if strings.Join(sortedKeys(got), " ") != strings.Join(sortedKeys(before[orig.ID]), " ") {
			t.Fatalf("snapshot %s: files %v, readable before %v", orig.ID.Short(), sortedKeys(got), sortedKeys(before[orig.ID]))
		}
		for p, data := range got {
			if !bytes.Equal(data, f.files[i][p]) {
				t.Fatalf("%s differs after repair", p)
			}
		}
	}
	return ri, rs
}

func TestRepairIndexAfterTruncatedIndex(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	var victim crypto.ID
	for id := range r.IndexFiles() {
		victim = id
	}
	f.be.mutate(backend.Handle{Type: backend.IndexFile, Name: victim.String()}, func(b []byte) []byte { return b[:10] })
	// Repairing snapshots now would drop files that are only unindexed.
	if _, err := RepairSnapshots(context.Background(), f.open(t), RepairSnapshotsOptions{}); !errors.Is(err, ErrIndexIncomplete) {
		t.Fatalf("repair snapshots on a broken index: %v", err)
	}
	ri, err := RepairIndex(context.Background(), f.open(t), RepairIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ri.OldIndexProblems != 1 || len(ri.PacksAdded) == 0 || ri.IndexFilesRemoved != 2 || ri.IndexFilesWritten != 1 || len(ri.BrokenPacks) != 0 {
		t.Fatalf("%+v", ri)
	}
	res := f.check(t, CheckOptions{ReadData: true})
	if len(res.Problems) != 0 {
		dumpProblems(t, res)
		t.Fatal("problems after repair index")
	}
	if got := f.be.names(backend.IndexFile); len(got) != 1 {
		t.Fatalf("index files %v", got)
	}
	// Every file of every snapshot reads back intact.
	r = f.openIndexed(t)
	for i, sn := range f.snaps {
		got := readableFiles(t, r, sn.Tree)
		if len(got) != len(f.files[i]) {
			t.Fatalf("snapshot %d: %d files readable, want %d", i, len(got), len(f.files[i]))
		}
		for p, data := range f.files[i] {
			if !bytes.Equal(got[p], data) {
				t.Fatalf("%s differs", p)
			}
		}
	}
}

func TestRepairDeletedIndexFileRefusesSnapshotRepair(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	for id := range r.IndexFiles() {
		_ = f.be.Remove(context.Background(), backend.Handle{Type: backend.IndexFile, Name: id.String()})
		break
	}
	_, err := RepairSnapshots(context.Background(), f.open(t), RepairSnapshotsOptions{DryRun: true})
	if !errors.Is(err, ErrIndexIncomplete) {
		t.Fatalf("err %v, want ErrIndexIncomplete", err)
	}
	repairAll(t, f, false)
	// Nothing was lost: no snapshot needed repairing after the index.
	snaps, _, _ := f.open(t).Snapshots(context.Background())
	if len(snaps) != 2 || snaps[0].ID != f.snaps[0].ID || snaps[1].ID != f.snaps[1].ID {
		t.Fatal("intact snapshots changed")
	}
}

func TestRepairFlippedByte(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	victim := blobIDs(r, f.files[0]["/docs/a.bin"])[1]
	loc := r.Index().Lookup(pack.DataBlob, victim)[0]
	packBlobs := len(r.Index().Packs()[loc.PackID])
	f.be.mutate(backend.Handle{Type: backend.PackFile, Name: loc.PackID.String()}, func(b []byte) []byte {
		b[loc.Offset+30] ^= 0x40
		return b
	})
	ri, err := RepairIndex(context.Background(), f.open(t), RepairIndexOptions{ReadAllPacks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ri.BrokenPacks) != 1 || ri.BrokenPacks[0].Pack != loc.PackID || ri.BrokenPacks[0].Lost != 1 ||
		ri.BrokenPacks[0].Salvaged != packBlobs-1 || ri.BlobsSalvaged != packBlobs-1 || (packBlobs > 1 && ri.PacksWritten == 0) {
		t.Fatalf("repair index: %+v", ri)
	}
	// Check names the lost blob and does not send the user back to repair
	// index for the damaged copy left unreferenced.
	res := f.check(t, CheckOptions{})
	errs := errorsOf(res)
	if len(errs) != 1 || errs[0].Kind != KindBlobMissing || errs[0].Blobs[0].ID != victim || res.SuggestRepairIndex || !res.SuggestRepairSnapshots ||
		!strings.Contains(errs[0].Message, "damaged") || countKind(res, KindPackUnreferenced) != 1 {
		dumpProblems(t, res)
		t.Fatalf("check after repair index: %+v", res)
	}

	// A second repair index reports the damaged pack again but does not
	// copy its intact blobs twice.
	ri, rs := repairAll(t, f, true)
	if len(ri.BrokenPacks) != 1 || ri.PacksWritten != 0 || ri.BlobsLost != 1 {
		t.Fatalf("second repair index: %+v", ri)
	}
	if len(rs.Repaired) != 1 || rs.Repaired[0].Original != f.snaps[0].ID || !rs.Repaired[0].Removed ||
		strings.Join(rs.Repaired[0].DroppedFiles, ",") != "/docs/a.bin" || len(rs.Repaired[0].EmptiedDirs) != 0 || rs.Intact != 1 {
		t.Fatalf("repair snapshots: %+v", rs)
	}
	// The repaired snapshot carries its origin and the tag.
	sn, err := f.open(t).LoadSnapshot(context.Background(), *rs.Repaired[0].New)
	if err != nil {
		t.Fatal(err)
	}
	if sn.Original == nil || *sn.Original != f.snaps[0].ID || !sn.HasTag(RepairTag) || !sn.Time.Equal(f.snaps[0].Time) {
		t.Fatalf("repaired snapshot %+v", sn)
	}
	// The second snapshot is untouched.
	if _, err := f.open(t).LoadSnapshot(context.Background(), f.snaps[1].ID); err != nil {
		t.Fatal(err)
	}
}

func TestRepairMissingPackAndTrees(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	// Remove a data pack and the pack with the "deep" directory's tree.
	dataPack := packOf(t, r, blobIDs(r, f.files[1]["/new/c.bin"])[0])
	deep, err := r.FindNode(context.Background(), f.snaps[0].Tree, "docs/deep")
	if err != nil {
		t.Fatal(err)
	}
	treePack := r.Index().Lookup(pack.TreeBlob, *deep.Subtree)[0].PackID
	for _, id := range []crypto.ID{dataPack, treePack} {
		_ = f.be.Remove(context.Background(), backend.Handle{Type: backend.PackFile, Name: id.String()})
	}
	// A dry run changes nothing.
	before := f.be.names(backend.SnapshotFile)
	dry, err := RepairSnapshots(context.Background(), f.open(t), RepairSnapshotsOptions{DryRun: true, Forget: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Repaired) == 0 || dry.Repaired[0].New != nil || strings.Join(f.be.names(backend.SnapshotFile), ",") != strings.Join(before, ",") {
		t.Fatalf("dry run: %+v", dry)
	}
	_, rs := repairAll(t, f, false)
	emptied := false
	for _, rep := range rs.Repaired {
		for _, d := range rep.EmptiedDirs {
			if d == "/docs/deep/" || d == "/docs/" || d == "/" {
				emptied = true
			}
		}
	}
	if !emptied {
		t.Fatalf("no directory emptied: %+v", rs.Repaired)
	}
}

func TestRepairDamagedHeaderSalvagesBlobs(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	pid := packOf(t, r, blobIDs(r, f.files[0]["/docs/shared.txt"])[0])
	n := len(r.Index().Packs()[pid])
	f.be.mutate(backend.Handle{Type: backend.PackFile, Name: pid.String()}, func(b []byte) []byte {
		b[len(b)-10] ^= 1 // inside the sealed header
		return b
	})
	if res := f.check(t, CheckOptions{}); res.OK() || countKind(res, KindPackHeader) != 1 {
		dumpProblems(t, res)
		t.Fatal("damaged header not reported")
	}
	ri, rs := repairAll(t, f, false)
	if len(ri.BrokenPacks) != 1 || ri.BlobsSalvaged != n || ri.BlobsLost != 0 || len(rs.Repaired) != 0 {
		t.Fatalf("repair: %+v %+v", ri, rs)
	}
	res := f.check(t, CheckOptions{})
	if !res.OK() || countKind(res, KindPackUnreferenced) != 1 {
		dumpProblems(t, res)
		t.Fatal("after salvage: want only the damaged pack, unreferenced")
	}
}

func TestRepairIndexKeepsPendingPacks(t *testing.T) {
	f := newChkFixture(t)
	ctx := context.Background()
	r := f.openIndexed(t)
	pid := packOf(t, r, blobIDs(r, f.files[0]["/docs/a.bin"])[0]) // only the first snapshot uses it
	blobs := r.Index().Packs()
	var old []crypto.ID
	for id := range r.IndexFiles() {
		old = append(old, id)
	}
	marked := time.Now().Add(-time.Hour).UnixNano()
	if _, err := WriteIndex(ctx, r, filePacksExcept(blobs, pid), filePacksOnly(blobs, pid, marked), old); err != nil {
		t.Fatal(err)
	}
	if _, err := RepairIndex(ctx, f.open(t), RepairIndexOptions{ReadAllPacks: true}); err != nil {
		t.Fatal(err)
	}
	r = f.openIndexed(t)
	marks, _ := r.PendingPacks()
	if len(marks) != 1 || marks[pid] != marked {
		t.Fatalf("pending packs %v, want %s marked at %d", marks, pid.Short(), marked)
	}
	if r.Index().Packs()[pid] != nil {
		t.Fatal("pending pack is in the normal index")
	}
}

func TestRepairSnapshotsSelection(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	pid := packOf(t, r, blobIDs(r, f.files[0]["/docs/shared.txt"])[0]) // both snapshots
	_ = f.be.Remove(context.Background(), backend.Handle{Type: backend.PackFile, Name: pid.String()})
	if _, err := RepairIndex(context.Background(), f.open(t), RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	rs, err := RepairSnapshots(context.Background(), f.open(t), RepairSnapshotsOptions{Snapshots: []string{"latest"}})
	if err != nil {
		t.Fatal(err)
	}
	if rs.Checked != 1 || len(rs.Repaired) != 1 || rs.Repaired[0].Original != f.snaps[1].ID || rs.Repaired[0].Removed {
		t.Fatalf("%+v", rs)
	}
	if got := f.be.names(backend.SnapshotFile); len(got) != 3 {
		t.Fatalf("%d snapshot files, want 3 (two originals and one repaired)", len(got))
	}
}
