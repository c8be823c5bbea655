package chunker

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/bits"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// testGear returns a gear table derived from seed.
func testGear(seed uint64) *[256]uint64 {
	rng := rand.New(rand.NewPCG(seed, 0x6a09e667f3bcc908))
	var g [256]uint64
	for i := range g {
		g[i] = rng.Uint64()
	}
	return &g
}

// randomData returns n random bytes derived from seed.
func randomData(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// sizes is a set of chunk size bounds.
type sizes struct{ min, avg, max int }

var (
	defaultSizes = sizes{MinSize, AvgSize, MaxSize}
	smallSizes   = sizes{64, 256, 1024}
)

// refCuts chunks data the simplest possible way, byte by byte, following the
// package documentation, and returns the chunk lengths. It checks Chunker.
func refCuts(data []byte, gear *[256]uint64, s sizes) []int {
	avgBits := bits.Len(uint(s.avg)) - 1
	maskS := ^uint64(0) << (64 - (avgBits + 2))
	maskL := ^uint64(0) << (64 - (avgBits - 2))
	var cuts []int
	for len(data) > 0 {
		var h uint64
		n := 0
		for n < len(data) {
			n++ // the chunk is now data[:n]
			if n > s.min-64 {
				h = h<<1 + gear[data[n-1]]
			}
			mask := maskL
			if n < s.avg {
				mask = maskS
			}
			if n == s.max || (n >= s.min && h&mask == 0) {
				break
			}
		}
		cuts = append(cuts, n)
		data = data[n:]
	}
	return cuts
}

// chunkAll runs c to the end and returns the chunk lengths and the first
// error other than io.EOF. It checks on the way that every chunk is the next
// piece of want (if want is not nil).
func chunkAll(t testing.TB, c *Chunker, want []byte) ([]int, error) {
	t.Helper()
	var cuts []int
	var buf []byte
	off := 0
	for {
		chunk, err := c.Next(buf)
		if err == io.EOF {
			if want != nil && off != len(want) {
				t.Fatalf("chunks end at %d, input has %d bytes", off, len(want))
			}
			return cuts, nil
		}
		if err != nil {
			return cuts, err
		}
		if len(chunk) == 0 {
			t.Fatalf("empty chunk at offset %d", off)
		}
		if want != nil && !bytes.Equal(chunk, want[off:min(off+len(chunk), len(want))]) {
			t.Fatalf("chunk at offset %d (%d bytes) differs from the input", off, len(chunk))
		}
		off += len(chunk)
		cuts = append(cuts, len(chunk))
		buf = chunk
	}
}

// checkBounds fails unless every chunk but the last is within [min, max]
// and the last is within [1, max].
func checkBounds(t testing.TB, cuts []int, s sizes) {
	t.Helper()
	for i, n := range cuts {
		if n > s.max || n < 1 || (n < s.min && i != len(cuts)-1) {
			t.Fatalf("chunk %d of %d has %d bytes, bounds [%d, %d]", i, len(cuts), n, s.min, s.max)
		}
	}
}

func equalInts(a, b []int) bool {
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

func newSized(r io.Reader, gear *[256]uint64, s sizes, bufSize int) *Chunker {
	c := NewWithSizes(r, gear, s.min, s.avg, s.max)
	if bufSize > 0 {
		c.bufSize = bufSize
	}
	return c
}

// TestMatchesReference compares the chunker with the byte-by-byte reference
// over several sizes and internal buffer sizes (small buffers make chunks
// and phases straddle refills).
func TestMatchesReference(t *testing.T) {
	gear := testGear(1)
	tests := []struct {
		name    string
		s       sizes
		n       int
		bufSize int
	}{
		{"small", smallSizes, 1 << 20, 0},
		{"small/buf7", smallSizes, 64 << 10, 7},
		{"small/buf64", smallSizes, 256 << 10, 64},
		{"small/buf1000", smallSizes, 256 << 10, 1000},
		{"min<window", sizes{16, 64, 256}, 256 << 10, 33},
		{"min=1", sizes{1, 8, 64}, 64 << 10, 5},
		{"min=0", sizes{0, 8, 64}, 64 << 10, 0},
		{"mid", sizes{4 << 10, 16 << 10, 64 << 10}, 4 << 20, 10000},
		{"default", defaultSizes, 16 << 20, 0},
		{"default/buf1M+3", defaultSizes, 12 << 20, 1<<20 + 3},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomData(uint64(i), tt.n)
			want := refCuts(data, gear, tt.s)
			got, err := chunkAll(t, newSized(bytes.NewReader(data), gear, tt.s, tt.bufSize), data)
			if err != nil {
				t.Fatal(err)
			}
			checkBounds(t, got, tt.s)
			if !equalInts(got, want) {
				t.Fatalf("cuts differ from the reference: %d chunks, want %d", len(got), len(want))
			}
		})
	}
}

