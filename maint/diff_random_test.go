package maint

// Randomized comparison of Diff against a naive full walk of random
// trees and their random mutations.

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
)

var randNames = []string{"a", "a.txt", "a-b", "a b", "b", "B", "c", "d.d", "z", "ß", "\xff\xfe", "é"}

type model struct {
	node     tree.Node // Subtree is filled in by materialize
	children map[string]*model
}

func (md *model) clone() *model {
	c := &model{node: md.node}
	c.node.Content = append([]crypto.ID(nil), md.node.Content...)
	c.node.Xattrs = append([]tree.Xattr(nil), md.node.Xattrs...)
	if md.children != nil {
		c.children = map[string]*model{}
		for k, v := range md.children {
			c.children[k] = v.clone()
		}
	}
	return c
}

type randTrees struct {
	rng *rand.Rand
	m   *memTrees
}

func (r *randTrees) content() []crypto.ID {
	var ids []crypto.ID
	for i := r.rng.Intn(4); i > 0; i-- {
		s := fmt.Sprint("chunk", r.rng.Intn(25))
		ids = append(ids, blobID(s))
		r.m.sizes[blobRef{blobID(s), false}] = len(s)
	}
	return ids
}

func (r *randTrees) leaf(name string) *model {
	md := &model{node: tree.Node{Name: name, ModTime: testTime.Add(time.Duration(r.rng.Intn(3)) * time.Second), Mode: 0o644}}
	switch r.rng.Intn(6) {
	case 0, 1, 2:
		md.node.Type = tree.File
		md.node.Content = r.content()
		md.node.Size = uint64(len(md.node.Content)) * 7
	case 3:
		md.node.Type = tree.Symlink
		md.node.LinkTarget = randNames[r.rng.Intn(len(randNames))]
	case 4:
		md.node.Type = tree.FIFO
	default:
		md.node.Type = tree.CharDev
		md.node.Rdev = uint64(r.rng.Intn(3))
	}
	return md
}

func (r *randTrees) gen(name string, depth int) *model {
	if depth > 0 && r.rng.Intn(3) > 0 && depth < 4 || depth == 0 {
		md := &model{node: tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o755, ModTime: testTime}, children: map[string]*model{}}
		for i := r.rng.Intn(6); i > 0; i-- {
			n := randNames[r.rng.Intn(len(randNames))]
			md.children[n] = r.gen(n, depth+1)
		}
		return md
	}
	return r.leaf(name)
}

// dirs lists all directories of the model.
func dirsOf(md *model, out []*model) []*model {
	if md.children == nil {
		return out
	}
	out = append(out, md)
	for _, c := range md.children {
		out = dirsOf(c, out)
	}
	return out
}

