package cache

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// DirInfo describes the cache of one repository under a cache base
// directory.
type DirInfo struct {
	// ID is the repository id, the name of the directory.
	ID string
	// Dir is the directory.
	Dir string
	// LastUsed is when a dj command last opened the repository with this
	// cache (the directory's modification time).
	LastUsed time.Time
	// Size is the bytes of the files in it (0 unless asked for).
	Size int64
	// Legacy marks a cache an older dj kept per location string; no dj
	// uses it any more.
	Legacy bool
}

// isRepoID reports whether name looks like a repository id (64 hex
// digits); legacy reports the 16 hex digits of an older dj's caches.
func isRepoID(name string) (ok, legacy bool) {
	if _, err := hex.DecodeString(name); err != nil {
		return false, false
	}
	return len(name) == 64, len(name) == 16
}

// Dirs lists the repository caches under base, most recently used first;
// with size it also adds up their files. A base that does not exist holds
// none.
func Dirs(base string, size bool) ([]DirInfo, error) {
	entries, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list caches: %w", err)
	}
	var out []DirInfo
	for _, e := range entries {
		ok, legacy := isRepoID(e.Name())
		if !e.IsDir() || !ok && !legacy {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		d := DirInfo{ID: e.Name(), Dir: filepath.Join(base, e.Name()), LastUsed: fi.ModTime(), Legacy: legacy}
		if size {
			d.Size = dirSize(d.Dir)
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Old reports whether a cache counts as old at now for maxAge: not used
// for longer, or kept by an older dj.
func (d DirInfo) Old(now time.Time, maxAge time.Duration) bool {
	return d.Legacy || now.Sub(d.LastUsed) > maxAge
}

// RemoveOld removes the caches under base that are old at now (see Old)
// and returns those it removed.
func RemoveOld(base string, now time.Time, maxAge time.Duration) ([]DirInfo, error) {
	dirs, err := Dirs(base, false)
	if err != nil {
		return nil, err
	}
	var removed []DirInfo
	for _, d := range dirs {
		if !d.Old(now, maxAge) {
			continue
		}
		if err := os.RemoveAll(d.Dir); err != nil {
			return removed, fmt.Errorf("remove cache %s: %w", d.Dir, err)
		}
		removed = append(removed, d)
	}
	return removed, nil
}
