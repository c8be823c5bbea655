package sftp

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
)

// fakePack is a packFile that counts its closes.
type fakePack struct {
	name   string
	closes *atomic.Int32
	closed atomic.Bool
}

func (f *fakePack) ReadAt(p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, fmt.Errorf("%s: read after close", f.name)
	}
	return len(p), nil
}

func (f *fakePack) Close() error {
	if f.closed.Swap(true) {
		return fmt.Errorf("%s: closed twice", f.name)
	}
	f.closes.Add(1)
	return nil
}

func (f *fakePack) Stat() (fs.FileInfo, error) { return nil, errors.New("not used") }

// TestOpenPacks: loads share one open handle per pack; a handle is closed
// only when no load uses it, once, when it falls out of the bound or is
// forgotten; a forgotten pack is opened again; a failed open is not kept.
func TestOpenPacks(t *testing.T) {
	var opens, closes atomic.Int32
	var closeErrs []error
	var mu sync.Mutex
	o := newOpenPacks(func(f packFile) {
		if err := f.Close(); err != nil {
			mu.Lock()
			closeErrs = append(closeErrs, err)
			mu.Unlock()
		}
	})
	open := func(name string) func() (packFile, error) {
		return func() (packFile, error) {
			opens.Add(1)
			return &fakePack{name: name, closes: &closes}, nil
		}
	}
	use := func(name string) {
		t.Helper()
		h, err := o.get(name, open(name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.f.ReadAt(make([]byte, 1), 0); err != nil {
			t.Fatal(err)
		}
		o.put(h)
	}

	// Many loads of one pack at once: one open.
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := o.get("a", open("a"))
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := h.f.ReadAt(make([]byte, 1), 0); err != nil {
				t.Error(err)
			}
			o.put(h)
		}()
	}
	wg.Wait()
	if n := opens.Load(); n != 1 {
		t.Fatalf("50 loads of one pack opened it %d times, want 1", n)
	}

	// Forgotten while a load uses it: closed after that load, and the
	// next load opens it again.
	h, err := o.get("a", open("a"))
	if err != nil {
		t.Fatal(err)
	}
	if !o.forget("a") {
		t.Fatal("forget: a was not open")
	}
	if closes.Load() != 0 {
		t.Fatal("a handle in use was closed")
	}
	if _, err := h.f.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	o.put(h)
	if closes.Load() != 1 {
		t.Fatalf("after its last load a forgotten handle: %d closes, want 1", closes.Load())
	}
	use("a")
	if opens.Load() != 2 {
		t.Fatalf("a forgotten pack was not opened again (%d opens)", opens.Load())
	}

	// Beyond the bound the least recently used idle handles are closed.
	for i := range maxOpenPacks + 10 {
		use(fmt.Sprintf("p%d", i))
	}
	if n := len(o.files); n != maxOpenPacks {
		t.Fatalf("%d packs open, want %d", n, maxOpenPacks)
	}
	if _, ok := o.files["a"]; ok {
		t.Error("the least recently used pack is still open")
	}
	if _, ok := o.files[fmt.Sprintf("p%d", maxOpenPacks+9)]; !ok {
		t.Error("the most recently used pack was closed")
	}
	if got, want := closes.Load(), opens.Load()-maxOpenPacks; got != want {
		t.Errorf("%d closes, want %d (every handle not open)", got, want)
	}

	// A failed open is reported and not kept; nothing is closed for it.
	before := closes.Load()
	boom := errors.New("no such file")
	if _, err := o.get("gone", func() (packFile, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("get of a failing open: %v", err)
	}
	if _, ok := o.files["gone"]; ok {
		t.Error("a failed open is kept")
	}
	if o.forget("gone") {
		t.Error("forget: a failed open was open")
	}
	if closes.Load() != before {
		t.Error("a close for a failed open")
	}
	use("gone") // opened now
	if opens.Load() != maxOpenPacks+10+3 {
		t.Errorf("%d opens, want %d", opens.Load(), maxOpenPacks+10+3)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(closeErrs) > 0 {
		t.Errorf("close errors: %v", closeErrs)
	}
}
