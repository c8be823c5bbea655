package repo_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/local"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// nopClose keeps the shared in-memory backend open when a repository
// handle on it is closed.
type nopClose struct{ backend.Backend }

func (nopClose) Close() error { return nil }

// Unwrap lets backend.As find the capabilities of the wrapped backend.
func (n nopClose) Unwrap() backend.Backend { return n.Backend }

func TestInitOpenWrongPassword(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	repo.TestRepository(t, nopClose{be})
	if _, err := repo.Init(ctx, nopClose{be}, "x", repo.Options{KDF: &crypto.TestKDF}); !errors.Is(err, repo.ErrRepositoryExists) {
		t.Fatalf("second init: %v", err)
	}
	if _, err := repo.Open(ctx, nopClose{be}, "wrong", repo.Options{}); !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := repo.Open(ctx, nopClose{mem.New()}, "x", repo.Options{}); !errors.Is(err, repo.ErrNoRepository) {
		t.Fatalf("empty backend: %v", err)
	}
}

func TestBlobsTreesSnapshotsRoundTrip(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	r.SetPackSize(1 << 20)
	rng := rand.New(rand.NewSource(1))
	var ids []crypto.ID
	var blobs [][]byte
	for i := 0; i < 200; i++ {
		b := make([]byte, rng.Intn(64<<10))
		if i%2 == 0 {
			rng.Read(b)
		}
		id, added, err := r.SaveBlob(ctx, pack.DataBlob, b)
		if err != nil {
			t.Fatal(err)
		}
		if !added && i > 1 && len(b) > 0 && i%2 == 0 {
			t.Fatalf("blob %d not added", i)
		}
		ids = append(ids, id)
		blobs = append(blobs, b)
	}
	// Saving the same blob again adds nothing.
	if _, added, _ := r.SaveBlob(ctx, pack.DataBlob, blobs[0]); added {
		t.Fatal("duplicate blob added")
	}
	tr := &tree.Tree{Nodes: []*tree.Node{{Name: "f", Type: tree.File, Mode: 0o644, ModTime: time.Unix(1, 2), Content: ids[:3], Size: 1}}}
	treeID, _, err := r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: time.Now(), Tree: treeID, Paths: []string{"/x"}, Hostname: "h"}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}

	r2 := repo.TestOpen(t, nopClose{be})
	for i, id := range ids {
		got, err := r2.LoadBlob(ctx, id, nil)
		if err != nil || !bytes.Equal(got, blobs[i]) {
			t.Fatalf("blob %d: %v", i, err)
		}
		if n, ok := r2.BlobSize(id); !ok || n != len(blobs[i]) {
			t.Fatalf("blob %d size %d", i, n)
		}
	}
	got, err := r2.LoadTree(ctx, treeID)
	if err != nil || len(got.Nodes) != 1 || got.Nodes[0].Name != "f" || !got.Nodes[0].ModTime.Equal(time.Unix(1, 2)) {
		t.Fatalf("tree: %v %+v", err, got)
	}
	list, problems, err := r2.Snapshots(ctx)
	if err != nil || len(problems) != 0 || len(list) != 1 || list[0].Tree != treeID || list[0].ID != sn.ID {
		t.Fatalf("snapshots: %v %v %+v", err, problems, list)
	}
	// Data and tree blobs never share a pack; packs are near the target size.
	for pid, bs := range r2.Index().Packs() {
		for _, b := range bs[1:] {
			if b.Type != bs[0].Type {
				t.Fatalf("pack %s mixes blob types", pid.Short())
			}
		}
	}
	if z := r2.IsZeroBlob(ids[1]); z != (len(blobs[1]) > 0 && bytes.Count(blobs[1], []byte{0}) == len(blobs[1])) {
		t.Fatalf("IsZeroBlob = %v", z)
	}
}

