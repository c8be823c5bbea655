package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dj/internal/testserver"
)

// sftpEnv is a test environment whose repository lives on a real OpenSSH
// server on 127.0.0.1, reached as sftp:djtest:DIR through the ssh client
// configuration the server helper writes (-o sftp.args=-F FILE).
type sftpEnv struct {
	*env
	sshd    *testserver.SSHD
	repoDir string // the repository's directory on the server (this machine)
	opt     string // the -o value that reaches the server
}

func newSFTPEnv(t *testing.T) *sftpEnv {
	t.Helper()
	s := testserver.StartSSHD(t)
	e := newEnv(t)
	se := &sftpEnv{env: e, sshd: s, repoDir: filepath.Join(s.Dir, "srv", "repo"), opt: "sftp.args=" + s.SSHArgs()}
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=sftp:"+testserver.SSHHost+":"+se.repoDir, "DJ_CACHE_DIR="+filepath.Join(e.dir, "cache"))
	return se
}

// args puts the -o option that reaches the server in front of args.
func (s *sftpEnv) args(args ...string) []string {
	return append([]string{"-o", s.opt}, args...)
}

func (s *sftpEnv) must(args ...string) string { return s.env.must(s.args(args...)...) }
func (s *sftpEnv) run(args ...string) result  { return s.env.run(s.args(args...)...) }

// packsSaved counts the pack files on the server.
func (s *sftpEnv) packsSaved() int {
	n := 0
	filepath.WalkDir(filepath.Join(s.repoDir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(d.Name(), "-tmp-") {
			n++
		}
		return nil
	})
	return n
}

// tempFiles returns the temporary files of uploads on the server.
func (s *sftpEnv) tempFiles() []string {
	var temps []string
	filepath.WalkDir(s.repoDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), "-tmp-") {
			temps = append(temps, p)
		}
		return nil
	})
	return temps
}

func snapshotCount(t *testing.T, out string) int {
	t.Helper()
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, out)
	}
	return len(list)
}

