package maint

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/pathmatch"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// excluder compiles restic-style exclude patterns.
func excluder(t *testing.T, patterns ...string) func(string) bool {
	t.Helper()
	l, err := pathmatch.CompileList(patterns, false)
	if err != nil {
		t.Fatal(err)
	}
	return l.Match
}

// without returns files minus the paths that match exclude.
func without(files map[string][]byte, exclude func(string) bool) map[string][]byte {
	out := map[string][]byte{}
	for p, data := range files {
		if !exclude(p) {
			out[p] = data
		}
	}
	return out
}

func rewriteOK(t *testing.T, r *repo.Repository, opts RewriteOptions) *RewriteResult {
	t.Helper()
	res, err := Rewrite(context.Background(), r, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// assertFiles checks that a snapshot holds exactly want, byte for byte.
func assertFiles(t *testing.T, r *repo.Repository, root crypto.ID, want map[string][]byte) {
	t.Helper()
	got := readableFiles(t, r, root)
	if strings.Join(sortedKeys(got), " ") != strings.Join(sortedKeys(want), " ") {
		t.Fatalf("files %v, want %v", sortedKeys(got), sortedKeys(want))
	}
	for p, data := range want {
		if !bytes.Equal(got[p], data) {
			t.Fatalf("%s differs", p)
		}
	}
}

func TestRewriteExcludes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		patterns []string
		excluded [2]string // per snapshot, joined with ","
	}{
		{"file by name", []string{"a.bin"}, [2]string{"/docs/a.bin", "/docs/a.bin"}},
		{"glob at any depth", []string{"*.bin"}, [2]string{"/docs/a.bin,/docs/deep/b.bin", "/docs/a.bin,/docs/deep/b.bin,/new/c.bin,/new/d.bin"}},
		{"anchored directory", []string{"/docs/deep"}, [2]string{"/docs/deep", "/docs/deep"}},
		{"double star", []string{"/**/shared.txt", "/new"}, [2]string{"/docs/shared.txt", "/docs/shared.txt,/new"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newChkFixture(t)
			ex := excluder(t, tc.patterns...)
			res := rewriteOK(t, f.openIndexed(t), RewriteOptions{Exclude: ex})
			if len(res.Rewritten) != 2 || len(res.Snapshots) != 2 {
				t.Fatalf("%+v", res)
			}
			r := f.openIndexed(t)
			for i, rs := range res.Rewritten {
				orig := f.snaps[i]
				if rs.Original != orig.ID || rs.New == nil || rs.Removed {
					t.Fatalf("snapshot %d: %+v", i, rs)
				}
				if got := strings.Join(rs.Excluded, ","); got != tc.excluded[i] {
					t.Fatalf("snapshot %d excluded %s, want %s", i, got, tc.excluded[i])
				}
				sn, err := r.LoadSnapshot(ctx, *rs.New)
				if err != nil {
					t.Fatal(err)
				}
				if sn.Original == nil || *sn.Original != orig.ID || !sn.Time.Equal(orig.Time) || sn.Hostname != orig.Hostname ||
					strings.Join(sn.Paths, ",") != strings.Join(orig.Paths, ",") || strings.Join(sn.Tags, ",") != RewriteTag {
					t.Fatalf("new snapshot %+v", sn)
				}
				assertFiles(t, r, sn.Tree, without(f.files[i], ex))
				// The original stays as it was.
				assertFiles(t, r, orig.Tree, f.files[i])
			}
			if got := f.be.names(backend.SnapshotFile); len(got) != 4 {
				t.Fatalf("%d snapshot files, want 4", len(got))
			}
			if res := f.check(t, CheckOptions{ReadData: true}); len(res.Problems) != 0 {
				dumpProblems(t, res)
				t.Fatal("check fails after rewrite")
			}
		})
	}
}

