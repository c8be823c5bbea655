// Saving, loading, statting and removing single files.

package sftp

import (
	"context"
	"crypto/rand"
	"dj/backend"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"

	"github.com/pkg/sftp"
)

// tempName returns a fresh temporary name beside p.
func tempName(p string) string {
	var r [8]byte
	_, _ = rand.Read(r[:])
	return p + backend.TempMarker + hex.EncodeToString(r[:])
}

// Save writes data to a temporary file beside the final name, makes it
// read-only, syncs it where the server can (fsync@openssh.com) and renames
// it into place, replacing an existing file.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	p, err := b.filePath(h)
	if err != nil {
		return err
	}
	err = b.do(ctx, func(c *conn) error {
		tmp := tempName(p)
		f, err := c.client.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if errors.Is(err, fs.ErrNotExist) {
			// A repository laid out by another program may lack
			// data/XX or another directory: create it.
			if err := mkdirAll(c.client, path.Dir(p)); err != nil {
				return err
			}
			f, err = c.client.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", tmp, err)
		}
		err = writeFile(ctx, c, f, data)
		if err == nil && c.fsync {
			// The data is on the server's disk: the close and the
			// rename go out together, one round trip instead of two
			// (a rename of an open file is fine on POSIX).
			closed := make(chan error, 1)
			go func() { closed <- f.Close() }()
			err = ctx.Err()
			if err == nil {
				err = rename(c, tmp, p)
			}
			if cerr := <-closed; err == nil && cerr != nil {
				err = fmt.Errorf("close %s: %w", tmp, cerr)
			}
		} else {
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("close %s: %w", tmp, cerr)
			}
			if err == nil {
				err = ctx.Err()
			}
			if err == nil {
				err = rename(c, tmp, p)
			}
		}
		if err != nil {
			if !isConnectionError(c, err) {
				_ = c.client.Remove(tmp)
			}
			return err
		}
		return nil
	})
	// A pack saved again (repair) replaces the file a handle may hold.
	b.forgetPack(h, p)
	if err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	return nil
}

// forgetPack closes the handles every connection keeps of the pack file
// h at p.
func (b *Backend) forgetPack(h backend.Handle, p string) {
	if h.Type != backend.PackFile {
		return
	}
	b.mu.Lock()
	var conns []*conn
	for _, s := range b.slots {
		if s.c != nil {
			conns = append(conns, s.c)
		}
	}
	b.mu.Unlock()
	for _, c := range conns {
		c.packs.forget(p)
	}
}

// writeFile writes data with many requests in flight, makes the file
// read-only and syncs it. The chmod goes out with the writes (the open
// handle may write whatever the mode), saving a round trip.
func writeFile(ctx context.Context, c *conn, f *sftp.File, data []byte) error {
	chmodded := make(chan error, 1)
	go func() { chmodded <- f.Chmod(fileMode) }()
	if len(data) > 0 {
		n, err := f.WriteAt(data, 0)
		if err == nil && n != len(data) {
			err = io.ErrShortWrite
		}
		if err != nil {
			<-chmodded
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
	}
	if err := <-chmodded; err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.fsync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", f.Name(), err)
		}
	}
	return nil
}

// rename moves tmp to p, replacing p: atomically with OpenSSH's
// posix-rename extension, else by removing p first.
func rename(c *conn, tmp, p string) error {
	if c.posixRename {
		if err := c.client.PosixRename(tmp, p); err != nil {
			return fmt.Errorf("rename %s: %w", tmp, err)
		}
		return nil
	}
	if err := c.client.Rename(tmp, p); err != nil {
		if _, serr := c.client.Stat(p); serr != nil {
			return fmt.Errorf("rename %s: %w", tmp, err)
		}
		if err := c.client.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replace %s: %w", p, err)
		}
		if err := c.client.Rename(tmp, p); err != nil {
			return fmt.Errorf("rename %s: %w", tmp, err)
		}
	}
	return nil
}

