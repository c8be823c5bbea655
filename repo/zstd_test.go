package repo

import (
	"bytes"
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestDefaultEncoder: the default level's frames (the C library's where
// the build has cgo) decode with klauspost's decoder to what was encoded,
// whatever room the caller gives, keeping what dst held before.
func TestDefaultEncoder(t *testing.T) {
	enc, err := newEncoder("default")
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()

	rng := rand.New(rand.NewSource(1))
	random := make([]byte, 1<<20)
	rng.Read(random)
	text := bytes.Repeat([]byte("func (r *Repository) SaveBlob(ctx context.Context) error {\n"), 20000)
	prefix := []byte("nonce-like prefix of 24 b")
	for _, src := range [][]byte{nil, []byte("x"), text[:100], text[:100_000], text, random, append(bytes.Repeat(text, 3), random...)} {
		for _, room := range []string{"none", "exact", "plenty"} {
			t.Run(fmt.Sprintf("%d bytes, %s", len(src), room), func(t *testing.T) {
				var dst []byte
				switch room {
				case "none":
					dst = append([]byte(nil), prefix...)
				case "exact":
					dst = append(make([]byte, 0, len(prefix)+compressBound(len(src))), prefix...)
				case "plenty":
					dst = append(make([]byte, 0, 2*len(src)+1024), prefix...)
				}
				out := enc.EncodeAll(src, dst)
				if !bytes.Equal(out[:len(prefix)], prefix) {
					t.Fatalf("prefix lost: %q", out[:len(prefix)])
				}
				if room == "exact" && &out[0] != &dst[0] {
					t.Errorf("encoder grew a buffer with room for compressBound(%d)", len(src))
				}
				if n := len(out) - len(prefix); n > compressBound(len(src)) {
					t.Errorf("frame of %d bytes for %d, over compressBound", n, len(src))
				}
				got, err := dec.DecodeAll(out[len(prefix):], nil)
				if err != nil || !bytes.Equal(got, src) {
					t.Fatalf("decoded %d bytes, %v; want the %d encoded", len(got), err, len(src))
				}
			})
		}
	}
}

// TestDefaultEncoderConcurrent encodes from many goroutines at once (run
// it with -race).
func TestDefaultEncoderConcurrent(t *testing.T) {
	enc, err := newEncoder("")
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := bytes.Repeat([]byte(fmt.Sprintf("goroutine %d writes this line; ", g)), 10000+g)
			for range 20 {
				out := enc.EncodeAll(src, nil)
				got, err := dec.DecodeAll(out, nil)
				if err != nil || !bytes.Equal(got, src) {
					t.Errorf("goroutine %d: round trip failed: %v", g, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
