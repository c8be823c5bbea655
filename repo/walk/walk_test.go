package walk

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// mapLoader serves trees from a map and counts loads.
type mapLoader struct {
	mu    sync.Mutex
	trees map[crypto.ID]*tree.Tree
	loads map[crypto.ID]int
}

var errNoTree = errors.New("no such tree")

func (l *mapLoader) LoadTree(_ context.Context, id crypto.ID) (*tree.Tree, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loads[id]++
	t, ok := l.trees[id]
	if !ok {
		return nil, errNoTree
	}
	return t, nil
}

func id(s string) crypto.ID { return crypto.Hash([]byte(s)) }

func dir(name string, sub crypto.ID) *tree.Node {
	return &tree.Node{Name: name, Type: tree.Dir, Subtree: &sub}
}

func file(name string) *tree.Node { return &tree.Node{Name: name, Type: tree.File} }

// testTrees builds: root1 = {a/ -> shared, b/ -> shared, f}, root2 = {c/ -> shared,
// gone/ -> missing}, shared = {x, deep/ -> leaf}, leaf = {y}.
func testTrees() (*mapLoader, crypto.ID, crypto.ID) {
	leaf := id("leaf")
	shared := id("shared")
	root1, root2 := id("root1"), id("root2")
	l := &mapLoader{loads: map[crypto.ID]int{}, trees: map[crypto.ID]*tree.Tree{
		leaf:   {Nodes: []*tree.Node{file("y")}},
		shared: {Nodes: []*tree.Node{dir("deep", leaf), file("x")}},
		root1:  {Nodes: []*tree.Node{dir("a", shared), dir("b", shared), file("f")}},
		root2:  {Nodes: []*tree.Node{dir("c", shared), dir("gone", id("missing"))}},
	}}
	return l, root1, root2
}

func TestTreesVisitsEachTreeOnce(t *testing.T) {
	for _, workers := range []int{0, 1, 4} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			l, root1, root2 := testTrees()
			var mu sync.Mutex
			got := map[crypto.ID]int{}
			var failed []crypto.ID
			err := Trees(context.Background(), l, []crypto.ID{root1, root2, root1}, workers, func(root int, id crypto.ID, tr List, err error) {
				mu.Lock()
				defer mu.Unlock()
				got[id]++
				if err != nil {
					if !errors.Is(err, errNoTree) || tr != nil {
						t.Errorf("tree %s: err %v, tree %v", id.Short(), err, tr)
					}
					failed = append(failed, id)
					if root != 1 {
						t.Errorf("missing tree reached from root %d, want 1", root)
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"root1", "root2", "shared", "leaf", "missing"} {
				if got[id(want)] != 1 {
					t.Errorf("%s visited %d times, want once", want, got[id(want)])
				}
			}
			if len(got) != 5 {
				t.Errorf("visited %d trees, want 5", len(got))
			}
			for tid, n := range l.loads {
				if n != 1 {
					t.Errorf("tree %s loaded %d times", tid.Short(), n)
				}
			}
			if !reflect.DeepEqual(failed, []crypto.ID{id("missing")}) {
				t.Errorf("failed trees %v", failed)
			}
		})
	}
}

