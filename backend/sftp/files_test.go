package sftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"testing"
	"time"

	"dj/backend"
)

// memFile is a packFile over bytes that counts its reads and, like
// pkg/sftp's concurrent reads of more than one packet, answers a read that
// crosses the end short with io.EOF.
type memFile struct {
	data []byte

	mu    sync.Mutex // reads come in at once (readPieces)
	reads int
	// firstLen is the length of the first read.
	firstLen int
}

// count records a read of n bytes.
func (m *memFile) count(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reads == 0 {
		m.firstLen = n
	}
	m.reads++
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.count(len(p))
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) Close() error { return nil }

func (m *memFile) Stat() (fs.FileInfo, error) { return memInfo(len(m.data)), nil }

type memInfo int

func (s memInfo) Name() string       { return "f" }
func (s memInfo) Size() int64        { return int64(s) }
func (s memInfo) Mode() fs.FileMode  { return 0o400 }
func (s memInfo) ModTime() time.Time { return time.Time{} }
func (s memInfo) IsDir() bool        { return false }
func (s memInfo) Sys() any           { return nil }

// TestReadToEnd loads files of sizes around the first read's length whole,
// into no buffer, a small one and a large one: the content comes back
// exact, a file that fits the first read costs one read, and a caller's
// buffer with room is used. The first read is longer than a packet:
// pkg/sftp then sends it as concurrent requests and takes a short answer
// for the end of the file, where a read of one packet or less is retried
// from where a short answer ended (a second round trip).
func TestReadToEnd(t *testing.T) {
	b := newBackend(context.Background(), Config{})
	for _, size := range []int{0, 1, 197, maxPacket - 1, maxPacket, firstRead - 1, firstRead, firstRead + 1, 3*maxPacket + 5} {
		data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		for _, bufCap := range []int{0, 100, 4 * maxPacket} {
			for _, offset := range []int{0, size / 2} {
				t.Run(fmt.Sprintf("size %d, buffer %d, offset %d", size, bufCap, offset), func(t *testing.T) {
					f := &memFile{data: data}
					buf := make([]byte, 0, bufCap)
					got, err := b.readToEnd(f, int64(offset), buf)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, data[offset:]) {
						t.Fatalf("got %d bytes, want %d (content differs: %v)", len(got), size-offset, len(got) == size-offset)
					}
					if f.firstLen <= maxPacket {
						t.Errorf("first read of %d bytes: pkg/sftp would read one packet and retry a short answer", f.firstLen)
					}
					if wantReads := 1; size-offset < firstRead && f.reads != wantReads {
						t.Errorf("%d reads, want %d", f.reads, wantReads)
					}
					if len(got) > 0 && cap(buf) >= len(got) && &got[0] != &buf[:1][0] {
						t.Error("the caller's buffer had room but was not used")
					}
				})
			}
		}
	}
}

