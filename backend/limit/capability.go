package limit

import (
	"context"
	"os"
	"time"

	"dj/backend"
)

// capBackend is a Backend around a backend that has the local disk's
// capabilities: it keeps them (so a rate limit does not turn the fast paths
// off) and paces the bytes they move. backend.As finds these methods before
// it looks beneath the limiter, so no transfer bypasses the limit.
type capBackend struct {
	*Backend
	caps backend.LocalCapabilities
}

var _ backend.Local = (*capBackend)(nil)

// Wrap is New for any backend: where be has every capability of the local
// backend, the result keeps them, paced; otherwise it is New's Backend,
// which offers none (the layers above then take their plain paths, which
// the limiter paces).
func Wrap(be backend.Backend, r Rates) backend.Backend {
	b := New(be, r)
	caps, complete := backend.FindLocalCapabilities(be)
	if !complete {
		return b
	}
	return &capBackend{Backend: b, caps: caps}
}

// CreateTemp creates a temporary file in the wrapped backend.
func (c *capBackend) CreateTemp(ctx context.Context, t backend.FileType) (*os.File, error) {
	return c.caps.Stager.CreateTemp(ctx, t)
}

// SaveTemp waits until the upload rate allows the file's size, then
// publishes it.
func (c *capBackend) SaveTemp(ctx context.Context, h backend.Handle, f *os.File) error {
	if fi, err := f.Stat(); err == nil {
		if err := c.up.wait(ctx, int(fi.Size())); err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			return err
		}
	}
	return c.caps.Stager.SaveTemp(ctx, h, f)
}

// LoadRange reads a range, then waits until the download rate allows it.
func (c *capBackend) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	b, err := c.caps.Ranger.LoadRange(ctx, h, offset, length, buf)
	if err != nil {
		return nil, err
	}
	return b, c.down.wait(ctx, len(b))
}

// LoadInto reads into buf, then waits until the download rate allows it.
func (c *capBackend) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	if err := c.caps.Into.LoadInto(ctx, h, offset, buf); err != nil {
		return err
	}
	return c.down.wait(ctx, len(buf))
}

// Prefetch passes the hint on; the bytes are paced when they are loaded.
func (c *capBackend) Prefetch(ctx context.Context, h backend.Handle) { c.caps.Pre.Prefetch(ctx, h) }

// LoadUncached reads a whole file, then waits until the download rate
// allows it.
func (c *capBackend) LoadUncached(ctx context.Context, h backend.Handle, buf []byte) ([]byte, error) {
	b, err := c.caps.Uncached.LoadUncached(ctx, h, buf)
	if err != nil {
		return nil, err
	}
	return b, c.down.wait(ctx, len(b))
}

// RemoveStaleTemp removes stale temporary files of the wrapped backend.
func (c *capBackend) RemoveStaleTemp(ctx context.Context, age time.Duration) (int, error) {
	return c.caps.Cleaner.RemoveStaleTemp(ctx, age)
}
