package integration

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// serve starts `dj serve` on a free loopback port and returns its URL.
func (e *env) serve(args ...string) string {
	e.t.Helper()
	addr := freePort(e.t)
	dir := filepath.Join(e.dir, "served")
	var log bytes.Buffer
	cmd := exec.Command(e.bin, append([]string{"serve", "--path", dir, "--listen", addr}, args...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/config")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("dj serve did not start:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr + "/"
}

func TestRESTServerRoundTrip(t *testing.T) {
	e := newEnv(t)
	url := e.serve()
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url)
	src := filepath.Join(e.dir, "src")
	data := make([]byte, 5<<20)
	for i := range data {
		data[i] = byte(i * 31 >> 7)
	}
	writeFile(t, filepath.Join(src, "a", "big"), data)
	writeFile(t, filepath.Join(src, "b"), []byte("small"))

	r := e.run("snapshots")
	if r.code != 10 {
		t.Fatalf("snapshots before init over REST: exit %d, want 10\n%s", r.code, r.stderr)
	}
	e.must("init")
	e.must("backup", src)
	e.must("backup", src)
	target := filepath.Join(e.dir, "restored")
	e.must("restore", "latest", "--target", target)
	got, err := os.ReadFile(filepath.Join(target, src, "a", "big"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restore over REST: %v", err)
	}
	if out := e.must("check", "--read-data"); !strings.Contains(out, "no errors") {
		t.Fatalf("check over REST: %s", out)
	}
}

func TestRESTAppendOnly(t *testing.T) {
	e := newEnv(t)
	url := e.serve("--append-only")
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url)
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"))
	e.must("init")
	e.must("backup", src)
	out := e.must("snapshots", "--json")
	id := out[strings.Index(out, `"short_id": "`)+13:][:8]
	r := e.run("forget", id)
	if r.code == 0 {
		t.Fatal("forget succeeded on an append-only server")
	}
	oneLine(t, r)
	if n := strings.Count(e.must("snapshots", "--json"), `"short_id"`); n != 1 {
		t.Fatalf("%d snapshots after a refused forget", n)
	}
}
