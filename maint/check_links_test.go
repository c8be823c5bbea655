package maint

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// TestCheckHardLinkConflict: two nodes of one snapshot that claim one
// inode with different contents give a warning naming both paths (check
// passed them without a word); the same inode with different contents in
// two snapshots (a linked file changed between backups) and true hard
// links give none.
func TestCheckHardLinkConflict(t *testing.T) {
	ctx := context.Background()
	be := newChkBackend()
	r, err := repo.Init(ctx, be, chkPassword, chkOptions())
	if err != nil {
		t.Fatal(err)
	}
	one, _, _ := r.SaveBlob(ctx, pack.DataBlob, []byte("one"))
	two, _, _ := r.SaveBlob(ctx, pack.DataBlob, []byte("two"))
	link := func(name string, content crypto.ID) *tree.Node {
		return &tree.Node{Name: name, Type: tree.File, Mode: 0o644, Size: 3, Links: 2, Inode: 5, DeviceID: 1, Content: []crypto.ID{content}}
	}
	save := func(tr *tree.Tree) crypto.ID {
		id, _, err := r.SaveTree(ctx, tr)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	dir := func(name string, sub crypto.ID) *tree.Node {
		return &tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o755, Subtree: &sub}
	}
	// Snapshot 1: a and sub/c are links to one file, sub/b claims their
	// inode with other content.
	sub := save(&tree.Tree{Nodes: []*tree.Node{link("b", two), link("c", one)}})
	root1 := save(&tree.Tree{Nodes: []*tree.Node{link("a", one), dir("sub", sub)}})
	// Snapshot 2: the same inode with "two" only (the file changed).
	root2 := save(&tree.Tree{Nodes: []*tree.Node{link("a", two), link("x", two)}})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn1 := &snapshot.Snapshot{Time: time.Now(), Tree: root1, Paths: []string{"/x"}}
	sn2 := &snapshot.Snapshot{Time: time.Now(), Tree: root2, Paths: []string{"/x"}}
	for _, sn := range []*snapshot.Snapshot{sn1, sn2} {
		if err := r.SaveSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
	}
	r2, _ := repo.Open(ctx, be, chkPassword, chkOptions())
	res, err := Check(ctx, r2, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() || res.Warnings != 1 || countKind(res, KindHardLinkConflict) != 1 {
		dumpProblems(t, res)
		t.Fatalf("errors %d, warnings %d, hard link conflicts %d; want 0, 1, 1", res.Errors, res.Warnings, countKind(res, KindHardLinkConflict))
	}
	var p *Problem
	for _, q := range res.Problems {
		if q.Kind == KindHardLinkConflict {
			p = q
		}
	}
	if p.Severity != SeverityWarning || p.Snapshot == nil || *p.Snapshot != sn1.ID ||
		!strings.Contains(p.Message, `"/a"`) || !strings.Contains(p.Message, `"/sub/b"`) {
		t.Errorf("problem %+v", p)
	}
}
