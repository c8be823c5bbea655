package repo_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// TestOpenPackedBoundsClaimedPlainLength: a (hostile) index entry that
// claims a huge plain length for a small compressed blob is refused
// without allocating that length.
func TestOpenPackedBoundsClaimedPlainLength(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	data := bytes.Repeat([]byte("abcdefgh"), 4000)
	id, _, _ := r.SaveBlob(ctx, pack.DataBlob, data)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	pb := r.Index().Lookup(pack.DataBlob, id)[0]
	if !pb.Compressed {
		t.Fatal("blob not compressed")
	}
	sealed, err := be.Load(ctx, backendHandle(pb.PackID), int64(pb.Offset), int(pb.Length))
	if err != nil {
		t.Fatal(err)
	}
	pb.PlainLength = pack.MaxBlobSize
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = r.OpenPacked(pb, sealed, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Fatalf("allocated %d MiB for a blob of %d bytes", d>>20, len(sealed))
	}
}

func backendHandle(packID crypto.ID) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: packID.String()}
}

// TestIsZeroBlobBoundsClaimedLength: a data blob the index claims to be
// larger than any chunk is not a zero blob, and finding that out does not
// allocate its claimed length.
func TestIsZeroBlobBoundsClaimedLength(t *testing.T) {
	r := repo.TestRepository(t, nopClose{mem.New()})
	var id, packID crypto.ID
	id[0], packID[0] = 1, 2
	r.Index().AddFile(&index.File{Packs: []index.FilePack{{ID: packID, Blobs: []pack.Blob{{Type: pack.DataBlob, ID: id, Length: 100, PlainLength: pack.MaxBlobSize}}}}})
	if n, ok := r.BlobSize(id); !ok || n != pack.MaxBlobSize {
		t.Fatalf("BlobSize: %d %v", n, ok)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	zero := r.IsZeroBlob(id)
	runtime.ReadMemStats(&after)
	if zero {
		t.Fatal("IsZeroBlob: true")
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Fatalf("IsZeroBlob allocated %d MiB", d>>20)
	}
}

// TestOpenSkipsForeignKey: a key file copied in from another repository
// that opens with the same password (and sorts first) is passed over for
// the repository's own key; it made the repository unusable ("load
// config: repository data is corrupt").
func TestOpenSkipsForeignKey(t *testing.T) {
	ctx := context.Background()
	beA, beB := mem.New(), mem.New()
	a := repo.TestRepository(t, nopClose{beA})
	repo.TestRepository(t, nopClose{beB})
	var foreign []byte
	err := beB.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		var err error
		foreign, err = beB.Load(ctx, backend.Handle{Type: backend.KeyFile, Name: fi.Name}, 0, 0)
		return err
	})
	if err != nil || foreign == nil {
		t.Fatalf("load B's key: %v", err)
	}
	if err := beA.Save(ctx, backend.Handle{Type: backend.KeyFile, Name: strings.Repeat("0", 64)}, foreign); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, nopClose{beA}, repo.TestPassword, repo.Options{})
	if err != nil {
		t.Fatalf("open with a foreign key first: %v", err)
	}
	defer r.Close()
	if r.Config().ID != a.Config().ID || r.KeyID() != a.KeyID() {
		t.Fatalf("opened config %s with key %s, want %s with %s", r.Config().ID, r.KeyID().Short(), a.Config().ID, a.KeyID().Short())
	}
	// With only the foreign key the config's error is reported.
	beA.Remove(ctx, backend.Handle{Type: backend.KeyFile, Name: a.KeyID().String()})
	if _, err := repo.Open(ctx, nopClose{beA}, repo.TestPassword, repo.Options{}); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("open with only a foreign key: %v, want ErrCorrupt", err)
	}
}

// TestIsZeroBlobSizes: zero blobs of the sizes runs of zeros are stored in
// are recognized by their id alone; a zero blob of another size is not
// (it is read as any blob), and a blob of data never is.
func TestIsZeroBlobSizes(t *testing.T) {
	ctx := context.Background()
	r := repo.TestRepository(t, nopClose{mem.New()})
	_, _, maxSize := r.ChunkerSizes()
	for _, c := range []struct {
		name string
		data []byte
		want bool
	}{
		{"small zeros", make([]byte, 1000), true},
		{"zeros, 64 KiB", make([]byte, 64<<10), true},
		{"zeros, 3 pages", make([]byte, 3*4096), true},
		{"zeros, the chunker's maximum", make([]byte, maxSize), true},
		{"zeros, another size", make([]byte, 100_001), false},
		{"data, 2 pages", bytes.Repeat([]byte{1}, 8192), false},
	} {
		id, _, err := r.SaveBlob(ctx, pack.DataBlob, c.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil { // the index knows the blob
			t.Fatal(err)
		}
		if got := r.IsZeroBlob(id); got != c.want {
			t.Errorf("%s: IsZeroBlob = %v, want %v", c.name, got, c.want)
		}
	}
	// Small files of many sizes do not crowd out a disk image's chunks.
	var small []crypto.ID
	for i := range 100 {
		id, _, err := r.SaveBlob(ctx, pack.DataBlob, bytes.Repeat([]byte{2}, 100+i))
		if err != nil {
			t.Fatal(err)
		}
		small = append(small, id)
	}
	image, _, err := r.SaveBlob(ctx, pack.DataBlob, make([]byte, 32*4096))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range small {
		if r.IsZeroBlob(id) {
			t.Fatal("a small blob of data is a zero blob")
		}
	}
	if !r.IsZeroBlob(image) {
		t.Error("zeros, 32 pages, after 100 small sizes: IsZeroBlob = false, want true")
	}
}
