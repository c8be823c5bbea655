//go:build linux

package fusefs

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
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// requireFUSE skips the test when FUSE mounts are impossible here, unless
// DJ_TEST_FUSE=1 demands them (CI).
func requireFUSE(t *testing.T) {
	t.Helper()
	var why string
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "/dev/fuse is missing"
	} else if _, err := lookFusermount(); err != nil && os.Geteuid() != 0 {
		why = "fusermount3 is missing"
	}
	if why == "" {
		return
	}
	if os.Getenv("DJ_TEST_FUSE") == "1" {
		t.Fatalf("FUSE tests required (DJ_TEST_FUSE=1) but %s", why)
	}
	t.Skipf("no FUSE: %s", why)
}

// testLog collects the mount's log lines.
type testLog struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *testLog) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	l.t.Log(line)
}

// count returns the number of lines that contain s.
func (l *testLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func (l *testLog) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// mountTest mounts repo on a fresh directory and unmounts it when the test
// ends, checking that nothing stays mounted.
func mountTest(t *testing.T, repo Repository, opts Options) (string, *Mounted, *testLog) {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	log := &testLog{t: t}
	if opts.Logf == nil {
		opts.Logf = log.logf
	}
	opts.DebugFUSE = opts.DebugFUSE || os.Getenv("DJ_DEBUG_FUSE") == "1"
	m, err := Mount(context.Background(), dir, repo, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { unmountTest(t, m) })
	return dir, m, log
}

func unmountTest(t *testing.T, m *Mounted) {
	t.Helper()
	var err error
	for i := 0; i < 20; i++ {
		if err = m.Unmount(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("Unmount: %v", err)
		exec.Command("fusermount3", "-u", "-z", m.Mountpoint()).Run()
	}
	if isMounted(m.Mountpoint()) {
		t.Errorf("%s is still in /proc/mounts", m.Mountpoint())
	}
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && unescapeMountinfo(f[1]) == dir {
			return true
		}
	}
	return false
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// collidingNames returns the directory names of sn2 and sn3, which were
// taken at the same time: the one sorted first by ID gets the plain name.
func (f *fixture) collidingNames() (sn2Name, sn3Name string) {
	name := timeName(f.sn2)
	if f.sn2.ID.String() < f.sn3.ID.String() {
		return name, name + "-1"
	}
	return name + "-1", name
}

func TestMountLayout(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{})

	if got, want := readDirNames(t, mnt), []string{"hosts", "ids", "snapshots", "tags", "versions"}; !slices.Equal(got, want) {
		t.Errorf("root: %v, want %v", got, want)
	}
	n2, n3 := f.collidingNames()
	wantSnaps := []string{timeName(f.sn1), n2, n3, timeName(f.snBroken), "latest"}
	slices.Sort(wantSnaps)
	if got := readDirNames(t, filepath.Join(mnt, "snapshots")); !slices.Equal(got, wantSnaps) {
		t.Errorf("snapshots: %v, want %v", got, wantSnaps)
	}
	tests := []struct {
		link, target string
	}{
		{"snapshots/latest", timeName(f.snBroken)},
		{"hosts/alpha/latest", n2},
		{"hosts/beta/latest", timeName(f.sn3)},
		{"tags/daily/latest", timeName(f.sn2)},
		{"tags/weekly/latest", timeName(f.sn2)},
	}
	for _, tt := range tests {
		got, err := os.Readlink(filepath.Join(mnt, tt.link))
		if err != nil {
			t.Errorf("%s: %v", tt.link, err)
			continue
		}
		if got != tt.target && !(tt.link == "hosts/alpha/latest" && got == timeName(f.sn2)) {
			t.Errorf("%s -> %q, want %q", tt.link, got, tt.target)
		}
	}
	// Following "latest" leads into the newest snapshot.
	if b, err := os.ReadFile(filepath.Join(mnt, "snapshots/latest/good.txt")); err != nil || string(b) != "still fine\n" {
		t.Errorf("snapshots/latest/good.txt: %q, %v", b, err)
	}
	wantIDs := []string{f.sn1.ID.Short(), f.sn2.ID.Short(), f.sn3.ID.Short(), f.snBroken.ID.Short()}
	slices.Sort(wantIDs)
	if got := readDirNames(t, filepath.Join(mnt, "ids")); !slices.Equal(got, wantIDs) {
		t.Errorf("ids: %v, want %v", got, wantIDs)
	}
	if got, want := readDirNames(t, filepath.Join(mnt, "hosts")), []string{"alpha", "beta", "gamma"}; !slices.Equal(got, want) {
		t.Errorf("hosts: %v, want %v", got, want)
	}
	if got, want := readDirNames(t, filepath.Join(mnt, "tags")), []string{"broken", "daily", "weekly"}; !slices.Equal(got, want) {
		t.Errorf("tags: %v, want %v", got, want)
	}
	if got, want := readDirNames(t, filepath.Join(mnt, "tags/daily")), []string{timeName(f.sn1), timeName(f.sn2), "latest"}; !slices.Equal(got, want) {
		t.Errorf("tags/daily: %v, want %v", got, want)
	}
	// The same snapshot through every view.
	for _, p := range []string{
		"ids/" + f.sn1.ID.Short(),
		"snapshots/" + timeName(f.sn1),
		"hosts/alpha/" + timeName(f.sn1),
		"tags/daily/" + timeName(f.sn1),
	} {
		b, err := os.ReadFile(filepath.Join(mnt, p, "home/ann/docs/a.txt"))
		if err != nil || !bytes.Equal(b, aTxtV1) {
			t.Errorf("%s/home/ann/docs/a.txt: %q, %v", p, b, err)
		}
	}
	// Unknown names are absent.
	for _, p := range []string{"nope", "snapshots/nope", "ids/00000000", "hosts/nobody", "snapshots/latest/nope"} {
		if _, err := os.Lstat(filepath.Join(mnt, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want not exist", p, err)
		}
	}
	// Listings are deterministic.
	for i := 0; i < 3; i++ {
		if got := readDirNames(t, filepath.Join(mnt, "snapshots")); !slices.Equal(got, wantSnaps) {
			t.Fatalf("listing %d: %v", i, got)
		}
	}
}

func TestMountAttributes(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{})
	docs := filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs")

	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(docs, "a.txt"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFREG|0o644 || st.Uid != 1000 || st.Gid != 100 || st.Size != int64(len(aTxtV1)) || st.Nlink != 1 {
		t.Errorf("a.txt: mode %o uid %d gid %d size %d nlink %d", st.Mode, st.Uid, st.Gid, st.Size, st.Nlink)
	}
	if got := time.Unix(st.Mtim.Unix()); !got.Equal(f.fileMtime) {
		t.Errorf("a.txt mtime %v, want %v", got, f.fileMtime)
	}
	if got := time.Unix(st.Atim.Unix()); !got.Equal(f.atime) {
		t.Errorf("a.txt atime %v, want %v", got, f.atime)
	}
	if got, want := time.Unix(st.Ctim.Unix()), time.Date(2024, 1, 3, 3, 4, 5, 7, time.UTC); !got.Equal(want) {
		t.Errorf("a.txt ctime %v, want %v", got, want)
	}
	if st.Blocks != 1 {
		t.Errorf("a.txt blocks %d, want 1", st.Blocks)
	}

	tests := []struct {
		path string
		mode uint32
		size int64
	}{
		{".", syscall.S_IFDIR | 0o750, -1},
		{"big.bin", syscall.S_IFREG | 0o600, int64(len(bigData))},
		{"setuid", syscall.S_IFREG | 0o755 | syscall.S_ISUID, 10},
		{"secret", syscall.S_IFDIR | 0o700, -1},
		{"link", syscall.S_IFLNK | 0o777, 5},
		{"empty", syscall.S_IFREG | 0o644, 0},
		{"sparse.img", syscall.S_IFREG | 0o644, 3 << 20},
		{"../../../tmp/fifo", syscall.S_IFIFO | 0o644, -1},
		{"../../../tmp/sock", syscall.S_IFSOCK | 0o755, -1},
		{"../../../dev/null", syscall.S_IFCHR | 0o666, -1},
		{"../../../dev/sda1", syscall.S_IFBLK | 0o660, -1},
	}
	for _, tt := range tests {
		if err := unix.Lstat(filepath.Join(docs, tt.path), &st); err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		if st.Mode != tt.mode {
			t.Errorf("%s: mode %o, want %o", tt.path, st.Mode, tt.mode)
		}
		if tt.size >= 0 && st.Size != tt.size {
			t.Errorf("%s: size %d, want %d", tt.path, st.Size, tt.size)
		}
	}
	// st_blocks comes from the node: the sparse file says 8.
	unix.Lstat(filepath.Join(docs, "sparse.img"), &st)
	if st.Blocks != 8 {
		t.Errorf("sparse.img blocks %d, want 8", st.Blocks)
	}
	// Devices keep their numbers.
	devs := []struct {
		path         string
		major, minor uint32
	}{{"dev/null", 1, 3}, {"dev/sda1", 8, 1}, {"dev/big", 300, 70000}}
	for _, d := range devs {
		unix.Lstat(filepath.Join(mnt, "snapshots", timeName(f.sn1), d.path), &st)
		if unix.Major(st.Rdev) != d.major || unix.Minor(st.Rdev) != d.minor {
			t.Errorf("%s: rdev %d:%d, want %d:%d", d.path, unix.Major(st.Rdev), unix.Minor(st.Rdev), d.major, d.minor)
		}
	}

	// Symlinks read back their target, and resolve within the snapshot.
	if target, err := os.Readlink(filepath.Join(docs, "link")); err != nil || target != "a.txt" {
		t.Errorf("readlink: %q, %v", target, err)
	}
	if b, err := os.ReadFile(filepath.Join(docs, "link")); err != nil || !bytes.Equal(b, aTxtV1) {
		t.Errorf("read through link: %q, %v", b, err)
	}

	// Hard links share one inode number; other files do not.
	var h1, h2, a unix.Stat_t
	unix.Lstat(filepath.Join(docs, "hard1"), &h1)
	unix.Lstat(filepath.Join(docs, "sub/hard2"), &h2)
	unix.Lstat(filepath.Join(docs, "a.txt"), &a)
	if h1.Ino != h2.Ino || h1.Nlink != 2 {
		t.Errorf("hard links: ino %d and %d, nlink %d", h1.Ino, h2.Ino, h1.Nlink)
	}
	if a.Ino == h1.Ino || a.Ino < 2 || a.Ino >= 1<<63 {
		t.Errorf("a.txt ino %d", a.Ino)
	}
	// The same path in another snapshot is another inode.
	var a2 unix.Stat_t
	unix.Lstat(filepath.Join(mnt, "snapshots", timeName(f.sn2), "home/ann/docs/a.txt"), &a2)
	if a2.Ino == a.Ino {
		t.Error("a.txt has the same inode number in two snapshots")
	}

	// Readdir reports the same inode numbers as stat.
	d, err := os.Open(docs)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	n, err := unix.Getdents(int(d.Fd()), buf)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	inos := parseDirents(buf[:n])
	for _, name := range []string{"a.txt", "hard1", "big.bin"} {
		var st unix.Stat_t
		unix.Lstat(filepath.Join(docs, name), &st)
		if inos[name] != st.Ino {
			t.Errorf("%s: readdir ino %d, stat ino %d", name, inos[name], st.Ino)
		}
	}
	if _, ok := inos["."]; !ok {
		t.Error("no . entry")
	}

	// Snapshot directories carry the snapshot's time.
	var sst unix.Stat_t
	unix.Stat(filepath.Join(mnt, "snapshots", timeName(f.sn1)), &sst)
	if got := time.Unix(sst.Mtim.Unix()); !got.Equal(f.sn1.Time) || sst.Mode&syscall.S_IFDIR == 0 {
		t.Errorf("snapshot dir: mtime %v mode %o", got, sst.Mode)
	}
}

// parseDirents returns name -> inode from getdents64 output.
func parseDirents(b []byte) map[string]uint64 {
	m := make(map[string]uint64)
	for len(b) >= 19 {
		ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		reclen := int(b[16]) | int(b[17])<<8
		if reclen == 0 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		m[string(name)] = ino
		b = b[reclen:]
	}
	return m
}

func TestMountOwnerRoot(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{OwnerRoot: true})
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs/a.txt"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 || st.Gid != 0 {
		t.Errorf("uid %d gid %d, want 0 0", st.Uid, st.Gid)
	}
}

