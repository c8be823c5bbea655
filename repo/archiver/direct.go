package archiver

import (
	"errors"
	"io"
	"os"

	"dj/internal/directio"

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
	if size < directMinSize || directio.ResidentFraction(f, size, residentSamples, residentWindow) >= 0.5 {
		return nil
	}
	return startDirectReader(f)
}

// startDirectReader switches f to O_DIRECT and starts reading it, or
// returns nil when the file system does not support O_DIRECT.
func startDirectReader(f *os.File) *directReader {
	if !directio.SetDirect(f, true) {
		return nil
	}
	d := &directReader{f: f, full: make(chan directBlockData, 1), free: make(chan []byte, 2),
		stop: make(chan struct{}), done: make(chan struct{})}
	d.free <- directio.AlignedBuffer(directBlock)
	d.free <- directio.AlignedBuffer(directBlock)
	go d.readAhead()
	return d
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
		if direct && off%directio.Align != 0 {
			// After a short read the offset is unaligned: go on buffered.
			direct = false
			directio.SetDirect(d.f, false)
		}
		var blk directBlockData
		for {
			n, err := unix.Pread(fd, buf, off)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EINVAL) && direct {
				direct = false
				directio.SetDirect(d.f, false)
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
