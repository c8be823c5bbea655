package s3_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"dj/backend"
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
