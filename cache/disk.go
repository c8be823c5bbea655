package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"dj/backend"
)

// Disk is a backend decorator that keeps a local copy of the files every
// command reads whole (index and snapshot files) of a remote repository,
// so that opening it again reads them from the local disk. Cached files
// are named by their SHA-256 like the originals, and every cached copy is
// checked against its name when read: a damaged copy is fetched again.
type Disk struct {
	backend.Backend
	dir string
}

// cachedTypes are the file types Disk keeps; they are write-once and
// named by their content.
var cachedTypes = map[backend.FileType]bool{backend.IndexFile: true, backend.SnapshotFile: true}

// NewDisk returns be with an on-disk cache in dir (created on demand);
// dir should be specific to one repository.
func NewDisk(be backend.Backend, dir string) *Disk {
	return &Disk{Backend: be, dir: dir}
}

func (d *Disk) path(h backend.Handle) string {
	return filepath.Join(d.dir, string(h.Type), h.Name)
}

// Load serves whole index and snapshot files from the cache.
func (d *Disk) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	if !cachedTypes[h.Type] || offset != 0 || length != 0 || len(h.Name) != 64 {
		return d.Backend.Load(ctx, h, offset, length)
	}
	p := d.path(h)
	if b, err := os.ReadFile(p); err == nil {
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) == h.Name {
			return b, nil
		}
		_ = os.Remove(p) // damaged copy: fetch again
	}
	b, err := d.Backend.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	d.store(p, b)
	return b, nil
}

// store writes a cache file atomically; failures only cost speed.
func (d *Disk) store(p string, b []byte) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
}

// Remove deletes the file and its cached copy.
func (d *Disk) Remove(ctx context.Context, h backend.Handle) error {
	if cachedTypes[h.Type] {
		if err := os.Remove(d.path(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return d.Backend.Remove(ctx, h)
}

// Prune removes cached files that the repository no longer has.
func (d *Disk) Prune(ctx context.Context) error {
	for t := range cachedTypes {
		live := map[string]bool{}
		if err := d.Backend.List(ctx, t, func(fi backend.FileInfo) error { live[fi.Name] = true; return nil }); err != nil {
			return err
		}
		entries, _ := os.ReadDir(filepath.Join(d.dir, string(t)))
		for _, e := range entries {
			if !live[e.Name()] {
				_ = os.Remove(filepath.Join(d.dir, string(t), e.Name()))
			}
		}
	}
	return nil
}

// Unwrap returns the wrapped backend (see backend.As).
func (d *Disk) Unwrap() backend.Backend { return d.Backend }
