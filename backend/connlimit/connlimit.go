// Package connlimit is a backend.Backend decorator that bounds how many
// requests run at once (-o connections=N), whatever the backend.
package connlimit

import (
	"context"
	"os"
	"time"

	"dj/backend"
)

// Backend runs at most n calls of the backend it wraps at once; further
// calls wait for a free place or the end of their context. Its methods
// are safe for concurrent use.
type Backend struct {
	be  backend.Backend
	sem chan struct{}
}

var _ backend.Backend = (*Backend)(nil)

// New wraps be so that at most n calls run at once; n must be positive.
func New(be backend.Backend, n int) *Backend {
	return &Backend{be: be, sem: make(chan struct{}, max(n, 1))}
}

// Wrap is New, keeping the capabilities of be that move data (each call
// of them takes a place too): a RangeLoader, or all capabilities of a
// local disk. n <= 0 returns be unchanged.
func Wrap(be backend.Backend, n int) backend.Backend {
	if n <= 0 {
		return be
	}
	b := New(be, n)
	caps, complete := backend.FindLocalCapabilities(be)
	if complete {
		return &localCaps{Backend: b, caps: caps}
	}
	if caps.Ranger != nil {
		return &rangeBackend{Backend: b, ranger: caps.Ranger}
	}
	return b
}

// acquire takes a place, or fails when ctx ends first.
func (b *Backend) acquire(ctx context.Context) error {
	select {
	case b.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Backend) release() { <-b.sem }

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() backend.Backend { return b.be }

// Location returns the wrapped backend's location.
func (b *Backend) Location() string { return b.be.Location() }

// Close closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }

// Save stores data once a place is free.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()
	return b.be.Save(ctx, h, data)
}

// Load reads a range once a place is free.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	if err := b.acquire(ctx); err != nil {
		return nil, err
	}
	defer b.release()
	return b.be.Load(ctx, h, offset, length)
}

// Stat runs once a place is free.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := b.acquire(ctx); err != nil {
		return backend.FileInfo{}, err
	}
	defer b.release()
	return b.be.Stat(ctx, h)
}

// List holds one place for the whole listing.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()
	return b.be.List(ctx, t, fn)
}

// Remove runs once a place is free.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()
	return b.be.Remove(ctx, h)
}

// rangeBackend keeps a RangeLoader.
type rangeBackend struct {
	*Backend
	ranger backend.RangeLoader
}

// LoadRange reads a range into buf once a place is free.
func (r *rangeBackend) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	return r.ranger.LoadRange(ctx, h, offset, length, buf)
}

// localCaps keeps every capability of a local disk. Creating a temporary
// file, a prefetch hint and cleaning take no place.
type localCaps struct {
	*Backend
	caps backend.LocalCapabilities
}

var _ backend.Local = (*localCaps)(nil)

// CreateTemp creates a temporary file in the wrapped backend.
func (c *localCaps) CreateTemp(ctx context.Context, t backend.FileType) (*os.File, error) {
	return c.caps.Stager.CreateTemp(ctx, t)
}

// SaveTemp publishes f once a place is free.
func (c *localCaps) SaveTemp(ctx context.Context, h backend.Handle, f *os.File) error {
	if err := c.acquire(ctx); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	defer c.release()
	return c.caps.Stager.SaveTemp(ctx, h, f)
}

// LoadRange reads a range into buf once a place is free.
func (c *localCaps) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.release()
	return c.caps.Ranger.LoadRange(ctx, h, offset, length, buf)
}

// LoadInto reads into buf once a place is free.
func (c *localCaps) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	return c.caps.Into.LoadInto(ctx, h, offset, buf)
}

// Prefetch passes the hint on.
func (c *localCaps) Prefetch(ctx context.Context, h backend.Handle) { c.caps.Pre.Prefetch(ctx, h) }

// LoadUncached reads a whole file once a place is free.
func (c *localCaps) LoadUncached(ctx context.Context, h backend.Handle, buf []byte) ([]byte, error) {
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.release()
	return c.caps.Uncached.LoadUncached(ctx, h, buf)
}

// RemoveStaleTemp cleans temporary files in the wrapped backend.
func (c *localCaps) RemoveStaleTemp(ctx context.Context, age time.Duration) (int, error) {
	return c.caps.Cleaner.RemoveStaleTemp(ctx, age)
}
