package maint

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

func TestStatsModes(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	ctx := context.Background()

	// Expected figures from the fixture's files.
	var restoreSize, nodes uint64
	contents := map[string]bool{}
	var uniqueSize, uniqueFiles uint64
	for _, files := range f.files {
		dirs := map[string]bool{}
		for p, data := range files {
			nodes++
			restoreSize += uint64(len(data))
			for d := p; ; {
				i := strings.LastIndex(d, "/")
				if i <= 0 {
					break
				}
				d = d[:i]
				dirs[d] = true
			}
			if !contents[string(data)] {
				contents[string(data)] = true
				uniqueFiles++
				uniqueSize += uint64(len(data))
			}
		}
		nodes += uint64(len(dirs))
	}
	// Data blobs in use, each once, and the trees.
	used := BlobSet{}
	for _, files := range f.files {
		for _, data := range files {
			for _, id := range blobIDs(r, data) {
				used[BlobRef{pack.DataBlob, id}] = struct{}{}
			}
		}
	}
	var dataPlain, stored, plain uint64
	for ref := range used {
		pb := r.Index().Lookup(ref.Type, ref.ID)[0]
		dataPlain += uint64(pb.PlainLength)
	}
	all, err := UsedBlobs(ctx, r, f.snaps)
	if err != nil {
		t.Fatal(err)
	}
	for ref := range all {
		pb := r.Index().Lookup(ref.Type, ref.ID)[0]
		stored += uint64(pb.Length)
		plain += uint64(pb.PlainLength)
	}

	tests := []struct {
		mode StatsMode
		want Stats
	}{
		{StatsRestoreSize, Stats{TotalSize: restoreSize, TotalFileCount: nodes, SnapshotsCount: 2}},
		{StatsFilesByContents, Stats{TotalSize: uniqueSize, TotalFileCount: uniqueFiles, SnapshotsCount: 2}},
		// Six paths with data (the empty file has no blobs); every blob is
		// unique per path.
		{StatsBlobsPerFile, Stats{TotalSize: uniqueSize, TotalFileCount: 6, TotalBlobCount: uint64(len(used)), SnapshotsCount: 2}},
	}
	for _, tt := range tests {
		got, err := ComputeStats(ctx, r, f.snaps, tt.mode)
		if err != nil {
			t.Fatalf("%s: %v", tt.mode, err)
		}
		if *got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.mode, *got, tt.want)
		}
	}

	raw, err := ComputeStats(ctx, r, f.snaps, StatsRawData)
	if err != nil {
		t.Fatal(err)
	}
	if raw.TotalBlobCount != uint64(len(all)) || raw.TotalSize != stored || raw.TotalUncompressedSize != plain ||
		raw.TotalFileCount != 0 || raw.RestoreSize != restoreSize || raw.SnapshotsCount != 2 {
		t.Fatalf("raw-data %+v; want %d blobs, %d stored, %d plain, restore %d", *raw, len(all), stored, plain, restoreSize)
	}
	if want := float64(restoreSize) / float64(dataPlain); raw.DedupRatio != want {
		t.Fatalf("dedup ratio %v, want %v", raw.DedupRatio, want)
	}
	if raw.CompressionRatio <= 0 || raw.CompressionRatio > 1.1 {
		// Random data does not compress; the stored size carries the
		// encryption overhead.
		t.Fatalf("compression ratio %v", raw.CompressionRatio)
	}

	// One snapshot: the first alone.
	one, err := ComputeStats(ctx, r, f.snaps[:1], StatsRestoreSize)
	if err != nil {
		t.Fatal(err)
	}
	if one.SnapshotsCount != 1 || one.TotalFileCount != 7 || one.TotalSize != 5000+4000+3100+11 {
		t.Fatalf("first snapshot: %+v", *one)
	}
	if _, err := ParseStatsMode("bogus"); err == nil {
		t.Fatal("bogus mode accepted")
	}
}

func TestStatsHardlinksCountOnce(t *testing.T) {
	ctx := context.Background()
	be := newChkBackend()
	r, err := repo.Init(ctx, be, chkPassword, chkOptions())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("linked content ", 10))
	id, _, _ := r.SaveBlob(ctx, pack.DataBlob, data)
	link := func(name string) *tree.Node {
		return &tree.Node{Name: name, Type: tree.File, Size: uint64(len(data)), Links: 3, Inode: 77, DeviceID: 5, Content: []crypto.ID{id}}
	}
	sub := &tree.Tree{Nodes: []*tree.Node{link("c"), {Name: "plain", Type: tree.File, Size: uint64(len(data)), Links: 1, Inode: 78, DeviceID: 5, Content: []crypto.ID{id}}}}
	subID, _, _ := r.SaveTree(ctx, sub)
	root := &tree.Tree{Nodes: []*tree.Node{link("a"), link("b"), {Name: "d", Type: tree.Dir, Mode: os.ModeDir | 0o755, Subtree: &subID}}}
	rootID, _, _ := r.SaveTree(ctx, root)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var snaps []*snapshot.Snapshot
	for i := 0; i < 2; i++ {
		sn := &snapshot.Snapshot{Time: time.Unix(int64(i), 0), Tree: rootID, Paths: []string{"/x"}}
		if err := r.SaveSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, sn)
	}
	st, err := ComputeStats(ctx, r, snaps, StatsRestoreSize)
	if err != nil {
		t.Fatal(err)
	}
	// Per snapshot: a, b, c are one inode (counted once), plain is its
	// own: 2 × size; nodes a, b, d, c, plain = 5.
	if want := (Stats{TotalSize: 2 * 2 * uint64(len(data)), TotalFileCount: 10, SnapshotsCount: 2}); *st != want {
		t.Fatalf("%+v, want %+v", *st, want)
	}
	byContent, err := ComputeStats(ctx, r, snaps, StatsFilesByContents)
	if err != nil {
		t.Fatal(err)
	}
	if byContent.TotalFileCount != 1 || byContent.TotalSize != uint64(len(data)) {
		t.Fatalf("files-by-contents %+v", *byContent)
	}
}

func TestStatsMissingTree(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	bogus := r.BlobID([]byte("no such tree"))
	sn := &snapshot.Snapshot{Tree: bogus, ID: bogus}
	for _, m := range StatsModes {
		if _, err := ComputeStats(context.Background(), r, []*snapshot.Snapshot{sn}, m); err == nil || !strings.Contains(err.Error(), bogus.Short()) {
			t.Fatalf("%s: err %v", m, err)
		}
	}
}
