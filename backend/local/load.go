// Reading files: ranges through the page cache (packs through the cache of
// open files) and prefetch hints.

package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"dj/backend"
)

// Prefetch asks the kernel to start reading a whole file into the page
// cache, without waiting: a reader that will load many whole packs one
// after another (check --read-data) keeps the disk busy while it verifies
// the pack before. Errors are ignored; the later Load reports them.
func (l *Local) Prefetch(ctx context.Context, h backend.Handle) {
	if ctx.Err() != nil {
		return
	}
	p, err := l.path(h)
	if err != nil {
		return
	}
	f, err := os.Open(p)
	if err != nil {
		return
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED)
	_ = f.Close()
}

// Load reads length bytes of h starting at offset, or everything from offset
// on when length is 0. A range that does not lie inside the file gives an
// error satisfying errors.Is(err, io.ErrUnexpectedEOF).
func (l *Local) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	var buf []byte
	err := l.load(ctx, h, offset, length, func(n int64) []byte {
		buf = make([]byte, n)
		return buf
	})
	return buf, err
}

// LoadInto reads exactly len(buf) bytes of h at offset into buf, so hot
// paths can reuse buffers instead of allocating (and zeroing) one per read.
func (l *Local) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	if len(buf) == 0 {
		return fmt.Errorf("load %v: empty buffer: %w", h, fs.ErrInvalid)
	}
	return l.load(ctx, h, offset, len(buf), func(int64) []byte { return buf })
}

func (l *Local) load(ctx context.Context, h backend.Handle, offset int64, length int, alloc func(n int64) []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(h)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if offset < 0 || length < 0 {
		return fmt.Errorf("load %v: invalid range offset %d length %d: %w", h, offset, length, fs.ErrInvalid)
	}
	var f *os.File
	var size int64
	if h.Type == backend.PackFile {
		cf, err := l.packs.acquire(p)
		if err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
		defer l.packs.release(cf)
		f, size = cf.f, cf.size
		if length > 0 {
			cf.readAhead(offset, int64(length))
		}
	} else {
		f, err = os.Open(p)
		if err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
		size = fi.Size()
	}
	if offset > size || (length > 0 && int64(length) > size-offset) {
		return fmt.Errorf("load %v: range %d+%d beyond size %d: %w", h, offset, length, size, io.ErrUnexpectedEOF)
	}
	n := int64(length)
	if length == 0 {
		n = size - offset
	}
	buf := alloc(n)
	got, err := f.ReadAt(buf, offset)
	if err != nil && (got < len(buf) || !errors.Is(err, io.EOF)) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the file shrank under us
		}
		return fmt.Errorf("load %v: %w", h, err)
	}
	return nil
}
