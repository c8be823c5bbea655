// Package snapshot defines a snapshot: the record of one backup run, naming
// the root tree and describing when, where and what was backed up. The JSON
// field names are restic's, so scripts that read restic's output carry over.
package snapshot

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"dj/repo/crypto"
)

// Summary holds the statistics of the backup run that made a snapshot.
type Summary struct {
	BackupStart         time.Time `json:"backup_start"`
	BackupEnd           time.Time `json:"backup_end"`
	FilesNew            uint64    `json:"files_new"`
	FilesChanged        uint64    `json:"files_changed"`
	FilesUnmodified     uint64    `json:"files_unmodified"`
	DirsNew             uint64    `json:"dirs_new"`
	DirsChanged         uint64    `json:"dirs_changed"`
	DirsUnmodified      uint64    `json:"dirs_unmodified"`
	DataBlobs           uint64    `json:"data_blobs"`
	TreeBlobs           uint64    `json:"tree_blobs"`
	DataAdded           uint64    `json:"data_added"`        // plaintext bytes of new blobs
	DataAddedPacked     uint64    `json:"data_added_packed"` // stored bytes of new blobs
	TotalFilesProcessed uint64    `json:"total_files_processed"`
	TotalBytesProcessed uint64    `json:"total_bytes_processed"`
	Errors              uint64    `json:"errors,omitempty"`
}

// Snapshot is the record of one backup.
type Snapshot struct {
	Time           time.Time  `json:"time"`
	Parent         *crypto.ID `json:"parent,omitempty"`
	Tree           crypto.ID  `json:"tree"`
	Paths          []string   `json:"paths"`
	Hostname       string     `json:"hostname,omitempty"`
	Username       string     `json:"username,omitempty"`
	UID            uint32     `json:"uid,omitempty"`
	GID            uint32     `json:"gid,omitempty"`
	Tags           []string   `json:"tags,omitempty"`
	Original       *crypto.ID `json:"original,omitempty"` // set when a snapshot was rewritten by repair
	ProgramVersion string     `json:"program_version,omitempty"`
	Summary        *Summary   `json:"summary,omitempty"`

	// ID is the storage ID of the snapshot file; it is not part of the
	// encoding and is set by whoever loads or saves the snapshot.
	ID crypto.ID `json:"-"`
}

// HasTag reports whether the snapshot carries tag.
func (s *Snapshot) HasTag(tag string) bool {
	for _, t := range s.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// HasPaths reports whether the snapshot's paths are exactly paths, in any order.
func (s *Snapshot) HasPaths(paths []string) bool {
	if len(paths) != len(s.Paths) {
		return false
	}
	a := append([]string(nil), s.Paths...)
	b := append([]string(nil), paths...)
	sort.Strings(a)
	sort.Strings(b)
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Filter selects snapshots. Empty fields match everything. Tags entries are
// alternatives; each entry may be a comma-separated list of tags that must
// all be present (restic's semantics).
type Filter struct {
	Hosts []string
	Tags  []string
	Paths []string // each must be among the snapshot's paths
}

// Matches reports whether s passes the filter.
func (f Filter) Matches(s *Snapshot) bool {
	if len(f.Hosts) > 0 {
		ok := false
		for _, h := range f.Hosts {
			if s.Hostname == h {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Tags) > 0 {
		ok := false
		for _, alt := range f.Tags {
			all := true
			for _, t := range strings.Split(alt, ",") {
				if t != "" && !s.HasTag(t) {
					all = false
				}
			}
			if all {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	for _, p := range f.Paths {
		found := false
		for _, sp := range s.Paths {
			if filepath.Clean(sp) == filepath.Clean(p) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Apply returns the snapshots that pass the filter, in the order given.
func (f Filter) Apply(list []*Snapshot) []*Snapshot {
	var out []*Snapshot
	for _, s := range list {
		if f.Matches(s) {
			out = append(out, s)
		}
	}
	return out
}

// SortByTime orders snapshots oldest first; equal times are ordered by ID so
// the order is deterministic.
func SortByTime(list []*Snapshot) {
	sort.SliceStable(list, func(i, j int) bool {
		if !list[i].Time.Equal(list[j].Time) {
			return list[i].Time.Before(list[j].Time)
		}
		return list[i].ID.String() < list[j].ID.String()
	})
}

// ErrNotFound is returned when no snapshot matches a reference.
var ErrNotFound = errors.New("no matching snapshot")

// ErrAmbiguous is returned when an ID prefix matches several snapshots.
var ErrAmbiguous = errors.New("snapshot ID prefix is ambiguous")

// Find resolves a reference among list: "latest" (the newest snapshot), a
// full ID, or a unique ID prefix.
func Find(list []*Snapshot, ref string) (*Snapshot, error) {
	if ref == "" {
		return nil, fmt.Errorf("%w: empty snapshot ID", ErrNotFound)
	}
	if ref == "latest" {
		var best *Snapshot
		for _, s := range list {
			if best == nil || s.Time.After(best.Time) ||
				(s.Time.Equal(best.Time) && s.ID.String() > best.ID.String()) {
				best = s
			}
		}
		if best == nil {
			return nil, fmt.Errorf("%w: the repository has no snapshots", ErrNotFound)
		}
		return best, nil
	}
	ref = strings.ToLower(ref)
	var found *Snapshot
	for _, s := range list {
		if strings.HasPrefix(s.ID.String(), ref) {
			if found != nil && found.ID != s.ID {
				return nil, fmt.Errorf("%w: %q", ErrAmbiguous, ref)
			}
			found = s
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, ref)
	}
	return found, nil
}