// TestAverage chunks 256 MiB of random data with the default sizes (64 MiB
// with -short) and checks the invariants and the mean chunk size.
func TestAverage(t *testing.T) {
	n := 256 << 20
	if testing.Short() {
		n = 64 << 20
	}
	data := randomData(42, n)
	cuts, err := chunkAll(t, New(bytes.NewReader(data), testGear(2)), data)
	if err != nil {
		t.Fatal(err)
	}
	checkBounds(t, cuts, defaultSizes)
	full := cuts[:len(cuts)-1] // the last chunk is cut by the end of input
	sum, lo, hi := 0, MaxSize, 0
	for _, c := range full {
		sum += c
		lo, hi = min(lo, c), max(hi, c)
	}
	mean := float64(sum) / float64(len(full))
	t.Logf("%d MiB: %d chunks, mean %.0f bytes (%.3f × AvgSize), smallest %d, largest %d",
		n>>20, len(cuts), mean, mean/AvgSize, lo, hi)
	// The expected mean is about 1.19 × AvgSize (see AvgSize).
	if mean < 1.0*AvgSize || mean > 1.4*AvgSize {
		t.Errorf("mean chunk size %.0f is not near AvgSize %d", mean, AvgSize)
	}
}

// chunkHashes returns the SHA-256 of each chunk of data.
func chunkHashes(t *testing.T, data []byte, gear *[256]uint64) [][32]byte {
	t.Helper()
	c := New(bytes.NewReader(data), gear)
	var hs [][32]byte
	var buf []byte
	for {
		chunk, err := c.Next(buf)
		if err == io.EOF {
			return hs
		}
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, sha256.Sum256(chunk))
		buf = chunk
	}
}

// TestInsertion checks that cut points stay put after a small edit: only
// the chunks around the edit change.
func TestInsertion(t *testing.T) {
	n := 64 << 20
	if testing.Short() {
		n = 16 << 20
	}
	data := randomData(7, n)
	gear := testGear(3)
	before := chunkHashes(t, data, gear)
	tests := []struct {
		name   string
		edit   func([]byte) []byte
		maxNew int // chunks of the edited stream not in the original
	}{
		{"insert front", func(d []byte) []byte { return append([]byte{0x5a}, d...) }, 3},
		{"insert middle", func(d []byte) []byte {
			return append(append(append([]byte(nil), d[:n/2]...), 0xa5), d[n/2:]...)
		}, 3},
		{"delete middle", func(d []byte) []byte {
			return append(append([]byte(nil), d[:n/3]...), d[n/3+1:]...)
		}, 3},
		{"overwrite 100 bytes", func(d []byte) []byte {
			e := append([]byte(nil), d...)
			copy(e[n/5:], bytes.Repeat([]byte{0}, 100))
			return e
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			after := chunkHashes(t, tt.edit(data), gear)
			prefix := 0
			for prefix < min(len(before), len(after)) && before[prefix] == after[prefix] {
				prefix++
			}
			suffix := 0
			for suffix < min(len(before), len(after))-prefix &&
				before[len(before)-1-suffix] == after[len(after)-1-suffix] {
				suffix++
			}
			changed := len(after) - prefix - suffix
			t.Logf("%d chunks before, %d after, %d new", len(before), len(after), changed)
			if changed > tt.maxNew || changed < 1 {
				t.Errorf("%d chunks changed, want 1 to %d", changed, tt.maxNew)
			}
			if prefix+suffix < len(before)-tt.maxNew {
				t.Errorf("only %d of %d original chunks kept", prefix+suffix, len(before))
			}
		})
	}
}

