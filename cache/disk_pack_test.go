package cache

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/mem"
)

// counting is a backend decorator that counts the loads of each file type.
type counting struct {
	backend.Backend
	mu    sync.Mutex
	loads map[backend.FileType]int
}

func newCounting(be backend.Backend) *counting {
	return &counting{Backend: be, loads: map[backend.FileType]int{}}
}

func (c *counting) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	c.mu.Lock()
	c.loads[h.Type]++
	c.mu.Unlock()
	return c.Backend.Load(ctx, h, offset, length)
}

func (c *counting) take(t backend.FileType) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.loads[t]
	c.loads[t] = 0
	return n
}

func (c *counting) Unwrap() backend.Backend { return c.Backend }

// savePack stores data as a pack named by its SHA-256 directly in be.
func savePack(t *testing.T, be backend.Backend, data []byte) backend.Handle {
	t.Helper()
	h := backend.Handle{Type: backend.PackFile, Name: sumName(data)}
	if err := be.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestDiskTreePackFetchedOnceThenServedByRange(t *testing.T) {
	ctx := context.Background()
	be := newCounting(mem.New())
	data := bytes.Repeat([]byte("0123456789"), 100)
	h := savePack(t, be, data)
	base := t.TempDir()
	d := NewDisk(be, base, 0)

	// Before the id is known nothing is cached.
	if b, err := d.LoadTreePack(ctx, h, 10, 5); err != nil || string(b) != "01234" {
		t.Fatalf("uncached load: %q %v", b, err)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Fatalf("cached before SetRepositoryID: %v", entries)
	}
	be.take(backend.PackFile)

	d.SetRepositoryID(testRepoID)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			b, err := d.LoadTreePack(ctx, h, int64(i*10+3), 4)
			if err != nil || string(b) != "3456" {
				t.Errorf("load %d: %q %v", i, b, err)
			}
		}(i)
	}
	wg.Wait()
	if n := be.take(backend.PackFile); n != 1 {
		t.Errorf("8 concurrent cold loads fetched the pack %d times, want 1", n)
	}
	// A new Disk (another process) over the same base: served from the cache.
	d2 := NewDisk(be, base, 0)
	d2.SetRepositoryID(testRepoID)
	for _, c := range []struct {
		off  int64
		n    int
		want string
	}{{0, 3, "012"}, {995, 5, "56789"}, {990, 0, "0123456789"}} {
		b, err := d2.LoadTreePack(ctx, h, c.off, c.n)
		if err != nil || string(b) != c.want {
			t.Errorf("cached load at %d, %d: %q %v", c.off, c.n, b, err)
		}
	}
	if n := be.take(backend.PackFile); n != 0 {
		t.Errorf("warm loads fetched %d times", n)
	}
	if _, err := d2.LoadTreePack(ctx, h, 998, 5); err == nil {
		t.Error("load beyond the end succeeded")
	}

	// A damaged copy is noticed by the next process and fetched again.
	p := filepath.Join(base, testRepoID, "data", h.Name[:2], h.Name)
	os.WriteFile(p, bytes.Repeat([]byte("x"), len(data)), 0o600)
	d3 := NewDisk(be, base, 0)
	d3.SetRepositoryID(testRepoID)
	if b, err := d3.LoadTreePack(ctx, h, 0, 3); err != nil || string(b) != "012" {
		t.Fatalf("load over a damaged copy: %q %v", b, err)
	}
	if n := be.take(backend.PackFile); n != 1 {
		t.Errorf("damaged copy: %d fetches, want 1", n)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Error("damaged copy not replaced")
	}
}

func TestDiskWritesTreePacksThrough(t *testing.T) {
	ctx := context.Background()
	be := newCounting(mem.New())
	d := NewDisk(be, t.TempDir(), 0)
	d.SetRepositoryID(testRepoID)
	tree, dataPack := []byte("a tree pack"), []byte("a data pack")
	th := backend.Handle{Type: backend.PackFile, Name: sumName(tree)}
	dh := backend.Handle{Type: backend.PackFile, Name: sumName(dataPack)}
	if err := d.Save(backend.WithPackKind(ctx, backend.TreePack), th, tree); err != nil {
		t.Fatal(err)
	}
	if err := d.Save(backend.WithPackKind(ctx, backend.DataPack), dh, dataPack); err != nil {
		t.Fatal(err)
	}
	if b, err := d.LoadTreePack(ctx, th, 2, 4); err != nil || string(b) != "tree" {
		t.Fatalf("%q %v", b, err)
	}
	if n := be.take(backend.PackFile); n != 0 {
		t.Errorf("a tree pack written through was fetched %d times", n)
	}
	if _, err := os.Stat(d.path(dh)); !os.IsNotExist(err) {
		t.Errorf("data pack cached: %v", err)
	}
	// Remove drops the cached copy too.
	if err := d.Remove(ctx, th); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.path(th)); !os.IsNotExist(err) {
		t.Errorf("removed pack still cached: %v", err)
	}
}

