package rest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/local"
	"dj/backend/mem"
	"dj/backend/rest"
)

func hashName(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func pack(data []byte) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: hashName(data)}
}

// request sends a raw request to h (no client-side path cleaning) and
// returns the recorded answer.
func request(h http.Handler, method, target string, body []byte, header map[string]string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestUploadMustMatchName(t *testing.T) {
	be := mem.New()
	h := rest.NewServer(be, rest.ServerOptions{})
	data := []byte("some pack")
	wrong := strings.Repeat("ab", 32)
	for _, typ := range []string{"data", "keys", "index", "snapshots", "locks"} {
		w := request(h, "POST", "/"+typ+"/"+wrong, data, nil)
		if w.Code != http.StatusBadRequest {
			t.Errorf("POST /%s/ with a wrong hash: %d, want 400", typ, w.Code)
		}
		w = request(h, "POST", "/"+typ+"/"+hashName(data), data, nil)
		if w.Code != http.StatusOK {
			t.Errorf("POST /%s/ with the right hash: %d %s", typ, w.Code, w.Body)
		}
	}
	n := 0
	for _, typ := range backend.AllFileTypes {
		_ = be.List(context.Background(), typ, func(fi backend.FileInfo) error {
			if fi.Name == wrong {
				t.Errorf("%s/%s was stored despite the wrong hash", typ, wrong)
			}
			n++
			return nil
		})
	}
	if n != 5 {
		t.Errorf("%d files stored, want 5", n)
	}
	// The config is not named by its hash.
	if w := request(h, "POST", "/config", []byte("anything"), nil); w.Code != http.StatusOK {
		t.Errorf("POST /config: %d", w.Code)
	}
}

func TestPaths(t *testing.T) {
	h := rest.NewServer(mem.New(), rest.ServerOptions{})
	id := strings.Repeat("0", 64)
	tests := []struct {
		method, target string
		code           int
	}{
		{"GET", "/", http.StatusMethodNotAllowed},
		{"POST", "/", http.StatusBadRequest},
		{"POST", "/?create=false", http.StatusBadRequest},
		{"POST", "/?create=true", http.StatusOK},
		{"PUT", "/config", http.StatusMethodNotAllowed},
		{"GET", "/config", http.StatusNotFound},
		{"HEAD", "/config", http.StatusNotFound},
		{"DELETE", "/config", http.StatusNotFound},
		{"GET", "/config/", http.StatusNotFound},
		{"GET", "/data/", http.StatusOK},
		{"HEAD", "/data/", http.StatusMethodNotAllowed},
		{"POST", "/data/", http.StatusMethodNotAllowed},
		{"GET", "/data", http.StatusNotFound},
		{"GET", "/bogus/", http.StatusNotFound},
		{"GET", "/data/" + id, http.StatusNotFound},
		{"GET", "/data/" + id[:63], http.StatusBadRequest},
		{"POST", "/data/" + id + "0", http.StatusBadRequest},
		{"GET", "/data/" + strings.ToUpper(strings.Repeat("a", 64)), http.StatusBadRequest},
		{"GET", "/data/..", http.StatusBadRequest},
		{"GET", "/data/00/" + id, http.StatusNotFound},
		{"GET", "/data/../config", http.StatusNotFound},
		{"GET", "/data/..%2fconfig", http.StatusBadRequest},
		{"GET", "/%64ata/", http.StatusBadRequest},
		{"GET", "//data/", http.StatusNotFound},
		{"PATCH", "/data/" + id, http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		if w := request(h, tc.method, tc.target, nil, nil); w.Code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.target, w.Code, tc.code)
		}
	}
}