// TestKeyed checks that the gear table decides the cut points.
func TestKeyed(t *testing.T) {
	for _, s := range []sizes{smallSizes, defaultSizes} {
		data := randomData(5, 8*s.max)
		a, err := chunkAll(t, NewWithSizes(bytes.NewReader(data), testGear(10), s.min, s.avg, s.max), data)
		if err != nil {
			t.Fatal(err)
		}
		b, err := chunkAll(t, NewWithSizes(bytes.NewReader(data), testGear(11), s.min, s.avg, s.max), data)
		if err != nil {
			t.Fatal(err)
		}
		// Compare cut offsets: with another key almost none may coincide.
		offs := map[int]bool{}
		off := 0
		for _, n := range a[:len(a)-1] {
			off += n
			offs[off] = true
		}
		same := 0
		off = 0
		for _, n := range b[:len(b)-1] {
			off += n
			if offs[off] {
				same++
			}
		}
		if same > len(a)/10 {
			t.Errorf("sizes %v: %d of %d cut points equal under another gear table", s, same, len(a))
		}
	}
}

// TestDeterministic checks that the same input and table give the same
// chunks, and that a reset chunker gives what a fresh one gives.
func TestDeterministic(t *testing.T) {
	gear := testGear(4)
	inputs := [][]byte{
		randomData(1, 12<<20),
		randomData(2, 100),
		nil,
		randomData(3, 9<<20),
		bytes.Repeat([]byte{7}, 9<<20),
	}
	reused := New(nil, gear)
	for i, in := range inputs {
		fresh, err := chunkAll(t, New(bytes.NewReader(in), gear), in)
		if err != nil {
			t.Fatal(err)
		}
		again, err := chunkAll(t, New(bytes.NewReader(in), gear), in)
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(fresh, again) {
			t.Fatalf("input %d: two runs differ", i)
		}
		// Leave the reused chunker in the middle of a stream before Reset.
		reused.Reset(bytes.NewReader(inputs[0]))
		if _, err := reused.Next(nil); err != nil {
			t.Fatal(err)
		}
		reused.Reset(bytes.NewReader(in))
		got, err := chunkAll(t, reused, in)
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(got, fresh) {
			t.Fatalf("input %d: reset chunker gives %v, fresh one %v", i, got, fresh)
		}
	}
}

// TestEdgeInputs checks inputs at and around the size bounds.
func TestEdgeInputs(t *testing.T) {
	gear := testGear(6)
	// Constant data must not cut before max: the steady-state hash of a run
	// of zeros is -gear[0], which must fail both masks for this table.
	if s := -gear[0]; s&topMask(22) == 0 || s&topMask(18) == 0 {
		t.Fatal("test gear table cuts runs of zeros; pick another seed")
	}
	rnd := randomData(9, MaxSize+1)
	zeros := make([]byte, 64<<20)
	tests := []struct {
		name string
		in   []byte
		want []int // nil: only check bounds
	}{
		{"empty", nil, []int{}},
		{"1 byte", rnd[:1], []int{1}},
		{"min-1", rnd[:MinSize-1], []int{MinSize - 1}},
		{"exactly min", rnd[:MinSize], []int{MinSize}},
		{"min+1", rnd[:MinSize+1], nil},
		{"random max", rnd[:MaxSize], nil},
		{"random max+1", rnd, nil},
		{"zeros max", zeros[:MaxSize], []int{MaxSize}},
		{"zeros max+1", zeros[:MaxSize+1], []int{MaxSize, 1}},
		{"zeros 64 MiB", zeros, []int{MaxSize, MaxSize, MaxSize, MaxSize, MaxSize, MaxSize, MaxSize, MaxSize}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chunkAll(t, New(bytes.NewReader(tt.in), gear), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			checkBounds(t, got, defaultSizes)
			if tt.want != nil && !equalInts(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Fatalf("chunks %v, want %v", got, tt.want)
			}
			if !equalInts(got, refCuts(tt.in, gear, defaultSizes)) {
				t.Fatalf("chunks %v differ from the reference", got)
			}
		})
	}
	// After io.EOF, Next keeps returning io.EOF.
	c := New(bytes.NewReader(rnd[:10]), gear)
	for i, want := range []error{nil, io.EOF, io.EOF} {
		if _, err := c.Next(nil); err != want {
			t.Fatalf("call %d: %v, want %v", i, err, want)
		}
	}
}

