package conformance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"testing"

	"dj/backend"
)

// Ranged and whole-file loads.

func testRangedLoad(t *testing.T, be backend.Backend) {
	const size = 10000
	data := randomData(7, size)
	h := save(t, be, backend.PackFile, data)
	cfg := save(t, be, backend.ConfigFile, data)
	for _, h := range []backend.Handle{h, cfg} {
		tests := []struct {
			offset int64
			length int
			eof    bool
		}{
			{0, 0, false},
			{0, size, false},
			{0, 1, false},
			{1, 0, false},
			{1, size - 1, false},
			{size - 1, 1, false},
			{size - 1, 0, false},
			{size / 2, 100, false},
			{4321, 0, false},
			{size, 0, false}, // nothing left: empty
			{size, 1, true},
			{size - 1, 2, true},
			{0, size + 1, true},
			{size + 1, 0, true},
			{size + 100, 10, true},
		}
		for _, tc := range tests {
			got, err := be.Load(context.Background(), h, tc.offset, tc.length)
			if tc.eof {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("Load %v (%d, %d): err %v, want io.ErrUnexpectedEOF", h, tc.offset, tc.length, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("Load %v (%d, %d): %v", h, tc.offset, tc.length, err)
				continue
			}
			end := int64(size)
			if tc.length > 0 {
				end = tc.offset + int64(tc.length)
			}
			if !bytes.Equal(got, data[tc.offset:end]) {
				t.Errorf("Load %v (%d, %d): got %d bytes, not the range", h, tc.offset, tc.length, len(got))
			}
		}
	}
	for _, r := range [][2]int64{{-1, 0}, {0, -1}} {
		if _, err := be.Load(context.Background(), h, r[0], int(r[1])); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Load %v (%d, %d): %v, want fs.ErrInvalid for a negative range", h, r[0], r[1], err)
		}
	}
}

// testWholeLoad loads files whole (length 0) around the sizes a backend
// may read in one request with the file's size (SFTP asks for the first
// 128 KiB together with the size), from the start and from an offset, and
// the same ranges with their lengths into a caller's buffer where the
// backend takes one.
func testWholeLoad(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	for i, size := range []int{128<<10 - 1, 128 << 10, 128<<10 + 1, 300 << 10} {
		data := randomData(uint64(40+i), size)
		h := save(t, be, backend.IndexFile, data)
		for _, off := range []int64{0, 1000, int64(size)} {
			got, err := be.Load(ctx, h, off, 0)
			if err != nil || !bytes.Equal(got, data[off:]) {
				t.Errorf("Load %v (%d, 0) of %d bytes: %d bytes, %v", h, off, size, len(got), err)
			}
			rl, ok := be.(backend.RangeLoader)
			if !ok {
				continue
			}
			n := size - int(off)
			if n == 0 {
				continue
			}
			for _, room := range []int{10, n + backend.RangeSlack} {
				got, err := rl.LoadRange(ctx, h, off, n, make([]byte, room))
				if err != nil || !bytes.Equal(got, data[off:]) {
					t.Errorf("LoadRange %v (%d, %d) of %d bytes into %d: %d bytes, %v", h, off, n, size, room, len(got), err)
				}
			}
		}
	}
}
