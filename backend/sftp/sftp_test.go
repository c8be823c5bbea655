package sftp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/sftp"
	"dj/internal/testserver"
)

// newRepo creates an empty repository in a fresh directory on the server.
func newRepo(t *testing.T, s *testserver.SSHD) (sftp.Config, string) {
	t.Helper()
	dir := filepath.Join(s.Dir, "repos", strings.NewReplacer("/", "_").Replace(t.Name()))
	cfg, err := sftp.ParseLocation("sftp:"+testserver.SSHHost+":"+dir, map[string]string{sftp.OptionArgs: s.SSHArgs()})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

// create lays out a repository with cfg; its backend is closed when the
// test ends.
func create(t *testing.T, cfg sftp.Config) *sftp.Backend {
	t.Helper()
	be, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func TestConformance(t *testing.T) {
	s := testserver.StartSSHD(t)
	conformance.Run(t, func(t *testing.T) backend.Backend {
		cfg, _ := newRepo(t, s)
		be, err := sftp.Create(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Create: %v\nsshd log:\n%s", err, s.Log())
		}
		return be
	})
}

func TestLayoutAndModes(t *testing.T) {
	s := testserver.StartSSHD(t)
	cfg, dir := newRepo(t, s)
	ctx := context.Background()
	be, err := sftp.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	for _, d := range []string{dir, dir + "/keys", dir + "/data", dir + "/data/00", dir + "/data/ff", dir + "/locks"} {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, mode %v; want a directory 0700", d, err, fi.Mode())
		}
	}
	h := backend.Handle{Type: backend.PackFile, Name: strings.Repeat("ab", 32)}
	if err := be.Save(ctx, h, []byte("pack")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "data", "ab", h.Name))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("saved pack: %v, mode %v; want 0400", err, fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "data", "ab"))
	if len(entries) != 1 {
		t.Errorf("data/ab holds %d entries, want the pack alone (no temporary file)", len(entries))
	}

	// Create refuses an existing repository; Open finds it.
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	if _, err := sftp.Create(ctx, cfg); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over a repository: %v, want fs.ErrExist", err)
	}
	be2, err := sftp.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	be2.Close()

	// A temporary file left by a killed upload is cleaned when stale.
	stale := filepath.Join(dir, "data", "ab", h.Name+backend.TempMarker+"0123")
	if err := os.WriteFile(stale, []byte("x"), 0o400); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	tc, ok := backend.As[backend.TempCleaner](be)
	if !ok {
		t.Fatal("no TempCleaner")
	}
	if n, err := tc.RemoveStaleTemp(ctx, time.Hour); err != nil || n != 1 {
		t.Errorf("RemoveStaleTemp: %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file still there: %v", err)
	}
}

