// Package conformance is the test suite every dj backend passes. A
// backend's own _test.go calls Run with a function that returns a fresh,
// empty repository (laid out, without a config file).
//
// Files of every type but config are named by the SHA-256 of their
// content, as in a real repository, so servers that verify uploads (dj
// serve, restic's rest-server) accept them.
package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"dj/backend"
)

// Run runs the conformance tests. newBackend is called once per subtest
// and must return an empty repository; Run closes it when the subtest
// ends. Heavy subtests are smaller under -short.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, be backend.Backend)
	}{
		{"SaveLoad", testSaveLoad},
		{"EmptyFile", testEmptyFile},
		{"RangedLoad", testRangedLoad},
		{"WholeLoad", testWholeLoad},
		{"Stat", testStat},
		{"List", testList},
		{"ListManyPacks", testListManyPacks},
		{"ListStopsOnError", testListStopsOnError},
		{"Remove", testRemove},
		{"Missing", testMissing},
		{"Overwrite", testOverwrite},
		{"InvalidHandles", testInvalidHandles},
		{"Concurrent", testConcurrent},
		{"LargeFile", testLargeFile},
		{"Canceled", testCanceled},
		{"ListCanceled", testListCanceled},
		{"Location", testLocation},
		{"StaleTemp", testStaleTemp},
		{"ConcurrentSaves", testConcurrentSaves},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t)
			t.Cleanup(func() {
				if err := be.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, be)
		})
	}
}

// randomData returns n bytes from a seeded generator.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// handle names data of type t by its SHA-256, as a repository does.
func handle(t backend.FileType, data []byte) backend.Handle {
	if t == backend.ConfigFile {
		return backend.Handle{Type: t}
	}
	sum := sha256.Sum256(data)
	return backend.Handle{Type: t, Name: hex.EncodeToString(sum[:])}
}

func save(t *testing.T, be backend.Backend, typ backend.FileType, data []byte) backend.Handle {
	t.Helper()
	h := handle(typ, data)
	if err := be.Save(context.Background(), h, data); err != nil {
		t.Fatalf("Save %v: %v", h, err)
	}
	return h
}

func load(t *testing.T, be backend.Backend, h backend.Handle, offset int64, length int) []byte {
	t.Helper()
	got, err := be.Load(context.Background(), h, offset, length)
	if err != nil {
		t.Fatalf("Load %v (%d, %d): %v", h, offset, length, err)
	}
	return got
}

func listAll(t *testing.T, be backend.Backend, typ backend.FileType) map[string]backend.FileInfo {
	t.Helper()
	m := make(map[string]backend.FileInfo)
	err := be.List(context.Background(), typ, func(fi backend.FileInfo) error {
		if _, dup := m[fi.Name]; dup {
			t.Errorf("List %s: %q listed twice", typ, fi.Name)
		}
		m[fi.Name] = fi
		return nil
	})
	if err != nil {
		t.Fatalf("List %s: %v", typ, err)
	}
	return m
}

func testSaveLoad(t *testing.T, be backend.Backend) {
	for i, typ := range backend.AllFileTypes {
		data := randomData(uint64(i+1), 1000+i*517)
		h := save(t, be, typ, data)
		if got := load(t, be, h, 0, 0); !bytes.Equal(got, data) {
			t.Errorf("Load %v: got %d bytes, want the %d saved", h, len(got), len(data))
		}
		// The caller may reuse its buffer after Save and the result of Load.
		data[0] ^= 0xff
		got := load(t, be, h, 0, 0)
		if bytes.Equal(got, data) {
			t.Errorf("Load %v: the backend kept the caller's buffer", h)
		}
		got[1] ^= 0xff
		if again := load(t, be, h, 0, 2); again[1] == got[1] {
			t.Errorf("Load %v: two loads share memory", h)
		}
	}
}

