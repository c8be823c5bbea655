// Package limit bounds the rate at which dj uploads to and downloads from a
// repository, as restic's --limit-upload and --limit-download do.
//
// Two forms share one token bucket per direction: Backend decorates any
// backend.Backend and paces whole calls (a Save waits for its bytes before
// it starts, a Load waits for its bytes after they arrived), and Transport
// decorates an http.RoundTripper and paces request and response bodies as
// they stream, so an HTTP backend never sends a pack faster than the limit
// even for a moment. Use one of the two for a backend, not both, or the
// bytes are counted twice.
package limit

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"dj/backend"
)

// Rates are limits in bytes per second; zero means unlimited.
type Rates struct {
	Upload   int64
	Download int64
}

// burstTime is how much of its rate a bucket lets through at once after
// an idle spell.
const burstTime = 100 * time.Millisecond

// maxChunk bounds one Read of a paced stream, so a large buffer handed to
// Read is paced piece by piece instead of in one burst and one long wait.
const maxChunk = 64 << 10

// bucket is a token bucket of bytes. Takers may drive it into debt; each
// then waits until its part of the debt has drained, so concurrent takers
// share the rate.
type bucket struct {
	rate  float64 // tokens (bytes) per second
	burst float64 // the most tokens the bucket holds

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// newBucket returns a full bucket for rate bytes per second, or nil (no
// limit) when rate is not positive.
func newBucket(rate int64) *bucket {
	if rate <= 0 {
		return nil
	}
	burst := max(float64(rate)*burstTime.Seconds(), 1)
	return &bucket{rate: float64(rate), burst: burst, tokens: burst, last: time.Now()}
}

// reserve takes n tokens at time now and returns how long the taker must
// wait before it may use them.
func (b *bucket) reserve(now time.Time, n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(b.burst, b.tokens+elapsed.Seconds()*b.rate)
		b.last = now
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens * float64(time.Second) / b.rate)
}

// chunk is the most bytes one Read of a paced stream should move.
func (b *bucket) chunk() int {
	return min(maxChunk, max(int(b.burst), 1024))
}

// wait takes n tokens and sleeps until they may be used or ctx ends. A nil
// bucket never waits.
func (b *bucket) wait(ctx context.Context, n int) error {
	if b == nil || n <= 0 {
		return nil
	}
	d := b.reserve(time.Now(), n)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backend paces the transfers of the backend it wraps. Its methods are
// safe for concurrent use.
type Backend struct {
	be       backend.Backend
	up, down *bucket
}

var _ backend.Backend = (*Backend)(nil)

// New wraps be so that Save sends at most r.Upload and Load receives at
// most r.Download bytes per second, summed over all concurrent calls.
func New(be backend.Backend, r Rates) *Backend {
	return &Backend{be: be, up: newBucket(r.Upload), down: newBucket(r.Download)}
}

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() backend.Backend { return b.be }

// Location returns the wrapped backend's location.
func (b *Backend) Location() string { return b.be.Location() }

// Close closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }

// Save waits until the upload rate allows len(data) bytes, then stores
// them.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := b.up.wait(ctx, len(data)); err != nil {
		return err
	}
	return b.be.Save(ctx, h, data)
}

// Load reads a range and then waits until the download rate allows the
// bytes read.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	data, err := b.be.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	if err := b.down.wait(ctx, len(data)); err != nil {
		return nil, err
	}
	return data, nil
}

// Stat is not paced.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	return b.be.Stat(ctx, h)
}

// List is not paced.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	return b.be.List(ctx, t, fn)
}

// Remove is not paced.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	return b.be.Remove(ctx, h)
}

// Transport returns rt with request bodies paced to r.Upload and response
// bodies to r.Download bytes per second, summed over all requests; rt is
// returned as it is when both are unlimited.
func Transport(rt http.RoundTripper, r Rates) http.RoundTripper {
	if r.Upload <= 0 && r.Download <= 0 {
		return rt
	}
	return &transport{rt: rt, up: newBucket(r.Upload), down: newBucket(r.Download)}
}

type transport struct {
	rt       http.RoundTripper
	up, down *bucket
}

// RoundTrip paces the request body (a clone of req carries it) and the
// response body.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if t.up != nil && req.Body != nil && req.Body != http.NoBody {
		orig := req
		req = req.Clone(ctx)
		req.Body = &pacedReader{ctx: ctx, rc: orig.Body, b: t.up}
		if orig.GetBody != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				rc, err := orig.GetBody()
				if err != nil {
					return nil, err
				}
				return &pacedReader{ctx: ctx, rc: rc, b: t.up}, nil
			}
		}
	}
	resp, err := t.rt.RoundTrip(req)
	if err != nil || t.down == nil || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	resp.Body = &pacedReader{ctx: ctx, rc: resp.Body, b: t.down}
	return resp, nil
}

// pacedReader reads from rc no faster than its bucket allows.
type pacedReader struct {
	ctx context.Context
	rc  io.ReadCloser
	b   *bucket
}

func (p *pacedReader) Read(buf []byte) (int, error) {
	if c := p.b.chunk(); len(buf) > c {
		buf = buf[:c]
	}
	n, err := p.rc.Read(buf)
	if werr := p.b.wait(p.ctx, n); werr != nil && err == nil {
		err = werr
	}
	return n, err
}

func (p *pacedReader) Close() error { return p.rc.Close() }
