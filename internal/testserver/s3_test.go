package testserver

import (
	"net/http"
	"strings"
	"testing"
)

// TestS3Server builds (once) and starts the S3 server and checks that it
// answers S3 requests. `make test` can run it first with a long -timeout,
// so that the one-time build (minutes on two cores) does not count
// against the timeout of the packages that use the server.
func TestS3Server(t *testing.T) {
	if testing.Short() {
		t.Skip("builds versitygw")
	}
	srv := StartS3Server(t)
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Unsigned: the server must refuse it, in S3's way.
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unsigned request: %s", resp.Status)
	}
	if got := resp.Header.Get("Content-Type"); !strings.Contains(got, "xml") {
		t.Errorf("unsigned request: Content-Type %q, want S3's XML error", got)
	}
	if len(srv.Env(t.TempDir())) == 0 || srv.Region == "" {
		t.Errorf("no client environment")
	}
}