func testEmptyFile(t *testing.T, be backend.Backend) {
	h := save(t, be, backend.SnapshotFile, nil)
	if got := load(t, be, h, 0, 0); len(got) != 0 {
		t.Errorf("Load of empty file: got %d bytes", len(got))
	}
	fi, err := be.Stat(context.Background(), h)
	if err != nil || fi.Size != 0 {
		t.Errorf("Stat of empty file: %+v, %v", fi, err)
	}
	if _, err := be.Load(context.Background(), h, 0, 1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Load 1 byte of empty file: %v, want io.ErrUnexpectedEOF", err)
	}
}

func testStat(t *testing.T, be backend.Backend) {
	before := time.Now()
	for i, typ := range backend.AllFileTypes {
		data := randomData(uint64(100+i), 333*(i+1))
		h := save(t, be, typ, data)
		fi, err := be.Stat(context.Background(), h)
		if err != nil {
			t.Fatalf("Stat %v: %v", h, err)
		}
		if fi.Size != int64(len(data)) || fi.Name != h.Name {
			t.Errorf("Stat %v: %+v, want name %q size %d", h, fi, h.Name, len(data))
		}
		checkModTime(t, h, fi.ModTime, before)
	}
}

// checkModTime accepts times around the save, with slack for file systems
// and protocols (HTTP dates) that keep whole seconds.
func checkModTime(t *testing.T, h backend.Handle, mt, before time.Time) {
	t.Helper()
	if mt.Before(before.Add(-2*time.Second)) || mt.After(time.Now().Add(2*time.Second)) {
		t.Errorf("%v: modification time %v is not the time of the save (%v)", h, mt, before)
	}
}

func testList(t *testing.T, be backend.Backend) {
	before := time.Now()
	want := make(map[backend.FileType]map[string]int64)
	for i, typ := range backend.AllFileTypes {
		want[typ] = make(map[string]int64)
		n := 3
		if typ == backend.ConfigFile {
			n = 1
		}
		for j := 0; j < n; j++ {
			data := randomData(uint64(1000+10*i+j), 10+j*50)
			h := save(t, be, typ, data)
			want[typ][h.Name] = int64(len(data))
		}
	}
	for _, typ := range backend.AllFileTypes {
		got := listAll(t, be, typ)
		if len(got) != len(want[typ]) {
			t.Errorf("List %s: %d files, want %d", typ, len(got), len(want[typ]))
		}
		for name, size := range want[typ] {
			fi, ok := got[name]
			if !ok {
				t.Errorf("List %s: %q missing", typ, name)
				continue
			}
			if fi.Size != size {
				t.Errorf("List %s: %q has size %d, want %d", typ, name, fi.Size, size)
			}
			checkModTime(t, backend.Handle{Type: typ, Name: name}, fi.ModTime, before)
		}
	}
}

func testListManyPacks(t *testing.T, be backend.Backend) {
	n := 600
	if testing.Short() {
		n = 150
	}
	want := make(map[string]int64, n)
	prefixes := make(map[string]bool)
	for i := 0; i < n; i++ {
		data := randomData(uint64(5000+i), 1+i%97)
		h := save(t, be, backend.PackFile, data)
		want[h.Name] = int64(len(data))
		prefixes[h.Name[:2]] = true
	}
	got := listAll(t, be, backend.PackFile)
	if len(got) != n {
		t.Errorf("List data: %d packs, want %d (in %d subdirectories)", len(got), n, len(prefixes))
	}
	for name, size := range want {
		if fi, ok := got[name]; !ok || fi.Size != size {
			t.Errorf("List data: %q: %+v, listed %v, want size %d", name, fi, ok, size)
		}
	}
	// Other types see none of them.
	if others := listAll(t, be, backend.IndexFile); len(others) != 0 {
		t.Errorf("List index: %d files in an index-less repository", len(others))
	}
}

