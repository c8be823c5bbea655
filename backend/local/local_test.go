package local_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/local"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend {
		be, err := local.Create(t.Context(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return be
	})
}

func TestCreateOpen(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "repo")

	_, err := local.Open(ctx, dir)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no repository at "+dir) {
		t.Fatalf("Open before Create: %v, want fs.ErrNotExist and \"no repository at %s\"", err, dir)
	}

	be, err := local.Create(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if be.Location() != dir {
		t.Errorf("Location %q, want %q", be.Location(), dir)
	}
	for _, sub := range []string{"keys", "data", "index", "snapshots", "locks", "data/00", "data/7f", "data/ff"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || !fi.IsDir() {
			t.Errorf("layout: %s: %v", sub, err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "data")); len(entries) != 256 {
		t.Errorf("data has %d subdirectories, want 256", len(entries))
	}
	if _, err := os.Stat(filepath.Join(dir, "config")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Create wrote a config file: %v", err)
	}
	// Without a config it is still no repository.
	if _, err := local.Open(ctx, dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open without config: %v", err)
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	if _, err := local.Create(ctx, dir); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over an existing repository: %v, want fs.ErrExist", err)
	}
	be2, err := local.Open(ctx, dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if got, err := be2.Load(ctx, backend.Handle{Type: backend.ConfigFile}, 0, 0); err != nil || string(got) != "cfg" {
		t.Errorf("Load config: %q, %v", got, err)
	}
}

// A path through a file holds no repository: Open says so (not "stat
// .../config: not a directory"), and Create names the file.
func TestOpenCreateThroughFile(t *testing.T) {
	ctx := t.Context()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{file, filepath.Join(file, "sub", "repo")} {
		_, err := local.Open(ctx, dir)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no repository at "+dir) || !strings.Contains(err.Error(), file+" is a file, not a directory") {
			t.Errorf("Open(%s): %v, want fs.ErrNotExist naming the file", dir, err)
		}
		_, err = local.Create(ctx, dir)
		if err == nil || !strings.Contains(err.Error(), file+" is a file, not a directory") {
			t.Errorf("Create(%s): %v, want an error naming the file", dir, err)
		}
	}
}

func TestFilesAreReadOnlyAndOverwritable(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	be, err := local.Create(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	name := "ab" + strings.Repeat("0", 62)
	h := backend.Handle{Type: backend.PackFile, Name: name}
	for _, content := range []string{"one", "two"} {
		if err := be.Save(ctx, h, []byte(content)); err != nil {
			t.Fatalf("Save %q: %v", content, err)
		}
	}
	p := filepath.Join(dir, "data", "ab", name)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("file mode %v is writable", fi.Mode())
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Errorf("content %q after overwrite", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Errorf("data/ab holds %d entries, want 1 (no temporary files left)", len(entries))
	}
}

func TestListSkipsForeignFiles(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	be, err := local.Create(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	good := "cd" + strings.Repeat("1", 62)
	if err := be.Save(ctx, backend.Handle{Type: backend.PackFile, Name: good}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.IndexFile, Name: good}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	junk := []string{
		"data/cd/.hidden",
		"data/cd/." + good + "-tmp-123",
		"data/cd/ef" + strings.Repeat("2", 62), // in the wrong subdirectory
		"index/." + good + "-tmp-9",
		"index/x-tmp-y",
	}
	for _, j := range junk {
		if err := os.WriteFile(filepath.Join(dir, j), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"data/cd/subdir", "index/subdir", "data/zz"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "index", "link")); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []backend.FileType{backend.PackFile, backend.IndexFile} {
		var names []string
		err := be.List(ctx, typ, func(fi backend.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		})
		if err != nil || len(names) != 1 || names[0] != good {
			t.Errorf("List %s: %v, %v; want only %s", typ, names, err, good)
		}
	}
}

func TestSaveRecreatesMissingDirectories(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	be := local.New(dir) // a served directory before any client created it
	h := backend.Handle{Type: backend.PackFile, Name: "ef" + strings.Repeat("3", 62)}
	if err := be.Save(ctx, h, []byte("data")); err != nil {
		t.Fatalf("Save into a bare directory: %v", err)
	}
	if got, err := be.Load(ctx, h, 0, 0); err != nil || string(got) != "data" {
		t.Errorf("Load: %q, %v", got, err)
	}
	if err := be.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := be.Init(ctx); err != nil {
		t.Errorf("Init twice: %v", err)
	}
}

func benchmarkBackend(b *testing.B, be backend.Backend) {
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	h := backend.Handle{Type: backend.PackFile, Name: "ab" + strings.Repeat("0", 62)}
	b.Run("Save16MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if err := be.Save(b.Context(), h, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load16MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := be.Load(b.Context(), h, 0, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load1MiBRange", func(b *testing.B) {
		b.SetBytes(1 << 20)
		for b.Loop() {
			if _, err := be.Load(b.Context(), h, 5<<20, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkLocal(b *testing.B) {
	be, err := local.Create(b.Context(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	benchmarkBackend(b, be)
}

// TestCreateTempSaveTemp writes a pack through a temporary file, as the
// packer does: it is invisible to List until SaveTemp renames it into place,
// read-only afterwards, and gone without a trace when SaveTemp fails.
func TestCreateTempSaveTemp(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	be, err := local.Create(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	countPacks := func() int {
		n := 0
		if err := be.List(ctx, backend.PackFile, func(backend.FileInfo) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	f, err := be.CreateTemp(ctx, backend.PackFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("pack bytes")); err != nil {
		t.Fatal(err)
	}
	if n := countPacks(); n != 0 {
		t.Fatalf("List shows %d packs while the temporary file is open", n)
	}
	name := strings.Repeat("ab", 32)
	h := backend.Handle{Type: backend.PackFile, Name: name}
	if err := be.SaveTemp(ctx, h, f); err != nil {
		t.Fatal(err)
	}
	got, err := be.Load(ctx, h, 0, 0)
	if err != nil || string(got) != "pack bytes" {
		t.Fatalf("Load after SaveTemp: %q, %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "data", "ab", name))
	if err != nil || fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("saved pack: %v, mode %v (want read-only)", err, fi.Mode())
	}
	if n := countPacks(); n != 1 {
		t.Fatalf("List shows %d packs, want 1", n)
	}

	// A bad handle fails, and the temporary file is removed.
	f, err = be.CreateTemp(ctx, backend.PackFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.SaveTemp(ctx, backend.Handle{Type: backend.PackFile, Name: "../x"}, f); err == nil {
		t.Fatal("SaveTemp accepted a name with a slash")
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	if _, err := be.CreateTemp(ctx, backend.ConfigFile); err == nil {
		t.Fatal("CreateTemp for the config file succeeded")
	}
}

// TestLoadUncached reads files of awkward sizes around the page cache and
// gets exactly what Load gets, reusing its buffer when it can.
func TestLoadUncached(t *testing.T) {
	ctx := t.Context()
	be, err := local.Create(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i, size := range []int{0, 1, 4095, 4097, 5<<20 + 3, 2 << 20} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(j*7 + i)
		}
		h := backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("%02x%062x", i, i)}
		if err := be.Save(ctx, h, data); err != nil {
			t.Fatal(err)
		}
		got, err := be.LoadUncached(ctx, h, buf)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("size %d: LoadUncached returned %d bytes that differ from the file", size, len(got))
		}
		buf = got[:cap(got)]
	}
	if _, err := be.LoadUncached(ctx, backend.Handle{Type: backend.PackFile, Name: strings.Repeat("cd", 32)}, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestLoadRange reads ranges of a pack that is not in the page cache (they
// go around it, with O_DIRECT, when large) and of one that is, into
// buffers that suit a direct read and buffers that do not, and gets exactly
// the file's bytes.
func TestLoadRange(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	be, err := local.Create(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	const size = 3<<20 + 4321
	data := make([]byte, size)
	for j := range data {
		data[j] = byte(j*13 + j>>12)
	}
	name := strings.Repeat("ab", 32)
	h := backend.Handle{Type: backend.PackFile, Name: name}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	var path string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == name {
			path = p
		}
		return nil
	})
	if path == "" {
		t.Fatal("the saved pack is not in the repository")
	}
	// uncache drops the file's pages from the page cache.
	uncache := func() {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	}
	aligned := func(n int) []byte { // Go allocates large objects page aligned
		return make([]byte, n)
	}
	bufs := map[string]func(n int) []byte{
		"nil":       func(int) []byte { return nil },
		"aligned":   aligned,
		"unaligned": func(n int) []byte { return aligned(n + 1)[1:] },
		"too small": func(n int) []byte { return aligned(n / 2) },
	}
	ranges := []struct{ off, n int64 }{
		{0, 1 << 20},
		{4096, 300 << 10},
		{12345, 1<<20 + 17},
		{size - 700<<10, 700 << 10}, // to the end of the file
		{size - 257<<10 - 1, 257 << 10},
		{100, 1000}, // small: read through the cache
	}
	for _, cached := range []bool{false, true} {
		for bname, mk := range bufs {
			for _, r := range ranges {
				if cached {
					if _, err := be.Load(ctx, h, 0, 0); err != nil {
						t.Fatal(err)
					}
				} else {
					uncache()
				}
				got, err := be.LoadRange(ctx, h, r.off, int(r.n), mk(int(r.n)+8192))
				if err != nil {
					t.Fatalf("cached %v, %s buffer, [%d, +%d): %v", cached, bname, r.off, r.n, err)
				}
				if !bytes.Equal(got, data[r.off:r.off+r.n]) {
					t.Fatalf("cached %v, %s buffer, [%d, +%d): %d bytes that differ from the file", cached, bname, r.off, r.n, len(got))
				}
			}
		}
	}
	if _, err := be.LoadRange(ctx, h, size-100, 400<<10, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("range beyond the end: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := be.LoadRange(ctx, backend.Handle{Type: backend.PackFile, Name: strings.Repeat("cd", 32)}, 0, 400<<10, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
