package integration

// forget (restic's JSON, exactly the policy's snapshots removed, space
// freed by prune) and repack (fewer packs, recompression).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// forgetSnapJSON is a snapshot in forget's JSON (restic: the snapshot with
// its id and short_id).
type forgetSnapJSON struct {
	ID      string   `json:"id"`
	ShortID string   `json:"short_id"`
	Time    string   `json:"time"`
	Tree    string   `json:"tree"`
	Paths   []string `json:"paths"`
}

func TestForgetKeepLastJSONAndPruneFreesSpace(t *testing.T) {
	g := newTreeGen(t, 41)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "shared.bin"), g.bytes(1<<20))
	var ids []string
	want := map[string]manifest{}
	for i := 0; i < 5; i++ {
		// Each snapshot has 3 MiB that only it holds.
		writeFile(t, filepath.Join(src, "unique.bin"), g.bytes(3<<20))
		id := e.backupSnapshot(src)
		ids = append(ids, id)
		want[id] = scanTree(t, src)
	}
	host, _ := os.Hostname()

	out := e.must("forget", "--keep-last", "2", "--dry-run", "--json")
	// restic's shape: a list of groups, each with tags, host, paths, keep,
	// remove and reasons (one per kept snapshot: the snapshot, with its id,
	// and the rules that matched).
	var raw []map[string]json.RawMessage
	parseJSON(t, "forget --json", out, &raw)
	if len(raw) != 1 {
		t.Fatalf("forget --json: %d groups, want 1:\n%s", len(raw), out)
	}
	for _, k := range []string{"tags", "host", "paths", "keep", "remove", "reasons"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("forget --json: the group has no %q", k)
		}
	}
	var groups []struct {
		Tags    []string         `json:"tags"`
		Host    string           `json:"host"`
		Paths   []string         `json:"paths"`
		Keep    []forgetSnapJSON `json:"keep"`
		Remove  []forgetSnapJSON `json:"remove"`
		Reasons []struct {
			Snapshot forgetSnapJSON `json:"snapshot"`
			Matches  []string       `json:"matches"`
		} `json:"reasons"`
	}
	parseJSON(t, "forget --json", out, &groups)
	gr := groups[0]
	if gr.Host != host || len(gr.Paths) != 1 || gr.Paths[0] != src {
		t.Errorf("forget --json group: host %q paths %v, want %q [%s]", gr.Host, gr.Paths, host, src)
	}
	idsOf := func(l []forgetSnapJSON) []string {
		var out []string
		for _, s := range l {
			if s.ID == "" || !strings.HasPrefix(s.ID, s.ShortID) || len(s.ShortID) != 8 {
				t.Errorf("forget --json: snapshot without id/short_id: %+v", s)
			}
			out = append(out, s.ID)
		}
		sort.Strings(out)
		return out
	}
	sorted := func(xs ...string) []string {
		out := append([]string(nil), xs...)
		sort.Strings(out)
		return out
	}
	if got, w := idsOf(gr.Keep), sorted(ids[3:]...); fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("forget --keep-last 2 keeps %v, want %v", got, w)
	}
	if got, w := idsOf(gr.Remove), sorted(ids[:3]...); fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("forget --keep-last 2 removes %v, want %v", got, w)
	}
	if len(gr.Reasons) != len(gr.Keep) {
		t.Errorf("forget --json: %d reasons for %d kept snapshots", len(gr.Reasons), len(gr.Keep))
	}
	for i, r := range gr.Reasons {
		if i < len(gr.Keep) && r.Snapshot.ID != gr.Keep[i].ID {
			t.Errorf("forget --json: reasons[%d].snapshot.id is %q, want the kept snapshot's id %q (restic's shape)", i, r.Snapshot.ID, gr.Keep[i].ID)
		}
		if len(r.Matches) != 1 || r.Matches[0] != "last snapshot" {
			t.Errorf("forget --json: reasons[%d].matches = %q, want [\"last snapshot\"]", i, r.Matches)
		}
	}
	if n := len(e.snapshots()); n != 5 {
		t.Fatalf("forget --dry-run removed snapshots: %d left", n)
	}

	// The real run removes exactly the others.
	e.must("forget", "--keep-last", "2")
	var left []string
	for _, s := range e.snapshots() {
		left = append(left, s.ID)
	}
	if fmt.Sprint(sorted(left...)) != fmt.Sprint(sorted(ids[3:]...)) {
		t.Fatalf("after forget --keep-last 2: snapshots %v, want %v", left, ids[3:])
	}
	for _, id := range ids[:3] {
		delete(want, id)
	}

	// --prune marks the data of the removed snapshots; a prune with
	// --keep-delete 0s deletes it: four snapshots' unique data (12 MiB)
	// leave the repository.
	before := dirSize(t, e.repo)
	e.must("forget", "--keep-last", "1", "--prune")
	delete(want, ids[3])
	e.must("prune", "--keep-delete", "0s")
	after := dirSize(t, e.repo)
	t.Logf("repository: %d bytes before forget --prune, %d after prune --keep-delete 0s", before, after)
	if before-after < 11<<20 {
		t.Errorf("forget --prune and prune --keep-delete 0s freed %d bytes, want at least 11 MiB (four snapshots' unique data)", before-after)
	}
	e.checkAndRestoreAll(src, want)

	// --prune --instant-delete frees space at once.
	writeFile(t, filepath.Join(src, "unique.bin"), g.bytes(3<<20))
	id := e.backupSnapshot(src)
	want[id] = scanTree(t, src)
	before = dirSize(t, e.repo)
	e.must("forget", "--keep-last", "1", "--prune", "--instant-delete")
	delete(want, ids[4])
	if after := dirSize(t, e.repo); before-after < 5<<19 {
		t.Errorf("forget --prune --instant-delete freed %d bytes, want about 3 MiB", before-after)
	}
	e.checkAndRestoreAll(src, want)
}

