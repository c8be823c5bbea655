package repo

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"dj/backend/mem"
	"dj/repo/pack"
)

// TestVerifySealed: a blob whose stored form does not open (a flipped
// byte) or does not decompress to its plaintext (a compressor bug) is
// refused before it reaches a pack.
func TestVerifySealed(t *testing.T) {
	r := TestRepository(t, mem.New())
	text := bytes.Repeat([]byte("compressible text, "), 4000)
	random := make([]byte, 256<<10)
	rand.New(rand.NewSource(1)).Read(random)
	for _, plain := range [][]byte{text, random, []byte("tiny")} {
		id := r.BlobID(plain)
		sealed, compressed := r.compressAndSeal(pack.DataBlob, id, plain)
		if err := r.verifySealed(pack.DataBlob, id, sealed, compressed, plain); err != nil {
			t.Fatalf("good blob of %d bytes (compressed %v): %v", len(plain), compressed, err)
		}
		bad := append([]byte(nil), sealed...)
		bad[len(bad)/2] ^= 1
		if err := r.verifySealed(pack.DataBlob, id, bad, compressed, plain); !errors.Is(err, ErrCorrupt) {
			t.Errorf("flipped byte in a blob of %d bytes: %v, want ErrCorrupt", len(plain), err)
		}
		other := append([]byte(nil), plain...)
		other[0] ^= 1
		if err := r.verifySealed(pack.DataBlob, id, sealed, compressed, other); !errors.Is(err, ErrCorrupt) {
			t.Errorf("stored form of other bytes, %d bytes: %v, want ErrCorrupt", len(plain), err)
		}
	}
}

// BenchmarkVerifySealed measures the check before upload against the
// compression and sealing it follows (run by hand: go test -run X -bench VerifySealed ./repo).
func BenchmarkVerifySealed(b *testing.B) {
	r := TestRepository(b, mem.New())
	text := make([]byte, 1<<20)
	rng := rand.New(rand.NewSource(1))
	for i := range text {
		text[i] = "abcdefghij klmnopqrstuvwxyz\n"[rng.Intn(28)]
	}
	random := make([]byte, 1<<20)
	rng.Read(random)
	for _, c := range []struct {
		name  string
		plain []byte
	}{{"text", text}, {"random", random}} {
		id := r.BlobID(c.plain)
		b.Run(c.name+"/seal", func(b *testing.B) {
			b.SetBytes(int64(len(c.plain)))
			for i := 0; i < b.N; i++ {
				s, _ := r.compressAndSeal(pack.DataBlob, id, c.plain)
				r.putSealBuf(s)
			}
		})
		b.Run(c.name+"/verify", func(b *testing.B) {
			s, compressed := r.compressAndSeal(pack.DataBlob, id, c.plain)
			b.SetBytes(int64(len(c.plain)))
			for i := 0; i < b.N; i++ {
				if err := r.verifySealed(pack.DataBlob, id, s, compressed, c.plain); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCheckCompressed: a compressed form that does not decompress to the
// plaintext (a compressor bug) is refused before it is sealed.
func TestCheckCompressed(t *testing.T) {
	r := TestRepository(t, mem.New())
	text := bytes.Repeat([]byte("compressible text, "), 4000)
	id := r.BlobID(text)
	c := r.enc.EncodeAll(text, nil)
	if err := r.checkCompressed(pack.DataBlob, id, c, text); err != nil {
		t.Fatal(err)
	}
	other := append([]byte(nil), text...)
	other[100] ^= 1
	if err := r.checkCompressed(pack.DataBlob, id, c, other); !errors.Is(err, ErrCorrupt) {
		t.Errorf("compressed form of other bytes: %v", err)
	}
	if err := r.checkCompressed(pack.DataBlob, id, c[:len(c)/2], text); !errors.Is(err, ErrCorrupt) {
		t.Errorf("cut compressed form: %v", err)
	}
	if _, _, err := r.compressAndSealChecked(pack.DataBlob, id, text, true); err != nil {
		t.Fatal(err)
	}
}