func TestMountXattrs(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{})
	docs := filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs")
	a := filepath.Join(docs, "a.txt")

	// Size probe, then the value.
	n, err := unix.Getxattr(a, "user.comment", nil)
	if err != nil || n != len("a comment") {
		t.Fatalf("size probe: %d, %v", n, err)
	}
	buf := make([]byte, 64)
	n, err = unix.Getxattr(a, "user.comment", buf)
	if err != nil || xv(buf, n) != "a comment" {
		t.Errorf("getxattr: %q, %v", xv(buf, n), err)
	}
	// Too small a buffer is ERANGE.
	if _, err := unix.Getxattr(a, "user.comment", make([]byte, 3)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("small buffer: %v, want ERANGE", err)
	}
	if n, err := unix.Getxattr(a, "user.empty", buf); err != nil || n != 0 {
		t.Errorf("empty value: %d, %v", n, err)
	}
	if _, err := unix.Getxattr(a, "user.missing", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("missing: %v, want ENODATA", err)
	}
	n, err = unix.Listxattr(a, nil)
	want := "user.comment\x00user.empty\x00"
	if err != nil || n != len(want) {
		t.Fatalf("list size probe: %d, %v", n, err)
	}
	n, err = unix.Listxattr(a, buf)
	if err != nil || xv(buf, n) != want {
		t.Errorf("listxattr: %q, %v", xv(buf, n), err)
	}
	if _, err := unix.Listxattr(a, make([]byte, 5)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("list small buffer: %v, want ERANGE", err)
	}
	// Directories and symlinks carry xattrs too.
	if n, err := unix.Getxattr(docs, "user.dir", buf); err != nil || xv(buf, n) != "dirval" {
		t.Errorf("dir xattr: %q, %v", xv(buf, n), err)
	}
	// (user.* attributes exist only on files and directories; trusted.* needs root.)
	if n, err := unix.Lgetxattr(filepath.Join(docs, "link"), "trusted.l", buf); os.Geteuid() == 0 && (err != nil || xv(buf, n) != "on a link") {
		t.Errorf("symlink xattr: %q, %v", xv(buf, n), err)
	}
	// A file without xattrs lists none.
	if n, err := unix.Listxattr(filepath.Join(docs, "big.bin"), buf); err != nil || n != 0 {
		t.Errorf("no xattrs: %d, %v", n, err)
	}
	// getfattr, if installed, agrees.
	if _, err := exec.LookPath("getfattr"); err == nil {
		out, err := exec.Command("getfattr", "--only-values", "-n", "user.comment", a).Output()
		if err != nil || string(out) != "a comment" {
			t.Errorf("getfattr: %q, %v", out, err)
		}
	}
}

