package integration

// The faulty-storage battery (issue 12): every command of dj runs on a
// repository whose backend fails as DJ_TEST_FAULTS scripts it (the fault
// wrapper of backend/fault under the retry layer, in the built binary).
// Each command either succeeds with correct data (restores and mount
// reads compared with the SHA-256 manifest of the source) or fails
// cleanly (non-zero exit, a one-line "dj: " error, no panic); afterwards,
// without faults, `check --read-data` passes and every snapshot that
// should exist restores byte-identical. Prune and forget --prune run with
// --instant-delete, so that a listing that lies would cost data at once.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultModes are the scripted faults the battery runs every command
// under, by name. Each rule is one of backend/fault's modes; rates are
// high enough that every command meets several faults.
var faultModes = []struct{ name, rule string }{
	{"error", "mode=error,rate=0.15"},
	{"timeout", "mode=timeout,rate=0.1,wait=20ms"},
	{"shortread", "mode=shortread,rate=0.15"},
	{"flip", "mode=flip,rate=0.15"},
	{"lostreply", "mode=lostreply,rate=0.2"},
	{"halfsave", "mode=halfsave,rate=0.2"},
	{"emptylist", "mode=emptylist,rate=0.3"},
	{"emptylist-index", "mode=emptylist,types=index,rate=0.7"},
	{"shortlist", "mode=shortlist,after=1,rate=0.3"},
	{"listfail", "mode=listfail,after=1,rate=0.3"},
}

// faultModesShort are the modes of the short form, grouped three ways
// (each rule meets its own calls: a call takes the first rule that fires),
// so that `make test` meets every mode in three runs.
var faultModesShort = []struct{ name, rule string }{
	{"error+timeout+lostreply+halfsave", "mode=error,rate=0.05;mode=timeout,rate=0.05,wait=20ms;mode=lostreply,rate=0.1;mode=halfsave,rate=0.1"},
	{"flip+shortread", "mode=flip,rate=0.1;mode=shortread,rate=0.1"},
	{"emptylist+shortlist+listfail", "mode=emptylist,types=index+snapshots+data,rate=0.15;mode=shortlist,after=1,rate=0.15;mode=listfail,after=1,rate=0.15"},
}

// faultTally counts how the commands answered under one mode.
type faultTally struct {
	mu                       sync.Mutex
	runs, ok, failed, faults int
	short                    int // listings answered with less, as the storage listed less
}

func (ft *faultTally) add(ok, short bool, retries int) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.runs++
	if ok {
		ft.ok++
	} else {
		ft.failed++
	}
	if short {
		ft.short++
	}
	ft.faults += retries
}

// faultBase is the repository every run starts from: two snapshots of a
// generated tree, with their manifests.
type faultBase struct {
	e        *env
	src      string
	ids      [2]string
	want     map[string]manifest
	srcOf    map[string]string
	lsOut    string
	diffOut  string
	newSrc   string
	newWant  manifest
	snapList []string
}

