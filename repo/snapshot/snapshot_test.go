package snapshot

import (
	"errors"
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
