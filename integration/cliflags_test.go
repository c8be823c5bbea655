package integration

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// randomData returns n incompressible bytes.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// packSizes returns the sizes of the pack files in repo.
func packSizes(t *testing.T, repo string) []int64 {
	t.Helper()
	var sizes []int64
	err := filepath.WalkDir(filepath.Join(repo, "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			sizes = append(sizes, fi.Size())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i] < sizes[j] })
	return sizes
}

// TestCLIPackSize: --pack-size (and DJ_PACK_SIZE) make backup write
// smaller packs than the default 16 MiB; values out of restic's bounds
// are refused.
func TestCLIPackSize(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "big"), randomData(1, 20<<20))

	small := newEnv(t)
	small.must("init")
	small.must("--pack-size", "4", "backup", src)
	sizes := packSizes(t, small.repo)
	if len(sizes) < 4 {
		t.Errorf("--pack-size 4: %d packs %v, want at least 4", len(sizes), sizes)
	}

	env := newEnv(t)
	env.must("init")
	if r := env.runEnv([]string{"DJ_PACK_SIZE=4"}, "backup", src); r.code != 0 {
		t.Fatalf("backup with DJ_PACK_SIZE=4: exit %d\n%s", r.code, r.stderr)
	}
	if n := len(packSizes(t, env.repo)); n < 4 {
		t.Errorf("DJ_PACK_SIZE=4: %d packs, want at least 4", n)
	}

	def := newEnv(t)
	def.must("init")
	def.must("backup", src)
	if n := len(packSizes(t, def.repo)); n >= len(sizes) {
		t.Errorf("default pack size: %d packs, not fewer than the %d of --pack-size 4", n, len(sizes))
	}

	for _, v := range []string{"3", "129"} {
		r := small.run("--pack-size", v, "backup", src)
		if r.code != 1 || !strings.Contains(r.stderr, "--pack-size "+v+" MiB is out of range") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("--pack-size %s: exit %d, stderr %q", v, r.code, r.stderr)
		}
	}
}

// timed runs dj and returns how long it took; it fails the test unless
// dj exits 0.
func timed(e *env, extra []string, args ...string) time.Duration {
	e.t.Helper()
	start := time.Now()
	r := e.runEnv(extra, args...)
	d := time.Since(start)
	if r.code != 0 {
		e.t.Fatalf("dj %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return d
}

// TestCLIRateLimits backs up and restores 1 MiB at 1024 KiB/s, to a
// local repository (the backend decorator) and over REST (the paced
// transport): each takes at least about a second. Only the lower bound is
// checked, so a busy machine cannot fail the test.
func TestCLIRateLimits(t *testing.T) {
	const minTime = 800 * time.Millisecond
	for _, kind := range []string{"local", "rest"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t)
			if kind == "rest" {
				e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+e.serve(), "DJ_CACHE_DIR="+filepath.Join(e.dir, "cache"))
			}
			src := filepath.Join(e.dir, "src")
			data := randomData(2, 1<<20)
			writeFile(t, filepath.Join(src, "f"), data)
			e.must("init")

			if d := timed(e, nil, "--limit-upload", "1024", "backup", src); d < minTime {
				t.Errorf("backup of 1 MiB at --limit-upload 1024 took %v, want at least %v", d, minTime)
			}
			target := filepath.Join(e.dir, "restored")
			if d := timed(e, []string{"DJ_LIMIT_DOWNLOAD=1024"}, "--no-cache", "restore", "latest", "--target", target); d < minTime {
				t.Errorf("restore of 1 MiB at DJ_LIMIT_DOWNLOAD=1024 took %v, want at least %v", d, minTime)
			}
			got, err := os.ReadFile(filepath.Join(target, src, "f"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("restored file differs: %v", err)
			}
			if out := e.must("--limit-upload", "1024", "--limit-download", "1024", "check", "--read-data"); !strings.Contains(out, "no errors") {
				t.Errorf("check: %s", out)
			}
		})
	}
}

// TestCLIExtendedOptions: -o rest.connections works over REST, is
// accepted (and ignored) for a local repository, and an unknown key is one
// line that names it and the known ones.
func TestCLIExtendedOptions(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f"), randomData(3, 3<<20))
	writeFile(t, filepath.Join(src, "g"), []byte("small"))

	e.must("init")
	e.must("-o", "rest.connections=1", "backup", src)

	r := e.run("-o", "rest.conections=1", "snapshots")
	if r.code != 1 || strings.TrimSpace(r.stderr) != `dj: unknown option "rest.conections" (known options: connections, rclone.args, rclone.program, rest.connections, s3.bucket-lookup, s3.object-lock, s3.object-lock-mode, s3.part-size, s3.profile, s3.region, s3.sse, s3.sse-c-key-file, s3.sse-kms-key-id, s3.storage-class, sftp.args, sftp.command, sftp.connections)` {
		t.Errorf("unknown option: exit %d, stderr %q", r.code, r.stderr)
	}
	r = e.run("snapshots", "--option", "rest.connections=none")
	if r.code != 1 || !strings.Contains(r.stderr, "rest.connections") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("bad value: exit %d, stderr %q", r.code, r.stderr)
	}

	rest := newEnv(t)
	rest.extraEnv = append(rest.extraEnv, "DJ_REPOSITORY=rest:"+rest.serve(), "DJ_CACHE_DIR="+filepath.Join(rest.dir, "cache"))
	rest.must("-o", "rest.connections=1", "init")
	rest.must("-o", "rest.connections=1", "backup", src)
	target := filepath.Join(rest.dir, "restored")
	rest.must("-o", "rest.connections=2", "restore", "latest", "--target", target)
	got, err := os.ReadFile(filepath.Join(target, src, "f"))
	if err != nil || !bytes.Equal(got, randomData(3, 3<<20)) {
		t.Fatalf("restore over REST with rest.connections: %v", err)
	}
}

