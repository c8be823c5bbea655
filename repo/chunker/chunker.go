// Package chunker splits a stream into content-defined chunks with FastCDC
// (gear rolling hash, normalized chunking, cut-point skipping).
//
// The gear table is keyed: dj derives it from the repository key, so the cut
// points depend on the key as well as on the content, and someone who knows
// a file cannot compute its chunk sizes without the key. (A keyed table is a
// partial defence against chunking attacks, not a proof; the pack writer
// also hides the sizes of single chunks.)
//
// A chunk ends after the byte at which the gear hash h, updated per byte as
// h = h<<1 + gear[b], has all of its top k bits zero. No byte of the first
// min-64 of a chunk is hashed; the next 64 bytes are hashed without testing,
// so from length min on, every test depends only on the last 64 bytes (the
// window of a 64-bit gear hash) and not on where the chunk began. Lengths
// below avg are tested with k = log2(avg)+2 bits, lengths from avg on with
// k = log2(avg)-2 bits (normalization level 2), and a chunk that reaches max
// bytes is cut there.
package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Default chunk size bounds of a dj repository.
const (
	// MinSize is the smallest chunk (except the last chunk of a stream).
	MinSize = 512 << 10
	// AvgSize is the size at which the cut condition loosens; the mean chunk
	// size over random data is a little above it (about 1.19 × AvgSize).
	AvgSize = 1 << 20
	// MaxSize is the largest chunk.
	MaxSize = 8 << 20
)

// normLevel is the normalization level: the mask before avg has this many
// bits more than log2(avg), the mask after avg this many bits less.
const normLevel = 2

// window is the number of bytes that a 64-bit gear hash depends on.
const window = 64

// defaultBufSize is the size of the internal read buffer.
const defaultBufSize = 1 << 20

// maxEmptyReads is how many reads in a row may return no data and no error
// before the reader is declared broken.
const maxEmptyReads = 100

// Chunker splits a stream into content-defined chunks.
type Chunker struct {
	r    io.Reader
	gear *[256]uint64

	// Chunk offsets (0-based, byte index within the chunk) at which hashing
	// starts, testing starts, and the looser mask takes over; and the
	// maximum chunk length.
	hashFrom, testFrom, normFrom, max int
	maskS, maskL                      uint64

	bufSize  int
	buf      []byte
	pos, end int   // unread data is buf[pos:end]
	eof      bool  // r has reported io.EOF
	err      error // sticky read error, returned once buf is drained
}

// New returns a chunker over r using gear, a 256-entry table of random
// 64-bit values (dj derives it from the repository key, so cut points are
// keyed and can't be used to guess content). gear must not be nil. It uses
// MinSize, AvgSize and MaxSize.
func New(r io.Reader, gear *[256]uint64) *Chunker {
	return NewWithSizes(r, gear, MinSize, AvgSize, MaxSize)
}

// NewWithSizes is New with other size bounds (tests use small sizes). avg
// must be a power of two, min < avg < max. Sizes that break these rules do
// not panic: max is raised to at least 1, min and avg are clamped into
// [0, max] with min <= avg, and the masks use log2(avg) rounded down.
func NewWithSizes(r io.Reader, gear *[256]uint64, min, avg, max int) *Chunker {
	max = bound(max, 1, int(^uint(0)>>1))
	min = bound(min, 0, max)
	avg = bound(avg, min, max)

	c := &Chunker{r: r, gear: gear, max: max, bufSize: defaultBufSize}
	// A chunk of length n ends with the byte at offset n-1, so the first
	// tested offset is min-1 (length min, but never below length 1).
	c.testFrom = bound(min-1, 0, max-1)
	c.normFrom = bound(avg-1, c.testFrom, max-1)
	c.hashFrom = bound(c.testFrom-(window-1), 0, c.testFrom)

	avgBits := 0
	if avg > 0 {
		avgBits = bits.Len(uint(avg)) - 1
	}
	c.maskS = topMask(avgBits + normLevel)
	c.maskL = topMask(avgBits - normLevel)
	return c
}

