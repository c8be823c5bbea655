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
		return wrapLoaders(b, caps.Ranger, caps.Into)
	}
	return &capBackend{Backend: b, caps: caps}
}

// wrapLoaders returns b with the ranged loads of the wrapped backend (a
// remote one, such as S3, has them without the rest of the local disk's
// capabilities), paced: otherwise backend.As would find them beneath the
// limiter, and restore, check and the mount would read unpaced.
func wrapLoaders(b *Backend, ranger backend.RangeLoader, into backend.IntoLoader) backend.Backend {
	switch {
	case ranger != nil && into != nil:
		return &rangeIntoBackend{rangeBackend{b, ranger}, into}
	case ranger != nil:
		return &rangeBackend{b, ranger}
	case into != nil:
		return &intoBackend{b, into}
	}
	return b
}

// rangeBackend paces the LoadRange of the wrapped backend.
type rangeBackend struct {
	*Backend
	ranger backend.RangeLoader
}

// LoadRange reads a range, then waits until the download rate allows it.
func (r *rangeBackend) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	b, err := r.ranger.LoadRange(ctx, h, offset, length, buf)
	if err != nil {
		return nil, err
	}
	return b, r.down.wait(ctx, len(b))
}

// intoBackend paces the LoadInto of the wrapped backend.
type intoBackend struct {
	*Backend
	into backend.IntoLoader
}

// LoadInto reads into buf, then waits until the download rate allows it.
func (i *intoBackend) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	if err := i.into.LoadInto(ctx, h, offset, buf); err != nil {
		return err
	}
	return i.down.wait(ctx, len(buf))
}

// rangeIntoBackend paces both ranged loads of the wrapped backend.
type rangeIntoBackend struct {
	rangeBackend
	into backend.IntoLoader
}

// LoadInto reads into buf, then waits until the download rate allows it.
func (r *rangeIntoBackend) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	if err := r.into.LoadInto(ctx, h, offset, buf); err != nil {
		return err
	}
	return r.down.wait(ctx, len(buf))
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
