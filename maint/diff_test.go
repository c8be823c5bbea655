package maint

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
)

// memTrees is an in-memory tree store that counts loads and knows blob sizes.
type memTrees struct {
	mu    sync.Mutex
	trees map[crypto.ID][]byte
	loads map[crypto.ID]int
	sizes map[blobRef]int
	fail  map[crypto.ID]error
}

func newMemTrees() *memTrees {
	return &memTrees{trees: map[crypto.ID][]byte{}, loads: map[crypto.ID]int{}, sizes: map[blobRef]int{}, fail: map[crypto.ID]error{}}
}

func (m *memTrees) LoadTree(_ context.Context, id crypto.ID) (*tree.Tree, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loads[id]++
	if err := m.fail[id]; err != nil {
		return nil, err
	}
	b, ok := m.trees[id]
	if !ok {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), os.ErrNotExist)
	}
	return tree.Decode(b)
}

func (m *memTrees) PlainLength(t pack.BlobType, id crypto.ID) (int, bool) {
	n, ok := m.sizes[blobRef{id, t == pack.TreeBlob}]
	return n, ok
}

func (m *memTrees) resetLoads() { m.loads = map[crypto.ID]int{} }

// save stores a tree made of nodes and returns its id.
func (m *memTrees) save(t testing.TB, nodes ...*tree.Node) crypto.ID {
	t.Helper()
	tr := &tree.Tree{Nodes: append([]*tree.Node(nil), nodes...)}
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	id := crypto.Hash(b)
	m.trees[id] = b
	m.sizes[blobRef{id, true}] = len(b)
	return id
}

var testTime = time.Unix(1700000000, 0)

func blobID(s string) crypto.ID { return crypto.ID(sha256.Sum256([]byte("blob:" + s))) }

// file makes a file node whose chunks have the given contents.
func (m *memTrees) file(name string, chunks ...string) *tree.Node {
	n := &tree.Node{Name: name, Type: tree.File, Mode: 0o644, ModTime: testTime, Links: 1}
	for _, c := range chunks {
		id := blobID(c)
		n.Content = append(n.Content, id)
		n.Size += uint64(len(c))
		m.sizes[blobRef{id, false}] = len(c)
	}
	return n
}

func (m *memTrees) dir(t testing.TB, name string, children ...*tree.Node) *tree.Node {
	id := m.save(t, children...)
	return &tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o755, ModTime: testTime, Subtree: &id}
}

func symlink(name, target string) *tree.Node {
	return &tree.Node{Name: name, Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: target, ModTime: testTime}
}

func with(n *tree.Node, f func(*tree.Node)) *tree.Node {
	c := *n
	f(&c)
	return &c
}

type changeLine struct{ Mod, Path string }

func collect(t testing.TB, l TreeLoader, a, b crypto.ID, opts DiffOptions) ([]changeLine, DiffStats) {
	t.Helper()
	var got []changeLine
	st, err := Diff(context.Background(), l, a, b, opts, func(c Change) error {
		if c.Before == nil && c.After == nil {
			t.Errorf("change %v without nodes", c)
		}
		got = append(got, changeLine{c.Modifier, c.Path})
		return nil
	})
	if err != nil {
		t.Fatalf("Diff: %v", err)
	}
	return got, st
}

func lines(s ...string) []changeLine {
	var out []changeLine
	for _, x := range s {
		mod, p, _ := strings.Cut(x, " ")
		out = append(out, changeLine{mod, p})
	}
	return out
}

