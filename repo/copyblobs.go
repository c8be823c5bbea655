package repo

import (
	"context"
	"errors"
	"fmt"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// ErrPackShort means a pack is shorter than the index says it is.
var ErrPackShort = errors.New("shorter than its index says")

// CopyBlobsOptions tune CopyBlobs.
type CopyBlobsOptions struct {
	// Recompress compresses each blob again at the current level
	// (RewriteBlob) instead of copying its stored bytes (CopySealedBlob).
	Recompress bool
	// Damaged, when set, is told of each kept blob that lies beyond the
	// end of the pack or does not verify, and CopyBlobs goes on with the
	// next blob instead of stopping.
	Damaged func(b pack.Blob, err error)
}

// CopyBlobs loads the pack packID once (when keep first returns true) and adds those of blobs (its
// entries in the index) for which keep returns true to the packs being
// written, even though the index knows them; each is verified (decrypted,
// decompressed and hashed) first. keep is called in the order of blobs,
// before the blob is verified. It returns how many blobs it added.
//
// Errors (unless opts.Damaged takes the damaged blobs): the pack's load error, an error wrapping ErrPackShort when a
// blob lies beyond the end of the pack, one wrapping ErrCorrupt when a
// blob does not verify, or the packer's error.
func (r *Repository) CopyBlobs(ctx context.Context, packID crypto.ID, blobs []pack.Blob, keep func(pack.Blob) bool, opts CopyBlobsOptions) (int, error) {
	var data, buf []byte
	n := 0
	reloaded := false
	for _, b := range blobs {
		if !keep(b) {
			continue
		}
		if data == nil {
			var err error
			data, err = r.be.Load(ctx, backend.Handle{Type: backend.PackFile, Name: packID.String()}, 0, 0)
			if err != nil {
				return n, fmt.Errorf("load pack %s: %w", packID.Short(), err)
			}
		}
		end := int64(b.Offset) + int64(b.Length)
		if end > int64(len(data)) && !reloaded && ctx.Err() == nil {
			reloaded = true // a short download: once more
			if again, err := r.be.Load(ctx, backend.Handle{Type: backend.PackFile, Name: packID.String()}, 0, 0); err == nil {
				data = again
			}
		}
		if end > int64(len(data)) {
			err := fmt.Errorf("pack %s is %w", packID.Short(), ErrPackShort)
			if opts.Damaged != nil {
				opts.Damaged(b, err)
				continue
			}
			return n, err
		}
		sealed := data[b.Offset:end]
		plain, err := r.OpenPacked(index.PackedBlob{Blob: b, PackID: packID}, sealed, buf)
		if err != nil && !reloaded && ctx.Err() == nil {
			// A download that came back damaged is tried once more
			// (restic #3268) before the blob counts as damaged.
			reloaded = true
			if again, err2 := r.be.Load(ctx, backend.Handle{Type: backend.PackFile, Name: packID.String()}, 0, 0); err2 == nil && len(again) >= int(end) {
				data = again
				sealed = data[b.Offset:end]
				plain, err = r.OpenPacked(index.PackedBlob{Blob: b, PackID: packID}, sealed, buf)
			}
		}
		if err != nil {
			if opts.Damaged != nil {
				opts.Damaged(b, err)
				continue
			}
			return n, err
		}
		buf = plain
		if opts.Recompress {
			_, err = r.RewriteBlob(ctx, b.Type, b.ID, plain)
		} else {
			err = r.CopySealedBlob(ctx, b, sealed)
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
