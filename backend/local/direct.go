package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"dj/backend"
	"dj/internal/directio"
)

// directMin is the smallest read of a pack that goes around the page cache
// when the range is not cached. Large blobs are what a mount streaming a big
// file or a restore reads; reading them with O_DIRECT spares the kernel
// filling the page cache and copying out of it (the largest part of a
// mount's system time), and keeps the user's page cache for the user. Small
// blobs stay buffered: they profit from the kernel's and this package's
// pack read-ahead.
const directMin = 256 << 10

// LoadRange reads length bytes of h at offset, as Load does, and returns
// them as a slice of buf when buf can hold them (for a read around the page
// cache: when buf starts at a 4096-byte boundary and has room for the range
// widened to 4096-byte boundaries on both sides), else of a new buffer.
// Large ranges of packs that are not in the page cache are read with
// O_DIRECT (directMin); everything else through the cache.
func (l *Local) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	if h.Type == backend.PackFile && length >= directMin {
		b, ok, err := l.loadDirect(ctx, h, offset, int64(length), buf)
		if ok || err != nil {
			return b, err
		}
	}
	if cap(buf) < length {
		buf = make([]byte, length)
	}
	buf = buf[:length]
	if err := l.LoadInto(ctx, h, offset, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// loadDirect reads [off, off+n) of a pack with O_DIRECT; ok is false when
// the range should be read through the page cache instead (it is cached,
// or the file system has no O_DIRECT).
func (l *Local) loadDirect(ctx context.Context, h backend.Handle, off, n int64, buf []byte) (_ []byte, ok bool, _ error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	p, err := l.path(h)
	if err != nil {
		return nil, false, fmt.Errorf("load: %w", err)
	}
	if off < 0 {
		return nil, false, nil // LoadInto reports it
	}
	cf, err := l.packs.acquire(p)
	if err != nil {
		return nil, false, fmt.Errorf("load %v: %w", h, err)
	}
	defer l.packs.release(cf)
	if n > cf.size-off {
		return nil, false, fmt.Errorf("load %v: range %d+%d beyond size %d: %w", h, off, n, cf.size, io.ErrUnexpectedEOF)
	}
	cf.openDirect()
	if cf.direct == nil || cf.cached(off, n) {
		return nil, false, nil
	}
	from := off &^ (directio.Align - 1)
	to := (off + n + directio.Align - 1) &^ (directio.Align - 1)
	if !directio.IsAligned(buf, to-from) {
		buf = directio.AlignedBuffer(int(to - from))
	}
	buf = buf[:to-from]
	need := off + n - from
	var got int64
	for got < need {
		m, err := unix.Pread(int(cf.direct.Fd()), buf[got:], from+got)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EINVAL) && got == 0:
			return nil, false, nil // refused after all: read it buffered
		case err != nil:
			return nil, false, fmt.Errorf("load %v: %w", h, err)
		case m == 0:
			return nil, false, fmt.Errorf("load %v: %w", h, io.ErrUnexpectedEOF)
		}
		got += int64(m)
	}
	return buf[off-from : off-from+n : off-from+n], true, nil
}

// openDirect opens the file a second time with O_DIRECT and maps it (for
// mincore), once; where either fails, cf.direct stays nil.
func (cf *cachedFile) openDirect() {
	cf.directOnce.Do(func() {
		if cf.size == 0 {
			return
		}
		d, err := os.OpenFile(cf.path, os.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			return
		}
		m, err := unix.Mmap(int(cf.f.Fd()), 0, int(cf.size), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			d.Close()
			return
		}
		cf.direct, cf.mapped = d, m
	})
}

// cached reports whether every page of [off, off+n) is in the page cache;
// errors count as not cached.
func (cf *cachedFile) cached(off, n int64) bool {
	const page = 4096
	var vec [512]byte // 2 MiB of pages per call
	first := off &^ (page - 1)
	end := off + n
	for first < end {
		last := min(end, first+int64(len(vec))*page, cf.size)
		pages := (last - first + page - 1) / page
		if directio.Resident(cf.mapped[first:last], vec[:]) != nil {
			return false
		}
		for _, v := range vec[:pages] {
			if v&1 == 0 {
				return false
			}
		}
		first = last
	}
	return true
}

// directChunk is the size of each direct read: larger requests cost the
// kernel more (it pins every page of the request) without reading faster.
const directChunk = 2 << 20

// directInFlight is how many direct reads of one file run at once.
const directInFlight = 4

// LoadUncached reads a whole file from the disk itself, bypassing the page
// cache (O_DIRECT): a check of stored data must see what the disk holds, not
// a cached copy, and reading around the cache saves the kernel a copy. It
// reads into buf when buf starts at a 4096-byte boundary and has room for
// the file rounded up to 4096 bytes, else into a new buffer, and returns the
// file's bytes (whose capacity the caller may pass back next time). Where
// the file system has no O_DIRECT, it reads through the cache.
func (l *Local) LoadUncached(ctx context.Context, h backend.Handle, buf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := l.path(h)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) { // no O_DIRECT on this file system
		f, err = os.Open(p)
	}
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	size := fi.Size()
	room := (size + directio.Align - 1) / directio.Align * directio.Align
	if !directio.IsAligned(buf, room) {
		buf = directio.AlignedBuffer(int(room))
	}
	buf = buf[:room]
	// Read the segments of the file at once: O_DIRECT gets no read-ahead,
	// so the disk sees as many requests as there are segments in flight.
	var wg sync.WaitGroup
	errs := make([]error, (room+directChunk-1)/directChunk)
	sem := make(chan struct{}, directInFlight)
	for k := range errs {
		off := int64(k) * directChunk
		end := min(room, off+directChunk)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[k] = preadFull(ctx, f, buf[off:end], off, min(size, end)-off)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("load %v: %w", h, err)
		}
	}
	return buf[:size], nil
}

// preadFull reads want bytes at off into buf (which may be longer, for
// alignment), through the cache if the file system refuses a direct read.
func preadFull(ctx context.Context, f *os.File, buf []byte, off, want int64) error {
	var n int64
	for n < want {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := unix.Pread(int(f.Fd()), buf[n:], off+n)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EINVAL) {
			// Refused direct (an unaligned piece): read it through the cache.
			g, oerr := os.Open(f.Name())
			if oerr != nil {
				return oerr
			}
			_, err = g.ReadAt(buf[n:want], off+n)
			g.Close()
			return err
		}
		if err != nil {
			return err
		}
		if m == 0 {
			return io.ErrUnexpectedEOF
		}
		n += int64(m)
	}
	return nil
}
