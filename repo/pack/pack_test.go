package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand"
	"testing"

	"dj/repo/crypto"
)

func buildPack(t *testing.T, k *crypto.Key, n int) ([]byte, [][]byte, []Blob) {
	t.Helper()
	var out bytes.Buffer
	w := NewStreamWriter(k, &out)
	var plains [][]byte
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < n; i++ {
		p := make([]byte, rng.Intn(5000))
		rng.Read(p)
		plains = append(plains, p)
		id := k.BlobID(p)
		typ := DataBlob
		if i%3 == 0 {
			typ = TreeBlob
		}
		if err := w.Add(typ, id, SealBlob(k, nil, typ, id, p), false, len(p)); err != nil {
			t.Fatal(err)
		}
	}
	packID, size, blobs, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	data := out.Bytes()
	if packID != crypto.Hash(data) || size != int64(len(data)) {
		t.Fatalf("Finish reports id %s, size %d; the bytes hash to %s, size %d", packID.Short(), size, crypto.Hash(data).Short(), len(data))
	}
	return data, plains, blobs
}

func TestRoundTrip(t *testing.T) {
	k, _ := crypto.NewRandomKey()
	for _, n := range []int{0, 1, 17} {
		data, plains, written := buildPack(t, k, n)
		got, err := ParseTail(k, data, int64(len(data)))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(got) != n {
			t.Fatalf("n=%d: got %d entries", n, len(got))
		}
		for i, b := range got {
			if b != written[i] {
				t.Fatalf("entry %d: %+v != %+v", i, b, written[i])
			}
			p, err := OpenBlob(k, nil, b.Type, b.ID, data[b.Offset:b.Offset+b.Length])
			if err != nil || !bytes.Equal(p, plains[i]) || int(b.PlainLength) != len(p) {
				t.Fatalf("blob %d: %v", i, err)
			}
		}
	}
}

func TestCorruptionDetected(t *testing.T) {
	k, _ := crypto.NewRandomKey()
	data, _, blobs := buildPack(t, k, 5)
	hdrStart := int(blobs[4].Offset + blobs[4].Length)
	// Any flipped byte in the header or its length is detected.
	for i := hdrStart; i < len(data); i++ {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := ParseTail(k, bad, int64(len(bad))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: got %v", i, err)
		}
	}
	// Truncation is detected.
	for _, cut := range []int{1, 4, 100, len(data) - 1} {
		bad := data[:len(data)-cut]
		if _, err := ParseTail(k, bad, int64(len(bad))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut %d: got %v", cut, err)
		}
	}
	// A flipped byte in a blob fails that blob only.
	bad := append([]byte(nil), data...)
	bad[blobs[1].Offset+3] ^= 1
	for i, b := range blobs {
		_, err := OpenBlob(k, nil, b.Type, b.ID, bad[b.Offset:b.Offset+b.Length])
		if (i == 1) != (err != nil) {
			t.Fatalf("blob %d: err %v", i, err)
		}
	}
	// A blob opened as the wrong type or id fails.
	b := blobs[0]
	if _, err := OpenBlob(k, nil, DataBlob, b.ID, data[b.Offset:b.Offset+b.Length]); err == nil && b.Type != DataBlob {
		t.Fatal("type not bound")
	}
	if _, err := OpenBlob(k, nil, b.Type, blobs[1].ID, data[b.Offset:b.Offset+b.Length]); err == nil {
		t.Fatal("id not bound")
	}
}

func FuzzParseTail(f *testing.F) {
	k, _ := crypto.KeyFromMaster(make([]byte, 32))
	var out bytes.Buffer
	w := NewStreamWriter(k, &out)
	_ = w.Add(DataBlob, crypto.ID{1}, SealBlob(k, nil, DataBlob, crypto.ID{1}, []byte("x")), false, 1)
	if _, _, _, err := w.Finish(); err != nil {
		f.Fatal(err)
	}
	f.Add(out.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseTail(k, b, int64(len(b)))
	})
}

// FuzzParseHeaderPlain fuzzes the header decoder behind the seal: the
// header bytes are sealed with the key (FuzzParseTail's mutations mostly
// fail authentication and never reach the entries), then parsed as the
// tail of a pack with dataLen bytes of blobs. Whatever the entries say,
// the parse never panics, and what it accepts tiles the data exactly.
func FuzzParseHeaderPlain(f *testing.F) {
	k, _ := crypto.KeyFromMaster(make([]byte, 32))
	one := appendEntry(nil, Blob{Type: DataBlob, ID: crypto.ID{1}, Length: crypto.Overhead + 1, PlainLength: 1})
	f.Add(one, uint32(crypto.Overhead+1))
	f.Add(append(one, appendEntry(nil, Blob{Type: TreeBlob, Compressed: true, ID: crypto.ID{2}, Length: 100, PlainLength: 1 << 20})...), uint32(crypto.Overhead+101))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen uint32) {
		tail := k.Seal(nil, hdr, []byte(headerAD))
		tail = binary.LittleEndian.AppendUint32(tail, uint32(len(tail)))
		packSize := int64(dataLen) + int64(len(tail))
		blobs, err := ParseTail(k, tail, packSize)
		if err != nil {
			return
		}
		var off int64
		for i, b := range blobs {
			if int64(b.Offset) != off || b.Length < crypto.Overhead || b.PlainLength > MaxBlobSize || b.Type > PaddingBlob {
				t.Fatalf("entry %d accepted: %+v at %d", i, b, off)
			}
			off += int64(b.Length)
		}
		if off != int64(dataLen) {
			t.Fatalf("entries cover %d bytes of %d", off, dataLen)
		}
	})
}
