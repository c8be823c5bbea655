package rest_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dj/backend"
	"dj/backend/rest"
)

var fuzzMethods = []string{"GET", "HEAD", "POST", "DELETE", "PUT", "PATCH"}

// FuzzServerRequest sends dj serve's router (several repositories under
// one root) requests of any method, path and body: it never panics, and
// nothing is ever created or changed outside its root, whatever the path
// says (.., %2F, NUL, //, dot elements).
func FuzzServerRequest(f *testing.F) {
	base := f.TempDir()
	root := filepath.Join(base, "root")
	os.MkdirAll(root, 0o700)
	outside := filepath.Join(base, "outside")
	os.WriteFile(outside, []byte("keep"), 0o600)
	h, err := rest.NewMultiServer(rest.MultiOptions{Root: root, ServerOptions: rest.ServerOptions{Logf: func(string, ...any) {}}})
	if err != nil {
		f.Fatal(err)
	}
	data := []byte("a pack")
	for _, s := range []struct {
		m    uint8
		path string
		body []byte
	}{
		{2, "/r1/?create=true", nil}, {2, "/r1/data/" + hashName(data), data}, {0, "/r1/data/", nil},
		{2, "/../x/?create=true", nil}, {2, "/r1/..%2f..%2foutside", data}, {3, "/r1/data/../../../outside", nil},
		{2, "/a/b/c/?create=true", nil}, {2, "/r1/config", []byte("cfg")}, {0, "//r1//keys/", nil},
	} {
		f.Add(s.m, s.path, s.body)
	}
	f.Fuzz(func(t *testing.T, m uint8, target string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(target, "/") {
			return
		}
		req := &http.Request{
			Method: fuzzMethods[int(m)%len(fuzzMethods)], URL: u, RequestURI: target, Host: "dj",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		}
		req = req.WithContext(context.Background())
		h.ServeHTTP(httptest.NewRecorder(), req)
		entries, err := os.ReadDir(base)
		if err != nil || len(entries) != 2 {
			t.Fatalf("%s %q made something beside the root: %v %v", req.Method, target, entries, err)
		}
		if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
			t.Fatalf("%s %q changed a file outside the root", req.Method, target)
		}
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type()&fs.ModeSymlink != 0 {
				t.Fatalf("%s %q made a symlink %s", req.Method, target, p)
			}
			return nil
		})
	})
}

// FuzzClientListing: whatever a server answers to a listing (v1 names or
// v2 entries), the client passes on only valid names with sizes >= 0, and
// never panics.
func FuzzClientListing(f *testing.F) {
	id := strings.Repeat("ab", 32)
	f.Add([]byte(`[{"name":"`+id+`","size":12}]`), true)
	f.Add([]byte(`["`+id+`","../config","`+id+`/x"]`), false)
	f.Add([]byte(`[{"name":"../../etc","size":-1},{"name":"","size":1}]`), true)
	f.Add([]byte(`null`), true)
	f.Fuzz(func(t *testing.T, body []byte, v2 bool) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				w.Header().Set("Content-Length", "7")
				return
			}
			if v2 {
				w.Header().Set("Content-Type", "application/vnd.x.restic.rest.v2")
			}
			w.Write(body)
		}))
		defer srv.Close()
		c, err := rest.Open(context.Background(), srv.URL+"/", srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.List(context.Background(), backend.PackFile, func(fi backend.FileInfo) error {
			if (backend.Handle{Type: backend.PackFile, Name: fi.Name}).Validate() != nil || fi.Size < 0 {
				t.Fatalf("listing passed on %q (size %d)", fi.Name, fi.Size)
			}
			return nil
		})
	})
}
