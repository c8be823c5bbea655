package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
)

// mounted is a running `dj mount`.
type mounted struct {
	t   *testing.T
	cmd *exec.Cmd
	dir string
	log *bytes.Buffer
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

// mount starts dj mount in the background and waits until it serves.
func (e *env) mount(args ...string) *mounted {
	e.t.Helper()
	requireRoot(e.t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		e.t.Fatal("/dev/fuse is missing")
	}
	dir := filepath.Join(e.dir, "mnt")
	os.MkdirAll(dir, 0o755)
	var log bytes.Buffer
	cmd := exec.Command(e.bin, append(append([]string{"mount"}, args...), dir)...)
	cmd.Env = append(cleanEnv(), e.extraEnv...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	m := &mounted{t: e.t, cmd: cmd, dir: dir, log: &log}
	e.t.Cleanup(m.stop)
	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(dir) {
		if time.Now().After(deadline) {
			e.t.Fatalf("dj mount did not come up:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return m
}

// stop sends SIGTERM and waits; it asserts that nothing stays mounted.
func (m *mounted) stop() {
	if m.cmd.ProcessState != nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-done
		exec.Command("fusermount3", "-u", "-z", m.dir).Run()
		m.t.Errorf("dj mount did not stop on SIGTERM:\n%s", m.log.String())
	}
	if isMounted(m.dir) {
		exec.Command("fusermount3", "-u", "-z", m.dir).Run()
		m.t.Errorf("SIGTERM left %s mounted", m.dir)
	}
}

func TestMountRoundTrip(t *testing.T) {
	requireRoot(t)
	requireCmd(t, "rsync")
	requireCmd(t, "setfacl")
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	makeRoundTripTree(t, src, !testing.Short())
	e.must("init")
	e.must("backup", src)
	m := e.mount()
	snap := filepath.Join(m.dir, "snapshots", "latest") + src
	out, err := exec.Command("rsync", "-aHAXn", "--checksum", "--itemize-changes", src+"/", snap+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("rsync: %v\n%s", err, out)
	}
	if len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("rsync -aHAXn --checksum --itemize-changes SRC/ MNT/snapshots/latest/SRC/ found differences:\n%s", out)
	}
	assertSameTimes(t, src, snap)
	// Hard links share one inode number in the mount.
	var a, b syscall.Stat_t
	syscall.Lstat(filepath.Join(snap, "small.txt"), &a)
	syscall.Lstat(filepath.Join(snap, "sub", "hardlink.txt"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("hard links: inodes %d and %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	// The sparse file reports its allocation.
	if got, want := allocated(t, filepath.Join(snap, "sparse.img")), allocated(t, filepath.Join(src, "sparse.img")); got != want {
		t.Errorf("st_blocks of the sparse file: %d bytes, source %d", got, want)
	}
	// ids/, hosts/ and the df view answer.
	entries, err := os.ReadDir(filepath.Join(m.dir, "ids"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("ids/: %v %v", err, entries)
	}
	if out := shell(t, "df "+m.dir); !strings.Contains(out, "dj:") {
		t.Errorf("df does not show the mount: %s", out)
	}
}

func TestMountFSAndConcurrentReaders(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	var names []string
	contents := map[string][]byte{}
	for i := 0; i < 12; i++ {
		size := 1 << (10 + i) // 1 KiB .. 2 MiB
		if i == 11 {
			size = 20 << 20 // spans many chunks and packs
		}
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(j*7 + i*131 + j/4096)
		}
		name := filepath.Join("d"+string(rune('a'+i%3)), "file"+string(rune('a'+i)))
		writeFile(t, filepath.Join(src, name), b)
		names = append(names, name)
		contents[name] = b
	}
	e.must("init")
	e.must("backup", src)
	m := e.mount("--refresh", "1s")
	snap := filepath.Join(m.dir, "snapshots", "latest") + src

	if err := fstest.TestFS(os.DirFS(snap), names...); err != nil {
		t.Fatalf("fstest.TestFS: %v", err)
	}
	// 16 readers: of the same big file and of different files.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for r := 0; r < 16; r++ {
		name := names[11]
		if r%2 == 1 {
			name = names[r%12]
		}
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			got, err := os.ReadFile(filepath.Join(snap, name))
			if err != nil {
				errs <- err
				return
			}
			if sha256.Sum256(got) != sha256.Sum256(contents[name]) {
				errs <- errors.New(name + ": content differs")
			}
		}(name)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Writes are refused with EROFS.
	for _, op := range []func() error{
		func() error { return os.WriteFile(filepath.Join(snap, "new"), []byte("x"), 0o644) },
		func() error { return os.Mkdir(filepath.Join(snap, "newdir"), 0o755) },
		func() error { return os.Chmod(filepath.Join(snap, names[0]), 0o600) },
		func() error { return os.Rename(filepath.Join(snap, names[0]), filepath.Join(snap, "x")) },
		func() error { return os.Remove(filepath.Join(snap, names[0])) },
		func() error {
			f, err := os.OpenFile(filepath.Join(snap, names[0]), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		func() error { return syscall.Setxattr(filepath.Join(snap, names[0]), "user.x", []byte("y"), 0) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write operation: got %v, want EROFS", err)
		}
	}

	// A new snapshot shows up without remounting.
	before, _ := os.ReadDir(filepath.Join(m.dir, "snapshots"))
	writeFile(t, filepath.Join(src, "later"), []byte("later"))
	e.must("backup", src)
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, _ := os.ReadDir(filepath.Join(m.dir, "snapshots"))
		if len(after) > len(before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new snapshot did not appear: before %d entries, after %d", len(before), len(after))
		}
		time.Sleep(200 * time.Millisecond)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		got, err := os.ReadFile(filepath.Join(m.dir, "snapshots", "latest") + src + "/later")
		if err == nil && string(got) == "later" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("file of the new snapshot not readable: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestMountCorruptPackGivesEIOForThatFileOnly(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	big := make([]byte, 24<<20)
	for i := range big {
		big[i] = byte(i ^ i>>8 ^ i>>16)
	}
	writeFile(t, filepath.Join(src, "big"), big)
	writeFile(t, filepath.Join(src, "small"), []byte("small file"))
	e.must("init")
	e.must("backup", src)
	// Damage every data pack that does not hold the small file: flip a byte
	// in the largest pack.
	var victim string
	var vsize int64
	for _, p := range filesIn(t, filepath.Join(e.repo, "data")) {
		fi, _ := os.Stat(p)
		if fi.Size() > vsize {
			victim, vsize = p, fi.Size()
		}
	}
	flipByte(t, victim, vsize/2)
	m := e.mount()
	snap := filepath.Join(m.dir, "snapshots", "latest") + src
	if _, err := os.ReadFile(filepath.Join(snap, "big")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading the damaged file: %v, want EIO", err)
	}
	if got, err := os.ReadFile(filepath.Join(snap, "small")); err != nil || string(got) != "small file" {
		t.Fatalf("intact file: %q %v", got, err)
	}
	if _, err := os.ReadDir(snap); err != nil {
		t.Fatalf("listing after EIO: %v", err)
	}
}

func TestMountRefusals(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	e.must("init")
	r := e.run("mount", filepath.Join(e.dir, "does-not-exist"))
	if r.code == 0 {
		t.Fatal("mount on a missing directory succeeded")
	}
	oneLine(t, r)
	inside := filepath.Join(e.repo, "data")
	r = e.run("mount", inside)
	if r.code == 0 || !strings.Contains(r.stderr, "inside the repository") {
		t.Fatalf("mount inside the repository: exit %d %s", r.code, r.stderr)
	}
}