func TestCorruptBlobIsDetected(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	data := bytes.Repeat([]byte("abc"), 1000)
	id, _, _ := r.SaveBlob(ctx, pack.DataBlob, data)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	flipStoredByte(t, be, r.Index().Lookup(pack.DataBlob, id)[0])
	r2 := repo.TestOpen(t, nopClose{be})
	if _, err := r2.LoadBlob(ctx, id, nil); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("corrupt blob: %v", err)
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	id2, err := r.AddKey(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, nopClose{be}, "second", repo.Options{}); err != nil {
		t.Fatalf("open with second key: %v", err)
	}
	keys, _ := r.ListKeys(ctx)
	if len(keys) != 2 {
		t.Fatalf("%d keys", len(keys))
	}
	if err := r.RemoveKey(ctx, r.KeyID()); err == nil {
		t.Fatal("removed the key in use")
	}
	if err := r.RemoveKey(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, nopClose{be}, "second", repo.Options{}); !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("removed key still opens: %v", err)
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	shared, err := r.Lock(ctx, repo.LockShared)
	if err != nil {
		t.Fatal(err)
	}
	read, err := r.Lock(ctx, repo.LockRead)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Lock(ctx, repo.LockMaintenance)
	if err != nil {
		t.Fatalf("maintenance beside shared locks: %v", err)
	}
	if _, err := r.Lock(ctx, repo.LockMaintenance); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("second maintenance lock: %v", err)
	}
	if _, err := r.Lock(ctx, repo.LockExclusive); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("exclusive beside others: %v", err)
	}
	for _, l := range []*repo.Lock{shared, read, m} {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	x, err := r.Lock(ctx, repo.LockExclusive)
	if err != nil {
		t.Fatalf("exclusive on a free repository: %v", err)
	}
	if _, err := r.Lock(ctx, repo.LockRead); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("read beside exclusive: %v", err)
	}
	x.Unlock(ctx)
}

// TestLockRace takes two conflicting locks at the same moment, many times:
// never may both be held, and never may both give up.
func TestLockRace(t *testing.T) {
	ctx := context.Background()
	r := repo.TestRepository(t, nopClose{mem.New()})
	kinds := [][2]repo.LockKind{
		{repo.LockExclusive, repo.LockShared},
		{repo.LockMaintenance, repo.LockMaintenance},
		{repo.LockExclusive, repo.LockRead},
	}
	for round := 0; round < 20; round++ {
		pair := kinds[round%len(kinds)]
		var locks [2]*repo.Lock
		var errs [2]error
		start := make(chan struct{})
		done := make(chan int, 2)
		for i := range 2 {
			go func() {
				<-start
				locks[i], errs[i] = r.Lock(ctx, pair[i])
				done <- i
			}()
		}
		close(start)
		<-done
		<-done
		held := 0
		for i := range 2 {
			if errs[i] == nil {
				held++
				continue
			}
			if !errors.Is(errs[i], repo.ErrLocked) {
				t.Fatalf("round %d: %v", round, errs[i])
			}
		}
		if held != 1 {
			t.Fatalf("round %d (%s vs %s): %d of 2 conflicting locks held; errors %v", round, pair[0], pair[1], held, errs)
		}
		for _, l := range locks {
			if l != nil {
				l.Unlock(ctx)
			}
		}
	}
}

