package archiver

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"dj/internal/directio"
)

// TestDirectReader reads files of awkward sizes through O_DIRECT (where the
// test directory's file system supports it, else through the cache after
// the fallback) and gets exactly their bytes.
func TestDirectReader(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, directio.Align - 1, directBlock, directBlock + 1, 2*directBlock + 12345, 3 * directBlock, 5*directBlock + directio.Align} {
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, want, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = f
		d := startDirectReader(f)
		if d != nil {
			r = d
		} else {
			t.Logf("size %d: no O_DIRECT on this file system", size)
		}
		// Read in odd pieces, as the chunker might.
		var got bytes.Buffer
		buf := make([]byte, 100003)
		for {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("size %d: read %d bytes that differ from the file", size, got.Len())
		}
		if d != nil {
			d.Close()
		}
		f.Close()
	}
}

// TestDirectReaderCloseEarly stops a reader in the middle of a file: the
// read-ahead goroutine ends and Close does not hang.
func TestDirectReaderCloseEarly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 3*directBlock), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := startDirectReader(f)
	if d == nil {
		t.Skip("no O_DIRECT on this file system")
	}
	if _, err := d.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	d.Close()
}