// xv returns the first n bytes of buf as a string, or "" when n < 0.
func xv(buf []byte, n int) string {
	if n < 0 || n > len(buf) {
		return ""
	}
	return string(buf[:n])
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sha256sum runs sha256sum on files in a subprocess.
func sha256sum(t *testing.T, files ...string) []string {
	t.Helper()
	out, err := exec.Command("sha256sum", files...).Output()
	if err != nil {
		t.Fatalf("sha256sum: %v", err)
	}
	var sums []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		sums = append(sums, strings.Fields(line)[0])
	}
	return sums
}

func TestMountContent(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{})
	docs1 := filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs")
	docs2 := filepath.Join(mnt, "ids", f.sn2.ID.Short(), "home/ann/docs")

	files := map[string][]byte{
		filepath.Join(docs1, "a.txt"):                              aTxtV1,
		filepath.Join(docs2, "a.txt"):                              aTxtV2,
		filepath.Join(docs1, "big.bin"):                            bigData,
		filepath.Join(docs1, "sparse.img"):                         f.sparse,
		filepath.Join(docs1, "empty"):                              nil,
		filepath.Join(docs1, "hard1"):                              []byte("linked content\n"),
		filepath.Join(docs1, "naïve ünïcode.txt"):                  []byte("unicode\n"),
		filepath.Join(docs2, "b.txt"):                              []byte("new in two\n"),
		filepath.Join(docs1, "sub/deeper/x"):                       []byte("x\n"),
		filepath.Join(mnt, "hosts/beta/latest/srv/www/index.html"): []byte("<html>beta</html>\n"),
	}
	var names []string
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	// Read by another process (cat, sha256sum), as users do.
	sums := sha256sum(t, names...)
	for i, name := range names {
		if want := sha256Hex(files[name]); sums[i] != want {
			t.Errorf("%s: sha256 %s, want %s", name, sums[i], want)
		}
	}
	out, err := exec.Command("cat", filepath.Join(docs1, "a.txt")).Output()
	if err != nil || !bytes.Equal(out, aTxtV1) {
		t.Errorf("cat: %q, %v", out, err)
	}

	// Random-offset reads, many spanning chunk boundaries, in this process.
	big, err := os.Open(filepath.Join(docs1, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	r := rand.New(rand.NewPCG(3, 4))
	offsets := []int64{0, 700<<10 - 1, 700 << 10, 700<<10 + 1<<20 - 10, int64(len(bigData)) - 5, int64(len(bigData))}
	for i := 0; i < 100; i++ {
		offsets = append(offsets, r.Int64N(int64(len(bigData))))
	}
	for _, off := range offsets {
		n := 1 + r.IntN(1500<<10)
		buf := make([]byte, n)
		got, err := big.ReadAt(buf, off)
		want := bigData[min(off, int64(len(bigData))):min(off+int64(n), int64(len(bigData)))]
		if err != nil && err != io.EOF {
			t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
		}
		if !bytes.Equal(buf[:got], want) {
			t.Fatalf("ReadAt(%d, %d): %d bytes differ from the source", off, n, got)
		}
	}

	// Zero chunks are served without loading them.
	before := f.repo.blobLoads.Load()
	sp, err := os.ReadFile(filepath.Join(docs2, "sparse.img"))
	if err != nil || !bytes.Equal(sp, f.sparse) {
		t.Fatalf("sparse.img differs: %v", err)
	}
	if loads := f.repo.blobLoads.Load() - before; loads > 1 {
		t.Errorf("reading sparse.img loaded %d blobs, want at most 1 (the non-zero one)", loads)
	}
}

func TestMountFSTest(t *testing.T) {
	f := newFixture(t)
	// fstest reads every file many times in small pieces, so the files are
	// small here; they still span several chunks.
	mid := randomData(5, 300<<10)
	root := f.repo.build([]fentry{
		{path: "home/u/a.txt", data: aTxtV1, node: tree.Node{Mode: 0o644}},
		{path: "home/u/mid.bin", data: mid, sizes: []int{64 << 10, 100 << 10}, node: tree.Node{Mode: 0o600}},
		{path: "home/u/zeros", data: make([]byte, 70<<10), sizes: []int{32 << 10}, node: tree.Node{Mode: 0o644}},
		{path: "home/u/empty", node: tree.Node{Mode: 0o644}},
		{path: "home/u/link", node: tree.Node{Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "a.txt"}},
		{path: "home/u/d/e/f.txt", data: []byte("deep\n"), node: tree.Node{Mode: 0o444}},
		{path: "home/u/emptydir", node: tree.Node{Type: tree.Dir, Mode: os.ModeDir | 0o755}},
	})
	sn := &snapshot.Snapshot{Time: t0.Add(40 * time.Hour), Hostname: "fstest", Tree: root}
	f.repo.addSnapshot(sn)
	mnt, _, _ := mountTest(t, f.repo, Options{})
	fsys := os.DirFS(filepath.Join(mnt, "snapshots", timeName(sn)))
	if err := fstest.TestFS(fsys, "home/u/a.txt", "home/u/mid.bin", "home/u/zeros", "home/u/empty", "home/u/d/e/f.txt", "home/u/emptydir"); err != nil {
		t.Fatal(err)
	}
}

// TestMountConcurrentReaders: processes and goroutines read files at once
// and get the right bytes, with the default cache and with one so small
// that blobs are evicted all the time and their buffers recycled (a
// buffer reused while a reply still held it would serve wrong bytes).
func TestMountConcurrentReaders(t *testing.T) {
	for _, size := range []int64{0, 1 << 20} {
		t.Run(fmt.Sprintf("blob cache %d", size), func(t *testing.T) {
			m := concurrentReaders(t, size)
			if recycled := m.fs.blobs.Recycled(); size > 0 && recycled == 0 {
				t.Error("no blob buffer was recycled: the small cache proves nothing")
			} else {
				t.Logf("%d loads into recycled buffers", recycled)
			}
		})
	}
}

// concurrentReaders runs the readers on a fresh mount whose blob cache
// holds blobBytes (0: the default).
func concurrentReaders(t *testing.T, blobBytes int64) *Mounted {
	f := newFixture(t)
	f.repo.delay = 2 * time.Millisecond // a bit of backend latency
	mnt, m, _ := mountTest(t, f.repo, Options{})
	if blobBytes > 0 {
		// Below the mount's least blob cache (minBlobBytes): the
		// fixture's files would fit in that.
		tc := m.fs.trees
		tc.mu.Lock()
		tc.total, tc.minBlobs, tc.blobMax = blobBytes, blobBytes, blobBytes
		tc.mu.Unlock()
		m.fs.blobs.SetMaxBytes(blobBytes)
	}
	docs1 := filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs")
	docs2 := filepath.Join(mnt, "ids", f.sn2.ID.Short(), "home/ann/docs")
	bigSum := sha256Hex(bigData)

	// 8 processes read the same file, 8 read different files, at once.
	type job struct {
		path, sum string
	}
	var jobs []job
	for i := 0; i < 8; i++ {
		jobs = append(jobs, job{filepath.Join(docs1, "big.bin"), bigSum})
	}
	jobs = append(jobs,
		job{filepath.Join(docs2, "big.bin"), bigSum},
		job{filepath.Join(docs1, "a.txt"), sha256Hex(aTxtV1)},
		job{filepath.Join(docs2, "a.txt"), sha256Hex(aTxtV2)},
		job{filepath.Join(docs1, "sparse.img"), sha256Hex(f.sparse)},
		job{filepath.Join(docs2, "sparse.img"), sha256Hex(f.sparse)},
		job{filepath.Join(docs1, "hard1"), sha256Hex([]byte("linked content\n"))},
		job{filepath.Join(docs2, "b.txt"), sha256Hex([]byte("new in two\n"))},
		job{filepath.Join(mnt, "ids", f.snBroken.ID.Short(), "good.txt"), sha256Hex([]byte("still fine\n"))},
	)
	var wg sync.WaitGroup
	errs := make(chan error, len(jobs)+8)
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command("sha256sum", j.path).Output()
			if err != nil {
				errs <- fmt.Errorf("sha256sum %s: %v", j.path, err)
				return
			}
			if got := strings.Fields(string(out))[0]; got != j.sum {
				errs <- fmt.Errorf("%s: sha256 %s, want %s", j.path, got, j.sum)
			}
		}()
	}
	// And goroutines of this process read one shared handle at random offsets.
	big, err := os.Open(filepath.Join(docs2, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for i := 0; i < 50; i++ {
				if blobBytes > 0 {
					// The kernel's copy goes, so that the read reaches
					// the mount (whose small cache evicts and recycles).
					_ = unix.Fadvise(int(big.Fd()), 0, 0, unix.FADV_DONTNEED)
				}
				off := r.Int64N(int64(len(bigData)))
				buf := make([]byte, 1+r.IntN(256<<10))
				n, err := big.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], bigData[off:off+int64(n)]) {
					errs <- fmt.Errorf("ReadAt(%d): wrong bytes", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return m
}

func TestMountReadOnly(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{})
	docs := filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs")
	a := filepath.Join(docs, "a.txt")
	ops := []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(docs, "new"), []byte("x"), 0o644) }},
		{"create in layout", func() error { return os.WriteFile(filepath.Join(mnt, "snapshots/new"), []byte("x"), 0o644) }},
		{"open for write", func() error {
			f, err := os.OpenFile(a, os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(a, 0) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(docs, "d"), 0o755) }},
		{"mkdir in layout", func() error { return os.Mkdir(filepath.Join(mnt, "snapshots/d"), 0o755) }},
		{"chmod", func() error { return os.Chmod(a, 0o777) }},
		{"chown", func() error { return os.Chown(a, 1, 1) }},
		{"utimes", func() error { return os.Chtimes(a, time.Now(), time.Now()) }},
		{"setxattr", func() error { return unix.Setxattr(a, "user.new", []byte("v"), 0) }},
		{"removexattr", func() error { return unix.Removexattr(a, "user.comment") }},
		{"rename", func() error { return os.Rename(a, filepath.Join(docs, "renamed")) }},
		{"remove", func() error { return os.Remove(a) }},
		{"rmdir", func() error { return os.Remove(filepath.Join(docs, "sub/deeper")) }},
		{"symlink", func() error { return os.Symlink("x", filepath.Join(docs, "newlink")) }},
		{"link", func() error { return os.Link(a, filepath.Join(docs, "newhard")) }},
		{"mkfifo", func() error { return unix.Mkfifo(filepath.Join(docs, "fifo2"), 0o644) }},
	}
	for _, tt := range ops {
		if err := tt.op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", tt.name, err)
		}
	}
	// Nothing changed.
	if b, err := os.ReadFile(a); err != nil || !bytes.Equal(b, aTxtV1) {
		t.Errorf("a.txt after writes: %q, %v", b, err)
	}
	// statfs works and says read-only.
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Bsize != 4096 || sfs.Namelen != 255 || sfs.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs: bsize %d namelen %d flags %#x", sfs.Bsize, sfs.Namelen, sfs.Flags)
	}
	if out, err := exec.Command("df", mnt).CombinedOutput(); err != nil {
		t.Errorf("df: %v\n%s", err, out)
	}
	// The mount options are what we asked for.
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 4 || fields[1] != mnt {
			continue
		}
		if fields[0] != "dj" || fields[2] != "fuse.dj" {
			t.Errorf("mount source/type %q %q", fields[0], fields[2])
		}
		for _, opt := range []string{"ro", "nosuid", "nodev", "noatime", "default_permissions"} {
			if !slices.Contains(strings.Split(fields[3], ","), opt) {
				t.Errorf("mount options %q lack %s", fields[3], opt)
			}
		}
	}
}

