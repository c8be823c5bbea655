package maint

import (
	"context"

	"dj/repo"
	"dj/repo/snapshot"
)

// SelectSnapshots picks the snapshots a command acts on, as restic does:
// with refs, each ref names one snapshot ("latest" is the newest snapshot
// that passes filter; an id or unique id prefix is looked up among all
// snapshots, the filter not applied), in the order given and without
// duplicates; without refs, every snapshot that passes filter, in the
// order of all.
func SelectSnapshots(all []*snapshot.Snapshot, refs []string, filter snapshot.Filter) ([]*snapshot.Snapshot, error) {
	if len(refs) == 0 {
		return filter.Apply(all), nil
	}
	out, errs := snapshot.FindAll(all, refs, filter)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return out, nil
}

// snapshotLister lists the snapshots of a repository (*repo.Repository).
type snapshotLister interface {
	Snapshots(ctx context.Context) ([]*snapshot.Snapshot, []repo.SnapshotProblem, error)
}

// loadSelected lists the snapshots of r and picks those that refs and
// filter select (SelectSnapshots); problems are the snapshot files that
// could not be read.
func loadSelected(ctx context.Context, r snapshotLister, refs []string, filter snapshot.Filter) (selected []*snapshot.Snapshot, problems []repo.SnapshotProblem, err error) {
	all, problems, err := r.Snapshots(ctx)
	if err != nil {
		return nil, nil, err
	}
	selected, err = SelectSnapshots(all, refs, filter)
	if err != nil {
		return nil, nil, err
	}
	return selected, problems, nil
}

// FilterIgnored reports whether refs make SelectSnapshots ignore a
// non-empty filter (no ref is "latest"), which restic warns about.
func FilterIgnored(refs []string, filter snapshot.Filter) bool {
	if len(refs) == 0 || (len(filter.Hosts) == 0 && len(filter.Tags) == 0 && len(filter.Paths) == 0) {
		return false
	}
	for _, ref := range refs {
		if ref == "latest" {
			return false
		}
	}
	return true
}
