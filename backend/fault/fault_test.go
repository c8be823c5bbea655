package fault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/fault"
	"dj/backend/mem"
)

func TestConformanceUnarmed(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend { return fault.New(mem.New()) })
}

func h(t backend.FileType, name string) backend.Handle {
	return backend.Handle{Type: t, Name: strings.Repeat(name, 64/len(name))}
}

func TestFailNth(t *testing.T) {
	ctx := context.Background()
	f := fault.New(mem.New())
	data := []byte("0123456789")
	for _, n := range []string{"a", "b"} {
		if err := f.Save(ctx, h(backend.PackFile, n), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Save(ctx, h(backend.IndexFile, "c"), data); err != nil {
		t.Fatal(err)
	}
	f.FailNth(fault.Load, backend.PackFile, 2, nil)
	boom := errors.New("boom")
	f.FailNth(fault.Load, backend.IndexFile, 1, boom)

	if _, err := f.Load(ctx, h(backend.PackFile, "a"), 0, 0); err != nil {
		t.Errorf("first pack load: %v", err)
	}
	if _, err := f.Load(ctx, h(backend.IndexFile, "c"), 0, 0); !errors.Is(err, boom) {
		t.Errorf("first index load: %v, want boom", err)
	}
	if _, err := f.Load(ctx, h(backend.PackFile, "b"), 0, 0); !errors.Is(err, fault.ErrInjected) {
		t.Errorf("second pack load: %v, want ErrInjected", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := f.Load(ctx, h(backend.PackFile, "b"), 0, 0); err != nil {
			t.Errorf("later pack load: %v", err)
		}
	}
	if got := f.Calls(fault.Load, backend.PackFile); got != 5 {
		t.Errorf("Calls(load, data) = %d, want 5", got)
	}
	if got := f.Calls(fault.Load, ""); got != 6 {
		t.Errorf("Calls(load, any) = %d, want 6", got)
	}
}

func TestTimes(t *testing.T) {
	ctx := context.Background()
	f := fault.New(mem.New())
	f.Add(fault.Rule{Op: fault.Stat, Nth: 2, Times: 3})
	var failed []int
	for i := 1; i <= 6; i++ {
		if _, err := f.Stat(ctx, h(backend.LockFile, "d")); errors.Is(err, fault.ErrInjected) {
			failed = append(failed, i)
		}
	}
	if len(failed) != 3 || failed[0] != 2 || failed[2] != 4 {
		t.Errorf("failed calls %v, want [2 3 4]", failed)
	}
	f.Add(fault.Rule{Op: fault.Stat, Nth: 2, Every: 3, Times: 2})
	failed = failed[:0]
	for i := 1; i <= 10; i++ {
		if _, err := f.Stat(ctx, h(backend.LockFile, "d")); errors.Is(err, fault.ErrInjected) {
			failed = append(failed, i)
		}
	}
	if fmt.Sprint(failed) != "[2 5]" {
		t.Errorf("failed calls %v, want [2 5]", failed)
	}
	f.Add(fault.Rule{Op: fault.Stat, Times: -1})
	for i := 0; i < 5; i++ {
		if _, err := f.Stat(ctx, h(backend.LockFile, "d")); !errors.Is(err, fault.ErrInjected) {
			t.Errorf("permanent rule: call %d: %v", i, err)
		}
	}
	f.Reset()
	if _, err := f.Stat(ctx, h(backend.LockFile, "d")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Reset: %v, want the real answer", err)
	}
}

func TestCorrupt(t *testing.T) {
	ctx := context.Background()
	inner := mem.New()
	f := fault.New(inner)
	data := []byte("0123456789")
	p := h(backend.PackFile, "e")
	if err := f.Save(ctx, p, data); err != nil {
		t.Fatal(err)
	}
	f.CorruptNth(fault.Load, backend.PackFile, 1)
	got, err := f.Load(ctx, p, 0, 0)
	if err != nil || bytes.Equal(got, data) || got[5] != data[5]^0xff {
		t.Errorf("corrupted load: %q, %v", got, err)
	}
	if again, _ := f.Load(ctx, p, 0, 0); !bytes.Equal(again, data) {
		t.Errorf("second load is corrupt too, or the stored file changed: %q", again)
	}
	f.Add(fault.Rule{Op: fault.Load, Corrupt: true, Offset: -1})
	if got, _ := f.Load(ctx, p, 2, 3); string(got) != "23"+string([]byte{'4' ^ 0xff}) {
		t.Errorf("ranged load with the last byte flipped: %q", got)
	}

	q := h(backend.SnapshotFile, "f")
	f.Add(fault.Rule{Op: fault.Save, Type: backend.SnapshotFile, Corrupt: true, Offset: 0})
	if err := f.Save(ctx, q, data); err != nil {
		t.Fatalf("corrupted save reports %v, want success", err)
	}
	if stored, _ := inner.Load(ctx, q, 0, 0); stored[0] != data[0]^0xff || !bytes.Equal(stored[1:], data[1:]) {
		t.Errorf("stored %q", stored)
	}
	if data[0] != '0' {
		t.Errorf("Save corrupted the caller's buffer")
	}
}

func TestDiskFull(t *testing.T) {
	ctx := context.Background()
	inner := mem.New()
	f := fault.New(inner)
	f.FailSavesAfter(25)
	for i, n := range []string{"1", "2"} {
		if err := f.Save(ctx, h(backend.PackFile, n), make([]byte, 10)); err != nil {
			t.Fatalf("save %d within the space: %v", i, err)
		}
	}
	err := f.Save(ctx, h(backend.PackFile, "3"), make([]byte, 10))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("save beyond the space: %v, want ENOSPC", err)
	}
	if _, err := inner.Stat(ctx, h(backend.PackFile, "3")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed save stored a file: %v", err)
	}
	if err := f.Save(ctx, h(backend.PackFile, "4"), make([]byte, 1)); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a full disk stays full: %v", err)
	}
	f.FailSavesAfter(-1)
	if err := f.Save(ctx, h(backend.PackFile, "4"), make([]byte, 100)); err != nil {
		t.Errorf("after lifting the limit: %v", err)
	}
}

func TestAfter(t *testing.T) {
	ctx := context.Background()
	inner := mem.New()
	f := fault.New(inner)
	s := h(backend.SnapshotFile, "7")
	f.Add(fault.Rule{Op: fault.Save, After: true})
	if err := f.Save(ctx, s, []byte("x")); !errors.Is(err, fault.ErrInjected) {
		t.Errorf("save: %v, want ErrInjected", err)
	}
	if _, err := inner.Stat(ctx, s); err != nil {
		t.Errorf("the save did not happen: %v", err)
	}
	f.Add(fault.Rule{Op: fault.Remove, After: true})
	if err := f.Remove(ctx, s); !errors.Is(err, fault.ErrInjected) {
		t.Errorf("remove: %v, want ErrInjected", err)
	}
	if _, err := inner.Stat(ctx, s); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the remove did not happen: %v", err)
	}
	f.FailNth(fault.Remove, "", 1, nil)
	if err := f.Save(ctx, s, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(ctx, s); !errors.Is(err, fault.ErrInjected) {
		t.Errorf("remove: %v", err)
	}
	if _, err := inner.Stat(ctx, s); err != nil {
		t.Errorf("a failed remove removed the file: %v", err)
	}
}

func TestListMidway(t *testing.T) {
	ctx := context.Background()
	f := fault.New(mem.New())
	for _, n := range []string{"1", "2", "3", "4"} {
		if err := f.Save(ctx, h(backend.IndexFile, n), nil); err != nil {
			t.Fatal(err)
		}
	}
	f.Add(fault.Rule{Op: fault.List, Type: backend.IndexFile, AfterItems: 2})
	n := 0
	err := f.List(ctx, backend.IndexFile, func(backend.FileInfo) error { n++; return nil })
	if !errors.Is(err, fault.ErrInjected) || n != 2 {
		t.Errorf("List: %d entries, %v; want 2 and ErrInjected", n, err)
	}
	f.FailNth(fault.List, "", 1, nil)
	n = 0
	err = f.List(ctx, backend.IndexFile, func(backend.FileInfo) error { n++; return nil })
	if !errors.Is(err, fault.ErrInjected) || n != 0 {
		t.Errorf("List: %d entries, %v; want 0 and ErrInjected", n, err)
	}
	n = 0
	if err := f.List(ctx, backend.IndexFile, func(backend.FileInfo) error { n++; return nil }); err != nil || n != 4 {
		t.Errorf("List: %d entries, %v", n, err)
	}
}

func TestRate(t *testing.T) {
	ctx := context.Background()
	failures := func(seed uint64) []int {
		f := fault.New(mem.New())
		sp, err := fault.ParseSpec(fmt.Sprintf("rate=0.1,seed=%d,ops=stat", seed))
		if err != nil {
			t.Fatal(err)
		}
		sp.Arm(f)
		var failed []int
		for i := 0; i < 1000; i++ {
			if _, err := f.Stat(ctx, h(backend.PackFile, "a")); errors.Is(err, fault.ErrInjected) {
				failed = append(failed, i)
			}
			// Other operations are not armed.
			if err := f.Save(ctx, h(backend.PackFile, "a"), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		return failed
	}
	a, b := failures(7), failures(7)
	if len(a) < 50 || len(a) > 150 {
		t.Errorf("%d of 1000 calls failed at rate 0.1", len(a))
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Error("the same seed gave different faults")
	}
	if c := failures(8); fmt.Sprint(a) == fmt.Sprint(c) {
		t.Error("another seed gave the same faults")
	}
}

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"rate=0.1", true},
		{"rate=0.1,seed=3,ops=save+load,delay=20ms", true},
		{"seed=3", false},
		{"rate=1.5", false},
		{"rate=0.1,ops=fly", false},
		{"rate", false},
		{"rate=0.1,colour=red", false},
	} {
		if _, err := fault.ParseSpec(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParseSpec(%q): %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}

func TestOpaqueHidesCapabilities(t *testing.T) {
	f := fault.New(mem.New())
	if _, ok := backend.As[backend.Unwrapper](fault.Opaque(f)); ok {
		t.Error("Opaque backend can be unwrapped")
	}
	conformance.Run(t, func(t *testing.T) backend.Backend { return fault.Opaque(fault.New(mem.New())) })
}

// armed returns a fault backend over mem holding four index files and
// one 10-byte pack "aa…", armed with spec.
func armed(t *testing.T, spec string) (*fault.Backend, backend.Backend) {
	t.Helper()
	ctx := context.Background()
	m := mem.New()
	for _, n := range []string{"1", "2", "3", "4"} {
		if err := m.Save(ctx, h(backend.IndexFile, n), []byte("index")); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Save(ctx, h(backend.PackFile, "a"), []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	sp, err := fault.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	f := fault.New(m)
	sp.Arm(f)
	return f, m
}

func TestSpecModes(t *testing.T) {
	ctx := context.Background()
	count := func(f *fault.Backend, typ backend.FileType) (int, error) {
		n := 0
		err := f.List(ctx, typ, func(backend.FileInfo) error { n++; return nil })
		return n, err
	}
	pack := h(backend.PackFile, "a")
	t.Run("emptylist only for index", func(t *testing.T) {
		f, _ := armed(t, "mode=emptylist,types=index,nth=1")
		if n, err := count(f, backend.PackFile); n != 1 || err != nil {
			t.Errorf("pack listing: %d, %v", n, err)
		}
		if n, err := count(f, backend.IndexFile); n != 0 || err != nil {
			t.Errorf("first index listing: %d, %v; want 0 entries and no error", n, err)
		}
		if n, err := count(f, backend.IndexFile); n != 4 || err != nil {
			t.Errorf("second index listing: %d, %v", n, err)
		}
	})
	t.Run("shortlist", func(t *testing.T) {
		f, _ := armed(t, "mode=shortlist,types=index,nth=1,after=2")
		if n, err := count(f, backend.IndexFile); n != 2 || err != nil {
			t.Errorf("index listing: %d, %v; want 2 and no error", n, err)
		}
	})
	t.Run("listfail", func(t *testing.T) {
		f, _ := armed(t, "mode=listfail,nth=1,after=3")
		if n, err := count(f, backend.IndexFile); n != 3 || !errors.Is(err, fault.ErrInjected) {
			t.Errorf("index listing: %d, %v; want 3 and ErrInjected", n, err)
		}
	})
	t.Run("shortread", func(t *testing.T) {
		f, _ := armed(t, "mode=shortread,types=data,nth=1")
		got, err := f.Load(ctx, pack, 0, 0)
		if err != nil || string(got) != "01234" {
			t.Errorf("short read: %q, %v", got, err)
		}
		if got, _ := f.Load(ctx, pack, 0, 0); string(got) != "0123456789" {
			t.Errorf("second read: %q", got)
		}
	})
	t.Run("flip", func(t *testing.T) {
		f, _ := armed(t, "mode=flip,nth=2")
		f.Load(ctx, pack, 0, 0)
		got, err := f.Load(ctx, pack, 2, 4)
		if err != nil || len(got) != 4 || string(got) == "2345" {
			t.Errorf("flipped read: %q, %v", got, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f, _ := armed(t, "mode=timeout,ops=load,nth=1,wait=30ms")
		start := time.Now()
		_, err := f.Load(ctx, pack, 0, 0)
		if !errors.Is(err, fault.ErrTimeout) || !backend.IsUnreachable(err) || time.Since(start) < 30*time.Millisecond {
			t.Errorf("timeout: %v after %v", err, time.Since(start))
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		f2, _ := armed(t, "mode=timeout,nth=1,wait=1h")
		if _, err := f2.Stat(cctx, pack); !errors.Is(err, context.Canceled) {
			t.Errorf("timeout with a cancelled context: %v", err)
		}
	})
	t.Run("lostreply", func(t *testing.T) {
		f, m := armed(t, "mode=lostreply,ops=save,nth=1")
		hb := h(backend.PackFile, "b")
		if err := f.Save(ctx, hb, []byte("xyz")); !errors.Is(err, fault.ErrInjected) {
			t.Errorf("save: %v", err)
		}
		if got, err := m.Load(ctx, hb, 0, 0); string(got) != "xyz" || err != nil {
			t.Errorf("stored: %q, %v", got, err)
		}
	})
	t.Run("halfsave", func(t *testing.T) {
		f, m := armed(t, "mode=halfsave,types=data,nth=1")
		hb := h(backend.PackFile, "b")
		if err := f.Save(ctx, hb, []byte("abcdefgh")); !errors.Is(err, fault.ErrInjected) {
			t.Errorf("save: %v", err)
		}
		if got, err := m.Load(ctx, hb, 0, 0); string(got) != "abcd" || err != nil {
			t.Errorf("stored: %q, %v; want the first half", got, err)
		}
		if err := f.Save(ctx, hb, []byte("abcdefgh")); err != nil {
			t.Errorf("retry: %v", err)
		}
		if got, _ := m.Load(ctx, hb, 0, 0); string(got) != "abcdefgh" {
			t.Errorf("after the retry: %q; want the whole file", got)
		}
	})
	t.Run("every and times", func(t *testing.T) {
		f, _ := armed(t, "mode=error,ops=stat,nth=2,every=3,times=2")
		var failed []int
		for i := 1; i <= 12; i++ {
			if _, err := f.Stat(ctx, pack); err != nil {
				failed = append(failed, i)
			}
		}
		if fmt.Sprint(failed) != "[2 5]" {
			t.Errorf("failed calls %v, want [2 5]", failed)
		}
	})
}

// TestSpecSeedReproducible: a rule with a rate meets the same calls for the
// same seed, whatever its mode.
func TestSpecSeedReproducible(t *testing.T) {
	ctx := context.Background()
	run := func(seed int) string {
		f, _ := armed(t, fmt.Sprintf("seed=%d;mode=shortread,rate=0.3;mode=error,ops=stat,rate=0.2", seed))
		var b strings.Builder
		for i := 0; i < 200; i++ {
			got, _ := f.Load(ctx, h(backend.PackFile, "a"), 0, 0)
			_, err := f.Stat(ctx, h(backend.PackFile, "a"))
			fmt.Fprintf(&b, "%d%v", len(got), err != nil)
		}
		return b.String()
	}
	if run(3) != run(3) {
		t.Error("the same seed gave different faults")
	}
	if run(3) == run(4) {
		t.Error("another seed gave the same faults")
	}
}

func TestParseSpecRules(t *testing.T) {
	for _, tc := range []struct {
		in    string
		rules int // -1: an error
	}{
		{"rate=0.1,seed=7", 5},
		{"seed=7,delay=5ms;mode=emptylist,types=index+snapshots,nth=1", 2},
		{"mode=flip,rate=0.01", 1},
		{"mode=lostreply,rate=0.5", 2},
		{"mode=halfsave,types=data,nth=1,every=2", 1},
		{"mode=timeout,ops=load+save,wait=1ms,rate=0.1", 2},
		{"mode=shortlist,after=3,nth=2", 1},
		{"seed=1", -1},
		{"mode=flip", -1},
		{"mode=flip,ops=save,nth=1", -1},
		{"mode=melt,nth=1", -1},
		{"types=packs,nth=1", -1},
		{"rate=0.1,nth=1", -1},
		{"nth=0", -1},
		{"nth=1,every=-1", -1},
		{"rate=0", -1},
	} {
		sp, err := fault.ParseSpec(tc.in)
		if got := len(sp.Rules); (err != nil) != (tc.rules < 0) || err == nil && got != tc.rules {
			t.Errorf("ParseSpec(%q): %d rules, %v; want %d", tc.in, got, err, tc.rules)
		}
	}
}