func testListStopsOnError(t *testing.T, be backend.Backend) {
	for i := 0; i < 5; i++ {
		save(t, be, backend.LockFile, randomData(uint64(i), 10))
	}
	stop := errors.New("stop here")
	calls := 0
	err := be.List(context.Background(), backend.LockFile, func(backend.FileInfo) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("List: err %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Errorf("List: callback called %d times after returning an error", calls)
	}
}

func testRemove(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	for i, typ := range backend.AllFileTypes {
		keep := save(t, be, typ, randomData(uint64(200+i), 64))
		if typ == backend.ConfigFile {
			if err := be.Remove(ctx, keep); err != nil {
				t.Fatalf("Remove %v: %v", keep, err)
			}
			continue
		}
		gone := save(t, be, typ, randomData(uint64(300+i), 64))
		if err := be.Remove(ctx, gone); err != nil {
			t.Fatalf("Remove %v: %v", gone, err)
		}
		if _, err := be.Stat(ctx, gone); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat %v after Remove: %v, want fs.ErrNotExist", gone, err)
		}
		if err := be.Remove(ctx, gone); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Remove %v twice: %v, want fs.ErrNotExist", gone, err)
		}
		got := listAll(t, be, typ)
		if _, ok := got[gone.Name]; ok || len(got) != 1 {
			t.Errorf("List %s after Remove: %v", typ, got)
		}
		if _, err := be.Stat(ctx, keep); err != nil {
			t.Errorf("Stat %v: %v (removing a neighbour removed it)", keep, err)
		}
	}
	if got := listAll(t, be, backend.ConfigFile); len(got) != 0 {
		t.Errorf("List config after Remove: %v", got)
	}
}

func testMissing(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	for i, typ := range backend.AllFileTypes {
		h := handle(typ, randomData(uint64(400+i), 10))
		_, rangeErr := be.Load(ctx, h, 5, 3)
		wantErrs(t, h, fs.ErrNotExist, loadStatRemove(ctx, be, h), call{"Load with range", rangeErr})
		if got := listAll(t, be, typ); len(got) != 0 {
			t.Errorf("List %s of an empty repository: %v", typ, got)
		}
	}
}

// call is the outcome of one backend call.
type call struct {
	name string
	err  error
}

// loadStatRemove loads, stats and removes h.
func loadStatRemove(ctx context.Context, be backend.Backend, h backend.Handle) []call {
	_, loadErr := be.Load(ctx, h, 0, 0)
	_, statErr := be.Stat(ctx, h)
	return []call{{"Load", loadErr}, {"Stat", statErr}, {"Remove", be.Remove(ctx, h)}}
}

// wantErrs reports every call on h whose error does not satisfy
// errors.Is(err, want).
func wantErrs(t *testing.T, h backend.Handle, want error, calls []call, more ...call) {
	t.Helper()
	for _, c := range append(calls, more...) {
		if !errors.Is(c.err, want) {
			t.Errorf("%s %+v: %v, want %v", c.name, h, c.err, want)
		}
	}
}

func testOverwrite(t *testing.T, be backend.Backend) {
	// Saving the same content again (a retried upload) succeeds.
	data := randomData(9, 4096)
	h := save(t, be, backend.PackFile, data)
	save(t, be, backend.PackFile, data)
	if got := load(t, be, h, 0, 0); !bytes.Equal(got, data) {
		t.Errorf("Load %v after saving twice: wrong content", h)
	}
	if got := listAll(t, be, backend.PackFile); len(got) != 1 {
		t.Errorf("List after saving twice: %d files", len(got))
	}
	// The config is not named by its content: saving replaces it.
	save(t, be, backend.ConfigFile, []byte("first version, longer than the second"))
	cfg := save(t, be, backend.ConfigFile, []byte("second"))
	if got := load(t, be, cfg, 0, 0); string(got) != "second" {
		t.Errorf("Load config after overwrite: %q", got)
	}
}

