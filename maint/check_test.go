package maint

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

func TestCheckCleanRepository(t *testing.T) {
	f := newChkFixture(t)
	for _, readData := range []bool{false, true} {
		res := f.check(t, CheckOptions{ReadData: readData})
		if !res.OK() || len(res.Problems) != 0 {
			dumpProblems(t, res)
			t.Fatalf("readData=%v: clean repository has problems", readData)
		}
		if res.Snapshots != 2 || res.IndexFiles != 2 || res.Packs == 0 || res.Trees < 5 {
			t.Fatalf("counts: %+v", res)
		}
		if readData && (res.PacksRead != res.Packs || res.BytesRead == 0) {
			t.Fatalf("read data: %d of %d packs, %d bytes", res.PacksRead, res.Packs, res.BytesRead)
		}
	}
}

func TestCheckFlippedByte(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	victim := blobIDs(r, f.files[0]["/docs/a.bin"])[1]
	loc := r.Index().Lookup(pack.DataBlob, victim)[0]
	f.be.mutate(backend.Handle{Type: backend.PackFile, Name: loc.PackID.String()}, func(b []byte) []byte {
		b[loc.Offset+30] ^= 0x40
		return b
	})

	// The structure is intact: without reading data nothing is wrong.
	if res := f.check(t, CheckOptions{}); !res.OK() {
		dumpProblems(t, res)
		t.Fatal("structure check found errors in a pack with a flipped data byte")
	}
	// The blob checks find the damage; --pack-hashes adds the hash mismatch.
	res := f.check(t, CheckOptions{ReadData: true})
	if got := strings.Join(kinds(errorsOf(res)), ","); got != "blob_damaged" {
		dumpProblems(t, res)
		t.Fatalf("errors %s, want blob_damaged", got)
	}
	res = f.check(t, CheckOptions{ReadData: true, PackHashes: true})
	errs := errorsOf(res)
	if got := strings.Join(kinds(errs), ","); got != "pack_hash,blob_damaged" {
		dumpProblems(t, res)
		t.Fatalf("errors %s, want pack_hash,blob_damaged", got)
	}
	for _, p := range errs {
		if p.Pack == nil || *p.Pack != loc.PackID {
			t.Errorf("%s names pack %v, want %s", p.Kind, p.Pack, loc.PackID.Short())
		}
	}
	dmg := errs[1]
	if len(dmg.Blobs) != 1 || dmg.Blobs[0].ID != victim || dmg.Blobs[0].Type != "data" || dmg.LostBlobs != 1 {
		t.Fatalf("damaged blobs %+v (lost %d), want data %s", dmg.Blobs, dmg.LostBlobs, victim.Short())
	}
	want := []string{"/docs/a.bin@" + f.snaps[0].ID.Short()}
	if got := affectedOf(errs); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("affected %v, want %v", got, want)
	}
	if !res.SuggestRepairIndex || !res.SuggestRepairSnapshots || len(res.BrokenPacks) != 1 {
		t.Fatalf("suggestions: %+v", res)
	}
}

func TestCheckMissingPack(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	shared := blobIDs(r, f.files[0]["/docs/shared.txt"])[0]
	pid := packOf(t, r, shared)
	lost := map[crypto.ID]bool{}
	for _, b := range r.Index().Packs()[pid] {
		lost[b.ID] = true
	}
	if err := f.be.Remove(context.Background(), backend.Handle{Type: backend.PackFile, Name: pid.String()}); err != nil {
		t.Fatal(err)
	}
	res := f.check(t, CheckOptions{})
	errs := errorsOf(res)
	if len(errs) != 1 || errs[0].Kind != KindPackMissing || *errs[0].Pack != pid {
		dumpProblems(t, res)
		t.Fatalf("errors %v, want one pack_missing for %s", kinds(errs), pid.Short())
	}
	if errs[0].LostBlobs != len(lost) || len(errs[0].Blobs) != len(lost) {
		t.Fatalf("pack_missing lists %d blobs, %d lost; want %d", len(errs[0].Blobs), errs[0].LostBlobs, len(lost))
	}
	want := f.affectedBy(r, lost)
	got := affectedOf(errs)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("affected %v, want %v", got, want)
	}
	// The shared file is in both snapshots.
	for _, sn := range f.snaps {
		if !contains2(got, "/docs/shared.txt@"+sn.ID.Short()) {
			t.Errorf("shared file of snapshot %s not named", sn.ID.Short())
		}
	}
}