func randomKey(rng *rand.Rand, m map[string]*model) (string, bool) {
	if len(m) == 0 {
		return "", false
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys[rng.Intn(len(keys))], true
}

// mutate applies a few random edits to root in place.
func (r *randTrees) mutate(root *model) {
	for i := r.rng.Intn(6); i >= 0; i-- {
		dirs := dirsOf(root, nil)
		d := dirs[r.rng.Intn(len(dirs))]
		name, ok := randomKey(r.rng, d.children)
		op := r.rng.Intn(10)
		if !ok {
			op = 0
		}
		switch op {
		case 0: // add
			n := randNames[r.rng.Intn(len(randNames))]
			d.children[n] = r.gen(n, 2)
		case 1: // delete
			delete(d.children, name)
		case 2: // rename, maybe into another directory
			c := d.children[name]
			delete(d.children, name)
			to := dirs[r.rng.Intn(len(dirs))]
			if isBelow(to, c) {
				to = d
			}
			n := randNames[r.rng.Intn(len(randNames))]
			c.node.Name = n
			to.children[n] = c
		case 3: // type change
			c := r.leaf(name)
			if r.rng.Intn(3) == 0 {
				c = r.gen(name, 1)
			}
			d.children[name] = c
		case 4: // permissions
			d.children[name].node.Mode ^= 0o077
		case 5: // owner and times
			c := d.children[name]
			c.node.UID++
			c.node.ModTime = c.node.ModTime.Add(time.Minute)
		case 6: // content, target or device number
			c := d.children[name]
			switch c.node.Type {
			case tree.File:
				c.node.Content = r.content()
				if r.rng.Intn(2) == 0 {
					c.node.Size++
				}
			case tree.Symlink:
				c.node.LinkTarget += "x"
			default:
				c.node.Rdev++
			}
		case 7: // xattrs, sometimes only reordered
			c := d.children[name]
			if len(c.node.Xattrs) > 1 && r.rng.Intn(2) == 0 {
				c.node.Xattrs[0], c.node.Xattrs[1] = c.node.Xattrs[1], c.node.Xattrs[0]
			} else {
				x := tree.Xattr{Name: fmt.Sprint("user.", r.rng.Intn(3)), Value: []byte{byte(r.rng.Intn(2))}}
				dup := false
				for i := range c.node.Xattrs {
					if c.node.Xattrs[i].Name == x.Name {
						c.node.Xattrs[i].Value, dup = x.Value, true
					}
				}
				if !dup {
					c.node.Xattrs = append(c.node.Xattrs, x)
				}
			}
		case 8: // copy a subtree elsewhere, so that equal subtrees sit at different paths
			src := dirs[r.rng.Intn(len(dirs))]
			if src != root && !isBelow(d, src) {
				c := src.clone()
				c.node.Name = name
				d.children[name] = c
			}
		default: // leave it
		}
	}
}

func isBelow(d, top *model) bool {
	if d == top {
		return true
	}
	for _, c := range top.children {
		if isBelow(d, c) {
			return true
		}
	}
	return false
}

func (r *randTrees) materialize(t testing.TB, md *model) crypto.ID {
	var nodes []*tree.Node
	for _, c := range md.children {
		n := c.node
		if c.children != nil {
			id := r.materialize(t, c)
			n.Subtree = &id
		}
		nodes = append(nodes, &n)
	}
	return r.m.save(t, nodes...)
}

type flatEntry struct {
	parts []string
	node  *tree.Node
}

// flatten lists every entry below id by loading every tree.
func flatten(t testing.TB, m *memTrees, id crypto.ID, prefix []string, out map[string]flatEntry, blobs map[blobRef]bool) {
	blobs[blobRef{id, true}] = true
	tr, err := tree.Decode(m.trees[id])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range tr.Nodes {
		parts := append(append([]string(nil), prefix...), n.Name)
		out[strings.Join(parts, "\x00")] = flatEntry{parts, n}
		for _, c := range n.Content {
			blobs[blobRef{c, false}] = true
		}
		if n.Type == tree.Dir {
			flatten(t, m, *n.Subtree, parts, out, blobs)
		}
	}
}

func naiveModifier(a, b *tree.Node, metadata bool) string {
	if a.Type != b.Type {
		return "T"
	}
	if a.Type == tree.File && (a.Size != b.Size || !reflect.DeepEqual(a.Content, b.Content)) {
		return "M"
	}
	if a.Type == tree.Symlink && a.LinkTarget != b.LinkTarget {
		return "M"
	}
	ca, cb := *a, *b
	for _, c := range []*tree.Node{&ca, &cb} {
		c.Xattrs = append([]tree.Xattr(nil), c.Xattrs...)
		sort.Slice(c.Xattrs, func(i, j int) bool { return c.Xattrs[i].Name < c.Xattrs[j].Name })
		if len(c.Xattrs) == 0 {
			c.Xattrs = nil
		}
	}
	if metadata && !reflect.DeepEqual(ca, cb) {
		return "U"
	}
	return ""
}

func lessParts(a, b []string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

func naiveDiff(t testing.TB, m *memTrees, a, b crypto.ID, metadata bool) ([]changeLine, DiffStats) {
	fa, fb := map[string]flatEntry{}, map[string]flatEntry{}
	ba, bb := map[blobRef]bool{}, map[blobRef]bool{}
	flatten(t, m, a, nil, fa, ba)
	flatten(t, m, b, nil, fb, bb)

	var keys [][]string
	for _, e := range fa {
		keys = append(keys, e.parts)
	}
	for k, e := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, e.parts)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return lessParts(keys[i], keys[j]) })

	var st DiffStats
	count := func(s *DiffStat, n *tree.Node) {
		switch n.Type {
		case tree.File:
			s.Files++
		case tree.Dir:
			s.Dirs++
		default:
			s.Others++
		}
	}
	var out []changeLine
	for _, parts := range keys {
		k := strings.Join(parts, "\x00")
		ea, inA := fa[k]
		eb, inB := fb[k]
		var mod string
		var shown *tree.Node
		switch {
		case inA && inB:
			mod, shown = naiveModifier(ea.node, eb.node, metadata), eb.node
			if mod == "M" && ea.node.Type == tree.File {
				st.ChangedFiles++
			}
		case inA:
			mod, shown = "-", ea.node
			count(&st.Removed, ea.node)
		default:
			mod, shown = "+", eb.node
			count(&st.Added, eb.node)
		}
		if mod == "" {
			continue
		}
		p := "/" + strings.Join(parts, "/")
		if shown.Type == tree.Dir {
			p += "/"
		}
		out = append(out, changeLine{mod, p})
	}
	side := func(s *DiffStat, mine, other map[blobRef]bool) {
		for r := range mine {
			if other[r] {
				continue
			}
			if r.tree {
				s.TreeBlobs++
			} else {
				s.DataBlobs++
			}
			n, _ := m.PlainLength(map[bool]pack.BlobType{true: pack.TreeBlob, false: pack.DataBlob}[r.tree], r.id)
			s.Bytes += uint64(n)
		}
	}
	side(&st.Removed, ba, bb)
	side(&st.Added, bb, ba)
	return out, st
}

