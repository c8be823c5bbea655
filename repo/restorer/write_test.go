package restorer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// TestRestoreSparseLarge restores a 2 GiB sparse file and checks that it
// takes no more space than the source.
func TestRestoreSparseLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("2 GiB sparse file")
	}
	src := t.TempDir()
	p := filepath.Join(src, "vm.img")
	fh, err := os.Create(p)
	must(t, err)
	const size = 2 << 30
	must(t, fh.Truncate(size))
	for _, off := range []int64{0, 1 << 30, size - 100_000} {
		_, err := fh.WriteAt(randBytes(uint64(off), 100_000), off)
		must(t, err)
	}
	must(t, fh.Close())
	f := newFakeLoader()
	root := snapshotDir(t, f, src)

	target := t.TempDir()
	st, err := Restore(context.Background(), zeroLoader{f}, root, Options{Target: target})
	must(t, err)
	if len(st.Errors) > 0 || st.Bytes != size {
		t.Fatalf("stats %+v", st)
	}
	var a, b unix.Stat_t
	must(t, unix.Stat(p, &a))
	must(t, unix.Stat(filepath.Join(target, "vm.img"), &b))
	t.Logf("source %d blocks, restored %d blocks", a.Blocks, b.Blocks)
	if b.Size != size || b.Blocks > a.Blocks+64 {
		t.Errorf("restored size %d, %d blocks; source %d blocks", b.Size, b.Blocks, a.Blocks)
	}
	compareRestored(t, f, root, target, false)
}

func TestRestoreDamaged(t *testing.T) {
	f := newFakeLoader()
	good := f.fileNode("good", randBytes(5, 3*testChunkSize))
	bad := f.fileNode("bad", randBytes(6, 3*testChunkSize+5))
	bad.ModTime = time.Unix(1_000_000, 0)
	missing := f.fileNode("missing", randBytes(7, testChunkSize))
	f.blobErr[bad.Content[1]] = errors.New("ciphertext verification failed")
	delete(f.blobs, missing.Content[0])
	brokenDir := f.addTree(f.fileNode("never", []byte("x")))
	f.treeErr[brokenDir] = errors.New("tree pack is corrupt")
	sub := f.addTree(f.fileNode("also-good", []byte("fine")))
	root := f.addTree(bad, dirNode("broken", brokenDir), good, missing, dirNode("sub", sub))

	target := t.TempDir()
	var mu sync.Mutex
	warned := map[string]bool{}
	st, err := Restore(context.Background(), f, root, Options{Target: target, Workers: 3, Warn: func(p string, err error) {
		mu.Lock()
		warned[p] = true
		mu.Unlock()
	}})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	var failed []string
	for _, e := range st.Errors {
		failed = append(failed, e.Path)
	}
	sort.Strings(failed)
	if want := []string{"/bad", "/broken", "/missing"}; !reflect.DeepEqual(failed, want) {
		t.Errorf("errors for %q, want %q (%v)", failed, want, st.Errors)
	}
	for _, p := range failed {
		if !warned[p] {
			t.Errorf("no warning for %s", p)
		}
	}
	checkContent(t, f, good, filepath.Join(target, "good"))
	checkContent(t, f, sub0(t, f, sub), filepath.Join(target, "sub/also-good"))
	// The damaged file is left with its intact parts and a zeroed gap, and
	// the time of the restore.
	b, err := os.ReadFile(filepath.Join(target, "bad"))
	must(t, err)
	var want bytes.Buffer
	for i, id := range bad.Content {
		if i == 1 {
			want.Write(make([]byte, testChunkSize))
			continue
		}
		want.Write(f.blobs[id])
	}
	if !bytes.Equal(b, want.Bytes()) {
		t.Errorf("damaged file: %d bytes, want the intact chunks around a hole", len(b))
	}
	if fi, _ := os.Stat(filepath.Join(target, "bad")); fi.ModTime().Equal(bad.ModTime) {
		t.Errorf("damaged file got the snapshot's mtime")
	}
	if fi, err := os.Stat(filepath.Join(target, "broken")); err != nil || !fi.IsDir() {
		t.Errorf("unreadable directory not created: %v", err)
	}
}

func sub0(t *testing.T, f *fakeLoader, id crypto.ID) *tree.Node {
	tr, err := f.LoadTree(context.Background(), id)
	must(t, err)
	return tr.Nodes[0]
}

func TestRestoreVerify(t *testing.T) {
	f := newFakeLoader()
	n := f.fileNode("f", randBytes(8, 4*testChunkSize))
	ok := f.fileNode("ok", randBytes(9, 2*testChunkSize))
	f.corrupt[n.Content[2]] = true
	root := f.addTree(n, ok)
	for _, verify := range []bool{false, true} {
		t.Run(fmt.Sprint("verify=", verify), func(t *testing.T) {
			st, err := Restore(context.Background(), f, root, Options{Target: t.TempDir(), Verify: verify})
			must(t, err)
			switch {
			case !verify && len(st.Errors) != 0:
				t.Errorf("errors without verify: %v", st.Errors)
			case verify && (len(st.Errors) != 1 || st.Errors[0].Path != "/f" || !strings.Contains(st.Errors[0].Err.Error(), "chunk 2")):
				t.Errorf("errors %v, want chunk 2 of /f", st.Errors)
			}
		})
	}
}

func TestWriteAtSparse(t *testing.T) {
	block := func(fill byte) []byte { return bytes.Repeat([]byte{fill}, holeBlock) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name       string
		data       []byte
		off        int64
		wantBlocks int64 // allocated 4 KiB blocks
	}{
		{"all zero", cat(block(0), block(0), block(0)), 0, 0},
		{"data in the middle", cat(block(0), block(1), block(0)), 0, 1},
		{"unaligned offset", cat(block(0), block(1), block(0)), 100, 2},
		{"two runs", cat(block(1), block(0), block(0), block(2), block(2)), holeBlock, 3},
		{"short tail", cat(block(0), []byte{1}), 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			fh, err := os.Create(p)
			must(t, err)
			defer fh.Close()
			size := tt.off + int64(len(tt.data)) + 3*holeBlock
			must(t, fh.Truncate(size))
			must(t, writeAt(fh, tt.data, tt.off, true))
			must(t, fh.Sync())
			got, err := io.ReadAll(io.NewSectionReader(fh, tt.off, int64(len(tt.data))))
			must(t, err)
			if !bytes.Equal(got, tt.data) {
				t.Error("content differs")
			}
			var st unix.Stat_t
			must(t, unix.Fstat(int(fh.Fd()), &st))
			if st.Blocks*512 != tt.wantBlocks*holeBlock {
				t.Errorf("%d bytes allocated, want %d", st.Blocks*512, tt.wantBlocks*holeBlock)
			}
		})
	}
}
