package retry

import (
	"context"

	"dj/backend"
)

// rangeBackend is a Backend around a backend that loads ranges into a
// caller's buffer (backend.RangeLoader): it keeps that fast path and
// retries it, so that backend.As does not find the capability beneath the
// retries.
type rangeBackend struct {
	*Backend
	ranger backend.RangeLoader
}

var _ backend.RangeLoader = (*rangeBackend)(nil)

// Wrap is New, keeping the RangeLoader of be (with retries) when it has
// one. Use it for every backend whose capabilities the layers above use.
func Wrap(be backend.Backend, opts Options) backend.Backend {
	b := New(be, opts)
	if rl, ok := backend.As[backend.RangeLoader](be); ok {
		return &rangeBackend{Backend: b, ranger: rl}
	}
	return b
}

// LoadRange reads a range into buf, retrying transient failures.
func (r *rangeBackend) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	var data []byte
	err := r.do(ctx, "load", h, func(int) error {
		var err error
		data, err = r.ranger.LoadRange(ctx, h, offset, length, buf)
		return err
	})
	return data, err
}
