// Quotas of dj serve: the bytes stored under directories of the served
// tree, counted once and kept up to date on every upload and deletion.

package rest

import (
	"dj/backend"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// errQuota marks an upload refused by a quota; the server answers 507
// with the error's text, which starts with "repository quota exceeded".
var errQuota = errors.New("repository quota exceeded")

// quotaBook tracks the bytes stored under directories that have a limit.
// A directory is measured (walked) the first time a limit on it is
// checked; from then on every change below it is added to its figure.
type quotaBook struct {
	mu   sync.Mutex
	used map[string]int64 // directory -> bytes of the regular files under it
}

func newQuotaBook() *quotaBook {
	return &quotaBook{used: make(map[string]int64)}
}

// quotaLimit bounds the bytes stored under dir.
type quotaLimit struct {
	dir  string
	max  int64
	what string // whose limit, for the error: "global", `user "ann"`, ...
}

// quotaScope is what a repository's uploads are checked against: the
// book, the repository's directory and the limits that apply to it.
type quotaScope struct {
	book   *quotaBook
	repo   string
	limits []quotaLimit
}

// reserve adds n bytes (negative: frees them) to the repository's
// figures, unless n > 0 would take a limited directory above its limit;
// then it changes nothing and returns an error wrapping errQuota.
func (q *quotaScope) reserve(n int64) error {
	b := q.book
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > 0 {
		for _, l := range q.limits {
			used, err := b.usageLocked(l.dir)
			if err != nil {
				return fmt.Errorf("measure %s: %w", l.dir, err)
			}
			if used+n > l.max {
				return fmt.Errorf("%w (%s limit %s, %s in use, upload of %s)",
					errQuota, l.what, formatBytes(l.max), formatBytes(used), formatBytes(n))
			}
		}
	}
	b.addLocked(q.repo, n)
	return nil
}

// add records n more bytes (negative: fewer) in the repository.
func (q *quotaScope) add(n int64) {
	q.book.mu.Lock()
	defer q.book.mu.Unlock()
	q.book.addLocked(q.repo, n)
}

// usageLocked returns the bytes under dir, walking it the first time.
func (b *quotaBook) usageLocked(dir string) (int64, error) {
	if n, ok := b.used[dir]; ok {
		return n, nil
	}
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		// Uploads being received (temporary files) count once published.
		if d.Type().IsRegular() && !strings.Contains(d.Name(), backend.TempMarker) {
			fi, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	b.used[dir] = total
	return total, nil
}

// addLocked adds n to every measured directory that holds repo.
func (b *quotaBook) addLocked(repo string, n int64) {
	for dir := range b.used {
		if within(repo, dir) {
			b.used[dir] += n
		}
	}
}

// within reports whether path is dir or lies below it (both clean).
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, string(os.PathSeparator))+string(os.PathSeparator))
}

// formatBytes writes n in binary units, as "1.5 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i])
}
