package archiver

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"dj/backend/mem"
	"dj/repo"
)

// openFDs counts the open file descriptors of the process.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// TestBackupClosesEveryFile: the files the walker opens ahead are closed
// by their workers whether they are read (small, large, a hard link's first
// name) or not (the other names of a hard link), and a file that vanished
// after the walk is reported as os.Open reports it.
func TestBackupClosesEveryFile(t *testing.T) {
	ctx := context.Background()
	r := repo.TestRepository(t, mem.New())
	src := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	for i, size := range []int{0, 10, 100 << 10, directMinSize + 1} {
		b := make([]byte, size)
		rng.Read(b)
		p := filepath.Join(src, "f"+string(rune('a'+i)))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			if err := os.Link(p, p+"-link"+string(rune('0'+j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := openFDs(t)
	sn, err := Backup(ctx, r, []string{src}, Options{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Summary.FilesNew != 16 {
		t.Fatalf("%d new files, want 16", sn.Summary.FilesNew)
	}
	if after := openFDs(t); after > before {
		t.Fatalf("%d file descriptors open after the backup, %d before", after, before)
	}
}

func TestOpenForReadingAndFDReader(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	_, err := openForReading(missing)
	_, osErr := os.Open(missing)
	if err == nil || err.Error() != osErr.Error() {
		t.Fatalf("openForReading(missing) = %v, want %v", err, osErr)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("missing", link); err != nil {
		t.Fatal(err)
	}
	if _, err := openForReading(link); err == nil {
		t.Fatal("openForReading followed a symbolic link")
	}
	want := bytes.Repeat([]byte("0123456789"), 100000)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := openForReading(p)
	if err != nil {
		t.Fatal(err)
	}
	defer os.NewFile(uintptr(fd), p).Close()
	got, err := io.ReadAll(fdReader{fd: fd, path: p})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fdReader: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
}