// bound returns v clamped into [lo, hi].
func bound(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// topMask returns a mask of the top k bits of a uint64, k clamped to [1, 63].
func topMask(k int) uint64 {
	k = bound(k, 1, 63)
	return ^uint64(0) << (64 - k)
}

// Reset makes the chunker read from r from its start state, keeping its
// internal buffer (avoids allocation per file).
func (c *Chunker) Reset(r io.Reader) {
	c.r = r
	c.pos, c.end = 0, 0
	c.eof = false
	c.err = nil
}

// Next returns the next chunk, written into buf[:0] (grown if needed; the
// caller may reuse it), or io.EOF after the last chunk. A read error is
// returned as is (wrapped); the chunk it interrupted is not returned, and
// every later call returns the same error until Reset.
func (c *Chunker) Next(buf []byte) ([]byte, error) {
	out := buf[:0]
	gear := c.gear
	var h uint64
	n := 0 // length of the chunk so far
	for {
		if c.pos == c.end {
			if c.err != nil {
				return nil, c.err
			}
			if c.eof {
				if n == 0 {
					return nil, io.EOF
				}
				return out, nil
			}
			c.fill()
			continue
		}
		data := c.buf[c.pos:c.end]
		var k int // bytes of data taken into the chunk
		cut := false
		switch {
		case n < c.hashFrom:
			k = min(len(data), c.hashFrom-n)
		case n < c.testFrom:
			k = min(len(data), c.testFrom-n)
			h = hash(h, data[:k], gear)
		case n < c.normFrom:
			k = min(len(data), c.normFrom-n)
			if i, hh := scan(h, data[:k], gear, c.maskS); i >= 0 {
				k, cut = i+1, true
			} else {
				h = hh
			}
		default:
			k = min(len(data), c.max-n)
			if i, hh := scan(h, data[:k], gear, c.maskL); i >= 0 {
				k, cut = i+1, true
			} else {
				h = hh
			}
		}
		out = append(out, data[:k]...)
		c.pos += k
		n += k
		if cut || n == c.max {
			return out, nil
		}
	}
}

// hash feeds data into the gear hash h without testing for a cut point.
func hash(h uint64, data []byte, gear *[256]uint64) uint64 {
	for _, b := range data {
		h = h<<1 + gear[b]
	}
	return h
}

// scan feeds data into the gear hash h and returns the index of the first
// byte after which h&mask is zero, or -1 and the updated hash if there is
// none. It is the hot loop of the chunker. (Unrolling it gains nothing: the
// serial dependency through h is the limit.)
func scan(h uint64, data []byte, gear *[256]uint64, mask uint64) (int, uint64) {
	for i, b := range data {
		h = h<<1 + gear[b]
		if h&mask == 0 {
			return i, h
		}
	}
	return -1, h
}

// fill reads into the drained buffer until it is full, the reader reports
// io.EOF, or a read fails.
func (c *Chunker) fill() {
	if c.buf == nil {
		c.buf = make([]byte, c.bufSize)
	}
	c.pos, c.end = 0, 0
	if c.r == nil {
		c.err = errors.New("chunker: no reader")
		return
	}
	empty := 0
	for c.end < len(c.buf) {
		m, err := c.r.Read(c.buf[c.end:])
		if m < 0 || m > len(c.buf)-c.end {
			c.err = fmt.Errorf("chunker: read returned invalid count %d", m)
			return
		}
		c.end += m
		if err == io.EOF {
			c.eof = true
			return
		}
		if err != nil {
			c.err = fmt.Errorf("chunker read: %w", err)
			return
		}
		if m > 0 {
			empty = 0
			continue
		}
		if empty++; empty >= maxEmptyReads {
			c.err = fmt.Errorf("chunker read: %w", io.ErrNoProgress)
			return
		}
	}
}
