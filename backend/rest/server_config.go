// The per-user and per-repository policy of dj serve (--users-config), and
// files that are read again when they change.

package rest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Policy is the per-user and per-repository configuration of a
// multi-repository server, read from a JSON file (see LoadPolicy):
//
//	{
//	  "users": {
//	    "ann": {"append_only": true, "max_size": "10G"},
//	    "bob": {"max_size": 5368709120}
//	  },
//	  "repos": {
//	    "ann/laptop": {"max_size": "2G"},
//	    "shared": {"append_only": true}
//	  }
//	}
//
// A user's max_size bounds the bytes under /<user>/ (the user's own
// repositories with --private-repos); a repository's bounds the bytes of
// that repository (its path under --path without the outer slashes, "" or
// "/" for the repository at the root). append_only makes the server
// append-only for that user's requests, or for every request to that
// repository. Unknown keys are refused, so that a typo cannot go unnoticed.
type Policy struct {
	Users map[string]Limits `json:"users"`
	Repos map[string]Limits `json:"repos"`
}

// Limits is the policy of one user or repository.
type Limits struct {
	// AppendOnly refuses every deletion but of locks, and every overwrite.
	AppendOnly bool `json:"append_only"`
	// MaxSize bounds the bytes stored; 0 means no limit.
	MaxSize Size `json:"max_size"`
}

// Size is a byte count, written in JSON as a number of bytes or as a
// string with a binary unit: "500M", "10G", "2TiB".
type Size int64

// UnmarshalJSON accepts a number or a string with a unit.
func (s *Size) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		n, err := ParseSize(str)
		if err != nil {
			return err
		}
		*s = Size(n)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("invalid size %s: want bytes or a string like \"10G\"", b)
	}
	*s = Size(n)
	return nil
}

// ParseSize parses a byte count with an optional binary unit: 100, 10K,
// 5M, 1G, 2T (a trailing B or iB is allowed).
func ParseSize(str string) (int64, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(str)), "IB"), "B")
	mult := int64(1)
	if s != "" {
		if i := strings.IndexByte("KMGT", s[len(s)-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q", str)
	}
	return n * mult, nil
}

// ReadPolicy parses a policy (see Policy).
func ReadPolicy(data []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	repos := make(map[string]Limits, len(p.Repos))
	for k, v := range p.Repos {
		key := strings.Trim(k, "/")
		if key != "" {
			if _, code := splitRepoPath("/" + key + "/"); code != 0 {
				return nil, fmt.Errorf("invalid repository path %q", k)
			}
		}
		if _, dup := repos[key]; dup {
			return nil, fmt.Errorf("repository %q listed twice", key)
		}
		repos[key] = v
	}
	p.Repos = repos
	return &p, nil
}

// LoadPolicy reads the policy file at path.
func LoadPolicy(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users config: %w", err)
	}
	p, err := ReadPolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// reloadInterval is how often a watched file is looked at (one stat).
const reloadInterval = 500 * time.Millisecond

// watchedFile holds what was parsed from a file and parses the file again
// when its size or modification time changes. A file that fails to parse
// is reported and the previous contents stay in force.
type watchedFile[T any] struct {
	path string
	load func(path string) (T, error)
	logf func(format string, args ...any)

	mu      sync.Mutex
	cur     T
	size    int64
	mtime   time.Time
	checked time.Time
}

// watchFile loads path once (that must succeed) and returns its watcher.
func watchFile[T any](path string, load func(string) (T, error), logf func(string, ...any)) (*watchedFile[T], error) {
	v, err := load(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	return &watchedFile[T]{path: path, load: load, logf: logf, cur: v,
		size: fi.Size(), mtime: fi.ModTime(), checked: time.Now()}, nil
}

// get returns the file's contents, read again if the file changed.
func (w *watchedFile[T]) get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if now.Sub(w.checked) < reloadInterval {
		return w.cur
	}
	w.checked = now
	fi, err := os.Stat(w.path)
	if err != nil || (fi.Size() == w.size && fi.ModTime().Equal(w.mtime)) {
		return w.cur
	}
	w.size, w.mtime = fi.Size(), fi.ModTime()
	v, err := w.load(w.path)
	if err != nil {
		w.logf("reload %s: %v (keeping the previous contents)", w.path, err)
		return w.cur
	}
	w.cur = v
	w.logf("reloaded %s", w.path)
	return w.cur
}
