package repo

import (
	"context"

	"dj/repo/index"
)

// IndexUploaded writes an index file for the packs uploaded since the last
// index file was written and returns how many packs it named. The packs
// being filled stay open, so calling it often costs no small packs. A long
// operation (copy) calls it from time to time, so that an interrupted run
// leaves packs a later run finds in the index instead of data only prune
// can see.
//
// With settle it first waits for the uploads in flight; call it so only
// when no blob is being saved (after the operation stopped). Packs that
// were uploaded are indexed even when another upload failed; that upload's
// error is returned afterwards.
func (r *Repository) IndexUploaded(ctx context.Context, settle bool) (int, error) {
	p := r.packer
	if settle {
		p.uploads.Wait()
	}
	p.mu.Lock()
	written := p.written
	p.written = nil
	uploadErr := p.err
	p.mu.Unlock()
	if len(written) > 0 {
		if _, err := r.SaveIndexFile(ctx, &index.File{Packs: written}); err != nil {
			// Keep the packs for the next attempt (Flush writes them).
			p.mu.Lock()
			p.written = append(written, p.written...)
			p.mu.Unlock()
			return 0, err
		}
	}
	return len(written), uploadErr
}
