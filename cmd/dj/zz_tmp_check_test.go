package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"fmt"
	"strings"
	"github.com/urfave/cli/v2"
)

func tmpRun(t *testing.T, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
	app := newApp(strings.NewReader(""), &out, &errb)
	app.Commands = append(app.Commands, checkCommand(), statsCommand(), repairCommand())
	err := app.RunContext(context.Background(), interspersed(app, append([]string{"dj"}, args...)))
	code := 0
	if err != nil {
		fmt.Fprintf(&errb, "dj: %s\n", oneLine(err))
		code = exitCode(err)
	}
	return out.String(), errb.String(), code
}

func TestZZTmpCLI(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	for i := 0; i < 20; i++ {
		b := make([]byte, 300000+i*1000)
		for j := range b { b[j] = byte((j*7 + i*13) ^ (j >> 5)) }
		os.WriteFile(filepath.Join(src, "sub", fmt.Sprintf("f%d", i)), b, 0o644)
	}
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello"), 0o644)
	os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "hl.txt"))
	t.Setenv("DJ_PASSWORD", "pw")
	t.Setenv("DJ_INSECURE_TEST_KDF", "1")
	t.Setenv("DJ_REPOSITORY", repoDir)
	show := func(args ...string) (string, int) {
		o, e, c := tmpRun(t, args...)
		t.Logf("$ dj %s  [exit %d]\n%s%s", strings.Join(args, " "), c, o, e)
		return o, c
	}
	show("init")
	show("backup", src)
	show("check")
	show("check", "--read-data")
	show("stats")
	show("stats", "--mode", "raw-data")
	show("--json", "stats", "--mode", "raw-data")
	show("stats", "--mode", "files-by-contents", "latest")
	// Damage: flip a byte in the biggest pack.
	var biggest string
	var size int64
	filepath.Walk(filepath.Join(repoDir, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() > size { biggest, size = p, fi.Size() }
		return nil
	})
	b, _ := os.ReadFile(biggest)
	b[1000] ^= 1
	os.Chmod(biggest, 0o644)
	os.WriteFile(biggest, b, 0o644)
	show("check")
	show("check", "--read-data-subset", "1/1")
	show("--json", "check", "--read-data")
	show("repair", "index", "--read-all-packs")
	show("check")
	show("repair", "snapshots", "--dry-run")
	show("repair", "snapshots", "--forget")
	show("check", "--read-data")
	show("snapshots")
	show("check", "--read-data-subset", "bogus")
	show("stats", "--mode", "bogus")
}