func testInvalidHandles(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	bad := []backend.Handle{
		{Type: backend.SnapshotFile, Name: ""},
		{Type: backend.SnapshotFile, Name: "."},
		{Type: backend.SnapshotFile, Name: ".."},
		{Type: backend.SnapshotFile, Name: "a/b"},
		{Type: backend.SnapshotFile, Name: "../config"},
		{Type: backend.SnapshotFile, Name: "foo/../../baz"},
		{Type: backend.SnapshotFile, Name: "nul\x00byte"},
		{Type: backend.PackFile, Name: "a"},
		{Type: backend.PackFile, Name: "../../x"},
		{Type: "bogus", Name: "0123"},
		{Type: "", Name: "0123"},
		{Type: "data/..", Name: "config"},
	}
	for _, h := range bad {
		wantErrs(t, h, fs.ErrInvalid, loadStatRemove(ctx, be, h), call{"Save", be.Save(ctx, h, []byte("x"))})
	}
	if err := be.List(ctx, "bogus", func(backend.FileInfo) error { return nil }); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("List of an invalid type: %v, want fs.ErrInvalid", err)
	}
	for _, typ := range backend.AllFileTypes {
		if got := listAll(t, be, typ); len(got) != 0 {
			t.Errorf("List %s: invalid saves left files: %v", typ, got)
		}
	}
}

func testConcurrent(t *testing.T, be backend.Backend) {
	const workers, files = 8, 12
	ctx := context.Background()
	var mu sync.Mutex
	saved := make(map[backend.Handle][]byte)
	var wg sync.WaitGroup
	errs := make(chan error, workers*files*4)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < files; i++ {
				typ := backend.PackFile
				if i%3 == 1 {
					typ = backend.IndexFile
				}
				data := randomData(uint64(w*1000+i), 2000+i*100)
				h := handle(typ, data)
				if err := be.Save(ctx, h, data); err != nil {
					errs <- fmt.Errorf("Save %v: %w", h, err)
					continue
				}
				// Everyone also saves one shared file: concurrent saves of
				// the same content must all succeed.
				shared := randomData(424242, 3000)
				if err := be.Save(ctx, handle(backend.PackFile, shared), shared); err != nil {
					errs <- fmt.Errorf("Save shared: %w", err)
				}
				mu.Lock()
				saved[h] = data
				var other backend.Handle
				var otherData []byte
				for oh, od := range saved { // a random earlier file
					other, otherData = oh, od
					break
				}
				mu.Unlock()
				got, err := be.Load(ctx, other, 100, 500)
				if err != nil || !bytes.Equal(got, otherData[100:600]) {
					errs <- fmt.Errorf("Load %v: %d bytes, %v", other, len(got), err)
				}
				got, err = be.Load(ctx, handle(backend.PackFile, shared), 0, 0)
				if err != nil || !bytes.Equal(got, shared) {
					errs <- fmt.Errorf("Load shared: %d bytes, %v", len(got), err)
				}
				if err := be.List(ctx, typ, func(backend.FileInfo) error { return nil }); err != nil {
					errs <- fmt.Errorf("List: %w", err)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := listAll(t, be, backend.PackFile)
	got2 := listAll(t, be, backend.IndexFile)
	if len(got)+len(got2) != len(saved)+1 {
		t.Errorf("List after concurrent saves: %d files, want %d", len(got)+len(got2), len(saved)+1)
	}
	for h, data := range saved {
		if got := load(t, be, h, 0, 0); !bytes.Equal(got, data) {
			t.Errorf("Load %v after concurrent saves: wrong content", h)
		}
	}
}

func testLargeFile(t *testing.T, be backend.Backend) {
	size := 20 << 20
	if testing.Short() {
		size = 5 << 20
	}
	data := randomData(11, size)
	h := save(t, be, backend.PackFile, data)
	if got := load(t, be, h, 0, 0); !bytes.Equal(got, data) {
		t.Fatalf("Load large file: %d bytes, not equal", len(got))
	}
	off := int64(size - 1<<20 - 17)
	if got := load(t, be, h, off, 1<<20); !bytes.Equal(got, data[off:off+1<<20]) {
		t.Errorf("Load 1 MiB near the end: wrong content")
	}
	if got := load(t, be, h, int64(size-4), 0); !bytes.Equal(got, data[size-4:]) {
		t.Errorf("Load the last 4 bytes: %x", got)
	}
	fi, err := be.Stat(context.Background(), h)
	if err != nil || fi.Size != int64(size) {
		t.Errorf("Stat large file: %+v, %v", fi, err)
	}
}

func testCanceled(t *testing.T, be backend.Backend) {
	data := randomData(12, 1000)
	h := save(t, be, backend.SnapshotFile, data)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	newData := randomData(13, 1000)
	newH := handle(backend.SnapshotFile, newData)
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v, want context.Canceled", op, err)
		}
	}
	check("Save", be.Save(ctx, newH, newData))
	_, err := be.Load(ctx, h, 0, 0)
	check("Load", err)
	_, err = be.Stat(ctx, h)
	check("Stat", err)
	check("List", be.List(ctx, backend.SnapshotFile, func(backend.FileInfo) error { return nil }))
	check("Remove", be.Remove(ctx, h))

	got := listAll(t, be, backend.SnapshotFile)
	if _, ok := got[h.Name]; !ok {
		t.Errorf("a Remove with a canceled context removed the file")
	}
	if _, ok := got[newH.Name]; ok {
		t.Errorf("a Save with a canceled context stored the file")
	}

	// A deadline that has passed counts too.
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	if _, err := be.Load(dctx, h, 0, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Load past the deadline: %v, want context.DeadlineExceeded", err)
	}
}