func newFaultBase(t *testing.T) *faultBase {
	e := newEnv(t)
	e.must("init")
	b := &faultBase{e: e, src: filepath.Join(e.dir, "src"), want: map[string]manifest{}, srcOf: map[string]string{}}
	g := newTreeGen(t, 12)
	g.addFiles(b.src, 512<<10)
	for i := range b.ids {
		if i > 0 {
			g.mutate(b.src, 128<<10)
		}
		m := scanTree(t, b.src)
		b.ids[i] = e.backupSnapshot(b.src)
		b.want[b.ids[i]] = m
		b.srcOf[b.ids[i]] = b.src
		b.snapList = append(b.snapList, b.ids[i])
	}
	b.lsOut = e.must("-v", "ls", b.ids[0])
	b.diffOut = e.must("-v", "diff", b.ids[0], b.ids[1])
	// The tree a faulty backup saves: half new, half shared with src.
	b.newSrc = filepath.Join(e.dir, "newsrc")
	g2 := newTreeGen(t, 13)
	g2.addFiles(b.newSrc, 256<<10)
	if out, err := exec.Command("cp", "-a", b.src, filepath.Join(b.newSrc, "old")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	b.newWant = scanTree(t, b.newSrc)
	return b
}

// clone returns a new env with a copy of the base repository.
func (b *faultBase) clone(t *testing.T) *env {
	e := newEnv(t)
	if out, err := exec.Command("cp", "-a", b.e.repo, e.repo).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return e
}

// cleanFailure fails the test unless r is a clean failure: a non-zero
// exit whose last line of stderr is dj's one-line error. (Panics fail in
// runStdin already.)
func cleanFailure(t *testing.T, what string, r result) {
	t.Helper()
	if r.code == 0 {
		return
	}
	if last := lastLine(r.stderr); !strings.HasPrefix(last, "dj: ") || strings.TrimSpace(r.stderr) == "" {
		t.Errorf("%s failed (exit %d) without dj's one-line error; stderr ends:\n%s", what, r.code, tail(r.stderr, 5))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestBatteryFaults runs every command under every fault mode (one seed
// per mode in the short form, 20 in the full one) and records, per mode,
// the commands run, how many succeeded, how many failed cleanly and the
// faults the retry layer reported.
func TestBatteryFaults(t *testing.T) {
	base := newFaultBase(t)
	seeds := batteryRuns(1, 20)
	mountOK := os.Geteuid() == 0
	if _, err := os.Stat("/dev/fuse"); err != nil {
		mountOK = false
	}
	modes := faultModes
	if !stressMode() {
		modes = faultModesShort
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var tally faultTally
			for seed := 1; seed <= seeds; seed++ {
				spec := func(cmd int) string {
					// Each command its own seed: the same for every run of
					// this seed, different between the commands.
					return fmt.Sprintf("DJ_TEST_FAULTS=seed=%d,delay=1ms;%s", seed*100+cmd, mode.rule)
				}
				faultRun(t, base, spec, mountOK, &tally)
				if t.Failed() {
					t.Logf("failed with %s (seeds %d..)", spec(0), seed*100)
					break
				}
			}
			t.Logf("%s: %d commands, %d succeeded, %d failed cleanly, %d short listings, %d faults retried",
				mode.name, tally.runs, tally.ok, tally.failed, tally.short, tally.faults)
			recordReliability(t, "faults", []string{"mode", "rule", "seeds", "commands", "succeeded (correct data)", "failed cleanly", "short listings", "faults retried", "data lost"},
				mode.name, "`"+mode.rule+"`", fmt.Sprint(seeds), fmt.Sprint(tally.runs), fmt.Sprint(tally.ok), fmt.Sprint(tally.failed),
				fmt.Sprint(tally.short), fmt.Sprint(tally.faults), fmt.Sprint(map[bool]int{true: 1}[t.Failed()]))
		})
	}
}

// faultRun runs every command once under spec on a copy of the base
// repository, then checks the copy without faults.
func faultRun(t *testing.T, base *faultBase, specFor func(int) string, mountOK bool, tally *faultTally) {
	cmdNo := 0
	next := func() string { cmdNo++; return specFor(cmdNo) }
	e := base.clone(t)
	want := map[string]manifest{}
	srcOf := map[string]string{}
	for id, m := range base.want {
		want[id], srcOf[id] = m, base.srcOf[id]
	}
	id0, id1 := base.ids[0], base.ids[1]
	faulty := func(args ...string) result {
		t.Helper()
		spec := next()
		r := e.runEnv([]string{spec}, append([]string{"-v"}, args...)...)
		cleanFailure(t, strings.Join(args, " "), r)
		switch args[0] {
		case "backup", "repack", "prune", "forget":
			// The command that broke the repository is named at once.
			if c := e.run("check"); c.code != 0 {
				t.Fatalf("after dj %s under %s (exit %d), check fails:\n%s%s\n--- the command's output:\n%s", strings.Join(args, " "), spec, r.code, c.stdout, tail(c.stderr, 20), tail(r.stderr, 40))
			}
		}
		if r.code != 0 {
			t.Logf("dj %s: exit %d: %s", args[0], r.code, lastLine(r.stderr))
		}
		return r
	}
	count := func(r result, short bool) {
		tally.add(r.code == 0, short, strings.Count(r.stderr, "retrying"))
	}

	// backup: a snapshot it leaves (even one saved while dj was told the
	// save failed) must be complete.
	r := faulty("backup", base.newSrc)
	count(r, false)
	for _, s := range e.snapshots() {
		if _, ok := want[s.ID]; !ok {
			want[s.ID], srcOf[s.ID] = base.newWant, base.newSrc
		}
	}
	if r.code == 0 && len(want) != 3 {
		t.Errorf("backup succeeded, but the repository holds %d snapshots, want 3", len(want))
	}

	// restore
	target := filepath.Join(e.dir, "faulty-restore")
	r = faulty("restore", id0, "--target", target)
	count(r, false)
	if r.code == 0 {
		if d := manifestDiff(want[id0], scanTree(t, filepath.Join(target, base.src))); len(d) > 0 {
			t.Errorf("restore under faults succeeded with wrong data:\n  %s", strings.Join(d, "\n  "))
		}
	}
	os.RemoveAll(target)

	// mount reads: a file reads whole and right, or fails (EIO).
	if mountOK {
		ok, eio := faultMountRead(t, e, next(), id1, base.src, want[id1])
		tally.add(ok, false, 0)
		_ = eio
	}

	// check: passes, or reports what it could not read, cleanly.
	r = faulty("check", "--read-data")
	count(r, false)

	// Listings: the same answer as without faults, or a clean failure. A
	// listing the storage cut short without an error can only show less.
	short := func(got, clean string) bool {
		if got == clean {
			return false
		}
		if !strings.Contains(specFor(0), "list") {
			t.Errorf("output under faults differs from the clean one:\n%s\n--- clean:\n%s", tail(got, 10), tail(clean, 10))
		}
		return true
	}
	cleanSnaps := e.must("-v", "snapshots")
	r = faulty("snapshots")
	count(r, r.code == 0 && short(r.stdout, cleanSnaps))
	r = faulty("ls", id0)
	count(r, r.code == 0 && short(r.stdout, base.lsOut))
	r = faulty("diff", id0, id1)
	count(r, r.code == 0 && short(r.stdout, base.diffOut))

	// copy into a fresh repository: what arrives is complete.
	dst := newEnv(t)
	dst.must("init")
	pw := filepath.Join(e.dir, "password")
	r = dst.runEnv([]string{next(), "DJ_FROM_PASSWORD_FILE=" + pw}, "-v", "copy", "--from-repo", e.repo)
	cleanFailure(t, "copy", r)
	count(r, false)
	if c := dst.run("check", "--read-data"); c.code != 0 {
		t.Errorf("the target of a copy under faults does not check:\n%s%s", c.stdout, tail(c.stderr, 10))
	}

	// repack, prune, forget --prune: whatever happens, no snapshot that
	// is kept loses data.
	r = faulty("repack", "--instant-delete", "--min-fill", "0.99")
	count(r, false)
	r = faulty("prune", "--instant-delete", "--max-unused", "0")
	count(r, false)
	r = faulty("forget", id0, "--prune", "--instant-delete", "--max-unused", "0")
	count(r, false)

	// Without faults: the repository checks, and every snapshot that
	// must be there is, and restores byte-identical.
	if c := e.run("check", "--read-data"); c.code != 0 {
		t.Fatalf("after the commands under faults, check --read-data fails:\n%s%s", c.stdout, tail(c.stderr, 20))
	}
	have := map[string]bool{}
	for _, s := range e.snapshots() {
		have[s.ID] = true
		if _, ok := want[s.ID]; !ok {
			t.Errorf("unexpected snapshot %s", s.ShortID)
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if !have[id] {
			if id != id0 {
				t.Errorf("snapshot %.8s is gone (only %.8s was forgotten)", id, id0)
			}
			continue
		}
		e.restoreMatches(id, srcOf[id], want[id])
	}
}

// faultMountRead mounts the repository under spec and reads every file of
// snapshot id below src through it: each reads whole with its manifest's
// hash, or fails with an error. It returns whether all read, and how many
// failed.
func faultMountRead(t *testing.T, e *env, spec, id, src string, want manifest) (bool, int) {
	t.Helper()
	m := faultMount(t, e, spec)
	if m == nil {
		return false, 0 // dj mount failed cleanly
	}
	defer m.stop()
	root := filepath.Join(m.dir, "ids", id[:8]) + src
	failed := 0
	for rel, w := range want {
		if !strings.HasPrefix(w, "file ") {
			continue
		}
		f, err := os.Open(filepath.Join(root, rel))
		if err != nil {
			failed++
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			failed++
			continue
		}
		fields := strings.Fields(w)
		if got := fmt.Sprintf("%d %x", n, h.Sum(nil)); got != fields[2]+" "+fields[3] {
			t.Errorf("mount under faults read %s wrong: %s, want %s", rel, got, fields[2]+" "+fields[3])
		}
	}
	return failed == 0, failed
}

// faultMount starts dj mount under spec and waits until it serves; nil
// when dj mount exits first, which must be a clean failure.
func faultMount(t *testing.T, e *env, spec string) *faultMounted {
	t.Helper()
	return faultMountArgs(t, e, spec)
}

// faultMountArgs is faultMount with arguments before "mount".
func faultMountArgs(t *testing.T, e *env, spec string, pre ...string) *faultMounted {
	t.Helper()
	dir := filepath.Join(e.dir, "mnt")
	os.MkdirAll(dir, 0o755)
	var log bytes.Buffer
	cmd := exec.Command(e.bin, append(append(append([]string{}, pre...), "mount"), dir)...)
	cmd.Env = append(append(cleanEnv(), e.extraEnv...), spec)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	for !isMounted(dir) {
		select {
		case <-exited:
			r := result{stderr: log.String(), code: cmd.ProcessState.ExitCode()}
			if strings.Contains(r.stderr, "panic") || r.code == 0 {
				t.Errorf("dj mount under faults exited %d:\n%s", r.code, r.stderr)
			}
			cleanFailure(t, "mount", r)
			return nil
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("dj mount under faults did not come up:\n%s", log.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return &faultMounted{t: t, cmd: cmd, dir: dir, log: &log, exited: exited}
}

// faultMounted is a dj mount started by faultMount.
type faultMounted struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	log    *bytes.Buffer
	exited chan error
}

// stop sends SIGTERM and waits; nothing may stay mounted.
func (m *faultMounted) stop() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
		m.t.Errorf("dj mount did not stop on SIGTERM:\n%s", m.log.String())
	}
	if isMounted(m.dir) {
		exec.Command("fusermount3", "-u", "-z", m.dir).Run()
		m.t.Errorf("SIGTERM left %s mounted", m.dir)
	}
}
