package maint

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/fault"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// copyFixture is a source repository with snapshots of known files, and an
// empty target repository with another master key.
type copyFixture struct {
	srcBE, dstBE backend.Backend
	src          *repo.Repository
	snaps        []*snapshot.Snapshot
	files        []map[string][]byte // per snapshot: "/dir/file" -> content
}

func copyOptions() repo.Options {
	return repo.Options{KDF: &crypto.TestKDF, PackSize: 8 << 10}
}

// saveFiles writes files as a snapshot of host at time t.
func saveFiles(t *testing.T, r *repo.Repository, files map[string][]byte, host string, at time.Time, tags ...string) *snapshot.Snapshot {
	t.Helper()
	ctx := context.Background()
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
	sn := &snapshot.Snapshot{Time: at, Tree: id, Paths: []string{"/data"}, Hostname: host, Username: "me", Tags: tags}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

func newCopyFixture(t *testing.T) *copyFixture {
	t.Helper()
	ctx := context.Background()
	f := &copyFixture{srcBE: mem.New(), dstBE: mem.New()}
	src, err := repo.Init(ctx, f.srcBE, repo.TestPassword, copyOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	dst, err := repo.Init(ctx, f.dstBE, repo.TestPassword, copyOptions())
	if err != nil {
		t.Fatal(err)
	}
	dst.Close()
	f.src = src
	rng := rand.New(rand.NewPCG(3, 4))
	shared := randBytes(rng, 5000)
	first := map[string][]byte{
		"/docs/shared.txt": shared,
		"/docs/a.bin":      randBytes(rng, 4000),
		"/docs/deep/b.bin": randBytes(rng, 3100),
		"/top.txt":         []byte("hello world"),
		"/empty":           {},
		"/dup.txt":         shared, // the same blobs twice in one snapshot
	}
	second := map[string][]byte{
		"/docs/shared.txt": shared,
		"/docs/a.bin":      randBytes(rng, 4200), // changed
		"/docs/deep/b.bin": first["/docs/deep/b.bin"],
		"/new/c.bin":       randBytes(rng, 6000),
		"/new/d.bin":       randBytes(rng, 2000),
		"/top.txt":         []byte("hello world"),
	}
	third := map[string][]byte{"/other.txt": randBytes(rng, 2500)}
	f.files = []map[string][]byte{first, second, third}
	base := time.Unix(1700000000, 0)
	f.snaps = append(f.snaps,
		saveFiles(t, src, first, "host", base),
		saveFiles(t, src, second, "host", base.Add(time.Hour), "daily"),
		saveFiles(t, src, third, "other", base.Add(2*time.Hour)))
	return f
}

// openTarget opens the target with its index loaded; it is closed when
// the test ends.
func (f *copyFixture) openTarget(t *testing.T, be backend.Backend) *repo.Repository {
	t.Helper()
	if be == nil {
		be = f.dstBE
	}
	r, err := repo.Open(context.Background(), be, repo.TestPassword, copyOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadIndex(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (f *copyFixture) copy(t *testing.T, dst *repo.Repository, opts CopyOptions) *CopyResult {
	t.Helper()
	res, err := Copy(context.Background(), f.src, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readFiles returns the content of every file below tree root, and the
// number of blobs of each.
func readFiles(t *testing.T, r *repo.Repository, root crypto.ID) (map[string][]byte, map[string]int) {
	t.Helper()
	ctx := context.Background()
	files := map[string][]byte{}
	blobs := map[string]int{}
	var walk func(id crypto.ID, prefix string)
	walk = func(id crypto.ID, prefix string) {
		tr, err := r.LoadTree(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			switch n.Type {
			case tree.Dir:
				walk(*n.Subtree, prefix+n.Name+"/")
			case tree.File:
				var data []byte
				for _, b := range n.Content {
					plain, err := r.LoadBlob(ctx, b, nil)
					if err != nil {
						t.Fatal(err)
					}
					data = append(data, plain...)
				}
				if data == nil {
					data = []byte{}
				}
				files[prefix+n.Name] = data
				blobs[prefix+n.Name] = len(n.Content)
			}
		}
	}
	walk(root, "/")
	return files, blobs
}

func targetSnapshots(t *testing.T, r *repo.Repository) []*snapshot.Snapshot {
	t.Helper()
	list, problems, err := r.Snapshots(context.Background())
	if err != nil || len(problems) > 0 {
		t.Fatalf("target snapshots: %v %v", err, problems)
	}
	return list
}

// assertCopies checks that the target holds exactly a copy of each of the
// source snapshots idx, with the same files, the same blob boundaries and
// the source id as original, and that it checks clean.
func (f *copyFixture) assertCopies(t *testing.T, idx ...int) {
	t.Helper()
	dst := f.openTarget(t, nil)
	list := targetSnapshots(t, dst)
	if len(list) != len(idx) {
		t.Fatalf("target has %d snapshots, want %d", len(list), len(idx))
	}
	for _, i := range idx {
		src := f.snaps[i]
		var got *snapshot.Snapshot
		for _, d := range list {
			if d.Original != nil && *d.Original == src.ID {
				got = d
			}
		}
		if got == nil {
			t.Fatalf("no copy of source snapshot %d (%s)", i, src.ID.Short())
		}
		if !got.Time.Equal(src.Time) || got.Hostname != src.Hostname || got.Username != src.Username ||
			strings.Join(got.Paths, ",") != strings.Join(src.Paths, ",") || strings.Join(got.Tags, ",") != strings.Join(src.Tags, ",") || got.Parent != nil {
			t.Fatalf("copy of snapshot %d: %+v, source %+v", i, got, src)
		}
		if got.Tree == src.Tree {
			t.Fatal("the copy has the source's tree id: blobs were not rehashed with the target's key")
		}
		files, blobs := readFiles(t, dst, got.Tree)
		srcFiles, srcBlobs := readFiles(t, f.src, src.Tree)
		if len(files) != len(f.files[i]) {
			t.Fatalf("copy of snapshot %d has %d files, want %d", i, len(files), len(f.files[i]))
		}
		for p, want := range f.files[i] {
			if !bytes.Equal(files[p], want) || !bytes.Equal(srcFiles[p], want) {
				t.Fatalf("copy of snapshot %d: %s differs", i, p)
			}
			if blobs[p] != srcBlobs[p] {
				t.Fatalf("copy of snapshot %d: %s has %d blobs, the source %d (chunks must keep their boundaries)", i, p, blobs[p], srcBlobs[p])
			}
		}
	}
	res, err := Check(context.Background(), f.openTargetRaw(t), CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		dumpProblems(t, res)
		t.Fatal("target does not check clean")
	}
}

// openTargetRaw opens the target without loading the index (for Check).
func (f *copyFixture) openTargetRaw(t *testing.T) *repo.Repository {
	t.Helper()
	r, err := repo.Open(context.Background(), f.dstBE, repo.TestPassword, copyOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestCopyAllThenNothing(t *testing.T) {
	f := newCopyFixture(t)
	var logs strings.Builder
	var progressed bool
	res := f.copy(t, f.openTarget(t, nil), CopyOptions{
		Logf:     func(format string, a ...any) { logs.WriteString(strings.TrimSpace(format)) },
		Progress: func(CopyProgress) { progressed = true },
	})
	if res.Copied != 3 || res.Skipped != 0 || len(res.Snapshots) != 3 || !progressed {
		t.Fatalf("first copy: %+v (progress reported: %v)", res, progressed)
	}
	var total uint64
	for _, files := range f.files {
		for _, data := range files {
			total += uint64(len(data))
		}
	}
	// Each distinct blob is read once: the shared and unchanged files of
	// the second snapshot come from the first's copy, dup.txt from the
	// memo.
	if res.BytesRead >= total || res.DataBlobsAdded == 0 || res.TreeBlobsAdded == 0 {
		t.Fatalf("first copy read %d of %d bytes: %+v", res.BytesRead, total, res)
	}
	f.assertCopies(t, 0, 1, 2)

	res = f.copy(t, f.openTarget(t, nil), CopyOptions{})
	if res.Copied != 0 || res.Skipped != 3 || res.BytesRead != 0 || res.DataBlobsAdded != 0 || res.TreeBlobsAdded != 0 {
		t.Fatalf("second copy: %+v", res)
	}
	for i, cs := range res.Snapshots {
		if !cs.Skipped || cs.Source != f.snaps[i].ID {
			t.Fatalf("second copy, snapshot %d: %+v", i, cs)
		}
	}
	f.assertCopies(t, 0, 1, 2)
}

func TestCopySelection(t *testing.T) {
	tests := []struct {
		name   string
		refs   []string
		filter snapshot.Filter
		want   []int
	}{
		{"latest", []string{"latest"}, snapshot.Filter{}, []int{2}},
		{"latest of a host", []string{"latest"}, snapshot.Filter{Hosts: []string{"host"}}, []int{1}},
		{"host filter", nil, snapshot.Filter{Hosts: []string{"host"}}, []int{0, 1}},
		{"tag filter", nil, snapshot.Filter{Tags: []string{"daily"}}, []int{1}},
		{"ids", []string{"", ""}, snapshot.Filter{}, []int{2, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newCopyFixture(t)
			refs := tc.refs
			if tc.name == "ids" {
				refs = []string{f.snaps[2].ID.String()[:10], f.snaps[0].ID.String()}
			}
			res := f.copy(t, f.openTarget(t, nil), CopyOptions{Snapshots: refs, Filter: tc.filter})
			if res.Copied != len(tc.want) {
				t.Fatalf("copied %d, want %d", res.Copied, len(tc.want))
			}
			f.assertCopies(t, tc.want...)
		})
	}
	f := newCopyFixture(t)
	if _, err := Copy(context.Background(), f.src, f.openTarget(t, nil), CopyOptions{Snapshots: []string{"deadbeef"}}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

// An earlier copy of a snapshot tells the target ids of the files that did
// not change: the next snapshot reads only what is new.
func TestCopyLearnsFromEarlierCopy(t *testing.T) {
	f := newCopyFixture(t)
	f.copy(t, f.openTarget(t, nil), CopyOptions{Snapshots: []string{f.snaps[0].ID.String()}})
	res := f.copy(t, f.openTarget(t, nil), CopyOptions{Snapshots: []string{f.snaps[1].ID.String()}})
	changed := len(f.files[1]["/docs/a.bin"]) + len(f.files[1]["/new/c.bin"]) + len(f.files[1]["/new/d.bin"])
	if res.BytesRead != uint64(changed) {
		t.Fatalf("second snapshot read %d bytes, want %d (only the changed and new files)", res.BytesRead, changed)
	}
	if res.DataBlobsAdded == 0 {
		t.Fatalf("%+v", res)
	}
	f.assertCopies(t, 0, 1)
}

// A copy that is not faithful teaches nothing: a file whose metadata in
// the target differs from the source is read again.
func TestCopyDoesNotTrustChangedFiles(t *testing.T) {
	f := newCopyFixture(t)
	ctx := context.Background()
	dst := f.openTarget(t, nil)
	f.copy(t, dst, CopyOptions{Snapshots: []string{f.snaps[0].ID.String()}})
	// Change the mode of /top.txt in the target copy (as a foreign tool
	// might) and replace that snapshot with one using the changed tree.
	old := targetSnapshots(t, dst)[0]
	root, err := dst.LoadTree(ctx, old.Tree)
	if err != nil {
		t.Fatal(err)
	}
	root.Find("top.txt").Mode = 0o600
	newRoot, _, err := dst.SaveTree(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ns := *old
	ns.Tree = newRoot
	if err := dst.SaveSnapshot(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	if err := dst.RemoveSnapshot(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	res := f.copy(t, f.openTarget(t, nil), CopyOptions{Snapshots: []string{f.snaps[1].ID.String()}})
	changed := len(f.files[1]["/docs/a.bin"]) + len(f.files[1]["/new/c.bin"]) + len(f.files[1]["/new/d.bin"]) + len("hello world")
	if res.BytesRead != uint64(changed) {
		t.Fatalf("read %d bytes, want %d (top.txt must be read again)", res.BytesRead, changed)
	}
}

// A copy that fails half way leaves an index for the packs it uploaded
// and no snapshot; the next run reuses the packs and completes.
func TestCopyResumesAfterFailure(t *testing.T) {
	f := newCopyFixture(t)
	ctx := context.Background()
	fb := fault.New(f.dstBE)
	dst := f.openTarget(t, fb)
	fb.Add(fault.Rule{Op: fault.Save, Type: backend.PackFile, Nth: 3, Times: -1})
	_, err := Copy(ctx, f.src, dst, CopyOptions{Workers: 1})
	if !errors.Is(err, fault.ErrInjected) {
		t.Fatalf("copy with failing pack uploads: %v", err)
	}
	fb.Reset()
	after := f.openTarget(t, nil)
	if n := len(targetSnapshots(t, after)); n != 0 {
		t.Fatalf("a failed copy left %d snapshots", n)
	}
	if after.Index().Len() == 0 {
		t.Fatal("a failed copy indexed none of the packs it uploaded")
	}
	indexed := after.Index().Len()

	res := f.copy(t, after, CopyOptions{})
	if res.Copied != 3 {
		t.Fatalf("resumed copy: %+v", res)
	}
	// The blobs of the first run were not stored again.
	dups := 0
	final := f.openTarget(t, nil).Index()
	final.Each(func(pb index.PackedBlob) bool {
		if len(final.Lookup(pb.Type, pb.ID)) > 1 {
			dups++
		}
		return true
	})
	if dups > 0 || final.Len() <= indexed {
		t.Fatalf("%d blobs stored twice after resuming", dups)
	}
	f.assertCopies(t, 0, 1, 2)
}

// Each tree of the target is a rewrite of a source tree: same names, and
// ids that the target knows.
func TestCopyRewritesEveryID(t *testing.T) {
	f := newCopyFixture(t)
	dst := f.openTarget(t, nil)
	f.copy(t, dst, CopyOptions{})
	dst = f.openTarget(t, nil)
	srcIDs := map[crypto.ID]bool{}
	f.src.Index().Each(func(pb index.PackedBlob) bool { srcIDs[pb.ID] = true; return true })
	var ids []string
	dst.Index().Each(func(pb index.PackedBlob) bool {
		if srcIDs[pb.ID] {
			t.Errorf("target blob %s has a source id", pb.ID.Short())
		}
		if pb.Type == pack.TreeBlob {
			ids = append(ids, pb.ID.String())
		}
		return true
	})
	sort.Strings(ids)
	if len(ids) == 0 {
		t.Fatal("no trees in the target")
	}
}
