package integration

// End-to-end tests of dj on a real S3 server (versitygw, built from the
// module proxy by internal/testserver).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dj/internal/testserver"
)

var s3BucketSeq atomic.Int64

// s3Env starts an S3 server and returns an env whose repository is a new
// bucket on it, initialised with the options given (-o KEY=VALUE pairs).
func s3Env(t *testing.T, opts ...string) (*env, *testserver.S3Server, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts an S3 server (versitygw, built once from the Go module proxy)")
	}
	e := newEnv(t)
	srv := testserver.StartS3Server(t)
	e.extraEnv = append(e.extraEnv, srv.Env(e.dir)...)
	loc := fmt.Sprintf("s3:%s/dj-e2e-%d/repo", srv.URL, s3BucketSeq.Add(1))
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY="+loc)
	args := []string{"init"}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	r := e.run(args...)
	if r.code != 0 {
		t.Fatalf("dj init on %s: exit %d\n%s", loc, r.code, r.stderr)
	}
	return e, srv, loc
}

// TestS3EndToEnd: the life of a repository in a bucket: backup, restore
// byte for byte, a read through the mount, check --read-data, forget
// --prune, and a look behind dj at the bucket's layout.
func TestS3EndToEnd(t *testing.T) {
	e, srv, loc := s3Env(t)
	repositoryLife(t, e, 22_000_000) // several packs
	// The repository's layout in the bucket, as restic's.
	bucket := strings.Split(strings.TrimPrefix(loc, "s3:"+srv.URL+"/"), "/")[0]
	root := filepath.Join(srv.Dir, bucket, "repo")
	for _, p := range []string{"config", "keys", "data", "index", "snapshots"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("bucket layout: %v", err)
		}
	}
	packs, _ := filepath.Glob(filepath.Join(root, "data", "*", "*"))
	if len(packs) < 2 {
		t.Errorf("%d packs in data/XX/", len(packs))
	}
}

// TestS3BadInput: a missing bucket, a wrong secret and an unreachable
// endpoint each fail in one line that names the location, without a hang.
func TestS3BadInput(t *testing.T) {
	e, srv, loc := s3Env(t)
	missing := fmt.Sprintf("s3:%s/dj-no-such-bucket/repo", srv.URL)
	unreachable := "s3:http://" + testserver.FreeAddr(t) + "/bucket"
	tests := []struct {
		name string
		env  []string
		code int
		want string
	}{
		{"missing bucket", []string{"DJ_REPOSITORY=" + missing}, 10, "does not exist"},
		{"wrong secret", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, 21, "access denied"},
		{"unknown access key", []string{"AWS_ACCESS_KEY_ID=nobody"}, 21, "access denied"},
		{"unreachable", []string{"DJ_REPOSITORY=" + unreachable}, 20, "cannot reach"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.runEnv(append(tc.env, shortRetry), "snapshots")
			if r.code == 0 {
				t.Fatalf("dj snapshots succeeded:\n%s", r.stdout)
			}
			msg := strings.TrimSpace(r.stderr)
			if r.code != tc.code || !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") > 0 || !strings.Contains(msg, "s3:") || !strings.Contains(msg, map[bool]string{true: "dj init", false: "check "}[tc.code == 10]) {
				t.Errorf("exit %d, stderr %q: want exit %d and one line naming the location, saying %q and what to check", r.code, msg, tc.code, tc.want)
			}
		})
	}
	_ = loc
}

// TestS3ObjectLock: a repository written under object lock: backups work,
// forget says which snapshots stay under retention, prune completes and
// says what the storage keeps, and check passes.
func TestS3ObjectLock(t *testing.T) {
	e, _, _ := s3Env(t, "s3.object-lock=1")
	lock := []string{"-o", "s3.object-lock=1"}
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "a"), bytes.Repeat([]byte("a"), 3<<20))
	e.must(append([]string{"backup"}, append(lock, src)...)...)
	writeFile(t, filepath.Join(src, "b"), bytes.Repeat([]byte("b"), 3<<20))
	e.must(append([]string{"backup"}, append(lock, src)...)...)
	out := e.must(append([]string{"forget", "--keep-last", "1", "--prune"}, lock...)...)
	if !strings.Contains(out, "retention") {
		t.Errorf("forget --prune under object lock says nothing of the retention:\n%s", out)
	}
	e.must(append([]string{"check"}, lock...)...)
	var snaps []json.RawMessage
	if err := json.Unmarshal([]byte(e.must("snapshots", "--json")), &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 {
		t.Errorf("%d snapshots after forget under retention, want both still there", len(snaps))
	}
}

// TestS3LimitDownload: --limit-download paces a restore from S3 (whose
// ranged reads once bypassed the limiter).
func TestS3LimitDownload(t *testing.T) {
	e, _, _ := s3Env(t)
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f.bin"), randomData(77, 3<<20))
	e.must("backup", src)
	start := time.Now()
	e.must("--no-cache", "--limit-download", "1024", "restore", "latest", "--target", filepath.Join(e.dir, "r"))
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("restore of 3 MiB at 1024 KiB/s took %v", d)
	}
	start = time.Now()
	e.must("--no-cache", "restore", "latest", "--target", filepath.Join(e.dir, "r2"))
	t.Logf("the same restore without a limit took %v", time.Since(start))
}
