package maint

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

var findTime = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// findFile is a file (or, with link set, a symlink) of a test snapshot.
type findFile struct {
	data  string
	mtime time.Time
	link  string
}

// findRepo is a repository in memory whose tree loads are counted.
type findRepo struct {
	r     *repo.Repository
	mu    sync.Mutex
	loads map[crypto.ID]int
	fail  map[crypto.ID]bool
}

func newFindRepo(t *testing.T) *findRepo {
	return &findRepo{r: repo.TestRepository(t, mem.New()), loads: map[crypto.ID]int{}, fail: map[crypto.ID]bool{}}
}

func (f *findRepo) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	f.mu.Lock()
	f.loads[id]++
	fail := f.fail[id]
	f.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), repo.ErrCorrupt)
	}
	return f.r.LoadTree(ctx, id)
}

func (f *findRepo) resetLoads() {
	f.mu.Lock()
	f.loads = map[crypto.ID]int{}
	f.mu.Unlock()
}

type findDir struct {
	files map[string]findFile
	dirs  map[string]*findDir
}

func (f *findRepo) saveDir(t *testing.T, d *findDir) crypto.ID {
	t.Helper()
	ctx := context.Background()
	tr := &tree.Tree{}
	for name, sub := range d.dirs {
		id := f.saveDir(t, sub)
		tr.Nodes = append(tr.Nodes, &tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o755, ModTime: findTime, Subtree: &id})
	}
	for name, ff := range d.files {
		mt := ff.mtime
		if mt.IsZero() {
			mt = findTime
		}
		if ff.link != "" {
			tr.Nodes = append(tr.Nodes, &tree.Node{Name: name, Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, ModTime: mt, LinkTarget: ff.link})
			continue
		}
		n := &tree.Node{Name: name, Type: tree.File, Mode: 0o644, ModTime: mt, Size: uint64(len(ff.data)), Links: 1, UID: 1000, User: "ann"}
		if ff.data != "" {
			id, _, err := f.r.SaveBlob(ctx, pack.DataBlob, []byte(ff.data))
			if err != nil {
				t.Fatal(err)
			}
			n.Content = []crypto.ID{id}
		}
		tr.Nodes = append(tr.Nodes, n)
	}
	sort.Slice(tr.Nodes, func(i, j int) bool { return tr.Nodes[i].Name < tr.Nodes[j].Name })
	id, _, err := f.r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// snap writes a snapshot of files ("/a/b" -> file) taken at when.
func (f *findRepo) snap(t *testing.T, files map[string]findFile, when time.Time) *snapshot.Snapshot {
	t.Helper()
	ctx := context.Background()
	root := &findDir{files: map[string]findFile{}, dirs: map[string]*findDir{}}
	for p, ff := range files {
		d := root
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		for _, el := range parts[:len(parts)-1] {
			if d.dirs[el] == nil {
				d.dirs[el] = &findDir{files: map[string]findFile{}, dirs: map[string]*findDir{}}
			}
			d = d.dirs[el]
		}
		if parts[len(parts)-1] != "" {
			d.files[parts[len(parts)-1]] = ff
		}
	}
	id := f.saveDir(t, root)
	if err := f.r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: when, Tree: id, Paths: []string{"/"}, Hostname: "host"}
	if err := f.r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// findAll runs Find and returns "snapshot-index path" lines.
func findAll(t *testing.T, l TreeLoader, snaps []*snapshot.Snapshot, opts FindOptions) ([]string, *FindStats) {
	t.Helper()
	idx := map[*snapshot.Snapshot]int{}
	for i, sn := range snaps {
		idx[sn] = i
	}
	var got []string
	st, err := Find(context.Background(), l, snaps, opts, func(sn *snapshot.Snapshot, h *FindHit) error {
		line := fmt.Sprintf("%d %s", idx[sn], h.Path)
		if h.ObjectType != "" {
			line += " " + h.ObjectType + " " + h.ID.Short()
		}
		got = append(got, line)
		return nil
	})
	if err != nil {
		t.Fatalf("Find %+v: %v", opts, err)
	}
	return got, st
}

