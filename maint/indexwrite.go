package maint

import (
	"context"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
)

// WriteIndex is repo.Repository.WriteIndex; it stores packs and pending packs (with their MarkedAt) in new
// index files of bounded size. The last file written lists supersedes, so
// a reader that lists the index while the files are written sees either
// the old files and some new ones (their union is complete) or every new
// file. The caller removes the superseded files afterwards. It returns how
// many files were written.
func WriteIndex(ctx context.Context, r *repo.Repository, packs, pending []index.FilePack, supersedes []crypto.ID) (int, error) {
	return r.WriteIndex(ctx, packs, pending, supersedes)
}
