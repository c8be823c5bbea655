//go:build bench

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestCompareTrees(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "f"), []byte("hello"), 0o644)
	os.Symlink("sub/f", filepath.Join(src, "link"))
	dst := filepath.Join(dir, "dst")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	ctx := context.Background()
	if n, diffs, nd, err := compareTrees(ctx, src, dst); err != nil || nd != 0 || n != 4 {
		t.Fatalf("identical trees: %d entries, %d differences %v, %v", n, nd, diffs, err)
	}
	// Same size and mtime, other content.
	f := filepath.Join(dst, "sub", "f")
	fi, _ := os.Stat(f)
	os.WriteFile(f, []byte("jello"), 0o644)
	os.Chtimes(f, fi.ModTime(), fi.ModTime())
	os.WriteFile(filepath.Join(dst, "extra"), nil, 0o644)
	_, diffs, nd, err := compareTrees(ctx, src, dst)
	if err != nil || nd < 2 {
		t.Fatalf("changed tree: %d differences %v, %v", nd, diffs, err)
	}
}

func TestGenRandDeterministic(t *testing.T) {
	gen := func() []byte {
		g := newGenRand(42)
		var b bytes.Buffer
		b.Write(g.text(500))
		p := filepath.Join(t.TempDir(), "r")
		if err := g.writeRandomFile(p, 3<<20+17); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		b.Write(data)
		return b.Bytes()
	}
	a, b := gen(), gen()
	if !bytes.Equal(a, b) || len(a) != 500+3<<20+17 {
		t.Fatalf("two generators with one seed differ (len %d, %d)", len(a), len(b))
	}
}
