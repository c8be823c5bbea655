package local

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"dj/backend"
)

// fullFile is a temporary file on a disk that has room for limit bytes.
type fullFile struct {
	*os.File
	limit   int
	failOn  string // "write", "sync" or "close"
	written int
}

func (f *fullFile) Write(p []byte) (int, error) {
	if f.failOn == "write" && f.written+len(p) > f.limit {
		n, _ := f.File.Write(p[:f.limit-f.written])
		f.written += n
		return n, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	n, err := f.File.Write(p)
	f.written += n
	return n, err
}

func (f *fullFile) Sync() error {
	if f.failOn == "sync" {
		return &fs.PathError{Op: "sync", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Sync()
}

func (f *fullFile) Close() error {
	err := f.File.Close()
	if f.failOn == "close" {
		return &fs.PathError{Op: "close", Path: f.Name(), Err: syscall.EDQUOT}
	}
	return err
}

func TestDiskFull(t *testing.T) {
	for _, failOn := range []string{"write", "sync", "close"} {
		t.Run(failOn, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			l, err := Create(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			l.createTemp = func(dir, pattern string) (tempFile, error) {
				f, err := os.CreateTemp(dir, pattern)
				if err != nil {
					return nil, err
				}
				return &fullFile{File: f, limit: 1000, failOn: failOn}, nil
			}
			h := backend.Handle{Type: backend.PackFile, Name: "aa" + strings.Repeat("0", 62)}
			err = l.Save(ctx, h, make([]byte, 5000))
			if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
				t.Fatalf("Save on a full disk: %v, want ENOSPC or EDQUOT", err)
			}
			if !strings.Contains(err.Error(), "disk full") && !strings.Contains(err.Error(), "quota") {
				t.Errorf("error %q does not say the disk is full", err)
			}
			if !strings.Contains(err.Error(), h.String()) {
				t.Errorf("error %q does not name the file", err)
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "data", "aa"))
			if len(entries) != 0 {
				t.Errorf("a partial file was left behind: %v", entries)
			}
		})
	}
}

// TestDiskFullTmpfs fills a real, small tmpfs. It needs root (mount) and
// is skipped elsewhere.
func TestDiskFullTmpfs(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	ctx := t.Context()
	l, err := Create(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.PackFile, Name: "bb" + strings.Repeat("0", 62)}
	err = l.Save(ctx, h, make([]byte, 4<<20))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Save of 4 MiB on a 2 MiB tmpfs: %v, want ENOSPC", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "data", "bb")); len(entries) != 0 {
		t.Errorf("a partial file was left behind: %v", entries)
	}
	// The space is free again: a small file fits.
	small := backend.Handle{Type: backend.PackFile, Name: "bb" + strings.Repeat("1", 62)}
	if err := l.Save(ctx, small, make([]byte, 1<<20)); err != nil {
		t.Errorf("Save after the failure: %v", err)
	}
}
