package integration

// The power-loss battery (issue 12): the repository lives on powerfs, a
// file system that keeps only what was fsynced (file data) and what a
// directory fsync published (names); the machine "loses power" at random
// moments of backup and prune, and the repository that survives must be
// whole.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"dj/internal/powerfs"
)

var savedSnapshot = regexp.MustCompile(`snapshot ([0-9a-f]{8,64}) saved`)

// TestBatteryPowerCuts cuts the power batteryRuns(5, 50) times during
// backup and as many during prune. After each cut, on what survived:
// `dj unlock` clears the dead process's lock, `check --read-data` passes,
// every snapshot a finished backup reported is there, and every snapshot
// restores byte-identical to the manifest of its source.
func TestBatteryPowerCuts(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	cuts := batteryRuns(5, 50)
	const seed = 20261205
	g := newTreeGen(t, seed)
	e := newEnv(t)
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	os.MkdirAll(mnt, 0o755)
	state := filepath.Join(base, "state-0")
	os.MkdirAll(state, 0o755)
	e.repo = filepath.Join(mnt, "repo")
	for i, kv := range e.extraEnv {
		if strings.HasPrefix(kv, "DJ_REPOSITORY=") {
			e.extraEnv[i] = "DJ_REPOSITORY=" + e.repo
		}
	}
	fsys, err := powerfs.Mount(state, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { fsys.Unmount() }()

	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 6<<20)
	e.must("init")
	want := map[string]manifest{}
	id := e.backupSnapshot(src)
	want[id] = scanTree(t, src)

	took := map[string]time.Duration{"backup": 2 * time.Second, "prune": 2 * time.Second}
	type tally struct{ cuts, midway, survived int }
	counts := map[string]*tally{"backup": {}, "prune": {}}
	for run := 0; run < 2*cuts; run++ {
		op := "backup"
		args := []string{"backup", src}
		var pending manifest
		if run%2 == 1 {
			op = "prune"
			// Work for prune: forget all but the newest two snapshots.
			snaps := e.snapshots()
			if len(snaps) > 2 {
				fargs := []string{"forget"}
				for _, s := range snaps[:len(snaps)-2] {
					fargs = append(fargs, s.ID)
					delete(want, s.ID)
				}
				e.must(fargs...)
			}
			args = []string{"prune", "--max-unused", "0%", "--keep-delete", "0s"}
		} else {
			g.mutate(src, 2<<20)
			pending = scanTree(t, src)
		}
		delay := time.Duration(g.rng.Float64() * 1.2 * float64(took[op]))
		p, _ := e.start(nil, false, args...)
		time.Sleep(delay)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		res, killed := p.wait()
		syncs := fsys.Syncs()
		c := counts[op]
		c.cuts++
		switch {
		case killed:
			c.midway++
		case res.code == 0:
			took[op] = p.ended.Sub(p.started)
			if m := savedSnapshot.FindStringSubmatch(res.stdout); m != nil {
				full := e.fullID(m[1])
				want[full] = pending
			}
		default:
			t.Fatalf("run %d: %s failed by itself: exit %d\n%s%s", run, op, res.code, res.stdout, res.stderr)
		}

		// The power goes: only what was durable survives. Boot on it.
		next := filepath.Join(base, fmt.Sprintf("state-%d", run+1))
		if err := fsys.Cut(next); err != nil {
			t.Fatal(err)
		}
		if err := fsys.Unmount(); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(state)
		state = next
		if fsys, err = powerfs.Mount(state, mnt); err != nil {
			t.Fatal(err)
		}

		e.must("unlock")
		code, problems, summary := e.checkJSON("--read-data")
		if code != 0 || summary.Errors != 0 {
			var msgs []string
			for _, p := range problems {
				msgs = append(msgs, p.Message)
			}
			t.Fatalf("run %d: after a power cut during %s (at %v of ~%v, killed %v), check fails (exit %d):\n  %s",
				run, op, delay.Round(time.Millisecond), took[op].Round(time.Millisecond), killed, code, strings.Join(msgs, "\n  "))
		}
		have := map[string]bool{}
		for _, s := range e.snapshots() {
			have[s.ID] = true
			m, ok := want[s.ID]
			if !ok && pending != nil {
				// The killed backup wrote its snapshot before it could say so.
				m, want[s.ID] = pending, pending
			} else if !ok {
				t.Fatalf("run %d: snapshot %.8s came from nowhere", run, s.ID)
			}
			e.restoreMatches(s.ID, src, m)
		}
		for id := range want {
			if !have[id] {
				t.Fatalf("run %d: snapshot %.8s, reported saved before the cut, is gone after it", run, id)
			}
		}
		c.survived++
		t.Logf("run %2d: %s cut at %v (takes ~%v), killed midway %v; %d snapshots whole, %d syncs seen",
			run, op, delay.Round(time.Millisecond), took[op].Round(time.Millisecond), killed, len(have), syncs)
	}
	for _, op := range []string{"backup", "prune"} {
		c := counts[op]
		recordReliability(t, "power-cuts", []string{"operation", "power cuts", "cut midway", "repository whole after", "form"},
			op, fmt.Sprint(c.cuts), fmt.Sprint(c.midway), fmt.Sprint(c.survived), batteryFormName())
	}
}

