package integration

// find: restic's output shapes (text, -l, --json for names and for
// objects), the snapshot selection, and agreement with restic 0.14 on the
// same source backed up by both tools.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// findMatchJSON is a match in `find --json` (restic's shape).
type findMatchJSON struct {
	Path        string    `json:"path"`
	Permissions string    `json:"permissions"`
	Type        string    `json:"type"`
	Mode        uint32    `json:"mode"`
	ModTime     time.Time `json:"mtime"`
	UID         uint32    `json:"uid"`
	GID         uint32    `json:"gid"`
	User        string    `json:"user"`
	Group       string    `json:"group"`
	DeviceID    uint64    `json:"device_id"`
	Size        uint64    `json:"size"`
	Links       uint64    `json:"links"`
	LinkTarget  string    `json:"linktarget"`
}

// findGroupJSON is one snapshot's matches in `find --json`.
type findGroupJSON struct {
	Matches  []findMatchJSON `json:"matches"`
	Hits     int             `json:"hits"`
	Snapshot string          `json:"snapshot"`
}

// findObjectJSON is a blob or tree found by `find --blob/--tree --json`.
type findObjectJSON struct {
	ObjectType string    `json:"object_type"`
	ID         string    `json:"id"`
	Path       string    `json:"path"`
	ParentTree string    `json:"parent_tree"`
	Snapshot   string    `json:"snapshot"`
	Time       time.Time `json:"time"`
}

// findFiles is the content of the find tests' source tree at a step.
func findFiles(step int) map[string]string {
	files := map[string]string{
		"main.go":          "package main",
		"README":           "read me",
		"foo/b.txt":        "b",
		"sub/foo/c.go":     "package foo",
		"sub/Upper.GO":     "package upper",
		"dir/d.txt":        "d",
		"dir/deep/e.txt":   "e",
		"dir/deep/f.go":    "package deep",
		"other/dir/g.txt":  "g",
		"with space/h.txt": "h",
	}
	if step >= 1 {
		files["main.go"] = "package main // changed"
		files["new.go"] = "package main // new"
		files["dir/x.txt"] = "x"
	}
	if step >= 2 {
		delete(files, "foo/b.txt")
		files["foo/z.go"] = "package z"
		files["sub/foo/c.go"] = "package foo // v3"
	}
	return files
}

