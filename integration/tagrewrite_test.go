package integration

// End-to-end tests of `dj tag` and `dj rewrite`: tags changed on all and
// on selected snapshots with the snapshot set otherwise unchanged, and
// files removed from snapshots whose data a later prune frees.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// tagState maps each snapshot's original id (its own id if it has none)
// to its current id, tags and original.
type tagState map[string]snapJSON

func (e *env) tagState() tagState {
	e.t.Helper()
	st := tagState{}
	for _, s := range e.snapshots() {
		key := s.ID
		if s.Original != "" {
			key = s.Original
		}
		if _, dup := st[key]; dup {
			e.t.Fatalf("two snapshots with original %.8s", key)
		}
		st[key] = s
	}
	return st
}

func tagsOf(s snapJSON) string { return strings.Join(s.Tags, ",") }

// assertTags checks the tags of every snapshot (by first id) and that
// snapshots whose tags were not to change kept their id.
func assertTags(t *testing.T, before, after tagState, want map[string]string) {
	t.Helper()
	if len(after) != len(before) {
		t.Fatalf("%d snapshots, want %d", len(after), len(before))
	}
	for key, b := range before {
		a, ok := after[key]
		if !ok {
			t.Fatalf("snapshot %.8s is gone", key)
		}
		w, change := want[key]
		if !change {
			w = tagsOf(b)
		}
		if got := tagsOf(a); got != w {
			t.Errorf("snapshot %.8s: tags %q, want %q", key, got, w)
		}
		if changed := a.ID != b.ID; changed != (tagsOf(a) != tagsOf(b)) {
			t.Errorf("snapshot %.8s: id changed %v, tags changed %v", key, changed, tagsOf(a) != tagsOf(b))
		}
		if a.ID != key && a.Original != key {
			t.Errorf("snapshot %.8s rewritten without its first id as original: %+v", key, a)
		}
	}
}

