package integration

// The backup options restic users reach for (dj issue 8): --files-from and
// its verbatim and raw forms, --exclude-if-present, --exclude-caches,
// --ignore-inode, --ignore-ctime, --skip-if-unchanged, --read-concurrency,
// the stored size in the summary, and agreement with restic 0.14 on which
// files are selected.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// lsJSON parses `ls --json` output (dj's or restic's) into sorted
// "path type" lines for the nodes strictly below prefix, prefix cut off.
func lsJSON(t *testing.T, out, prefix string) []string {
	t.Helper()
	var got []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var n struct {
			StructType string `json:"struct_type"`
			Path       string `json:"path"`
			Type       string `json:"type"`
		}
		if err := json.Unmarshal(sc.Bytes(), &n); err != nil {
			t.Fatalf("ls --json line %q: %v", sc.Text(), err)
		}
		if n.StructType == "node" && strings.HasPrefix(n.Path, prefix+"/") {
			got = append(got, strings.TrimPrefix(n.Path, prefix)+" "+n.Type)
		}
	}
	sort.Strings(got)
	return got
}

// summary is the part of a backup's --json summary the tests look at.
type summary struct {
	FilesNew        int    `json:"files_new"`
	FilesChanged    int    `json:"files_changed"`
	FilesUnmodified int    `json:"files_unmodified"`
	DirsChanged     int    `json:"dirs_changed"`
	DataAdded       uint64 `json:"data_added"`
	DataAddedPacked uint64 `json:"data_added_packed"`
	SnapshotID      string `json:"snapshot_id"`
	tree            string
}

// backupSummary runs `dj --json backup args...` and returns its summary,
// with the root tree of the snapshot it wrote.
func backupSummary(t *testing.T, e *env, args ...string) summary {
	t.Helper()
	out := e.must(append([]string{"--json", "backup"}, args...)...)
	var s summary
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// The summary is the last JSON value (indented or not).
	start := strings.LastIndex(out, "\n{")
	if start < 0 {
		start = 0
	}
	if err := json.Unmarshal([]byte(out[start:]), &s); err != nil {
		t.Fatalf("backup summary %q: %v (%d lines)", out, err, len(lines))
	}
	if s.SnapshotID != "" {
		var sns []struct {
			ID   string `json:"id"`
			Tree string `json:"tree"`
		}
		if err := json.Unmarshal([]byte(e.must("snapshots", "--json")), &sns); err != nil {
			t.Fatalf("snapshots --json: %v", err)
		}
		for _, sn := range sns {
			if strings.HasPrefix(sn.ID, s.SnapshotID) {
				s.tree = sn.Tree
			}
		}
	}
	return s
}

// resticRepo is a restic repository for agreement tests.
type resticRepo struct {
	t   *testing.T
	dir string
}

// newResticRepo initialises a restic repository, or returns nil (or skips
// the test, when required) when restic is not installed or in -short mode.
func newResticRepo(t *testing.T, required bool) *resticRepo {
	t.Helper()
	if _, err := exec.LookPath("restic"); err != nil || testing.Short() {
		if required {
			t.Skip("restic is not installed (or -short): no agreement test")
		}
		return nil
	}
	r := &resticRepo{t: t, dir: filepath.Join(t.TempDir(), "restic-repo")}
	r.must("init")
	return r
}

func (r *resticRepo) run(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "restic", append([]string{"-r", r.dir, "--no-cache"}, args...)...)
	cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=pw")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return so.String(), se.String(), err
}

func (r *resticRepo) must(args ...string) string {
	r.t.Helper()
	out, errOut, err := r.run(args...)
	if err != nil {
		r.t.Fatalf("restic %v: %v\n%s%s", args, err, out, errOut)
	}
	return out
}

const cacheSig = "Signature: 8a477f597d28d172789f06886806bc55"

// selectionTree builds a tree for the selection tests: globs, names that
// look like comments or have blanks, cache directories (valid, invalid
// signature, nested), and tag files with and without a header.
func selectionTree(t *testing.T, root string) {
	t.Helper()
	files := map[string]string{
		"a.txt": "a", "b.txt": "b", "c.log": "c", "sp ace.txt": "s", "#hash.txt": "h", " lead.txt": "l",
		"dir/x.txt": "x", "dir/sub/y.txt": "y", "dir/sub/z.log": "z",
		"cache/CACHEDIR.TAG": cacheSig + "\n# a cache\n", "cache/data": "d", "cache/sub/deep": "d",
		"badcache/CACHEDIR.TAG": "Signature: not the right one\n", "badcache/data": "d",
		"shortcache/CACHEDIR.TAG": "Signature: 8a47", "shortcache/data": "d",
		"nested/keep": "k", "nested/cache2/CACHEDIR.TAG": cacheSig, "nested/cache2/blob": "b",
		"marked/.nobackup": "", "marked/data": "d", "marked/sub/w": "w",
		"hdr/.skip": "KEEP-OUT please\n", "hdr/data": "d",
		"hdrbad/.skip": "other\n", "hdrbad/data": "d",
		"both/.nobackup": "", "both/.skip": "KEEP-OUT", "both/data": "d",
	}
	for name, data := range files {
		writeFile(t, filepath.Join(root, name), []byte(data))
	}
}