// naiveFind walks every snapshot completely and matches every path with
// refMatch: what restic's find reports.
func naiveFind(t *testing.T, r *repo.Repository, snaps []*snapshot.Snapshot, opts FindOptions) []string {
	t.Helper()
	var out []string
	var walk func(i int, id crypto.ID, dir string)
	walk = func(i int, id crypto.ID, dir string) {
		tr, err := r.LoadTree(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			p := dir + "/" + n.Name
			mp := p
			if opts.IgnoreCase {
				mp = strings.ToLower(p)
			}
			ok := false
			for _, pat := range opts.Patterns {
				if opts.IgnoreCase {
					pat = strings.ToLower(pat)
				}
				if refMatch(pat, mp) {
					ok = true
				}
			}
			if ok && (opts.Oldest.IsZero() || !n.ModTime.Before(opts.Oldest)) && (opts.Newest.IsZero() || !n.ModTime.After(opts.Newest)) {
				out = append(out, fmt.Sprintf("%d %s", i, p))
			}
			if n.Type == tree.Dir {
				walk(i, *n.Subtree, p)
			}
		}
	}
	for i, sn := range snaps {
		walk(i, sn.Tree, "")
	}
	return out
}

func findFixture(t *testing.T) (*findRepo, []*snapshot.Snapshot) {
	f := newFindRepo(t)
	files := map[string]findFile{
		"/home/ann/a.go":           {data: "a"},
		"/home/ann/foo/b.txt":      {data: "b"},
		"/home/ann/sub/foo/c.go":   {data: "c"},
		"/home/ann/sub/Foo.GO":     {data: "e"},
		"/home/ann/dir/d.txt":      {data: "d"},
		"/home/ann/dir/deep/e.txt": {data: "e"},
		"/home/ann/link":           {link: "a.go"},
		"/home/ann/empty":          {},
		"/etc/foo.conf":            {data: "conf"},
	}
	s1 := f.snap(t, files, findTime)
	files["/home/ann/new.go"] = findFile{data: "new", mtime: findTime.Add(48 * time.Hour)}
	s2 := f.snap(t, files, findTime.Add(time.Hour))
	return f, []*snapshot.Snapshot{s1, s2}
}

func TestFindEverything(t *testing.T) {
	f, snaps := findFixture(t)
	for _, pat := range []string{"", "*", "**", "/**"} {
		got, _ := findAll(t, f, snaps, FindOptions{Patterns: []string{pat}})
		ref := naiveFind(t, f.r, snaps, FindOptions{Patterns: []string{pat}})
		if !reflect.DeepEqual(got, ref) || len(got) < 20 {
			t.Errorf("%q: got %q, want %q", pat, got, ref)
		}
	}
}

func TestFindPathsOnly(t *testing.T) {
	f, snaps := findFixture(t)
	for _, pathsOnly := range []bool{false, true} {
		n := 0
		_, err := Find(context.Background(), f, snaps, FindOptions{Patterns: []string{"*.go"}, PathsOnly: pathsOnly, Oldest: findTime},
			func(sn *snapshot.Snapshot, h *FindHit) error {
				n++
				if (h.Node == nil) != pathsOnly || (h.Node != nil && (h.Node.Content != nil || !strings.HasSuffix(h.Path, "/"+h.Node.Name))) {
					t.Errorf("PathsOnly %v: hit %+v", pathsOnly, h)
				}
				return nil
			})
		if err != nil || n != 5 {
			t.Errorf("PathsOnly %v: %d hits, %v", pathsOnly, n, err)
		}
	}
}

