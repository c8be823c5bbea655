package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

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