func TestBackupFilesFrom(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	root := filepath.Join(e.dir, "src")
	selectionTree(t, root)
	list := filepath.Join(e.dir, "list")
	writeFile(t, list, []byte(strings.Join([]string{
		"# a comment",
		"",
		"   " + root + "/*.txt   ",
		"\t# an indented comment",
		root + "/dir/sub",
		root + "/nomatch*",
		root + "/#hash.txt",
	}, "\n")+"\n"))
	r := e.run("backup", "--files-from", list)
	if r.code != 0 || !strings.Contains(r.stderr, `pattern "`+root+`/nomatch*" does not match any files, skipping`) {
		t.Fatalf("backup --files-from: exit %d\n%s", r.code, r.stderr)
	}
	// Go's (and restic's) globs: * matches a leading "#" or blank too.
	want := []string{"/ lead.txt file", "/#hash.txt file", "/a.txt file", "/b.txt file", "/dir dir", "/dir/sub dir",
		"/dir/sub/y.txt file", "/dir/sub/z.log file", "/sp ace.txt file"}
	sort.Strings(want)
	if got := lsJSON(t, e.must("ls", "--json", "latest"), root); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("--files-from selected\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Verbatim: no comments, no globs, blanks kept; CRLF line ends.
	vlist := filepath.Join(e.dir, "vlist")
	writeFile(t, vlist, []byte(root+"/#hash.txt\r\n"+root+"/ lead.txt\n\n"+root+"/*.log\n"+root+"/c.log\n"))
	r = e.run("backup", "--files-from-verbatim", vlist)
	if r.code != 3 || !strings.Contains(r.stderr, root+"/*.log does not exist, skipping") {
		t.Fatalf("backup --files-from-verbatim with a missing entry: exit %d (want 3)\n%s", r.code, r.stderr)
	}
	want = []string{"/ lead.txt file", "/#hash.txt file", "/c.log file"}
	sort.Strings(want)
	if got := lsJSON(t, e.must("ls", "--json", "latest"), root); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("--files-from-verbatim selected\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Raw, repeated, combined with a path argument and a list on stdin.
	weird := filepath.Join(root, "new\nline")
	writeFile(t, weird, []byte("n"))
	raw := filepath.Join(e.dir, "raw")
	writeFile(t, raw, []byte(weird+"\x00"+root+"/dir/x.txt\x00"))
	raw2 := filepath.Join(e.dir, "raw2")
	writeFile(t, raw2, []byte(root+"/b.txt\x00"))
	r = e.runStdin(root+"/c.*\n", nil, "backup", "--files-from-raw", raw, "--files-from-raw", raw2, "--files-from", "-", root+"/a.txt")
	if r.code != 0 {
		t.Fatalf("backup --files-from-raw x2 --files-from - PATH: exit %d\n%s", r.code, r.stderr)
	}
	want = []string{"/a.txt file", "/b.txt file", "/c.log file", "/dir dir", "/dir/x.txt file", "/new\nline file"}
	sort.Strings(want)
	if got := lsJSON(t, e.must("ls", "--json", "latest"), root); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("--files-from-raw selected\n%q\nwant\n%q", got, want)
	}

	// Bad lists: one line of error, no snapshot.
	before := e.must("snapshots", "--json")
	writeFile(t, raw, []byte(root+"/a.txt"))
	allMissing := filepath.Join(e.dir, "missing")
	writeFile(t, allMissing, []byte(root+"/gone\n"))
	for _, args := range [][]string{
		{"--files-from-raw", raw},
		{"--files-from", filepath.Join(e.dir, "no-such-list")},
		{"--files-from-verbatim", allMissing},
		{"--files-from", "-", "--stdin"},
	} {
		r := e.run(append([]string{"backup"}, args...)...)
		if r.code == 0 || r.code == 3 || strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 {
			t.Errorf("backup %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if after := e.must("snapshots", "--json"); after != before {
		t.Fatal("a failed backup wrote a snapshot")
	}
}

func TestBackupExcludeIfPresentAndCaches(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	root := filepath.Join(e.dir, "src")
	selectionTree(t, root)
	all := lsOf(t, e, root, root)

	// The tagged directories and their tag files stay; nothing else in them.
	got := lsOf(t, e, root, "--exclude-caches", root)
	want := without(all, "/cache/data", "/cache/sub", "/nested/cache2/blob")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("--exclude-caches selected\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	got = lsOf(t, e, root, "--exclude-if-present", ".nobackup", "--exclude-if-present", ".skip:KEEP-OUT", root)
	want = without(all, "/marked/data", "/marked/sub", "/hdr/data", "/both/data", "/both/.skip", "/both/.nobackup")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("--exclude-if-present selected\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A path given inside a tagged directory is left out too (restic).
	got = lsOf(t, e, root, "--exclude-caches", root+"/cache/data", root+"/a.txt")
	if want := []string{"/a.txt file", "/cache dir"}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("--exclude-caches on a path inside a cache: %v, want %v", got, want)
	}
	// Bad specs.
	for _, spec := range []string{":header", ""} {
		if r := e.run("backup", "--exclude-if-present", spec, root); r.code == 0 || r.code == 3 {
			t.Errorf("--exclude-if-present %q: exit %d", spec, r.code)
		}
	}
}

// lsOf backs up with args and lists the snapshot below root.
func lsOf(t *testing.T, e *env, root string, args ...string) []string {
	t.Helper()
	e.must(append([]string{"backup"}, args...)...)
	return lsJSON(t, e.must("ls", "--json", "latest"), root)
}

// without drops the listed paths and everything below them.
func without(list []string, drop ...string) []string {
	var out []string
next:
	for _, l := range list {
		p := l[:strings.LastIndex(l, " ")]
		for _, d := range drop {
			if p == d || strings.HasPrefix(p, d+"/") {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

func TestBackupIgnoreInodeAndCtime(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	f := filepath.Join(src, "f")
	writeFile(t, f, []byte("AAAA"))
	mtime := time.Now().Add(-time.Hour)
	os.Chtimes(f, mtime, mtime)
	base := backupSummary(t, e, src).SnapshotID
	// Each backup compares with the first snapshot (a backup that skips a
	// file stores its new metadata with the old content).
	backup := func(args ...string) string {
		e.must(append(append([]string{"backup", "--parent", base}, args...), src)...)
		return e.must("dump", "latest", f)
	}

	// Same inode, same size and mtime, new content: only the ctime tells.
	if err := os.WriteFile(f, []byte("BBBB"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(f, mtime, mtime)
	if got := backup("--ignore-ctime"); got != "AAAA" {
		t.Fatalf("--ignore-ctime: the file was read again (%q)", got)
	}
	if got := backup(); got != "BBBB" {
		t.Fatalf("without --ignore-ctime: the ctime change was missed (%q)", got)
	}

	// A new inode (and ctime), same size and mtime.
	tmp := f + ".new"
	writeFile(t, tmp, []byte("CCCC"))
	os.Chtimes(tmp, mtime, mtime)
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	if got := backup("--ignore-ctime"); got != "CCCC" {
		t.Fatalf("--ignore-ctime: the inode change was missed (%q)", got)
	}
	if got := backup("--ignore-ctime", "--ignore-inode"); got != "AAAA" {
		t.Fatalf("--ignore-inode --ignore-ctime: the file was read again (%q)", got)
	}
	if got := backup(); got != "CCCC" {
		t.Fatalf("without the flags: the change was missed (%q)", got)
	}
}

func TestBackupSkipIfUnchanged(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "d", "f"), []byte("data"))
	count := func() int {
		var sns []json.RawMessage
		if err := json.Unmarshal([]byte(e.must("snapshots", "--json")), &sns); err != nil {
			t.Fatal(err)
		}
		return len(sns)
	}
	// unchanged runs a backup of the unchanged tree with
	// --skip-if-unchanged and reports whether it skipped. Other programs
	// may write to the directories above src (/tmp), which does change
	// the tree: it tries again then.
	unchanged := func(run func() bool) {
		t.Helper()
		for try := 0; try < 5; try++ {
			before := ancestorStamps(src)
			e.must("backup", src)
			n := count()
			skipped := run()
			moved := strings.Join(ancestorStamps(src), " ") != strings.Join(before, " ")
			switch {
			case skipped && count() != n:
				t.Fatal("--skip-if-unchanged said it skipped but wrote a snapshot")
			case skipped:
				return
			case !moved:
				t.Fatal("--skip-if-unchanged wrote a snapshot of an unchanged tree")
			}
		}
		t.Skip("the directories above the test directory kept changing")
	}
	unchanged(func() bool {
		out := e.must("backup", "--skip-if-unchanged", src)
		return strings.Contains(out, "skipped")
	})
	// --json: the summary has no snapshot_id (restic).
	unchanged(func() bool {
		s := backupSummary(t, e, "--skip-if-unchanged", src)
		return s.SnapshotID == "" && s.FilesUnmodified == 1
	})
	// A change is saved.
	writeFile(t, filepath.Join(src, "d", "g"), []byte("new"))
	n := count()
	if out := e.must("backup", "--skip-if-unchanged", src); !strings.Contains(out, "saved") || count() != n+1 {
		t.Fatalf("--skip-if-unchanged after a change: %s", out)
	}
}

func TestBackupReadConcurrencyAndPackedSize(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(src, "f"+string(rune('a'+i))), bytes.Repeat([]byte{byte('a' + i), '\n'}, 50000+i))
	}
	s := backupSummary(t, e, "--read-concurrency", "1", src)
	if s.FilesNew != 20 {
		t.Fatalf("--read-concurrency 1: %+v", s)
	}
	// The stored size of the new blobs: compressed, so smaller than the
	// plain size, and exactly what the repository holds.
	if s.DataAddedPacked == 0 || s.DataAddedPacked >= s.DataAdded {
		t.Fatalf("data_added_packed %d, data_added %d", s.DataAddedPacked, s.DataAdded)
	}
	var st struct {
		TotalSize uint64 `json:"total_size"`
	}
	if err := json.Unmarshal([]byte(e.must("stats", "--json", "--mode", "raw-data")), &st); err != nil {
		t.Fatal(err)
	}
	if st.TotalSize != s.DataAddedPacked {
		t.Fatalf("data_added_packed %d, repository holds %d", s.DataAddedPacked, st.TotalSize)
	}
	var sns []struct {
		Summary struct {
			DataAddedPacked uint64 `json:"data_added_packed"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(e.must("snapshots", "--json")), &sns); err != nil || len(sns) != 1 || sns[0].Summary.DataAddedPacked != s.DataAddedPacked {
		t.Fatalf("snapshot summary: %+v, %v", sns, err)
	}
	// The environment variable, and more readers than files.
	r := e.runEnv([]string{"DJ_READ_CONCURRENCY=64"}, "backup", "--force", src)
	if r.code != 0 {
		t.Fatalf("DJ_READ_CONCURRENCY=64: exit %d\n%s", r.code, r.stderr)
	}
	if r := e.run("backup", "--read-concurrency", "many", src); r.code == 0 {
		t.Fatal("--read-concurrency many was accepted")
	}
}

func TestBackupExcludeLargerThanBadValue(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	r := e.run("backup", "--exclude-larger-than", "banana", e.dir)
	if r.code == 0 || !strings.Contains(r.stderr, `"banana"`) || strings.Contains(r.stderr, "BANANA") {
		t.Fatalf("--exclude-larger-than banana: exit %d, %q", r.code, r.stderr)
	}
}

// TestBackupSelectionAgreesWithRestic: for the same lists and tag files,
// dj and restic 0.14 select the same files.
func TestBackupSelectionAgreesWithRestic(t *testing.T) {
	rr := newResticRepo(t, true)
	e := newEnv(t)
	e.must("init")
	root := filepath.Join(e.dir, "src")
	selectionTree(t, root)
	writeFile(t, filepath.Join(root, "new\nline"), []byte("n"))
	list := filepath.Join(e.dir, "list")
	writeFile(t, list, []byte(strings.Join([]string{
		"# comment", "", "  " + root + "/*.txt  ", root + "/dir/sub/*.log", root + "/cache", root + "/nested",
		root + "/b?txt", root + "/[ab].txt", root + "/nomatch*", "\t#" + root + "/c.log",
	}, "\n")+"\n"))
	vlist := filepath.Join(e.dir, "vlist")
	writeFile(t, vlist, []byte(root+"/#hash.txt\n"+root+"/ lead.txt\n\n"+root+"/dir/sub\n"+root+"/marked\n"))
	raw := filepath.Join(e.dir, "raw")
	writeFile(t, raw, []byte(root+"/new\nline\x00"+root+"/hdr\x00"+root+"/badcache\x00"))
	cases := [][]string{
		{"--files-from", list},
		{"--files-from-verbatim", vlist},
		{"--files-from-raw", raw},
		{"--files-from", list, "--files-from-verbatim", vlist, "--files-from-raw", raw},
		{"--exclude-caches", root},
		{"--exclude-if-present", ".nobackup", root},
		{"--exclude-if-present", ".skip:KEEP-OUT", root},
		{"--exclude-if-present", ".skip:KEEP-OUT", "--exclude-if-present", ".nobackup", "--exclude-caches", root},
		{"--exclude-caches", "--files-from", list, "--files-from-raw", raw},
		{"--exclude-caches", root + "/cache/data", root + "/nested/cache2", root + "/shortcache"},
	}
	for _, args := range cases {
		e.must(append([]string{"backup"}, args...)...)
		got := lsJSON(t, e.must("ls", "--json", "latest"), root)
		rr.must(append([]string{"backup", "-q"}, args...)...)
		want := lsJSON(t, rr.must("ls", "--json", "latest"), root)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("backup %q:\ndj selects\n%q\nrestic selects\n%q", args, got, want)
		}
	}
}