func TestFindTimeBounds(t *testing.T) {
	f, snaps := findFixture(t)
	later := findTime.Add(24 * time.Hour)
	tests := []struct {
		oldest, newest time.Time
		want           []string
	}{
		{later, time.Time{}, []string{"1 /home/ann/new.go"}},
		{time.Time{}, later, []string{"0 /home/ann/a.go", "0 /home/ann/sub/foo/c.go", "1 /home/ann/a.go", "1 /home/ann/sub/foo/c.go"}},
		// Both bounds are inclusive.
		{findTime, findTime, []string{"0 /home/ann/a.go", "0 /home/ann/sub/foo/c.go", "1 /home/ann/a.go", "1 /home/ann/sub/foo/c.go"}},
		{findTime.Add(time.Second), later, nil},
	}
	for i, tc := range tests {
		opts := FindOptions{Patterns: []string{"*.go"}, Oldest: tc.oldest, Newest: tc.newest}
		got, _ := findAll(t, f, snaps, opts)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%d: got %q, want %q", i, got, tc.want)
		}
	}
	// A directory out of the time bounds is not reported, but what is
	// below it still is.
	got, _ := findAll(t, f, snaps[1:], FindOptions{Patterns: []string{"ann"}, Oldest: later})
	if want := []string{"0 /home/ann/new.go"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFindBadOptions(t *testing.T) {
	for _, opts := range []FindOptions{
		{Patterns: []string{"[a"}},
		{},
		{Blobs: []string{"xyz"}},
		{Trees: []string{strings.Repeat("a", 65)}},
		{Patterns: []string{strings.Repeat("a/", 70)}},
	} {
		if err := opts.Validate(); err == nil {
			t.Errorf("%+v: no error", opts)
		}
		if _, err := Find(context.Background(), newFindRepo(t), nil, opts, nil); err == nil {
			t.Errorf("Find %+v: no error", opts)
		}
	}
}

// TestFindSharedSubtreesLoadedOnce: 100 snapshots of a tree in which a
// few files change each time; every tree is loaded at most once, and the
// hits are those of a complete walk of every snapshot.
func TestFindSharedSubtreesLoadedOnce(t *testing.T) {
	f := newFindRepo(t)
	rng := rand.New(rand.NewPCG(3, 4))
	files := map[string]findFile{}
	for i := 0; i < 300; i++ {
		ext := []string{".go", ".txt", ".c"}[rng.IntN(3)]
		files[fmt.Sprintf("/src/d%d/e%d/f%d%s", rng.IntN(6), rng.IntN(4), i, ext)] = findFile{data: fmt.Sprint(i)}
	}
	var snaps []*snapshot.Snapshot
	for s := 0; s < 100; s++ {
		// Change three files, add one.
		keys := make([]string, 0, len(files))
		for k := range files {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for j := 0; j < 3; j++ {
			k := keys[rng.IntN(len(keys))]
			files[k] = findFile{data: fmt.Sprintf("%s v%d", k, s), mtime: findTime.Add(time.Duration(s) * time.Hour)}
		}
		files[fmt.Sprintf("/src/d%d/new%d.go", rng.IntN(6), s)] = findFile{data: fmt.Sprint("new", s)}
		snaps = append(snaps, f.snap(t, files, findTime.Add(time.Duration(s)*time.Hour)))
	}
	for _, opts := range []FindOptions{
		{Patterns: []string{"*.go"}},
		{Patterns: []string{"E1"}, IgnoreCase: true},
		{Patterns: []string{"d3"}},
		{Patterns: []string{"*.c", "new*"}, Oldest: findTime.Add(10 * time.Hour), Newest: findTime.Add(60 * time.Hour)},
	} {
		f.resetLoads()
		got, st := findAll(t, f, snaps, opts)
		for id, n := range f.loads {
			if n > 1 {
				t.Errorf("%+v: tree %s loaded %d times", opts, id.Short(), n)
			}
		}
		if st.TreesLoaded != len(f.loads) {
			t.Errorf("stats say %d loads, the loader saw %d", st.TreesLoaded, len(f.loads))
		}
		ref := naiveFind(t, f.r, snaps, opts)
		if !reflect.DeepEqual(got, ref) {
			t.Errorf("%+v: %d hits, want %d", opts, len(got), len(ref))
		}
		if len(ref) == 0 {
			t.Errorf("%+v: the test finds nothing", opts)
		}
		t.Logf("%v: %d hits, %d tree loads for %d snapshots", opts.Patterns, len(got), st.TreesLoaded, len(snaps))
	}
}

// TestFindSameTreeInTwoStates: a tree reached once below a directory that
// a pattern with '/' names, and once elsewhere, is searched in both states.
func TestFindSameTreeInTwoStates(t *testing.T) {
	f := newFindRepo(t)
	same := map[string]findFile{"x.txt": {data: "x"}, "in/y.txt": {data: "y"}}
	files := map[string]findFile{}
	for p, ff := range same {
		files["/a/dir/"+p] = ff
		files["/a/other/"+p] = ff
		files["/b/dir/"+p] = ff
	}
	snaps := []*snapshot.Snapshot{f.snap(t, files, findTime)}
	for _, pats := range [][]string{{"dir/*"}, {"/a/dir"}, {"dir"}, {"other/in/*"}} {
		opts := FindOptions{Patterns: pats}
		got, _ := findAll(t, f, snaps, opts)
		if ref := naiveFind(t, f.r, snaps, opts); !reflect.DeepEqual(got, ref) {
			t.Errorf("%q: got %q, want %q", pats, got, ref)
		}
	}
}

func TestFindObjects(t *testing.T) {
	f, snaps := findFixture(t)
	ctx := context.Background()
	root, err := f.r.LoadTree(ctx, snaps[1].Tree)
	if err != nil {
		t.Fatal(err)
	}
	home := root.Find("home")
	annTree, err := f.r.LoadTree(ctx, *home.Subtree)
	if err != nil {
		t.Fatal(err)
	}
	ann := annTree.Find("ann")
	annNodes, err := f.r.LoadTree(ctx, *ann.Subtree)
	if err != nil {
		t.Fatal(err)
	}
	aBlob := annNodes.Find("a.go").Content[0]
	dirTree := *annNodes.Find("dir").Subtree

	// Blobs by full id and by prefix; the parent tree is ann's.
	var hits []FindHit
	_, err = Find(ctx, f, snaps, FindOptions{Blobs: []string{aBlob.String()}}, func(sn *snapshot.Snapshot, h *FindHit) error {
		hits = append(hits, *h)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 || hits[0].Path != "/home/ann/a.go" || hits[0].ObjectType != "blob" || hits[0].ID != aBlob {
		t.Fatalf("blob hits %+v", hits)
	}
	if hits[1].ParentTree != *ann.Subtree {
		t.Errorf("parent tree %s, want %s", hits[1].ParentTree.Short(), ann.Subtree.Short())
	}
	got, _ := findAll(t, f, snaps, FindOptions{Blobs: []string{aBlob.String()[:7], "ffffffffffff"}})
	if want := []string{"0 /home/ann/a.go blob " + aBlob.Short(), "1 /home/ann/a.go blob " + aBlob.Short()}; !reflect.DeepEqual(got, want) {
		t.Errorf("blob prefix: got %q, want %q", got, want)
	}
	got, _ = findAll(t, f, snaps, FindOptions{Trees: []string{strings.ToUpper(dirTree.String()[:9])}})
	if want := []string{"0 /home/ann/dir tree " + dirTree.Short(), "1 /home/ann/dir tree " + dirTree.Short()}; !reflect.DeepEqual(got, want) {
		t.Errorf("tree: got %q, want %q", got, want)
	}
	// A root tree is not reported.
	got, _ = findAll(t, f, snaps, FindOptions{Trees: []string{snaps[0].Tree.String()}})
	if len(got) != 0 {
		t.Errorf("root tree reported: %q", got)
	}
}

func TestFindTreeErrors(t *testing.T) {
	f, snaps := findFixture(t)
	ctx := context.Background()
	root, _ := f.r.LoadTree(ctx, snaps[0].Tree)
	etc := *root.Find("etc").Subtree
	f.fail[etc] = true

	// Without TreeError the search fails and names the tree.
	_, err := Find(ctx, f, snaps, FindOptions{Patterns: []string{"*"}}, func(*snapshot.Snapshot, *FindHit) error { return nil })
	if err == nil || !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), etc.Short()) || !strings.Contains(err.Error(), "/etc") {
		t.Fatalf("error %v", err)
	}
	// With it, the rest is still found.
	var failed []string
	opts := FindOptions{Patterns: []string{"*.go"}, TreeError: func(id crypto.ID, path string, err error) {
		failed = append(failed, id.Short()+" "+path)
	}}
	got, st := findAll(t, f, snaps, opts)
	if len(got) != 5 || st.TreeErrors != 1 || !reflect.DeepEqual(failed, []string{etc.Short() + " /etc"}) {
		t.Errorf("got %q, stats %+v, failed %q", got, st, failed)
	}
}

func TestFindStopsAtCallbackError(t *testing.T) {
	f, snaps := findFixture(t)
	stop := errors.New("stop")
	n := 0
	_, err := Find(context.Background(), f, snaps, FindOptions{Patterns: []string{"*"}}, func(*snapshot.Snapshot, *FindHit) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("err %v after %d calls", err, n)
	}
}

func TestPackBlobs(t *testing.T) {
	f, _ := findFixture(t)
	packs := f.r.Index().Packs()
	var dataPack crypto.ID
	var want []string
	for id, blobs := range packs {
		if blobs[0].Type == pack.DataBlob {
			dataPack = id
			for _, b := range blobs {
				want = append(want, b.ID.String())
			}
			break
		}
	}
	got, err := PackBlobs(f.r.Index(), []string{dataPack.String()[:8]})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := PackBlobs(f.r.Index(), []string{dataPack.String(), "0000000000"}); err == nil || !strings.Contains(err.Error(), "0000000000") {
		t.Errorf("missing pack: %v", err)
	}
}

// compactFindRepo serves a findRepo's trees in compact form, kept in files
// whatever their size, as the repository serves a directory of millions of
// files.
type compactFindRepo struct {
	*findRepo
	dir string
}

func (c compactFindRepo) LoadCompactTree(ctx context.Context, id crypto.ID, _ tree.SpillOptions) (*tree.Compact, error) {
	c.mu.Lock()
	c.loads[id]++
	c.mu.Unlock()
	return c.r.LoadCompactTree(ctx, id, tree.SpillOptions{Dir: c.dir, Above: 1})
}

// TestFindCompactTrees: a search through trees read node by node from
// files finds what the search of decoded trees finds: patterns, times,
// nodes without content, and blob and tree ids.
func TestFindCompactTrees(t *testing.T) {
	f, snaps := findFixture(t)
	c := compactFindRepo{findRepo: f, dir: t.TempDir()}
	root, err := f.r.LoadTree(context.Background(), snaps[0].Tree)
	if err != nil {
		t.Fatal(err)
	}
	home := root.Find("home")
	for _, opts := range []FindOptions{
		{Patterns: []string{"*"}},
		{Patterns: []string{"*.go"}, Oldest: findTime.Add(time.Hour)},
		{Patterns: []string{"FOO*"}, IgnoreCase: true},
		{Patterns: []string{"/home/ann/dir"}, PathsOnly: true},
		{Trees: []string{home.Subtree.String()}},
		{Blobs: []string{f.r.BlobID([]byte("conf")).String()}},
	} {
		want, _ := findAll(t, f, snaps, opts)
		if len(want) == 0 {
			t.Fatalf("%+v: nothing found", opts)
		}
		f.resetLoads()
		got, _ := findAll(t, c, snaps, opts)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: compact trees found %q, decoded trees %q", opts, got, want)
		}
		if len(f.loads) == 0 {
			t.Errorf("%+v: the compact loader was not used", opts)
		}
	}
}
