package maint

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
	"dj/repo/index"
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
func (b *chkBackend) Close() error     { return nil }

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

func TestCheckCleanRepository(t *testing.T) {
	f := newChkFixture(t)
	for _, readData := range []bool{false, true} {
		res := f.check(t, CheckOptions{ReadData: readData})
		if !res.OK() || len(res.Problems) != 0 {
			dumpProblems(t, res)
			t.Fatalf("readData=%v: clean repository has problems", readData)
		}
		if res.Snapshots != 2 || res.IndexFiles != 2 || res.Packs == 0 || res.Trees < 5 {
			t.Fatalf("counts: %+v", res)
		}
		if readData && (res.PacksRead != res.Packs || res.BytesRead == 0) {
			t.Fatalf("read data: %d of %d packs, %d bytes", res.PacksRead, res.Packs, res.BytesRead)
		}
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

func TestCheckFlippedByte(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	victim := blobIDs(r, f.files[0]["/docs/a.bin"])[1]
	loc := r.Index().Lookup(pack.DataBlob, victim)[0]
	f.be.mutate(backend.Handle{Type: backend.PackFile, Name: loc.PackID.String()}, func(b []byte) []byte {
		b[loc.Offset+30] ^= 0x40
		return b
	})

	// The structure is intact: without reading data nothing is wrong.
	if res := f.check(t, CheckOptions{}); !res.OK() {
		dumpProblems(t, res)
		t.Fatal("structure check found errors in a pack with a flipped data byte")
	}
	// The blob checks find the damage; --pack-hashes adds the hash mismatch.
	res := f.check(t, CheckOptions{ReadData: true})
	if got := strings.Join(kinds(errorsOf(res)), ","); got != "blob_damaged" {
		dumpProblems(t, res)
		t.Fatalf("errors %s, want blob_damaged", got)
	}
	res = f.check(t, CheckOptions{ReadData: true, PackHashes: true})
	errs := errorsOf(res)
	if got := strings.Join(kinds(errs), ","); got != "pack_hash,blob_damaged" {
		dumpProblems(t, res)
		t.Fatalf("errors %s, want pack_hash,blob_damaged", got)
	}
	for _, p := range errs {
		if p.Pack == nil || *p.Pack != loc.PackID {
			t.Errorf("%s names pack %v, want %s", p.Kind, p.Pack, loc.PackID.Short())
		}
	}
	dmg := errs[1]
	if len(dmg.Blobs) != 1 || dmg.Blobs[0].ID != victim || dmg.Blobs[0].Type != "data" || dmg.LostBlobs != 1 {
		t.Fatalf("damaged blobs %+v (lost %d), want data %s", dmg.Blobs, dmg.LostBlobs, victim.Short())
	}
	want := []string{"/docs/a.bin@" + f.snaps[0].ID.Short()}
	if got := affectedOf(errs); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("affected %v, want %v", got, want)
	}
	if !res.SuggestRepairIndex || !res.SuggestRepairSnapshots || len(res.BrokenPacks) != 1 {
		t.Fatalf("suggestions: %+v", res)
	}
}

func TestCheckMissingPack(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	shared := blobIDs(r, f.files[0]["/docs/shared.txt"])[0]
	pid := packOf(t, r, shared)
	lost := map[crypto.ID]bool{}
	for _, b := range r.Index().Packs()[pid] {
		lost[b.ID] = true
	}
	if err := f.be.Remove(context.Background(), backend.Handle{Type: backend.PackFile, Name: pid.String()}); err != nil {
		t.Fatal(err)
	}
	res := f.check(t, CheckOptions{})
	errs := errorsOf(res)
	if len(errs) != 1 || errs[0].Kind != KindPackMissing || *errs[0].Pack != pid {
		dumpProblems(t, res)
		t.Fatalf("errors %v, want one pack_missing for %s", kinds(errs), pid.Short())
	}
	if errs[0].LostBlobs != len(lost) || len(errs[0].Blobs) != len(lost) {
		t.Fatalf("pack_missing lists %d blobs, %d lost; want %d", len(errs[0].Blobs), errs[0].LostBlobs, len(lost))
	}
	want := f.affectedBy(r, lost)
	got := affectedOf(errs)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("affected %v, want %v", got, want)
	}
	// The shared file is in both snapshots.
	for _, sn := range f.snaps {
		if !contains2(got, "/docs/shared.txt@"+sn.ID.Short()) {
			t.Errorf("shared file of snapshot %s not named", sn.ID.Short())
		}
	}
}

