package index

import (
	"errors"
	"math/rand"
	"reflect"
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
