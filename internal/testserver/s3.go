package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// S3ServerVersion is the version of versitygw (Apache-2.0; S3 on a posix
// directory) the tests run as their S3 server.
const S3ServerVersion = "v1.8.0"

// s3ServerModule is the module of the S3 server.
const s3ServerModule = "github.com/versity/versitygw"

// S3ServerBinary returns versitygw at S3ServerVersion, built once from the
// Go module proxy (`go mod download` of the pinned version and a build of
// its cmd from the module cache) and kept under BinDir, so that later runs
// skip the build (several minutes on two cores). Concurrent test binaries
// build it once: the build holds a lock file.
func S3ServerBinary(t TB) string {
	t.Helper()
	bin := filepath.Join(BinDir(), "versitygw-"+S3ServerVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin // built by another test binary while this one waited
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", s3ServerModule+"@"+S3ServerVersion).Output()
	if err != nil {
		t.Fatalf("download %s %s: %v", s3ServerModule, S3ServerVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("download %s %s: no module directory in %s", s3ServerModule, S3ServerVersion, out)
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, "./cmd/versitygw")
	cmd.Dir = mod.Dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "CGO_ENABLED=0")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		t.Fatalf("build %s %s: %v\n%s", s3ServerModule, S3ServerVersion, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built versitygw %s in %v", S3ServerVersion, time.Since(start).Round(time.Second))
	return bin
}

// S3Server is a running versitygw on 127.0.0.1, serving buckets from a
// directory of the test, with object versioning (and so object lock)
// available.
type S3Server struct {
	// URL is the endpoint, http://127.0.0.1:PORT.
	URL string
	// Addr is 127.0.0.1:PORT.
	Addr string
	// AccessKey, SecretKey and Region are the credentials of the root user.
	AccessKey, SecretKey, Region string
	// Dir holds the buckets, one directory each.
	Dir string

	cmd      *exec.Cmd
	log      *SyncBuffer
	stopOnce sync.Once
}

// StartS3Server runs versitygw on a free port of 127.0.0.1 until the test
// ends.
func StartS3Server(t TB) *S3Server {
	t.Helper()
	bin := S3ServerBinary(t)
	dir := t.TempDir()
	s := &S3Server{
		Addr:      FreeAddr(t),
		AccessKey: "djtestaccess",
		SecretKey: "djtestsecret-0123456789",
		Region:    "us-east-1",
		Dir:       filepath.Join(dir, "buckets"),
		log:       &SyncBuffer{},
	}
	s.URL = "http://" + s.Addr
	versions := filepath.Join(dir, "versions")
	for _, d := range []string{s.Dir, versions} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.cmd = exec.Command(bin,
		"--port", s.Addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", s.Region, "--keep-alive", "--quiet",
		"posix", "--versioning-dir", versions, s.Dir)
	// The server reads no AWS or VGW settings of the test's environment.
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) || s.cmd.ProcessState != nil {
			t.Fatalf("versitygw did not start on %s:\n%s", s.Addr, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the server (SIGKILL: a crash, as a test of a dying server
// wants); it is called when the test ends, and may be called before.
func (s *S3Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
}

// Log returns what the server printed.
func (s *S3Server) Log() string { return s.log.String() }

// Env returns the environment of a client of the server: its credentials
// and region, no shared AWS files of the user, and no look-up of an EC2
// instance's metadata (which would leave the machine). dir is where the
// empty AWS config files are (a temporary directory of the test).
func (s *S3Server) Env(dir string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "aws-credentials"),
	}
}

// SetEnv sets Env in the test's own process (t.Setenv), for tests that
// open the backend in process; it also clears the AWS variables that
// would override it.
func (s *S3Server) SetEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for _, kv := range s.Env(t.TempDir()) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// SyncBuffer is a bytes.Buffer safe for the writes of a process's output
// and reads of a test.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
