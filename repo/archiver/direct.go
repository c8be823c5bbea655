package archiver

import (
	"errors"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Large files that are not in the page cache are read with O_DIRECT: the
// disk writes straight into dj's buffer, which saves the kernel's copy out
// of the page cache (on a cold 1 GiB file, most of the system time of a
// backup), and the backup does not push the user's working set out of the
// cache. A file that is mostly cached already is read through the cache.
const (
	// directMinSize is the smallest file read with O_DIRECT.
	directMinSize = 32 << 20
	// directBlock is the size of each direct read: a multiple of every
	// logical block size, large enough to keep the disk streaming.
	directBlock = 4 << 20
	// directAlign is the buffer alignment O_DIRECT needs (at most a page).
	directAlign = 4096
	// residentSamples and residentWindow: how much of a file is probed
	// with mincore to judge whether it is cached.
	residentSamples = 8
	residentWindow  = 1 << 20
)

// directReader reads a file with O_DIRECT set, in aligned blocks, one
// block ahead of its consumer (O_DIRECT gets no read-ahead from the kernel),
// and hands the bytes out like any io.Reader. If the file system refuses an
// unaligned tail it clears O_DIRECT and reads on through the cache. Close
// stops the read-ahead.
type directReader struct {
	f    *os.File
	full chan directBlockData // filled blocks, in file order
	free chan []byte          // buffers to fill
	stop chan struct{}
	done chan struct{}

	cur      directBlockData
	pos      int
	finished bool // the last block (EOF or error) has been taken
}

type directBlockData struct {
	buf []byte
	n   int
	err error // io.EOF after the last byte
}

// newDirectReader switches f to O_DIRECT and returns a reader for it, or
// nil when the file is small, mostly cached, or its file system does not
// support O_DIRECT (f is then unchanged).
func newDirectReader(f *os.File, size int64) *directReader {
	if size < directMinSize || residentFraction(f, size) >= 0.5 {
		return nil
	}
	return startDirectReader(f)
}

// startDirectReader switches f to O_DIRECT and starts reading it, or
// returns nil when the file system does not support O_DIRECT.
func startDirectReader(f *os.File) *directReader {
	fd := uintptr(f.Fd())
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return nil
	}
	if _, err := unix.FcntlInt(fd, unix.F_SETFL, flags|unix.O_DIRECT); err != nil {
		return nil
	}
	d := &directReader{f: f, full: make(chan directBlockData, 1), free: make(chan []byte, 2),
		stop: make(chan struct{}), done: make(chan struct{})}
	d.free <- alignedBuffer(directBlock)
	d.free <- alignedBuffer(directBlock)
	go d.readAhead()
	return d
}

// alignedBuffer returns n bytes starting at a directAlign boundary.
func alignedBuffer(n int) []byte {
	raw := make([]byte, n+directAlign)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign); r != 0 {
		shift = directAlign - r
	}
	return raw[shift : shift+n]
}

// readAhead fills free buffers in file order until EOF, an error or Close.
func (d *directReader) readAhead() {
	defer close(d.done)
	fd := int(d.f.Fd())
	direct := true
	var off int64
	for {
		var buf []byte
		select {
		case buf = <-d.free:
		case <-d.stop:
			return
		}
		if direct && off%directAlign != 0 {
			// After a short read the offset is unaligned: go on buffered.
			direct = false
			clearDirect(d.f)
		}
		var blk directBlockData
		for {
			n, err := unix.Pread(fd, buf, off)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EINVAL) && direct {
				direct = false
				clearDirect(d.f)
				continue
			}
			blk = directBlockData{buf: buf, n: max(n, 0)}
			switch {
			case err != nil:
				blk.err = &os.PathError{Op: "read", Path: d.f.Name(), Err: err}
			case n == 0:
				blk.err = io.EOF
			}
			off += int64(blk.n)
			break
		}
		select {
		case d.full <- blk:
		case <-d.stop:
			return
		}
		if blk.err != nil {
			return
		}
	}
}

// Read implements io.Reader.
func (d *directReader) Read(p []byte) (int, error) {
	for d.pos == d.cur.n {
		if d.cur.err != nil {
			return 0, d.cur.err
		}
		if d.cur.buf != nil {
			d.free <- d.cur.buf
		}
		d.cur, d.pos = <-d.full, 0
	}
	n := copy(p, d.cur.buf[d.pos:d.cur.n])
	d.pos += n
	return n, nil
}

// Close stops the read-ahead; the file stays open.
func (d *directReader) Close() {
	close(d.stop)
	<-d.done
}

func clearDirect(f *os.File) {
	fd := uintptr(f.Fd())
	if flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err == nil {
		_, _ = unix.FcntlInt(fd, unix.F_SETFL, flags&^unix.O_DIRECT)
	}
}

// residentFraction estimates how much of a file is in the page cache, from
// mincore on a few windows spread over it. Errors count as not cached.
func residentFraction(f *os.File, size int64) float64 {
	pageSize := int64(os.Getpagesize())
	var resident, total int
	vec := make([]byte, residentWindow/pageSize)
	for i := int64(0); i < residentSamples; i++ {
		off := size / residentSamples * i
		off -= off % residentWindow // page aligned
		n := min(int64(residentWindow), size-off)
		if n <= 0 {
			continue
		}
		m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return 0
		}
		pages := int((n + pageSize - 1) / pageSize)
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
		_ = unix.Munmap(m)
		if errno != 0 {
			return 0
		}
		for _, v := range vec[:pages] {
			resident += int(v & 1)
		}
		total += pages
	}
	if total == 0 {
		return 0
	}
	return float64(resident) / float64(total)
}
