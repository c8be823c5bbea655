package maint_test

import (
	"context"
	"testing"

	"dj/maint"
)

// TestRepackDryRunMakesTheSamePlan: --dry-run must predict what the real
// run does: the same packs rewritten, the same blobs moved; the new pack
// count is an estimate within one pack per blob type and open pack.
func TestRepackDryRunMakesTheSamePlan(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	shared := f.blob(3 << 10)
	for i := 0; i < 12; i++ {
		f.snapshot(f.open(), f.blob(9<<10), shared, f.blob(5<<10))
	}
	dryRepo := f.open()
	if _, err := dryRepo.LoadIndex(ctx, false); err != nil {
		t.Fatal(err)
	}
	dry, err := maint.Repack(ctx, dryRepo, maint.RepackOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	realRepo := f.open()
	if _, err := realRepo.LoadIndex(ctx, false); err != nil {
		t.Fatal(err)
	}
	got, err := maint.Repack(ctx, realRepo, maint.RepackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.PacksRewritten == 0 || got.BlobsMoved == 0 {
		t.Fatalf("the fixture gave repack nothing to do: %+v", got)
	}
	if dry.PacksRewritten != got.PacksRewritten || dry.BlobsMoved != got.BlobsMoved || dry.BytesBefore != got.BytesBefore || dry.BytesAfter != got.BytesAfter {
		t.Fatalf("dry run %+v\nreal run %+v", dry, got)
	}
	// Two blob types, up to two packs open per type at the end.
	if d := got.PacksWritten - dry.PacksWritten; d < -2 || d > 4 {
		t.Fatalf("dry run estimated %d new packs, the real run wrote %d", dry.PacksWritten, got.PacksWritten)
	}
}
