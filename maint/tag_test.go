package maint

import (
	"context"
	"errors"
	"strings"
	"testing"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

func TestNewTags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		old     []string
		opts    TagOptions
		want    string
		changed bool
	}{
		{"add to none", nil, TagOptions{Add: []string{"a", "b"}}, "a,b", true},
		{"add present", []string{"a"}, TagOptions{Add: []string{"a"}}, "a", false},
		{"add twice", []string{"x"}, TagOptions{Add: []string{"a", "a"}}, "x,a", true},
		{"remove", []string{"a", "b", "a"}, TagOptions{Remove: []string{"a"}}, "b", true},
		{"remove moves the last tag", []string{"a", "b", "c", "d"}, TagOptions{Remove: []string{"b"}}, "a,d,c", true},
		{"remove absent", []string{"b"}, TagOptions{Remove: []string{"a"}}, "b", false},
		{"add and remove", []string{"a"}, TagOptions{Add: []string{"b"}, Remove: []string{"a"}}, "b", true},
		{"add then remove same", []string{"a"}, TagOptions{Add: []string{"b"}, Remove: []string{"b"}}, "a", false},
		{"set", []string{"a", "b"}, TagOptions{Replace: true, Set: []string{"c", "c"}}, "c", true},
		{"set same", []string{"a", "b"}, TagOptions{Replace: true, Set: []string{"a", "b"}}, "a,b", false},
		{"set reorders", []string{"a", "b"}, TagOptions{Replace: true, Set: []string{"b", "a"}}, "b,a", true},
		{"set empty", []string{"a"}, TagOptions{Replace: true}, "", true},
		{"set empty on none", nil, TagOptions{Replace: true}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := NewTags(tc.old, tc.opts)
			if strings.Join(got, ",") != tc.want || changed != tc.changed {
				t.Fatalf("got %q (changed %v), want %q (changed %v)", got, changed, tc.want, tc.changed)
			}
		})
	}
}

func snapshotsByOriginal(t *testing.T, f *chkFixture) map[crypto.ID]*snapshot.Snapshot {
	t.Helper()
	snaps, _, err := f.open(t).Snapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[crypto.ID]*snapshot.Snapshot{}
	for _, sn := range snaps {
		key := sn.ID
		if sn.Original != nil {
			key = *sn.Original
		}
		if out[key] != nil {
			t.Fatalf("two snapshots for %s", key.Short())
		}
		out[key] = sn
	}
	return out
}

func TestChangeTags(t *testing.T) {
	ctx := context.Background()
	f := newChkFixture(t)
	a, b := f.snaps[0].ID, f.snaps[1].ID

	// --add on every snapshot.
	res, err := ChangeTags(ctx, f.open(t), TagOptions{Add: []string{"x", "y"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Selected != 2 || len(res.Changed) != 2 || res.Changed[0].Old != a || res.Changed[1].Old != b {
		t.Fatalf("%+v", res)
	}
	got := snapshotsByOriginal(t, f)
	for i, orig := range f.snaps {
		sn := got[orig.ID]
		if sn == nil || sn.ID != res.Changed[i].New || strings.Join(sn.Tags, ",") != "x,y" || sn.Tree != orig.Tree ||
			!sn.Time.Equal(orig.Time) || sn.Hostname != orig.Hostname {
			t.Fatalf("snapshot %d: %+v", i, sn)
		}
	}
	if n := len(f.be.names(backend.SnapshotFile)); n != 2 {
		t.Fatalf("%d snapshot files, want 2", n)
	}

	// --remove on one snapshot by id prefix keeps the first Original.
	res, err = ChangeTags(ctx, f.open(t), TagOptions{Snapshots: []string{got[b].ID.String()[:10]}, Remove: []string{"x"}})
	if err != nil || len(res.Changed) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	got = snapshotsByOriginal(t, f)
	if strings.Join(got[b].Tags, ",") != "y" || strings.Join(got[a].Tags, ",") != "x,y" || *got[b].Original != b {
		t.Fatalf("after remove: %v / %v", got[a].Tags, got[b].Tags)
	}

	// --set on the snapshots a filter selects; an unchanged one is not
	// rewritten.
	keepID := got[a].ID
	res, err = ChangeTags(ctx, f.open(t), TagOptions{Filter: snapshot.Filter{Tags: []string{"y"}}, Replace: true, Set: []string{"x", "y"}})
	if err != nil || res.Selected != 2 || len(res.Changed) != 1 || res.Changed[0].Old != got[b].ID {
		t.Fatalf("%+v %v", res, err)
	}
	got = snapshotsByOriginal(t, f)
	if got[a].ID != keepID || strings.Join(got[b].Tags, ",") != "x,y" {
		t.Fatal("set changed the wrong snapshots")
	}

	// Nothing to change.
	res, err = ChangeTags(ctx, f.open(t), TagOptions{Add: []string{"x"}})
	if err != nil || len(res.Changed) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if res := f.check(t, CheckOptions{}); len(res.Problems) != 0 {
		dumpProblems(t, res)
		t.Fatal("check fails after tag")
	}
}

func TestChangeTagsErrors(t *testing.T) {
	f := newChkFixture(t)
	for _, tc := range []struct {
		opts TagOptions
		want error
	}{
		{TagOptions{}, ErrNoTagChange},
		{TagOptions{Replace: true, Set: []string{"a"}, Add: []string{"b"}}, ErrTagConflict},
		{TagOptions{Replace: true, Remove: []string{"b"}}, ErrTagConflict},
		{TagOptions{Add: []string{"a"}, Snapshots: []string{"0000"}}, snapshot.ErrNotFound},
	} {
		if _, err := ChangeTags(context.Background(), f.open(t), tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.opts, err, tc.want)
		}
	}
}

func TestSelectSnapshots(t *testing.T) {
	mk := func(id byte, host string, tags ...string) *snapshot.Snapshot {
		return &snapshot.Snapshot{ID: crypto.ID{id}, Hostname: host, Tags: tags}
	}
	all := []*snapshot.Snapshot{mk(0xa1, "h1", "t"), mk(0xb2, "h2"), mk(0xc3, "h1")}
	for _, tc := range []struct {
		refs    []string
		filter  snapshot.Filter
		want    string
		ignored bool
	}{
		{nil, snapshot.Filter{}, "a1,b2,c3", false},
		{nil, snapshot.Filter{Hosts: []string{"h1"}}, "a1,c3", false},
		{[]string{"b2", "a1", "b2"}, snapshot.Filter{}, "b2,a1", false},
		{[]string{"b2"}, snapshot.Filter{Hosts: []string{"h1"}}, "b2", true},
		{[]string{"latest"}, snapshot.Filter{Tags: []string{"t"}}, "a1", false},
	} {
		got, err := SelectSnapshots(all, tc.refs, tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, sn := range got {
			ids = append(ids, sn.ID.String()[:2])
		}
		if strings.Join(ids, ",") != tc.want || FilterIgnored(tc.refs, tc.filter) != tc.ignored {
			t.Errorf("%v %+v: %v", tc.refs, tc.filter, ids)
		}
	}
}
