package local

import (
	"context"
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