// TestCheckMissingPackPartlyCopied: a missing pack whose blobs partly have
// a copy in another pack loses only the others, and names only the files
// that use them; with every blob copied it loses nothing. The blobs of a
// missing pack are found through the index (checker.gone), not kept one
// by one.
func TestCheckMissingPackPartlyCopied(t *testing.T) {
	for _, copyAll := range []bool{false, true} {
		f := newChkFixture(t)
		ctx := context.Background()
		r := f.openIndexed(t)
		sharedBlobs := blobIDs(r, f.files[0]["/docs/shared.txt"])
		shared := map[crypto.ID]bool{}
		for _, id := range sharedBlobs {
			shared[id] = true
		}
		pid := packOf(t, r, sharedBlobs[0])
		blobs := r.Index().Packs()[pid]
		if len(blobs) < 2 {
			t.Fatalf("pack %s holds %d blobs, want several", pid.Short(), len(blobs))
		}
		copied := map[crypto.ID]bool{}
		n, err := r.CopyBlobs(ctx, pid, blobs, func(b pack.Blob) bool {
			if copyAll || shared[b.ID] {
				copied[b.ID] = true
				return true
			}
			return false
		}, repo.CopyBlobsOptions{})
		if err != nil || n != len(copied) {
			t.Fatalf("CopyBlobs: %d, %v", n, err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.be.Remove(ctx, backend.Handle{Type: backend.PackFile, Name: pid.String()}); err != nil {
			t.Fatal(err)
		}
		lost := map[crypto.ID]bool{}
		for _, b := range blobs {
			if !copied[b.ID] {
				lost[b.ID] = true
			}
		}
		res := f.check(t, CheckOptions{})
		errs := errorsOf(res)
		if len(errs) != 1 || errs[0].Kind != KindPackMissing || *errs[0].Pack != pid {
			dumpProblems(t, res)
			t.Fatalf("errors %v, want one pack_missing for %s", kinds(errs), pid.Short())
		}
		if errs[0].LostBlobs != len(lost) || len(errs[0].Blobs) != len(blobs) {
			t.Fatalf("copy all %v: pack_missing lists %d blobs, %d lost; want %d and %d", copyAll, len(errs[0].Blobs), errs[0].LostBlobs, len(blobs), len(lost))
		}
		if copyAll != strings.Contains(errs[0].Message, "every blob has an intact copy") {
			t.Errorf("copy all %v: message %q", copyAll, errs[0].Message)
		}
		want := f.affectedBy(r, lost)
		got := affectedOf(errs)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("copy all %v: affected %v, want %v", copyAll, got, want)
		}
		if contains2(got, "/docs/shared.txt@"+f.snaps[0].ID.Short()) {
			t.Errorf("the copied shared file is named affected: %v", got)
		}
	}
}

func TestCheckTruncatedIndex(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	// The second index file holds the packs of the second backup.
	files := map[crypto.ID]*index.File{}
	for id := range r.IndexFiles() {
		file, err := r.LoadIndexFile(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		files[id] = file
	}
	var second crypto.ID
	for id, file := range files {
		for _, p := range file.Packs {
			for _, b := range p.Blobs {
				if b.Type == pack.DataBlob && b.ID == blobIDs(r, f.files[1]["/new/c.bin"])[0] {
					second = id
				}
			}
		}
	}
	lost := map[crypto.ID]bool{}
	for _, p := range files[second].Packs {
		for _, b := range p.Blobs {
			lost[b.ID] = true
		}
	}
	f.be.mutate(backend.Handle{Type: backend.IndexFile, Name: second.String()}, func(b []byte) []byte { return b[:len(b)/2] })

	res := f.check(t, CheckOptions{})
	errs := errorsOf(res)
	if len(errs) == 0 || errs[0].Kind != KindIndexUnreadable || errs[0].File != "index/"+second.String() {
		dumpProblems(t, res)
		t.Fatalf("first error %v, want index_unreadable of %s", kinds(errs), second.Short())
	}
	for _, p := range errs[1:] {
		if p.Kind != KindBlobMissing || p.Pack == nil || !strings.Contains(p.Message, "repair index") {
			t.Fatalf("unexpected error %s: %s", p.Kind, p.Message)
		}
	}
	var unref int
	for _, p := range res.Problems {
		if p.Kind == KindPackUnreferenced {
			unref++
		}
	}
	if unref != len(files[second].Packs) || res.UnreferencedPack != unref {
		t.Fatalf("%d unreferenced packs reported, want %d", unref, len(files[second].Packs))
	}
	// Affected: the second snapshot's new and changed files; its root
	// tree is new too, so the whole snapshot is named as "/".
	got := affectedOf(errs)
	if !contains2(got, "/@"+f.snaps[1].ID.Short()) {
		t.Fatalf("affected %v lacks the root of the second snapshot", got)
	}
	for _, a := range got {
		if strings.HasSuffix(a, f.snaps[0].ID.Short()) {
			t.Fatalf("first snapshot affected: %v", got)
		}
	}
	if !res.SuggestRepairIndex {
		t.Fatal("no repair index suggestion")
	}
}

func TestCheckMissingDataBlobInTree(t *testing.T) {
	// A tree names a blob that was never stored: blob_missing with the file.
	ctx := context.Background()
	be := newChkBackend()
	r, err := repo.Init(ctx, be, chkPassword, chkOptions())
	if err != nil {
		t.Fatal(err)
	}
	good, _, _ := r.SaveBlob(ctx, pack.DataBlob, []byte("good content"))
	ghost := r.BlobID([]byte("never saved"))
	sub := &tree.Tree{Nodes: []*tree.Node{
		{Name: "bad.txt", Type: tree.File, Size: 11, Content: []crypto.ID{ghost}},
		{Name: "good.txt", Type: tree.File, Size: 12, Content: []crypto.ID{good}},
		{Name: "wrong-size.txt", Type: tree.File, Size: 99, Content: []crypto.ID{good}},
	}}
	subID, _, _ := r.SaveTree(ctx, sub)
	root := &tree.Tree{Nodes: []*tree.Node{{Name: "d", Type: tree.Dir, Mode: os.ModeDir | 0o755, Subtree: &subID}}}
	rootID, _, _ := r.SaveTree(ctx, root)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: time.Now(), Tree: rootID, Paths: []string{"/x"}}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	r2, _ := repo.Open(ctx, be, chkPassword, chkOptions())
	res, err := Check(ctx, r2, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs := errorsOf(res)
	if got := strings.Join(kinds(errs), ","); got != "blob_missing,size_mismatch" {
		dumpProblems(t, res)
		t.Fatalf("errors %s", got)
	}
	if errs[0].Blobs[0].ID != ghost || len(errs[0].Affected) != 1 || errs[0].Affected[0].Path != "/d/bad.txt" || errs[0].Affected[0].Snapshots[0] != sn.ID {
		t.Fatalf("blob_missing: %+v", errs[0])
	}
	if len(errs[1].Affected) != 1 || errs[1].Affected[0].Path != "/d/wrong-size.txt" {
		t.Fatalf("size_mismatch: %+v", errs[1])
	}
}

func TestCheckUnreadableSnapshotAndKey(t *testing.T) {
	f := newChkFixture(t)
	f.be.mutate(backend.Handle{Type: backend.SnapshotFile, Name: f.snaps[0].ID.String()}, func(b []byte) []byte {
		b[len(b)-1] ^= 1
		return b
	})
	// A second key whose content no longer matches its name.
	r := f.open(t)
	kid, err := r.AddKey(context.Background(), "other")
	if err != nil {
		t.Fatal(err)
	}
	f.be.mutate(backend.Handle{Type: backend.KeyFile, Name: kid.String()}, func(b []byte) []byte { return append(b, ' ') })
	_ = f.be.Save(context.Background(), backend.Handle{Type: backend.SnapshotFile, Name: "junk"}, []byte("x"))
	res := f.check(t, CheckOptions{})
	if got := strings.Join(kinds(res.Problems), ","); got != "snapshot_unreadable,file_hash,invalid_name" {
		dumpProblems(t, res)
		t.Fatalf("problems %s", got)
	}
	if res.Snapshots != 1 {
		t.Fatalf("%d snapshots checked, want 1", res.Snapshots)
	}
	if !res.SuggestForgetUnreadable {
		t.Fatal("no suggestion to remove the unreadable snapshot file")
	}
}

func TestCheckPendingPacks(t *testing.T) {
	// A pack that prune marked for deletion whose blob a snapshot still
	// needs is a warning, and an error once the pack is gone.
	f := newChkFixture(t)
	ctx := context.Background()
	r := f.openIndexed(t)
	victim := blobIDs(r, f.files[1]["/new/d.bin"])[0]
	pid := packOf(t, r, victim)
	blobs := r.Index().Packs()
	var ids []crypto.ID
	for id := range r.IndexFiles() {
		ids = append(ids, id)
	}
	if _, err := WriteIndex(ctx, r, filePacksExcept(blobs, pid), filePacksOnly(blobs, pid, time.Now().UnixNano()), ids); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		_ = f.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()})
	}
	res := f.check(t, CheckOptions{})
	if !res.OK() {
		dumpProblems(t, res)
		t.Fatal("pending blobs are errors")
	}
	if n := countKind(res, KindBlobPending); n == 0 {
		dumpProblems(t, res)
		t.Fatal("no blob_pending warning")
	}
	// Damage in the pending pack: warnings about the pack, and an error for
	// the needed blob that is now lost.
	loc := r.Index().Lookup(pack.DataBlob, victim)[0]
	h := backend.Handle{Type: backend.PackFile, Name: pid.String()}
	f.be.mutate(h, func(b []byte) []byte { b[loc.Offset+20] ^= 1; return b })
	res = f.check(t, CheckOptions{ReadData: true})
	errs := errorsOf(res)
	if len(errs) != 1 || errs[0].Kind != KindBlobMissing || errs[0].Blobs[0].ID != victim || countKind(res, KindPackHash) != 0 || countKind(res, KindBlobDamaged) != 1 {
		dumpProblems(t, res)
		t.Fatal("damaged pending pack")
	}
	_ = f.be.Remove(ctx, h)
	res = f.check(t, CheckOptions{})
	if res.OK() || countKind(res, KindPendingGone) != 1 || countKind(res, KindBlobMissing) == 0 {
		dumpProblems(t, res)
		t.Fatal("a needed pending pack that is gone is not an error")
	}
	want := "/new/d.bin@" + f.snaps[1].ID.Short()
	if got := affectedOf(errorsOf(res)); !contains2(got, want) {
		t.Fatalf("affected %v lacks %s", got, want)
	}
}