// TestDiffResticExample rebuilds the repository of the shapes document: in
// /home/ann/data, a.txt changed, sub/b.txt was removed, new.txt was added.
func TestDiffResticExample(t *testing.T) {
	m := newMemTrees()
	link := symlink("link", "a.txt")
	snap := func(a string, withB, withNew bool) crypto.ID {
		var sub []*tree.Node
		if withB {
			sub = append(sub, m.file("b.txt", "bbbbb"))
		}
		data := []*tree.Node{m.file("a.txt", a), link, m.dir(t, "sub", sub...)}
		if withNew {
			data = append(data, m.file("new.txt", "n\n"))
		}
		return m.save(t, m.dir(t, "home", m.dir(t, "ann", m.dir(t, "data", data...))))
	}
	a := snap("hello", true, false)
	b := snap("hello world", false, true)

	got, st := collect(t, m, a, b, DiffOptions{Sizes: m})
	want := lines("M /home/ann/data/a.txt", "+ /home/ann/data/new.txt", "- /home/ann/data/sub/b.txt")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes:\n got %v\nwant %v", got, want)
	}
	got, st2 := collect(t, m, a, b, DiffOptions{Metadata: true, Sizes: m})
	want = lines("U /home/", "U /home/ann/", "U /home/ann/data/", "M /home/ann/data/a.txt",
		"+ /home/ann/data/new.txt", "U /home/ann/data/sub/", "- /home/ann/data/sub/b.txt")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes with metadata:\n got %v\nwant %v", got, want)
	}
	if st != st2 {
		t.Errorf("stats differ with metadata: %+v vs %+v", st, st2)
	}

	// Each side has 5 trees of its own (root, home, ann, data, sub) and two
	// data blobs: old a.txt and b.txt against new a.txt and new.txt.
	treeBytes := func(root crypto.ID) uint64 {
		var sum uint64
		var walk func(id crypto.ID)
		walk = func(id crypto.ID) {
			sum += uint64(len(m.trees[id]))
			tr, _ := tree.Decode(m.trees[id])
			for _, n := range tr.Nodes {
				if n.Subtree != nil {
					walk(*n.Subtree)
				}
			}
		}
		walk(root)
		return sum
	}
	want2 := DiffStats{
		ChangedFiles: 1,
		Added:        DiffStat{Files: 1, DataBlobs: 2, TreeBlobs: 5, Bytes: treeBytes(b) + 11 + 2},
		Removed:      DiffStat{Files: 1, DataBlobs: 2, TreeBlobs: 5, Bytes: treeBytes(a) + 5 + 5},
	}
	if st != want2 {
		t.Errorf("stats:\n got %+v\nwant %+v", st, want2)
	}

	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := fmt.Sprintf(`{"changed_files":1,"added":{"files":1,"dirs":0,"others":0,"data_blobs":2,"tree_blobs":5,"bytes":%d},`+
		`"removed":{"files":1,"dirs":0,"others":0,"data_blobs":2,"tree_blobs":5,"bytes":%d}}`, want2.Added.Bytes, want2.Removed.Bytes)
	if string(js) != wantJSON {
		t.Errorf("JSON:\n got %s\nwant %s", js, wantJSON)
	}
	if js, _ := json.Marshal(Change{Path: "/x", Modifier: "+", After: link}); string(js) != `{"path":"/x","modifier":"+"}` {
		t.Errorf("Change JSON = %s", js)
	}
}

