// The connections: a call takes a slot, dialling its connection when
// needed, and a connection that ends is dropped.

package sftp

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errClosed is returned by calls after Close.
var errClosed = errors.New("sftp backend is closed")

// acquire picks a slot for a call: an idle live connection; else, when
// some connection is live, the least busy live one, while a free slot is
// dialled in the background for the calls to come (a call never waits
// the second or so of an SSH handshake while a connection could carry
// it: SFTP runs many requests on one); else a slot to dial now. It
// returns the slot's connection, dialling it when needed.
func (b *Backend) acquire(ctx context.Context) (*slot, *conn, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, nil, errClosed
	}
	var idle, live, free *slot
	for _, s := range b.slots {
		switch {
		case s.c != nil && s.c.alive():
			if s.busy == 0 && idle == nil {
				idle = s
			}
			if live == nil || s.busy < live.busy {
				live = s
			}
		case free == nil && !s.dialling && time.Since(s.failed) > redialPause:
			free = s
		}
	}
	pick := idle
	if pick == nil && live != nil {
		pick = live
		if free != nil {
			free.dialling = true
			go b.dialAhead(context.WithoutCancel(ctx), free)
		}
	}
	if pick == nil {
		pick = free
	}
	if pick == nil {
		// Every slot is dialling, or failed a moment ago: wait on
		// the one with the fewest calls.
		for _, s := range b.slots {
			if pick == nil || s.busy < pick.busy {
				pick = s
			}
		}
	}
	pick.busy++
	b.mu.Unlock()

	c, err := b.connect(ctx, pick)
	if err != nil {
		b.release(pick)
		return nil, nil, err
	}
	return pick, c, nil
}

// redialPause is how long a slot whose background dial failed is left
// alone (a server refusing more sessions must not see a dial per call).
const redialPause = 30 * time.Second

// dialAhead dials s in the background for later calls; a failure is
// remembered, not reported: the calls that need the slot will dial it
// themselves.
func (b *Backend) dialAhead(ctx context.Context, s *slot) {
	_, err := b.connect(ctx, s)
	b.mu.Lock()
	s.dialling = false
	if err != nil {
		s.failed = time.Now()
	}
	b.mu.Unlock()
}

// connect returns the slot's live connection, dialling a new one when it
// has none or its connection ended.
func (b *Backend) connect(ctx context.Context, s *slot) (*conn, error) {
	s.dial.Lock()
	defer s.dial.Unlock()
	b.mu.Lock()
	c := s.c
	b.mu.Unlock()
	if c != nil && c.alive() {
		return c, nil
	}
	if c != nil {
		b.drop(s, c)
	}
	c, err := dial(ctx, b.cfg, b.pacer)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = c.close()
		return nil, errClosed
	}
	s.c = c
	b.mu.Unlock()
	return c, nil
}

func (b *Backend) release(s *slot) {
	b.mu.Lock()
	s.busy--
	b.mu.Unlock()
}

// drop closes c and takes it out of s, unless s already holds another.
func (b *Backend) drop(s *slot, c *conn) {
	b.mu.Lock()
	if s.c == c {
		s.c = nil
	}
	b.mu.Unlock()
	go func() { _ = c.close() }()
}

// do runs f with a connection. A canceled ctx returns at once (f goes on
// in the background until its requests are answered, and must check ctx
// before it makes anything visible). When f fails because the connection
// ended, the connection is dropped and the error is a
// ConnectionLostError.
func (b *Backend) do(ctx context.Context, f func(c *conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, c, err := b.acquire(ctx)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		defer b.release(s)
		c.begin()
		defer c.end()
		err := f(c)
		if isConnectionError(c, err) && ctx.Err() == nil {
			b.drop(s, c)
			if c.stalled.Load() {
				err = fmt.Errorf("no answer from the server for %v: %w", c.stall, err)
			}
			err = &ConnectionLostError{Location: b.cfg.Location, Err: err}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if cerr := ctx.Err(); cerr != nil && err != nil {
			return cerr
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
