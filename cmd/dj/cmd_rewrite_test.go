package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestExcludePatterns(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ex")
	t.Setenv("DJ_TEST_DIR", "/home/ann")
	if err := os.WriteFile(file, []byte("# comment\n\n  $DJ_TEST_DIR/.cache  \n*.iso\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ifile := filepath.Join(dir, "iex")
	if err := os.WriteFile(ifile, []byte("SECRET*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (func(string) bool, error) {
		var match func(string) bool
		app := &cli.App{Writer: io.Discard, ErrWriter: io.Discard, Flags: excludePatternFlags(), DisableSliceFlagSeparator: true, Action: func(c *cli.Context) error {
			l, err := excludePatterns(c)
			match = l.Match
			if len(l) == 0 {
				match = nil
			}
			return err
		}}
		err := app.Run(append([]string{"dj"}, args...))
		return match, err
	}
	match, err := run("--exclude", "a,b", "--exclude", "/tmp/x", "--iexclude", "*.JPG", "--exclude-file", file, "--iexclude-file", ifile)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/home/ann/.cache/x": true, "/home/bob/.cache": false, "/d/disk.iso": true, "/d/disk.ISO": false,
		"/p/photo.jpg": true, "/tmp/x/y": true, "/tmp/xy": false, "/d/a,b": true, "/d/a": false,
		"/etc/secret.txt": true, "/etc/Secrets": true, "/etc/not-secret": false,
	} {
		if got := match(path); got != want {
			t.Errorf("%s: excluded %v, want %v", path, got, want)
		}
	}
	if m, err := run(); err != nil || m != nil {
		t.Fatalf("no patterns: %v", err)
	}
	if _, err := run("--exclude", "["); err == nil {
		t.Fatal("a bad pattern is accepted")
	}
	if _, err := run("--exclude-file", filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing exclude file is accepted")
	}
}