func TestMountCorruptBlob(t *testing.T) {
	f := newFixture(t)
	mnt, _, log := mountTest(t, f.repo, Options{})
	dir := filepath.Join(mnt, "ids", f.snBroken.ID.Short())
	bad, err := os.Open(filepath.Join(dir, "bad.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	// The first megabyte is fine.
	buf := make([]byte, 1<<20)
	if n, err := bad.ReadAt(buf, 0); err != nil || !bytes.Equal(buf[:n], f.badData[:n]) {
		t.Errorf("start of bad.bin: %d, %v", n, err)
	}
	// The corrupt chunk is EIO, never wrong bytes.
	small := make([]byte, 4096)
	if n, err := bad.ReadAt(small, badOffset+1000); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the corrupt chunk: %d bytes, %v; want EIO", n, err)
	}
	// After it, the file reads again.
	if n, err := bad.ReadAt(small, badOffset+(256<<10)+4096); err != nil || !bytes.Equal(small[:n], f.badData[badOffset+(256<<10)+4096:][:n]) {
		t.Errorf("read after the corrupt chunk: %d, %v", n, err)
	}
	// Reading the whole file fails; other files are fine.
	if _, err := exec.Command("cat", filepath.Join(dir, "bad.bin")).Output(); err == nil {
		t.Error("cat of bad.bin succeeded")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "good.txt")); err != nil || string(b) != "still fine\n" {
		t.Errorf("good.txt: %q, %v", b, err)
	}
	if !log.contains(f.badBlob.Short()) {
		t.Error("no log line names the corrupt blob")
	}
	// Other snapshots are unaffected.
	if b, err := os.ReadFile(filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs/a.txt")); err != nil || !bytes.Equal(b, aTxtV1) {
		t.Errorf("a.txt: %q, %v", b, err)
	}
}

