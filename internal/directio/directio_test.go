package directio

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestResidentFraction: a file just read is cached, one dropped from the
// cache is not.
func TestResidentFraction(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		t.Fatal(err)
	}
	if fr := ResidentFraction(f, 8<<20, 8, 1<<20); fr < 0.9 {
		t.Fatalf("a file just written and read is %.0f%% resident", 100*fr)
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{1, Align - 1, Align, 3*Align + 17} {
		b := AlignedBuffer(n)
		if len(b) != n || cap(b) != n || !IsAligned(b, int64(n)) {
			t.Fatalf("AlignedBuffer(%d): len %d cap %d aligned %v", n, len(b), cap(b), IsAligned(b, int64(n)))
		}
	}
}
