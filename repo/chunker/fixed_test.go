package chunker

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestFixed(t *testing.T) {
	data := make([]byte, 3*65536+100)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data)), iotest.HalfReader(bytes.NewReader(data))} {
		c := NewFixed(r, 65536)
		var got [][]byte
		var buf []byte
		for {
			b, err := c.Next(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, bytes.Clone(b))
			buf = b
		}
		if len(got) != 4 || len(got[3]) != 100 || !bytes.Equal(bytes.Join(got, nil), data) {
			t.Fatalf("%d chunks, last %d bytes", len(got), len(got[len(got)-1]))
		}
	}
	c := NewFixed(iotest.ErrReader(errors.New("boom")), 0)
	if _, err := c.Next(nil); err == nil || err == io.EOF {
		t.Fatalf("read error: %v", err)
	}
	if c.Size() != FixedSize {
		t.Fatal(c.Size())
	}
}

func TestParseFixed(t *testing.T) {
	for s, want := range map[string]int{"fixed": FixedSize, "fixed:1M": 1 << 20, "fixed:65536": 65536, "fixed:64m": 64 << 20, "fixed:1MiB": 1 << 20, "fixed:256KB": 256 << 10, "fixed:2mb": 2 << 20, "fixed:MiB": 0, "fixed:4096B": 0, "fixed:1Mi": 0,
		"fixed:": 0, "fixed:1k": 0, "fixed:1G": 0, "cdc": 0, "fixed:x": 0, "fixed:65537": 0, "fixed:99999999999999999999": 0} {
		got, err := ParseFixed(s)
		if (err != nil) != (want == 0) || got != want {
			t.Errorf("ParseFixed(%q) = %d, %v; want %d", s, got, err, want)
		}
		if want != 0 {
			if back, _ := ParseFixed(FixedName(got)); back != got {
				t.Errorf("FixedName(%d) does not parse back", got)
			}
		}
	}
}