func TestCheckTruncatedIndex(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	// The second index file holds the packs of the second backup.
	files := r.IndexFiles()
	var second crypto.ID
	for id, file := range files {
		for _, p := range file.Packs {
			for _, b := range p.Blobs {
				if b.Type == pack.DataBlob && b.ID == blobIDs(r, f.files[1]["/new/c.bin"])[0] {
					second = id
				}
			}
		}
	}
	lost := map[crypto.ID]bool{}
	for _, p := range files[second].Packs {
		for _, b := range p.Blobs {
			lost[b.ID] = true
		}
	}
	f.be.mutate(backend.Handle{Type: backend.IndexFile, Name: second.String()}, func(b []byte) []byte { return b[:len(b)/2] })

	res := f.check(t, CheckOptions{})
	errs := errorsOf(res)
	if len(errs) == 0 || errs[0].Kind != KindIndexUnreadable || errs[0].File != "index/"+second.String() {
		dumpProblems(t, res)
		t.Fatalf("first error %v, want index_unreadable of %s", kinds(errs), second.Short())
	}
	for _, p := range errs[1:] {
		if p.Kind != KindBlobMissing || p.Pack == nil || !strings.Contains(p.Message, "repair index") {
			t.Fatalf("unexpected error %s: %s", p.Kind, p.Message)
		}
	}
	var unref int
	for _, p := range res.Problems {
		if p.Kind == KindPackUnreferenced {
			unref++
		}
	}
	if unref != len(files[second].Packs) || res.UnreferencedPack != unref {
		t.Fatalf("%d unreferenced packs reported, want %d", unref, len(files[second].Packs))
	}
	// Affected: the second snapshot's new and changed files; its root
	// tree is new too, so the whole snapshot is named as "/".
	got := affectedOf(errs)
	if !contains2(got, "/@"+f.snaps[1].ID.Short()) {
		t.Fatalf("affected %v lacks the root of the second snapshot", got)
	}
	for _, a := range got {
		if strings.HasSuffix(a, f.snaps[0].ID.Short()) {
			t.Fatalf("first snapshot affected: %v", got)
		}
	}
	if !res.SuggestRepairIndex {
		t.Fatal("no repair index suggestion")
	}
}

func contains2(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func TestCheckMissingDataBlobInTree(t *testing.T) {
	// A tree names a blob that was never stored: blob_missing with the file.
	ctx := context.Background()
	be := newChkBackend()
	r, err := repo.Init(ctx, be, chkPassword, chkOptions())
	if err != nil {
		t.Fatal(err)
	}
	good, _, _ := r.SaveBlob(ctx, pack.DataBlob, []byte("good content"))
	ghost := r.BlobID([]byte("never saved"))
	sub := &tree.Tree{Nodes: []*tree.Node{
		{Name: "bad.txt", Type: tree.File, Size: 11, Content: []crypto.ID{ghost}},
		{Name: "good.txt", Type: tree.File, Size: 12, Content: []crypto.ID{good}},
		{Name: "wrong-size.txt", Type: tree.File, Size: 99, Content: []crypto.ID{good}},
	}}
	subID, _, _ := r.SaveTree(ctx, sub)
	root := &tree.Tree{Nodes: []*tree.Node{{Name: "d", Type: tree.Dir, Mode: os.ModeDir | 0o755, Subtree: &subID}}}
	rootID, _, _ := r.SaveTree(ctx, root)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: time.Now(), Tree: rootID, Paths: []string{"/x"}}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	r2, _ := repo.Open(ctx, be, chkPassword, chkOptions())
	res, err := Check(ctx, r2, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs := errorsOf(res)
	if got := strings.Join(kinds(errs), ","); got != "blob_missing,size_mismatch" {
		dumpProblems(t, res)
		t.Fatalf("errors %s", got)
	}
	if errs[0].Blobs[0].ID != ghost || len(errs[0].Affected) != 1 || errs[0].Affected[0].Path != "/d/bad.txt" || errs[0].Affected[0].Snapshots[0] != sn.ID {
		t.Fatalf("blob_missing: %+v", errs[0])
	}
	if len(errs[1].Affected) != 1 || errs[1].Affected[0].Path != "/d/wrong-size.txt" {
		t.Fatalf("size_mismatch: %+v", errs[1])
	}
}

func TestCheckUnreadableSnapshotAndKey(t *testing.T) {
	f := newChkFixture(t)
	f.be.mutate(backend.Handle{Type: backend.SnapshotFile, Name: f.snaps[0].ID.String()}, func(b []byte) []byte {
		b[len(b)-1] ^= 1
		return b
	})
	// A second key whose content no longer matches its name.
	r := f.open(t)
	kid, err := r.AddKey(context.Background(), "other")
	if err != nil {
		t.Fatal(err)
	}
	f.be.mutate(backend.Handle{Type: backend.KeyFile, Name: kid.String()}, func(b []byte) []byte { return append(b, ' ') })
	_ = f.be.Save(context.Background(), backend.Handle{Type: backend.SnapshotFile, Name: "junk"}, []byte("x"))
	res := f.check(t, CheckOptions{})
	if got := strings.Join(kinds(res.Problems), ","); got != "snapshot_unreadable,file_hash,invalid_name" {
		dumpProblems(t, res)
		t.Fatalf("problems %s", got)
	}
	if res.Snapshots != 1 {
		t.Fatalf("%d snapshots checked, want 1", res.Snapshots)
	}
}

func TestCheckPendingPacks(t *testing.T) {
	// A pack that prune marked for deletion whose blob a snapshot still
	// needs is a warning, and an error once the pack is gone.
	f := newChkFixture(t)
	ctx := context.Background()
	r := f.openIndexed(t)
	victim := blobIDs(r, f.files[1]["/new/d.bin"])[0]
	pid := packOf(t, r, victim)
	blobs := r.Index().Packs()
	var ids []crypto.ID
	for id := range r.IndexFiles() {
		ids = append(ids, id)
	}
	if _, err := WriteIndex(ctx, r, filePacksExcept(blobs, pid), filePacksOnly(blobs, pid, time.Now().UnixNano()), ids); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		_ = f.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()})
	}
	res := f.check(t, CheckOptions{})
	if !res.OK() {
		dumpProblems(t, res)
		t.Fatal("pending blobs are errors")
	}
	if n := countKind(res, KindBlobPending); n == 0 {
		dumpProblems(t, res)
		t.Fatal("no blob_pending warning")
	}
	// Damage in the pending pack: warnings about the pack, and an error for
	// the needed blob that is now lost.
	loc := r.Index().Lookup(pack.DataBlob, victim)[0]
	h := backend.Handle{Type: backend.PackFile, Name: pid.String()}
	f.be.mutate(h, func(b []byte) []byte { b[loc.Offset+20] ^= 1; return b })
	res = f.check(t, CheckOptions{ReadData: true})
	errs := errorsOf(res)
	if len(errs) != 1 || errs[0].Kind != KindBlobMissing || errs[0].Blobs[0].ID != victim || countKind(res, KindPackHash) != 0 || countKind(res, KindBlobDamaged) != 1 {
		dumpProblems(t, res)
		t.Fatal("damaged pending pack")
	}
	_ = f.be.Remove(ctx, h)
	res = f.check(t, CheckOptions{})
	if res.OK() || countKind(res, KindPendingGone) != 1 || countKind(res, KindBlobMissing) == 0 {
		dumpProblems(t, res)
		t.Fatal("a needed pending pack that is gone is not an error")
	}
	want := "/new/d.bin@" + f.snaps[1].ID.Short()
	if got := affectedOf(errorsOf(res)); !contains2(got, want) {
		t.Fatalf("affected %v lacks %s", got, want)
	}
}