func TestMountMissingTree(t *testing.T) {
	f := newFixture(t)
	r := f.repo
	missing := r.addTree(&tree.Tree{})
	r.mu.Lock()
	delete(r.trees, missing)
	r.mu.Unlock()
	root := r.build([]fentry{{path: "ok.txt", data: []byte("ok\n"), node: tree.Node{Mode: 0o644}}})
	// Splice a directory whose tree is missing into a new root.
	rt, _ := r.LoadTree(context.Background(), root)
	rt.Nodes = append(rt.Nodes, &tree.Node{Name: "gone", Type: tree.Dir, Mode: os.ModeDir | 0o755, Subtree: &missing})
	rootID := r.addTree(rt)
	sn := &snapshot.Snapshot{Time: t0.Add(5 * time.Hour), Hostname: "delta", Tree: rootID}
	r.addSnapshot(sn)

	mnt, _, log := mountTest(t, r, Options{})
	dir := filepath.Join(mnt, "ids", sn.ID.Short())
	if _, err := os.ReadDir(filepath.Join(dir, "gone")); !errors.Is(err, syscall.EIO) {
		t.Errorf("readdir of a directory with a missing tree: %v, want EIO", err)
	}
	if !log.contains("returning EIO") {
		t.Error("no log line for the missing tree")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "ok.txt")); err != nil || string(b) != "ok\n" {
		t.Errorf("ok.txt: %q, %v", b, err)
	}
}

func TestMountVersions(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{})
	docs := filepath.Join(mnt, "versions/home/ann/docs")
	names := readDirNames(t, docs)
	t1, t2 := timeName(f.sn1), timeName(f.sn2)
	want := []string{"a.txt@" + t1, "a.txt@" + t2, "b.txt@" + t2, "big.bin@" + t1, "link@" + t1, "secret", "sub"}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("versions/home/ann/docs lacks %s (has %v)", w, names)
		}
	}
	if slices.Contains(names, "big.bin@"+t2) {
		t.Error("unchanged big.bin has a second version")
	}
	if b, err := os.ReadFile(filepath.Join(docs, "a.txt@"+t1)); err != nil || !bytes.Equal(b, aTxtV1) {
		t.Errorf("a.txt@t1: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(docs, "a.txt@"+t2)); err != nil || !bytes.Equal(b, aTxtV2) {
		t.Errorf("a.txt@t2: %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(docs, "a.txt@"+t2), &st); err != nil || st.Size != int64(len(aTxtV2)) || st.Mode != syscall.S_IFREG|0o644 {
		t.Errorf("stat a.txt@t2: %v size %d mode %o", err, st.Size, st.Mode)
	}
	if got := readDirNames(t, filepath.Join(docs, "sub/deeper")); !slices.Equal(got, []string{"x@" + t1}) {
		t.Errorf("sub/deeper: %v", got)
	}
	root := readDirNames(t, filepath.Join(mnt, "versions"))
	for _, w := range []string{"bad.bin@" + timeName(f.snBroken), "dev", "home", "srv", "tmp"} {
		if !slices.Contains(root, w) {
			t.Errorf("versions lacks %s (has %v)", w, root)
		}
	}
	if target, err := os.Readlink(filepath.Join(docs, "link@"+t1)); err != nil || target != "a.txt" {
		t.Errorf("link version: %q, %v", target, err)
	}
}

func TestMountSubRoot(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{Root: &SubRoot{Snapshot: f.sn2, Path: "/home/ann"}})
	if got := readDirNames(t, mnt); !slices.Equal(got, []string{"docs"}) {
		t.Errorf("root: %v", got)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "docs/a.txt")); err != nil || !bytes.Equal(b, aTxtV2) {
		t.Errorf("docs/a.txt: %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil || st.Ino != 1 {
		t.Errorf("root ino %d, %v", st.Ino, err)
	}

	mnt2, _, _ := mountTest(t, f.repo, Options{Root: &SubRoot{Snapshot: f.sn3}})
	if got := readDirNames(t, mnt2); !slices.Equal(got, []string{"srv"}) {
		t.Errorf("whole snapshot root: %v", got)
	}

	requireFUSE(t)
	for _, p := range []string{"/home/nobody", "/home/ann/docs/a.txt"} {
		if _, err := Mount(context.Background(), t.TempDir(), f.repo, Options{Root: &SubRoot{Snapshot: f.sn2, Path: p}, Logf: t.Logf}); err == nil {
			t.Errorf("SubRoot %s: mounted", p)
		}
	}
}

func TestMountRefresh(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{Refresh: 300 * time.Millisecond})
	snaps := filepath.Join(mnt, "snapshots")
	readDirNames(t, snaps)

	// A new snapshot appears after Refresh, without remounting.
	root := f.repo.build([]fentry{{path: "new.txt", data: []byte("new\n"), node: tree.Node{Mode: 0o644}}})
	sn := &snapshot.Snapshot{Time: t0.Add(10 * time.Hour), Hostname: "alpha", Tree: root}
	f.repo.addSnapshot(sn)
	time.Sleep(400 * time.Millisecond)
	if names := readDirNames(t, snaps); !slices.Contains(names, timeName(sn)) {
		t.Fatalf("new snapshot not listed: %v", names)
	}
	if target, _ := os.Readlink(filepath.Join(snaps, "latest")); target != timeName(sn) {
		t.Errorf("latest -> %q after the new snapshot, want %q", target, timeName(sn))
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "hosts/alpha/latest/new.txt")); err != nil || string(b) != "new\n" {
		t.Errorf("hosts/alpha/latest/new.txt: %q, %v", b, err)
	}

	// A forgotten snapshot disappears.
	f.repo.removeSnapshot(sn.ID)
	time.Sleep(1200 * time.Millisecond) // Refresh, and the 1 s entry timeout
	if names := readDirNames(t, snaps); slices.Contains(names, timeName(sn)) {
		t.Errorf("forgotten snapshot still listed: %v", names)
	}
	if _, err := os.Stat(filepath.Join(snaps, timeName(sn))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("forgotten snapshot: %v", err)
	}
	if target, _ := os.Readlink(filepath.Join(snaps, "latest")); target != timeName(f.snBroken) {
		t.Errorf("latest -> %q after forget", target)
	}

	// The list is read at most once per Refresh, however often it is used.
	before := f.repo.snapshotReads.Load()
	for i := 0; i < 20; i++ {
		readDirNames(t, snaps)
	}
	if reads := f.repo.snapshotReads.Load() - before; reads > 1 {
		t.Errorf("20 listings within Refresh read the snapshot list %d times", reads)
	}
}

