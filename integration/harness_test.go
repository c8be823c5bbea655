// Package integration holds dj's end-to-end tests: they build the real
// binary and run it against real directories, real FUSE mounts and real
// servers on 127.0.0.1, as a user would.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	djPath    string
	buildErr  error
)

// djBinary builds bin/dj once per test run; with DJ_TEST_RACE=1, with the
// race detector.
func djBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dj-integration-bin")
		if err != nil {
			buildErr = err
			return
		}
		// Readable by every user: some tests run dj as nobody.
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		djPath = filepath.Join(dir, "dj")
		args := []string{"build", "-o", djPath}
		if os.Getenv("DJ_TEST_RACE") == "1" {
			// The battery under the race detector (issue 12).
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "../cmd/dj")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build dj: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return djPath
}

// env is one repository and password for a test.
type env struct {
	t        *testing.T
	bin      string
	repo     string
	password string
	dir      string
	extraEnv []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, bin: djBinary(t), repo: filepath.Join(dir, "repo"), dir: dir, password: "correct horse"}
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(e.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extraEnv = []string{"DJ_REPOSITORY=" + e.repo, "DJ_PASSWORD_FILE=" + pwFile, "DJ_INSECURE_TEST_KDF=1"}
	return e
}

// result is a finished dj run.
type result struct {
	stdout, stderr string
	code           int
}

func (e *env) run(args ...string) result {
	return e.runEnv(nil, args...)
}

func (e *env) runEnv(extra []string, args ...string) result {
	e.t.Helper()
	return e.runStdin("", extra, args...)
}

// runStdin runs dj with stdin as its standard input and extra added to its
// environment.
func (e *env) runStdin(stdin string, extra []string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = append(append(cleanEnv(), e.extraEnv...), extra...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	res := result{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		e.t.Fatalf("run dj %v: %v", args, err)
	}
	if strings.Contains(res.stderr, "panic") || strings.Contains(res.stderr, "goroutine ") {
		e.t.Fatalf("dj %v panicked:\n%s", args, res.stderr)
	}
	return res
}

// must runs dj and fails the test unless it exits 0.
func (e *env) must(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("dj %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// cleanEnv is the process environment without DJ_ variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DJ_") {
			out = append(out, kv)
		}
	}
	return out
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the CI and developer machines run tests as root)")
	}
}

func requireCmd(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed: run `make test-deps` (as root)", name)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func shell(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}
