package repo_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"

	"dj/backend"
	"dj/backend/fault"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/pack"
)

type noClose struct{ backend.Backend }

func (noClose) Close() error { return nil }

// TestLoadRetriesCorruptDownload: a download that comes back with a
// flipped byte or short is loaded again before the blob or file counts
// as damaged (restic #3268, #5467); damage that stays is still reported.
func TestLoadRetriesCorruptDownload(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	r := repo.TestRepository(t, noClose{m})
	plain := bytes.Repeat([]byte("some content "), 1000)
	id, _, err := r.SaveBlob(ctx, pack.DataBlob, plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.Close()
	for _, tc := range []struct {
		name  string
		rule  fault.Rule
		times int
		ok    bool
	}{
		{"one flipped pack read", fault.Rule{Op: fault.Load, Type: backend.PackFile, Corrupt: true, Offset: fault.Middle}, 1, true},
		{"one short pack read", fault.Rule{Op: fault.Load, Type: backend.PackFile, Mode: fault.ModeShortRead}, 1, true},
		{"one flipped index read", fault.Rule{Op: fault.Load, Type: backend.IndexFile, Corrupt: true, Offset: fault.Middle}, 1, true},
		{"one flipped config read", fault.Rule{Op: fault.Load, Type: backend.ConfigFile, Corrupt: true, Offset: fault.Middle}, 1, true},
		{"one flipped key read", fault.Rule{Op: fault.Load, Type: backend.KeyFile, Corrupt: true, Offset: fault.Middle}, 1, true},
		{"pack always flipped", fault.Rule{Op: fault.Load, Type: backend.PackFile, Corrupt: true, Offset: fault.Middle}, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fault.New(noClose{m})
			rule := tc.rule
			rule.Times = tc.times
			f.Add(rule)
			r := repo.TestOpen(t, fault.Opaque(f))
			defer r.Close()
			got, err := r.LoadBlob(ctx, id, nil)
			if tc.ok && (err != nil || !bytes.Equal(got, plain)) {
				t.Errorf("load: %v", err)
			}
			if !tc.ok && !errors.Is(err, repo.ErrCorrupt) {
				t.Errorf("load: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestCopyBlobsRetriesCorruptDownload: repack's whole-pack download is
// tried once more when it comes back damaged or short.
func TestCopyBlobsRetriesCorruptDownload(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	r := repo.TestRepository(t, noClose{m})
	// Random bytes: the blob fills the pack but for its header, so a
	// flipped middle byte and a short read both hit it.
	plain := make([]byte, 64<<10)
	rand.New(rand.NewSource(1)).Read(plain)
	if _, _, err := r.SaveBlob(ctx, pack.DataBlob, plain); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.Close()
	for _, rule := range []fault.Rule{
		{Op: fault.Load, Type: backend.PackFile, Corrupt: true, Offset: fault.Middle},
		{Op: fault.Load, Type: backend.PackFile, Mode: fault.ModeShortRead},
	} {
		f := fault.New(noClose{m})
		r := repo.TestOpen(t, fault.Opaque(f))
		f.Add(rule)
		if len(r.Index().Packs()) == 0 {
			t.Fatal("no packs")
		}
		for pid, blobs := range r.Index().Packs() {
			n, err := r.CopyBlobs(ctx, pid, blobs, func(pack.Blob) bool { return true }, repo.CopyBlobsOptions{})
			if err != nil || n != len(blobs) {
				t.Errorf("mode %v: copied %d of %d: %v", rule.Mode, n, len(blobs), err)
			}
		}
		r.Close()
	}
}
