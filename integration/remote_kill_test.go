package integration

// A server killed in the middle of a backup: the backup fails with one
// clear line and exit 20 (server unreachable) once the retry layer gives
// up; when the server is back the repository checks, holds no unfinished
// snapshot, and the re-run backup completes and restores byte for byte.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dj/internal/testserver"
)

// shortRetry makes dj give up on a dead server within a second or two.
const shortRetry = "DJ_TEST_RETRY=attempts=3,delay=200ms"

// filesUnder counts the files under dir, without failing when it is
// missing or changing.
func filesUnder(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// killMidBackup runs a backup of src, calls kill once packsSaved reports a
// pack on the server, and wants the backup to fail with one line naming
// the location, and exit 20; then revive brings the server back and the
// repository must check, hold no snapshot, and take the backup again.
func killMidBackup(t *testing.T, e *env, loc string, packsSaved func() int, kill, revive func()) {
	t.Helper()
	src := filepath.Join(e.dir, "src")
	for i := 0; i < 5; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%d.bin", i)), randomData(uint64(60+i), 8<<20))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, "backup", src)
	cmd.Env = append(append(cleanEnv(), e.extraEnv...), shortRetry)
	var stdout, stderr testserver.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for packsSaved() == 0 {
		select {
		case <-done:
			t.Fatalf("backup ended before a pack reached the server: exit %d\n%s", cmd.ProcessState.ExitCode(), stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no pack on the server within a minute\n%s", stderr.String())
		}
	}
	kill()
	start := time.Now()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Signal(syscall.SIGINT)
		t.Fatalf("backup did not fail within a minute of the server's death\n%s", stderr.String())
	}
	t.Logf("backup failed %v after the server died", time.Since(start).Round(time.Millisecond))
	msg := strings.TrimSpace(stderr.String())
	if code := cmd.ProcessState.ExitCode(); code != 20 {
		t.Errorf("backup with the server dead: exit %d, want 20\n%s", code, msg)
	}
	addr := strings.Split(strings.SplitN(loc, "//", 2)[1], "/")[0]
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "dj: ") || !strings.Contains(msg, addr) || !strings.Contains(msg, "check ") {
		t.Errorf("backup with the server dead: want one line naming %s and what to do, got:\n%s", addr, msg)
	}

	revive()
	e.must("check", "--read-data")
	if n := snapshotCount(t, e.must("snapshots", "--json")); n != 0 {
		t.Fatalf("%d snapshots after the failed backup, want 0", n)
	}
	rerunBackup(t, e.must, e.dir, src)
}

// TestS3ServerKilled: versitygw killed (SIGKILL) mid-backup, then started
// again on the same port and buckets.
func TestS3ServerKilled(t *testing.T) {
	e, srv, loc := s3Env(t)
	bucket := strings.Split(strings.TrimPrefix(loc, "s3:"+srv.URL+"/"), "/")[0]
	data := filepath.Join(srv.Dir, bucket, "repo", "data")
	killMidBackup(t, e, loc, func() int { return filesUnder(data) }, srv.Stop,
		func() { testserver.RestartS3Server(t, srv) })
}

// TestServeKilled: `dj serve` killed (SIGKILL) mid-backup, then started
// again on the same address and directory.
func TestServeKilled(t *testing.T) {
	e := newEnv(t)
	addr := freePort(t)
	dir := filepath.Join(e.dir, "served")
	var server *exec.Cmd
	start := func() {
		server = exec.Command(e.bin, "serve", "--path", dir, "--listen", addr)
		server.Env = cleanEnv()
		var log bytes.Buffer
		server.Stdout, server.Stderr = &log, &log
		if err := server.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/config")
			if err == nil {
				resp.Body.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("dj serve did not start:\n%s", log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	kill := func() {
		if server != nil && server.ProcessState == nil {
			server.Process.Kill()
			server.Wait()
		}
	}
	t.Cleanup(kill)
	start()
	loc := "rest:http://" + addr + "/"
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY="+loc)
	e.must("init")
	killMidBackup(t, e, loc, func() int { return filesUnder(filepath.Join(dir, "data")) }, kill, start)
}

// TestServeLife: the life of a repository on `dj serve`: backups, restore,
// mount, check --read-data, forget --prune, repack and copy.
func TestServeLife(t *testing.T) {
	e := newEnv(t)
	url := e.serve()
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url)
	e.must("init")
	repositoryLife(t, e, 8_000_000)
}

// rerunBackup backs src up again after a failed backup, and shows that
// check passes, the repository holds that one snapshot, and it restores
// byte for byte (into dir/restored).
func rerunBackup(t *testing.T, must func(args ...string) string, dir, src string) {
	t.Helper()
	must("backup", src)
	must("check", "--read-data")
	if n := snapshotCount(t, must("snapshots", "--json")); n != 1 {
		t.Fatalf("%d snapshots, want 1", n)
	}
	target := filepath.Join(dir, "restored")
	must("restore", "latest", "--target", target)
	if out, err := exec.Command("diff", "-r", src, filepath.Join(target, src)).CombinedOutput(); err != nil {
		t.Fatalf("restore differs from the source: %v\n%s", err, out)
	}
}