// Load reads length bytes of h from offset (to the end when length is 0).
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	return b.LoadRange(ctx, h, offset, length, nil)
}

// LoadRange reads length bytes of h from offset into buf when it has room
// (to the end of the file when length is 0), with many requests in
// flight.
func (b *Backend) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	p, err := b.filePath(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %s: negative range (%d, %d): %w", h, offset, length, fs.ErrInvalid)
	}
	var out []byte
	err = b.do(ctx, func(c *conn) error {
		if h.Type == backend.PackFile {
			pf, err := c.packs.get(p, func() (packFile, error) { return c.client.Open(p) })
			if err != nil {
				return err
			}
			defer c.packs.put(pf)
			out, err = b.readRange(pf.f, offset, length, buf)
			if err != nil && !isConnectionError(c, err) {
				// Whatever went wrong, the next load opens the
				// file again.
				c.packs.forget(p)
			}
			return err
		}
		f, err := c.client.Open(p)
		if err != nil {
			return err
		}
		// Nothing waits for the close of a file that was only read:
		// its reply would cost a round trip per load.
		c.begin()
		defer func() {
			go func() {
				defer c.end()
				_ = f.Close()
			}()
		}()
		out, err = b.readRange(f, offset, length, buf)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	return out, nil
}

// readRange reads length bytes of f from offset into buf when it has room
// (to the end of the file when length is 0).
func (b *Backend) readRange(f packFile, offset int64, length int, buf []byte) ([]byte, error) {
	if length == 0 {
		return b.readToEnd(f, offset, buf)
	}
	var out []byte
	if buf != nil && cap(buf) >= length {
		out = buf[:length]
	} else {
		out = make([]byte, length)
	}
	got, err := b.readAt(f, out, offset)
	if got == length {
		return out, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("range (%d, %d) past the end (read %d bytes): %w", offset, length, got, io.ErrUnexpectedEOF)
	}
	return nil, err
}

// Servers that answer reads short. OpenSSH's sftp-server answers a read
// of up to 255 KiB whole (maxPacket, what the backend asks of a server
// that states its limits; others get safePacket); older ones (64 KiB) and
// servers built on pkg/sftp (rclone serve sftp, SFTPGo: 32 KiB) answer
// less. pkg/sftp takes a short answer to a read of more
// than one packet for the end of the file, so such a server's files would
// seem cut after the first answer. A short answer where the file goes on
// shows the server's cap (Backend.readCap): the rest is read in pieces of
// that size, many at once, and every later read starts that way.

// minReadPiece is the smallest cap readAt learns (SFTP servers must
// answer reads of 32 KiB; a smaller short answer is the end of a file).
const minReadPiece = 4 << 10

// readAt reads len(p) bytes of f at off like io.ReaderAt, also from a
// server that answers reads short.
func (b *Backend) readAt(f packFile, p []byte, off int64) (int, error) {
	if step := int(b.readCap.Load()); step > 0 {
		return readPieces(f, p, off, step)
	}
	got, err := f.ReadAt(p, off)
	if got == len(p) || got < minReadPiece || (err != nil && !errors.Is(err, io.EOF)) {
		return got, err
	}
	more, err := b.readRest(f, p[got:], off+int64(got), got)
	return got + more, err
}

// readRest reads p at off after a first answer of got bytes that was
// short: the end of the file, or a server's cap, which is learned when the
// file goes on.
func (b *Backend) readRest(f packFile, p []byte, off int64, got int) (int, error) {
	more, err := readPieces(f, p, off, got)
	if more > 0 {
		b.readCap.CompareAndSwap(0, int64(got))
	}
	return more, err
}

// readPieces reads len(p) bytes of f at off in pieces of step bytes, up to
// requestsPerFile at once; each piece is read whole unless the file ends
// in it. It returns the bytes read before the first piece that came back
// short, and io.EOF then.
func readPieces(f packFile, p []byte, off int64, step int) (int, error) {
	n := (len(p) + step - 1) / step
	got := make([]int, n)
	errs := make([]error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(n, requestsPerFile) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				piece := p[i*step : min(len(p), (i+1)*step)]
				got[i], errs[i] = f.ReadAt(piece, off+int64(i*step))
			}
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		total += got[i]
		if want := min(len(p), (i+1)*step) - i*step; got[i] < want {
			if errs[i] == nil {
				errs[i] = io.EOF
			}
			return total, errs[i]
		}
	}
	return total, nil
}