// shortReader returns at most a random small number of bytes per Read,
// sometimes none.
type shortReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (s *shortReader) Read(p []byte) (int, error) {
	n := s.rng.IntN(5000)
	if n == 0 {
		return 0, nil
	}
	return s.r.Read(p[:min(n, len(p))])
}

// TestShortReads checks that readers returning little data per call give
// the same chunks.
func TestShortReads(t *testing.T) {
	gear := testGear(8)
	small := randomData(11, 300<<10)
	big := randomData(12, 20<<20)
	tests := []struct {
		name string
		data []byte
		s    sizes
		r    func([]byte) io.Reader
	}{
		{"one byte", small, smallSizes, func(d []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(d)) }},
		{"half", big, defaultSizes, func(d []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(d)) }},
		{"data with EOF", big, defaultSizes, func(d []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(d)) }},
		{"random short", big, defaultSizes, func(d []byte) io.Reader {
			return &shortReader{bytes.NewReader(d), rand.New(rand.NewPCG(1, 2))}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chunkAll(t, NewWithSizes(tt.r(tt.data), gear, tt.s.min, tt.s.avg, tt.s.max), tt.data)
			if err != nil {
				t.Fatal(err)
			}
			if want := refCuts(tt.data, gear, tt.s); !equalInts(got, want) {
				t.Fatalf("%d chunks differ from the reference (%d chunks)", len(got), len(want))
			}
		})
	}
}

// errAfter returns the first n bytes of data and then err.
type errAfter struct {
	data []byte
	err  error
}

func (e *errAfter) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

// zeroReader returns no data and no error, forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// TestReadError checks that a read error ends chunking with that error,
// after the chunks complete before it.
func TestReadError(t *testing.T) {
	gear := testGear(13)
	errBoom := errors.New("boom")
	data := randomData(14, 20<<20)
	tests := []struct {
		name    string
		r       io.Reader
		wantErr error
		data    []byte // the stream before the error
	}{
		{"midway", &errAfter{data[:10<<20], errBoom}, errBoom, data[:10<<20]},
		{"at once", &errAfter{nil, errBoom}, errBoom, nil},
		{"data and error", io.MultiReader(bytes.NewReader(data[:5<<20+3]), iotest.ErrReader(errBoom)), errBoom, data[:5<<20+3]},
		{"timeout", iotest.TimeoutReader(bytes.NewReader(data)), iotest.ErrTimeout, nil},
		{"no progress", zeroReader{}, io.ErrNoProgress, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tt.r, gear)
			got, err := chunkAll(t, c, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if tt.data != nil {
				// Chunks cut before the error come out; the interrupted one does not.
				want := refCuts(tt.data, gear, defaultSizes)
				if len(want) == 0 || !equalInts(got, want[:len(want)-1]) {
					t.Fatalf("chunks before the error %v, want %v", got, want[:max(len(want)-1, 0)])
				}
			}
			if _, err2 := c.Next(nil); !errors.Is(err2, tt.wantErr) {
				t.Fatalf("next call after the error returned %v", err2)
			}
			// Reset clears the error.
			c.Reset(bytes.NewReader(data[:100]))
			if got, err := chunkAll(t, c, data[:100]); err != nil || !equalInts(got, []int{100}) {
				t.Fatalf("after Reset: %v, %v", got, err)
			}
		})
	}
	if _, err := New(nil, gear).Next(nil); err == nil || err == io.EOF {
		t.Fatalf("nil reader: %v, want an error", err)
	}
}