func TestDiffRandom(t *testing.T) {
	iterations := 400
	if testing.Short() {
		iterations = 100
	}
	rng := rand.New(rand.NewSource(42))
	var totalChanges, withT, withU int
	for i := 0; i < iterations; i++ {
		m := newMemTrees()
		r := &randTrees{rng: rng, m: m}
		ma := r.gen("", 0)
		mb := ma.clone()
		r.mutate(mb)
		a, b := r.materialize(t, ma), r.materialize(t, mb)

		for _, meta := range []bool{false, true} {
			want, wantStats := naiveDiff(t, m, a, b, meta)
			got, gotStats := collect(t, m, a, b, DiffOptions{Metadata: meta, ExactStats: true, Sizes: m})
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("iteration %d, metadata %v:\n got %q\nwant %q", i, meta, got, want)
			}
			if gotStats != wantStats {
				t.Fatalf("iteration %d, metadata %v: stats\n got %+v\nwant %+v", i, meta, gotStats, wantStats)
			}
			// Without ExactStats the changes are the same and the blob
			// counts can only be higher.
			got2, fast := collect(t, m, a, b, DiffOptions{Metadata: meta, Sizes: m})
			if !reflect.DeepEqual(got2, got) || fast.Added.DataBlobs < gotStats.Added.DataBlobs ||
				fast.Removed.DataBlobs < gotStats.Removed.DataBlobs || fast.Added.TreeBlobs < gotStats.Added.TreeBlobs ||
				fast.Removed.TreeBlobs < gotStats.Removed.TreeBlobs || fast.ChangedFiles != gotStats.ChangedFiles ||
				fast.Added.Files != gotStats.Added.Files || fast.Removed.Dirs != gotStats.Removed.Dirs {
				t.Fatalf("iteration %d: fast stats %+v vs exact %+v", i, fast, gotStats)
			}
			// Reversing the sides swaps + and -, and added and removed.
			_, rev := collect(t, m, b, a, DiffOptions{Metadata: meta, ExactStats: true, Sizes: m})
			if rev.Added != gotStats.Removed || rev.Removed != gotStats.Added {
				t.Fatalf("iteration %d: reversed stats %+v vs %+v", i, rev, gotStats)
			}
			totalChanges += len(got)
			for _, c := range got {
				switch c.Mod {
				case "T":
					withT++
				case "U":
					withU++
				}
			}
		}
	}
	if totalChanges < iterations || withT == 0 || withU == 0 {
		t.Errorf("random trees too tame: %d changes, %d T, %d U", totalChanges, withT, withU)
	}
	t.Logf("%d changes compared (%d T, %d U)", totalChanges, withT, withU)
}

// BenchmarkDiff compares two trees of 1000 directories with 100 files each,
// where ten files in ten directories changed.
func BenchmarkDiff(b *testing.B) {
	m := newMemTrees()
	build := func(changed bool) crypto.ID {
		var dirs []*tree.Node
		for d := 0; d < 1000; d++ {
			var files []*tree.Node
			for f := 0; f < 100; f++ {
				c := fmt.Sprint(d, "/", f)
				if changed && d%100 == 0 && f == 0 {
					c += "!"
				}
				files = append(files, m.file(fmt.Sprintf("file%03d", f), c))
			}
			dirs = append(dirs, m.dir(b, fmt.Sprintf("dir%04d", d), files...))
		}
		return m.save(b, dirs...)
	}
	x, y := build(false), build(true)
	for _, exact := range []bool{false, true} {
		b.Run(fmt.Sprintf("exact=%v", exact), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				m.resetLoads()
				n := 0
				_, err := Diff(context.Background(), m, x, y, DiffOptions{Metadata: true, ExactStats: exact, Sizes: m},
					func(Change) error { n++; return nil })
				if err != nil || n != 20 {
					b.Fatalf("%d changes, %v", n, err)
				}
			}
			b.ReportMetric(float64(len(m.loads)), "trees-loaded")
		})
	}
}
