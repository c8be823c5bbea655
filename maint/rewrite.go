package maint

import (
	"context"
	"fmt"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// RewriteTag is added to every snapshot Rewrite writes, unless it removes
// the originals (restic's "rewrite" tag).
const RewriteTag = "rewrite"

// RewriteOptions tune Rewrite.
type RewriteOptions struct {
	// Snapshots names the snapshots to rewrite ("latest", ids or id
	// prefixes); empty means every snapshot that passes Filter (see
	// SelectSnapshots).
	Snapshots []string
	Filter    snapshot.Filter
	// Exclude reports whether the file or directory at path (as stored
	// in the snapshot: "/home/ann/x") is left out. A directory left out
	// goes with everything below it.
	Exclude func(path string) bool
	// Forget removes each original snapshot once its rewritten copy is
	// stored; the new snapshots then do not get RewriteTag.
	Forget bool
	// DryRun reports what would change and writes nothing.
	DryRun bool
	Logf   func(format string, args ...any)
}

// RewrittenSnapshot describes one snapshot that Rewrite changes.
type RewrittenSnapshot struct {
	Original crypto.ID `json:"original"`
	// New is the rewritten snapshot (nil in a dry run).
	New *crypto.ID `json:"new,omitempty"`
	// Excluded are the paths left out (a directory stands for everything
	// below it), in tree order.
	Excluded []string `json:"excluded"`
	// Removed is set when Forget removed the original.
	Removed bool `json:"removed"`
}

// RewriteResult reports what Rewrite did.
type RewriteResult struct {
	// Snapshots are the selected snapshots, in the order they were
	// looked at.
	Snapshots []*snapshot.Snapshot `json:"-"`
	// Rewritten are the selected snapshots that change; the others are
	// left alone.
	Rewritten []RewrittenSnapshot `json:"rewritten"`
	// Unreadable snapshot files were skipped.
	Unreadable []repo.SnapshotProblem `json:"-"`
	DryRun     bool                   `json:"dry_run"`
}

// Rewrite removes the files and directories that opts.Exclude names from
// the selected snapshots. For each snapshot that changes it writes new
// trees (only those on the way to an excluded node: unchanged subtrees
// keep their ids) and a new snapshot with the same time, host, paths,
// parent and tags, the tag "rewrite" unless Forget, Original set to the
// rewritten snapshot, and the summary's file and byte totals counted
// again. Snapshots that do not change are left alone.
//
// Everything is planned before anything is written, so a tree that cannot
// be loaded stops Rewrite with nothing changed. Then the new trees are
// stored (packs, then an index file), then the new snapshots, and only
// then, with Forget, are the originals removed.
//
// r must have its index loaded.
func Rewrite(ctx context.Context, r *repo.Repository, opts RewriteOptions) (*RewriteResult, error) {
	logf := logfOrDiscard(opts.Logf)
	snaps, problems, err := loadSelected(ctx, r, opts.Snapshots, opts.Filter)
	if err != nil {
		return nil, err
	}
	res := &RewriteResult{Snapshots: snaps, Rewritten: []RewrittenSnapshot{}, Unreadable: problems, DryRun: opts.DryRun}

	tw := newTreeRewriter(r)
	if opts.Exclude != nil {
		tw.keep = func(_ *tree.Node, path string) bool { return !opts.Exclude(path) }
	}
	var changed []*snapshot.Snapshot
	var plans []*treePlan
	for _, sn := range snaps {
		p, err := tw.plan(ctx, sn.Tree, "/")
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", sn.ID.Short(), err)
		}
		if !p.changed {
			logf("snapshot %s: no changes\n", sn.ID.Short())
			continue
		}
		rs := RewrittenSnapshot{Original: sn.ID, Excluded: []string{}}
		for _, c := range p.changes("/") {
			rs.Excluded = append(rs.Excluded, c.Path)
		}
		res.Rewritten = append(res.Rewritten, rs)
		changed = append(changed, sn)
		plans = append(plans, p)
	}
	if opts.DryRun || len(changed) == 0 {
		return res, nil
	}

	roots := make([]crypto.ID, len(changed))
	for i, p := range plans {
		if roots[i], err = tw.write(ctx, p); err != nil {
			return nil, fmt.Errorf("snapshot %s: write trees: %w", changed[i].ID.Short(), err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		return nil, fmt.Errorf("write rewritten trees: %w", err)
	}
	for i, sn := range changed {
		ns := *sn
		ns.ID = crypto.ID{}
		ns.Tree = roots[i]
		orig := sn.ID
		ns.Original = &orig
		ns.Tags = append([]string(nil), sn.Tags...)
		if !opts.Forget && !sn.HasTag(RewriteTag) {
			ns.Tags = append(ns.Tags, RewriteTag)
		}
		if sn.Summary != nil {
			sum := *sn.Summary
			sum.TotalFilesProcessed = plans[i].files
			sum.TotalBytesProcessed = plans[i].bytes
			ns.Summary = &sum
		}
		if err := r.SaveSnapshot(ctx, &ns); err != nil {
			return res, fmt.Errorf("snapshot %s: %w", sn.ID.Short(), err)
		}
		id := ns.ID
		res.Rewritten[i].New = &id
		logf("snapshot %s rewritten as %s\n", sn.ID.Short(), id.Short())
		if opts.Forget && id != sn.ID {
			if err := r.RemoveSnapshot(ctx, sn.ID); err != nil {
				return res, fmt.Errorf("snapshot %s rewritten as %s, but the original cannot be removed: %w", sn.ID.Short(), id.Short(), err)
			}
			res.Rewritten[i].Removed = true
		}
	}
	return res, nil
}
