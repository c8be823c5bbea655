package integration

// Helpers of the maintenance tests: manifests of trees, snapshots and
// restores through the binary, processes started and killed, and a
// generator of random trees that evolve between backups.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// manifest describes a directory tree: each entry's path relative to the
// root, mapped to its type, permissions and content (SHA-256 for files,
// the target for symlinks).
type manifest map[string]string

func scanTree(t *testing.T, root string) manifest {
	t.Helper()
	m := manifest{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			m[rel] = fmt.Sprintf("file %04o %d %x", fi.Mode().Perm(), fi.Size(), h.Sum(nil))
		case fi.IsDir():
			m[rel] = fmt.Sprintf("dir %04o", fi.Mode().Perm())
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "symlink " + target
		default:
			m[rel] = "other " + fi.Mode().Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return m
}

// manifestDiff lists how got differs from want (at most 20 lines).
func manifestDiff(want, got manifest) []string {
	var out []string
	for p, w := range want {
		if g, ok := got[p]; !ok {
			out = append(out, fmt.Sprintf("missing %s (%s)", p, w))
		} else if g != w {
			out = append(out, fmt.Sprintf("differs %s: want %s, got %s", p, w, g))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("extra %s (%s)", p, g))
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... and %d more", len(out)-20))
	}
	return out
}

// snapJSON is an entry of `dj snapshots --json`.
type snapJSON struct {
	ID      string    `json:"id"`
	ShortID string    `json:"short_id"`
	Time    time.Time `json:"time"`
	Paths   []string  `json:"paths"`
	Tags    []string  `json:"tags"`
	// Original names the snapshot a rewritten (repaired) one replaces.
	Original string `json:"original"`
}

func (e *env) snapshots() []snapJSON {
	e.t.Helper()
	var list []snapJSON
	out := e.must("snapshots", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		e.t.Fatalf("snapshots --json: %v\n%s", err, out)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	return list
}

// backupSnapshot backs up the paths (with any extra flags before them) and
// returns the full id of the new snapshot.
func (e *env) backupSnapshot(args ...string) string {
	e.t.Helper()
	before := map[string]bool{}
	for _, s := range e.snapshots() {
		before[s.ID] = true
	}
	e.must(append([]string{"backup", "--quiet"}, args...)...)
	return e.newSnapshot(before)
}

// newSnapshot returns the one snapshot that is not in before.
func (e *env) newSnapshot(before map[string]bool) string {
	e.t.Helper()
	var ids []string
	for _, s := range e.snapshots() {
		if !before[s.ID] {
			ids = append(ids, s.ID)
		}
	}
	if len(ids) != 1 {
		e.t.Fatalf("want exactly one new snapshot, got %v", ids)
	}
	return ids[0]
}

// restoreMatches restores snapshot id and compares the restored copy of
// the source directory src with want.
func (e *env) restoreMatches(id, src string, want manifest) {
	e.t.Helper()
	target := filepath.Join(e.dir, "restore-check")
	if err := os.RemoveAll(target); err != nil {
		e.t.Fatal(err)
	}
	e.must("restore", id, "--target", target)
	got := scanTree(e.t, filepath.Join(target, src))
	if d := manifestDiff(want, got); len(d) > 0 {
		e.t.Fatalf("snapshot %.8s does not restore byte-identical to its source:\n  %s", id, strings.Join(d, "\n  "))
	}
	if err := os.RemoveAll(target); err != nil {
		e.t.Fatal(err)
	}
}

// checkAndRestoreAll runs `dj check --read-data`, which must pass, makes
// sure the repository holds exactly the snapshots of want, and restores
// each of them byte-identical.
func (e *env) checkAndRestoreAll(src string, want map[string]manifest) {
	e.t.Helper()
	if r := e.run("check", "--read-data"); r.code != 0 {
		e.t.Fatalf("check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var have []string
	for _, s := range e.snapshots() {
		have = append(have, s.ID)
		if _, ok := want[s.ID]; !ok {
			e.t.Fatalf("unexpected snapshot %s", s.ShortID)
		}
	}
	if len(have) != len(want) {
		e.t.Fatalf("the repository holds %d snapshots, want %d", len(have), len(want))
	}
	for _, id := range have {
		e.restoreMatches(id, src, want[id])
	}
}

// locksLeft lists the lock files in the repository.
func (e *env) locksLeft() []string {
	entries, err := os.ReadDir(filepath.Join(e.repo, "locks"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.t.Fatal(err)
	}
	var out []string
	for _, de := range entries {
		if !strings.HasPrefix(de.Name(), ".") {
			out = append(out, de.Name())
		}
	}
	return out
}

// packCount counts the pack files in the repository.
func (e *env) packCount() int {
	n := 0
	for _, p := range filesIn(e.t, filepath.Join(e.repo, "data")) {
		if !strings.HasPrefix(filepath.Base(p), ".") {
			n++
		}
	}
	return n
}

// proc is a dj process running in the background.
type proc struct {
	t       *testing.T
	args    []string
	cmd     *exec.Cmd
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	started time.Time
	ended   time.Time
	err     error
	done    chan struct{}
}

// start starts dj in the background; with withStdin, the returned writer
// feeds its standard input.
func (e *env) start(extraEnv []string, withStdin bool, args ...string) (*proc, io.WriteCloser) {
	e.t.Helper()
	p := &proc{t: e.t, args: args, cmd: exec.Command(e.bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(append(cleanEnv(), e.extraEnv...), extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	var stdin io.WriteCloser
	if withStdin {
		var err error
		if stdin, err = p.cmd.StdinPipe(); err != nil {
			e.t.Fatal(err)
		}
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	return p, stdin
}

// wait waits for the process; killed reports that a signal ended it.
func (p *proc) wait() (res result, killed bool) {
	p.t.Helper()
	<-p.done
	res = result{stdout: p.stdout.String(), stderr: p.stderr.String()}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
	case errors.As(p.err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return res, true
		}
		res.code = ee.ExitCode()
	default:
		p.t.Fatalf("dj %v: %v", p.args, p.err)
	}
	if strings.Contains(res.stderr, "panic") || strings.Contains(res.stderr, "goroutine ") {
		p.t.Fatalf("dj %v panicked:\n%s", p.args, res.stderr)
	}
	return res, false
}

// treeGen makes seeded random trees of files and changes them.
type treeGen struct {
	t   *testing.T
	src *mrand.ChaCha8
	rng *mrand.Rand
	seq int
}

func newTreeGen(t *testing.T, seed uint64) *treeGen {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	src := mrand.NewChaCha8(s)
	return &treeGen{t: t, src: src, rng: mrand.New(src)}
}

func (g *treeGen) bytes(n int) []byte {
	b := make([]byte, n)
	g.src.Read(b)
	return b
}

func (g *treeGen) name(prefix string) string {
	g.seq++
	return fmt.Sprintf("%s%04d", prefix, g.seq)
}

// fileSize is half small files, a third around one chunk, the rest several
// chunks (the chunker's minimum is 512 KiB, its average 1 MiB).
func (g *treeGen) fileSize() int {
	switch x := g.rng.IntN(10); {
	case x < 5:
		return g.rng.IntN(64 << 10)
	case x < 8:
		return 64<<10 + g.rng.IntN(960<<10)
	default:
		return 1<<20 + g.rng.IntN(3<<20)
	}
}

// entries lists the directories (always including ".") and regular files
// below root, sorted.
func (g *treeGen) entries(root string) (dirs, files []string) {
	g.t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.IsDir():
			dirs = append(dirs, rel)
		case d.Type().IsRegular():
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		g.t.Fatal(err)
	}
	return dirs, files
}

// addFiles adds random files of about total bytes, in existing or new
// directories.
func (g *treeGen) addFiles(root string, total int64) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		g.t.Fatal(err)
	}
	dirs, _ := g.entries(root)
	for added := int64(0); added < total; {
		dir := dirs[g.rng.IntN(len(dirs))]
		if g.rng.IntN(6) == 0 && strings.Count(dir, "/") < 3 {
			dir = filepath.Join(dir, g.name("d"))
			dirs = append(dirs, dir)
		}
		n := g.fileSize()
		writeFile(g.t, filepath.Join(root, dir, g.name("f")), g.bytes(n))
		added += int64(n)
	}
}

// mutate changes a tree the way a working directory changes between
// backups: files deleted, partly overwritten, appended to, renamed and
// chmod-ed, and new files of about newBytes.
func (g *treeGen) mutate(root string, newBytes int64) {
	g.t.Helper()
	_, files := g.entries(root)
	for _, rel := range files {
		p := filepath.Join(root, rel)
		switch x := g.rng.IntN(100); {
		case x < 12:
			if err := os.Remove(p); err != nil {
				g.t.Fatal(err)
			}
		case x < 24:
			fi, err := os.Stat(p)
			if err != nil {
				g.t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				g.t.Fatal(err)
			}
			var off int64
			if fi.Size() > 0 {
				off = g.rng.Int64N(fi.Size())
			}
			if _, err := f.WriteAt(g.bytes(1+g.rng.IntN(32<<10)), off); err != nil {
				g.t.Fatal(err)
			}
			f.Close()
		case x < 28:
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				g.t.Fatal(err)
			}
			if _, err := f.Write(g.bytes(1 + g.rng.IntN(200<<10))); err != nil {
				g.t.Fatal(err)
			}
			f.Close()
		case x < 32:
			fi, err := os.Stat(p)
			if err != nil {
				g.t.Fatal(err)
			}
			mode := fs.FileMode(0o600)
			if fi.Mode().Perm() == mode {
				mode = 0o755
			}
			if err := os.Chmod(p, mode); err != nil {
				g.t.Fatal(err)
			}
		case x < 35:
			if err := os.Rename(p, filepath.Join(filepath.Dir(p), g.name("r"))); err != nil {
				g.t.Fatal(err)
			}
		}
	}
	g.addFiles(root, newBytes)
}

// parseJSON decodes out into v or fails.
func parseJSON(t *testing.T, what, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
}

// pruneJSON is the part of `dj prune --json` the tests read.
type pruneJSON struct {
	PacksMarked      []string `json:"packs_marked"`
	PacksRepacked    []string `json:"packs_repacked"`
	PacksDeleted     []string `json:"packs_deleted"`
	UnindexedDeleted []string `json:"unindexed_packs_deleted"`
	PacksResurrected []string `json:"packs_resurrected"`
	PacksPending     int      `json:"packs_pending"`
}

// timePruneOnCopy runs prune with flags on a copy of the repository and
// returns how long it took.
func (e *env) timePruneOnCopy(flags []string) time.Duration {
	e.t.Helper()
	cp := filepath.Join(e.dir, "repo-timing")
	if err := os.RemoveAll(cp); err != nil {
		e.t.Fatal(err)
	}
	shell(e.t, "cp -a "+e.repo+" "+cp)
	start := time.Now()
	r := e.runEnv([]string{"DJ_REPOSITORY=" + cp}, append([]string{"prune"}, flags...)...)
	d := time.Since(start)
	if r.code != 0 {
		e.t.Fatalf("prune %v on a copy: exit %d\n%s%s", flags, r.code, r.stdout, r.stderr)
	}
	if err := os.RemoveAll(cp); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