// filePacksExcept returns the packs but skip as index entries.
func filePacksExcept(blobs map[crypto.ID][]pack.Blob, skip crypto.ID) []index.FilePack {
	var out []index.FilePack
	for id, bs := range blobs {
		if id != skip {
			out = append(out, index.FilePack{ID: id, Blobs: bs})
		}
	}
	return out
}

// filePacksOnly returns pack only, marked for deletion at markedAt.
func filePacksOnly(blobs map[crypto.ID][]pack.Blob, only crypto.ID, markedAt int64) []index.FilePack {
	return []index.FilePack{{ID: only, Blobs: blobs[only], MarkedAt: markedAt}}
}

func TestCheckFilesVanishDuringCheck(t *testing.T) {
	// A prune or forget running at the same time removes files check has
	// listed: that is not damage. Index files rewritten that way are not
	// even a warning: the index is listed again and its new files loaded
	// (repo.LoadIndex), so no blob goes missing from the check.
	f := newChkFixture(t)
	ctx := context.Background()
	// Merge both index files into one, keeping the old ones: the old
	// ones are then removed while check loads the index.
	r := f.openIndexed(t)
	var old []crypto.ID
	for id := range r.IndexFiles() {
		old = append(old, id)
	}
	if _, err := WriteIndex(ctx, r, filePacksExcept(r.Index().Packs(), crypto.ID{}), nil, old); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	f.be.afterList = func(ft backend.FileType) {
		if ft != backend.IndexFile {
			return
		}
		once.Do(func() {
			for _, id := range old {
				_ = f.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()})
			}
		})
	}
	res := f.check(t, CheckOptions{})
	if !res.OK() || len(res.Problems) != 0 {
		dumpProblems(t, res)
		t.Fatal("index files rewritten during check are reported")
	}
}