// TestReadToEndShort: a file that answers fewer bytes than its size says
// fails with io.ErrUnexpectedEOF.
func TestReadToEndShort(t *testing.T) {
	b := newBackend(context.Background(), Config{})
	f := &shortFile{memFile{data: make([]byte, 1000)}}
	if _, err := b.readToEnd(f, 0, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
}

// shortFile claims twice its size.
type shortFile struct{ memFile }

func (s *shortFile) Stat() (fs.FileInfo, error) { return memInfo(2 * len(s.data)), nil }

// cappedFile is a file on a server that answers a read with at most cap
// bytes, read through pkg/sftp: a read of up to one packet is asked again
// from where a short answer ended; a longer one goes out in packets at once
// and a short answer counts as the end of the file.
type cappedFile struct {
	memFile
	cap int
}

func (c *cappedFile) answer(p []byte, off int64) int {
	if off >= int64(len(c.data)) {
		return 0
	}
	return copy(p[:min(len(p), c.cap)], c.data[off:])
}

func (c *cappedFile) ReadAt(p []byte, off int64) (int, error) {
	c.count(len(p))
	if len(p) <= maxPacket {
		n := 0
		for n < len(p) {
			k := c.answer(p[n:], off+int64(n))
			if k == 0 {
				return n, io.EOF
			}
			n += k
		}
		return n, nil
	}
	for n := 0; n < len(p); n += maxPacket {
		want := min(maxPacket, len(p)-n)
		if k := c.answer(p[n:n+want], off+int64(n)); k < want {
			return n + k, io.EOF
		}
	}
	return len(p), nil
}

// TestReadCappedServer: files of a server that answers reads of 32 KiB at
// most (rclone serve sftp, SFTPGo; older OpenSSH 64 KiB) load whole and in
// ranges, the first read learns the cap and later ones read in pieces of it;
// a range past the end still fails, and a server without a cap never gets
// one learned.
func TestReadCappedServer(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstu"), 200_000)[:5<<20]
	b := newBackend(context.Background(), Config{})
	f := &cappedFile{memFile: memFile{data: data}, cap: 32 << 10}
	got, err := b.readRange(f, 1000, 3<<20, nil)
	if err != nil || !bytes.Equal(got, data[1000:1000+3<<20]) {
		t.Fatalf("ranged read: %d bytes, %v", len(got), err)
	}
	if c := b.readCap.Load(); c != 32<<10 {
		t.Errorf("learned cap %d, want %d", c, 32<<10)
	}
	for _, off := range []int64{0, 7, 5<<20 - 100} {
		got, err := b.readRange(f, off, 0, nil)
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Errorf("whole load from %d: %d bytes, %v", off, len(got), err)
		}
	}
	if _, err := b.readRange(f, 5<<20-10, 100, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("range past the end: %v, want io.ErrUnexpectedEOF", err)
	}

	// A fresh backend, the cap learned by a whole load.
	b = newBackend(context.Background(), Config{})
	if got, err := b.readRange(&cappedFile{memFile: memFile{data: data}, cap: 64 << 10}, 0, 0, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("whole load: %d bytes, %v", len(got), err)
	}
	if c := b.readCap.Load(); c != 64<<10 {
		t.Errorf("learned cap %d, want %d", c, 64<<10)
	}

	// No cap: a truncated range fails and teaches nothing.
	b = newBackend(context.Background(), Config{})
	if _, err := b.readRange(&memFile{data: data[:1<<20]}, 0, 2<<20, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("range past the end: %v", err)
	}
	if c := b.readCap.Load(); c != 0 {
		t.Errorf("a server without a cap: learned %d", c)
	}
}

// TestStallTimeoutOfOpen: the stall and connect time-outs of the context
// a backend is opened with hold for every connection, those dialled later
// under a request's context (a mount's reads) too.
func TestStallTimeoutOfOpen(t *testing.T) {
	ctx := backend.WithStallTimeout(context.Background(), 300*time.Millisecond)
	if got := newBackend(ctx, Config{}).cfg.StallTimeout; got != 300*time.Millisecond {
		t.Errorf("stall time-out %v, want the context's 300ms", got)
	}
	if got := newBackend(context.Background(), Config{}).cfg.StallTimeout; got != DefaultStallTimeout {
		t.Errorf("stall time-out %v, want DefaultStallTimeout", got)
	}
	if got := newBackend(ctx, Config{StallTimeout: time.Second}).cfg.StallTimeout; got != time.Second {
		t.Errorf("stall time-out %v, want the Config's 1s", got)
	}
	if got := newBackend(ctx, Config{}).cfg.connect; got != 300*time.Millisecond {
		t.Errorf("connect time-out %v, want the context's 300ms", got)
	}
	if got := newBackend(context.Background(), Config{}).cfg.connect; got != connectTimeout {
		t.Errorf("connect time-out %v, want %v", got, connectTimeout)
	}
}
