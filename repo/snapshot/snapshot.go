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
	BackupStart time.Time `json:"backup_start"`
	BackupEnd   time.Time `json:"backup_end"`
	Counts
	Errors uint64 `json:"errors,omitempty"`
}

// Counts are a backup run's counts of files, directories, blobs and bytes,
// with restic's JSON names and order: the snapshot's summary and the
// backup command's JSON summary message both carry them.
type Counts struct {
	FilesNew            uint64 `json:"files_new"`
	FilesChanged        uint64 `json:"files_changed"`
	FilesUnmodified     uint64 `json:"files_unmodified"`
	DirsNew             uint64 `json:"dirs_new"`
	DirsChanged         uint64 `json:"dirs_changed"`
	DirsUnmodified      uint64 `json:"dirs_unmodified"`
	DataBlobs           uint64 `json:"data_blobs"`
	TreeBlobs           uint64 `json:"tree_blobs"`
	DataAdded           uint64 `json:"data_added"`        // plaintext bytes of new blobs
	DataAddedPacked     uint64 `json:"data_added_packed"` // stored bytes of new blobs
	TotalFilesProcessed uint64 `json:"total_files_processed"`
	TotalBytesProcessed uint64 `json:"total_bytes_processed"`
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

// TagList is a set of tags that must all be present on a snapshot, written
// on the command line as "a,b" (restic's taglist). A list holding the empty
// tag selects snapshots without any tag (an empty --tag value).
type TagList []string

// ParseTagList splits one option value such as "a,b" at commas, trimming
// white space around each tag, as restic does. Empty tags are kept: the
// empty string gives the list [""], which selects untagged snapshots.
func ParseTagList(s string) TagList {
	var l TagList
	for _, t := range strings.Split(s, ",") {
		l = append(l, strings.TrimSpace(t))
	}
	return l
}

// String formats the list as restic does: "[a, b]".
func (l TagList) String() string { return "[" + strings.Join(l, ", ") + "]" }

// Matches reports whether sn carries every tag of l, as restic's HasTags
// decides it: the tags are looked at in order, an empty tag selects a
// snapshot without tags (and nothing else), and an empty list selects every
// snapshot.
func (l TagList) Matches(sn *Snapshot) bool {
	for _, tag := range l {
		if tag == "" && len(sn.Tags) == 0 {
			return true
		}
		if !sn.HasTag(tag) {
			return false
		}
	}
	return true
}

// Filter selects snapshots as restic's --host, --tag and --path options do.
// An empty field selects every snapshot.
type Filter struct {
	// Hosts are alternatives: the snapshot's hostname must be one of them.
	Hosts []string
	// Tags are alternatives, each one --tag value as given on the command
	// line: a comma-separated [TagList] whose tags must all be present
	// ("a,b"). So {"a,b", "c"} selects snapshots that carry both a and b,
	// or c; {""} selects snapshots without tags.
	Tags []string
	// Paths must all be among the snapshot's paths (compared after
	// filepath.Clean).
	Paths []string
}

// TagLists returns f.Tags parsed with [ParseTagList].
func (f Filter) TagLists() []TagList {
	var out []TagList
	for _, t := range f.Tags {
		out = append(out, ParseTagList(t))
	}
	return out
}

// Empty reports whether the filter selects every snapshot.
func (f Filter) Empty() bool {
	return len(f.Hosts) == 0 && len(f.Tags) == 0 && len(f.Paths) == 0
}

// Matches reports whether s passes the filter.
func (f Filter) Matches(s *Snapshot) bool {
	if len(f.Hosts) > 0 && !containsString(f.Hosts, s.Hostname) {
		return false
	}
	if len(f.Tags) > 0 {
		ok := false
		for _, alt := range f.Tags {
			if ParseTagList(alt).Matches(s) {
				ok = true
				break
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
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
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
			return nil, fmt.Errorf("%w for \"latest\" (no snapshot to choose from)", ErrNotFound)
		}
		return best, nil
	}
	ref = strings.ToLower(ref)
	var found *Snapshot
	for _, s := range list {
		if strings.HasPrefix(s.ID.String(), ref) {
			if found != nil && found.ID != s.ID {
				return nil, fmt.Errorf("%w: %q matches several snapshots", ErrAmbiguous, ref)
			}
			found = s
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w for ID %q", ErrNotFound, ref)
	}
	return found, nil
}

// FindAll resolves refs as restic's commands that take snapshot IDs do:
// "latest" is the newest snapshot that passes f, any other reference is a
// full ID or a unique ID prefix among all of list (f does not apply to it).
// Each snapshot is returned once, in the order of the first reference that
// named it. A reference that resolves to nothing gives one error in errs
// (wrapping [ErrNotFound] or [ErrAmbiguous]) and is otherwise skipped.
func FindAll(list []*Snapshot, refs []string, f Filter) (found []*Snapshot, errs []error) {
	seen := make(map[*Snapshot]bool)
	for _, ref := range refs {
		from := list
		if ref == "latest" {
			from = f.Apply(list)
		}
		sn, err := Find(from, ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !seen[sn] {
			seen[sn] = true
			found = append(found, sn)
		}
	}
	return found, errs
}
