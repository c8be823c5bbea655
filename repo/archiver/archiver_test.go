package archiver_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dj/backend/mem"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/tree"
)

func readBack(t *testing.T, r *repo.Repository, n *tree.Node) []byte {
	t.Helper()
	var out []byte
	for _, id := range n.Content {
		b, err := r.LoadBlob(context.Background(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func TestBackupAndParent(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, be)
	src := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	files := map[string][]byte{}
	for i, size := range []int{0, 1, 1000, 3 << 20, 9 << 20} {
		b := make([]byte, size)
		rng.Read(b)
		name := filepath.Join(src, "dir"+string(rune('a'+i)), "f")
		os.MkdirAll(filepath.Dir(name), 0o755)
		os.WriteFile(name, b, 0o644)
		files[name] = b
	}
	os.Symlink("dira/f", filepath.Join(src, "link"))

	sn, err := archiver.Backup(ctx, r, []string{src}, archiver.Options{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Summary.FilesNew != 5 {
		t.Fatalf("files new %d", sn.Summary.FilesNew)
	}
	r2 := repo.TestOpen(t, be)
	for name, want := range files {
		n, err := r2.FindNode(ctx, sn.Tree, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBack(t, r2, n); !bytes.Equal(got, want) || n.Size != uint64(len(want)) {
			t.Fatalf("%s: content differs", name)
		}
	}
	l, err := r2.FindNode(ctx, sn.Tree, filepath.Join(src, "link"))
	if err != nil || l.Type != tree.Symlink || l.LinkTarget != "dira/f" {
		t.Fatalf("symlink: %v %+v", err, l)
	}
	// Root path components carry the real directories' metadata.
	root, err := r2.LoadTree(ctx, sn.Tree)
	if err != nil || len(root.Nodes) != 1 || root.Nodes[0].Name != strings.Split(strings.TrimPrefix(src, "/"), "/")[0] {
		t.Fatalf("root tree: %v %+v", err, root)
	}

	// With the parent, nothing is read again. (Directory atimes may change
	// once: the first backup's readdir updates them.)
	sn2, err := archiver.Backup(ctx, r2, []string{src}, archiver.Options{Hostname: "h", Parent: sn})
	if err != nil {
		t.Fatal(err)
	}
	if sn2.Summary.FilesUnmodified != 5 || sn2.Summary.DataBlobs != 0 {
		t.Fatalf("unchanged backup: summary %+v", sn2.Summary)
	}
	// A changed file is read again.
	os.WriteFile(filepath.Join(src, "dira", "f"), []byte("changed"), 0o644)
	sn3, err := archiver.Backup(ctx, r2, []string{src}, archiver.Options{Hostname: "h", Parent: sn2})
	if err != nil {
		t.Fatal(err)
	}
	if sn3.Summary.FilesChanged != 1 || sn3.Tree == sn2.Tree {
		t.Fatalf("changed file: %+v", sn3.Summary)
	}
}

func TestUnreadableFileIsAWarning(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every file")
	}
	ctx := context.Background()
	r := repo.TestRepository(t, mem.New())
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "ok"), []byte("ok"), 0o644)
	os.WriteFile(filepath.Join(src, "secret"), []byte("x"), 0)
	var warned []string
	sn, err := archiver.Backup(ctx, r, []string{src}, archiver.Options{Warn: func(p string, err error) { warned = append(warned, p) }})
	if !errors.Is(err, archiver.ErrIncomplete) || sn == nil || len(warned) != 1 {
		t.Fatalf("err %v, snapshot %v, warnings %v", err, sn != nil, warned)
	}
}

func TestBackupReader(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, be)
	data := bytes.Repeat([]byte("dump line\n"), 300000)
	sn, err := archiver.BackupReader(ctx, r, bytes.NewReader(data), "db.sql", nil, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2 := repo.TestOpen(t, be)
	n, err := r2.FindNode(ctx, sn.Tree, "/db.sql")
	if err != nil || !bytes.Equal(readBack(t, r2, n), data) {
		t.Fatalf("stdin backup: %v", err)
	}
	// A failing finish leaves no snapshot.
	before, _, _ := r2.Snapshots(ctx)
	_, err = archiver.BackupReader(ctx, r2, bytes.NewReader(data), "db.sql", func() error { return errors.New("exit 1") }, archiver.Options{})
	after, _, _ := r2.Snapshots(ctx)
	if err == nil || len(after) != len(before) {
		t.Fatalf("failed command: err %v, snapshots %d -> %d", err, len(before), len(after))
	}
}
