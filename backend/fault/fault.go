// Package fault is a backend.Backend decorator for tests that fails or
// corrupts chosen operations: the Nth load or save of a type, a full disk
// after N bytes, a dropped connection, a time-out, a short read, a flipped
// bit, a save that happened although the caller was told it failed, a
// save that stored only half of the bytes, a listing that comes back
// empty or short without an error or fails midway.
//
// With no rules armed it passes every call through unchanged.
package fault

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"dj/backend"
)

// Op names a backend operation.
type Op string

// The operations a rule can match.
const (
	Save   Op = "save"
	Load   Op = "load"
	Stat   Op = "stat"
	List   Op = "list"
	Remove Op = "remove"
)

// ErrInjected is the error of a rule that names no other: a transient
// failure such as a dropped connection, which a retry may cure.
var ErrInjected = errors.New("fault: injected failure (simulated dropped connection)")

// Mode is what a rule does to the call it fires on, besides failing it
// with Err (ModeError, the zero Mode).
type Mode int

// The modes of a rule.
const (
	// ModeError fails the call with Err (see also Rule.After and
	// Rule.Corrupt, and Rule.AfterItems for List).
	ModeError Mode = iota
	// ModeTimeout waits Rule.Wait (or until the context ends) and fails
	// the call with an error that is a time-out (net.Error with
	// Timeout() true, in the class backend.ErrUnreachable).
	ModeTimeout
	// ModeShortRead makes a Load return the first half of the data it
	// asked for, without an error: a backend that breaks the Load
	// contract.
	ModeShortRead
	// ModeHalfSave makes a Save store the first half of the data under
	// the name and then fail with Err: a partial object is left behind.
	ModeHalfSave
	// ModeShortList makes a List deliver AfterItems entries (0: none) and
	// then end without an error, as if there were no more: restic #4612.
	ModeShortList
)

// Rule arms one fault. A rule counts the calls that match it (same Op,
// and same Type unless Type is empty) from the moment it is added, and
// fires on call Nth, Nth+Every, Nth+2*Every, ..., Times times in all.
type Rule struct {
	Op   Op
	Type backend.FileType // "" matches every type
	// Nth is the first matching call the rule fires on, counting from 1;
	// 0 means 1 (the next call).
	Nth int
	// Every is the distance between the calls it fires on; 0 means 1
	// (consecutive calls).
	Every int
	// Times is how often it fires; 0 means once, negative means without
	// end.
	Times int

	// Err is returned by the call; nil means ErrInjected, unless Corrupt
	// is set.
	Err error
	// After carries the Save or Remove out before returning Err, as when
	// a connection drops after the server did the work.
	After bool
	// Corrupt flips a byte (XOR 0xff) instead of failing: in the data a
	// Load returns, or in the data a Save stores (the Save then succeeds).
	// Empty data is passed through unchanged.
	Corrupt bool
	// Offset is the byte Corrupt flips; negative counts from the end
	// (-1 is the last byte), Middle selects the middle byte. Offsets
	// beyond the data are clamped.
	Offset int64
	// AfterItems, for List, delivers that many entries before failing
	// with Err.
	AfterItems int
	// Rate, when above zero, replaces Nth and Every: the rule fires on each
	// matching call with this probability (0.1 is 10%), drawn from the
	// backend's random source (see Seed), Times times in all.
	Rate float64
	// Mode says what the fault does (see Mode); ModeError by default.
	Mode Mode
	// Wait is how long a ModeTimeout call hangs before it fails; 0 means
	// DefaultWait.
	Wait time.Duration
}

// DefaultWait is how long a ModeTimeout call hangs when the rule names no
// Wait.
const DefaultWait = 50 * time.Millisecond

// timeoutError is the error of a ModeTimeout call: a net.Error whose
// Timeout() is true, which the retry layer treats as transient.
type timeoutError struct{ wait time.Duration }

func (e *timeoutError) Error() string {
	return fmt.Sprintf("fault: injected time-out: no answer within %v", e.wait)
}
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Unwrap() error   { return backend.ErrUnreachable }

// ErrTimeout is matched by errors.Is for every injected time-out.
var ErrTimeout = errors.New("fault: injected time-out")

func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }

// hang waits for a ModeTimeout rule and returns its error.
func hang(ctx context.Context, r Rule) error {
	w := r.Wait
	if w <= 0 {
		w = DefaultWait
	}
	t := time.NewTimer(w)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return &timeoutError{w}
}