func TestTreesStopsWhenContextEnds(t *testing.T) {
	l, root1, root2 := testTrees()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	err := Trees(ctx, l, []crypto.ID{root1, root2}, 1, func(int, crypto.ID, List, error) {
		calls++
		cancel()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if calls != 1 {
		t.Errorf("fn called %d times after cancel, want 1", calls)
	}
}

func TestNodes(t *testing.T) {
	l, root1, _ := testTrees()
	tests := []struct {
		depth int
		want  []string
	}{
		{1, []string{"/a", "/b", "/f"}},
		{2, []string{"/a", "/a/deep", "/a/x", "/b", "/b/deep", "/b/x", "/f"}},
		{-1, []string{"/a", "/a/deep", "/a/deep/y", "/a/x", "/b", "/b/deep", "/b/deep/y", "/b/x", "/f"}},
		{0, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.depth), func(t *testing.T) {
			var got []string
			err := Nodes(context.Background(), l, root1, "/", tt.depth, func(p string, n *tree.Node) error {
				got = append(got, p)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !sort.StringsAreSorted(got) || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNodesStopsAtFirstError(t *testing.T) {
	l, _, root2 := testTrees()
	var got []string
	err := Nodes(context.Background(), l, root2, "/snap", -1, func(p string, n *tree.Node) error {
		got = append(got, p)
		return nil
	})
	if !errors.Is(err, errNoTree) {
		t.Fatalf("err = %v, want the load error", err)
	}
	want := []string{"/snap/c", "/snap/c/deep", "/snap/c/deep/y", "/snap/c/x", "/snap/gone"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	stop := errors.New("stop")
	got = nil
	err = Nodes(context.Background(), l, root2, "/", -1, func(p string, n *tree.Node) error {
		got = append(got, p)
		if p == "/c/deep" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || len(got) != 2 {
		t.Errorf("err = %v after %v, want stop after 2 nodes", err, got)
	}
}

// slowLoader delays every load a little, so background loads end out of
// order, and counts the loads running.
type slowLoader struct {
	l       Loader
	running atomic.Int64
	maxRun  atomic.Int64
}

func (s *slowLoader) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for {
		m := s.maxRun.Load()
		if n <= m || s.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(time.Duration(id[0]%4) * time.Millisecond)
	return s.l.LoadTree(ctx, id)
}

// wideTrees builds a tree of fanout directories per level, depth levels
// deep, with a file beside each directory, and the paths Nodes must give.
func wideTrees(fanout, depth int) (*mapLoader, crypto.ID, []string) {
	l := &mapLoader{loads: map[crypto.ID]int{}, trees: map[crypto.ID]*tree.Tree{}}
	var build func(name string, level int) crypto.ID
	build = func(name string, level int) crypto.ID {
		tid := id(name)
		t := &tree.Tree{}
		for i := range fanout {
			if level < depth {
				t.Nodes = append(t.Nodes, dir(fmt.Sprintf("d%d", i), build(fmt.Sprintf("%s/d%d", name, i), level+1)))
			}
			t.Nodes = append(t.Nodes, file(fmt.Sprintf("f%d", i)))
		}
		sort.Slice(t.Nodes, func(a, b int) bool { return t.Nodes[a].Name < t.Nodes[b].Name })
		l.trees[tid] = t
		return tid
	}
	root := build("", 1)
	var want []string
	var list func(prefix string, tid crypto.ID)
	list = func(prefix string, tid crypto.ID) {
		for _, n := range l.trees[tid].Nodes {
			want = append(want, prefix+"/"+n.Name)
			if n.Subtree != nil {
				list(prefix+"/"+n.Name, *n.Subtree)
			}
		}
	}
	list("", root)
	return l, root, want
}

func TestNodesOrderWithBackgroundLoads(t *testing.T) {
	ml, root, want := wideTrees(12, 3)
	sl := &slowLoader{l: ml}
	var got []string
	err := Nodes(context.Background(), sl, root, "/", -1, func(p string, n *tree.Node) error {
		got = append(got, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %d paths, want %d in path order", len(got), len(want))
	}
	if max := int64(4 * runtime.GOMAXPROCS(0)); sl.maxRun.Load() > max {
		t.Errorf("%d loads at once, want at most %d", sl.maxRun.Load(), max)
	}

	// Stopping early: no load runs once Nodes returns.
	stop := errors.New("stop")
	err = Nodes(context.Background(), sl, root, "/", -1, func(p string, n *tree.Node) error {
		if p == "/d1/d0" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want stop", err)
	}
	if n := sl.running.Load(); n != 0 {
		t.Errorf("%d loads still running after Nodes returned", n)
	}
}

// compactLoader serves the trees of a mapLoader in compact form, kept in
// files whatever their size, as the repository serves a huge tree.
type compactLoader struct {
	*mapLoader
	dir         string
	loads       atomic.Int32
	mayUseFiles atomic.Int32 // loads whose caller allowed files
}

func (l *compactLoader) LoadCompactTree(ctx context.Context, id crypto.ID, spill tree.SpillOptions) (*tree.Compact, error) {
	l.loads.Add(1)
	if spill.Above > 0 {
		l.mayUseFiles.Add(1)
	}
	t, err := l.LoadTree(ctx, id)
	if err != nil {
		return nil, err
	}
	b, err := t.Encode()
	if err != nil {
		return nil, err
	}
	return tree.DecodeCompactSpill(b, tree.SpillOptions{Dir: l.dir, Above: 1})
}

// TestNodesCompact: a loader that decodes trees into their compact form
// (kept in files) is walked that way, with the same paths and nodes.
func TestNodesCompact(t *testing.T) {
	l, root1, root2 := testTrees()
	for _, n := range l.trees[root1].Nodes {
		n.Mode = 0o640
	}
	cl := &compactLoader{mapLoader: l, dir: t.TempDir()}
	walkAll := func(l Loader) (paths []string, nodes []tree.Node) {
		err := Nodes(context.Background(), l, root1, "/", -1, func(p string, n *tree.Node) error {
			paths = append(paths, p)
			nodes = append(nodes, *n)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return paths, nodes
	}
	wantPaths, wantNodes := walkAll(l)
	gotPaths, gotNodes := walkAll(cl)
	if !reflect.DeepEqual(gotPaths, wantPaths) {
		t.Errorf("compact walk: %v, want %v", gotPaths, wantPaths)
	}
	for i := range min(len(gotNodes), len(wantNodes)) {
		g, w := gotNodes[i], wantNodes[i]
		if g.Name != w.Name || g.Type != w.Type || g.Mode != w.Mode || (g.Subtree == nil) != (w.Subtree == nil) {
			t.Errorf("node %s: %+v, want %+v", gotPaths[i], g, w)
		}
	}
	if cl.loads.Load() == 0 {
		t.Error("the compact loader was not used")
	}
	// A missing subtree ends the walk with its error, as with LoadTree.
	err := Nodes(context.Background(), cl, root2, "/", -1, func(string, *tree.Node) error { return nil })
	if !errors.Is(err, errNoTree) {
		t.Errorf("walk past a missing tree: %v, want %v", err, errNoTree)
	}
}

// TestTreesCompactInMemory: Trees loads compact trees when it can, never
// lets one move to files (check and prune trust every node it reads), and
// its Lists give each node's content.
func TestTreesCompactInMemory(t *testing.T) {
	l, root1, root2 := testTrees()
	blob := id("blob")
	l.trees[id("leaf")].Nodes[0].Content = []crypto.ID{blob}
	cl := &compactLoader{mapLoader: l, dir: t.TempDir()}
	var mu sync.Mutex
	var contents []crypto.ID
	visited := 0
	err := Trees(context.Background(), cl, []crypto.ID{root1, root2}, 2, func(_ int, _ crypto.ID, tr List, err error) {
		mu.Lock()
		defer mu.Unlock()
		visited++
		if err != nil {
			return
		}
		for i := range tr.Len() {
			contents = append(contents, tr.Content(i)...)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if visited != 5 || cl.loads.Load() != 5 {
		t.Errorf("visited %d trees with %d compact loads, want 5 and 5", visited, cl.loads.Load())
	}
	if n := cl.mayUseFiles.Load(); n != 0 {
		t.Errorf("%d loads allowed the tree into files", n)
	}
	if !reflect.DeepEqual(contents, []crypto.ID{blob}) {
		t.Errorf("contents %v, want [%s]", contents, blob.Short())
	}
}
