package integration

// dj diff against diff -rq, rsync and the trees themselves, on random
// trees changed between two backups of the same path.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// djChanges parses the change lines of `dj diff` (text).
func djChanges(t *testing.T, out string) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`^([+\-MTU])    (/.*)$`)
	changes := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		p := m[2]
		if p != "/" {
			p = strings.TrimSuffix(p, "/")
		}
		if old, dup := changes[p]; dup {
			t.Errorf("dj diff lists %s twice (%s and %s)", p, old, m[1])
		}
		changes[p] = m[1]
	}
	return changes
}

// topLevel drops the changes inside an added, removed or retyped
// directory: diff -rq reports only the directory.
func topLevel(changes map[string]string) map[string]string {
	out := map[string]string{}
	for p, mod := range changes {
		covered := false
		for a := filepath.Dir(p); a != "/" && a != "."; a = filepath.Dir(a) {
			if m, ok := changes[a]; ok && m != "M" && m != "U" {
				covered = true
				break
			}
		}
		if !covered && mod != "U" {
			out[p] = mod
		}
	}
	return out
}

// diffRQ runs diff -rq --no-dereference and maps its lines to dj's letters.
func diffRQ(t *testing.T, a, b string) map[string]string {
	t.Helper()
	out, err := exec.Command("diff", "-rq", "--no-dereference", a, b).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("diff -rq: %v\n%s", err, out)
	}
	rel := func(root, p string) string {
		r, ok := strings.CutPrefix(p, root)
		if !ok {
			t.Fatalf("diff -rq: %q is not below %q", p, root)
		}
		if r == "" {
			return "/"
		}
		return r
	}
	changes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "Only in ") && len(f) == 4:
			dir, name := strings.TrimSuffix(f[2], ":"), f[3]
			if strings.HasPrefix(dir+"/", a+"/") {
				changes[strings.TrimPrefix(rel(a, dir)+"/"+name, "/")] = "-"
			} else {
				changes[strings.TrimPrefix(rel(b, dir)+"/"+name, "/")] = "+"
			}
		case (strings.HasPrefix(line, "Files ") || strings.HasPrefix(line, "Symbolic links ")) && strings.HasSuffix(line, " differ"):
			i := 1
			if f[0] == "Symbolic" {
				i = 2
			}
			changes[rel(a, f[i])] = "M"
		case strings.HasPrefix(line, "File ") && strings.Contains(line, " while file "):
			changes[rel(a, f[1])] = "T"
		default:
			t.Fatalf("diff -rq: unexpected line %q", line)
		}
	}
	fixed := map[string]string{}
	for p, m := range changes {
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		fixed[p] = m
	}
	return fixed
}

// rsyncPermOnly lists the regular files whose permissions, and nothing
// else that rsync -rlptn checks, differ between a and b.
func rsyncPermOnly(t *testing.T, a, b string) map[string]bool {
	t.Helper()
	out, err := exec.Command("rsync", "-rlptn", "--force", "--itemize-changes", b+"/", a+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("rsync: %v\n%s", err, out)
	}
	set := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if len(line) < 13 || line[1] != 'f' {
			continue
		}
		flags, name := line[:11], line[12:]
		if flags[0] == '.' && flags[3] == '.' && flags[4] == '.' && flags[5] == 'p' {
			set["/"+name] = true
		}
	}
	return set
}

func describe(m map[string]string) string {
	var lines []string
	for p, mod := range m {
		lines = append(lines, mod+" "+p)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n  ")
}

// compareChanges reports the differences between two change maps.
func compareChanges(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var diffs []string
	for p, w := range want {
		if g, ok := got[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("missing %s %s", w, p))
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%s: got %s, want %s", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %s %s", g, p))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Errorf("%s:\n  %s", what, strings.Join(diffs, "\n  "))
	}
}

