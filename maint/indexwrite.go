package maint

import (
	"context"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
)

// WriteIndex stores packs and pending packs in new index files of bounded
// size, the last one superseding supersedes; it is r.WriteIndex, kept for
// callers that hold the repository as an argument.
func WriteIndex(ctx context.Context, r *repo.Repository, packs, pending []index.FilePack, supersedes []crypto.ID) (int, error) {
	return r.WriteIndex(ctx, packs, pending, supersedes)
}