func TestMountRefreshOnLookup(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{Refresh: time.Hour})
	root := f.repo.build([]fentry{{path: "fresh.txt", data: []byte("fresh\n"), node: tree.Node{Mode: 0o644}}})
	sn := &snapshot.Snapshot{Time: t0.Add(20 * time.Hour), Hostname: "epsilon", Tree: root}
	f.repo.addSnapshot(sn)
	time.Sleep(missRefreshInterval + 100*time.Millisecond)
	// Looking up its name reads the list at once.
	p := filepath.Join(mnt, "ids", sn.ID.Short(), "fresh.txt")
	if b, err := os.ReadFile(p); err != nil || string(b) != "fresh\n" {
		t.Fatalf("%s: %q, %v", p, b, err)
	}
	// Misses are rate-limited.
	before := f.repo.snapshotReads.Load()
	for i := 0; i < 20; i++ {
		os.Stat(filepath.Join(mnt, "snapshots", fmt.Sprintf("nope-%d", i)))
	}
	if reads := f.repo.snapshotReads.Load() - before; reads > 1 {
		t.Errorf("20 misses read the snapshot list %d times", reads)
	}
}

func TestMountStableInodes(t *testing.T) {
	f := newFixture(t)
	paths := []string{
		"snapshots",
		"snapshots/" + timeName(f.sn1),
		"snapshots/" + timeName(f.sn1) + "/home/ann/docs",
		"snapshots/" + timeName(f.sn1) + "/home/ann/docs/a.txt",
		"snapshots/" + timeName(f.sn1) + "/home/ann/docs/sub/hard2",
		"ids/" + f.sn2.ID.Short() + "/home/ann/docs/big.bin",
	}
	inos := func() []uint64 {
		mnt, m, _ := mountTest(t, f.repo, Options{})
		var out []uint64
		for _, p := range paths {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
				t.Fatal(err)
			}
			out = append(out, st.Ino)
		}
		unmountTest(t, m)
		return out
	}
	first, second := inos(), inos()
	if !slices.Equal(first, second) {
		t.Errorf("inode numbers changed across mounts: %v, %v", first, second)
	}
}

func TestMountUnmount(t *testing.T) {
	requireFUSE(t)
	f := newFixture(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := Mount(ctx, dir, f.repo, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if !isMounted(dir) {
		t.Fatal("not in /proc/mounts")
	}
	waited := make(chan struct{})
	go func() {
		m.Wait()
		close(waited)
	}()
	// Cancelling the context unmounts.
	cancel()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		m.Unmount()
		t.Fatal("Wait did not return after the context was cancelled")
	}
	if isMounted(dir) {
		t.Error("still mounted after cancel")
	}
	if err := m.Unmount(); err != nil {
		t.Errorf("second Unmount: %v", err)
	}

	// An unmount from outside (fusermount3 -u) ends Wait too.
	m2, err := Mount(context.Background(), dir, f.repo, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput(); err != nil {
		m2.Unmount()
		t.Fatalf("fusermount3 -u: %v %s", err, out)
	}
	done := make(chan struct{})
	go func() { m2.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m2.Unmount()
		t.Fatal("Wait did not return after fusermount3 -u")
	}
	if isMounted(dir) {
		t.Error("still mounted after fusermount3 -u")
	}
}

func TestMountErrors(t *testing.T) {
	requireFUSE(t)
	f := newFixture(t)
	base := t.TempDir()
	file := filepath.Join(base, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	nonEmpty := filepath.Join(base, "full")
	os.Mkdir(nonEmpty, 0o755)
	os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o644)
	busy, _, _ := mountTest(t, f.repo, Options{})

	tests := []struct {
		name, dir, msg string
	}{
		{"missing", filepath.Join(base, "nope"), "does not exist"},
		{"not a directory", file, "is not a directory"},
		{"not empty", nonEmpty, "is not empty"},
		{"busy", busy, "already a FUSE mount point"},
		{"empty name", "", "no mountpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Mount(context.Background(), tt.dir, f.repo, Options{Logf: t.Logf})
			if err == nil {
				m.Unmount()
				t.Fatal("Mount succeeded")
			}
			if !errors.Is(err, ErrMountpoint) || !strings.Contains(err.Error(), tt.msg) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want ErrMountpoint saying %q on one line", err, tt.msg)
			}
		})
	}
	if _, err := Mount(context.Background(), t.TempDir(), f.repo, Options{PathTemplates: []string{"x/%Q"}, Logf: t.Logf}); err == nil || !strings.Contains(err.Error(), "%Q") {
		t.Errorf("bad template: %v", err)
	}
}

// TestMountFind walks a snapshot with find twice; the second walk is served
// from the kernel's caches. It logs the times.
func TestMountFind(t *testing.T) {
	f := newFixture(t)
	r := f.repo
	var entries []fentry
	for d := 0; d < 50; d++ {
		for i := 0; i < 40; i++ {
			entries = append(entries, fentry{path: fmt.Sprintf("data/d%02d/sub/f%03d", d, i), data: []byte{byte(i)}, node: tree.Node{Mode: 0o644}})
		}
	}
	root := r.build(entries)
	sn := &snapshot.Snapshot{Time: t0.Add(30 * time.Hour), Hostname: "find", Tree: root}
	r.addSnapshot(sn)
	mnt, _, _ := mountTest(t, r, Options{})
	dir := filepath.Join(mnt, "ids", sn.ID.Short())
	var counts []int
	for i, label := range []string{"cold", "warm"} {
		start := time.Now()
		out, err := exec.Command("find", dir).Output()
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, strings.Count(string(out), "\n"))
		t.Logf("find %s: %d entries in %v", label, counts[i], time.Since(start))
	}
	if want := 1 + 1 + 50*2 + 50*40; counts[0] != want || counts[1] != want {
		t.Errorf("find counted %v entries, want %d", counts, want)
	}
	treeLoads := r.treeLoads.Load()
	exec.Command("find", dir).Run()
	if r.treeLoads.Load() != treeLoads {
		t.Errorf("a warm find loaded trees")
	}
	if out, err := exec.Command("ls", "-lR", dir).CombinedOutput(); err != nil {
		t.Errorf("ls -lR: %v %s", err, out)
	}
}

