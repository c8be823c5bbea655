package index

import (
	"bytes"
	"errors"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	"dj/repo/crypto"
	"dj/repo/pack"
)

func randID(rng *rand.Rand) crypto.ID {
	var id crypto.ID
	rng.Read(id[:])
	return id
}

func randomFile(rng *rand.Rand, packs, blobs int) *File {
	f := &File{Supersedes: []crypto.ID{randID(rng)}}
	for i := 0; i < packs; i++ {
		p := FilePack{ID: randID(rng)}
		var off uint32
		for j := 0; j < blobs; j++ {
			l := uint32(rng.Intn(1<<20) + 100)
			p.Blobs = append(p.Blobs, pack.Blob{Type: pack.BlobType(j % 2), Compressed: j%3 == 0, ID: randID(rng), Offset: off, Length: l, PlainLength: l - 40})
			off += l
		}
		f.Packs = append(f.Packs, p)
	}
	return f
}

func TestFileRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	f := randomFile(rng, 5, 50)
	f.Pending = randomFile(rng, 2, 3).Packs
	f.Pending[0].MarkedAt = 1234567890
	got, err := DecodeFile(f.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, f) {
		t.Fatal("round trip differs")
	}
}

func TestFileCorruption(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	b := randomFile(rng, 2, 3).Encode()
	for n := 0; n < len(b); n++ {
		if _, err := DecodeFile(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := DecodeFile(append(b, 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatal("trailing byte accepted")
	}
}

func FuzzDecodeFile(f *testing.F) {
	f.Add(randomFile(rand.New(rand.NewSource(4)), 1, 2).Encode())
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = DecodeFile(b) })
}

func TestIndexLookup(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	x := New()
	f := randomFile(rng, 20, 100)
	for i, p := range f.Packs {
		x.AddPack(p.ID, p.Blobs)
		if i == 10 {
			x.Compact()
		}
	}
	for _, p := range f.Packs {
		for _, b := range p.Blobs {
			got := x.Lookup(b.Type, b.ID)
			if len(got) != 1 || got[0].Blob != b || got[0].PackID != p.ID {
				t.Fatalf("lookup %v: %+v", b.ID, got)
			}
			other := pack.DataBlob
			if b.Type == pack.DataBlob {
				other = pack.TreeBlob
			}
			if x.Has(other, b.ID) {
				t.Fatal("found under the other type")
			}
		}
	}
	if x.Has(pack.DataBlob, randID(rng)) {
		t.Fatal("found unknown blob")
	}
	if x.Len() != 2000 || len(x.Packs()) != 20 {
		t.Fatalf("len %d packs %d", x.Len(), len(x.Packs()))
	}
	// Duplicates in two packs are both found.
	b := f.Packs[0].Blobs[0]
	x.AddPack(randID(rng), []pack.Blob{b})
	if len(x.Lookup(b.Type, b.ID)) != 2 {
		t.Fatal("duplicate not listed")
	}
}

// TestIndexLookupSizes looks up every blob of sorted tables of many sizes,
// with ids that crowd the ends of the id space (where the bucket table's
// edges are) and ids stored under both types.
func TestIndexLookupSizes(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, n := range []int{0, 1, 2, 3, 4, 5, 8, 9, 63, 64, 65, 1000, 70000} {
		x := New()
		var blobs []pack.Blob
		for i := 0; i < n; i++ {
			id := randID(rng)
			switch i % 5 {
			case 1:
				clear(id[:7]) // near the start of the id space
			case 2:
				for k := range 7 {
					id[k] = 0xff // near the end
				}
			}
			blobs = append(blobs, pack.Blob{Type: pack.DataBlob, ID: id, Length: uint32(i + 1)})
			if i%7 == 3 {
				blobs = append(blobs, pack.Blob{Type: pack.TreeBlob, ID: id, Length: uint32(i + 2)})
			}
		}
		x.AddPack(randID(rng), blobs)
		x.Compact()
		for _, b := range blobs {
			got := x.Lookup(b.Type, b.ID)
			if len(got) != 1 || got[0].Blob != b {
				t.Fatalf("n=%d: lookup %v %v: %+v", n, b.Type, b.ID, got)
			}
		}
		for i := 0; i < 100; i++ {
			if id := randID(rng); x.Has(pack.DataBlob, id) {
				t.Fatalf("n=%d: found unknown blob %v", n, id)
			}
		}
		var zero, ones crypto.ID
		for k := range ones {
			ones[k] = 0xff
		}
		if x.Has(pack.DataBlob, zero) || x.Has(pack.DataBlob, ones) {
			t.Fatalf("n=%d: found the first or last possible id", n)
		}
	}
}

func BenchmarkIndexHas(b *testing.B) {
	rng := rand.New(rand.NewSource(9))
	x := New()
	f := randomFile(rng, 1000, 1000)
	for _, p := range f.Packs {
		x.AddPack(p.ID, p.Blobs)
	}
	x.Compact()
	ids := make([]crypto.ID, 0, 1<<16)
	for len(ids) < cap(ids) {
		p := f.Packs[rng.Intn(len(f.Packs))]
		ids = append(ids, p.Blobs[rng.Intn(len(p.Blobs))].ID)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := ids[i%len(ids)]
		if !x.Has(pack.DataBlob, id) && !x.Has(pack.TreeBlob, id) {
			b.Fatal("not found")
		}
	}
}

// TestAddFilesEqualsAddFile: loading index files at once gives the same
// index as adding them one by one, duplicates and pending entries included.
func TestAddFilesEqualsAddFile(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	ids := make([]crypto.ID, 500)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(rng.Uint32())
		}
	}
	var files []*File
	for f := 0; f < 5; f++ {
		file := &File{}
		for p := 0; p < 4; p++ {
			pk := FilePack{ID: ids[rng.Intn(len(ids))]}
			for b := 0; b < 50; b++ {
				typ := pack.DataBlob
				if b%7 == 0 {
					typ = pack.TreeBlob
				}
				pk.Blobs = append(pk.Blobs, pack.Blob{ID: ids[rng.Intn(len(ids))], Type: typ, Offset: uint32(b * 10), Length: 10, PlainLength: uint32(b)})
			}
			file.Packs = append(file.Packs, pk)
		}
		files = append(files, file)
	}
	one, all := New(), New()
	extra := []pack.Blob{{ID: ids[0], Type: pack.DataBlob, Length: 3}}
	one.AddPack(ids[1], extra) // a pending entry before the load
	all.AddPack(ids[1], extra)
	for _, f := range files {
		one.AddFile(f)
	}
	one.Compact()
	all.AddFiles(files)
	for _, id := range ids {
		for _, typ := range []pack.BlobType{pack.DataBlob, pack.TreeBlob} {
			a, b := one.Lookup(typ, id), all.Lookup(typ, id)
			// Two copies in one pack may come in either order.
			byPlace := func(x, y PackedBlob) int {
				if c := bytes.Compare(x.PackID[:], y.PackID[:]); c != 0 {
					return c
				}
				return int(x.Offset) - int(y.Offset)
			}
			slices.SortFunc(a, byPlace)
			slices.SortFunc(b, byPlace)
			if !slices.Equal(a, b) {
				t.Fatalf("%v %s: one by one %v, at once %v", typ, id.Short(), a, b)
			}
		}
	}
}
