package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// DefaultStallTimeout is how long a remote backend waits for the next
// bytes of an answer whose first bytes arrived: a server or network that
// stalls longer ends the request (a retry may then succeed) instead of
// hanging it.
const DefaultStallTimeout = 2 * time.Minute

// GuardStall returns r, closed when a Read of it waits more than idle for
// data (the wait is counted from the previous Read); that Read then
// fails with an error in the class ErrUnreachable. Closing the returned
// reader closes r.
func GuardStall(r io.ReadCloser, idle time.Duration) io.ReadCloser {
	g := &stallGuard{rc: r, idle: idle}
	return g
}

type stallGuard struct {
	rc   io.ReadCloser
	idle time.Duration

	mu      sync.Mutex
	stalled bool
}

func (g *stallGuard) Read(p []byte) (int, error) {
	t := time.AfterFunc(g.idle, func() {
		g.mu.Lock()
		g.stalled = true
		g.mu.Unlock()
		_ = g.rc.Close()
	})
	n, err := g.rc.Read(p)
	t.Stop()
	if err != nil && err != io.EOF {
		g.mu.Lock()
		stalled := g.stalled
		g.mu.Unlock()
		if stalled {
			return n, NewClassError(fmt.Sprintf("no data for %v: the connection stalled", g.idle), ErrUnreachable)
		}
	}
	return n, err
}

func (g *stallGuard) Close() error { return g.rc.Close() }

type stallTimeoutKey struct{}

// WithStallTimeout returns ctx carrying d as the time a remote backend
// opened or used with it waits for a silent server (the next bytes of an
// answer, the headers of a response, an SFTP session) before it gives
// the request up. The CLI sets it only in its insecure test mode, so
// that tests of stalled networks need not wait minutes.
func WithStallTimeout(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, stallTimeoutKey{}, d)
}

// StallTimeout returns the stall timeout ctx carries (WithStallTimeout),
// or def when it carries none.
func StallTimeout(ctx context.Context, def time.Duration) time.Duration {
	if d, ok := ctx.Value(stallTimeoutKey{}).(time.Duration); ok && d > 0 {
		return d
	}
	return def
}

// errUploadStalled is the cause of an UploadWatch's cancellation.
var errUploadStalled = errors.New("upload stalled")

// UploadWatch ends an upload that the connection stops taking: a peer
// that stopped reading (or a network that went silent) blocks the write
// of a request body forever, and HTTP clients have no write time-out
// (a response-header time-out starts only once the body is sent). The
// request runs with Context, its body is read from Body; when no Read or
// Seek of a body happens for the idle time while a body is not yet read
// to its end, Context is cancelled. Err turns the request's error into one
// in the class ErrUnreachable, which a retry may cure. Stop releases it.
type UploadWatch struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	t      *time.Timer
	idle   time.Duration
	data   []byte
}

// WatchUpload starts watching an upload of data under ctx.
func WatchUpload(ctx context.Context, data []byte, idle time.Duration) *UploadWatch {
	w := &UploadWatch{idle: idle, data: data}
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	w.t = time.AfterFunc(idle, func() { w.cancel(errUploadStalled) })
	return w
}

// Context is the context the request must run with.
func (w *UploadWatch) Context() context.Context { return w.ctx }

// Body returns a new reader of the data that feeds the watch.
func (w *UploadWatch) Body() io.ReadSeekCloser {
	return &watchedBody{w: w, r: bytes.NewReader(w.data)}
}

// Stop ends the watch and cancels its context.
func (w *UploadWatch) Stop() {
	w.t.Stop()
	w.cancel(nil)
}

// Err returns err, or an error in the class ErrUnreachable when the
// watch ended the request.
func (w *UploadWatch) Err(err error) error {
	if err != nil && errors.Is(context.Cause(w.ctx), errUploadStalled) {
		return NewClassError(fmt.Sprintf("the connection took no bytes of the upload for %v: it stalled", w.idle), ErrUnreachable)
	}
	return err
}

type watchedBody struct {
	w  *UploadWatch
	mu sync.Mutex
	r  *bytes.Reader
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.w.t.Stop()
	} else {
		b.w.t.Reset(b.w.idle)
	}
	return n, err
}

func (b *watchedBody) Seek(off int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.w.t.Reset(b.w.idle)
	return b.r.Seek(off, whence)
}

func (b *watchedBody) Close() error { return nil }