// TestCLINoCache: with --no-cache a REST repository leaves nothing in the
// cache directory; without it the snapshot and index files are cached.
func TestCLINoCache(t *testing.T) {
	e := newEnv(t)
	cacheDir := filepath.Join(e.dir, "cache")
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+e.serve(), "DJ_CACHE_DIR="+cacheDir)
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"))
	e.must("init")
	e.must("--no-cache", "backup", src)
	e.must("--no-cache", "snapshots")
	e.must("ls", "--no-cache", "latest")
	if n := countFiles(t, cacheDir); n != 0 {
		t.Fatalf("--no-cache left %d files in the cache", n)
	}
	e.must("ls", "latest")
	if n := countFiles(t, cacheDir); n == 0 {
		t.Fatal("without --no-cache nothing was cached")
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return fs.SkipAll
		}
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// restoredFiles lists the regular files below dir, relative to it.
func restoredFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestCLIRestoreInsensitive: --iinclude and --iexclude ignore case and
// add to --include and --exclude.
func TestCLIRestoreInsensitive(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	for _, name := range []string{"Photos/a.JPG", "Photos/b.jpg", "Photos/notes.txt", "Docs/c.Txt", "Docs/d.md"} {
		writeFile(t, filepath.Join(src, name), []byte(name))
	}
	e.must("init")
	e.must("backup", src)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--include", "*.jpg"}, "Photos/b.jpg"},
		{[]string{"--iinclude", "*.jpg"}, "Photos/a.JPG Photos/b.jpg"},
		{[]string{"--iinclude", "*.JPG", "--include", "d.md"}, "Docs/d.md Photos/a.JPG Photos/b.jpg"},
		{[]string{"--iinclude", "/" + strings.ToUpper(strings.TrimPrefix(src, "/")) + "/photos"}, "Photos/a.JPG Photos/b.jpg Photos/notes.txt"},
		{[]string{"--exclude", "*.txt"}, "Docs/c.Txt Docs/d.md Photos/a.JPG Photos/b.jpg"},
		{[]string{"--iexclude", "*.TXT"}, "Docs/d.md Photos/a.JPG Photos/b.jpg"},
		{[]string{"--iexclude", "*.txt", "--exclude", "Photos"}, "Docs/d.md"},
	}
	for i, tt := range tests {
		target := filepath.Join(e.dir, "restore", string(rune('a'+i)))
		e.must(append([]string{"restore", "latest", "--target", target}, tt.args...)...)
		got := strings.Join(restoredFiles(t, filepath.Join(target, src)), " ")
		if got != tt.want {
			t.Errorf("restore %s: %q, want %q", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	r := e.run("restore", "latest", "--target", filepath.Join(e.dir, "bad"), "--iinclude", "[x")
	if r.code == 0 || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("bad pattern: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestCLIDumpZip dumps a directory with --archive zip, reads the archive
// with archive/zip and compares it with the source: every file, directory
// and symlink with its content, mode and mtime (to the second).
func TestCLIDumpZip(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("hello\n"))
	writeFile(t, filepath.Join(src, "sub", "big"), randomData(4, 3<<20+17))
	writeFile(t, filepath.Join(src, "sub", "deeper", "empty"), nil)
	if err := os.Chmod(filepath.Join(src, "a.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "sub", "big"), 0o751); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/big", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "sub", "deeper"), old, old); err != nil {
		t.Fatal(err)
	}
	e.must("init")
	e.must("backup", src)

	for _, flag := range []string{"--archive", "-a"} {
		out := e.must("dump", flag, "zip", "latest", src)
		zr, err := zip.NewReader(strings.NewReader(out), int64(len(out)))
		if err != nil {
			t.Fatalf("dump %s zip is not a zip archive: %v", flag, err)
		}
		entries := map[string]*zip.File{}
		for _, f := range zr.File {
			entries[f.Name] = f
		}
		prefix := strings.TrimPrefix(src, "/") + "/"
		seen := 0
		err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == src {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			name := prefix + rel
			if fi.IsDir() {
				name += "/"
			}
			zf, ok := entries[name]
			if !ok {
				t.Errorf("%s missing from the zip", name)
				return nil
			}
			seen++
			if zf.Mode() != fi.Mode() || zf.Modified.Unix() != fi.ModTime().Unix() {
				t.Errorf("%s: mode %v mtime %v, want %v %v", name, zf.Mode(), zf.Modified, fi.Mode(), fi.ModTime())
			}
			var want []byte
			if fi.Mode().IsRegular() {
				want, _ = os.ReadFile(p)
			} else if fi.Mode()&fs.ModeSymlink != 0 {
				target, _ := os.Readlink(p)
				want = []byte(target)
			}
			rc, err := zf.Open()
			if err != nil {
				return err
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: content differs (%d bytes, want %d)", name, len(got), len(want))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen != len(entries) {
			t.Errorf("zip has %d entries, the source %d", len(entries), seen)
		}
	}

	// A file is written as it is, whatever the archive format.
	if out := e.must("dump", "--archive", "zip", "latest", filepath.Join(src, "a.txt")); out != "hello\n" {
		t.Errorf("dump of a file with --archive zip: %q", out)
	}
	r := e.run("dump", "--archive", "rar", "latest", src)
	if r.code != 1 || strings.TrimSpace(r.stderr) != `dj: unknown archive format "rar" (want tar, zip or vma)` {
		t.Errorf("unknown format: exit %d, stderr %q", r.code, r.stderr)
	}
}
