package integration

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// oneLine asserts that stderr is a single line starting with "dj: ".
func oneLine(t *testing.T, r result) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "dj: ") {
		t.Fatalf("want one error line, got:\n%s", r.stderr)
	}
}

func TestExitCodes(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "a"), []byte("a"))

	r := e.run("snapshots")
	if r.code != 10 {
		t.Fatalf("missing repository: exit %d, want 10\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	if !strings.Contains(r.stderr, "dj init") {
		t.Errorf("missing repository message should say what to do: %s", r.stderr)
	}

	e.must("init")
	if r := e.run("init"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("init over an existing repository: exit %d, %s", r.code, r.stderr)
	}
	e.must("backup", src)

	r = e.runEnv([]string{"DJ_PASSWORD_FILE=", "DJ_PASSWORD=wrong"}, "snapshots")
	if r.code != 12 {
		t.Fatalf("wrong password: exit %d, want 12\n%s", r.code, r.stderr)
	}
	oneLine(t, r)

	r = e.run("restore", "deadbeef", "--target", filepath.Join(e.dir, "x"))
	if r.code != 1 {
		t.Fatalf("unknown snapshot: exit %d", r.code)
	}
	oneLine(t, r)

	// A lock held by a running backup blocks an exclusive operation.
	cmd := exec.Command(e.bin, "backup", "--stdin", "--stdin-filename", "slow")
	cmd.Env = append(cleanEnv(), e.extraEnv...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		entries, _ := os.ReadDir(filepath.Join(e.repo, "locks"))
		if len(entries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("backup --stdin took no lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r = e.run("prune", "--instant-delete")
	io.WriteString(stdin, "streamed data")
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("backup --stdin: %v", err)
	}
	if r.code != 11 {
		t.Fatalf("locked repository: exit %d, want 11\n%s", r.code, r.stderr)
	}
	oneLine(t, r)

	// Unreadable files: the snapshot is written, exit code 3.
	if os.Geteuid() != 0 {
		secret := filepath.Join(src, "secret")
		writeFile(t, secret, []byte("x"))
		os.Chmod(secret, 0)
		r = e.run("backup", src)
		if r.code != 3 {
			t.Fatalf("unreadable file: exit %d, want 3", r.code)
		}
	}

	// A failing --stdin-from-command leaves no snapshot.
	before := strings.Count(e.must("snapshots", "--json"), `"id"`)
	r = e.run("backup", "--stdin-from-command", "--stdin-filename", "dump.sql", "--", "sh", "-c", "echo partial; exit 3")
	if r.code == 0 {
		t.Fatal("a failing command made backup succeed")
	}
	if after := strings.Count(e.must("snapshots", "--json"), `"id"`); after != before {
		t.Fatalf("a failing command left a snapshot (%d -> %d)", before, after)
	}
	e.must("backup", "--stdin-from-command", "--stdin-filename", "dump.sql", "--", "sh", "-c", "echo 'CREATE TABLE t;'")
	if got := e.must("dump", "latest", "/dump.sql"); got != "CREATE TABLE t;\n" {
		t.Fatalf("dump of a streamed backup: %q", got)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	os.Chmod(path, 0o644)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func filesIn(t *testing.T, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestCorruptionIsReportedAndIntactFilesRestore(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	// Two large random files in different packs: each file is bigger than a pack.
	rb := func(seed byte, n int) []byte {
		b := make([]byte, n)
		x := uint32(seed) * 2654435761
		for i := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		}
		return b
	}
	writeFile(t, filepath.Join(src, "a.bin"), rb(1, 20<<20))
	writeFile(t, filepath.Join(src, "b.bin"), rb(2, 20<<20))
	writeFile(t, filepath.Join(src, "c.txt"), []byte("small"))
	e.must("init")
	e.must("backup", src)

	// Flip one byte in the middle of one data pack.
	packs := filesIn(t, filepath.Join(e.repo, "data"))
	if len(packs) < 2 {
		t.Fatalf("want several packs, got %d", len(packs))
	}
	var victim string
	var vsize int64
	for _, p := range packs {
		fi, _ := os.Stat(p)
		if fi.Size() > vsize {
			victim, vsize = p, fi.Size()
		}
	}
	flipByte(t, victim, vsize/3)

	target := filepath.Join(e.dir, "restored")
	r := e.run("restore", "latest", "--target", target)
	if r.code != 1 {
		t.Fatalf("restore with a damaged pack: exit %d, want 1\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, ".bin") {
		t.Fatalf("restore should name the damaged file:\n%s", r.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(target, src, "c.txt")); err != nil || string(got) != "small" {
		t.Fatalf("intact small file not restored: %v", err)
	}
	intact := 0
	for _, name := range []string{"a.bin", "b.bin"} {
		want, _ := os.ReadFile(filepath.Join(src, name))
		got, _ := os.ReadFile(filepath.Join(target, src, name))
		if string(got) == string(want) {
			intact++
		}
	}
	if intact != 1 {
		t.Fatalf("%d of the two big files restored intact, want exactly the undamaged one", intact)
	}

	// A bit-flipped snapshot file: listed as unreadable, others still work.
	e.must("backup", src)
	snaps := filesIn(t, filepath.Join(e.repo, "snapshots"))
	flipByte(t, snaps[0], 10)
	r = e.run("snapshots")
	if r.code != 0 || !strings.Contains(r.stderr, "cannot be read") {
		t.Fatalf("snapshots with one damaged snapshot file: exit %d\n%s", r.code, r.stderr)
	}

	// A truncated index: one clear line, exit 1, pointing at repair.
	idx := filesIn(t, filepath.Join(e.repo, "index"))
	os.Chmod(idx[0], 0o644)
	if err := os.Truncate(idx[0], 10); err != nil {
		t.Fatal(err)
	}
	r = e.run("restore", "latest", "--target", filepath.Join(e.dir, "r2"))
	if r.code != 1 {
		t.Fatalf("truncated index: exit %d\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	if !strings.Contains(r.stderr, "repair index") {
		t.Fatalf("truncated index message should point at `dj repair index`: %s", r.stderr)
	}
}

// TestUnreadableFilesGiveExitCode3 runs dj as nobody over a tree with a file
// only root may read: the snapshot is written without it, the file is
// named, and the exit code is 3.
func TestUnreadableFilesGiveExitCode3(t *testing.T) {
	requireRoot(t)
	bin := djBinary(t)
	base, err := os.MkdirTemp("", "dj-nobody")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o777)
	src := filepath.Join(base, "src")
	writeFile(t, filepath.Join(src, "ok.txt"), []byte("readable"))
	writeFile(t, filepath.Join(src, "secret.txt"), []byte("root only"))
	os.Chmod(filepath.Join(src, "secret.txt"), 0o600)
	pw := filepath.Join(base, "pw")
	os.WriteFile(pw, []byte("pw\n"), 0o644)
	runAsNobody := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cleanEnv(), "DJ_REPOSITORY="+filepath.Join(base, "repo"), "DJ_PASSWORD_FILE="+pw, "DJ_INSECURE_TEST_KDF=1", "HOME="+base)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := runAsNobody("init"); code != 0 {
		t.Fatalf("init as nobody: %d %s", code, out)
	}
	out, code := runAsNobody("backup", src)
	if code != 3 || !strings.Contains(out, "secret.txt") {
		t.Fatalf("backup with an unreadable file: exit %d, want 3\n%s", code, out)
	}
	out, code = runAsNobody("ls", "latest")
	if code != 0 || !strings.Contains(out, "ok.txt") || strings.Contains(out, "secret.txt") {
		t.Fatalf("snapshot of an incomplete backup: exit %d\n%s", code, out)
	}
}