type armed struct {
	Rule
	seen  int // matching calls
	fired int
}

// Backend is the fault-injecting decorator. Its methods are safe for
// concurrent use.
type Backend struct {
	be backend.Backend

	mu        sync.Mutex
	rules     []*armed
	calls     map[callKey]int
	spaceLeft int64 // bytes Save may still store; negative: unlimited
	rng       *rand.Rand
}

type callKey struct {
	op Op
	t  backend.FileType
}

var _ backend.Backend = (*Backend)(nil)

// New wraps b. No fault is armed.
func New(b backend.Backend) *Backend {
	return &Backend{be: b, calls: make(map[callKey]int), spaceLeft: -1, rng: rand.New(rand.NewPCG(1, 1))}
}

// Seed resets the random source of the rules with a Rate, so that the
// same sequence of calls meets the same faults.
func (b *Backend) Seed(seed uint64) {
	b.mu.Lock()
	b.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b.mu.Unlock()
}

// Add arms a rule.
func (b *Backend) Add(r Rule) {
	if r.Nth <= 0 {
		r.Nth = 1
	}
	if r.Every <= 0 {
		r.Every = 1
	}
	if r.Times == 0 {
		r.Times = 1
	}
	if r.Err == nil && !r.Corrupt {
		r.Err = ErrInjected
	}
	b.mu.Lock()
	b.rules = append(b.rules, &armed{Rule: r})
	b.mu.Unlock()
}

// FailNth makes the nth matching op on files of type t (any type if t is
// "") fail with err (ErrInjected if nil).
func (b *Backend) FailNth(op Op, t backend.FileType, n int, err error) {
	b.Add(Rule{Op: op, Type: t, Nth: n, Err: err})
}

// CorruptNth flips the middle byte of the data of the nth matching Load
// or Save of type t (any type if t is "").
func (b *Backend) CorruptNth(op Op, t backend.FileType, n int) {
	b.Add(Rule{Op: op, Type: t, Nth: n, Corrupt: true, Offset: Middle})
}

// Middle is the Rule.Offset of the middle byte of the data.
const Middle int64 = math.MinInt64

// FailSavesAfter simulates a disk with n bytes free: saves go through
// until one would store more than n bytes in total (from this call on);
// it and every later non-empty save fail with an error satisfying
// errors.Is(err, syscall.ENOSPC), and nothing of them is stored. Space is
// not given back by Remove. A negative n lifts the limit.
func (b *Backend) FailSavesAfter(n int64) {
	b.mu.Lock()
	b.spaceLeft = n
	b.mu.Unlock()
}

// Reset disarms all rules and lifts the space limit. Call counts stay.
func (b *Backend) Reset() {
	b.mu.Lock()
	b.rules = nil
	b.spaceLeft = -1
	b.mu.Unlock()
}

// Calls returns how many times op was called on files of type t (all
// types if t is ""), faulty calls included.
func (b *Backend) Calls(op Op, t backend.FileType) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t != "" {
		return b.calls[callKey{op, t}]
	}
	n := 0
	for k, v := range b.calls {
		if k.op == op {
			n += v
		}
	}
	return n
}

// fire counts a call and returns the first rule that fires on it.
func (b *Backend) fire(op Op, t backend.FileType) (Rule, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[callKey{op, t}]++
	var hit *Rule
	for _, r := range b.rules {
		if r.Op != op || (r.Type != "" && r.Type != t) {
			continue
		}
		r.seen++
		if r.Rate > 0 {
			if hit == nil && (r.Times < 0 || r.fired < r.Times) && b.rng.Float64() < r.Rate {
				r.fired++
				hit = &r.Rule
			}
			continue
		}
		if hit == nil && r.seen >= r.Nth && (r.seen-r.Nth)%r.Every == 0 && (r.Times < 0 || r.fired < r.Times) {
			r.fired++
			hit = &r.Rule
		}
	}
	if hit == nil {
		return Rule{}, false
	}
	return *hit, true
}

// flip returns a copy of data with one byte inverted.
func flip(data []byte, offset int64) []byte {
	out := append([]byte(nil), data...)
	if len(out) == 0 {
		return out
	}
	n := int64(len(out))
	switch {
	case offset == Middle:
		offset = n / 2
	case offset < 0:
		offset = max(n+offset, 0)
	case offset >= n:
		offset = n - 1
	}
	out[offset] ^= 0xff
	return out
}

