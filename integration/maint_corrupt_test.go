package integration

// Damaged repositories: check names what is damaged and which files of
// which snapshots lose data; repair brings the repository back to a state
// that check accepts, without touching intact data.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// checkProblem is one line of `dj check --json`.
type checkProblem struct {
	MessageType string `json:"message_type"`
	Kind        string `json:"kind"`
	Message     string `json:"message"`
	File        string `json:"file"`
	Pack        string `json:"pack"`
	Affected    []struct {
		Path      string   `json:"path"`
		Snapshots []string `json:"snapshots"`
	} `json:"affected"`
	Errors   int `json:"num_errors"`
	Warnings int `json:"num_warnings"`
}

// checkJSON runs check --json with args and returns its exit code, the
// problems and the summary.
func (e *env) checkJSON(args ...string) (int, []checkProblem, checkProblem) {
	e.t.Helper()
	r := e.run(append([]string{"check", "--json"}, args...)...)
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var problems []checkProblem
	var summary checkProblem
	for dec.More() {
		var p checkProblem
		if err := dec.Decode(&p); err != nil {
			e.t.Fatalf("check --json: %v\n%s", err, r.stdout)
		}
		if p.MessageType == "summary" {
			summary = p
		} else {
			problems = append(problems, p)
		}
	}
	if summary.MessageType != "summary" {
		e.t.Fatalf("check --json printed no summary (exit %d):\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	return r.code, problems, summary
}

// affectedOf returns the affected paths of the problems of kind, each with
// its sorted snapshot ids.
func affectedOf(problems []checkProblem, kind, pack string) map[string]string {
	out := map[string]string{}
	for _, p := range problems {
		if p.Kind != kind || (pack != "" && p.Pack != pack) {
			continue
		}
		for _, a := range p.Affected {
			ids := append([]string(nil), a.Snapshots...)
			sort.Strings(ids)
			out[a.Path] = strings.Join(ids, ",")
		}
	}
	return out
}

// packBlob is an entry of `dj cat pack`.
type packBlob struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// dataPacks returns the packs that hold data blobs, by id, with their path.
func (e *env) dataPacks() (ids []string, blobs map[string][]packBlob, paths map[string]string) {
	e.t.Helper()
	blobs, paths = map[string][]packBlob{}, map[string]string{}
	for _, p := range filesIn(e.t, filepath.Join(e.repo, "data")) {
		id := filepath.Base(p)
		if strings.HasPrefix(id, ".") {
			continue
		}
		var bl []packBlob
		parseJSON(e.t, "cat pack", e.must("cat", "pack", id), &bl)
		if len(bl) == 0 || bl[0].Type != "data" {
			continue
		}
		ids = append(ids, id)
		blobs[id], paths[id] = bl, p
	}
	sort.Strings(ids)
	return ids, blobs, paths
}

// blobUsers maps each data blob to the files (absolute paths in the
// snapshots) that use it, and each file to the snapshots that hold it, for
// the flat directory dir.
func (e *env) blobUsers(dir string, snaps []string) map[string]map[string]map[string]bool {
	e.t.Helper()
	users := map[string]map[string]map[string]bool{}
	for _, sid := range snaps {
		var tr struct {
			Nodes []struct {
				Name    string   `json:"name"`
				Type    string   `json:"type"`
				Content []string `json:"content"`
			} `json:"nodes"`
		}
		parseJSON(e.t, "cat tree", e.must("cat", "tree", sid+":"+dir), &tr)
		for _, n := range tr.Nodes {
			if n.Type != "file" {
				e.t.Fatalf("%s: want a flat directory of files, found %s %s", dir, n.Type, n.Name)
			}
			for _, b := range n.Content {
				if users[b] == nil {
					users[b] = map[string]map[string]bool{}
				}
				p := dir + "/" + n.Name
				if users[b][p] == nil {
					users[b][p] = map[string]bool{}
				}
				users[b][p][sid] = true
			}
		}
	}
	return users
}

// addAffected adds the users of blob to want (path -> sorted snapshot ids).
func addAffected(want map[string]string, users map[string]map[string]bool) {
	for p, snaps := range users {
		set := map[string]bool{}
		for _, id := range strings.Split(want[p], ",") {
			if id != "" {
				set[id] = true
			}
		}
		for id := range snaps {
			set[id] = true
		}
		var ids []string
		for id := range set {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		want[p] = strings.Join(ids, ",")
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// assertTextNames checks that check's text output names the pack and
// each affected path with the short ids of its snapshots.
func assertTextNames(t *testing.T, out, pack string, affected map[string]string) {
	t.Helper()
	if !strings.Contains(out, pack[:8]) {
		t.Errorf("check does not name pack %.8s:\n%s", pack, out)
	}
	for p, ids := range affected {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, p+" ") {
				continue
			}
			found = true
			for _, id := range strings.Split(ids, ",") {
				if !strings.Contains(line, id[:8]) {
					t.Errorf("check's line for %s does not name snapshot %.8s: %q", p, id, line)
				}
			}
		}
		if !found {
			t.Errorf("check does not name affected file %s:\n%s", p, out)
		}
	}
}

// TestCorruptPacksCheckNamesFilesAndRepairSalvages damages a data pack (one
// flipped byte inside one blob) and deletes another. check names each pack
// and exactly the files, with their snapshots, that lose data; repair index
// and repair snapshots --forget make check --read-data pass; every other
// file restores byte-identical.
func TestCorruptPacksCheckNamesFilesAndRepairSalvages(t *testing.T) {
	g := newTreeGen(t, 31)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	for i := 0; i < 16; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("big%02d.bin", i)), g.bytes(2<<20+g.rng.IntN(1<<20)))
	}
	for i := 0; i < 8; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("small%02d.txt", i)), g.bytes(1000+i))
	}
	s1 := e.backupSnapshot(src)
	m1 := scanTree(t, src)
	writeFile(t, filepath.Join(src, "later.bin"), g.bytes(3<<20))
	s2 := e.backupSnapshot(src)
	m2 := scanTree(t, src)
	original := map[string]manifest{s1: m1, s2: m2}
	originalTimes := map[string]time.Time{}
	for _, s := range e.snapshots() {
		originalTimes[s.ID] = s.Time
	}
	users := e.blobUsers(src, []string{s1, s2})

	ids, blobs, paths := e.dataPacks()
	if len(ids) < 3 {
		t.Fatalf("want at least 3 data packs, got %d", len(ids))
	}
	if r := e.run("check", "--read-data"); r.code != 0 {
		t.Fatalf("check of the intact repository: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// 1. One flipped byte in the middle of one blob of a data pack.
	flipped := ids[0]
	bl := blobs[flipped]
	victim := bl[len(bl)/2]
	flipByte(t, paths[flipped], victim.Offset+victim.Length/2)
	wantFlip := map[string]string{}
	addAffected(wantFlip, users[victim.ID])
	if len(wantFlip) == 0 {
		t.Fatalf("blob %.8s of pack %.8s is used by no file", victim.ID, flipped)
	}
	code, problems, _ := e.checkJSON("--read-data", "--pack-hashes")
	if code != 1 {
		t.Fatalf("check --read-data --pack-hashes with a flipped byte: exit %d, want 1", code)
	}
	hashNamed := false
	for _, p := range problems {
		hashNamed = hashNamed || (p.Kind == "pack_hash" && p.Pack == flipped)
	}
	if !hashNamed {
		t.Errorf("check --pack-hashes does not report that pack %.8s does not match its name: %+v", flipped, problems)
	}
	code, problems, _ = e.checkJSON("--read-data")
	if code != 1 {
		t.Fatalf("check --read-data with a flipped byte: exit %d, want 1", code)
	}
	if got := affectedOf(problems, "blob_damaged", flipped); !sameMap(got, wantFlip) {
		t.Errorf("check --read-data names as affected by the damaged blob:\n  %v\nwant\n  %v", got, wantFlip)
	}
	r := e.run("check", "--read-data")
	if r.code != 1 {
		t.Fatalf("check --read-data: exit %d, want 1", r.code)
	}
	assertTextNames(t, r.stdout, flipped, wantFlip)

	// 2. A deleted data pack.
	deleted := ids[1]
	wantDel := map[string]string{}
	for _, b := range blobs[deleted] {
		addAffected(wantDel, users[b.ID])
	}
	if err := os.Remove(paths[deleted]); err != nil {
		t.Fatal(err)
	}
	code, problems, _ = e.checkJSON()
	if code != 1 {
		t.Fatalf("check with a deleted pack: exit %d, want 1", code)
	}
	if got := affectedOf(problems, "pack_missing", deleted); !sameMap(got, wantDel) {
		t.Errorf("check names as affected by the missing pack %.8s:\n  %v\nwant\n  %v", deleted, got, wantDel)
	}
	r = e.run("check")
	if r.code != 1 {
		t.Fatalf("check: exit %d, want 1", r.code)
	}
	assertTextNames(t, r.stdout, deleted, wantDel)

	// Every file that lost data; all others must come back intact.
	lost := map[string]string{}
	for p, ids := range wantFlip {
		lost[p] = ids
	}
	for p, ids := range wantDel {
		addAffected(lost, map[string]map[string]bool{p: setOf(strings.Split(ids, ","))})
	}
	intact := 0
	for rel := range m2 {
		if _, ok := lost[src+"/"+rel]; !ok {
			intact++
		}
	}
	if intact == 0 {
		t.Fatal("the damage left no file intact; the test needs some")
	}

	// 3. Repair: the index from the packs (verifying every blob), then the
	// snapshots without the lost files.
	e.must("repair", "index", "--read-all-packs")
	out := e.must("repair", "snapshots", "--forget")
	dropped := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "dropped file "); ok {
			p = strings.TrimSuffix(p, " (data missing)")
			dropped[p]++
		}
	}
	for p, ids := range lost {
		if n := len(strings.Split(ids, ",")); dropped[p] != n {
			t.Errorf("repair snapshots dropped %s from %d snapshots, want %d (those that lost its data)", p, dropped[p], n)
		}
		delete(dropped, p)
	}
	if len(dropped) > 0 {
		t.Errorf("repair snapshots dropped intact files: %v\n%s", dropped, out)
	}
	if r := e.run("check", "--read-data"); r.code != 0 {
		t.Fatalf("check --read-data after repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The repaired snapshots restore every intact file byte-identical.
	// A repaired snapshot keeps its original's time, and names it in
	// "original" (as restic's rewritten snapshots do).
	snaps := e.snapshots()
	if len(snaps) != 2 {
		t.Fatalf("after repair snapshots --forget: %d snapshots, want 2", len(snaps))
	}
	for _, s := range snaps {
		orig := ""
		for id, tm := range originalTimes {
			if tm.Equal(s.Time) {
				orig = id
			}
		}
		if orig == "" {
			t.Fatalf("snapshot %s has the time of neither original snapshot", s.ShortID)
		}
		damaged := false
		for _, ids := range lost {
			damaged = damaged || strings.Contains(ids, orig)
		}
		if damaged == (s.ID == orig) {
			t.Fatalf("snapshot %.8s (damaged: %v) is still there after repair snapshots --forget, or an intact one was rewritten", orig, damaged)
		}
		if damaged {
			var sn struct {
				Original string `json:"original"`
			}
			parseJSON(t, "cat snapshot", e.must("cat", "snapshot", s.ID), &sn)
			if sn.Original != orig {
				t.Errorf("`dj cat snapshot %s` shows original %q, want %.8s (the snapshot it replaces)", s.ShortID, sn.Original, orig)
			}
			if s.Original != orig {
				t.Errorf("`dj snapshots --json` shows original %q for the repaired %s, want %.8s (the snapshot it replaces)", s.Original, s.ShortID, orig)
			}
		}
		want := manifest{}
		for rel, v := range original[orig] {
			if ids, gone := lost[src+"/"+rel]; !gone || !strings.Contains(ids, orig) {
				want[rel] = v
			}
		}
		e.restoreMatches(s.ID, src, want)
	}
}

func setOf(xs []string) map[string]bool {
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// TestCorruptIndexRepairIndexLosesNothing truncates an index file: check
// reports that file, `dj repair index` rebuilds the index from the packs,
// after which check --read-data passes and every snapshot restores
// byte-identical: no data was lost, and repair touched none.
func TestCorruptIndexRepairIndexLosesNothing(t *testing.T) {
	g := newTreeGen(t, 32)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 12<<20)
	want := map[string]manifest{}
	for i := 0; i < 3; i++ {
		want[e.backupSnapshot(src)] = scanTree(t, src)
		g.mutate(src, 3<<20)
	}
	packsBefore := map[string]bool{}
	for _, p := range filesIn(t, filepath.Join(e.repo, "data")) {
		packsBefore[filepath.Base(p)] = true
	}
	idx := filesIn(t, filepath.Join(e.repo, "index"))
	sort.Strings(idx)
	victim := idx[len(idx)/2]
	os.Chmod(victim, 0o644)
	if err := os.Truncate(victim, 10); err != nil {
		t.Fatal(err)
	}
	code, problems, _ := e.checkJSON()
	if code != 1 {
		t.Fatalf("check with a truncated index file: exit %d, want 1", code)
	}
	named := false
	for _, p := range problems {
		named = named || (p.Kind == "index_unreadable" && p.File == "index/"+filepath.Base(victim))
	}
	if !named {
		t.Errorf("check does not report the truncated index file %.8s: %+v", filepath.Base(victim), problems)
	}
	r := e.run("check")
	if r.code != 1 || !strings.Contains(r.stdout, filepath.Base(victim)[:8]) || !strings.Contains(r.stdout, "repair index") {
		t.Errorf("check's text should name index file %.8s and point at `dj repair index` (exit %d):\n%s", filepath.Base(victim), r.code, r.stdout)
	}

	e.must("repair", "index")
	for _, p := range filesIn(t, filepath.Join(e.repo, "data")) {
		if name := filepath.Base(p); !strings.HasPrefix(name, ".") && !packsBefore[name] {
			t.Errorf("repair index wrote pack %.8s although no data was damaged", name)
		}
	}
	if len(filesIn(t, filepath.Join(e.repo, "data"))) != len(packsBefore) {
		t.Errorf("repair index changed the packs: %d before, %d after", len(packsBefore), len(filesIn(t, filepath.Join(e.repo, "data"))))
	}
	e.checkAndRestoreAll(src, want)
}