func TestDiskEvictsLeastRecentlyUsedPacks(t *testing.T) {
	ctx := context.Background()
	be := newCounting(mem.New())
	base := t.TempDir()
	d := NewDisk(be, base, 250)
	d.SetRepositoryID(testRepoID)
	var hs []backend.Handle
	for i := 0; i < 3; i++ {
		hs = append(hs, savePack(t, be, bytes.Repeat([]byte{byte('a' + i)}, 100)))
	}
	old := time.Now().Add(-time.Hour)
	for i, h := range hs[:2] {
		if _, err := d.LoadTreePack(ctx, h, 0, 1); err != nil {
			t.Fatal(err)
		}
		// Pack 1 is older than pack 0: pack 1 goes first.
		at := old.Add(time.Duration(1-i) * time.Minute)
		os.Chtimes(d.path(h), at, at)
	}
	if _, err := d.LoadTreePack(ctx, hs[2], 0, 1); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, true} {
		_, err := os.Stat(d.path(hs[i]))
		if got := err == nil; got != want {
			t.Errorf("pack %d cached: %v, want %v", i, got, want)
		}
	}
	// Index and snapshot files are kept whatever the bound.
	snap := []byte(string(bytes.Repeat([]byte("s"), 300)))
	sh := backend.Handle{Type: backend.SnapshotFile, Name: sumName(snap)}
	if err := d.Save(ctx, sh, snap); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.path(sh)); err != nil {
		t.Errorf("snapshot file not kept: %v", err)
	}
}

func TestDirsAndRemoveOld(t *testing.T) {
	base := t.TempDir()
	now := time.Now()
	mk := func(name string, age time.Duration, size int) {
		dir := filepath.Join(base, name)
		os.MkdirAll(filepath.Join(dir, "index"), 0o700)
		os.WriteFile(filepath.Join(dir, "index", "f"), make([]byte, size), 0o600)
		at := now.Add(-age)
		os.Chtimes(dir, at, at)
	}
	fresh, stale := testRepoID, string(bytes.Repeat([]byte("b"), 64))
	mk(fresh, time.Hour, 10)
	mk(stale, 31*24*time.Hour, 20)
	mk("0123456789abcdef", time.Hour, 1) // an older dj's cache, per location
	mk("not-a-cache", 40*24*time.Hour, 1)
	dirs, err := Dirs(base, true)
	if err != nil || len(dirs) != 3 {
		t.Fatalf("Dirs: %v %+v", err, dirs)
	}
	if dirs[2].ID != stale || dirs[2].Size != 20 || !dirs[2].Old(now, 30*24*time.Hour) || dirs[0].Old(now, 30*24*time.Hour) && !dirs[0].Legacy {
		t.Errorf("Dirs: %+v", dirs)
	}
	removed, err := RemoveOld(base, now, 30*24*time.Hour)
	if err != nil || len(removed) != 2 {
		t.Fatalf("RemoveOld: %v %+v", err, removed)
	}
	for name, want := range map[string]bool{fresh: true, stale: false, "0123456789abcdef": false, "not-a-cache": true} {
		_, err := os.Stat(filepath.Join(base, name))
		if got := err == nil; got != want {
			t.Errorf("%s present: %v, want %v", name, got, want)
		}
	}
	if d, err := Dirs(filepath.Join(base, "missing"), false); err != nil || d != nil {
		t.Errorf("missing base: %v %v", d, err)
	}
}

// TestDiskUnderRepository: a repository on a cached backend announces its
// id, and its tree loads go through the cache: a second opening loads no
// pack, index or snapshot file from the backend.
func TestDiskUnderRepository(t *testing.T) {
	ctx := context.Background()
	be := newCounting(mem.New())
	base := t.TempDir()
	id, cfgID := writeTestTree(t, be)
	be.take(backend.PackFile)
	be.take(backend.IndexFile)
	for round := 0; round < 2; round++ {
		r := openTestRepo(t, NewDisk(be, base, 0))
		if _, err := r.LoadTree(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(base, cfgID)); err != nil {
			t.Fatalf("no cache dir named by the repository id: %v", err)
		}
		packs, idx := be.take(backend.PackFile), be.take(backend.IndexFile)
		if round == 0 && (packs != 1 || idx == 0) {
			t.Errorf("cold: %d pack and %d index loads, want 1 and some", packs, idx)
		}
		if round == 1 && (packs != 0 || idx != 0) {
			t.Errorf("warm: %d pack and %d index loads, want none", packs, idx)
		}
	}
}

// gated is a backend whose pack loads wait for release (or their context).
type gated struct {
	backend.Backend
	started chan struct{}
	release chan struct{}
}

func (g *gated) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	if h.Type == backend.PackFile {
		g.started <- struct{}{}
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Backend.Load(ctx, h, offset, length)
}

// TestDiskFetchOfCancelledCallerIsRetried: when the caller whose fetch
// others wait for gives up, a waiter fetches the pack itself.
func TestDiskFetchOfCancelledCallerIsRetried(t *testing.T) {
	g := &gated{Backend: mem.New(), started: make(chan struct{}, 2), release: make(chan struct{})}
	h := savePack(t, g.Backend, []byte("tree pack bytes"))
	d := NewDisk(g, t.TempDir(), 0)
	d.SetRepositoryID(testRepoID)
	ctx1, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := d.LoadTreePack(ctx1, h, 0, 4); errc <- err }()
	<-g.started
	got := make(chan string, 1)
	go func() {
		b, err := d.LoadTreePack(context.Background(), h, 5, 4)
		if err != nil {
			t.Error(err)
		}
		got <- string(b)
	}()
	time.Sleep(20 * time.Millisecond) // let the second caller wait
	cancel()
	if err := <-errc; err == nil {
		t.Error("cancelled caller got no error")
	}
	<-g.started
	close(g.release)
	if s := <-got; s != "pack" {
		t.Errorf("waiter got %q", s)
	}
}
