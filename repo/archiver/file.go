// Reading and chunking files: the walker asks the kernel to read ahead
// (prefetch), a file worker reads a file (with O_DIRECT for large uncached
// files, direct.go), chunks it and hands the chunks to the blob workers.

package archiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/chunker"
	"dj/repo/crypto"
	"dj/repo/tree"
)

type fileJob struct {
	path  string
	fi    os.FileInfo
	node  *tree.Node
	prev  *tree.Node
	fut   *future
	start time.Time // set by saveFile
	// fd is the file, opened by openAhead, or -1 (never left at 0, which
	// is standard input); saveFile closes it.
	fd int
}

type hardlinkEntry struct {
	done    chan struct{}
	content []crypto.ID
	ok      bool
}

// prefetchAhead is how many files the walker queues, and asks the kernel to
// read ahead, before the file workers take them.
const prefetchAhead = 64

// prefetchBytes is how much of a file prefetch asks the kernel to read.
const prefetchBytes = 1 << 20

// openAhead opens a file for its file worker, and asks the kernel to start
// reading its beginning into the page cache without waiting for it
// (prefetch). On a cold cache, small files are otherwise read one at a time
// per worker, and the disk idles while the workers compress. It returns the
// file descriptor, which the worker reads and closes (so the file is opened
// once), or -1 when the file cannot be opened: the worker then opens it
// itself and reports the error.
func openAhead(path string, size uint64) int {
	fd, err := openForReading(path)
	if err != nil {
		return -1
	}
	if size > 0 {
		_ = unix.Fadvise(fd, 0, int64(min(size, prefetchBytes)), unix.FADV_WILLNEED)
	}
	return fd
}

