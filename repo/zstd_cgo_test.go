//go:build cgo

package repo

import (
	"sync"
	"testing"
)

// TestDefaultEncoderIsC: where the build has cgo, the default level is the
// C library's (the faster one), so that a build that silently lost it
// fails here.
func TestDefaultEncoderIsC(t *testing.T) {
	enc, err := newEncoder("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	if _, ok := enc.(*cEncoder); !ok {
		t.Fatalf("default encoder is %T, want *cEncoder", enc)
	}
}

// TestCEncoderBoundedContexts: however many goroutines compress at once,
// each pool makes no more contexts than its bound, and NativeMemory
// counts them.
func TestCEncoderBoundedContexts(t *testing.T) {
	enc, err := newDefaultEncoder(2)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	e := enc.(*cEncoder)
	small, large := make([]byte, 10_000), make([]byte, 300_000)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := small
			if g%2 == 0 {
				src = large
			}
			for range 5 {
				e.EncodeAll(src, nil)
			}
		}()
	}
	wg.Wait()
	if n, m := len(e.small.made), len(e.large.made); n > 2 || m > 2 || n == 0 || m == 0 {
		t.Errorf("contexts made: %d small, %d large; want 1 or 2 each", n, m)
	}
	if got, want := e.nativeMemory(), int64(2*largeCtxMemory+2*smallCtxMemory); got != want {
		t.Errorf("nativeMemory %d, want %d", got, want)
	}
}
