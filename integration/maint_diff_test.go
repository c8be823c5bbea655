package integration

// dj diff against diff -rq, rsync and the trees themselves, on random
// trees changed between two backups of the same path.

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// diffEntry is what the tests know of one entry of a tree.
type diffEntry struct {
	typ     string // "file", "dir", "symlink"
	content string // file bytes or link target
	st      unix.Stat_t
}

// lstatTree records every entry below root without reading any file in a
// way that changes its access time.
func lstatTree(t *testing.T, root string) map[string]diffEntry {
	t.Helper()
	out := map[string]diffEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var en diffEntry
		if err := unix.Lstat(p, &en.st); err != nil {
			return err
		}
		switch en.st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			en.typ = "file"
			b, err := readNoAtime(p)
			if err != nil {
				return err
			}
			en.content = string(b)
		case unix.S_IFDIR:
			en.typ = "dir"
		case unix.S_IFLNK:
			en.typ = "symlink"
			if en.content, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected type %o", p, en.st.Mode)
		}
		out["/"+rel] = en
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readNoAtime reads a file without updating its access time (dj records
// atimes, so reading the source for the oracle must not change them).
func readNoAtime(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOATIME|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// copyTree copies src to dst with permissions and modification times,
// without changing the access times in src.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, rel)
			return nil
		case fi.Mode().IsRegular():
			b, err := readNoAtime(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, 0o600); err != nil {
				return err
			}
			if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(fi.ModTime().UnixNano()), unix.NsecToTimespec(fi.ModTime().UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, err := os.Lstat(filepath.Join(src, dirs[i]))
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dst, dirs[i])
		if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(target, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
}

var (
	filePerms = []fs.FileMode{0o644, 0o600, 0o640, 0o755, 0o444}
	dirPerms  = []fs.FileMode{0o755, 0o700, 0o750, 0o711}
)

// otherPerm picks a permission from perms that differs from cur.
func (g *treeGen) otherPerm(perms []fs.FileMode, cur fs.FileMode) fs.FileMode {
	for {
		if m := perms[g.rng.IntN(len(perms))]; m != cur.Perm() {
			return m
		}
	}
}

// pinAtime sets p's access time an hour ahead (keeping its modification
// time): with relatime, reading it (readlink, readdir, read) then leaves
// the access time alone, so dj records the same atime in every backup of
// an entry nobody changed.
func pinAtime(t *testing.T, p string) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(time.Now().Add(time.Hour).UnixNano()), {Nsec: unix.UTIME_OMIT}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func (g *treeGen) diffFile(p string) {
	n := g.rng.IntN(6 << 10)
	if g.rng.IntN(12) == 0 {
		n = 600<<10 + g.rng.IntN(1<<20) // several chunks
	}
	writeFile(g.t, p, g.bytes(n))
	if err := os.Chmod(p, filePerms[g.rng.IntN(len(filePerms))]); err != nil {
		g.t.Fatal(err)
	}
	pinAtime(g.t, p)
}

func (g *treeGen) diffSymlink(p string) {
	targets := []string{"../" + g.name("n"), g.name("n"), "/nonexistent/" + g.name("x"), "."}
	if err := os.Symlink(targets[g.rng.IntN(len(targets))], p); err != nil {
		g.t.Fatal(err)
	}
	pinAtime(g.t, p)
}

func (g *treeGen) diffDir(p string, depth int) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		g.t.Fatal(err)
	}
	n := g.rng.IntN(8)
	if depth == 0 {
		n += 16
	}
	for i := 0; i < n; i++ {
		c := filepath.Join(p, g.name("n"))
		switch x := g.rng.IntN(10); {
		case x < 5:
			g.diffFile(c)
		case x < 8 && depth < 3:
			g.diffDir(c, depth+1)
		case x < 9:
			g.diffSymlink(c)
		default:
			if err := os.Mkdir(c, 0o755); err != nil {
				g.t.Fatal(err)
			}
			pinAtime(g.t, c)
		}
	}
	if depth > 0 {
		if err := os.Chmod(p, dirPerms[g.rng.IntN(len(dirPerms))]); err != nil {
			g.t.Fatal(err)
		}
	}
	pinAtime(g.t, p)
}

// mutateForDiff renames, deletes, changes the type (file, directory,
// symlink) of, chmods and rewrites random entries below root, and adds
// new ones.
func (g *treeGen) mutateForDiff(root string) {
	t := g.t
	var all []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != root {
			all = append(all, p)
		}
		return nil
	})
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	for _, p := range all {
		fi, err := os.Lstat(p)
		if err != nil {
			continue // went with its directory
		}
		x := g.rng.IntN(100)
		switch {
		case fi.Mode().IsRegular():
			switch {
			case x < 7:
				must(os.Remove(p))
			case x < 14 && fi.Size() > 0: // same size, new bytes
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				must(err)
				n := min(int(fi.Size()), 1+g.rng.IntN(4<<10))
				_, err = f.WriteAt(g.bytes(n), g.rng.Int64N(fi.Size()-int64(n)+1))
				must(err)
				must(f.Close())
			case x < 21:
				must(os.WriteFile(p, g.bytes(g.rng.IntN(8<<10)), 0))
			case x < 30:
				must(os.Chmod(p, g.otherPerm(filePerms, fi.Mode())))
			case x < 33:
				must(os.Chmod(p, g.otherPerm(filePerms, fi.Mode())))
				must(os.WriteFile(p, g.bytes(1+g.rng.IntN(8<<10)), 0))
			case x < 37:
				must(os.Rename(p, filepath.Join(filepath.Dir(p), g.name("n"))))
			case x < 40:
				must(os.Remove(p))
				g.diffDir(p, 3)
			case x < 43:
				must(os.Remove(p))
				g.diffSymlink(p)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			switch {
			case x < 10:
				must(os.Remove(p))
				g.diffSymlink(p)
			case x < 15:
				must(os.Remove(p))
				g.diffFile(p)
			case x < 20:
				must(os.Remove(p))
			case x < 23:
				must(os.Remove(p))
				g.diffDir(p, 3)
			}
		case fi.IsDir():
			switch {
			case x < 4:
				must(os.RemoveAll(p))
			case x < 12:
				must(os.Chmod(p, g.otherPerm(dirPerms, fi.Mode())))
			case x < 15:
				must(os.RemoveAll(p))
				g.diffFile(p)
			case x < 18:
				must(os.RemoveAll(p))
				g.diffSymlink(p)
			case x < 21:
				must(os.Rename(p, filepath.Join(filepath.Dir(p), g.name("n"))))
			case x < 30:
				c := filepath.Join(p, g.name("n"))
				switch g.rng.IntN(3) {
				case 0:
					g.diffFile(c)
				case 1:
					g.diffSymlink(c)
				default:
					g.diffDir(c, 2)
				}
			}
		}
	}
}

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