// Location returns the wrapped backend's location.
func (b *Backend) Location() string { return b.be.Location() }

// Close closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }

// Save stores data unless a rule or the space limit says otherwise.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	r, hit := b.fire(Save, h.Type)
	if hit && r.Corrupt {
		data = flip(data, r.Offset)
		hit = false
	}
	if hit && r.Mode == ModeTimeout {
		return fmt.Errorf("save %v: %w", h, hang(ctx, r))
	}
	if hit && r.Mode == ModeHalfSave {
		half := data[:len(data)/2]
		if err := b.reserve(int64(len(half))); err == nil {
			if err := b.be.Save(ctx, h, half); err != nil {
				b.reserve(-int64(len(half)))
			}
		}
		return fmt.Errorf("save %v: connection lost after %d of %d bytes: %w", h, len(half), len(data), r.Err)
	}
	if hit && !r.After {
		return fmt.Errorf("save %v: %w", h, r.Err)
	}
	if err := b.reserve(int64(len(data))); err != nil {
		return fmt.Errorf("save %v: disk full: %w", h, &fs.PathError{Op: "write", Path: h.String(), Err: err})
	}
	if err := b.be.Save(ctx, h, data); err != nil {
		b.reserve(-int64(len(data)))
		return err
	}
	if hit {
		return fmt.Errorf("save %v: %w", h, r.Err)
	}
	return nil
}

// reserve takes n bytes from the space left, or gives them back for a
// negative n.
func (b *Backend) reserve(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.spaceLeft < 0 {
		return nil
	}
	if n > b.spaceLeft {
		b.spaceLeft = 0 // a full disk stays full
		return syscall.ENOSPC
	}
	b.spaceLeft -= n
	return nil
}

// Load reads through the wrapped backend, failing or corrupting as armed.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	r, hit := b.fire(Load, h.Type)
	if hit && r.Mode == ModeTimeout {
		return nil, fmt.Errorf("load %v: %w", h, hang(ctx, r))
	}
	if hit && !r.Corrupt && r.Mode != ModeShortRead {
		return nil, fmt.Errorf("load %v: %w", h, r.Err)
	}
	data, err := b.be.Load(ctx, h, offset, length)
	if err != nil || !hit {
		return data, err
	}
	if r.Mode == ModeShortRead {
		return data[:len(data)/2], nil
	}
	return flip(data, r.Offset), nil
}

// Stat passes through unless a rule fails it.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if r, hit := b.fire(Stat, h.Type); hit && r.Mode == ModeTimeout {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, hang(ctx, r))
	} else if hit && !r.Corrupt {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, r.Err)
	}
	return b.be.Stat(ctx, h)
}

// Remove passes through unless a rule fails it (before or, with After,
// after removing).
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	r, hit := b.fire(Remove, h.Type)
	if hit && r.Mode == ModeTimeout {
		return fmt.Errorf("remove %v: %w", h, hang(ctx, r))
	}
	if hit && !r.Corrupt && !r.After {
		return fmt.Errorf("remove %v: %w", h, r.Err)
	}
	if err := b.be.Remove(ctx, h); err != nil {
		return err
	}
	if hit && !r.Corrupt {
		return fmt.Errorf("remove %v: %w", h, r.Err)
	}
	return nil
}

// List passes through unless a rule fails it, at once or after
// AfterItems entries, or (ModeShortList) ends it early without an error.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	r, hit := b.fire(List, t)
	if !hit || r.Corrupt {
		return b.be.List(ctx, t, fn)
	}
	if r.Mode == ModeTimeout {
		return fmt.Errorf("list %s: %w", t, hang(ctx, r))
	}
	if r.AfterItems <= 0 && r.Mode != ModeShortList {
		return fmt.Errorf("list %s: %w", t, r.Err)
	}
	stop := errors.New("stop")
	n := 0
	err := b.be.List(ctx, t, func(fi backend.FileInfo) error {
		if n == r.AfterItems {
			return stop
		}
		n++
		return fn(fi)
	})
	if err != nil && !errors.Is(err, stop) {
		return err
	}
	if r.Mode == ModeShortList {
		return nil
	}
	return fmt.Errorf("list %s: %w", t, r.Err)
}

// Unwrap returns the wrapped backend (see backend.As). Faults are injected
// into the Backend methods only; a capability found through Unwrap reaches
// the wrapped backend directly.
func (b *Backend) Unwrap() backend.Backend { return b.be }
