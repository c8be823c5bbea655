// Temporary files: staged by a writer, published by rename (SaveTemp),
// and cleaned up when their writer died.

package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"dj/backend"
)

// RemoveStaleTemp removes temporary files (left by uploads that were
// killed) whose last change is older than age, and returns how many it
// removed. Younger ones may belong to a save that is still running.
func (l *Local) RemoveStaleTemp(ctx context.Context, age time.Duration) (int, error) {
	n := 0
	cutoff := time.Now().Add(-age)
	err := filepath.WalkDir(l.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a vanished directory is no reason to stop
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), ".") || !strings.Contains(d.Name(), backend.TempMarker) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil
		}
		if os.Remove(p) == nil {
			n++
		}
		return nil
	})
	return n, err
}

// CreateTemp creates an empty temporary file in the directory of files of
// type t, for a file that is written piece by piece and then moved into
// place with SaveTemp. Its name marks it as temporary: List skips it and
// RemoveStaleTemp removes it if the writer dies.
func (l *Local) CreateTemp(ctx context.Context, t backend.FileType) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !t.Valid() || t == backend.ConfigFile {
		return nil, fmt.Errorf("create temporary file: invalid file type %q: %w", t, fs.ErrInvalid)
	}
	dir := filepath.Join(l.dir, string(t))
	f, err := os.CreateTemp(dir, ".new"+backend.TempMarker+"*")
	if errors.Is(err, fs.ErrNotExist) {
		if mkErr := os.MkdirAll(dir, l.dirMode); mkErr != nil {
			return nil, fmt.Errorf("create temporary file in %s: %w", dir, describe(mkErr))
		}
		f, err = os.CreateTemp(dir, ".new"+backend.TempMarker+"*")
	}
	if err != nil {
		return nil, fmt.Errorf("create temporary file in %s: %w", dir, describe(err))
	}
	return f, nil
}

// SaveTemp stores a file made by CreateTemp under h, as Save would store
// its content: it is synced, made read-only and renamed into place, and the
// directory is synced. f is closed in every case, and removed on error.
func (l *Local) SaveTemp(ctx context.Context, h backend.Handle, f *os.File) (err error) {
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
			err = fmt.Errorf("save %v in %s: %w", h, l.dir, describe(err))
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(h)
	if err != nil {
		return err
	}
	if filepath.Dir(filepath.Dir(tmp)) != filepath.Clean(l.dir) && filepath.Dir(tmp) != filepath.Clean(l.dir) {
		return fmt.Errorf("temporary file %s is not in the repository: %w", tmp, fs.ErrInvalid)
	}
	if err := finishTemp(f, l.fileMode); err != nil {
		return err
	}
	dir := filepath.Dir(p)
	err = os.Rename(tmp, p)
	if errors.Is(err, fs.ErrNotExist) {
		if mkErr := os.MkdirAll(dir, l.dirMode); mkErr != nil {
			return mkErr
		}
		err = os.Rename(tmp, p)
	}
	if err != nil {
		return err
	}
	l.packs.invalidate(p)
	// The file is in place; a failing directory sync is reported (the
	// deferred removal of the temporary name then finds nothing).
	return syncDir(dir)
}