func TestDiffModifiers(t *testing.T) {
	m := newMemTrees()
	f := m.file("x", "one", "two")
	dev := &tree.Node{Name: "x", Type: tree.CharDev, Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Rdev: 0x0103}
	xa := with(f, func(n *tree.Node) {
		n.Xattrs = []tree.Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "user.b", Value: []byte("2")}}
	})
	tests := []struct {
		name         string
		before       *tree.Node
		after        *tree.Node
		plain, meta  []changeLine
		changedFiles int
	}{
		{"identical", f, with(f, func(*tree.Node) {}), nil, nil, 0},
		{"content", f, m.file("x", "one", "three"), lines("M /x"), lines("M /x"), 1},
		{"chunking only", f, m.file("x", "onetwo"), lines("M /x"), lines("M /x"), 1},
		{"size only", f, with(f, func(n *tree.Node) { n.Size++ }), lines("M /x"), lines("M /x"), 1},
		{"mode", f, with(f, func(n *tree.Node) { n.Mode = 0o600 }), nil, lines("U /x"), 0},
		{"owner", f, with(f, func(n *tree.Node) { n.UID = 1000; n.User = "ann" }), nil, lines("U /x"), 0},
		{"mtime", f, with(f, func(n *tree.Node) { n.ModTime = n.ModTime.Add(time.Second) }), nil, lines("U /x"), 0},
		{"ctime", f, with(f, func(n *tree.Node) { n.ChangeTime = testTime }), nil, lines("U /x"), 0},
		{"links", f, with(f, func(n *tree.Node) { n.Links = 2 }), nil, lines("U /x"), 0},
		{"xattr added", f, xa, nil, lines("U /x"), 0},
		{"xattr value", xa, with(xa, func(n *tree.Node) {
			n.Xattrs = []tree.Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "user.b", Value: []byte("3")}}
		}), nil, lines("U /x"), 0},
		{"xattr order only", xa, with(xa, func(n *tree.Node) { n.Xattrs = []tree.Xattr{xa.Xattrs[1], xa.Xattrs[0]} }), nil, nil, 0},
		{"symlink target", symlink("x", "a"), symlink("x", "b"), lines("M /x"), lines("M /x"), 0},
		{"symlink mtime", symlink("x", "a"), with(symlink("x", "a"), func(n *tree.Node) { n.ModTime = time.Time{} }), nil, lines("U /x"), 0},
		{"file to symlink", f, symlink("x", "one"), lines("T /x"), lines("T /x"), 0},
		{"file to device", f, dev, lines("T /x"), lines("T /x"), 0},
		{"device number", dev, with(dev, func(n *tree.Node) { n.Rdev = 0x0104 }), nil, lines("U /x"), 0},
		{"file to dir", f, m.dir(t, "x", m.file("in", "i"), m.dir(t, "sub", symlink("l", "t"))),
			lines("T /x/", "+ /x/in", "+ /x/sub/", "+ /x/sub/l"), lines("T /x/", "+ /x/in", "+ /x/sub/", "+ /x/sub/l"), 0},
		{"dir to file", m.dir(t, "x", m.file("in", "i")), f, lines("T /x", "- /x/in"), lines("T /x", "- /x/in"), 0},
		{"dir mode, same subtree", m.dir(t, "x", m.file("in", "i")),
			with(m.dir(t, "x", m.file("in", "i")), func(n *tree.Node) { n.Mode = os.ModeDir | 0o700 }), nil, lines("U /x/"), 0},
		{"dir content", m.dir(t, "x", m.file("in", "i")), m.dir(t, "x", m.file("in", "j")),
			lines("M /x/in"), lines("U /x/", "M /x/in"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := m.save(t, tt.before)
			b := m.save(t, tt.after)
			for _, meta := range []bool{false, true} {
				got, st := collect(t, m, a, b, DiffOptions{Metadata: meta})
				want := tt.plain
				if meta {
					want = tt.meta
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("metadata=%v: got %v, want %v", meta, got, want)
				}
				if st.ChangedFiles != tt.changedFiles {
					t.Errorf("metadata=%v: ChangedFiles = %d, want %d", meta, st.ChangedFiles, tt.changedFiles)
				}
			}
		})
	}
}

