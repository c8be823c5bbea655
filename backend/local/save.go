// Writing files: atomically and durably, with plain-words errors for a full
// or read-only disk.

package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"dj/backend"
)

// Save stores data under h atomically: it is written to a temporary file in
// the target directory, synced, made read-only and renamed over the target,
// and the directory is synced. On any error, including a full disk, the
// temporary file is removed and nothing else changes.
func (l *Local) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(h)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if err := l.save(ctx, p, data); err != nil {
		return fmt.Errorf("save %v in %s: %w", h, l.dir, describe(err))
	}
	l.packs.invalidate(p) // a replaced file must be read anew
	return nil
}

func (l *Local) save(ctx context.Context, p string, data []byte) (err error) {
	dir := filepath.Dir(p)
	pattern := "." + filepath.Base(p) + backend.TempMarker + "*"
	f, err := l.createTemp(dir, pattern)
	if errors.Is(err, fs.ErrNotExist) && dir != l.dir {
		// A subdirectory is missing (a repository served before Init, or
		// removed by hand): create it and try again.
		if mkErr := os.MkdirAll(dir, l.dirMode); mkErr != nil {
			return mkErr
		}
		f, err = l.createTemp(dir, pattern)
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	for rest := data; len(rest) > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(rest), writeChunk)
		if _, err := f.Write(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	if err := finishTemp(f, l.fileMode); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	// The file is in place; a failing directory sync is still reported,
	// but the file must not be removed (it may be a retried upload's).
	return syncDir(dir)
}

// finishTemp makes a written temporary file durable and read-only, and
// closes it.
func finishTemp(f tempFile, mode os.FileMode) error {
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	return f.Close()
}

// describe adds a plain-words hint to errors a user can act on.
func describe(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("disk full: %w", err)
	case errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("disk quota exceeded: %w", err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("file system is read-only: %w", err)
	}
	return err
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		// Some file systems cannot sync directories; nothing more to do.
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
