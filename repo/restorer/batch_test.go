package restorer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// batchingLoader is a fakeLoader that reads many blobs at once, as the
// repository does across a network: each call (one "request") waits a
// little, whatever it asks for.
type batchingLoader struct {
	*fakeLoader
	batches, batched atomic.Int64 // calls of LoadBlobs, and ids they asked for
}

func (b *batchingLoader) LoadBlobs(ctx context.Context, ids []crypto.ID, fn func(int, []byte, error)) error {
	b.batches.Add(1)
	b.batched.Add(int64(len(ids)))
	time.Sleep(2 * time.Millisecond)
	for i, id := range ids {
		plain, err := b.fakeLoader.LoadBlob(ctx, id, nil)
		fn(i, plain, err)
	}
	return ctx.Err()
}

// TestRestoreBatched: with BatchBytes, workers load the chunks of the
// queued files together; every file comes back right, and a damaged chunk
// fails only its own file.
func TestRestoreBatched(t *testing.T) {
	f := newFakeLoader()
	var nodes []*tree.Node
	want := map[string][]byte{}
	for i := range 300 {
		name := fmt.Sprintf("f%03d", i)
		content := randBytes(uint64(i), 1+i*37%5000)
		if i%50 == 7 {
			content = randBytes(uint64(i), 3*testChunkSize+123) // several chunks
		}
		want[name] = content
		nodes = append(nodes, f.fileNode(name, content))
	}
	bad := nodes[123]
	f.blobErr[bad.Content[0]] = errors.New("ciphertext verification failed")
	root := f.addTree(nodes...)
	bl := &batchingLoader{fakeLoader: f}
	target := t.TempDir()
	st, err := Restore(context.Background(), bl, root, Options{Target: target, Workers: 2, BatchBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Errors) != 1 || st.Errors[0].Path != "/"+bad.Name {
		t.Fatalf("errors %v, want only /%s", st.Errors, bad.Name)
	}
	for name, content := range want {
		if name == bad.Name {
			continue
		}
		got, err := os.ReadFile(filepath.Join(target, name))
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("%s: %v, %d bytes, want %d", name, err, len(got), len(content))
		}
	}
	if bl.batches.Load() == 0 || bl.batched.Load() <= bl.batches.Load() {
		t.Fatalf("%d batch loads for %d chunks: the workers did not batch", bl.batches.Load(), bl.batched.Load())
	}
	t.Logf("%d chunks in %d batch loads, %d single loads", bl.batched.Load(), bl.batches.Load(), f.loads.Load()-bl.batched.Load())
}
