package backend

import (
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
