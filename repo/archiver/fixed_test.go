package archiver_test

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dj/backend/mem"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/chunker"
)

// TestFixedChunksRecordedAndKept: a file matched by FixedChunks is cut at
// fixed offsets, its node records the size, a later backup with the file
// changed keeps the fixed chunker without the option, and a chunk of
// zeros costs nothing once stored.
func TestFixedChunksRecordedAndKept(t *testing.T) {
	ctx := context.Background()
	r := repo.TestRepository(t, mem.New())
	src := t.TempDir()
	img := filepath.Join(src, "disk.img")
	data := make([]byte, 3*chunker.FixedSize+12345)
	rand.New(rand.NewSource(1)).Read(data[:chunker.FixedSize]) // then zeros
	copy(data[2*chunker.FixedSize:], bytes.Repeat([]byte("abc"), 1000))
	os.WriteFile(img, data, 0o644)
	os.WriteFile(filepath.Join(src, "notes.txt"), []byte("text"), 0o644)
	isImage := func(p string, _ os.FileInfo) bool { return strings.HasSuffix(p, ".img") }

	sn, err := archiver.Backup(ctx, r, []string{src}, archiver.Options{FixedChunks: isImage})
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.FindNode(ctx, sn.Tree, img)
	if err != nil {
		t.Fatal(err)
	}
	if n.FixedChunk != chunker.FixedSize || len(n.Content) != 4 || !bytes.Equal(readBack(t, r, n), data) {
		t.Fatalf("image node: fixed %d, %d chunks", n.FixedChunk, len(n.Content))
	}
	if txt, _ := r.FindNode(ctx, sn.Tree, filepath.Join(src, "notes.txt")); txt.FixedChunk != 0 {
		t.Fatal("a file not matched got fixed chunks")
	}
	// Change the last chunk; back up without the option, with the parent.
	data[len(data)-1] ^= 1
	os.WriteFile(img, data, 0o644)
	sn2, err := archiver.Backup(ctx, r, []string{src}, archiver.Options{Parent: sn})
	if err != nil {
		t.Fatal(err)
	}
	n2, _ := r.FindNode(ctx, sn2.Tree, img)
	if n2.FixedChunk != chunker.FixedSize || len(n2.Content) != 4 || !bytes.Equal(readBack(t, r, n2), data) {
		t.Fatalf("changed image: fixed %d, %d chunks", n2.FixedChunk, len(n2.Content))
	}
	if sn2.Summary.DataBlobs != 1 {
		t.Errorf("one changed chunk stored %d blobs", sn2.Summary.DataBlobs)
	}
	if n2.Content[1] != n.Content[1] || !r.IsZeroBlob(n2.Content[1]) {
		t.Error("the chunk of zeros is not the zero blob")
	}
}
