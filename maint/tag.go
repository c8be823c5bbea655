package maint

import (
	"context"
	"errors"
	"fmt"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

// TagOptions tune ChangeTags.
type TagOptions struct {
	// Snapshots names the snapshots to change ("latest", ids or id
	// prefixes); empty means every snapshot that passes Filter (see
	// SelectSnapshots).
	Snapshots []string
	Filter    snapshot.Filter
	// With Replace, Set replaces every snapshot's tags (an empty Set
	// removes them all); otherwise Add and Remove change them. Replace
	// excludes Add and Remove.
	Replace bool
	Set     []string
	Add     []string
	Remove  []string
	Logf    func(format string, args ...any)
}

// TagChange is one snapshot whose tags changed: its file Old was replaced
// by New (restic's JSON names).
type TagChange struct {
	Old crypto.ID `json:"old_snapshot_id"`
	New crypto.ID `json:"new_snapshot_id"`
}

// TagResult reports what ChangeTags did.
type TagResult struct {
	Selected int
	Changed  []TagChange
	// Unreadable snapshot files were skipped.
	Unreadable []repo.SnapshotProblem
}

// ErrNoTagChange means TagOptions ask for nothing.
var ErrNoTagChange = errors.New("nothing to do: give --set, --add or --remove")

// ErrTagConflict means TagOptions combine Replace with Add or Remove.
var ErrTagConflict = errors.New("--set and --add/--remove cannot be given at the same time")

// NewTags returns the tags of a snapshot tagged old after the change
// opts describe, and whether they differ from old. Add appends tags not
// present yet, Remove drops every copy of a tag (moving the last tag into
// its place, as restic does); Set (with Replace) replaces the list, without
// duplicates.
func NewTags(old []string, opts TagOptions) ([]string, bool) {
	var out []string
	has := func(t string) bool {
		for _, x := range out {
			if x == t {
				return true
			}
		}
		return false
	}
	if opts.Replace {
		for _, t := range opts.Set {
			if !has(t) {
				out = append(out, t)
			}
		}
	} else {
		out = append(out, old...)
		for _, t := range opts.Add {
			if !has(t) {
				out = append(out, t)
			}
		}
		// A removed tag's place is taken by the last tag, as in restic,
		// so that both leave the tags in the same order.
		for _, r := range opts.Remove {
			for i := 0; i < len(out); {
				if out[i] != r {
					i++
					continue
				}
				out[i] = out[len(out)-1]
				out = out[:len(out)-1]
			}
		}
	}
	if len(out) != len(old) {
		return out, true
	}
	for i := range out {
		if out[i] != old[i] {
			return out, true
		}
	}
	return out, false
}

// ChangeTags changes the tags of the selected snapshots. A snapshot whose
// tags change is saved as a new snapshot file, with Original set to the
// snapshot's id unless it was already set (so it names the snapshot as
// first written), and then its old file is removed; snapshots whose tags
// stay the same are not touched. On an error the result reports the
// snapshots changed so far.
func ChangeTags(ctx context.Context, r *repo.Repository, opts TagOptions) (*TagResult, error) {
	if opts.Replace && (len(opts.Add) > 0 || len(opts.Remove) > 0) {
		return nil, ErrTagConflict
	}
	if !opts.Replace && len(opts.Add) == 0 && len(opts.Remove) == 0 {
		return nil, ErrNoTagChange
	}
	logf := logfOrDiscard(opts.Logf)
	snaps, problems, err := loadSelected(ctx, r, opts.Snapshots, opts.Filter)
	if err != nil {
		return nil, err
	}
	res := &TagResult{Selected: len(snaps), Unreadable: problems}
	for _, sn := range snaps {
		tags, changed := NewTags(sn.Tags, opts)
		if !changed {
			logf("snapshot %s: tags unchanged\n", sn.ID.Short())
			continue
		}
		ns := *sn
		ns.ID = crypto.ID{}
		ns.Tags = tags
		if ns.Original == nil {
			orig := sn.ID
			ns.Original = &orig
		}
		if err := r.SaveSnapshot(ctx, &ns); err != nil {
			return res, fmt.Errorf("snapshot %s: %w", sn.ID.Short(), err)
		}
		if ns.ID != sn.ID {
			if err := r.RemoveSnapshot(ctx, sn.ID); err != nil {
				return res, fmt.Errorf("snapshot %s saved as %s, but the old file cannot be removed: %w", sn.ID.Short(), ns.ID.Short(), err)
			}
		}
		logf("snapshot %s saved as %s\n", sn.ID.Short(), ns.ID.Short())
		res.Changed = append(res.Changed, TagChange{Old: sn.ID, New: ns.ID})
	}
	return res, nil
}