// findTree writes the source tree of the find tests with fixed times:
// step 0, then changes in later steps.
func findTree(t *testing.T, src string, step int) {
	t.Helper()
	old := time.Date(2020, 5, 1, 10, 0, 0, 0, time.Local)
	mid := time.Date(2021, 7, 1, 10, 0, 0, 0, time.Local)
	files := findFiles(step)
	if step == 0 {
		if err := os.RemoveAll(src); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("main.go", filepath.Join(src, "link")); err != nil {
			t.Fatal(err)
		}
	}
	// Only what changed is written, so unchanged directories keep their
	// tree (and the tree search finds it in every snapshot).
	prev := map[string]string{}
	if step > 0 {
		prev = findFiles(step - 1)
	}
	for p := range prev {
		if _, ok := files[p]; !ok {
			if err := os.Remove(filepath.Join(src, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	written := map[string]bool{}
	for p, data := range files {
		if old, ok := prev[p]; !ok || old != data {
			writeFile(t, filepath.Join(src, p), []byte(data))
			written[filepath.Join(src, p)] = true
		}
	}
	// Files written now: 2020, or for changed .go files (but those in
	// deep) 2021 plus the step; directories 2020, deepest first.
	var dirs []string
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		if fi.Mode()&os.ModeSymlink != 0 || !written[p] {
			return nil
		}
		mt := old
		if strings.HasSuffix(p, ".go") && step > 0 && !strings.Contains(p, "deep") {
			mt = mid.Add(time.Duration(step) * 24 * time.Hour)
		}
		return os.Chtimes(p, mt, mt)
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

var findSnapTimes = []string{"2024-01-01 10:00:00", "2024-01-02 10:00:00", "2024-01-03 10:00:00"}

func TestFindOutputShapes(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	var ids []string
	for step := 0; step < 3; step++ {
		findTree(t, src, step)
		ids = append(ids, e.backupSnapshot("--time", findSnapTimes[step], "--host", fmt.Sprintf("host%d", step%2), src))
	}

	// Text: per snapshot a header and the paths; a blank line between.
	out := e.must("find", "*.go")
	blocks := strings.Split(strings.TrimSuffix(out, "\n"), "\n\n")
	if len(blocks) != 3 {
		t.Fatalf("find *.go: %d blocks, want 3:\n%s", len(blocks), out)
	}
	for i, b := range blocks {
		lines := strings.Split(b, "\n")
		want := fmt.Sprintf("Found matching entries in snapshot %s from ", ids[i][:8])
		if !strings.HasPrefix(lines[0], want) {
			t.Errorf("block %d starts with %q, want %q", i, lines[0], want)
		}
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, src+"/") || !strings.HasSuffix(strings.ToLower(l), ".go") {
				t.Errorf("block %d: line %q", i, l)
			}
		}
	}
	if !strings.Contains(blocks[2], src+"/foo/z.go\n") || strings.Contains(blocks[0], "new.go") {
		t.Errorf("find *.go:\n%s", out)
	}
	// --quiet: only the paths.
	if q := e.must("find", "--quiet", "-s", ids[0], "README"); q != src+"/README\n" {
		t.Errorf("find --quiet: %q", q)
	}

	// -l: restic's long format.
	out = e.must("find", "-l", "-s", ids[0], "README", "link")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("find -l:\n%s", out)
	}
	uid := os.Getuid()
	wantReadme := fmt.Sprintf("-rw-r--r-- %5d %5d %6d %s %s/README", uid, os.Getgid(), 7,
		time.Date(2020, 5, 1, 10, 0, 0, 0, time.Local).Format("2006-01-02 15:04:05"), src)
	if lines[1] != wantReadme {
		t.Errorf("find -l:\n got %q\nwant %q", lines[1], wantReadme)
	}
	if !strings.HasPrefix(lines[2], "Lrwxrwxrwx") || !strings.HasSuffix(lines[2], src+"/link -> main.go") {
		t.Errorf("find -l symlink line %q", lines[2])
	}

	// --json: a list of {"matches","hits","snapshot"}, compact, one line.
	out = e.must("find", "--json", "foo")
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, `[{"matches":[{"path":`) {
		t.Errorf("find --json is not restic's one-line list: %q", out)
	}
	var groups []findGroupJSON
	parseJSON(t, "find --json", out, &groups)
	if len(groups) != 3 {
		t.Fatalf("find --json foo: %d groups", len(groups))
	}
	for i, g := range groups {
		if g.Snapshot != ids[i] || g.Hits != len(g.Matches) {
			t.Errorf("group %d: snapshot %s hits %d matches %d", i, g.Snapshot, g.Hits, len(g.Matches))
		}
	}
	var paths []string
	for _, m := range groups[2].Matches {
		paths = append(paths, strings.TrimPrefix(m.Path, src))
	}
	if want := []string{"/foo", "/foo/z.go", "/sub/foo", "/sub/foo/c.go"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("find foo in snapshot 3: %q, want %q", paths, want)
	}
	d, f := groups[2].Matches[0], groups[2].Matches[1]
	if d.Type != "dir" || d.Permissions != "drwxr-xr-x" || d.Mode != 0x80000000|0o755 || d.Size != 0 || d.Links != 0 {
		t.Errorf("directory match %+v", d)
	}
	if f.Type != "file" || f.Permissions != "-rw-r--r--" || f.Mode != 0o644 || f.Size != 9 || f.Links != 1 || int(f.UID) != uid || f.DeviceID == 0 {
		t.Errorf("file match %+v", f)
	}
	// The node fields restic leaves out.
	var raw []struct {
		Matches []map[string]json.RawMessage `json:"matches"`
	}
	parseJSON(t, "find --json", out, &raw)
	for _, k := range []string{"name", "inode", "content", "subtree", "extended_attributes", "device"} {
		if _, ok := raw[0].Matches[1][k]; ok {
			t.Errorf("find --json has %q", k)
		}
	}
	if out := e.must("find", "--json", "nothing"); out != "[]\n" {
		t.Errorf("find --json without matches: %q", out)
	}

	// Snapshot selection: -s (several, "latest"), filters.
	out = e.must("find", "--json", "-s", ids[2][:10], "-s", ids[0], "README")
	parseJSON(t, "find -s", out, &groups)
	if len(groups) != 2 || groups[0].Snapshot != ids[2] || groups[1].Snapshot != ids[0] {
		t.Errorf("find -s: %s", out)
	}
	out = e.must("find", "--json", "--host", "host1", "README")
	parseJSON(t, "find --host", out, &groups)
	if len(groups) != 1 || groups[0].Snapshot != ids[1] {
		t.Errorf("find --host: %s", out)
	}
	out = e.must("find", "--json", "--host", "host0", "-s", "latest", "README")
	parseJSON(t, "find --host -s latest", out, &groups)
	if len(groups) != 1 || groups[0].Snapshot != ids[2] {
		t.Errorf("find --host -s latest: %s", out)
	}
	r := e.run("find", "-s", "ffffffff", "-s", ids[1], "README")
	if r.code != 0 || !strings.Contains(r.stderr, `Ignoring "ffffffff"`) || !strings.Contains(r.stdout, ids[1][:8]) {
		t.Errorf("find with an unknown -s: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// --oldest / --newest.
	out = e.must("find", "--quiet", "--oldest", "2021-07-03", "--newest", "2021-07-03 23:59:59", "*.go")
	if want := src + "/foo/z.go\n" + src + "/sub/foo/c.go\n"; out != want {
		t.Errorf("find --oldest --newest: got\n%swant\n%s", out, want)
	}

	// --tree: a directory's tree, found in every snapshot that has it.
	out = e.must("cat", "snapshot", ids[0])
	var sn struct {
		Tree string `json:"tree"`
	}
	parseJSON(t, "cat snapshot", out, &sn)
	deepTree := e.treeAt(t, sn.Tree, strings.TrimPrefix(src, "/")+"/dir/deep")
	out = e.must("find", "--json", "--tree", deepTree[:8])
	var objs []findObjectJSON
	parseJSON(t, "find --tree", out, &objs)
	if len(objs) != 3 {
		t.Fatalf("find --tree: %s", out)
	}
	for i, o := range objs {
		if o.ObjectType != "tree" || o.ID != deepTree || o.Path != src+"/dir/deep" || o.Snapshot != ids[i] || o.ParentTree != "" || o.Time.IsZero() {
			t.Errorf("find --tree object %d: %+v", i, o)
		}
	}
	text := e.must("find", "--tree", deepTree)
	if want := fmt.Sprintf("Found tree %s\n ... path %s/dir/deep\n ... in snapshot %s (", deepTree, src, ids[0][:8]); !strings.HasPrefix(text, want) {
		t.Errorf("find --tree text:\n%s\nwant it to start with\n%s", text, want)
	}

	// --pack and --blob: the pack of README's data names README.
	var readmeBlob string
	for _, p := range e.packs(t) {
		out := e.must("find", "--json", "--pack", p)
		parseJSON(t, "find --pack", out, &objs)
		for _, o := range objs {
			if o.Path == src+"/README" {
				readmeBlob = o.ID
				if o.ObjectType != "blob" || len(o.ParentTree) != 64 {
					t.Errorf("find --pack: %+v", o)
				}
			}
		}
	}
	if readmeBlob == "" {
		t.Fatal("no pack holds README's data")
	}
	out = e.must("find", "--json", "--blob", readmeBlob[:8])
	parseJSON(t, "find --blob", out, &objs)
	if len(objs) != 3 || objs[0].Path != src+"/README" || objs[0].ID != readmeBlob {
		t.Errorf("find --blob: %s", out)
	}
	text = e.must("find", "--show-pack-id", "--blob", readmeBlob)
	if !strings.Contains(text, " ... in file "+src+"/README\n     (tree ") || !strings.Contains(text, "Object belongs to pack ") {
		t.Errorf("find --show-pack-id --blob:\n%s", text)
	}

	// Bad input: one line, exit 1.
	for _, args := range [][]string{
		{"find"},
		{"find", "[a"},
		{"find", "--oldest", "yesterday", "x"},
		{"find", "--blob", "--tree", "abcd"},
		{"find", "--blob", "xyz"},
		{"find", "--pack", "00000000"},
		{"find", "-s", "ffffffff", "x"},
	} {
		r := e.run(args...)
		if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 || r.stderr == "" {
			t.Errorf("dj %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// TestFindReportsUnreadableTrees: a tree that cannot be loaded is named on
// stderr, the rest is still searched, and the exit code is 1.
func TestFindReportsUnreadableTrees(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a"))
	e.must("backup", "--quiet", src)
	for _, p := range e.packs(t) {
		matches, _ := filepath.Glob(filepath.Join(e.repo, "data", "*", p))
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := e.run("find", "a.txt")
	if r.code != 1 || !strings.Contains(r.stderr, "tree ") || !strings.Contains(r.stderr, " at / cannot be loaded") ||
		!strings.Contains(r.stderr, "could not be loaded, the results are incomplete") {
		t.Errorf("find with its trees gone: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// treeAt returns the tree id of the directory at path (no leading '/')
// below the tree root, through `dj cat tree`.
func (e *env) treeAt(t *testing.T, root, path string) string {
	t.Helper()
	id := root
	for _, el := range strings.Split(path, "/") {
		var tr struct {
			Nodes []struct {
				Name    string `json:"name"`
				Subtree string `json:"subtree"`
			} `json:"nodes"`
		}
		parseJSON(t, "cat tree", e.must("cat", "tree", id), &tr)
		next := ""
		for _, n := range tr.Nodes {
			if n.Name == el {
				next = n.Subtree
			}
		}
		if next == "" {
			t.Fatalf("no directory %q in tree %s", el, id)
		}
		id = next
	}
	return id
}

// packs lists the pack files of the repository.
func (e *env) packs(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(filepath.Join(e.repo, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			out = append(out, filepath.Base(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// resticRun runs restic on the repository dir.
func resticRun(t *testing.T, repo string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "restic", append([]string{"--no-cache", "-q"}, args...)...)
	cmd.Env = append(cleanEnv(), "RESTIC_REPOSITORY="+repo, "RESTIC_PASSWORD=pw")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("restic %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// TestFindAgreesWithRestic backs up the same source, in three states, with
// dj and restic 0.14 and compares what `find --json` reports for several
// patterns and options: the same (snapshot time, path) pairs, and the same
// node fields for each (those both tools record alike).
func TestFindAgreesWithRestic(t *testing.T) {
	if _, err := exec.LookPath("restic"); err != nil {
		t.Skip("restic is not installed")
	}
	if testing.Short() {
		t.Skip("compares with restic: not in -short")
	}
	e := newEnv(t)
	e.must("init")
	rrepo := filepath.Join(e.dir, "restic-repo")
	resticRun(t, rrepo, "init")
	src := filepath.Join(e.dir, "src")
	for step := 0; step < 3; step++ {
		findTree(t, src, step)
		e.must("backup", "--quiet", "--time", findSnapTimes[step], src)
		resticRun(t, rrepo, "backup", "--time", findSnapTimes[step], src)
	}
	snapTimes := func(out string) map[string]string {
		var list []struct {
			ID   string    `json:"id"`
			Time time.Time `json:"time"`
		}
		parseJSON(t, "snapshots --json", out, &list)
		m := map[string]string{}
		for _, s := range list {
			m[s.ID] = s.Time.UTC().Format(time.RFC3339)
		}
		return m
	}
	djTimes := snapTimes(e.must("snapshots", "--json"))
	resticTimes := snapTimes(resticRun(t, rrepo, "snapshots", "--json"))
	if len(djTimes) != 3 || len(resticTimes) != 3 {
		t.Fatalf("snapshots: dj %v, restic %v", djTimes, resticTimes)
	}

	// key reduces a match to what both tools must agree on.
	key := func(times map[string]string, g findGroupJSON, m findMatchJSON) string {
		return fmt.Sprintf("%s %s type=%s mode=%o perm=%s size=%d uid=%d gid=%d user=%s group=%s mtime=%s links=%d target=%q dev=%d",
			times[g.Snapshot], m.Path, m.Type, m.Mode, m.Permissions, m.Size, m.UID, m.GID, m.User, m.Group,
			m.ModTime.UTC().Format(time.RFC3339Nano), m.Links, m.LinkTarget, m.DeviceID)
	}
	collect := func(out string, times map[string]string) []string {
		var groups []findGroupJSON
		parseJSON(t, "find --json", out, &groups)
		var keys []string
		for _, g := range groups {
			if g.Hits != len(g.Matches) {
				t.Errorf("hits %d, %d matches", g.Hits, len(g.Matches))
			}
			for _, m := range g.Matches {
				keys = append(keys, key(times, g, m))
			}
		}
		sort.Strings(keys)
		return keys
	}
	cases := [][]string{
		{"*.go"},
		{"foo"},
		{"dir/*"},
		{"-i", "*.GO"},
		{"-i", "UPPER*"},
		{"--oldest", "2021-07-02", "*.go"},
		{"--newest", "2021-01-01", "*.go", "*.txt"},
		{"--oldest", "2021-07-03 00:00", "--newest", "2021-07-03 23:59:59", "*"},
		{src + "/dir"},
		{"**/deep/*.go"},
		{"with space"},
		{"link", "README"},
		{"nothing"},
	}
	for _, args := range cases {
		dj := collect(e.must(append([]string{"find", "--json"}, args...)...), djTimes)
		re := collect(resticRun(t, rrepo, append([]string{"find", "--json"}, args...)...), resticTimes)
		if !reflect.DeepEqual(dj, re) {
			t.Errorf("find %q:\ndj:\n  %s\nrestic:\n  %s", args, strings.Join(dj, "\n  "), strings.Join(re, "\n  "))
		} else {
			t.Logf("find %q: %d matches agree", args, len(dj))
		}
	}
	// The text output of one snapshot, short and long (--quiet: without
	// the header that names the snapshot), is the same byte for byte.
	for _, args := range [][]string{{"*.go"}, {"-l", src + "/*"}} {
		args = append([]string{"find", "--quiet", "-s", "latest"}, args...)
		dj := e.must(args...)
		re := resticRun(t, rrepo, args...)
		if dj != re || dj == "" {
			t.Errorf("%q:\ndj:\n%s\nrestic:\n%s", args, dj, re)
		}
	}
}