// compressibleText is text made of random words: zstd shrinks it several
// times.
func compressibleText(g *treeGen, n int) []byte {
	words := []string{"backup", "snapshot", "repository", "pack", "blob", "index", "tree", "prune",
		"forget", "restore", "mount", "chunk", "deduplicate", "encrypt", "compress", "verify"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[g.rng.IntN(len(words))])
		if g.rng.IntN(12) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// TestRepackMergesSmallPacksAndRecompresses makes many small backups
// (each writes small packs), then `dj repack` reduces the pack count, and
// `dj repack --compression best` shrinks a repository backed up with
// compression off; check --read-data passes and every snapshot restores
// byte-identical after each.
func TestRepackMergesSmallPacksAndRecompresses(t *testing.T) {
	g := newTreeGen(t, 51)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	want := map[string]manifest{}
	for i := 0; i < 12; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("log%02d.txt", i)), compressibleText(g, 300<<10+g.rng.IntN(200<<10)))
		id := e.backupSnapshot("--compression", "off", src)
		want[id] = scanTree(t, src)
	}
	packs0, size0 := e.packCount(), dirSize(t, filepath.Join(e.repo, "data"))
	if packs0 < 20 {
		t.Fatalf("12 small backups wrote %d packs, want at least 20", packs0)
	}

	var st struct {
		PacksBefore    int `json:"packs_before"`
		PacksAfter     int `json:"packs_after"`
		PacksRewritten int `json:"packs_rewritten"`
	}
	parseJSON(t, "repack --json", e.must("repack", "--json"), &st)
	if st.PacksBefore != packs0 || st.PacksAfter >= st.PacksBefore/2 {
		t.Errorf("repack: %d packs before, %d after (the repository had %d); want fewer than half", st.PacksBefore, st.PacksAfter, packs0)
	}
	// The old packs wait for prune, which deletes them with --keep-delete 0s.
	e.must("prune", "--keep-delete", "0s")
	packs1, size1 := e.packCount(), dirSize(t, filepath.Join(e.repo, "data"))
	t.Logf("repack: %d packs (%d bytes) -> %d packs (%d bytes)", packs0, size0, packs1, size1)
	if packs1 != st.PacksAfter {
		t.Errorf("after repack and prune --keep-delete 0s the repository holds %d packs, repack said %d", packs1, st.PacksAfter)
	}
	e.checkAndRestoreAll(src, want)

	e.must("repack", "--compression", "best")
	e.must("prune", "--keep-delete", "0s")
	packs2, size2 := e.packCount(), dirSize(t, filepath.Join(e.repo, "data"))
	t.Logf("repack --compression best: %d packs (%d bytes) -> %d packs (%d bytes)", packs1, size1, packs2, size2)
	if size2 > size1/2 {
		t.Errorf("repack --compression best of uncompressed text: %d bytes -> %d, want less than half", size1, size2)
	}
	e.checkAndRestoreAll(src, want)
}

// TestRepackAfterAPruneThatRanWhileItStarted stops `dj repack` the moment
// it opens the index (before it takes its lock), lets a
// `prune --instant-delete` delete the unused packs, and resumes repack. The
// repository must stay consistent: repack either fails cleanly or writes an
// index that names only packs that exist, so check passes and a new backup
// that deduplicates against the index restores byte-identical.
func TestRepackAfterAPruneThatRanWhileItStarted(t *testing.T) {
	g := newTreeGen(t, 61)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	big, want := e.setupUnusedBigFile(g, src)

	// --min-fill 0.02: only packs under 330 KiB (smaller than any chunk of
	// the big file): the tree packs and the small file's pack, which stay.
	repack := e.startStoppedAtIndexOpen("repack", "--min-fill", "0.02")
	e.pruneBesideStopped(repack)
	res, _ := repack.wait()
	t.Logf("repack after the prune: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	if r := e.run("check", "--read-data"); r.code != 0 {
		t.Errorf("check --read-data after repack resumed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A new backup of the big file deduplicates against whatever the index
	// offers; it must restore.
	writeFile(t, filepath.Join(src, "big.bin"), big)
	s3 := e.backupSnapshot(src)
	want[s3] = scanTree(t, src)
	e.checkAndRestoreAll(src, want)
}