// TestSFTPEndToEnd runs the commands a user runs on a repository on an
// SFTP server: init, backup, snapshots, restore, mount and read, check
// --read-data, forget --prune; and checks the layout the server holds.
func TestSFTPEndToEnd(t *testing.T) {
	s := newSFTPEnv(t)
	src := filepath.Join(s.dir, "src")
	big := randomData(11, 6<<20)
	writeFile(t, filepath.Join(src, "big.bin"), big)
	writeFile(t, filepath.Join(src, "dir", "small.txt"), []byte("hello over sftp\n"))
	writeFile(t, filepath.Join(src, "dir", "other.txt"), []byte("second file\n"))

	r := s.run("snapshots")
	if r.code != 10 || !strings.Contains(r.stderr, "create one with `dj init`") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("snapshots before init: exit %d, want 10 and one line\n%s", r.code, r.stderr)
	}
	s.must("init")
	if r := s.run("init"); r.code == 0 {
		t.Fatalf("a second init succeeded")
	}
	s.must("backup", src)
	writeFile(t, filepath.Join(src, "dir", "new.txt"), []byte("added later\n"))
	s.must("backup", src)
	if n := snapshotCount(t, s.must("snapshots", "--json")); n != 2 {
		t.Fatalf("%d snapshots, want 2", n)
	}

	// The server's side: directories 0700, files read-only, no
	// temporary files left.
	err := filepath.WalkDir(s.repoDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && fi.Mode().Perm() != 0o700:
			t.Errorf("directory %s has mode %v, want 0700", p, fi.Mode().Perm())
		case !d.IsDir() && fi.Mode().Perm() != 0o400:
			t.Errorf("file %s has mode %v, want 0400", p, fi.Mode().Perm())
		case strings.Contains(d.Name(), "-tmp-"):
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	target := filepath.Join(s.dir, "restored")
	s.must("restore", "latest", "--target", target)
	if out, err := exec.Command("diff", "-r", src, filepath.Join(target, src)).CombinedOutput(); err != nil {
		t.Fatalf("restore differs from the source: %v\n%s", err, out)
	}

	// The mount reads a file over SFTP.
	m := s.env.mount(s.args()...)
	got, err := os.ReadFile(filepath.Join(m.dir, "snapshots", "latest") + filepath.Join(src, "big.bin"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read through the mount: %v (%d bytes)\n%s", err, len(got), m.log.String())
	}
	m.stop()

	s.must("check", "--read-data")
	s.must("forget", "--keep-last", "1", "--prune")
	if n := snapshotCount(t, s.must("snapshots", "--json")); n != 1 {
		t.Fatalf("%d snapshots after forget --keep-last 1, want 1", n)
	}
	s.must("check", "--read-data")

	// The URL form with sftp.args that name the key and port, without a
	// configuration file; and sftp.command replacing ssh's command line.
	url := fmt.Sprintf("sftp://%s@127.0.0.1:%d/%s", s.sshd.User, s.sshd.Port, s.repoDir)
	args := "-i " + s.sshd.KeyFile + " -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
	out := s.env.must("-r", url, "-o", "sftp.args="+args, "-o", "sftp.connections=2", "snapshots", "--json")
	if n := snapshotCount(t, out); n != 1 {
		t.Fatalf("URL form: %d snapshots, want 1", n)
	}
	out = s.env.must("-r", "sftp:ignored:"+s.repoDir, "-o", "sftp.command="+s.sshd.Command(), "-o", "connections=2", "snapshots", "--json")
	if n := snapshotCount(t, out); n != 1 {
		t.Fatalf("sftp.command: %d snapshots, want 1", n)
	}
}

// TestSFTPErrors: an unreachable host, refused authentication, a wrong
// host key and a missing path each give one line that names the location.
func TestSFTPErrors(t *testing.T) {
	s := newSFTPEnv(t)
	loc := "sftp:" + testserver.SSHHost + ":" + s.repoDir
	// A known_hosts that holds another key for the server.
	other := filepath.Join(s.dir, "other_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(other + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	wrongKnown := filepath.Join(s.dir, "known_hosts_wrong")
	writeFile(t, wrongKnown, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", s.sshd.Port, pub)))
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unreachable", []string{"-o", s.opt + " -o Port=1"}, 20, "the host is unreachable"},
		{"auth", []string{"-o", "sftp.command=" + strings.Replace(s.sshd.Command(), "-i "+s.sshd.KeyFile, "-i /dev/null", 1)}, 21, "authentication failed"},
		{"host key", []string{"-o", s.opt + " -o UserKnownHostsFile=" + wrongKnown}, 22, "host key is not the one in known_hosts"},
		{"missing path", []string{"-o", s.opt}, 10, "create one with `dj init`"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := s.env.run(append(tc.args, "snapshots")...)
			msg := strings.TrimSpace(r.stderr)
			if r.code != tc.code || !strings.Contains(msg, tc.want) || !strings.Contains(msg, loc) || strings.Contains(msg, "\n") {
				t.Errorf("exit %d, stderr %q; want exit %d and one line naming %s with %q", r.code, r.stderr, tc.code, loc, tc.want)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// TestSFTPDroppedConnection kills the server's side of every connection
// in the middle of a backup, and later stops the whole server and starts
// it again during another: the retry layer connects again, the backups
// complete, and check --read-data passes.
func TestSFTPDroppedConnection(t *testing.T) {
	s := newSFTPEnv(t)
	src := filepath.Join(s.dir, "src")
	for i := 0; i < 6; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%d.bin", i)), randomData(uint64(20+i), 8<<20))
	}
	s.must("init")
	packsSaved := s.packsSaved
	// during runs a backup with -v (which reports retries) and calls
	// interrupt once the first pack is on the server.
	during := func(interrupt func()) result {
		t.Helper()
		before := packsSaved()
		done := make(chan result, 1)
		go func() { done <- s.env.run(s.args("-v", "backup", src)...) }()
		deadline := time.Now().Add(60 * time.Second)
		for packsSaved() == before && time.Now().Before(deadline) {
			select {
			case r := <-done:
				t.Fatalf("backup ended before a pack was saved: exit %d\n%s", r.code, r.stderr)
			case <-time.After(5 * time.Millisecond):
			}
		}
		interrupt()
		return <-done
	}

	r := during(func() {
		if s.sshd.KillSessions() == 0 {
			t.Error("no session to kill")
		}
	})
	if r.code != 0 || !strings.Contains(r.stderr, "retrying") {
		t.Fatalf("backup with its connections killed: exit %d, want 0 and a retry\n%s", r.code, r.stderr)
	}

	writeFile(t, filepath.Join(src, "more.bin"), randomData(99, 8<<20))
	r = during(func() {
		s.sshd.Stop()
		time.Sleep(500 * time.Millisecond)
		if err := s.sshd.Restart(); err != nil {
			t.Error(err)
		}
	})
	// The restart may fall between two requests (then nothing needs a
	// retry): what matters is that the backup completes and checks.
	if r.code != 0 {
		t.Fatalf("backup across a restart of sshd: exit %d, want 0\n%s", r.code, r.stderr)
	}

	s.must("check", "--read-data")
	if n := snapshotCount(t, s.must("snapshots", "--json")); n != 2 {
		t.Fatalf("%d snapshots, want 2", n)
	}
	target := filepath.Join(s.dir, "restored")
	s.must("restore", "latest", "--target", target)
	if out, err := exec.Command("diff", "-r", src, filepath.Join(target, src)).CombinedOutput(); err != nil {
		t.Fatalf("restore differs from the source: %v\n%s", err, out)
	}
}

// TestSFTPServerKilled stops the SSH server in the middle of a backup and
// leaves it down: the backup retries (and says so under -v) instead of
// failing at once or hanging, and ends on Ctrl-C. With the server back,
// check --read-data passes, the unfinished snapshot is absent, and the
// backup run again completes and restores byte for byte.
func TestSFTPServerKilled(t *testing.T) {
	s := newSFTPEnv(t)
	src := filepath.Join(s.dir, "src")
	for i := 0; i < 6; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%d.bin", i)), randomData(uint64(40+i), 8<<20))
	}
	s.must("init")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, s.args("-v", "backup", src)...)
	cmd.Env = append(cleanEnv(), s.extraEnv...)
	var out testserver.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	// waitFor polls cond until it holds; the backup must not end first.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			select {
			case <-done:
				t.Fatalf("backup ended before %s: exit %d\n%s", what, cmd.ProcessState.ExitCode(), out.String())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("no %s within a minute\n%s", what, out.String())
			}
		}
	}
	waitFor("a pack on the server", func() bool { return s.packsSaved() > 0 })
	s.sshd.Stop()
	waitFor("a retry", func() bool { return strings.Contains(out.String(), "retrying") })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("backup did not end within 30 s of Ctrl-C\n%s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("interrupted backup: exit %d, want 130\n%s", code, out.String())
	}

	if err := s.sshd.Restart(); err != nil {
		t.Fatal(err)
	}
	s.must("check", "--read-data")
	if n := snapshotCount(t, s.must("snapshots", "--json")); n != 0 {
		t.Fatalf("%d snapshots after the interrupted backup, want 0", n)
	}

	// The uploads the dropped connections cut short left temporary files;
	// once they are a day old, prune removes them through every layer
	// (cache, retry, connection limit) down to the SFTP backend.
	temps := s.tempFiles()
	t.Logf("%d temporary files left by the interrupted backup", len(temps))
	old := time.Now().Add(-25 * time.Hour) // older than prune's default wait for deletions, 24 h
	for _, p := range temps {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	s.must("prune")
	if left := s.tempFiles(); len(left) != 0 {
		t.Errorf("prune left temporary files: %v", left)
	}
	rerunBackup(t, s.must, s.dir, src)
}

// TestSFTPRepackAndCopy runs repack on a repository on the SFTP server,
// copies its snapshots to a local repository and from there to a second
// repository on the server; every copy checks and restores byte for byte.
func TestSFTPRepackAndCopy(t *testing.T) {
	s := newSFTPEnv(t)
	src := filepath.Join(s.dir, "src")
	writeFile(t, filepath.Join(src, "big.bin"), randomData(7, 3<<20))
	s.must("init")
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(src, "dir", fmt.Sprintf("small%d.txt", i)), []byte(fmt.Sprintf("small file %d\n", i)))
		s.must("backup", src)
	}
	packs := s.packsSaved()
	s.must("repack", "--instant-delete")
	if n := s.packsSaved(); n >= packs {
		t.Errorf("repack left %d packs of %d", n, packs)
	}
	s.must("check", "--read-data")

	pw := filepath.Join(s.dir, "password")
	local := filepath.Join(s.dir, "local-copy")
	second := "sftp:" + testserver.SSHHost + ":" + filepath.Join(s.sshd.Dir, "srv", "second")
	for _, step := range []struct{ from, to string }{
		{"sftp:" + testserver.SSHHost + ":" + s.repoDir, local},
		{local, second},
	} {
		extra := []string{"DJ_REPOSITORY=" + step.to, "DJ_FROM_REPOSITORY=" + step.from, "DJ_FROM_PASSWORD_FILE=" + pw}
		for _, args := range [][]string{{"init"}, {"copy"}, {"check", "--read-data"}} {
			if r := s.env.runEnv(extra, s.args(args...)...); r.code != 0 {
				t.Fatalf("%s -> %s: dj %v: exit %d\n%s%s", step.from, step.to, args, r.code, r.stdout, r.stderr)
			}
		}
		r := s.env.runEnv(extra, s.args("snapshots", "--json")...)
		if n := snapshotCount(t, r.stdout); n != 3 {
			t.Fatalf("%s holds %d snapshots, want 3", step.to, n)
		}
		target := filepath.Join(s.dir, "restored-"+filepath.Base(step.to))
		if r := s.env.runEnv(extra, s.args("restore", "latest", "--target", target)...); r.code != 0 {
			t.Fatalf("restore from %s: exit %d\n%s", step.to, r.code, r.stderr)
		}
		if out, err := exec.Command("diff", "-r", src, filepath.Join(target, src)).CombinedOutput(); err != nil {
			t.Fatalf("restore from %s differs from the source: %v\n%s", step.to, err, out)
		}
	}
}
