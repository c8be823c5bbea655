package repo

import (
	"context"

	"golang.org/x/sync/errgroup"

	"dj/repo/crypto"
)

// loadEach calls load for every id, at most limit at once, and returns
// what each call returned, by position. The error is the context's only:
// a failed load is in errs and does not stop the others.
func loadEach[T any](ctx context.Context, ids []crypto.ID, limit int, load func(ctx context.Context, id crypto.ID) (T, error)) (vals []T, errs []error, err error) {
	vals = make([]T, len(ids))
	errs = make([]error, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for i, id := range ids {
		g.Go(func() error {
			vals[i], errs[i] = load(gctx, id)
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return vals, errs, nil
}