func TestTagAddRemoveSet(t *testing.T) {
	g := newTreeGen(t, 7)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "a.bin"), g.bytes(200<<10))
	s1 := e.backupSnapshot("--host", "alpha", "--tag", "daily", src)
	writeFile(t, filepath.Join(src, "b.bin"), g.bytes(100<<10))
	s2 := e.backupSnapshot("--host", "alpha", src)
	want2 := scanTree(t, src)
	s3 := e.backupSnapshot("--host", "beta", "--tag", "daily,offsite", src)

	st := e.tagState()
	step := func(wantOut string, want map[string]string, args ...string) {
		t.Helper()
		out := e.must(append([]string{"tag"}, args...)...)
		if !strings.Contains(out, wantOut) {
			t.Fatalf("dj tag %v: output %q, want %q", args, out, wantOut)
		}
		next := e.tagState()
		assertTags(t, st, next, want)
		st = next
	}
	// --add on every snapshot, comma lists and repeats split.
	step("modified tags on 3 snapshots", map[string]string{s1: "daily,x,y", s2: "x,y", s3: "daily,offsite,x,y"}, "--add", "x,y", "--add", "x")
	// Nothing changes: no snapshot file is written again.
	step("no snapshots were modified", nil, "--add", "y")
	// A filter selects; --remove keeps the first original.
	step("modified tags on 1 snapshots", map[string]string{s3: "daily,offsite,x"}, "--host", "beta", "--remove", "y")
	step("modified tags on 2 snapshots", map[string]string{s1: "y,x", s3: "x,offsite"}, "--tag", "daily", "--remove", "daily")
	// Snapshot ids select (a prefix and latest), --set replaces.
	step("modified tags on 2 snapshots", map[string]string{s2: "weekly", s3: "weekly"}, "--set", "weekly", st[s2].ID[:10], "latest")
	// --set '' removes every tag.
	step("modified tags on 1 snapshots", map[string]string{s1: ""}, "--set", "", st[s1].ShortID)

	// --json: one line per changed snapshot and a summary (restic 0.18's
	// lines).
	out := e.must("tag", "--json", "--add", "j", "--tag", "weekly")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("tag --json: %d lines, want 3:\n%s", len(lines), out)
	}
	next := e.tagState()
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("tag --json line %d: %v: %s", i, err, l)
		}
		if i == 2 {
			if m["message_type"] != "summary" || m["changed_snapshots"] != 2.0 {
				t.Errorf("tag --json summary: %s", l)
			}
			continue
		}
		old, _ := m["old_snapshot_id"].(string)
		nw, _ := m["new_snapshot_id"].(string)
		if m["message_type"] != "changed" || len(old) != 64 || len(nw) != 64 {
			t.Fatalf("tag --json line %d: %s", i, l)
		}
		found := false
		for key, s := range st {
			if s.ID == old {
				found = next[key].ID == nw
			}
		}
		if !found {
			t.Errorf("tag --json line %d names snapshots that are not the changed ones: %s", i, l)
		}
	}
	assertTags(t, st, next, map[string]string{s2: "weekly,j", s3: "weekly,j"})

	// Bad combinations: one line, exit 1, nothing changed.
	for _, args := range [][]string{{"tag", "--set", "a", "--add", "b"}, {"tag", "--set", "a", "--remove", "b"}, {"tag"}, {"tag", "--add", "a", "ffffffff"}} {
		r := e.run(args...)
		if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("dj %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	assertTags(t, next, e.tagState(), nil)

	// The data is untouched: check passes and a retagged snapshot restores.
	e.must("check", "--read-data")
	e.restoreMatches(e.tagState()[s2].ID, src, want2)
	if left := e.locksLeft(); len(left) != 0 {
		t.Fatalf("locks left: %v", left)
	}
}

// TestTagAgreesWithRestic runs the same tag commands on a restic and a dj
// repository and compares the tags they leave.
func TestTagAgreesWithRestic(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	if _, err := exec.LookPath("restic"); err != nil {
		t.Skip("restic is not installed")
	}
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"))
	rrepo := filepath.Join(e.dir, "restic-repo")
	restic := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("restic", append([]string{"-r", rrepo, "--no-cache", "-q"}, args...)...)
		cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=pw")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("restic %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	restic("init")
	backups := [][]string{{"--host", "a", "--tag", "t1,t2"}, {"--host", "a"}, {"--host", "b", "--tag", "t2"}}
	for _, b := range backups {
		restic(append(append([]string{"backup"}, b...), src)...)
		e.must(append(append([]string{"backup", "-q"}, b...), src)...)
	}
	tags := func(list []snapJSON) []string {
		var out []string
		for _, s := range list {
			tt := append([]string(nil), s.Tags...)
			out = append(out, strings.Join(tt, ","))
		}
		return out
	}
	resticSnaps := func() []snapJSON {
		var list []snapJSON
		parseJSON(t, "restic snapshots", restic("snapshots", "--json"), &list)
		sort.Slice(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
		return list
	}
	for _, args := range [][]string{
		{"--add", "x,y"},
		{"--host", "a", "--remove", "t1,x"},
		{"--tag", "t2", "--add", "z", "--add", "x"},
		{"--tag", "t2,z", "--set", "only"},
		{"--add", "y,w", "--remove", "y"},
	} {
		restic(append([]string{"tag"}, args...)...)
		e.must(append([]string{"tag"}, args...)...)
		r, d := tags(resticSnaps()), tags(e.snapshots())
		if strings.Join(r, " | ") != strings.Join(d, " | ") {
			t.Fatalf("after tag %v: restic has tags %q, dj %q", args, r, d)
		}
	}
}

func TestRewriteExcludesAndPruneFreesData(t *testing.T) {
	g := newTreeGen(t, 11)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "keep", "a.txt"), g.bytes(50<<10))
	writeFile(t, filepath.Join(src, "keep", "deep", "b.bin"), g.bytes(300<<10))
	writeFile(t, filepath.Join(src, "keep", "deep", "trace.LOG"), g.bytes(10<<10))
	writeFile(t, filepath.Join(src, "cache", "big.bin"), g.bytes(3<<20))
	writeFile(t, filepath.Join(src, "notes", "Secret.txt"), []byte("password=hunter2\n"))
	writeFile(t, filepath.Join(src, "notes", "todo.md"), []byte("- rewrite\n"))
	s1 := e.backupSnapshot("--tag", "daily", src)
	full1 := scanTree(t, src)
	writeFile(t, filepath.Join(src, "keep", "a.txt"), g.bytes(60<<10))
	s2 := e.backupSnapshot("--tag", "daily", src)
	full2 := scanTree(t, src)
	drop := func(m manifest) manifest {
		out := manifest{}
		for p, v := range m {
			if p == "cache" || strings.HasPrefix(p, "cache/") || p == "notes/Secret.txt" || strings.HasSuffix(p, ".LOG") {
				continue
			}
			out[p] = v
		}
		return out
	}
	exclude := []string{"--exclude", "cache", "--iexclude", src + "/notes/secret.TXT", "--exclude", "*.LOG"}

	// A dry run writes nothing.
	before := e.snapshots()
	out := e.must(append([]string{"rewrite", "--dry-run"}, exclude...)...)
	if !strings.Contains(out, "would modify 2 snapshots") || !strings.Contains(out, "excluding "+src+"/cache\n") ||
		!strings.Contains(out, "excluding "+src+"/keep/deep/trace.LOG\n") || !strings.Contains(out, "excluding "+src+"/notes/Secret.txt\n") {
		t.Fatalf("rewrite --dry-run:\n%s", out)
	}
	if after := e.snapshots(); len(after) != len(before) {
		t.Fatal("rewrite --dry-run changed the snapshots")
	}

	// Without --forget: a new snapshot beside the original, tagged
	// "rewrite", with the same time, paths and tags.
	out = e.must(append([]string{"rewrite", "latest"}, exclude...)...)
	if !strings.Contains(out, "modified 1 snapshots") {
		t.Fatalf("rewrite latest:\n%s", out)
	}
	list := e.snapshots()
	if len(list) != 3 {
		t.Fatalf("%d snapshots, want 3", len(list))
	}
	var rw snapJSON
	for _, s := range list {
		if s.Original == s2 {
			rw = s
		}
	}
	if rw.ID == "" || tagsOf(rw) != "daily,rewrite" || !rw.Time.Equal(list[1].Time) || strings.Join(rw.Paths, ",") != src {
		t.Fatalf("rewritten snapshot %+v (snapshots %+v)", rw, list)
	}
	ls := e.must("ls", rw.ID)
	for _, gone := range []string{"cache", "Secret.txt", "trace.LOG"} {
		if strings.Contains(ls, gone) {
			t.Fatalf("ls of the rewritten snapshot shows %s:\n%s", gone, ls)
		}
	}
	e.restoreMatches(rw.ID, src, drop(full2))
	e.restoreMatches(s2, src, full2)

	// Rewriting it again changes nothing.
	out = e.must(append([]string{"rewrite", rw.ShortID}, exclude...)...)
	if !strings.Contains(out, "no changes") || !strings.Contains(out, "no snapshots were modified") {
		t.Fatalf("second rewrite:\n%s", out)
	}

	// --forget on the daily snapshots: the originals go, the rewritten
	// one is left alone.
	out = e.must(append([]string{"rewrite", "--forget", "--tag", "daily"}, exclude...)...)
	if !strings.Contains(out, "modified 2 snapshots") || !strings.Contains(out, "removed old snapshot "+s1[:8]) {
		t.Fatalf("rewrite --forget:\n%s", out)
	}
	want := map[string]manifest{rw.ID: drop(full2)}
	for _, s := range e.snapshots() {
		switch {
		case s.ID == rw.ID:
		case s.Original == s1 && tagsOf(s) == "daily":
			want[s.ID] = drop(full1)
		case s.Original == s2 && tagsOf(s) == "daily":
			want[s.ID] = drop(full2)
		default:
			t.Fatalf("unexpected snapshot after rewrite --forget: %+v", s)
		}
	}
	if len(want) != 3 {
		t.Fatalf("snapshots after rewrite --forget: %v", want)
	}
	e.checkAndRestoreAll(src, want)

	// Nothing uses cache/big.bin any more: prune frees its 3 MiB.
	size := dirSize(t, e.repo)
	e.must("prune", "--max-unused", "0", "--instant-delete")
	if freed := size - dirSize(t, e.repo); freed < 3<<20 {
		t.Errorf("prune freed %d bytes, want at least the 3 MiB of the excluded file", freed)
	}
	e.checkAndRestoreAll(src, want)
	if left := e.locksLeft(); len(left) != 0 {
		t.Fatalf("locks left: %v", left)
	}
}

func TestRewriteBadInput(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f"), []byte("x"))
	e.must("backup", "-q", src)
	for _, args := range [][]string{
		{"rewrite"},
		{"rewrite", "--exclude", "[", "latest"},
		{"rewrite", "--exclude-file", filepath.Join(e.dir, "missing"), "latest"},
		{"rewrite", "--exclude", "f", "ffffffff"},
	} {
		r := e.run(args...)
		if r.code != 1 || r.stderr == "" || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("dj %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if n := len(e.snapshots()); n != 1 {
		t.Fatalf("%d snapshots after failed rewrites", n)
	}
}
