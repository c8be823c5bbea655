package maint

// Find's patterns against refMatch, a direct implementation of restic's
// documented matching.

import (
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"dj/repo/snapshot"
)

// refMatch is restic's filter.Match as documented: the pattern is cleaned
// and split at '/', its first "**" stands for any number of "*" elements,
// and the parts must match a run of the path's elements: at the root for a
// pattern starting with '/', anywhere for the others.
func refMatch(pattern, path string) bool {
	if pattern == "" {
		return true
	}
	return refMatchParts(strings.Split(filepath.Clean(pattern), "/"), strings.Split(path, "/"))
}

func refMatchParts(pp, ss []string) bool {
	for i, p := range pp {
		if p == "**" {
			for k := 0; k <= len(ss); k++ {
				np := append([]string(nil), pp[:i]...)
				for j := 0; j < k; j++ {
					np = append(np, "*")
				}
				np = append(np, pp[i+1:]...)
				if refMatchParts(np, ss) {
					return true
				}
			}
			return false
		}
	}
	if len(pp) == 0 || len(pp) > len(ss) {
		return false
	}
	lo, hi := 0, len(ss)-len(pp)
	if pp[0] == "" {
		hi = 0
	} else if ss[0] == "" {
		lo = 1
	}
outer:
	for off := lo; off <= hi; off++ {
		for i, p := range pp {
			if ok, _ := filepath.Match(p, ss[off+i]); !ok {
				continue outer
			}
		}
		return true
	}
	return false
}

func TestFindPatterns(t *testing.T) {
	f, snaps := findFixture(t)
	tests := []struct {
		name     string
		patterns []string
		fold     bool
		want     []string // paths in the second snapshot
	}{
		{"name", []string{"a.go"}, false, []string{"/home/ann/a.go"}},
		{"glob", []string{"*.go"}, false, []string{"/home/ann/a.go", "/home/ann/new.go", "/home/ann/sub/foo/c.go"}},
		{"case", []string{"*.go"}, true, []string{"/home/ann/a.go", "/home/ann/new.go", "/home/ann/sub/Foo.GO", "/home/ann/sub/foo/c.go"}},
		{"directory and everything below", []string{"foo"}, false, []string{"/home/ann/foo", "/home/ann/foo/b.txt", "/home/ann/sub/foo", "/home/ann/sub/foo/c.go"}},
		{"with a slash", []string{"dir/*"}, false, []string{"/home/ann/dir/d.txt", "/home/ann/dir/deep", "/home/ann/dir/deep/e.txt"}},
		{"anchored", []string{"/home/ann/dir"}, false, []string{"/home/ann/dir", "/home/ann/dir/d.txt", "/home/ann/dir/deep", "/home/ann/dir/deep/e.txt"}},
		{"anchored miss", []string{"/ann"}, false, nil},
		{"double star", []string{"/home/**/c.go"}, false, []string{"/home/ann/sub/foo/c.go"}},
		{"trailing slash", []string{"deep/"}, false, []string{"/home/ann/dir/deep", "/home/ann/dir/deep/e.txt"}},
		{"several", []string{"link", "foo.conf"}, false, []string{"/etc/foo.conf", "/home/ann/link"}},
		{"question mark", []string{"?.txt"}, false, []string{"/home/ann/dir/d.txt", "/home/ann/dir/deep/e.txt", "/home/ann/foo/b.txt"}},
		{"class", []string{"[ab].*"}, false, []string{"/home/ann/a.go", "/home/ann/foo/b.txt"}},
		{"no match", []string{"nothing"}, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := FindOptions{Patterns: tc.patterns, IgnoreCase: tc.fold}
			got, _ := findAll(t, f, snaps[1:], opts)
			var want []string
			for _, p := range tc.want {
				want = append(want, "0 "+p)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %q\nwant %q", got, want)
			}
			if ref := naiveFind(t, f.r, snaps[1:], opts); !reflect.DeepEqual(got, ref) {
				t.Errorf("restic's rules say %q", ref)
			}
		})
	}
}

// TestFindAgreesWithResticRules compares random patterns on random trees
// with a direct implementation of restic's matching.
func TestFindAgreesWithResticRules(t *testing.T) {
	f := newFindRepo(t)
	rng := rand.New(rand.NewPCG(5, 6))
	names := []string{"a", "b", "ab", "A", "x.go", "y.GO", "dir", "Dir", "a.b"}
	var snaps []*snapshot.Snapshot
	files := map[string]findFile{}
	for s := 0; s < 4; s++ {
		for i := 0; i < 40; i++ {
			depth := 1 + rng.IntN(4)
			p := ""
			for d := 0; d < depth; d++ {
				p += "/" + names[rng.IntN(len(names))]
			}
			// A path may not be a file and a directory at once.
			clash := false
			for q := range files {
				if strings.HasPrefix(q+"/", p+"/") || strings.HasPrefix(p+"/", q+"/") {
					clash = true
				}
			}
			if !clash {
				files[p] = findFile{data: p, mtime: findTime.Add(time.Duration(rng.IntN(10)) * time.Hour)}
			}
		}
		snaps = append(snaps, f.snap(t, files, findTime.Add(time.Duration(s)*time.Hour)))
	}
	nonEmpty := 0
	parts := []string{"a", "*", "a*", "?b", "**", "dir", "x.go", "*.go", "[ab]", "[!a]*", "A", ".", "b"}
	for i := 0; i < 400; i++ {
		n := 1 + rng.IntN(3)
		var ps []string
		for j := 0; j < n; j++ {
			ps = append(ps, parts[rng.IntN(len(parts))])
		}
		pat := strings.Join(ps, "/")
		if rng.IntN(3) == 0 {
			pat = "/" + pat
		}
		if rng.IntN(5) == 0 {
			pat += "/"
		}
		opts := FindOptions{Patterns: []string{pat}, IgnoreCase: rng.IntN(3) == 0}
		if rng.IntN(4) == 0 {
			opts.Oldest = findTime.Add(3 * time.Hour)
		}
		if rng.IntN(4) == 0 {
			opts.Patterns = append(opts.Patterns, parts[rng.IntN(len(parts))])
		}
		got, _ := findAll(t, f, snaps, opts)
		if ref := naiveFind(t, f.r, snaps, opts); !reflect.DeepEqual(got, ref) {
			t.Fatalf("%q (ignore case %v): got %q\nwant %q", opts.Patterns, opts.IgnoreCase, got, ref)
		}
		if len(got) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty < 100 {
		t.Errorf("only %d of the patterns found something", nonEmpty)
	}
}