func TestRewriteForgetThenPruneFreesData(t *testing.T) {
	ctx := context.Background()
	f := newChkFixture(t)
	r := f.openIndexed(t)
	gone := blobIDs(r, f.files[0]["/docs/a.bin"])
	gone = append(gone, blobIDs(r, f.files[1]["/docs/a.bin"])...)
	res := rewriteOK(t, r, RewriteOptions{Exclude: excluder(t, "/docs/a.bin"), Forget: true})
	if len(res.Rewritten) != 2 || !res.Rewritten[0].Removed || !res.Rewritten[1].Removed {
		t.Fatalf("%+v", res)
	}
	snaps, _, err := f.open(t).Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots, want 2", len(snaps))
	}
	for i, sn := range snaps {
		if sn.HasTag(RewriteTag) || sn.Original == nil || *sn.Original != f.snaps[i].ID {
			t.Fatalf("snapshot %d: %+v", i, sn)
		}
	}
	opts := PruneOptions{MaxUnusedBytes: -1, InstantDelete: true}
	plan, err := PlanPrune(ctx, f.open(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Execute(ctx, f.open(t), opts); err != nil {
		t.Fatal(err)
	}
	r = f.openIndexed(t)
	for _, id := range gone {
		if r.HasBlob(pack.DataBlob, id) {
			t.Fatalf("blob %s of the excluded file survived prune", id.Short())
		}
	}
	for i, sn := range snaps {
		assertFiles(t, r, sn.Tree, without(f.files[i], excluder(t, "/docs/a.bin")))
	}
	if res := f.check(t, CheckOptions{ReadData: true}); len(res.Problems) != 0 {
		dumpProblems(t, res)
		t.Fatal("check fails after rewrite and prune")
	}
}

func TestRewriteNoChangesWritesNothing(t *testing.T) {
	f := newChkFixture(t)
	before := map[backend.FileType]string{}
	for _, ft := range []backend.FileType{backend.SnapshotFile, backend.IndexFile, backend.PackFile} {
		before[ft] = strings.Join(f.be.names(ft), ",")
	}
	res := rewriteOK(t, f.openIndexed(t), RewriteOptions{Exclude: excluder(t, "*.nothing", "/docs/a.bin/x"), Forget: true})
	if len(res.Rewritten) != 0 || len(res.Snapshots) != 2 {
		t.Fatalf("%+v", res)
	}
	for ft, names := range before {
		if got := strings.Join(f.be.names(ft), ","); got != names {
			t.Fatalf("%s files changed", ft)
		}
	}
}

func TestRewriteDryRun(t *testing.T) {
	f := newChkFixture(t)
	before := strings.Join(append(f.be.names(backend.SnapshotFile), f.be.names(backend.PackFile)...), ",")
	res := rewriteOK(t, f.openIndexed(t), RewriteOptions{Exclude: excluder(t, "/new"), Forget: true, DryRun: true})
	if len(res.Rewritten) != 1 || res.Rewritten[0].Original != f.snaps[1].ID || res.Rewritten[0].New != nil ||
		res.Rewritten[0].Removed || strings.Join(res.Rewritten[0].Excluded, ",") != "/new" || !res.DryRun {
		t.Fatalf("%+v", res)
	}
	if got := strings.Join(append(f.be.names(backend.SnapshotFile), f.be.names(backend.PackFile)...), ","); got != before {
		t.Fatal("dry run wrote files")
	}
}

func TestRewriteKeepsUnchangedSubtrees(t *testing.T) {
	ctx := context.Background()
	f := newChkFixture(t)
	r := f.openIndexed(t)
	res := rewriteOK(t, r, RewriteOptions{Exclude: excluder(t, "/top.txt"), Snapshots: []string{f.snaps[0].ID.String()}})
	if len(res.Rewritten) != 1 || len(res.Snapshots) != 1 {
		t.Fatalf("%+v", res)
	}
	sn, err := r.LoadSnapshot(ctx, *res.Rewritten[0].New)
	if err != nil {
		t.Fatal(err)
	}
	oldDocs, err := r.FindNode(ctx, f.snaps[0].Tree, "docs")
	if err != nil {
		t.Fatal(err)
	}
	newDocs, err := r.FindNode(ctx, sn.Tree, "docs")
	if err != nil {
		t.Fatal(err)
	}
	if *oldDocs.Subtree != *newDocs.Subtree || sn.Tree == f.snaps[0].Tree {
		t.Fatal("the unchanged subtree got a new id, or the root did not")
	}
}

func TestRewriteSelectionAndSummary(t *testing.T) {
	ctx := context.Background()
	f := newChkFixture(t)
	r := f.openIndexed(t)
	// A third snapshot with a summary and a tag, of the first one's tree.
	third := &snapshot.Snapshot{Time: f.snaps[1].Time.Add(3600e9), Tree: f.snaps[0].Tree, Paths: []string{"/data"}, Hostname: "other",
		Tags: []string{"keep"}, Summary: &snapshot.Summary{Counts: snapshot.Counts{FilesNew: 5, TotalFilesProcessed: 5, TotalBytesProcessed: 1}}}
	if err := r.SaveSnapshot(ctx, third); err != nil {
		t.Fatal(err)
	}
	// "latest" is the newest snapshot that passes the filter.
	res := rewriteOK(t, f.openIndexed(t), RewriteOptions{Exclude: excluder(t, "/docs"), Snapshots: []string{"latest"},
		Filter: snapshot.Filter{Hosts: []string{"host"}}})
	if len(res.Rewritten) != 1 || res.Rewritten[0].Original != f.snaps[1].ID {
		t.Fatalf("%+v", res)
	}
	// The filter selects without ids.
	res = rewriteOK(t, f.openIndexed(t), RewriteOptions{Exclude: excluder(t, "/docs/a.bin"), Filter: snapshot.Filter{Tags: []string{"keep"}}})
	if len(res.Rewritten) != 1 || res.Rewritten[0].Original != third.ID {
		t.Fatalf("%+v", res)
	}
	sn, err := f.open(t).LoadSnapshot(ctx, *res.Rewritten[0].New)
	if err != nil {
		t.Fatal(err)
	}
	want := without(f.files[0], excluder(t, "/docs/a.bin"))
	var size uint64
	for _, data := range want {
		size += uint64(len(data))
	}
	if sn.Summary == nil || sn.Summary.FilesNew != 5 || sn.Summary.TotalFilesProcessed != uint64(len(want)) || sn.Summary.TotalBytesProcessed != size ||
		strings.Join(sn.Tags, ",") != "keep,rewrite" || sn.Hostname != "other" {
		t.Fatalf("rewritten snapshot %+v %+v", sn, sn.Summary)
	}
	if _, err := Rewrite(ctx, f.openIndexed(t), RewriteOptions{Exclude: excluder(t, "x"), Snapshots: []string{"ffff"}}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestRewriteDamagedTreeChangesNothing(t *testing.T) {
	f := newChkFixture(t)
	r := f.openIndexed(t)
	deep, err := r.FindNode(context.Background(), f.snaps[0].Tree, "docs/deep")
	if err != nil {
		t.Fatal(err)
	}
	loc := r.Index().Lookup(pack.TreeBlob, *deep.Subtree)[0]
	f.be.mutate(backend.Handle{Type: backend.PackFile, Name: loc.PackID.String()}, func(b []byte) []byte {
		b[loc.Offset+30] ^= 0x40
		return b
	})
	before := strings.Join(append(f.be.names(backend.SnapshotFile), f.be.names(backend.PackFile)...), ",")
	if _, err := Rewrite(context.Background(), f.openIndexed(t), RewriteOptions{Exclude: excluder(t, "a.bin")}); err == nil {
		t.Fatal("rewrite of a snapshot with a lost tree succeeded")
	}
	if got := strings.Join(append(f.be.names(backend.SnapshotFile), f.be.names(backend.PackFile)...), ","); got != before {
		t.Fatal("a failed rewrite wrote files")
	}
	// Excluding the damaged directory works: it is never loaded.
	res := rewriteOK(t, f.openIndexed(t), RewriteOptions{Exclude: excluder(t, "/docs/deep")})
	if len(res.Rewritten) != 2 {
		t.Fatalf("%+v", res)
	}
}

// countingStore is a tree store in memory that counts saves.
type countingStore struct {
	*memTrees
	saves int
}

func (s *countingStore) SaveTree(_ context.Context, t *tree.Tree) (crypto.ID, bool, error) {
	b, err := t.Encode()
	if err != nil {
		return crypto.ID{}, false, err
	}
	id := crypto.Hash(b)
	s.saves++
	_, had := s.trees[id]
	s.trees[id] = b
	return id, !had, nil
}

func TestTreeRewriterSavesEachChangedTreeOnce(t *testing.T) {
	ctx := context.Background()
	m := newMemTrees()
	s := &countingStore{memTrees: m}
	big := m.dir(t, "big", m.file("x", "x"), m.dir(t, "sub", m.file("y", "y")))
	logs := m.dir(t, "logs", m.file("a.log", "a"), m.file("keep.txt", "k"))
	root1 := m.save(t, big, logs, m.file("z.log", "z"))
	root2 := m.save(t, big, logs, m.file("w", "w")) // shares big and logs
	root3 := m.save(t, with(logs, func(n *tree.Node) { n.Name = "moved" }))

	tw := newTreeRewriter(s)
	tw.keep = func(_ *tree.Node, p string) bool { return !strings.HasSuffix(p, ".log") }
	m.resetLoads()
	var plans []*treePlan
	for _, root := range []crypto.ID{root1, root2, root3} {
		p, err := tw.plan(ctx, root, "/")
		if err != nil {
			t.Fatal(err)
		}
		plans = append(plans, p)
	}
	// Each tree is loaded once per path it appears at: big, sub and logs
	// (at /logs) once for both roots, logs again at /moved.
	if m.loads[*big.Subtree] != 1 || m.loads[*logs.Subtree] != 2 || m.loads[root1] != 1 {
		t.Fatalf("loads %v", m.loads)
	}
	wantChanges := []string{"/logs/a.log,/z.log", "/logs/a.log", "/moved/a.log"}
	for i, p := range plans {
		var got []string
		for _, c := range p.changes("/") {
			got = append(got, c.Path)
		}
		if !p.changed || strings.Join(got, ",") != wantChanges[i] {
			t.Fatalf("plan %d: %v", i, got)
		}
	}
	if plans[0].files != 3 || plans[0].bytes != 3 {
		t.Fatalf("plan 0 counts %d files, %d bytes", plans[0].files, plans[0].bytes)
	}
	var roots []crypto.ID
	for _, p := range plans {
		id, err := tw.write(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, id)
	}
	// New trees: logs (once, though planned at two paths it is saved
	// twice with the same content: the store deduplicates), root1, root2,
	// root3; big and sub are never saved.
	if s.saves != 5 {
		t.Fatalf("%d saves, want 5", s.saves)
	}
	nt, err := s.LoadTree(ctx, roots[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(nt.Nodes) != 3 || *nt.Nodes[0].Subtree != *big.Subtree || nt.Nodes[2].Name != "w" {
		t.Fatalf("new root 2: %+v", nt.Nodes)
	}
	nl, err := s.LoadTree(ctx, *nt.Nodes[1].Subtree)
	if err != nil || len(nl.Nodes) != 1 || nl.Nodes[0].Name != "keep.txt" {
		t.Fatalf("new logs: %+v %v", nl, err)
	}
}
