package sftp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"testing"
	"time"
)

// memFile is a packFile over bytes that counts its reads and, like
// pkg/sftp's concurrent reads of more than one packet, answers a read that
// crosses the end short with io.EOF.
type memFile struct {
	data  []byte
	reads int
	// firstLen is the length of the first read.
	firstLen int
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if m.reads == 0 {
		m.firstLen = len(p)
	}
	m.reads++
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
	b := newBackend(Config{})
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
	b := newBackend(Config{})
	f := &shortFile{memFile{data: make([]byte, 1000)}}
	if _, err := b.readToEnd(f, 0, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
}

// shortFile claims twice its size.
type shortFile struct{ memFile }

func (s *shortFile) Stat() (fs.FileInfo, error) { return memInfo(2 * len(s.data)), nil }
