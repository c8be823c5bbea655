// Package retry is a backend.Backend decorator that retries failed
// operations with exponential backoff, so that a dropped connection or a
// busy server does not abort a long backup.
//
// Errors that a retry cannot cure are returned at once (see Permanent).
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"dj/backend"
)

// Defaults for the zero fields of Options.
const (
	DefaultMaxAttempts  = 10
	DefaultInitialDelay = 500 * time.Millisecond
	DefaultMaxDelay     = time.Minute
)

// Options configures New.
type Options struct {
	// MaxAttempts is the number of tries per operation, the first one
	// included; 0 means DefaultMaxAttempts.
	MaxAttempts int
	// InitialDelay is the wait after the first failure; it doubles after
	// each further one, up to MaxDelay. Each wait is drawn at random
	// between half and all of its value, so that clients do not retry in
	// lockstep. Zero values mean DefaultInitialDelay and DefaultMaxDelay.
	InitialDelay time.Duration
	MaxDelay     time.Duration
	// Notify, if not nil, is called before each wait with the operation
	// ("save", "load", "stat", "list", "remove"), the handle (for list,
	// only its Type is set), the number of the attempt that failed, its
	// error and the wait.
	Notify func(op string, h backend.Handle, attempt int, err error, wait time.Duration)
}

// Backend retries the operations of the backend it wraps. Its methods are
// safe for concurrent use.
type Backend struct {
	be   backend.Backend
	opts Options
}

var _ backend.Backend = (*Backend)(nil)

// New wraps b.
func New(b backend.Backend, opts Options) *Backend {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.InitialDelay <= 0 {
		opts.InitialDelay = DefaultInitialDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.MaxDelay < opts.InitialDelay {
		opts.MaxDelay = opts.InitialDelay
	}
	return &Backend{be: b, opts: opts}
}

// Permanent reports whether err is one a retry cannot cure: a missing or
// existing file, a refused permission, an invalid argument, a range past
// the end of a file, a canceled or expired context, a full disk, exceeded
// quota or read-only file system, or any error in the chain with a method
// Permanent() bool that returns true (such as rest.StatusError for 4xx
// answers).
func Permanent(err error) bool {
	for _, target := range []error{
		fs.ErrNotExist, fs.ErrExist, fs.ErrPermission, fs.ErrInvalid, io.ErrUnexpectedEOF, backend.ErrRetained,
		context.Canceled, context.DeadlineExceeded,
		syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// timedOut reports whether err is a time-out of the network or the
// server (a net.Error whose Timeout() is true) while ctx is still live:
// transient, although net/http's time-outs (awaiting response headers)
// satisfy errors.Is(err, context.DeadlineExceeded) since Go 1.23.
func timedOut(ctx context.Context, err error) bool {
	var ne net.Error
	return ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout()
}

// do runs f until it succeeds, fails permanently, the attempts are used up
// or ctx ends. It returns the last error.
func (b *Backend) do(ctx context.Context, op string, h backend.Handle, f func(attempt int) error) error {
	delay := b.opts.InitialDelay
	for attempt := 1; ; attempt++ {
		err := f(attempt)
		if err == nil || Permanent(err) && !timedOut(ctx, err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		if attempt >= b.opts.MaxAttempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		wait := delay/2 + rand.N(delay/2+1)
		if b.opts.Notify != nil {
			b.opts.Notify(op, h, attempt, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
		delay = min(delay*2, b.opts.MaxDelay)
	}
}

// Location returns the wrapped backend's location.
func (b *Backend) Location() string { return b.be.Location() }

// Close closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }

// Save stores data, retrying transient failures. Saving is idempotent:
// files are whole or absent, and a retry writes the same bytes.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	return b.do(ctx, "save", h, func(int) error { return b.be.Save(ctx, h, data) })
}

// Load reads a range, retrying transient failures.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	var data []byte
	err := b.do(ctx, "load", h, func(int) error {
		var err error
		data, err = b.be.Load(ctx, h, offset, length)
		return err
	})
	return data, err
}

// Stat retries transient failures.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	var fi backend.FileInfo
	err := b.do(ctx, "stat", h, func(int) error {
		var err error
		fi, err = b.be.Stat(ctx, h)
		return err
	})
	return fi, err
}

// Remove retries transient failures. When a retry finds the file gone,
// an earlier attempt removed it (its answer was lost), and Remove
// succeeds.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	return b.do(ctx, "remove", h, func(attempt int) error {
		err := b.be.Remove(ctx, h)
		if attempt > 1 && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	})
}

// callbackError marks an error returned by List's callback, which must
// not be retried.
type callbackError struct{ err error }

func (e *callbackError) Error() string   { return e.err.Error() }
func (e *callbackError) Unwrap() error   { return e.err }
func (e *callbackError) Permanent() bool { return true }

// List retries a listing that fails midway, calling fn only for files it
// has not been called for yet. Errors returned by fn are returned as they
// are, without a retry.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	seen := make(map[string]bool)
	err := b.do(ctx, "list", backend.Handle{Type: t}, func(int) error {
		return b.be.List(ctx, t, func(fi backend.FileInfo) error {
			if seen[fi.Name] {
				return nil
			}
			seen[fi.Name] = true
			if err := fn(fi); err != nil {
				return &callbackError{err}
			}
			return nil
		})
	})
	var ce *callbackError
	if errors.As(err, &ce) {
		return ce.err
	}
	return err
}

// Unwrap returns the wrapped backend (see backend.As).
func (b *Backend) Unwrap() backend.Backend { return b.be }
