package rclone_test

import (
	"context"
	"errors"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/limit"
	"dj/backend/rclone"
)

// needRclone skips the test when rclone is not installed (make test
// installs it).
func needRclone(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("rclone"); err != nil {
		if testing.Short() {
			t.Skip("rclone not installed")
		}
		t.Fatal("rclone not installed (apt-get install rclone; make test installs it)")
	}
}

// TestConformance runs the backend suite against a real rclone serving a
// local directory through its restic server over stdio.
func TestConformance(t *testing.T) {
	needRclone(t)
	conformance.Run(t, func(t *testing.T) backend.Backend {
		cfg := rclone.Config{Remote: filepath.Join(t.TempDir(), "repo")}
		b, err := rclone.Create(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	})
}

func TestOpenMissing(t *testing.T) {
	needRclone(t)
	_, err := rclone.Open(context.Background(), rclone.Config{Remote: filepath.Join(t.TempDir(), "none")})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open of a missing repository: %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "rclone:") || strings.Contains(err.Error(), "http://rclone") {
		t.Fatalf("error does not name the rclone location: %v", err)
	}
}

func TestMissingProgram(t *testing.T) {
	_, err := rclone.Open(context.Background(), rclone.Config{Remote: t.TempDir(), Program: "/nonexistent/rclone"})
	if err == nil || !strings.Contains(err.Error(), "rclone.program") {
		t.Fatalf("missing program: %v", err)
	}
}

func TestParseLocation(t *testing.T) {
	cases := []struct {
		loc     string
		opts    map[string]string
		want    rclone.Config
		wantErr bool
	}{
		{loc: "rclone:b2:bucket/dir", want: rclone.Config{Remote: "b2:bucket/dir"}},
		{loc: "rclone:/srv/repo", want: rclone.Config{Remote: "/srv/repo"}},
		{loc: "rclone:r:p", opts: map[string]string{"rclone.program": "/opt/rclone", "rclone.args": "serve restic --stdio --b2-hard-delete"},
			want: rclone.Config{Remote: "r:p", Program: "/opt/rclone", Args: []string{"serve", "restic", "--stdio", "--b2-hard-delete"}}},
		{loc: "rclone:", wantErr: true},
		{loc: "sftp:host:/x", wantErr: true},
	}
	for _, c := range cases {
		got, err := rclone.ParseLocation(c.loc, c.opts)
		if (err != nil) != c.wantErr {
			t.Errorf("%s: error %v, want error %v", c.loc, err, c.wantErr)
			continue
		}
		if err == nil && (got.Remote != c.want.Remote || got.Program != c.want.Program || strings.Join(got.Args, " ") != strings.Join(c.want.Args, " ")) {
			t.Errorf("%s: %+v, want %+v", c.loc, got, c.want)
		}
	}
}

// TestRatesPaceThePipes shows that --limit-download paces what comes back
// from rclone: 2 MiB at 1 MiB/s take at least a second.
func TestRatesPaceThePipes(t *testing.T) {
	needRclone(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	b, err := rclone.Create(ctx, rclone.Config{Remote: dir})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2<<20)
	h := backend.Handle{Type: backend.PackFile, Name: strings.Repeat("ab", 32)}
	if err := b.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("config")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	slow, err := rclone.Open(ctx, rclone.Config{Remote: dir, Rates: limit.Rates{Download: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	if _, err := slow.Load(ctx, h, 0, 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("2 MiB at 1 MiB/s took %v", d)
	}
}