// filePacksExcept returns the packs but skip as index entries.
func filePacksExcept(blobs map[crypto.ID][]pack.Blob, skip crypto.ID) []index.FilePack {
	var out []index.FilePack
	for id, bs := range blobs {
		if id != skip {
			out = append(out, index.FilePack{ID: id, Blobs: bs})
		}
	}
	return out
}

// filePacksOnly returns pack only, marked for deletion at markedAt.
func filePacksOnly(blobs map[crypto.ID][]pack.Blob, only crypto.ID, markedAt int64) []index.FilePack {
	return []index.FilePack{{ID: only, Blobs: blobs[only], MarkedAt: markedAt}}
}

func TestCheckFilesVanishDuringCheck(t *testing.T) {
	// A prune or forget running at the same time removes files check has
	// listed: that is a warning, not damage.
	f := newChkFixture(t)
	ctx := context.Background()
	// Merge both index files into one, keeping the old ones: the old
	// ones are then removed while check loads the index.
	r := f.openIndexed(t)
	var old []crypto.ID
	for id := range r.IndexFiles() {
		old = append(old, id)
	}
	if _, err := WriteIndex(ctx, r, filePacksExcept(r.Index().Packs(), crypto.ID{}), nil, old); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	f.be.afterList = func(ft backend.FileType) {
		if ft != backend.IndexFile {
			return
		}
		once.Do(func() {
			for _, id := range old {
				_ = f.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()})
			}
		})
	}
	res := f.check(t, CheckOptions{})
	if !res.OK() || countKind(res, KindFileVanished) != 2 {
		dumpProblems(t, res)
		t.Fatal("vanished index files are not warnings")
	}
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