// TestBadSizes checks that sizes out of order do not panic and keep chunks
// within [1, max].
func TestBadSizes(t *testing.T) {
	gear := testGear(15)
	data := randomData(16, 64<<10)
	for _, s := range []sizes{{0, 0, 0}, {-5, -1, 10}, {100, 50, 80}, {10, 300, 200}, {8, 100, 1000}, {1000, 1000, 1000}} {
		got, err := chunkAll(t, NewWithSizes(bytes.NewReader(data), gear, s.min, s.avg, s.max), data)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range got {
			if n < 1 || n > max(s.max, 1) {
				t.Fatalf("sizes %v: chunk of %d bytes", s, n)
			}
		}
	}
}

// TestNoAllocs checks that a reused chunker and buffer allocate nothing.
func TestNoAllocs(t *testing.T) {
	data := randomData(17, 12<<20)
	r := bytes.NewReader(data)
	c := New(r, testGear(18))
	buf := make([]byte, 0, MaxSize)
	run := func() {
		r.Reset(data)
		c.Reset(r)
		for {
			if _, err := c.Next(buf); err != nil {
				break
			}
		}
	}
	run()
	if a := testing.AllocsPerRun(3, run); a > 0 {
		t.Errorf("%v allocations per stream", a)
	}
}

func FuzzChunker(f *testing.F) {
	f.Add([]byte{}, uint8(0), uint16(0))
	f.Add([]byte("hello"), uint8(1), uint16(3))
	f.Add(randomData(1, 5000), uint8(2), uint16(100))
	f.Add(make([]byte, 3000), uint8(3), uint16(0))
	f.Add(bytes.Repeat([]byte("abcdefg"), 700), uint8(4), uint16(17))
	gear := testGear(19)
	f.Fuzz(func(t *testing.T, data []byte, shape uint8, bufSize uint16) {
		// Small valid sizes chosen by shape: min in [0, 255], avg a power of
		// two above it, max above avg.
		mn := int(shape) % 200
		avg := 1 << (max(bits.Len(uint(mn)), 3) + int(shape>>6))
		s := sizes{mn, avg, avg * (2 + int(shape>>4)%4)}
		// Reads of any length: the cuts depend on the bytes alone.
		var r io.Reader = bytes.NewReader(data)
		switch bufSize >> 14 {
		case 1:
			r = iotest.HalfReader(r)
		case 2:
			r = iotest.OneByteReader(r)
		case 3:
			r = iotest.DataErrReader(r)
		}
		c := newSized(r, gear, s, 1+int(bufSize%4096))
		got, err := chunkAll(t, c, data)
		if err != nil {
			t.Fatal(err)
		}
		checkBounds(t, got, s)
		if want := refCuts(data, gear, s); !equalInts(got, want) {
			t.Fatalf("sizes %v: cuts %v, reference %v", s, got, want)
		}
	})
}

func BenchmarkChunker(b *testing.B) {
	data := randomData(20, 256<<20)
	r := bytes.NewReader(data)
	c := New(r, testGear(21))
	buf := make([]byte, 0, MaxSize)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var chunks, total int
	for b.Loop() {
		r.Reset(data)
		c.Reset(r)
		for {
			chunk, err := c.Next(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			chunks++
			total += len(chunk)
		}
	}
	b.ReportMetric(float64(total)/float64(chunks), "B/chunk")
}

// BenchmarkScan measures the hash loop alone, over bytes that never cut.
func BenchmarkScan(b *testing.B) {
	data := randomData(22, 4<<20)
	gear := testGear(23)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if i, _ := scan(0, data, gear, ^uint64(0)); i >= 0 {
			b.Fatal("unexpected cut")
		}
	}
}
