package maint

// The fixture of the check, stats and repair tests: a map-based backend
// whose files the tests damage, and a repository with two snapshots whose
// files are known, so a test can compute what a damage affects.

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// chkBackend is a map-based backend.Backend for the tests of check, stats
// and repair.
type chkBackend struct {
	mu    sync.Mutex
	files map[backend.Handle][]byte
	mtime map[backend.Handle]time.Time
	// afterList, when set, runs after each List (tests use it to change
	// the repository under a running operation).
	afterList func(t backend.FileType)
}

func newChkBackend() *chkBackend {
	return &chkBackend{files: map[backend.Handle][]byte{}, mtime: map[backend.Handle]time.Time{}}
}

func (b *chkBackend) Location() string { return "chk-mem" }

func (b *chkBackend) Close() error { return nil }

func (b *chkBackend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files[h] = append([]byte(nil), data...)
	b.mtime[h] = time.Now()
	return nil
}

func (b *chkBackend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, ok := b.files[h]
	if !ok {
		return nil, fmt.Errorf("%s: %w", h, fs.ErrNotExist)
	}
	if offset < 0 || offset > int64(len(data)) {
		return nil, fmt.Errorf("%s: offset %d: %w", h, offset, io.ErrUnexpectedEOF)
	}
	data = data[offset:]
	if length > 0 {
		if length > len(data) {
			return nil, fmt.Errorf("%s: %w", h, io.ErrUnexpectedEOF)
		}
		data = data[:length]
	}
	return append([]byte(nil), data...), nil
}

func (b *chkBackend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, ok := b.files[h]
	if !ok {
		return backend.FileInfo{}, fmt.Errorf("%s: %w", h, fs.ErrNotExist)
	}
	return backend.FileInfo{Name: h.Name, Size: int64(len(data)), ModTime: b.mtime[h]}, nil
}

func (b *chkBackend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	b.mu.Lock()
	var infos []backend.FileInfo
	for h, data := range b.files {
		if h.Type == t {
			infos = append(infos, backend.FileInfo{Name: h.Name, Size: int64(len(data)), ModTime: b.mtime[h]})
		}
	}
	b.mu.Unlock()
	for _, fi := range infos {
		if err := fn(fi); err != nil {
			return err
		}
	}
	if b.afterList != nil {
		b.afterList(t)
	}
	return nil
}

func (b *chkBackend) Remove(ctx context.Context, h backend.Handle) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.files[h]; !ok {
		return fmt.Errorf("%s: %w", h, fs.ErrNotExist)
	}
	delete(b.files, h)
	return nil
}

// mutate changes a stored file in place (tests only).
func (b *chkBackend) mutate(h backend.Handle, fn func([]byte) []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files[h] = fn(b.files[h])
}

func (b *chkBackend) names(t backend.FileType) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for h := range b.files {
		if h.Type == t {
			out = append(out, h.Name)
		}
	}
	sort.Strings(out)
	return out
}

const chkPassword = "secret"

func chkOptions() repo.Options {
	return repo.Options{KDF: &crypto.TestKDF, PackSize: 8 << 10}
}

// chkFixture is a repository with known snapshots: for each snapshot, the
// files it holds and their content, so tests can compute what damage
// affects.
type chkFixture struct {
	be    *chkBackend
	snaps []*snapshot.Snapshot
	files []map[string][]byte // per snapshot: "/dir/file" -> content
}

type chkDir struct {
	files map[string][]byte
	dirs  map[string]*chkDir
}

func saveChkDir(ctx context.Context, t *testing.T, r *repo.Repository, d *chkDir) crypto.ID {
	t.Helper()
	tr := &tree.Tree{}
	now := time.Unix(1700000000, 0)
	for name, sub := range d.dirs {
		id := saveChkDir(ctx, t, r, sub)
		tr.Nodes = append(tr.Nodes, &tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o755, ModTime: now, Subtree: &id})
	}
	for name, data := range d.files {
		n := &tree.Node{Name: name, Type: tree.File, Mode: 0o644, ModTime: now, Size: uint64(len(data))}
		for off := 0; off < len(data); off += 1500 {
			end := min(off+1500, len(data))
			id, _, err := r.SaveBlob(ctx, pack.DataBlob, data[off:end])
			if err != nil {
				t.Fatal(err)
			}
			n.Content = append(n.Content, id)
		}
		tr.Nodes = append(tr.Nodes, n)
	}
	id, _, err := r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// newChkFixture writes two snapshots: the second shares some files with
