package maint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/fault"
	"dj/maint"
	"dj/repo"
)

// TestPruneRefusesSuspectListings: a listing that comes back empty or
// short without an error (restic #4612: rclone turned a listing error
// into an empty list, and prune wiped the repository) makes prune refuse
// and change nothing, whichever listing it is.
func TestPruneRefusesSuspectListings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []fault.Rule
	}{
		{"one snapshot listed once", []fault.Rule{{Op: fault.List, Type: backend.SnapshotFile, Mode: fault.ModeShortList, AfterItems: 1}}},
		// The fault battery's case: the same cut twice in a row.
		{"one snapshot listed twice", []fault.Rule{{Op: fault.List, Type: backend.SnapshotFile, Mode: fault.ModeShortList, AfterItems: 1, Times: 2}}},
		{"one snapshot listed four times", []fault.Rule{{Op: fault.List, Type: backend.SnapshotFile, Mode: fault.ModeShortList, AfterItems: 1, Times: 4}}},
		{"no snapshots listed", []fault.Rule{{Op: fault.List, Type: backend.SnapshotFile, Mode: fault.ModeShortList, Times: -1}}},
		{"no packs listed", []fault.Rule{{Op: fault.List, Type: backend.PackFile, Mode: fault.ModeShortList, Times: -1}}},
		{"one pack listed", []fault.Rule{{Op: fault.List, Type: backend.PackFile, Mode: fault.ModeShortList, AfterItems: 1, Times: -1}}},
		{"no snapshots and no index listed", []fault.Rule{
			{Op: fault.List, Type: backend.SnapshotFile, Mode: fault.ModeShortList, Times: -1},
			{Op: fault.List, Type: backend.IndexFile, Mode: fault.ModeShortList, Times: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			a, b := f.blob(40<<10), f.blob(40<<10)
			sa := f.snapshot(f.open(), a)
			sb := f.snapshot(f.open(), b)
			before := f.packCount()
			fb := fault.New(keepOpen{f.be})
			for _, r := range tc.rules {
				fb.Add(r)
			}
			r, err := repo.Open(ctx, fault.Opaque(fb), repo.TestPassword, repo.Options{PackSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			// Instant delete and a time far ahead: only the guard stands
			// between the listing and the deletion of everything.
			opts := maint.PruneOptions{InstantDelete: true, Now: time.Now().Add(48 * time.Hour)}
			plan, err := maint.PlanPrune(ctx, r, opts)
			if err == nil {
				_, err = plan.Execute(ctx, r, opts)
			}
			if !errors.Is(err, maint.ErrSuspectListing) {
				t.Errorf("prune: %v, want ErrSuspectListing", err)
			}
			if n := f.packCount(); n != before {
				t.Errorf("packs %d -> %d", before, n)
			}
			f.restoreOK(sa, a)
			f.restoreOK(sb, b)
		})
	}
}

// TestPruneNoSnapshotsAllowed: with AllowNoSnapshots (forget removing the
// last snapshots, or the user's flag) prune empties the repository.
func TestPruneNoSnapshotsAllowed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	sn := f.snapshot(f.open(), f.blob(40<<10))
	if err := f.open().RemoveSnapshot(ctx, sn.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := maint.PlanPrune(ctx, f.open(), maint.PruneOptions{InstantDelete: true}); !errors.Is(err, maint.ErrSuspectListing) {
		t.Fatalf("prune without snapshots: %v", err)
	}
	prune(t, f.open(), maint.PruneOptions{InstantDelete: true, AllowNoSnapshots: true})
	if n := f.packCount(); n != 0 {
		t.Errorf("%d packs left", n)
	}
}
