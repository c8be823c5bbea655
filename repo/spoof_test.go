package repo

import (
	"context"
	"errors"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo/pack"
)

// TestStoredContentCannotPoseAsMetadata: content a user backs up (which an
// attacker may choose) is sealed as a data blob bound to its type and id,
// so its stored bytes never open as a tree, or as a snapshot or index
// file, even when moved there (borg CVE-2016-10099, CVE-2023-36811).
func TestStoredContentCannotPoseAsMetadata(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t, mem.New())
	forged := []byte(`{"time":"2020-01-01T00:00:00Z","tree":"00","paths":["/"]}`)
	id, _, err := r.SaveBlob(ctx, pack.DataBlob, forged)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadTypedBlob(ctx, pack.TreeBlob, id, nil); err == nil {
		t.Fatal("a data blob loads as a tree")
	}
	locs := r.Index().Lookup(pack.DataBlob, id)
	if len(locs) != 1 {
		t.Fatalf("%d locations", len(locs))
	}
	pb := locs[0]
	data, err := r.Backend().Load(ctx, backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}, int64(pb.Offset), int(pb.Length))
	if err != nil {
		t.Fatal(err)
	}
	asTree := pb
	asTree.Type = pack.TreeBlob
	if _, err := r.OpenPacked(asTree, data, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("the sealed data blob opens as a tree blob: %v", err)
	}
	for _, ft := range []backend.FileType{backend.SnapshotFile, backend.IndexFile} {
		if _, err := r.openFile(ft, append([]byte{fileFormatV1}, data...)); err == nil {
			t.Errorf("the sealed data blob opens as a %s file", ft)
		}
	}
}
