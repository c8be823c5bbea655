package s3_test

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/s3"
)

// TestUploadStallEnds: an upload the server stops reading (its window
// stays closed) ends after the stall time-out with an error the retry
// layer retries, for a single PUT and for the parts of a multipart
// upload, instead of hanging.
func TestUploadStallEnds(t *testing.T) {
	srv := server(t)
	rec := newRecorder(t, srv.URL)
	release := make(chan struct{})
	defer close(release)
	rec.onRequest = func(r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/data/") {
			<-release // never reads the body
		}
	}
	ctx := backend.WithStallTimeout(context.Background(), 300*time.Millisecond)
	be := create(t, newBucket(t, rec.srv.URL, map[string]string{"s3.part-size": "64"}))
	defer be.Close()
	for _, n := range []int{48 << 20, 160 << 20} { // one PUT; three parts
		data := random(t, n)
		start := time.Now()
		err := be.Save(ctx, handleOf(backend.PackFile, data), data)
		if !errors.Is(err, backend.ErrUnreachable) {
			t.Errorf("save of %d MiB to a server that stopped reading: %v, want ErrUnreachable", n>>20, err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("the stalled save of %d MiB took %v", n>>20, d)
		}
	}
}

// TestAnswerStallEnds: an answer whose body stops halfway (a listing, an
// error answer, the data of a GET) ends after the stall time-out with an
// error the retry layer retries, instead of hanging: the SDK reads the
// body of listings and errors itself, past the response-header time-out.
func TestAnswerStallEnds(t *testing.T) {
	srv := server(t)
	rec := newRecorder(t, srv.URL)
	// The stall time-out of the answers is the one of the open.
	sctx := backend.WithStallTimeout(context.Background(), 300*time.Millisecond)
	be, err := s3.Create(sctx, newBucket(t, rec.srv.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	data := random(t, 1<<20)
	h := handleOf(backend.PackFile, data)
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	stalling := func(match func(*http.Request) bool) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.serve = func(w http.ResponseWriter, req *http.Request, proxy http.Handler) {
			if !match(req) {
				proxy.ServeHTTP(w, req)
				return
			}
			ans := httptest.NewRecorder()
			proxy.ServeHTTP(ans, req)
			body := ans.Body.Bytes()
			for k, v := range ans.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(ans.Code)
			_, _ = w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-req.Context().Done():
			}
		}
	}
	cases := []struct {
		name  string
		match func(*http.Request) bool
		op    func() error
	}{
		{"listing", func(r *http.Request) bool { return strings.Contains(r.URL.RawQuery, "list-type=2") },
			func() error { return be.List(sctx, backend.PackFile, func(backend.FileInfo) error { return nil }) }},
		{"error answer", func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/keys/")
		},
			func() error {
				_, err := be.Load(sctx, backend.Handle{Type: backend.KeyFile, Name: "missing"}, 0, 0)
				return err
			}},
		{"data", func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/data/")
		},
			func() error { _, err := be.Load(sctx, h, 0, 0); return err }},
	}
	for _, c := range cases {
		stalling(c.match)
		start := time.Now()
		err := c.op()
		// An error answer's status says what it is, whatever its body.
		if !errors.Is(err, backend.ErrUnreachable) && !(c.name == "error answer" && errors.Is(err, fs.ErrNotExist)) {
			t.Errorf("%s that stalls halfway: %v, want ErrUnreachable", c.name, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s that stalls halfway took %v", c.name, d)
		}
	}
}