func TestSubsetChoose(t *testing.T) {
	var ids []crypto.ID
	sizes := map[crypto.ID]int64{}
	for i := 0; i < 512; i++ {
		id := crypto.Hash([]byte{byte(i), byte(i >> 8)})
		ids = append(ids, id)
		sizes[id] = 100
	}
	all := func(crypto.ID) bool { return true }
	// n/m partitions the packs.
	total := 0
	for n := 1; n <= 3; n++ {
		got := (&Subset{N: n, M: 3}).choose(ids, sizes, all)
		for id := range got {
			if int(id[0])%3 != n-1 {
				t.Fatalf("%s in bucket %d", id.Short(), n)
			}
		}
		total += len(got)
	}
	if total != len(ids) {
		t.Fatalf("buckets cover %d of %d packs", total, len(ids))
	}
	if got := (&Subset{Fraction: 0.1}).choose(ids, sizes, all); len(got) != 52 {
		t.Fatalf("10%% chose %d packs", len(got))
	}
	// A size is a lower bound (restic's meaning): 1050 bytes of 100-byte
	// packs read 11 of them.
	if got := (&Subset{Bytes: 1050}).choose(ids, sizes, all); len(got) != 11 {
		t.Fatalf("1050 bytes chose %d packs", len(got))
	}
	// 10M of a repository whose data packs are 16 MiB each reads one data
	// pack, never only the small tree packs.
	big := map[crypto.ID]int64{}
	isData := func(id crypto.ID) bool { return id[0]%8 == 0 }
	for _, id := range ids {
		big[id] = 2 << 10
		if isData(id) {
			big[id] = 16 << 20
		}
	}
	got := (&Subset{Bytes: 10 << 20}).choose(ids, big, isData)
	if len(got) != 1 {
		t.Fatalf("10M of 16 MiB data packs chose %d packs", len(got))
	}
	for id := range got {
		if !isData(id) {
			t.Fatal("10M chose a tree pack instead of a data pack")
		}
	}
	if got := (*Subset)(nil).choose(ids, sizes, all); len(got) != len(ids) {
		t.Fatal("nil subset is not everything")
	}
}

func TestCheckReadDataSubset(t *testing.T) {
	f := newChkFixture(t)
	s := &Subset{N: 1, M: 2}
	res := f.check(t, CheckOptions{ReadData: true, Subset: s})
	if !res.OK() || res.PacksRead == 0 || res.PacksRead >= res.Packs {
		t.Fatalf("subset 1/2 read %d of %d packs", res.PacksRead, res.Packs)
	}
}

func TestCheckCancelled(t *testing.T) {
	f := newChkFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Check(ctx, f.open(t), CheckOptions{ReadData: true}); err == nil {
		t.Fatal("cancelled check succeeded")
	}
}

// TestCheckReadDataCoversEveryByte backs the argument in Check's doc comment:
// without hashing whole packs, a changed byte anywhere in a pack (a blob's
// nonce, ciphertext or tag, the header, the trailer), a byte added or a byte
// cut off is found by --read-data, and the problem names the pack.
func TestCheckReadDataCoversEveryByte(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	victim := blobIDs(r, f.files[0]["/docs/a.bin"])[0]
	pid := r.Index().Lookup(pack.DataBlob, victim)[0].PackID
	h := backend.Handle{Type: backend.PackFile, Name: pid.String()}
	var orig []byte
	f.be.mutate(h, func(b []byte) []byte { orig = append([]byte(nil), b...); return b })

	positions := map[int]bool{0: true, len(orig) - 1: true}
	for i := 0; i < 4; i++ {
		positions[len(orig)-1-i] = true
	}
	for i := 0; i < len(orig); i += 97 {
		positions[i] = true
	}
	for _, e := range r.Index().Lookup(pack.DataBlob, victim) {
		positions[int(e.Offset)] = true
		positions[int(e.Offset+e.Length)-1] = true
	}
	type change struct {
		name string
		fn   func([]byte) []byte
	}
	var changes []change
	for p := range positions {
		changes = append(changes, change{fmt.Sprintf("flip byte %d of %d", p, len(orig)), func(b []byte) []byte { b[p] ^= 0x01; return b }})
	}
	changes = append(changes,
		change{"append a byte", func(b []byte) []byte { return append(b, 0) }},
		change{"cut the last byte", func(b []byte) []byte { return b[:len(b)-1] }},
	)
	for _, c := range changes {
		f.be.mutate(h, func([]byte) []byte { return c.fn(append([]byte(nil), orig...)) })
		res := f.check(t, CheckOptions{ReadData: true})
		named := false
		for _, p := range errorsOf(res) {
			named = named || (p.Pack != nil && *p.Pack == pid)
		}
		if !named {
			dumpProblems(t, res)
			t.Fatalf("%s: no error names pack %s", c.name, pid.Short())
		}
	}
	f.be.mutate(h, func([]byte) []byte { return orig })
	if res := f.check(t, CheckOptions{ReadData: true}); !res.OK() {
		dumpProblems(t, res)
		t.Fatal("the restored pack does not check")
	}
}