func TestSubsetChoose(t *testing.T) {
	var ids []crypto.ID
	sizes := map[crypto.ID]int64{}
	for i := 0; i < 512; i++ {
		id := crypto.Hash([]byte{byte(i), byte(i >> 8)})
		ids = append(ids, id)
		sizes[id] = 100
	}
	all := func(crypto.ID) bool { return true }
	// n/m partitions the packs.
	total := 0
	for n := 1; n <= 3; n++ {
		got := (&Subset{N: n, M: 3}).choose(ids, sizes, all)
		for id := range got {
			if int(id[0])%3 != n-1 {
				t.Fatalf("%s in bucket %d", id.Short(), n)
			}
		}
		total += len(got)
	}
	if total != len(ids) {
		t.Fatalf("buckets cover %d of %d packs", total, len(ids))
	}
	if got := (&Subset{Fraction: 0.1}).choose(ids, sizes, all); len(got) != 52 {
		t.Fatalf("10%% chose %d packs", len(got))
	}
	// A size is a lower bound (restic's meaning): 1050 bytes of 100-byte
	// packs read 11 of them.
	if got := (&Subset{Bytes: 1050}).choose(ids, sizes, all); len(got) != 11 {
		t.Fatalf("1050 bytes chose %d packs", len(got))
	}
	// 10M of a repository whose data packs are 16 MiB each reads one data
	// pack, never only the small tree packs.
	big := map[crypto.ID]int64{}
	isData := func(id crypto.ID) bool { return id[0]%8 == 0 }
	for _, id := range ids {
		big[id] = 2 << 10
		if isData(id) {
			big[id] = 16 << 20
		}
	}
	got := (&Subset{Bytes: 10 << 20}).choose(ids, big, isData)
	if len(got) != 1 {
		t.Fatalf("10M of 16 MiB data packs chose %d packs", len(got))
	}
	for id := range got {
		if !isData(id) {
			t.Fatal("10M chose a tree pack instead of a data pack")
		}
	}
	if got := (*Subset)(nil).choose(ids, sizes, all); len(got) != len(ids) {
		t.Fatal("nil subset is not everything")
	}
}