func TestListingVersions(t *testing.T) {
	be := mem.New()
	data := []byte("x")
	if err := be.Save(context.Background(), pack(data), data); err != nil {
		t.Fatal(err)
	}
	h := rest.NewServer(be, rest.ServerOptions{})

	w := request(h, "GET", "/data/", nil, nil)
	var names []string
	if ct := w.Header().Get("Content-Type"); ct != "application/vnd.x.restic.rest.v1" {
		t.Errorf("v1 listing Content-Type %q", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &names); err != nil || len(names) != 1 || names[0] != hashName(data) {
		t.Errorf("v1 listing %s: %v", w.Body, err)
	}

	w = request(h, "GET", "/data/", nil, map[string]string{"Accept": "application/vnd.x.restic.rest.v2"})
	var entries []struct {
		Name  string
		Size  int64
		MTime time.Time
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/vnd.x.restic.rest.v2" {
		t.Errorf("v2 listing Content-Type %q", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &entries); err != nil || len(entries) != 1 ||
		entries[0].Name != hashName(data) || entries[0].Size != 1 || time.Since(entries[0].MTime) > time.Minute {
		t.Errorf("v2 listing %s: %+v, %v", w.Body, entries, err)
	}
	// An empty listing is an empty array, not null.
	if w := request(h, "GET", "/index/", nil, nil); strings.TrimSpace(w.Body.String()) != "[]" {
		t.Errorf("empty v1 listing: %q", w.Body)
	}

	// A client facing a version-1-only server still gets sizes.
	v1only := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Accept")
		h.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(v1only)
	defer srv.Close()
	c, err := rest.Create(t.Context(), srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []backend.FileInfo
	if err := c.List(t.Context(), backend.PackFile, func(fi backend.FileInfo) error {
		got = append(got, fi)
		return nil
	}); err != nil || len(got) != 1 || got[0].Size != 1 || got[0].Name != hashName(data) {
		t.Errorf("List over v1: %+v, %v", got, err)
	}
}

func TestRangeAnswers(t *testing.T) {
	be := mem.New()
	data := []byte("0123456789")
	h := pack(data)
	if err := be.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	srv := rest.NewServer(be, rest.ServerOptions{})
	target := "/data/" + h.Name
	tests := []struct {
		rng, body, contentRange string
		code                    int
	}{
		{"", "0123456789", "", 200},
		{"bytes=2-4", "234", "bytes 2-4/10", 206},
		{"bytes=8-", "89", "bytes 8-9/10", 206},
		{"bytes=8-100", "89", "bytes 8-9/10", 206},
		{"bytes=-3", "789", "bytes 7-9/10", 206},
		{"bytes=10-", "Requested Range Not Satisfiable\n", "bytes */10", 416},
		{"bytes=0-1,3-4", "0123456789", "", 200},
	}
	for _, tc := range tests {
		w := request(srv, "GET", target, nil, map[string]string{"Range": tc.rng})
		if w.Code != tc.code || w.Body.String() != tc.body || w.Header().Get("Content-Range") != tc.contentRange {
			t.Errorf("Range %q: %d %q %q, want %d %q %q", tc.rng, w.Code, w.Body, w.Header().Get("Content-Range"),
				tc.code, tc.body, tc.contentRange)
		}
	}
	w := request(srv, "HEAD", target, nil, nil)
	if w.Code != 200 || w.Header().Get("Content-Length") != "10" || w.Header().Get("Last-Modified") == "" {
		t.Errorf("HEAD: %d %v", w.Code, w.Header())
	}
}

func TestAppendOnly(t *testing.T) {
	ctx := t.Context()
	be := mem.New()
	url := serve(t, be, rest.ServerOptions{AppendOnly: true})
	c, err := rest.Create(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := backend.Handle{Type: backend.ConfigFile}
	if err := c.Save(ctx, cfg, []byte("config")); err != nil {
		t.Fatalf("first config: %v", err)
	}
	if err := c.Save(ctx, cfg, []byte("evil")); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("replacing the config: %v, want fs.ErrPermission", err)
	}
	if err := c.Remove(ctx, cfg); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("removing the config: %v, want fs.ErrPermission", err)
	}
	if got, _ := be.Load(ctx, cfg, 0, 0); string(got) != "config" {
		t.Errorf("config is now %q", got)
	}
	for _, typ := range []backend.FileType{backend.PackFile, backend.IndexFile, backend.SnapshotFile, backend.KeyFile, backend.LockFile} {
		data := []byte("file of type " + string(typ))
		h := backend.Handle{Type: typ, Name: hashName(data)}
		if err := c.Save(ctx, h, data); err != nil {
			t.Fatalf("Save %v: %v", h, err)
		}
		// A retried upload succeeds and changes nothing.
		if err := c.Save(ctx, h, data); err != nil {
			t.Errorf("Save %v again: %v", h, err)
		}
		err := c.Remove(ctx, h)
		if typ == backend.LockFile {
			if err != nil {
				t.Errorf("Remove %v: %v (locks may be removed)", h, err)
			}
			continue
		}
		if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("Remove %v: %v, want fs.ErrPermission mentioning append-only", h, err)
		}
		if _, err := be.Stat(ctx, h); err != nil {
			t.Errorf("%v is gone: %v", h, err)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	be := mem.New()
	url := serve(t, be, rest.ServerOptions{MaxBodySize: 1000})
	c, err := rest.Create(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1001)
	err = c.Save(t.Context(), pack(big), big)
	var se *rest.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusRequestEntityTooLarge || !se.Permanent() {
		t.Errorf("Save above the limit: %v, want a permanent 413", err)
	}
	// Without Content-Length (chunked), the limit holds too.
	srv := rest.NewServer(be, rest.ServerOptions{MaxBodySize: 1000})
	req := httptest.NewRequest("POST", "/data/"+pack(big).Name, io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, req)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked upload above the limit: %d", w.Code)
	}
	ok := make([]byte, 1000)
	if err := c.Save(t.Context(), pack(ok), ok); err != nil {
		t.Errorf("Save at the limit: %v", err)
	}
}

// fullBackend is a backend whose disk is full.
type fullBackend struct{ backend.Backend }

func (fullBackend) Save(context.Context, backend.Handle, []byte) error {
	return fmt.Errorf("save: %w", &fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC})
}

func TestDiskFull(t *testing.T) {
	var logged bytes.Buffer
	url := serve(t, fullBackend{mem.New()}, rest.ServerOptions{Logf: func(f string, a ...any) { fmt.Fprintf(&logged, f, a...) }})
	c, err := rest.Create(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("data")
	err = c.Save(t.Context(), pack(data), data)
	var se *rest.StatusError
	if !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &se) || se.Code != http.StatusInsufficientStorage ||
		!se.Permanent() || !strings.Contains(err.Error(), "disk is full") {
		t.Errorf("Save on a full server: %v, want 507 and ENOSPC", err)
	}
	if !strings.Contains(logged.String(), "no space left") {
		t.Errorf("server log %q does not mention the full disk", logged.String())
	}
}

func TestOpenCreate(t *testing.T) {
	ctx := t.Context()
	l := local.New(filepath.Join(t.TempDir(), "repo"))
	url := serve(t, l, rest.ServerOptions{Init: l.Init})
	_, err := rest.Open(ctx, url, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no repository at rest:"+url) {
		t.Errorf("Open before Create: %v", err)
	}
	c, err := rest.Create(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(l.Location(), "data", "ff")); err != nil {
		t.Errorf("Create did not lay out the directory: %v", err)
	}
	if err := c.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	if _, err := rest.Create(ctx, url, nil); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create twice: %v, want fs.ErrExist", err)
	}
	if _, err := rest.Open(ctx, url, nil); err != nil {
		t.Errorf("Open: %v", err)
	}
	for _, bad := range []string{"ftp://host/", "http://", "http://h/?x=1", "::"} {
		if _, err := rest.Open(ctx, bad, nil); err == nil {
			t.Errorf("Open(%q): no error", bad)
		}
	}
	// Nobody listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := rest.Open(ctx, "http://"+addr+"/", nil); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open with no server: %v", err)
	}
}

