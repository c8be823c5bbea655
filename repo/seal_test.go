package repo

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"dj/backend/mem"
	"dj/repo/pack"
)

func TestLooksRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog; "), 1<<20/45)
	halves := append(random(512<<10), text[:512<<10]...)
	// Bytes that take half the values only: entropy 7 bits, compressible.
	seven := random(1 << 20)
	for i := range seven {
		seven[i] &= 0x7f
	}
	// A little text anywhere in random bytes (a small file in a tar).
	island := random(1 << 20)
	copy(island[300<<10:], text[:40<<10])
	tail := random(1<<20 + 1000)
	copy(tail[len(tail)-40<<10:], text)
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"random 1 MiB", random(1 << 20), true},
		{"random 8 MiB", random(8 << 20), true},
		{"random below the minimum length", random(randomMinLen - 1), false},
		{"text", text, false},
		{"zeros", make([]byte, 1<<20), false},
		{"half random, half text", halves, false},
		{"random with 40 KiB of text inside", island, false},
		{"random with 40 KiB of text at the end", tail, false},
		{"7 bits per byte", seven, false},
	} {
		if got := looksRandom(tc.b); got != tc.want {
			t.Errorf("%s: looksRandom = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRandomBlobsStoredPlain: random content is stored without compression,
// compressible content compressed, and both load back.
func TestRandomBlobsStoredPlain(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t, mem.New())
	rng := rand.New(rand.NewSource(2))
	random := make([]byte, 1<<20)
	rng.Read(random)
	text := bytes.Repeat([]byte("all work and no play makes jack a dull boy\n"), 1<<20/43)
	for _, tc := range []struct {
		name           string
		plain          []byte
		wantCompressed bool
	}{{"random", random, false}, {"text", text, true}} {
		id, _, err := r.SaveBlob(ctx, pack.DataBlob, tc.plain)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		pbs := r.idx.Lookup(pack.DataBlob, id)
		if len(pbs) != 1 {
			t.Fatalf("%s: blob in the index %d times", tc.name, len(pbs))
		}
		if pbs[0].Compressed != tc.wantCompressed {
			t.Errorf("%s: stored compressed = %v, want %v", tc.name, pbs[0].Compressed, tc.wantCompressed)
		}
		got, err := r.LoadBlob(ctx, id, nil)
		if err != nil || !bytes.Equal(got, tc.plain) {
			t.Fatalf("%s: load: %v, equal %v", tc.name, err, bytes.Equal(got, tc.plain))
		}
	}
}
