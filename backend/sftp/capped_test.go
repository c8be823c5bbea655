package sftp_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/sftp"
	"dj/internal/testserver"
)

// TestCappedServer runs the backend against `rclone serve sftp`, a server
// built on pkg/sftp that answers a read with 32 KiB at most (as SFTPGo
// does; older OpenSSH servers answered 64 KiB): packs load whole and in
// ranges, byte for byte. Before the backend learned such caps, every load
// past the first answer failed ("past the end (read 32768 bytes)"), and a
// backup to such a server could not be restored. (rclone's server states
// no limits, so the backend now sends it packets of 32 KiB; the learning
// of a cap is TestReadCappedServer's.)
func TestCappedServer(t *testing.T) {
	testserver.RequireSSHD(t) // root and OpenSSH's client
	rclone, err := exec.LookPath("rclone")
	if err != nil {
		t.Fatal("rclone is not installed: run `make test-deps` (as root) or apt-get install rclone")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	addr := testserver.FreeAddr(t)
	srv := exec.Command(rclone, "serve", "sftp", filepath.Join(dir, "srv"), "--addr", addr,
		"--authorized-keys", key+".pub", "--cache-dir", filepath.Join(dir, "cache"), "--config", filepath.Join(dir, "rclone.conf"))
	var log testserver.SyncBuffer
	srv.Stdout, srv.Stderr = &log, &log
	if err := os.MkdirAll(filepath.Join(dir, "srv"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rclone serve sftp did not listen on %s: %v\n%s", addr, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	host, port, _ := net.SplitHostPort(addr)
	cfgFile := filepath.Join(dir, "ssh_config")
	conf := fmt.Sprintf("Host capped\n  HostName %s\n  Port %s\n  User dj\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n"+
		"  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n", host, port, key)
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := sftp.ParseLocation("sftp:capped:repo", map[string]string{sftp.OptionArgs: "-F " + cfgFile})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	be, err := sftp.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v\n%s", err, log.String())
	}
	defer be.Close()

	saveAndLoad(t, ctx, be, strings.Repeat("ab", 32), 7)
	cfgData := bytes.Repeat([]byte("config "), 20000) // a whole small file past one answer
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, cfgData); err != nil {
		t.Fatal(err)
	}
	if got, err := be.Load(ctx, backend.Handle{Type: backend.ConfigFile}, 0, 0); err != nil || !bytes.Equal(got, cfgData) {
		t.Errorf("Load config: %d bytes, %v; want %d", len(got), err, len(cfgData))
	}
}

// saveAndLoad saves a pack of 3 MiB and a bit of random bytes (from seed)
// as name, and loads it back whole and in ranges, byte for byte.
func saveAndLoad(t *testing.T, ctx context.Context, be backend.Backend, name string, seed uint64) []byte {
	t.Helper()
	data := make([]byte, 3<<20+12345)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	h := backend.Handle{Type: backend.PackFile, Name: name}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatalf("Save of %d bytes: %v", len(data), err)
	}
	for _, r := range []struct{ off, n int }{{0, 0}, {100, 2 << 20}, {1 << 20, 600 << 10}, {len(data) - 70000, 70000}, {5, 40 << 10}} {
		got, err := be.Load(ctx, h, int64(r.off), r.n)
		want := data[r.off:]
		if r.n > 0 {
			want = want[:r.n]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Load(%d, %d): %d bytes, %v; want %d bytes", r.off, r.n, len(got), err, len(want))
		}
	}
	return data
}