// TestMountNoFDLeak checks that processes started while mounted do not
// inherit the FUSE connection (they would keep a dead mount alive).
func TestMountNoFDLeak(t *testing.T) {
	f := newFixture(t)
	mountTest(t, f.repo, Options{})
	out, err := exec.Command("sh", "-c", "ls -l /proc/$$/fd").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "/dev/fuse") {
		t.Errorf("a child process inherited /dev/fuse:\n%s", out)
	}
}

// TestMountPermissions reads as another user (uid 65534): without
// AllowOther the mount is closed to others; with it, the stored permissions
// decide, unless NoDefaultPermissions.
func TestMountPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	f := newFixture(t)
	catAs := func(path string) error {
		cmd := exec.Command("cat", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	open := func(mnt string) {
		// t.TempDir makes 0700 directories; let the other user through.
		os.Chmod(mnt, 0o755)
		os.Chmod(filepath.Dir(mnt), 0o755)
	}
	public := func(mnt string) string {
		return filepath.Join(mnt, "ids", f.sn3.ID.Short(), "srv/www/index.html")
	}
	private := func(mnt string) string { // in docs/, mode 0750, owner 1000:100
		return filepath.Join(mnt, "ids", f.sn1.ID.Short(), "home/ann/docs/a.txt")
	}

	t.Run("owner only", func(t *testing.T) {
		mnt, _, _ := mountTest(t, f.repo, Options{})
		open(mnt)
		if err := catAs(public(mnt)); err == nil {
			t.Error("another user read the mount without AllowOther")
		}
	})
	t.Run("allow other", func(t *testing.T) {
		mnt, _, _ := mountTest(t, f.repo, Options{AllowOther: true})
		open(mnt)
		if err := catAs(public(mnt)); err != nil {
			t.Errorf("public file: %v", err)
		}
		if err := catAs(private(mnt)); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("private file: %v, want permission denied", err)
		}
	})
	t.Run("no default permissions", func(t *testing.T) {
		mnt, _, _ := mountTest(t, f.repo, Options{AllowOther: true, NoDefaultPermissions: true})
		open(mnt)
		if err := catAs(private(mnt)); err != nil {
			t.Errorf("private file: %v", err)
		}
	})
}

// reloadingRepo counts index reloads and can fail them.
type reloadingRepo struct {
	*fakeRepo
	mu      sync.Mutex
	reloads int
	fail    bool
}

func (r *reloadingRepo) ReloadIndex(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloads++
	if r.fail {
		return errors.New("index unreadable")
	}
	return nil
}

func (r *reloadingRepo) state() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloads, r.fail
}

func TestMountIndexReload(t *testing.T) {
	f := newFixture(t)
	r := &reloadingRepo{fakeRepo: f.repo, fail: true}
	mnt, _, log := mountTest(t, r, Options{Refresh: 200 * time.Millisecond})
	ids := filepath.Join(mnt, "ids")
	if n, _ := r.state(); n != 0 {
		t.Fatalf("%d reloads at mount time", n)
	}
	root := f.repo.build([]fentry{{path: "n.txt", data: []byte("n\n"), node: tree.Node{Mode: 0o644}}})
	sn := &snapshot.Snapshot{Time: t0.Add(60 * time.Hour), Hostname: "zeta", Tree: root}
	f.repo.addSnapshot(sn)

	// The reload fails: the new snapshot stays hidden.
	time.Sleep(250 * time.Millisecond)
	if names := readDirNames(t, ids); slices.Contains(names, sn.ID.Short()) {
		t.Error("snapshot shown although the index reload failed")
	}
	if !log.contains("index unreadable") {
		t.Error("the failed reload was not logged")
	}
	// It works: the snapshot appears.
	r.mu.Lock()
	r.fail = false
	r.mu.Unlock()
	time.Sleep(250 * time.Millisecond)
	if names := readDirNames(t, ids); !slices.Contains(names, sn.ID.Short()) {
		t.Errorf("snapshot not shown after the index reload: %v", names)
	}
	// Forgetting a snapshot needs no reload.
	n, _ := r.state()
	f.repo.removeSnapshot(f.sn1.ID)
	time.Sleep(250 * time.Millisecond)
	if names := readDirNames(t, ids); slices.Contains(names, f.sn1.ID.Short()) {
		t.Error("forgotten snapshot still shown")
	}
	if n2, _ := r.state(); n2 != n {
		t.Errorf("forgetting a snapshot reloaded the index (%d -> %d)", n, n2)
	}
}

// TestMountRandomReadStoresChunk checks that a random read hands its whole
// chunk to the kernel's page cache, so the next reads in that chunk never
// reach the daemon, and that what is stored is the file's content.
func TestMountRandomReadStoresChunk(t *testing.T) {
	f := newFixture(t)
	mnt, _, _ := mountTest(t, f.repo, Options{})
	name := filepath.Join(mnt, "snapshots", timeName(f.sn1), "home/ann/docs/big.bin")
	fd, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	// The chunk that holds the middle of the file, and its bounds.
	mid := int64(len(bigData) / 2)
	var start, end int64
	for _, n := range f.bigSizes {
		if start+int64(n) > mid {
			end = start + int64(n)
			break
		}
		start += int64(n)
	}
	page := int64(os.Getpagesize())
	buf := make([]byte, 4096)
	if _, err := fd.ReadAt(buf, mid&^(page-1)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(fd.Fd()), 0, len(bigData), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	// The chunk's whole pages (its first and last may be shared with its
	// neighbours, which are not read).
	first, last := (start+page-1)/page, end/page
	vec := make([]byte, (int64(len(bigData))+page-1)/page)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatal(e)
		}
		missing := 0
		for p := first; p < last; p++ {
			if vec[p]&1 == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d pages of the chunk at [%d, %d) are not in the page cache after a random read in it", missing, last-first, start, end)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.Equal(mem[start:end], bigData[start:end]) {
		t.Fatal("the page cache holds other bytes than the chunk's")
	}
}

// TestMountBigDir lists, walks and stats a directory of 100k files through
// a mount whose tree cache is smaller than the directory's tree: ls -f and
// find see every entry, stat finds any name, and the tree is decoded once,
// not once per request.
//
// It runs twice: with trees decoded whole (the tree is kept beside the
// cache), and decoded as they stream, as the repository does (the tree,
// larger than a quarter of the budget, moves to files).
func TestMountBigDir(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		t.Run(fmt.Sprintf("streaming=%v", streaming), func(t *testing.T) { testMountBigDir(t, streaming) })
	}
}