// TestCheckReadDataSubset reads each half of the packs by "n/2". Pack ids
// are random (every seal has a fresh nonce), so the expected counts come
// from the stored ids: a fixed expectation failed about once in 128 runs,
// when all eight packs fell into one half.
func TestCheckReadDataSubset(t *testing.T) {
	f := newChkFixture(t)
	want := [2]int{}
	for _, name := range f.be.names(backend.PackFile) {
		id, err := crypto.ParseID(name)
		if err != nil {
			t.Fatal(err)
		}
		want[int(id[0])%2]++
	}
	for n := 1; n <= 2; n++ {
		res := f.check(t, CheckOptions{ReadData: true, Subset: &Subset{N: n, M: 2}})
		if !res.OK() || res.PacksRead != want[n-1] || res.Packs != want[0]+want[1] {
			t.Fatalf("subset %d/2 read %d of %d packs, want %d of %d", n, res.PacksRead, res.Packs, want[n-1], want[0]+want[1])
		}
		if res.PacksRead > 0 && res.BytesRead == 0 {
			t.Fatalf("subset %d/2 read %d packs and no bytes", n, res.PacksRead)
		}
	}
}

func TestCheckCancelled(t *testing.T) {
	f := newChkFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Check(ctx, f.open(t), CheckOptions{ReadData: true}); err == nil {
		t.Fatal("cancelled check succeeded")
	}
}

// TestCheckReadDataCoversEveryByte backs the argument in Check's doc comment:
// without hashing whole packs, a changed byte anywhere in a pack (a blob's
// nonce, ciphertext or tag, the header, the trailer), a byte added or a byte
// cut off is found by --read-data, and the problem names the pack.
func TestCheckReadDataCoversEveryByte(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	victim := blobIDs(r, f.files[0]["/docs/a.bin"])[0]
	pid := r.Index().Lookup(pack.DataBlob, victim)[0].PackID
	h := backend.Handle{Type: backend.PackFile, Name: pid.String()}
	var orig []byte
	f.be.mutate(h, func(b []byte) []byte { orig = append([]byte(nil), b...); return b })

	positions := map[int]bool{0: true, len(orig) - 1: true}
	for i := 0; i < 4; i++ {
		positions[len(orig)-1-i] = true
	}
	for i := 0; i < len(orig); i += 97 {
		positions[i] = true
	}
	for _, e := range r.Index().Lookup(pack.DataBlob, victim) {
		positions[int(e.Offset)] = true
		positions[int(e.Offset+e.Length)-1] = true
	}
	type change struct {
		name string
		fn   func([]byte) []byte
	}
	var changes []change
	for p := range positions {
		changes = append(changes, change{fmt.Sprintf("flip byte %d of %d", p, len(orig)), func(b []byte) []byte { b[p] ^= 0x01; return b }})
	}
	changes = append(changes,
		change{"append a byte", func(b []byte) []byte { return append(b, 0) }},
		change{"cut the last byte", func(b []byte) []byte { return b[:len(b)-1] }},
	)
	for _, c := range changes {
		f.be.mutate(h, func([]byte) []byte { return c.fn(append([]byte(nil), orig...)) })
		res := f.check(t, CheckOptions{ReadData: true})
		named := false
		for _, p := range errorsOf(res) {
			named = named || (p.Pack != nil && *p.Pack == pid)
		}
		if !named {
			dumpProblems(t, res)
			t.Fatalf("%s: no error names pack %s", c.name, pid.Short())
		}
	}
	f.be.mutate(h, func([]byte) []byte { return orig })
	if res := f.check(t, CheckOptions{ReadData: true}); !res.OK() {
		dumpProblems(t, res)
		t.Fatal("the restored pack does not check")
	}
}
