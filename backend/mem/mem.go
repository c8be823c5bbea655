// Package mem is an in-memory Backend for tests of the layers above the
// storage. It copies data on Save and Load, so callers never share memory
// with the store, and it checks handles like the on-disk backends do.
package mem

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"dj/backend"
)

type entry struct {
	data    []byte
	modTime time.Time
}

// Backend keeps repository files in memory. The zero value is not usable;
// call New. Its methods are safe for concurrent use.
type Backend struct {
	mu    sync.RWMutex
	files map[backend.Handle]entry
}

var _ backend.Backend = (*Backend)(nil)

// New returns an empty in-memory Backend.
func New() *Backend {
	return &Backend{files: make(map[backend.Handle]entry)}
}

// Location returns "mem:" followed by the address of the store, so two
// stores can be told apart in messages.
func (b *Backend) Location() string { return fmt.Sprintf("mem:%p", b) }

// Close does nothing; the files stay available.
func (b *Backend) Close() error { return nil }

// Save stores a copy of data under h, replacing any file there.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	e := entry{data: append([]byte(nil), data...), modTime: time.Now()}
	b.mu.Lock()
	b.files[h] = e
	b.mu.Unlock()
	return nil
}

// Load returns a copy of length bytes of h from offset on (to the end when
// length is 0).
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %v: invalid range offset %d length %d: %w", h, offset, length, fs.ErrInvalid)
	}
	b.mu.RLock()
	e, ok := b.files[h]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("load %v: %w", h, fs.ErrNotExist)
	}
	size := int64(len(e.data))
	if offset > size || (length > 0 && int64(length) > size-offset) {
		return nil, fmt.Errorf("load %v: range %d+%d beyond size %d: %w", h, offset, length, size, io.ErrUnexpectedEOF)
	}
	end := size
	if length > 0 {
		end = offset + int64(length)
	}
	// Stored slices are never modified, only replaced, so copying outside
	// the lock is safe.
	return append([]byte(nil), e.data[offset:end]...), nil
}

// Stat returns the size and modification time of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	if err := h.Validate(); err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat: %w", err)
	}
	b.mu.RLock()
	e, ok := b.files[h]
	b.mu.RUnlock()
	if !ok {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, fs.ErrNotExist)
	}
	return backend.FileInfo{Name: h.Name, Size: int64(len(e.data)), ModTime: e.modTime}, nil
}

// List calls fn for every file of type t. It works on a snapshot of the
// store taken when it starts, so fn may call other methods.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !t.Valid() {
		return fmt.Errorf("list: invalid file type %q: %w", t, fs.ErrInvalid)
	}
	var infos []backend.FileInfo
	b.mu.RLock()
	for h, e := range b.files {
		if h.Type == t {
			infos = append(infos, backend.FileInfo{Name: h.Name, Size: int64(len(e.data)), ModTime: e.modTime})
		}
	}
	b.mu.RUnlock()
	return backend.ListInfos(ctx, infos, fn)
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	b.mu.Lock()
	_, ok := b.files[h]
	delete(b.files, h)
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("remove %v: %w", h, fs.ErrNotExist)
	}
	return nil
}
