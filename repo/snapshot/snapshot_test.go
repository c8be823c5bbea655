package snapshot

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"dj/repo/crypto"
)

func snap(b byte, t int64, host string, tags ...string) *Snapshot {
	return &Snapshot{ID: crypto.ID{b, 0xaa}, Time: time.Unix(t, 0), Hostname: host, Tags: tags, Paths: []string{"/home"}}
}

func TestFind(t *testing.T) {
	list := []*Snapshot{snap(0x11, 100, "a"), snap(0x12, 300, "b"), snap(0x21, 200, "a")}
	cases := []struct {
		ref  string
		want *Snapshot
		err  error
	}{
		{"latest", list[1], nil},
		{list[2].ID.String(), list[2], nil},
		{"21", list[2], nil},
		{"1", nil, ErrAmbiguous},
		{"ff", nil, ErrNotFound},
		{"", nil, ErrNotFound},
		{"11AA", list[0], nil},
	}
	for _, c := range cases {
		got, err := Find(list, c.ref)
		if !errors.Is(err, c.err) || got != c.want {
			t.Errorf("Find(%q) = %v, %v", c.ref, got, err)
		}
	}
	if _, err := Find(nil, "latest"); !errors.Is(err, ErrNotFound) {
		t.Errorf("latest of nothing: %v", err)
	}
}

func TestFilter(t *testing.T) {
	list := []*Snapshot{snap(1, 1, "a", "daily"), snap(2, 2, "b", "daily", "db"), snap(3, 3, "a")}
	cases := []struct {
		f    Filter
		want int
	}{
		{Filter{}, 3},
		{Filter{Hosts: []string{"a"}}, 2},
		{Filter{Tags: []string{"daily"}}, 2},
		{Filter{Tags: []string{"daily,db"}}, 1},
		{Filter{Tags: []string{"db", "nope"}}, 1},
		{Filter{Paths: []string{"/home/"}}, 3},
		{Filter{Paths: []string{"/etc"}}, 0},
	}
	for _, c := range cases {
		if got := len(c.f.Apply(list)); got != c.want {
			t.Errorf("%+v: %d snapshots, want %d", c.f, got, c.want)
		}
	}
	s := snap(9, 9, "h")
	s.Paths = []string{"/b", "/a"}
	if !s.HasPaths([]string{"/a", "/b"}) || s.HasPaths([]string{"/a"}) {
		t.Error("HasPaths")
	}
	SortByTime(list)
	if list[0].Time.Unix() != 1 || list[2].Time.Unix() != 3 {
		t.Error("SortByTime")
	}
}

// TestFilterRestic checks that --host, --tag and --path select what restic's
// select: the tags of one --tag value must all be present, repeated --tag
// values are alternatives, an empty --tag value selects untagged snapshots,
// repeated --host values are alternatives and repeated --path values must
// all be among the snapshot's paths.
func TestFilterRestic(t *testing.T) {
	mk := func(name, host string, paths []string, tags ...string) *Snapshot {
		return &Snapshot{ID: crypto.ID{name[0]}, Hostname: host, Paths: paths, Tags: tags}
	}
	a, b := []string{"/srv/a"}, []string{"/srv/b"}
	ab := []string{"/srv/a", "/srv/b"}
	list := []*Snapshot{
		mk("1", "x", a, "a", "b"),
		mk("2", "x", a, "a"),
		mk("3", "y", a),
		mk("4", "y", ab, "c"),
		mk("5", "z", b, "a", "b", "c"),
	}
	cases := []struct {
		name string
		f    Filter
		want string
	}{
		{"nothing", Filter{}, "12345"},
		{"one tag", Filter{Tags: []string{"a"}}, "125"},
		{"a,b is both", Filter{Tags: []string{"a,b"}}, "15"},
		{"a, b with spaces", Filter{Tags: []string{" a, b "}}, "15"},
		{"repeated is either", Filter{Tags: []string{"a", "b"}}, "125"},
		{"empty is untagged", Filter{Tags: []string{""}}, "3"},
		{"empty with spaces", Filter{Tags: []string{" "}}, "3"},
		{"empty or c", Filter{Tags: []string{"", "c"}}, "345"},
		{"a,b or c", Filter{Tags: []string{"a,b", "c"}}, "145"},
		{"a,b or empty", Filter{Tags: []string{"a,b", ""}}, "135"},
		{"empty first in a list", Filter{Tags: []string{",c"}}, "3"},
		{"empty last in a list", Filter{Tags: []string{"a,"}}, ""},
		{"unknown tag", Filter{Tags: []string{"nope"}}, ""},
		{"tags are case sensitive", Filter{Tags: []string{"A"}}, ""},
		{"one host", Filter{Hosts: []string{"x"}}, "12"},
		{"repeated host is either", Filter{Hosts: []string{"x", "y"}}, "1234"},
		{"empty host", Filter{Hosts: []string{""}}, ""},
		{"one path", Filter{Paths: []string{"/srv/a"}}, "1234"},
		{"path cleaned", Filter{Paths: []string{"/srv/a/"}}, "1234"},
		{"repeated path is all", Filter{Paths: []string{"/srv/a", "/srv/b"}}, "4"},
		{"path of none", Filter{Paths: []string{"/srv"}}, ""},
		{"host and tags", Filter{Hosts: []string{"x", "z"}, Tags: []string{"a,b"}}, "15"},
		{"host, tags and path", Filter{Hosts: []string{"y", "z"}, Tags: []string{"c"}, Paths: []string{"/srv/b"}}, "45"},
		{"untagged of host x", Filter{Hosts: []string{"x"}, Tags: []string{""}}, ""},
	}
	for _, c := range cases {
		var got strings.Builder
		for _, s := range c.f.Apply(list) {
			got.WriteByte(s.ID[0])
		}
		if got.String() != c.want {
			t.Errorf("%s: hosts %q tags %q paths %q select %q, want %q", c.name, c.f.Hosts, c.f.Tags, c.f.Paths, got.String(), c.want)
		}
	}
}

func TestParseTagList(t *testing.T) {
	cases := map[string]string{
		"":         `[""]`,
		"a":        `["a"]`,
		"a,b":      `["a" "b"]`,
		" a , b ":  `["a" "b"]`,
		"a,,b":     `["a" "" "b"]`,
		"tag with": `["tag with"]`,
	}
	for in, want := range cases {
		if got := fmt.Sprintf("%q", []string(ParseTagList(in))); got != want {
			t.Errorf("ParseTagList(%q) = %s, want %s", in, got, want)
		}
	}
	if s := ParseTagList("a,b").String(); s != "[a, b]" {
		t.Errorf("String: %q", s)
	}
}

func TestFindAll(t *testing.T) {
	list := []*Snapshot{snap(0x11, 100, "a"), snap(0x12, 300, "b"), snap(0x21, 200, "a")}
	f := Filter{Hosts: []string{"a"}}
	got, errs := FindAll(list, []string{"12", "latest", "11", "1", "ff", "21", "12"}, f)
	want := []*Snapshot{list[1], list[2], list[0]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("FindAll: %v, want %v (the IDs ignore the filter, latest uses it, no duplicates)", got, want)
	}
	if len(errs) != 2 || !errors.Is(errs[0], ErrAmbiguous) || !errors.Is(errs[1], ErrNotFound) {
		t.Errorf("FindAll errors: %v", errs)
	}
}