func TestLoadRangeIntoBuffer(t *testing.T) {
	s := testserver.StartSSHD(t)
	cfg, _ := newRepo(t, s)
	ctx := context.Background()
	be, err := sftp.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	h := backend.Handle{Type: backend.PackFile, Name: strings.Repeat("cd", 32)}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	rl, ok := backend.As[backend.RangeLoader](be)
	if !ok {
		t.Fatal("no RangeLoader")
	}
	buf := make([]byte, 2<<20+backend.RangeSlack)
	got, err := rl.LoadRange(ctx, h, 12345, 2<<20, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &buf[0] || string(got) != string(data[12345:12345+2<<20]) {
		t.Errorf("LoadRange: not the range, or not in the buffer")
	}
	// To the end (length 0): the size and the first bytes are asked for
	// together; the rest follows into the buffer when it has room.
	for _, off := range []int64{0, 1, int64(len(data)) - 100, int64(len(data))} {
		for _, room := range []int{0, 1000, len(data) + 1} {
			buf := make([]byte, room)
			got, err := rl.LoadRange(ctx, h, off, 0, buf)
			if err != nil || string(got) != string(data[off:]) {
				t.Fatalf("LoadRange (%d, 0) into %d bytes: %d bytes, %v", off, room, len(got), err)
			}
			if room > len(data) && len(got) > 0 && &got[0] != &buf[0] {
				t.Errorf("LoadRange (%d, 0): not in a buffer with room", off)
			}
		}
	}
	if _, err := rl.LoadRange(ctx, h, int64(len(data))+1, 0, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("LoadRange past the end: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestPackHandlesForgotten: pack files stay open across ranged loads, but
// a pack removed or saved again through the backend is never read through
// a handle opened before: a removed pack is missing, a replaced one reads
// its new bytes, on every connection.
func TestPackHandlesForgotten(t *testing.T) {
	s := testserver.StartSSHD(t)
	cfg, _ := newRepo(t, s)
	cfg.Connections = 2
	ctx := context.Background()
	be := create(t, cfg)
	h := backend.Handle{Type: backend.PackFile, Name: strings.Repeat("ab", 32)}
	old := []byte(strings.Repeat("old pack ", 1000))
	if err := be.Save(ctx, h, old); err != nil {
		t.Fatal(err)
	}
	// Loads at once, so that both connections open the pack.
	loadAll := func(want []byte) {
		t.Helper()
		errs := make(chan error, 16)
		for i := range 16 {
			go func() {
				off := int64(i * 100)
				got, err := be.Load(ctx, h, off, 50)
				if err == nil && string(got) != string(want[off:off+50]) {
					err = fmt.Errorf("load at %d: %q, want %q", off, got, want[off:off+50])
				}
				errs <- err
			}()
		}
		for range 16 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	loadAll(old)
	renewed := []byte(strings.Repeat("new pack ", 1000))
	if err := be.Save(ctx, h, renewed); err != nil {
		t.Fatal(err)
	}
	loadAll(renewed)
	if err := be.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := be.Load(ctx, h, int64(i), 10); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("load of a removed pack: %v, want fs.ErrNotExist", err)
		}
	}
}

// TestReconnect kills the server side of every connection between calls
// and in the middle of a transfer: the call that sees the connection end
// fails with a ConnectionLostError (not permanent), and the next call
// connects again.
func TestReconnect(t *testing.T) {
	s := testserver.StartSSHD(t)
	cfg, _ := newRepo(t, s)
	ctx := context.Background()
	be, err := sftp.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := backend.Handle{Type: backend.SnapshotFile, Name: strings.Repeat("01", 32)}
	if err := be.Save(ctx, h, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if n := s.KillSessions(); n == 0 {
		t.Fatal("no session to kill")
	}
	time.Sleep(200 * time.Millisecond) // let the client see the end
	if _, err := be.Load(ctx, h, 0, 0); err != nil {
		var lost *sftp.ConnectionLostError
		if !errors.As(err, &lost) {
			t.Fatalf("Load after the session was killed: %v, want a ConnectionLostError or success", err)
		}
	}
	got, err := be.Load(ctx, h, 0, 0)
	if err != nil || string(got) != "one" {
		t.Fatalf("Load after reconnecting: %q, %v", got, err)
	}

	// Mid-transfer: a large upload while the sessions are killed.
	big := make([]byte, 64<<20)
	bh := backend.Handle{Type: backend.PackFile, Name: strings.Repeat("ef", 32)}
	errc := make(chan error, 1)
	go func() { errc <- be.Save(ctx, bh, big) }()
	time.Sleep(100 * time.Millisecond)
	s.KillSessions()
	err = <-errc
	var lost *sftp.ConnectionLostError
	if err != nil && !errors.As(err, &lost) {
		t.Fatalf("Save interrupted: %v, want a ConnectionLostError", err)
	}
	if err := be.Save(ctx, bh, big); err != nil {
		t.Fatalf("Save after reconnecting: %v", err)
	}
	fi, err := be.Stat(ctx, bh)
	if err != nil || fi.Size != int64(len(big)) {
		t.Fatalf("Stat: %v, %v", fi, err)
	}
}

func TestConnectErrors(t *testing.T) {
	s := testserver.StartSSHD(t)
	ctx := context.Background()
	dir := filepath.Join(s.Dir, "repos", "errors")

	// A wrong host key.
	badKnown := filepath.Join(s.Dir, "known_hosts_wrong")
	other := filepath.Join(s.Dir, "other_key")
	if err := runCmd("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other); err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(other + ".pub")
	os.WriteFile(badKnown, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", s.Port, pub)), 0o600)

	tests := []struct {
		name, opt, val, want string
		permanent            bool
	}{
		{"unreachable", sftp.OptionArgs, "-F " + s.ConfigFile + " -o Port=1", "the host is unreachable", false},
		{"auth", sftp.OptionCommand, strings.Replace(s.Command(), s.KeyFile, other, 1), "authentication failed", true},
		{"host key", sftp.OptionArgs, "-F " + s.ConfigFile + " -o UserKnownHostsFile=" + badKnown, "host key", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := sftp.ParseLocation("sftp:"+testserver.SSHHost+":"+dir, map[string]string{tc.opt: tc.val})
			if err != nil {
				t.Fatal(err)
			}
			_, err = sftp.Open(ctx, cfg)
			var ce *sftp.ConnectError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) || ce.Permanent() != tc.permanent {
				t.Fatalf("Open: %v; want a ConnectError with %q, permanent %v", err, tc.want, tc.permanent)
			}
			t.Logf("%v", err)
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), cfg.Location) {
				t.Errorf("error is not one line naming the location: %q", err)
			}
		})
	}

	// A missing path: no repository there.
	cfg, _ := sftp.ParseLocation("sftp:"+testserver.SSHHost+":"+dir+"/missing", map[string]string{sftp.OptionArgs: s.SSHArgs()})
	if _, err := sftp.Open(ctx, cfg); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no repository at") {
		t.Errorf("Open of a missing path: %v", err)
	}

	// sftp.command replaces ssh's command line.
	cfg, _ = sftp.ParseLocation("sftp:ignored:"+dir+"/cmd", map[string]string{sftp.OptionCommand: s.Command()})
	be, err := sftp.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create with sftp.command: %v", err)
	}
	be.Close()
}