func testMountBigDir(t *testing.T, streaming bool) {
	const n = 100_000
	r := newFakeRepo()
	big := bigDir(r, n)
	root := r.addTree(&tree.Tree{Nodes: []*tree.Node{{Name: "big", Type: tree.Dir, Mode: 0o755 | os.ModeDir, Subtree: &big}}})
	sn := &snapshot.Snapshot{Time: t0, Hostname: "big", Tree: root}
	r.addSnapshot(sn)
	// 32 MiB: the trees' share is 4 MiB, the tree (16 MB) fits in half.
	var repo Repository = r
	if streaming {
		repo = streamingRepo{r}
	}
	spillDir := t.TempDir()
	mnt, m, _ := mountTest(t, repo, Options{CacheSize: 32 << 20, SpillDir: spillDir})
	dir := filepath.Join(mnt, "ids", sn.ID.Short(), "big")
	defer func() {
		if ct, ok := m.fs.trees.peek(big); !ok || ct.InFiles() != streaming {
			t.Errorf("the big tree: cached %v, in files %v; want in files %v", ok, ok && ct.InFiles(), streaming)
		}
	}()

	count := func(name string, args ...string) {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		lines := strings.Count(string(out), "\n")
		t.Logf("%s %v: %d lines in %v", name, args, lines, time.Since(start))
		want := n + 2 // ls -f lists . and ..
		if name == "find" {
			want = n + 1
		}
		if lines != want {
			t.Errorf("%s %v: %d lines, want %d", name, args, lines, want)
		}
	}
	count("ls", "-f", dir)
	count("find", dir)
	start := time.Now()
	const stats = 2000
	for j := 0; j < stats; j++ {
		i := (j * 7919) % n
		fi, err := os.Lstat(filepath.Join(dir, fmt.Sprintf("file-%07d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Size() != 1 || st.Ino == 0 {
			t.Fatalf("stat %s: size %d", fi.Name(), fi.Size())
		}
	}
	t.Logf("%d stats in %v", stats, time.Since(start))
	if _, err := os.Lstat(filepath.Join(dir, "file-x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat of a missing name: %v", err)
	}
	// The root tree, the directory's tree; the snapshot list may be read
	// again but no tree more than once.
	if got := r.treeLoads.Load(); got > 2 {
		t.Errorf("the trees were loaded %d times, want 2", got)
	}
}

// TestMountSiblingsAfterBusySlots: a tree copier reads a directory's files
// one after another, and the mount loads the next ones ahead of it. When
// the read-ahead slots were busy as it started, the files that could not be
// asked for then are asked for at its next file, not skipped for good.
func TestMountSiblingsAfterBusySlots(t *testing.T) {
	if raceEnabled {
		// The tree workers take slots too, and under the race detector
		// they hold them long enough to starve the four left free.
		t.Skip("slot timing test (skipped with -race)")
	}
	r := newFakeRepo()
	var entries []fentry
	ids := make([]crypto.ID, 40)
	for i := range ids {
		data := []byte(fmt.Sprintf("file number %d\n", i))
		ids[i] = crypto.Hash(data)
		entries = append(entries, fentry{path: fmt.Sprintf("d/f%02d", i), data: data, node: tree.Node{Mode: 0o644}})
	}
	sn := &snapshot.Snapshot{Time: t0, Hostname: "h", Tree: r.build(entries), Paths: []string{"/"}}
	r.addSnapshot(sn)
	mnt, m, _ := mountTest(t, r, Options{})
	dir := filepath.Join(mnt, "snapshots", timeName(sn), "d")
	if _, err := os.ReadDir(dir); err != nil {
		t.Fatal(err)
	}
	waitLoaded := func(id crypto.ID) bool {
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if r.loadCount(id) > 0 {
				return true
			}
		}
		return false
	}
	// All slots but four are busy as the copier starts on f00.
	busy := readAheadSlots - 4
	for range busy {
		m.fs.ra.slots <- struct{}{}
	}
	if _, err := os.ReadFile(filepath.Join(dir, "f00")); err != nil {
		t.Fatal(err)
	}
	if !waitLoaded(ids[4]) {
		t.Fatal("f04 was not loaded ahead with four slots free")
	}
	time.Sleep(50 * time.Millisecond) // the four loads give their slots back
	for range busy {
		<-m.fs.ra.slots
	}
	// f01..f04 are in the page cache: the copier's next READs are f05's and
	// f06's. Each asks again for the files skipped before (a load still
	// holding a slot may make one of them stop early); before the fix,
	// nothing was asked for until f08.
	for _, name := range []string{"f05", "f06"} {
		if _, err := os.ReadFile(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		if waitLoaded(ids[7]) {
			return
		}
	}
	t.Fatal("f07, skipped while the slots were busy, was not loaded ahead of the copier")
}

// TestMountEntryBudget: a walk that stats every file of a directory larger
// than the mount's entry budget leaves the process with about the budget's
// inodes, not one per file, and every file still stats and reads right
// after its entry was dropped.
func TestMountEntryBudget(t *testing.T) {
	const n, limit = 3000, 200
	r := newFakeRepo()
	nodes := make([]*tree.Node, n)
	content := func(i int) []byte { return []byte(fmt.Sprintf("content of file %d\n", i)) }
	for i := range nodes {
		nodes[i] = &tree.Node{Name: fmt.Sprintf("f%05d", i), Type: tree.File, Mode: 0o644, ModTime: t0,
			Size: uint64(len(content(i))), Links: 1, Content: []crypto.ID{r.addBlob(content(i))}}
	}
	dirID := r.addTree(&tree.Tree{Nodes: nodes})
	root := r.addTree(&tree.Tree{Nodes: []*tree.Node{{Name: "d", Type: tree.Dir, Mode: 0o755 | os.ModeDir, Subtree: &dirID}}})
	sn := &snapshot.Snapshot{Time: t0, Hostname: "h", Tree: root}
	r.addSnapshot(sn)
	mnt, m, _ := mountTest(t, r, Options{})
	b := m.fs.entries
	b.mu.Lock()
	b.limit = limit
	b.mu.Unlock()
	dir := filepath.Join(mnt, "ids", sn.ID.Short(), "d")

	stat := func(i int) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dir, fmt.Sprintf("f%05d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != int64(len(content(i))) {
			t.Fatalf("%s: size %d, want %d", fi.Name(), fi.Size(), len(content(i)))
		}
	}
	for i := 0; i < n; i++ {
		stat(i)
	}
	// The kernel forgets the dropped entries' inodes as it gets to it.
	children := func() int {
		in := m.root.GetChild("ids").GetChild(sn.ID.Short()).GetChild("d")
		if in == nil {
			t.Fatal("the directory's inode is gone")
		}
		return len(in.Children())
	}
	settled := func() bool {
		held, _ := b.stats()
		return held <= limit && children() <= 2*limit
	}
	for deadline := time.Now().Add(10 * time.Second); !settled() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	held, dropped := b.stats()
	if got := children(); got > 2*limit {
		t.Errorf("%d inodes of the directory's %d files remain, want at most %d (budget held %d, dropped %d)", got, n, 2*limit, held, dropped)
	}
	if held > limit || dropped < n-limit {
		t.Errorf("the budget holds %d entries and dropped %d, want at most %d and at least %d", held, dropped, limit, n-limit)
	}
	// Dropped entries come back: stat and read the first files again.
	for i := 0; i < 50; i++ {
		stat(i)
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)))
		if err != nil || !bytes.Equal(got, content(i)) {
			t.Fatalf("read f%05d after its entry was dropped: %q, %v", i, got, err)
		}
	}
}
