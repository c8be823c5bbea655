package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// RestServerVersion is the version of restic's rest-server the tests run.
const RestServerVersion = "v0.14.0"

// RestServerBinary returns restic's rest-server at RestServerVersion, built
// once from the Go module proxy and kept under BinDir (`go install` of it is
// refused by the proxy's checks; `go mod download` and a build from the
// module cache work).
func RestServerBinary(t TB) string {
	t.Helper()
	bin := filepath.Join(BinDir(), "rest-server-"+RestServerVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/restic/rest-server@"+RestServerVersion).Output()
	if err != nil {
		t.Fatalf("download rest-server %s: %v", RestServerVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("download rest-server %s: no module directory in %s", RestServerVersion, out)
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "./cmd/rest-server")
	cmd.Dir = mod.Dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build rest-server %s: %v\n%s", RestServerVersion, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// StartRestServer runs restic's rest-server on a free port of 127.0.0.1,
// serving dir with the given extra arguments (--no-auth unless they hold
// --htpasswd-file), until the test ends. It returns the server's URL,
// ending in "/".
func StartRestServer(t TB, dir string, args ...string) string {
	t.Helper()
	bin := RestServerBinary(t)
	addr := FreeAddr(t)
	argv := []string{"--path", dir, "--listen", addr}
	if !strings.Contains(strings.Join(args, " "), "--htpasswd-file") {
		argv = append(argv, "--no-auth")
	}
	var log bytes.Buffer
	cmd := exec.Command(bin, append(argv, args...)...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	url := "http://" + addr + "/"
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url + "config")
		if err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("rest-server did not start:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BinDir is where test servers built from source are kept between runs:
// $DJ_TESTBIN, or dj-testbin in the system's temporary directory for
// long-lived files (/var/tmp).
func BinDir() string {
	if d := os.Getenv("DJ_TESTBIN"); d != "" {
		_ = os.MkdirAll(d, 0o755)
		return d
	}
	d := filepath.Join("/var/tmp", "dj-testbin")
	if err := os.MkdirAll(d, 0o755); err != nil {
		d = filepath.Join(os.TempDir(), "dj-testbin")
		_ = os.MkdirAll(d, 0o755)
	}
	return d
}

// FreeAddr returns a free TCP address on 127.0.0.1.
func FreeAddr(t TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