// diffStatJSON is one side of restic's diff statistics.
type diffStatJSON struct {
	Files     *int `json:"files"`
	Dirs      *int `json:"dirs"`
	Others    *int `json:"others"`
	DataBlobs *int `json:"data_blobs"`
	TreeBlobs *int `json:"tree_blobs"`
	Bytes     *int `json:"bytes"`
}

// TestDiffAgreesWithDiffRQ backs up random trees before and after random
// changes (renames, deletions, type changes between file, directory and
// symlink, permission and content changes) at the same path, and compares
// `dj diff` with the trees themselves, with `diff -rq` between copies of
// the two states, and, for --metadata, with rsync's view of permission
// changes; --json ends with restic's statistics.
func TestDiffAgreesWithDiffRQ(t *testing.T) {
	requireCmd(t, "diff")
	requireCmd(t, "rsync")
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	for round := 0; round < rounds; round++ {
		seed := uint64(1000 + round)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			e.t = t
			g := newTreeGen(t, seed)
			if err := os.RemoveAll(src); err != nil {
				t.Fatal(err)
			}
			g.diffDir(src, 0)
			a := e.backupSnapshot(src)
			before := lstatTree(t, src)
			copyA := filepath.Join(e.dir, fmt.Sprintf("copyA-%d", seed))
			copyTree(t, src, copyA)
			g.mutateForDiff(src)
			b := e.backupSnapshot(src)
			after := lstatTree(t, src)

			// The oracle, from the trees: + and - for paths on one side,
			// T for a changed type, M for changed content.
			want := map[string]string{}
			for p, x := range before {
				y, ok := after[p]
				switch {
				case !ok:
					want[p] = "-"
				case x.typ != y.typ:
					want[p] = "T"
				case x.typ != "dir" && x.content != y.content:
					want[p] = "M"
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					want[p] = "+"
				}
			}
			got := djChanges(t, e.must("diff", a, b, src))
			compareChanges(t, "dj diff against the trees", got, want)

			// diff -rq between a copy of the first state and the second.
			compareChanges(t, "dj diff (top-level changes) against diff -rq", topLevel(got), diffRQ(t, copyA, src))

			// --metadata: the same changes, plus U for entries whose
			// content is the same but whose metadata changed.
			meta := djChanges(t, e.must("diff", "--metadata", a, b, src))
			wantMeta := map[string]string{}
			for p, m := range want {
				wantMeta[p] = m
			}
			touched := func(x, y diffEntry) bool {
				return x.st.Mode != y.st.Mode || x.st.Uid != y.st.Uid || x.st.Gid != y.st.Gid ||
					x.st.Size != y.st.Size || x.st.Ino != y.st.Ino || x.st.Nlink != y.st.Nlink ||
					x.st.Mtim != y.st.Mtim || x.st.Ctim != y.st.Ctim || x.st.Atim != y.st.Atim
			}
			var dirs []string
			for p, x := range before {
				y, ok := after[p]
				switch {
				case !ok || x.typ != y.typ || x.content != y.content:
				case x.typ == "dir":
					dirs = append(dirs, p)
				case touched(x, y):
					wantMeta[p] = "U"
				}
			}
			// A directory changes when its own metadata does, or anything
			// below it (its subtree differs): deepest first.
			sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
			for _, d := range dirs {
				changed := touched(before[d], after[d])
				for q := range wantMeta {
					changed = changed || strings.HasPrefix(q, d+"/")
				}
				if changed {
					wantMeta[d] = "U"
				}
			}
			compareChanges(t, "dj diff --metadata against the trees", meta, wantMeta)
			permOnly := map[string]bool{}
			for p, x := range before {
				if y, ok := after[p]; ok && x.typ == "file" && y.typ == "file" && x.content == y.content && x.st.Mode != y.st.Mode {
					permOnly[p] = true
				}
			}
			if rs := rsyncPermOnly(t, copyA, src); fmt.Sprint(sortedKeys(rs)) != fmt.Sprint(sortedKeys(permOnly)) {
				t.Errorf("permission-only changes: rsync -rlptn sees %v, the trees %v", sortedKeys(rs), sortedKeys(permOnly))
			}
			for p := range permOnly {
				if meta[p] != "U" {
					t.Errorf("dj diff --metadata lists the permission-only change of %s as %q, want U", p, meta[p])
				}
			}
			counts := map[string]int{}
			for _, m := range meta {
				counts[m]++
			}
			t.Logf("%d entries before, %d after; changes %v; %d permission-only", len(before), len(after), counts, len(permOnly))

			// --json: one change message per line, then the statistics.
			out := e.must("diff", "--json", a, b, src)
			dec := json.NewDecoder(strings.NewReader(out))
			var msgs []map[string]json.RawMessage
			for dec.More() {
				var m map[string]json.RawMessage
				if err := dec.Decode(&m); err != nil {
					t.Fatalf("diff --json: %v\n%s", err, out)
				}
				msgs = append(msgs, m)
			}
			if len(msgs) != len(got)+1 {
				t.Fatalf("diff --json: %d messages, want %d changes and the statistics", len(msgs), len(got))
			}
			for _, m := range msgs[:len(msgs)-1] {
				var ch struct {
					MessageType string `json:"message_type"`
					Path        string `json:"path"`
					Modifier    string `json:"modifier"`
				}
				raw, _ := json.Marshal(m)
				json.Unmarshal(raw, &ch)
				p := strings.TrimSuffix(ch.Path, "/")
				if ch.MessageType != "change" || got[p] != ch.Modifier {
					t.Errorf("diff --json: change %s, want message_type change and modifier %q", raw, got[p])
				}
			}
			var stats struct {
				MessageType    string       `json:"message_type"`
				SourceSnapshot string       `json:"source_snapshot"`
				TargetSnapshot string       `json:"target_snapshot"`
				ChangedFiles   *int         `json:"changed_files"`
				Added          diffStatJSON `json:"added"`
				Removed        diffStatJSON `json:"removed"`
			}
			raw, _ := json.Marshal(msgs[len(msgs)-1])
			parseJSON(t, "diff --json statistics", string(raw), &stats)
			for _, s := range []diffStatJSON{stats.Added, stats.Removed} {
				if stats.MessageType != "statistics" || stats.SourceSnapshot == "" || stats.TargetSnapshot == "" || stats.ChangedFiles == nil ||
					s.Files == nil || s.Dirs == nil || s.Others == nil || s.DataBlobs == nil || s.TreeBlobs == nil || s.Bytes == nil {
					t.Fatalf("diff --json does not end with restic's statistics object: %s", raw)
				}
			}
			wantCounts := func(side map[string]diffEntry, mod string) (files, dirs, others int) {
				for p, m := range want {
					if m != mod {
						continue
					}
					switch side[p].typ {
					case "file":
						files++
					case "dir":
						dirs++
					default:
						others++
					}
				}
				return
			}
			changed := 0
			for p, m := range want {
				if m == "M" && before[p].typ == "file" {
					changed++
				}
			}
			af, ad, ao := wantCounts(after, "+")
			rf, rd, ro := wantCounts(before, "-")
			if *stats.ChangedFiles != changed || *stats.Added.Files != af || *stats.Added.Dirs != ad || *stats.Added.Others != ao ||
				*stats.Removed.Files != rf || *stats.Removed.Dirs != rd || *stats.Removed.Others != ro {
				t.Errorf("diff --json statistics %s; want changed_files %d, added %d files %d dirs %d others, removed %d files %d dirs %d others",
					raw, changed, af, ad, ao, rf, rd, ro)
			}
			// restic prints every message, the statistics too, as one line
			// (`dj diff --json ... | tail -n 1 | jq` must work).
			var last map[string]any
			if err := json.Unmarshal([]byte(lastLine(out)), &last); err != nil || last["message_type"] != "statistics" {
				t.Errorf("the last line of diff --json is not the statistics object (restic prints one JSON object per line): %q", lastLine(out))
			}
		})
	}
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