// firstRead is how much of a file loaded whole is asked for together with
// its size: one byte past a packet, so that pkg/sftp sends two reads at
// once and takes a short first answer for the end of the file. A read of
// at most one packet is retried from where a short answer ended, which
// cost every small file (the config, a key, a lock, a snapshot, most index
// files) a second round trip for the end-of-file answer.
const firstRead = maxPacket + 1

// readToEnd reads f from offset to its end, into buf when it has room. The
// size and the first firstRead bytes are asked for at once: a whole small
// file then costs one round trip after the open.
func (b *Backend) readToEnd(f packFile, offset int64, buf []byte) ([]byte, error) {
	type stat struct {
		size int64
		err  error
	}
	stated := make(chan stat, 1)
	go func() {
		fi, err := f.Stat()
		if err != nil {
			stated <- stat{err: err}
			return
		}
		stated <- stat{size: fi.Size()}
	}()
	first, inBuf := buf[:cap(buf)], true
	if len(first) < firstRead {
		inBuf = false
		p, _ := b.firstBufs.Get().(*[]byte)
		if p == nil {
			fresh := make([]byte, firstRead)
			p = &fresh
		}
		defer b.firstBufs.Put(p)
		first = *p
	}
	got, rerr := f.ReadAt(first[:firstRead], offset)
	st := <-stated
	if st.err != nil {
		return nil, st.err
	}
	if offset > st.size {
		return nil, fmt.Errorf("offset %d past the end (%d bytes): %w", offset, st.size, io.ErrUnexpectedEOF)
	}
	n := int(st.size - offset)
	if want := min(n, firstRead); got < want && got >= minReadPiece && (rerr == nil || errors.Is(rerr, io.EOF)) {
		// A server that answers reads short (readAt).
		var more int
		more, rerr = b.readRest(f, first[got:want], offset+int64(got), got)
		got += more
	}
	if got < n {
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, rerr
		}
		if got < firstRead {
			// Shorter than its size said: the file changed, or the
			// server answered short.
			return nil, fmt.Errorf("read %d of %d bytes: %w", got, n, io.ErrUnexpectedEOF)
		}
	}
	var out []byte
	switch {
	case cap(buf) < n:
		out = make([]byte, n)
		copy(out, first[:min(got, n)])
	case inBuf: // first is buf
		out = buf[:n]
	default:
		out = buf[:n]
		copy(out, first[:min(got, n)])
	}
	if got >= n {
		return out, nil
	}
	more, err := b.readAt(f, out[got:], offset+int64(got))
	if got+more == n {
		return out, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %d of %d bytes: %w", got+more, n, io.ErrUnexpectedEOF)
	}
	return nil, err
}

// Stat returns the size and modification time of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	p, err := b.filePath(h)
	if err != nil {
		return backend.FileInfo{}, err
	}
	fi, err := b.stat(ctx, p)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %w", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	p, err := b.filePath(h)
	if err != nil {
		return err
	}
	// Forgotten before, so that no handle of this backend holds the file
	// open (some servers refuse to remove an open file), and after, so
	// that no load that raced the removal keeps one.
	b.forgetPack(h, p)
	err = b.do(ctx, func(c *conn) error { return c.client.Remove(p) })
	b.forgetPack(h, p)
	if err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	return nil
}