func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", name, err, out)
	}
	return nil
}

// TestStall pauses the server's side of the connection: the watchdog ends
// the connection after StallTimeout, the call fails with a
// ConnectionLostError instead of hanging, and the next call connects
// again.
func TestStall(t *testing.T) {
	s := testserver.StartSSHD(t)
	cfg, _ := newRepo(t, s)
	cfg.StallTimeout = time.Second
	ctx := context.Background()
	be, err := sftp.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := backend.Handle{Type: backend.SnapshotFile, Name: strings.Repeat("02", 32)}
	if err := be.Save(ctx, h, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if s.PauseSessions() == 0 {
		t.Fatal("no session to pause")
	}
	defer s.ResumeSessions()
	start := time.Now()
	_, err = be.Load(ctx, h, 0, 0)
	var lost *sftp.ConnectionLostError
	if !errors.As(err, &lost) || !strings.Contains(err.Error(), "no answer from the server") {
		t.Fatalf("Load from a hung server: %v, want a ConnectionLostError", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the watchdog took %v", d)
	}
	got, err := be.Load(ctx, h, 0, 0)
	if err != nil || string(got) != "two" {
		t.Fatalf("Load on a new connection: %q, %v", got, err)
	}

	// Close does not hang on a connection whose server hangs.
	if _, err := be.Stat(ctx, h); err != nil {
		t.Fatal(err)
	}
	s.PauseSessions()
	start = time.Now()
	be.Close()
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Close took %v", d)
	}
}

// TestConnectionsAndRates: at most Config.Connections ssh sessions carry
// many concurrent calls, and the upload rate paces the pipes.
func TestConnectionsAndRates(t *testing.T) {
	s := testserver.StartSSHD(t)
	cfg, _ := newRepo(t, s)
	cfg.Connections = 2
	ctx := context.Background()
	be := create(t, cfg)
	data := make([]byte, 4<<20)
	h := backend.Handle{Type: backend.PackFile, Name: strings.Repeat("aa", 32)}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			_, err := be.Load(ctx, h, 0, 0)
			errc <- err
		}()
	}
	most := 0
	for i := 0; i < 16; i++ {
		most = max(most, len(s.Sessions()))
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	// The second connection is dialled in the background while the
	// first carries the loads: wait for it.
	n := len(s.Sessions())
	for deadline := time.Now().Add(20 * time.Second); n < 2 && time.Now().Before(deadline); n = len(s.Sessions()) {
		time.Sleep(20 * time.Millisecond)
	}
	if most = max(most, n); n != 2 || most > 2 {
		t.Errorf("%d sessions after 16 concurrent loads (at most %d seen), want 2", n, most)
	}

	cfg2, _ := newRepo(t, s)
	cfg2.Location += "-paced"
	cfg2.Path += "-paced"
	cfg2.Rates.Upload = 1 << 20
	paced, err := sftp.Create(ctx, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer paced.Close()
	start := time.Now()
	if err := paced.Save(ctx, h, make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("2 MiB at 1 MiB/s took %v", d)
	}
}

// TestCallsDoNotWaitForDial: while one connection is live, calls go over it
// and the next connection is dialled in the background; no call waits for
// an SSH handshake (a second or more across a network).
func TestCallsDoNotWaitForDial(t *testing.T) {
	s := testserver.StartSSHD(t)
	cfg, _ := newRepo(t, s)
	dir := t.TempDir()
	// Every dial after the first waits until the test releases it.
	script := filepath.Join(dir, "ssh")
	err := os.WriteFile(script, []byte(`#!/bin/sh
if [ -e `+dir+`/dialled ]; then
	while [ ! -e `+dir+`/release ]; do sleep 0.05; done
fi
touch `+dir+`/dialled
exec `+s.Command()+"\n"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Command = script
	cfg.Connections = 3
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	be, err := sftp.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	defer os.WriteFile(filepath.Join(dir, "release"), nil, 0o600)

	h := backend.Handle{Type: backend.PackFile, Name: strings.Repeat("ab", 32)}
	if err := be.Save(ctx, h, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 32)
	for range 32 {
		go func() {
			_, err := be.Load(ctx, h, 0, 0)
			errc <- err
		}()
	}
	for range 32 {
		if err := <-errc; err != nil {
			t.Fatalf("a load while the other connections were still dialling: %v", err)
		}
	}
	if n := len(s.Sessions()); n != 1 {
		t.Errorf("%d sessions while the later dials wait, want 1", n)
	}
	// Released, the background dials complete and the calls spread.
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	for deadline := time.Now().Add(20 * time.Second); n < 3 && time.Now().Before(deadline); n = len(s.Sessions()) {
		if _, err := be.Load(ctx, h, 0, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n != 3 {
		t.Errorf("%d sessions once the dials were released, want 3", n)
	}
}