// TestPowerCutForgottenSnapshotStaysForgotten: forget, then prune, then
// the file system writes back the pack directories (as it may, in any
// order) and the power goes. A forgotten snapshot whose removal was not
// durable came back naming the packs prune had deleted: check failed and
// the snapshot could not be restored. Removals of snapshots, indexes,
// locks and keys are now durable before the command goes on.
func TestPowerCutForgottenSnapshotStaysForgotten(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	e := newEnv(t)
	base := t.TempDir()
	mnt, state := filepath.Join(base, "mnt"), filepath.Join(base, "state")
	os.MkdirAll(mnt, 0o755)
	os.MkdirAll(state, 0o755)
	e.repo = filepath.Join(mnt, "repo")
	for i, kv := range e.extraEnv {
		if strings.HasPrefix(kv, "DJ_REPOSITORY=") {
			e.extraEnv[i] = "DJ_REPOSITORY=" + e.repo
		}
	}
	fsys, err := powerfs.Mount(state, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { fsys.Unmount() }()
	g := newTreeGen(t, 11)
	src1, src2 := filepath.Join(e.dir, "one"), filepath.Join(e.dir, "two")
	g.addFiles(src1, 3<<20)
	g.addFiles(src2, 3<<20)
	e.must("init")
	a := e.backupSnapshot(src1)
	b := e.backupSnapshot(src2)
	want := scanTree(t, src2)
	e.must("forget", a)
	e.must("prune", "--max-unused", "0%", "--keep-delete", "0s")
	// The file system writes the pack directories back.
	dirs, _ := filepath.Glob(filepath.Join(e.repo, "data", "*"))
	for _, d := range dirs {
		if f, err := os.Open(d); err == nil {
			f.Sync()
			f.Close()
		}
	}
	out := filepath.Join(base, "after")
	if err := fsys.Cut(out); err != nil {
		t.Fatal(err)
	}
	fsys.Unmount()
	if fsys, err = powerfs.Mount(out, mnt); err != nil {
		t.Fatal(err)
	}
	code, problems, _ := e.checkJSON("--read-data")
	if code != 0 {
		var msgs []string
		for _, p := range problems {
			msgs = append(msgs, p.Message)
		}
		t.Fatalf("after the cut, check fails (exit %d):\n  %s", code, strings.Join(msgs, "\n  "))
	}
	snaps := e.snapshots()
	if len(snaps) != 1 || snaps[0].ID != b {
		t.Fatalf("after the cut the repository holds %v, want only %.8s", snaps, b)
	}
	e.restoreMatches(b, src2, want)
}

// batteryFormName names the battery's length for the records.
func batteryFormName() string {
	if n := os.Getenv("DJ_BATTERY_RUNS"); n != "" {
		return "DJ_BATTERY_RUNS=" + n
	}
	if stressMode() {
		return "full"
	}
	return "short"
}

// fullID expands a short snapshot id.
func (e *env) fullID(short string) string {
	e.t.Helper()
	for _, s := range e.snapshots() {
		if strings.HasPrefix(s.ID, short) {
			return s.ID
		}
	}
	return short
}