func testListCanceled(t *testing.T, be backend.Backend) {
	for i := 0; i < 20; i++ {
		save(t, be, backend.PackFile, randomData(uint64(600+i), 5))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var names []string
	err := be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("List canceled in its callback: %v, want context.Canceled", err)
	}
	if len(names) != 1 {
		sort.Strings(names)
		t.Errorf("List went on for %d files after its context was canceled", len(names)-1)
	}
}

func testLocation(t *testing.T, be backend.Backend) {
	if be.Location() == "" {
		t.Errorf("Location is empty")
	}
}

// testStaleTemp: a backend that cleans up temporary files of killed
// uploads (backend.TempCleaner) never takes a repository file for one,
// however old the cutoff makes it; one large enough for a multipart
// upload included.
func testStaleTemp(t *testing.T, be backend.Backend) {
	tc, ok := backend.As[backend.TempCleaner](be)
	if !ok {
		t.Skip("not a backend.TempCleaner")
	}
	ctx := context.Background()
	var saved []backend.Handle
	for i, typ := range backend.AllFileTypes {
		saved = append(saved, save(t, be, typ, randomData(uint64(900+i), 100)))
	}
	saved = append(saved, save(t, be, backend.PackFile, randomData(999, 6<<20)))
	for _, age := range []time.Duration{time.Hour, 0} {
		n, err := tc.RemoveStaleTemp(ctx, age)
		if err != nil || n != 0 {
			t.Errorf("RemoveStaleTemp(%v) with no upload in progress: %d removed, %v", age, n, err)
		}
	}
	for _, h := range saved {
		if _, err := be.Stat(ctx, h); err != nil {
			t.Errorf("Stat %v after RemoveStaleTemp: %v", h, err)
		}
	}
}

// testConcurrentSaves: a backend that asks for several saves at once
// (backend.ConcurrentSaver) asks for at least one, and takes that many
// packs saved at once, each loading back whole.
func testConcurrentSaves(t *testing.T, be backend.Backend) {
	cs, ok := backend.As[backend.ConcurrentSaver](be)
	if !ok {
		t.Skip("not a backend.ConcurrentSaver")
	}
	n := cs.SaveConcurrency()
	if n < 1 {
		t.Fatalf("SaveConcurrency() = %d, want at least 1", n)
	}
	ctx := context.Background()
	datas := make([][]byte, n)
	handles := make([]backend.Handle, n)
	errs := make(chan error, n)
	for i := range n {
		datas[i] = randomData(uint64(1000+i), 1<<20+i)
		handles[i] = backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("%064x", 1000+i)}
		go func() { errs <- be.Save(ctx, handles[i], datas[i]) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Save: %v", err)
		}
	}
	for i, h := range handles {
		got, err := be.Load(ctx, h, 0, 0)
		if err != nil || !bytes.Equal(got, datas[i]) {
			t.Errorf("Load %v: %d bytes, %v; want the %d bytes saved", h, len(got), err, len(datas[i]))
		}
	}
}
