package backend

import (
	"context"
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
