package integration

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// makeRoundTripTree builds the tree of the core issue: empty files, files
// around the maximum chunk size, a 2 GiB sparse file, hard links, symlinks
// (one dangling), a fifo, a socket, a device node, xattrs and an ACL, a name
// that is not UTF-8, a 255-byte name and 150 levels of directories.
func makeRoundTripTree(t *testing.T, src string, big bool) {
	t.Helper()
	rng := rand.New(rand.NewSource(42))
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	writeFile(t, filepath.Join(src, "empty"), nil)
	writeFile(t, filepath.Join(src, "sub", "empty2"), nil)
	const mib8 = 8 << 20
	writeFile(t, filepath.Join(src, "f8m"), random(mib8))
	writeFile(t, filepath.Join(src, "f8m+1"), random(mib8+1))
	writeFile(t, filepath.Join(src, "f8m-1"), random(mib8-1))
	writeFile(t, filepath.Join(src, "small.txt"), []byte("hello, world\n"))
	compressible := bytes.Repeat([]byte("compressible text line\n"), 200000)
	writeFile(t, filepath.Join(src, "text.log"), compressible)

	sparse := filepath.Join(src, "sparse.img")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(2 << 30)
	if !big {
		size = 64 << 20
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(random(1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(random(3<<20), size/2+12345); err != nil {
		t.Fatal(err)
	}
	f.Close()

	if err := os.Link(filepath.Join(src, "small.txt"), filepath.Join(src, "sub", "hardlink.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("small.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(src, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(src, "null-dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(src, "sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if err := unix.Setxattr(filepath.Join(src, "small.txt"), "user.comment", []byte("a note\x00with nul"), 0); err != nil {
		t.Fatal(err)
	}
	shell(t, "setfacl -m u:65534:r "+filepath.Join(src, "f8m"))
	writeFile(t, filepath.Join(src, "bad\xff\xfename"), []byte("not utf-8"))
	writeFile(t, filepath.Join(src, strings.Repeat("n", 255)), []byte("long name"))
	setuid := filepath.Join(src, "setuid")
	writeFile(t, setuid, []byte("#!/bin/sh\n"))
	if err := os.Chmod(setuid, 0o4755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(src, "sub", "empty2"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	deep := src
	for i := 0; i < 150; i++ {
		deep = filepath.Join(deep, "d")
	}
	writeFile(t, filepath.Join(deep, "bottom"), []byte("deep"))
	// Distinct nanosecond times, set last (children change their parents' mtime).
	shell(t, "cd "+src+" && find . -depth -print0 | xargs -0 touch -h -d '2021-02-03 04:05:06.123456789'")
	shell(t, "touch -h -d '2020-01-01 00:00:00.987654321' "+filepath.Join(src, "link"))
}

// assertSameTimes walks src and compares every entry's mtime with the
// restored copy to the nanosecond.
func assertSameTimes(t *testing.T, src, dst string) {
	t.Helper()
	n := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		var a, b unix.Stat_t
		if err := unix.Lstat(p, &a); err != nil {
			return err
		}
		if err := unix.Lstat(filepath.Join(dst, rel), &b); err != nil {
			t.Errorf("%s missing in restore: %v", rel, err)
			return nil
		}
		if a.Mtim != b.Mtim {
			t.Errorf("%s: mtime %v, restored %v", rel, a.Mtim, b.Mtim)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 160 {
		t.Fatalf("walked only %d entries", n)
	}
}

func allocated(t *testing.T, p string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestRoundTripRestore(t *testing.T) {
	requireRoot(t)
	requireCmd(t, "rsync")
	requireCmd(t, "setfacl")
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	makeRoundTripTree(t, src, !testing.Short())
	e.must("init")
	out := e.must("backup", "--json", src)
	var sum map[string]any
	if err := json.Unmarshal([]byte(lastLine(out)), &sum); err != nil { // status lines come first
		t.Fatalf("backup --json: %v\n%s", err, out)
	}
	if sum["message_type"] != "summary" || sum["snapshot_id"] == "" {
		t.Fatalf("unexpected summary %v", sum)
	}
	target := filepath.Join(e.dir, "restored")
	e.must("restore", "latest", "--target", target)
	restored := filepath.Join(target, src)

	rsync := exec.Command("rsync", "-aHAXn", "--checksum", "--itemize-changes", src+"/", restored+"/")
	rout, err := rsync.CombinedOutput()
	if err != nil {
		t.Fatalf("rsync: %v\n%s", err, rout)
	}
	if len(bytes.TrimSpace(rout)) != 0 {
		t.Fatalf("rsync -aHAXn --checksum --itemize-changes found differences:\n%s", rout)
	}
	assertSameTimes(t, src, restored)
	a, b := allocated(t, filepath.Join(src, "sparse.img")), allocated(t, filepath.Join(restored, "sparse.img"))
	if b > a+(1<<20) || b < a/2 {
		t.Fatalf("sparse file: source allocates %d bytes, restored %d", a, b)
	}
	// Restore --verify reads everything back.
	e.must("restore", "latest:"+src+"/sub", "--target", filepath.Join(e.dir, "sub"), "--verify")
	if got, _ := os.ReadFile(filepath.Join(e.dir, "sub", "hardlink.txt")); string(got) != "hello, world\n" {
		t.Fatalf("restore of a subdirectory: got %q", got)
	}
	// dump streams one file.
	if got := e.must("dump", "latest", src+"/f8m+1"); len(got) != 8<<20+1 {
		t.Fatalf("dump: got %d bytes", len(got))
	}
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func TestDedup(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	rng := rand.New(rand.NewSource(7))
	files, size := 64, 16<<20 // 1 GiB
	if testing.Short() {
		files = 8
	}
	for i := 0; i < files; i++ {
		b := make([]byte, size)
		rng.Read(b)
		writeFile(t, filepath.Join(src, "dir", string(rune('a'+i%26)), "file"+string(rune('0'+i/26))), b)
	}
	big := make([]byte, 100<<20)
	rng.Read(big)
	writeFile(t, filepath.Join(e.dir, "big", "file"), big)

	e.must("init")
	e.must("backup", src)
	before := dirSize(t, e.repo)
	e.must("backup", src)
	if grew := dirSize(t, e.repo) - before; grew > 1<<20 {
		t.Fatalf("unchanged re-backup added %d bytes", grew)
	}
	// The same again without the parent: every file is read and deduplicated.
	before = dirSize(t, e.repo)
	e.must("backup", "--force", src)
	if grew := dirSize(t, e.repo) - before; grew > 1<<20 {
		t.Fatalf("forced re-backup added %d bytes", grew)
	}

	e.must("backup", filepath.Join(e.dir, "big"))
	before = dirSize(t, e.repo)
	writeFile(t, filepath.Join(e.dir, "big", "file"), append([]byte{'X'}, big...))
	e.must("backup", filepath.Join(e.dir, "big"))
	if grew := dirSize(t, e.repo) - before; grew > 3<<20 {
		t.Fatalf("one byte inserted at the front of 100 MiB added %d bytes", grew)
	}
}