func TestDiffOrderAndStats(t *testing.T) {
	m := newMemTrees()
	// "a" < "a.txt" < "a/..." in path order would differ from tree order:
	// Diff reports a directory's contents right after it.
	a := m.save(t, m.file("a.txt", "1"), m.file("z", "zz"))
	b := m.save(t,
		m.dir(t, "a", m.file("x", "1"), m.dir(t, "e"), &tree.Node{Name: "p", Type: tree.FIFO}),
		m.file("a.txt", "1"),
		m.dir(t, "b"),
	)
	got, st := collect(t, m, a, b, DiffOptions{Sizes: m})
	want := lines("+ /a/", "+ /a/e/", "+ /a/p", "+ /a/x", "+ /b/", "- /z")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Added: dirs a, a/e, b; file a/x (its blob "1" is also in a.txt on
	// both sides, so not counted); fifo p. Trees: root b, a, and the one
	// empty tree shared by a/e and b. Removed: z and its blob, root a.
	if st.Added.Dirs != 3 || st.Added.Files != 1 || st.Added.Others != 1 || st.Added.DataBlobs != 0 || st.Added.TreeBlobs != 3 {
		t.Errorf("added = %+v", st.Added)
	}
	if st.Removed.Files != 1 || st.Removed.DataBlobs != 1 || st.Removed.TreeBlobs != 1 || st.Removed.Bytes != uint64(2+len(m.trees[a])) {
		t.Errorf("removed = %+v", st.Removed)
	}
	if st.UnknownSizes != 0 {
		t.Errorf("UnknownSizes = %d", st.UnknownSizes)
	}
	// Without a sizer the bytes stay zero; with a sizer that knows nothing
	// they are counted as unknown.
	_, st = collect(t, m, a, b, DiffOptions{})
	if st.Added.Bytes != 0 || st.UnknownSizes != 0 {
		t.Errorf("without sizer: %+v", st)
	}
	_, st = collect(t, m, a, b, DiffOptions{Sizes: newMemTrees()})
	if st.UnknownSizes != 3+2 {
		t.Errorf("unknown sizes = %d, want 5", st.UnknownSizes)
	}
}

func TestDiffSkipsIdenticalSubtrees(t *testing.T) {
	m := newMemTrees()
	big := m.dir(t, "big", m.file("f1", "shared"), m.dir(t, "deep", m.file("f2", "deep"), m.dir(t, "deeper", m.file("f3", "x"))))
	a := m.save(t, big, m.dir(t, "w", m.file("old", "o")))
	b := m.save(t, with(big, func(n *tree.Node) { n.ModTime = time.Time{} }),
		m.dir(t, "w", m.file("old", "o"), m.file("copy", "shared")))

	bigTrees := map[crypto.ID]bool{}
	var mark func(id crypto.ID)
	mark = func(id crypto.ID) {
		bigTrees[id] = true
		tr, _ := tree.Decode(m.trees[id])
		for _, n := range tr.Nodes {
			if n.Subtree != nil {
				mark(*n.Subtree)
			}
		}
	}
	mark(*big.Subtree)

	m.resetLoads()
	got, st := collect(t, m, a, b, DiffOptions{Metadata: true})
	if want := lines("U /big/", "U /w/", "+ /w/copy"); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for id := range bigTrees {
		if m.loads[id] != 0 {
			t.Errorf("shared tree %s loaded %d times", id.Short(), m.loads[id])
		}
	}
	if len(m.loads) != 4 {
		t.Errorf("%d trees loaded, want 4 (two roots, two w): %v", len(m.loads), m.loads)
	}
	// The copied blob also lives in the shared subtree; only ExactStats
	// finds that out.
	if st.Added.DataBlobs != 1 {
		t.Errorf("default stats: added %+v", st.Added)
	}
	m.resetLoads()
	_, st = collect(t, m, a, b, DiffOptions{ExactStats: true})
	if st.Added.DataBlobs != 0 || st.Added.TreeBlobs != 2 || st.Removed.TreeBlobs != 2 {
		t.Errorf("exact stats: %+v", st)
	}
	if m.loads[*big.Subtree] != 1 {
		t.Errorf("ExactStats loaded the shared tree %d times, want 1", m.loads[*big.Subtree])
	}

	// Equal roots: nothing is loaded at all, even with ExactStats.
	m.resetLoads()
	got, st = collect(t, m, a, a, DiffOptions{Metadata: true, ExactStats: true})
	if len(got) != 0 || st != (DiffStats{}) || len(m.loads) != 0 {
		t.Errorf("equal roots: %v %+v, %d loads", got, st, len(m.loads))
	}
}

func TestDiffPath(t *testing.T) {
	m := newMemTrees()
	a := m.save(t, m.dir(t, "home", m.dir(t, "ann", m.file("f", "1"))), m.file("top", "t"))
	b := m.save(t, m.dir(t, "home", m.dir(t, "ann", m.file("f", "2"), m.file("g", "g"))), m.file("top", "u"))
	for _, p := range []string{"/home/ann", "home/ann/", "//home/./ann", "/home/x/../ann"} {
		got, _ := collect(t, m, a, b, DiffOptions{Path: p})
		if want := lines("M /f", "+ /g"); !reflect.DeepEqual(got, want) {
			t.Errorf("Path %q: got %v, want %v", p, got, want)
		}
	}
	got, _ := collect(t, m, a, b, DiffOptions{Path: "/"})
	if want := lines("M /home/ann/f", "+ /home/ann/g", "M /top"); !reflect.DeepEqual(got, want) {
		t.Errorf("Path /: got %v, want %v", got, want)
	}
	noop := func(Change) error { return nil }
	if _, err := Diff(context.Background(), m, a, b, DiffOptions{Path: "/home/bob"}, noop); !errors.Is(err, ErrPathNotFound) {
		t.Errorf("missing path: %v", err)
	}
	if _, err := Diff(context.Background(), m, a, b, DiffOptions{Path: "/top"}, noop); !errors.Is(err, ErrNotDir) {
		t.Errorf("file path: %v", err)
	}
	c := m.save(t, m.file("home", "h"))
	if _, err := Diff(context.Background(), m, a, c, DiffOptions{Path: "/home"}, noop); !errors.Is(err, ErrNotDir) {
		t.Errorf("path a file in the second tree: %v", err)
	}
}

func TestDiffErrors(t *testing.T) {
	m := newMemTrees()
	sub := m.dir(t, "d", m.file("f", "1"), m.file("g", "2"))
	a := m.save(t, sub)
	b := m.save(t, m.dir(t, "d", m.file("f", "1")))
	ctx := context.Background()
	noop := func(Change) error { return nil }

	boom := errors.New("boom")
	m.fail[*sub.Subtree] = boom
	if _, err := Diff(ctx, m, a, b, DiffOptions{}, noop); !errors.Is(err, boom) {
		t.Errorf("load error: %v", err)
	}
	delete(m.fail, *sub.Subtree)

	var n int
	stop := errors.New("stop")
	_, err := Diff(ctx, m, a, m.save(t), DiffOptions{}, func(Change) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("callback error: %v after %d calls", err, n)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Diff(cctx, m, a, b, DiffOptions{}, noop); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}

	if _, err := Diff(ctx, m, a, crypto.ID{1}, DiffOptions{}, noop); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing tree: %v", err)
	}
}