// the first, changes one and adds others. Each snapshot is flushed on its
// own, so there are two index files.
func newChkFixture(t *testing.T) *chkFixture {
	t.Helper()
	ctx := context.Background()
	be := newChkBackend()
	r, err := repo.Init(ctx, be, chkPassword, chkOptions())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	shared := randBytes(rng, 5000)
	first := map[string][]byte{
		"/docs/shared.txt": shared,
		"/docs/a.bin":      randBytes(rng, 4000),
		"/docs/deep/b.bin": randBytes(rng, 3100),
		"/top.txt":         []byte("hello world"),
		"/empty":           {},
	}
	second := map[string][]byte{
		"/docs/shared.txt": shared,
		"/docs/a.bin":      randBytes(rng, 4200), // changed
		"/docs/deep/b.bin": first["/docs/deep/b.bin"],
		"/new/c.bin":       randBytes(rng, 6000),
		"/new/d.bin":       randBytes(rng, 2000),
		"/top.txt":         []byte("hello world"),
	}
	f := &chkFixture{be: be}
	for i, files := range []map[string][]byte{first, second} {
		root := &chkDir{files: map[string][]byte{}, dirs: map[string]*chkDir{}}
		for p, data := range files {
			d := root
			parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
			for _, el := range parts[:len(parts)-1] {
				if d.dirs[el] == nil {
					d.dirs[el] = &chkDir{files: map[string][]byte{}, dirs: map[string]*chkDir{}}
				}
				d = d.dirs[el]
			}
			d.files[parts[len(parts)-1]] = data
		}
		id := saveChkDir(ctx, t, r, root)
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		sn := &snapshot.Snapshot{Time: time.Unix(1700000000+int64(i)*3600, 0), Tree: id, Paths: []string{"/data"}, Hostname: "host"}
		if err := r.SaveSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
		f.snaps = append(f.snaps, sn)
		f.files = append(f.files, files)
	}
	return f
}

// open opens the repository without loading the index.
func (f *chkFixture) open(t *testing.T) *repo.Repository {
	t.Helper()
	r, err := repo.Open(context.Background(), f.be, chkPassword, chkOptions())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *chkFixture) openIndexed(t *testing.T) *repo.Repository {
	t.Helper()
	r := f.open(t)
	if _, err := r.LoadIndex(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *chkFixture) check(t *testing.T, opts CheckOptions) *CheckResult {
	t.Helper()
	res, err := Check(context.Background(), f.open(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// blobIDs returns the data blob ids of content, as the fixture chunks it.
func blobIDs(r *repo.Repository, data []byte) []crypto.ID {
	var out []crypto.ID
	for off := 0; off < len(data); off += 1500 {
		out = append(out, r.BlobID(data[off:min(off+1500, len(data))]))
	}
	return out
}

// affectedBy returns "path@snapshot-short" for every file of every
// snapshot that uses one of the blobs.
func (f *chkFixture) affectedBy(r *repo.Repository, lost map[crypto.ID]bool) []string {
	var out []string
	for i, files := range f.files {
		for p, data := range files {
			for _, id := range blobIDs(r, data) {
				if lost[id] {
					out = append(out, p+"@"+f.snaps[i].ID.Short())
					break
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func affectedOf(ps []*Problem) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range ps {
		for _, a := range p.Affected {
			for _, sn := range a.Snapshots {
				k := a.Path + "@" + sn.Short()
				if !seen[k] {
					seen[k] = true
					out = append(out, k)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func errorsOf(res *CheckResult) []*Problem {
	var out []*Problem
	for _, p := range res.Problems {
		if p.Severity == SeverityError {
			out = append(out, p)
		}
	}
	return out
}

func kinds(ps []*Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, string(p.Kind))
	}
	return out
}

func dumpProblems(t *testing.T, res *CheckResult) {
	t.Helper()
	for _, p := range res.Problems {
		t.Logf("%s %s: %s %v", p.Severity, p.Kind, p.Message, p.Affected)
	}
}

// packOf returns the pack holding a data blob.
func packOf(t *testing.T, r *repo.Repository, id crypto.ID) crypto.ID {
	t.Helper()
	locs := r.Index().Lookup(pack.DataBlob, id)
	if len(locs) != 1 {
		t.Fatalf("blob %s has %d locations", id.Short(), len(locs))
	}
	return locs[0].PackID
}

func contains2(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func countKind(res *CheckResult, k ProblemKind) int {
	n := 0
	for _, p := range res.Problems {
		if p.Kind == k {
			n++
		}
	}
	return n
}
