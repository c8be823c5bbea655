package rest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"dj/backend"
)

// TestUploadStallEnds: a server that stops reading an upload (its
// connection's window stays closed) ends the save within the stall
// time-out, with an error the retry layer retries, instead of hanging.
func TestUploadStallEnds(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodHead:
			w.Header().Set("Content-Length", "10")
		case http.MethodPost:
			<-release // never reads the body
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, c := openStalling(t, srv.URL)
	start := time.Now()
	err := c.Save(ctx, backend.Handle{Type: backend.PackFile, Name: "aa"}, make([]byte, 128<<20))
	if !errors.Is(err, backend.ErrUnreachable) {
		t.Fatalf("save to a server that stopped reading: %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stalled save took %v", d)
	}
	// A save the server takes goes through.
	release2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "10")
		}
	}))
	defer release2.Close()
	c2, err := Open(ctx, release2.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Save(ctx, backend.Handle{Type: backend.PackFile, Name: "aa"}, make([]byte, 8<<20)); err != nil {
		t.Errorf("save: %v", err)
	}
}

// TestErrorAnswerStallEnds: an error answer whose body stops after its
// first bytes (the client reads its start for the message) ends within the
// stall time-out instead of hanging.
func TestErrorAnswerStallEnds(t *testing.T) {
	srv := stallingServer(t, http.StatusInternalServerError, "an error message that st")
	ctx, c := openStalling(t, srv.URL)
	for _, op := range []struct {
		name string
		run  func() error
	}{
		{"load", func() error {
			_, err := c.Load(ctx, backend.Handle{Type: backend.PackFile, Name: "aa"}, 0, 0)
			return err
		}},
		{"list", func() error {
			return c.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil })
		}},
		{"remove", func() error { return c.Remove(ctx, backend.Handle{Type: backend.PackFile, Name: "aa"}) }},
	} {
		start := time.Now()
		err := op.run()
		if err == nil {
			t.Errorf("%s answered 500: no error", op.name)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s whose error answer stalled took %v", op.name, d)
		}
	}
}

// stallingServer answers HEAD with a config of 10 bytes, and every other
// request with status and the first bytes of a 1000-byte body, then
// nothing until the test ends or the client hangs up.
func stallingServer(t *testing.T, status int, first string) *httptest.Server {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "10")
			return
		}
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(first))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	return srv
}

// openStalling opens a client of url whose stall time-out is 300 ms, and
// the context that carries it.
func openStalling(t *testing.T, url string) (context.Context, *Client) {
	t.Helper()
	ctx := backend.WithStallTimeout(context.Background(), 300*time.Millisecond)
	c, err := Open(ctx, url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, c
}

// TestStallTimeoutOfOpen: the stall time-out the client was opened with
// holds for requests whose context does not carry one (a mount's reads run
// under go-fuse's contexts): a download that stops after its first bytes
// ends within it, not after DefaultStallTimeout.
func TestStallTimeoutOfOpen(t *testing.T) {
	srv := stallingServer(t, http.StatusOK, "the first bytes")
	_, c := openStalling(t, srv.URL)
	start := time.Now()
	_, err := c.Load(context.Background(), backend.Handle{Type: backend.PackFile, Name: "aa"}, 0, 0)
	if !errors.Is(err, backend.ErrUnreachable) {
		t.Fatalf("load whose answer stalled: %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stalled load took %v", d)
	}
}
