package maint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"dj/backend"
	"dj/maint"
	"dj/repo"
)

// retaining refuses to remove packs and index files until a given time, as
// S3 Object Lock does.
type retaining struct {
	backend.Backend
	until time.Time
}

func (r retaining) Close() error { return nil }

func (r retaining) Remove(ctx context.Context, h backend.Handle) error {
	if h.Type == backend.PackFile || h.Type == backend.IndexFile {
		return &backend.RetentionError{Handle: h, Until: r.until}
	}
	return r.Backend.Remove(ctx, h)
}

// TestPruneUnderRetention shows prune on a storage that refuses deletes
// (object lock): it completes, says what stays and until when, the
// repository stays readable, and a prune after the retention deletes what
// is left.
func TestPruneUnderRetention(t *testing.T) {
	f := newFixture(t)
	keep := f.blob(100 << 10)
	drop := f.blob(100 << 10)
	sn1 := f.snapshot(f.open(), keep)
	sn2 := f.snapshot(f.open(), drop)
	ctx := context.Background()
	if err := f.open().RemoveSnapshot(ctx, sn2.ID); err != nil {
		t.Fatal(err)
	}
	before := f.packCount()
	until := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	locked, err := repo.Open(ctx, retaining{f.be, until}, repo.TestPassword, repo.Options{PackSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer locked.Close()
	opts := maint.PruneOptions{InstantDelete: true}
	plan, err := maint.PlanPrune(ctx, locked, opts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := plan.Execute(ctx, locked, opts)
	if err != nil {
		t.Fatalf("prune under retention failed: %v", err)
	}
	if st.PacksRetained == 0 || st.PacksDeleted != 0 || !st.RetainedUntil.Equal(until) || f.packCount() != before {
		t.Fatalf("retained %d deleted %d until %v (want %v), packs %d -> %d", st.PacksRetained, st.PacksDeleted, st.RetainedUntil, until, before, f.packCount())
	}
	if st.IndexFilesRetained == 0 {
		t.Fatalf("no superseded index file was retained: %+v", st)
	}
	// The repository reads as before: the new index supersedes the old
	// files that stay.
	f.restoreOK(sn1, keep)
	if _, err := f.open().LoadIndex(ctx, false); err != nil {
		t.Fatal(err)
	}

	// After the retention, a prune deletes the packs no index lists.
	opts = maint.PruneOptions{KeepDelete: maint.DefaultKeepDelete, Now: time.Now().Add(31 * 24 * time.Hour)}
	later := prune(t, f.open(), opts)
	if len(later.Unindexed) == 0 || f.packCount() >= before {
		t.Fatalf("after the retention: unindexed %d, packs %d -> %d", len(later.Unindexed), before, f.packCount())
	}
	f.restoreOK(sn1, keep)
	if !errors.Is(&backend.RetentionError{}, backend.ErrRetained) {
		t.Fatal("RetentionError is not ErrRetained")
	}
}
