package integration

// End-to-end tests of tar streams stored as trees (--stdin-format tar):
// a container dump deduplicates file by file, dumps back as the same
// members, and a hostile tar writes nothing outside a restore's target.

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestTarImportRoundTrip(t *testing.T) {
	requireRoot(t)
	requireCmd(t, "tar")
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "ct")
	g := newTreeGen(t, 5)
	g.addFiles(src, 4<<20)
	shell(t, `cd `+src+` && mkdir -p etc/app && echo conf > etc/app/a.conf && ln etc/app/a.conf etc/app/hard && ln -s a.conf etc/app/soft &&
		mkfifo etc/fifo && chmod 4755 etc/app/a.conf && chown 1001:1002 etc/app && touch -d '2020-01-02 03:04:05' etc/app/a.conf`)
	want := scanTree(t, src)
	tarball, err := exec.Command("tar", "--xattrs", "--numeric-owner", "-C", src, "-cf", "-", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	backup := func() (added uint64) {
		res := e.runStdin(string(tarball), nil, "backup", "--json", "--stdin", "--stdin-format", "tar", "--stdin-filename", "ct-101.tar")
		if res.code != 0 {
			t.Fatalf("backup of a tar: exit %d\n%s", res.code, res.stderr)
		}
		var sum struct {
			DataAdded uint64 `json:"data_added"`
		}
		parseJSON(t, "summary", lastLine(res.stdout), &sum)
		return sum.DataAdded
	}
	first, again := backup(), backup()
	t.Logf("data added: first %d, the same tar again %d", first, again)
	if again > 4<<10 {
		t.Errorf("the same tar again added %d bytes", again)
	}
	if ls := e.must("ls", "latest", "/ct-101.tar/etc/app"); !strings.Contains(ls, "/ct-101.tar/etc/app/hard") {
		t.Errorf("ls of the imported tree:\n%s", ls)
	}

	// dj dump writes the tar back; extracted, it is the source again.
	res := e.run("dump", "latest", "/ct-101.tar")
	if res.code != 0 {
		t.Fatalf("dump: %s", res.stderr)
	}
	if hdr, err := tar.NewReader(strings.NewReader(res.stdout)).Next(); err != nil {
		t.Errorf("the dump is not tar: %v", err)
	} else if !strings.HasPrefix(hdr.Name, "./") {
		t.Errorf("the dump's first member is %q; want a name starting ./ as vzdump's", hdr.Name)
	}
	out := filepath.Join(e.dir, "out")
	os.MkdirAll(out, 0o755)
	cmd := exec.Command("tar", "--xattrs", "--numeric-owner", "-xpf", "-", "-C", out)
	cmd.Stdin = strings.NewReader(res.stdout)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x of the dump: %v\n%s", err, b)
	}
	if d := manifestDiff(want, scanTree(t, out)); len(d) > 0 {
		t.Errorf("dumped tar differs from the source:\n%s", strings.Join(d, "\n"))
	}
	// And restore gives the same tree, hard links and owners included.
	target := filepath.Join(e.dir, "restored")
	e.must("restore", "latest", "--target", target)
	got := filepath.Join(target, "ct-101.tar")
	if d := manifestDiff(want, scanTree(t, got)); len(d) > 0 {
		t.Errorf("restored tree differs from the source:\n%s", strings.Join(d, "\n"))
	}
	var a, b syscall.Stat_t
	syscall.Lstat(filepath.Join(got, "etc/app/a.conf"), &a)
	syscall.Lstat(filepath.Join(got, "etc/app/hard"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link not restored: inodes %d %d, links %d", a.Ino, b.Ino, a.Nlink)
	}
	var d syscall.Stat_t
	syscall.Lstat(filepath.Join(got, "etc/app"), &d)
	if d.Uid != 1001 || d.Gid != 1002 {
		t.Errorf("owner of etc/app restored as %d:%d", d.Uid, d.Gid)
	}
}

func TestTarImportHostileMembers(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, typ byte, body string) {
		hdr := &tar.Header{Name: name, Typeflag: typ, Mode: 0o644, Size: int64(len(body))}
		if typ == tar.TypeSymlink || typ == tar.TypeLink {
			hdr.Linkname, hdr.Size = body, 0
			body = ""
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	add("ok.txt", tar.TypeReg, "fine\n")
	add("../escape.txt", tar.TypeReg, "out\n")
	add("a/../../escape2.txt", tar.TypeReg, "out\n")
	add("/etc/abs.txt", tar.TypeReg, "abs\n")
	add("link", tar.TypeSymlink, "/etc")
	add("link/passwd", tar.TypeReg, "through a symlink\n")
	add("hard", tar.TypeLink, "../../etc/passwd")
	tw.Close()
	res := e.runStdin(buf.String(), nil, "backup", "--stdin", "--stdin-format", "tar", "--stdin-filename", "h.tar")
	for _, want := range []string{"../escape.txt", "a/../../escape2.txt", "link/passwd", "hard"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("no warning naming %q:\n%s", want, res.stderr)
		}
	}
	if res.code != 3 {
		t.Errorf("backup of a hostile tar: exit %d, want 3 (incomplete)\n%s", res.code, res.stderr)
	}
	target := filepath.Join(e.dir, "target")
	e.must("restore", "latest", "--target", target)
	if _, err := os.Stat(filepath.Join(e.dir, "escape.txt")); err == nil {
		t.Fatal("a member climbed out of the restore target")
	}
	if b, err := os.ReadFile(filepath.Join(target, "h.tar", "etc", "abs.txt")); err != nil || string(b) != "abs\n" {
		t.Errorf("absolute member not stored relative: %v %q", err, b)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "h.tar", "ok.txt")); string(b) != "fine\n" {
		t.Errorf("ok.txt restored as %q", b)
	}
	if res := e.runStdin("this is not a tar archive at all, not even close......", nil, "backup", "--stdin", "--stdin-format", "tar"); res.code == 0 {
		t.Error("a stream that is not tar was accepted")
	}
}
