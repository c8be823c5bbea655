package zeros

import "testing"

func TestAll(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 4095, 4096, 4097, 3*4096 + 5} {
		b := make([]byte, n)
		if !All(b) {
			t.Errorf("%d zero bytes: not all zero", n)
		}
		for i := 0; i < n; i += max(1, n/7) {
			b[i] = 1
			if All(b) {
				t.Errorf("%d bytes with a one at %d: all zero", n, i)
			}
			b[i] = 0
		}
		if n > 0 {
			b[n-1] = 0x80
			if All(b) {
				t.Errorf("%d bytes with a non-zero last byte: all zero", n)
			}
		}
	}
}

func BenchmarkAll(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if !All(buf) {
			b.Fatal("not zero")
		}
	}
}