func TestConcurrentSaveBlob(t *testing.T) {
	ctx := context.Background()
	r := repo.TestRepository(t, nopClose{mem.New()})
	r.SetPackSize(256 << 10)
	done := make(chan error, 8)
	for w := 0; w < 8; w++ {
		go func(w int) {
			rng := rand.New(rand.NewSource(int64(w % 4))) // pairs of workers save equal blobs
			for i := 0; i < 50; i++ {
				b := make([]byte, 10000)
				rng.Read(b)
				if _, _, err := r.SaveBlob(ctx, pack.DataBlob, b); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}(w)
	}
	for i := 0; i < 8; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.Index().Len(); n != 200 {
		t.Fatalf("index has %d entries, want 200 distinct blobs", n)
	}
}

// TestUnflushedPacksLeaveNoFiles closes a repository with packs still being
// filled (a backup that failed or was cancelled): the temporary files of a
// local repository's packs are removed, a pack filled in memory (any other
// backend) never had one, and nothing reaches the backend.
func TestUnflushedPacksLeaveNoFiles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		local bool // packs are staged in temporary files in the repository
	}{{"local", true}, {"mem", false}} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			ctx := context.Background()
			var be backend.Backend = mem.New()
			dir := filepath.Join(t.TempDir(), "repo")
			if tc.local {
				l, err := local.Create(ctx, dir)
				if err != nil {
					t.Fatal(err)
				}
				be = l
			}
			r := repo.TestRepository(t, nopClose{be})
			for i := 0; i < 20; i++ {
				if _, _, err := r.SaveBlob(ctx, pack.DataBlob, bytes.Repeat([]byte{byte(i)}, 1000+i)); err != nil {
					t.Fatal(err)
				}
			}
			if n := tempFiles(t, dir); tc.local && n == 0 {
				t.Fatal("no temporary pack files in the repository while packs are being filled")
			}
			if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
				t.Fatalf("%d temporary files in TMPDIR: packs are staged there and read back", len(entries))
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if n := tempFiles(t, dir); n != 0 {
				t.Fatalf("%d temporary files left after Close", n)
			}
			n := 0
			_ = be.List(ctx, backend.PackFile, func(backend.FileInfo) error { n++; return nil })
			if n != 0 {
				t.Fatalf("%d packs saved without a flush", n)
			}
		})
	}
}

// tempFiles counts the temporary files under dir (none when it is missing).
func tempFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), backend.TempMarker) {
			n++
		}
		return nil
	})
	return n
}

// flipStoredByte flips one bit in the middle of a blob as stored in its pack.
func flipStoredByte(t *testing.T, be backend.Backend, loc index.PackedBlob) {
	t.Helper()
	ctx := context.Background()
	h := backend.Handle{Type: backend.PackFile, Name: loc.PackID.String()}
	raw, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw[loc.Offset+loc.Length/2] ^= 1
	if err := be.Save(ctx, h, raw); err != nil {
		t.Fatal(err)
	}
}

// TestPrefetchSnapshots: the first Snapshots after PrefetchSnapshots
// answers with the snapshots the prefetch loaded, later calls list again,
// and a snapshot this handle saved or removed after the prefetch began is
// never missed or returned.
func TestPrefetchSnapshots(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	save := func(host string) *snapshot.Snapshot {
		t.Helper()
		sn := &snapshot.Snapshot{Time: time.Now(), Paths: []string{"/x"}, Hostname: host}
		if err := r.SaveSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
		return sn
	}
	hosts := func() string {
		t.Helper()
		list, problems, err := r.Snapshots(ctx)
		if err != nil || len(problems) > 0 {
			t.Fatal(err, problems)
		}
		var hs []string
		for _, sn := range list {
			hs = append(hs, sn.Hostname)
		}
		return strings.Join(hs, ",")
	}
	first := save("a")
	r.PrefetchSnapshots(ctx)
	if got := hosts(); got != "a" {
		t.Fatalf("after a prefetch: %q, want a", got)
	}
	// Another process adds a snapshot: the next call lists again.
	other := repo.TestOpen(t, nopClose{be})
	if err := other.SaveSnapshot(ctx, &snapshot.Snapshot{Time: time.Now(), Paths: []string{"/x"}, Hostname: "b"}); err != nil {
		t.Fatal(err)
	}
	if got := hosts(); got != "a,b" {
		t.Fatalf("the call after the prefetched one: %q, want a,b", got)
	}
	// Saved and removed by this handle after the prefetch began.
	r.PrefetchSnapshots(ctx)
	save("c")
	if got := hosts(); got != "a,b,c" {
		t.Fatalf("saved after the prefetch: %q, want a,b,c", got)
	}
	r.PrefetchSnapshots(ctx)
	if err := r.RemoveSnapshot(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if got := hosts(); got != "b,c" {
		t.Fatalf("removed after the prefetch: %q, want b,c", got)
	}
	// A canceled context ends the wait.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r.PrefetchSnapshots(ctx)
	if _, _, err := r.Snapshots(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Snapshots with a canceled context: %v", err)
	}
}