// badLoader serves hand-made trees that the repository would refuse.
type badLoader map[crypto.ID]*tree.Tree

func (l badLoader) LoadTree(_ context.Context, id crypto.ID) (*tree.Tree, error) {
	if t, ok := l[id]; ok {
		return t, nil
	}
	return nil, os.ErrNotExist
}

func TestDiffBadTrees(t *testing.T) {
	empty, self, root := crypto.ID{1}, crypto.ID{2}, crypto.ID{3}
	file := func(name string) *tree.Node { return &tree.Node{Name: name, Type: tree.File} }
	for name, bad := range map[string]*tree.Tree{
		"unsorted":   {Nodes: []*tree.Node{file("b"), file("a")}},
		"duplicate":  {Nodes: []*tree.Node{file("a"), file("a")}},
		"slash":      {Nodes: []*tree.Node{file("a/b")}},
		"dotdot":     {Nodes: []*tree.Node{file("..")}},
		"nil node":   {Nodes: []*tree.Node{nil}},
		"no subtree": {Nodes: []*tree.Node{{Name: "d", Type: tree.Dir}}},
		// A directory that contains itself: only a corrupt loader can
		// produce this, and the walk must end with an error, not a crash.
		"cycle": {Nodes: []*tree.Node{{Name: "d", Type: tree.Dir, Subtree: &self}}},
	} {
		l := badLoader{empty: {}, root: bad, self: {Nodes: []*tree.Node{{Name: "d", Type: tree.Dir, Subtree: &self}}}}
		for _, exact := range []bool{false, true} {
			_, err := Diff(context.Background(), l, empty, root, DiffOptions{ExactStats: exact}, func(Change) error { return nil })
			if !errors.Is(err, ErrBadTree) {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	// A cycle inside a subtree both sides share is only walked by
	// ExactStats, which must end too.
	shared := badLoader{
		self:          {Nodes: []*tree.Node{{Name: "d", Type: tree.Dir, Subtree: &self}}},
		crypto.ID{10}: {Nodes: []*tree.Node{{Name: "s", Type: tree.Dir, Subtree: &self}, {Name: "x", Type: tree.File, Content: []crypto.ID{{7}}}}},
		crypto.ID{11}: {Nodes: []*tree.Node{{Name: "s", Type: tree.Dir, Subtree: &self}}},
	}
	st, err := Diff(context.Background(), shared, crypto.ID{10}, crypto.ID{11}, DiffOptions{ExactStats: true}, func(Change) error { return nil })
	if err != nil || st.Removed.DataBlobs != 1 {
		t.Errorf("cyclic shared tree: %+v, %v", st, err)
	}
}