// openForReading opens a file read-only without following a symbolic link,
// without updating its access time where the caller may ask that, and
// without blocking should it have been replaced by a FIFO. Its errors read
// as those of os.Open.
func openForReading(path string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	for {
		fd, err := unix.Open(path, flags|unix.O_NOATIME, 0)
		if err == unix.EPERM { // O_NOATIME needs the file's owner or CAP_FOWNER
			fd, err = unix.Open(path, flags, 0)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// fdReader reads a file descriptor; its errors read as those of os.File.
// A file worker reads small files through it: an os.File would cost a few
// system calls more per file (the poller's set-up) for nothing.
type fdReader struct {
	fd   int
	path string
}

// Read implements io.Reader.
func (r fdReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(r.fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: r.path, Err: err}
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// saveFile reads, chunks and saves one file (run by a file worker).
func (a *archiver) saveFile(ctx context.Context, ch *chunker.Chunker, job fileJob) {
	defer close(job.fut.done)
	n := job.node
	a.current.Store(&job.path)
	job.start = time.Now()
	a.reading.Store(job.path, struct{}{})
	defer a.reading.Delete(job.path)
	defer a.queued.Add(-1)
	fd := job.fd // readContent takes it over; closed here if it is not read
	defer func() {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}()
	st, _ := job.fi.Sys().(*syscall.Stat_t)
	// Hard links: read the content once per run.
	if st != nil && st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		a.hlMu.Lock()
		e, seen := a.hardlinks[key]
		if !seen {
			e = &hardlinkEntry{done: make(chan struct{})}
			a.hardlinks[key] = e
		}
		a.hlMu.Unlock()
		if seen {
			<-e.done
			if e.ok {
				n.Content = e.content
				a.bytes.Add(n.Size)
				a.countFile(job)
				job.fut.node = n
				return
			}
		} else {
			defer func() {
				e.ok = job.fut.node != nil && job.fut.err == nil
				e.content = n.Content
				close(e.done)
			}()
		}
	}
	var src chunkSource = ch
	if size := a.fixedFor(job); size > 0 {
		src = chunker.NewFixed(nil, size)
		n.FixedChunk = uint64(size)
	}
	content, err := a.readContent(ctx, src, job.path, n, fd)
	fd = -1
	if err != nil {
		if ctx.Err() != nil {
			job.fut.err = ctx.Err()
			return
		}
		var se *saveError
		if errors.As(err, &se) {
			// The repository could not take the data (a full disk, a
			// lost server): the backup fails, it is not this file's fault.
			job.fut.err = se.err
			return
		}
		a.warn(job.path, err)
		a.files.Add(^uint64(0)) // left out of the snapshot: not processed
		return
	}
	n.Content = content
	a.countFile(job)
	job.fut.node = n
}

// fixedFor returns the size of the fixed chunks a file is cut into, or 0
// for content-defined chunks: the size the parent snapshot's node records
// (a file keeps its chunker), or for block devices and files matching
// Options.FixedChunks the configured one.
func (a *archiver) fixedFor(job fileJob) int {
	if job.prev != nil && job.prev.Type == tree.File && job.prev.FixedChunk > 0 && job.prev.FixedChunk <= tree.MaxFixedChunk {
		return int(job.prev.FixedChunk)
	}
	if isDevice(job.fi) || a.opts.FixedChunks != nil && a.opts.FixedChunks(job.path, job.fi) {
		return a.fixedSize()
	}
	return 0
}

func (a *archiver) countFile(job fileJob) {
	action := ItemNew
	if job.prev == nil {
		a.filesNew.Add(1)
	} else if sameContent(job.prev.Content, job.node.Content) {
		a.filesUnmod.Add(1)
		action = ItemUnchanged
	} else {
		a.filesChanged.Add(1)
		action = ItemModified
	}
	if a.opts.ItemDone != nil {
		a.opts.ItemDone(Item{Path: job.path, Action: action, Duration: time.Since(job.start),
			DataAdded: a.claimAdded(job.node.Content)})
	}
}

// claimAdded returns the plaintext size of the blobs among ids that this
// run added and no other finished file has claimed, and claims them.
func (a *archiver) claimAdded(ids []crypto.ID) uint64 {
	var n uint64
	for _, id := range ids {
		if v, ok := a.newBlobs.LoadAndDelete(id); ok {
			n += v.(uint64)
		}
	}
	return n
}

func sameContent(a, b []crypto.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// errChanged is wrapped into warnings for files modified during reading.
var errChanged = errors.New("file changed while it was read")

// readContent reads, chunks and saves the file at path (lstat'ed as n),
// from fd when it is open already (openAhead; readContent closes it),
// and returns its blob ids.
func (a *archiver) readContent(ctx context.Context, ch chunkSource, path string, n *tree.Node, fd int) ([]crypto.ID, error) {
	if fd < 0 {
		var err error
		if fd, err = openForReading(path); err != nil {
			return nil, err
		}
	}
	var r io.Reader = fdReader{fd: fd, path: path}
	if int64(n.Size) >= directMinSize {
		// Large files may be read with O_DIRECT, which takes an os.File.
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		r = f
		if dr := newDirectReader(f, int64(n.Size)); dr != nil {
			defer dr.Close()
			r = dr
		}
	} else {
		defer unix.Close(fd)
	}
	ids, size, err := a.chunkStream(ctx, ch, r)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
		if size != n.Size {
			n.Size = size
			a.warn(path, fmt.Errorf("device changed its size while it was read: %w", errChanged))
		}
	} else if err == nil {
		if uint64(st.Size) != n.Size || st.Mtim != timespec(n.ModTime) || size != n.Size {
			n.Size = size
			a.warn(path, errChanged)
		}
	}
	return ids, nil
}

// chunkStream chunks r and saves the chunks through the blob workers,
// returning the blob ids in order and the number of bytes read.
func (a *archiver) chunkStream(ctx context.Context, ch chunkSource, r io.Reader) ([]crypto.ID, uint64, error) {
	ch.Reset(r)
	var results []*blobResult
	var size uint64
	for {
		var buf []byte
		select {
		case buf = <-a.bufs:
		case <-ctx.Done():
			waitAll(results)
			return nil, 0, ctx.Err()
		}
		if buf == nil {
			buf = make([]byte, 0, a.chunkBufSize())
		}
		chunk, err := ch.Next(buf)
		if err == io.EOF {
			a.putChunkBuf(buf)
			break
		}
		if err != nil {
			a.putChunkBuf(buf)
			waitAll(results)
			return nil, 0, err
		}
		size += uint64(len(chunk))
		a.bytes.Add(uint64(len(chunk)))
		res := &blobResult{done: make(chan struct{})}
		results = append(results, res)
		if id, ok := a.knownZero(chunk); ok {
			res.id = id
			a.putChunkBuf(chunk)
			close(res.done)
			continue
		}
		if len(chunk) < a.minSize && len(results) == 1 {
			// A small file is one chunk: save it here rather than hand it over.
			res.id, res.added, res.err = a.saveData(ctx, chunk)
			a.putChunkBuf(chunk)
			close(res.done)
			continue
		}
		select {
		case a.blobJobs <- blobJob{buf: chunk, res: res}:
		case <-ctx.Done():
			a.putChunkBuf(chunk)
			close(res.done)
			waitAll(results)
			return nil, 0, ctx.Err()
		}
	}
	waitAll(results)
	ids := make([]crypto.ID, len(results))
	for i, r := range results {
		if r.err != nil {
			return nil, 0, &saveError{r.err}
		}
		ids[i] = r.id
	}
	return ids, size, nil
}

// saveError is an error of the repository saving a chunk, as opposed to
// one of reading the file: it fails the whole backup.
type saveError struct{ err error }

func (e *saveError) Error() string { return e.err.Error() }
func (e *saveError) Unwrap() error { return e.err }

func timespec(t time.Time) syscall.Timespec {
	return syscall.NsecToTimespec(t.UnixNano())
}