func TestInitFailure(t *testing.T) {
	url := serve(t, mem.New(), rest.ServerOptions{
		Init: func(context.Context) error { return errors.New("permission denied") },
		Logf: func(string, ...any) {},
	})
	if _, err := rest.Create(t.Context(), url, nil); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("Create with a failing Init: %v", err)
	}
}

// TestDroppedConnection checks that a body cut short by the network is a
// transient error, not "past the end of the file".
func TestDroppedConnection(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1000)
	h := pack(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "HEAD":
			w.Header().Set("Content-Length", "1000")
		case "GET":
			hj, _ := w.(http.Hijacker)
			conn, buf, _ := hj.Hijack()
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n%s", data[:10])
			buf.Flush()
			conn.Close()
		}
	}))
	defer srv.Close()
	c, err := rest.Open(t.Context(), srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Load(t.Context(), h, 0, 0)
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load over a dropped connection: %v, want a transient error", err)
	}
	if !strings.Contains(err.Error(), "connection lost") {
		t.Errorf("error %q does not say the connection was lost", err)
	}
}

// TestAbortedUpload sends half a body and hangs up: nothing is stored.
func TestAbortedUpload(t *testing.T) {
	be := mem.New()
	url := serve(t, be, rest.ServerOptions{Logf: func(string, ...any) {}})
	data := bytes.Repeat([]byte("y"), 1000)
	conn, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /data/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n%s", hashName(data), data[:500])
	conn.Close()
	time.Sleep(100 * time.Millisecond)
	// A later complete upload of the same file succeeds.
	c, err := rest.Create(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(t.Context(), pack(data)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an aborted upload left a file: %v", err)
	}
	if err := c.Save(t.Context(), pack(data), data); err != nil {
		t.Errorf("Save after an aborted upload: %v", err)
	}
}

// TestAbortedUploadKeepsRetry: an upload that hangs up after a retry of
// the same file succeeded must not take the retry's file with it
// (rest-server #142), whether the server streams to a temporary file
// (local) or buffers the body (mem).
func TestAbortedUploadKeepsRetry(t *testing.T) {
	for _, tc := range []struct {
		name string
		be   func(t *testing.T) backend.Backend
	}{
		{"local", func(t *testing.T) backend.Backend { return local.New(filepath.Join(t.TempDir(), "repo")) }},
		{"mem", func(t *testing.T) backend.Backend { return mem.New() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := tc.be(t)
			opts := rest.ServerOptions{Logf: func(string, ...any) {}}
			if l, ok := be.(*local.Local); ok {
				opts.Init = l.Init
			}
			url := serve(t, be, opts)
			data := bytes.Repeat([]byte("r"), 100000)
			conn, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
			if err != nil {
				t.Fatal(err)
			}
			// The first attempt stalls half-way ...
			fmt.Fprintf(conn, "POST /data/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", hashName(data), len(data), data[:len(data)/2])
			time.Sleep(100 * time.Millisecond)
			// ... the client gives up on it and retries, successfully ...
			c, err := rest.Create(t.Context(), url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Save(t.Context(), pack(data), data); err != nil {
				t.Fatalf("the retry: %v", err)
			}
			// ... and then the first attempt's connection drops.
			conn.Close()
			time.Sleep(200 * time.Millisecond)
			got, err := c.Load(t.Context(), pack(data), 0, 0)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after the aborted first attempt the retried file is %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestCanceledUpload(t *testing.T) {
	be := mem.New()
	url := serve(t, be, rest.ServerOptions{})
	c, err := rest.Create(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	big := make([]byte, 64<<20)
	err = c.Save(ctx, pack(big), big)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Save past its deadline: %v, want context.DeadlineExceeded", err)
	}
}

// TestResticClient runs restic itself against dj's server: init, backup,
// check --read-data, restore. Skipped when restic is not installed.
func TestResticClient(t *testing.T) {
	restic, err := exec.LookPath("restic")
	if err != nil || testing.Short() {
		t.Skip("restic not installed, or -short")
	}
	dir := t.TempDir()
	l := local.New(filepath.Join(dir, "repo"))
	url := serve(t, l, rest.ServerOptions{Init: l.Init, AppendOnly: true, Users: map[string]string{"u": "p"}})
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("restic talks to dj "), 100000)
	if err := os.WriteFile(filepath.Join(src, "file"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), restic, append([]string{"--no-cache", "-r", "rest:http://u:p@" + strings.TrimPrefix(url, "http://")}, args...)...)
		cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=pw", "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("restic %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("init")
	run("backup", src)
	run("check", "--read-data")
	run("restore", "latest", "--target", filepath.Join(dir, "out"))
	got, err := os.ReadFile(filepath.Join(dir, "out", src, "file"))
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("restored file: %d bytes, %v", len(got), err)
	}
	// The layout on disk is restic's.
	var packs int
	_ = filepath.WalkDir(filepath.Join(l.Location(), "data"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			packs++
		}
		return nil
	})
	if packs == 0 {
		t.Errorf("no packs under data/")
	}
}
