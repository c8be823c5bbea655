package maint

import (
	"context"
	"errors"
	"strings"
	"testing"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// treeMap is a TreeLoader over trees held in memory.
type treeMap map[crypto.ID]*tree.Tree

var errTreeGone = errors.New("tree gone")

func (m treeMap) LoadTree(_ context.Context, id crypto.ID) (*tree.Tree, error) {
	if t, ok := m[id]; ok {
		return t, nil
	}
	return nil, errTreeGone
}

func TestUsedBlobs(t *testing.T) {
	h := func(s string) crypto.ID { return crypto.Hash([]byte(s)) }
	sub, root1, root2, gone := h("sub"), h("root1"), h("root2"), h("gone")
	trees := treeMap{
		sub:   {Nodes: []*tree.Node{{Name: "f", Type: tree.File, Content: []crypto.ID{h("d1"), h("d2")}}}},
		root1: {Nodes: []*tree.Node{{Name: "a", Type: tree.Dir, Subtree: &sub}, {Name: "g", Type: tree.File, Content: []crypto.ID{h("d3")}}}},
		root2: {Nodes: []*tree.Node{{Name: "b", Type: tree.Dir, Subtree: &sub}, {Name: "x", Type: tree.Dir, Subtree: &gone}}},
	}
	sn1 := &snapshot.Snapshot{ID: h("sn1"), Tree: root1}
	sn2 := &snapshot.Snapshot{ID: h("sn2"), Tree: root2}

	used, err := UsedBlobs(context.Background(), trees, []*snapshot.Snapshot{sn1, sn1})
	if err != nil {
		t.Fatal(err)
	}
	want := BlobSet{
		{pack.TreeBlob, root1}: {}, {pack.TreeBlob, sub}: {},
		{pack.DataBlob, h("d1")}: {}, {pack.DataBlob, h("d2")}: {}, {pack.DataBlob, h("d3")}: {},
	}
	if len(used) != len(want) {
		t.Errorf("got %d blobs, want %d", len(used), len(want))
	}
	for ref := range want {
		if !used.Has(ref.Type, ref.ID) {
			t.Errorf("%s blob %s not reported as used", ref.Type, ref.ID.Short())
		}
	}

	_, err = UsedBlobs(context.Background(), trees, []*snapshot.Snapshot{sn1, sn2})
	if !errors.Is(err, errTreeGone) || !strings.Contains(err.Error(), "tree "+gone.Short()+" (snapshot "+sn2.ID.Short()+")") {
		t.Errorf("err = %v, want the missing tree and its snapshot named", err)
	}
}
