package integration

// End-to-end tests of the maintenance commands (prune, forget, check,
// repair, diff, repack) run through the real binary. This file holds the
// prune tests: prune killed at random points, and prune running next to
// backups; the helpers they share are in maint_helpers_test.go.

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPruneKilledAtRandomPoints kills prune with SIGKILL at random moments
// of its run, with each of its modes, on a repository whose snapshots
// evolve between the runs. After every kill, `dj unlock` clears the lock,
// `dj check --read-data` passes and every snapshot restores byte-identical
// (prune's crash-safety claim: every step writes before it deletes). At
// the end two complete prunes leave a repository without warnings.
func TestPruneKilledAtRandomPoints(t *testing.T) {
	runs := 20
	if testing.Short() {
		runs = 5
	}
	const seed = 20261123
	t.Logf("seed %d, %d runs", seed, runs)
	g := newTreeGen(t, seed)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 48<<20)

	want := map[string]manifest{}
	backup := func() {
		id := e.backupSnapshot(src)
		want[id] = scanTree(t, src)
	}
	for i := 0; i < 3; i++ {
		backup()
		g.mutate(src, 8<<20)
	}
	variants := [][]string{
		nil,
		{"--keep-delete", "0s"},
		{"--max-unused", "0%"},
		{"--instant-delete"},
		{"--max-unused", "0%", "--keep-delete", "0s"},
	}
	begin := time.Now()
	killed := 0
	for run := 0; run < runs; run++ {
		// New work for prune: a new snapshot, and the oldest ones forgotten
		// so that three remain.
		backup()
		g.mutate(src, 8<<20)
		snaps := e.snapshots()
		if len(snaps) > 3 {
			args := []string{"forget"}
			for _, s := range snaps[:len(snaps)-3] {
				args = append(args, s.ID)
				delete(want, s.ID)
			}
			e.must(args...)
		}

		flags := variants[run%len(variants)]
		took := e.timePruneOnCopy(flags)
		delay := time.Duration(g.rng.Float64() * 1.1 * float64(took))
		p, _ := e.start(nil, false, append([]string{"prune", "--verbose"}, flags...)...)
		time.Sleep(delay)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		res, wasKilled := p.wait()
		switch {
		case wasKilled:
			killed++
			t.Logf("run %2d: prune %v (takes %v) killed after %v, last output %q", run, flags, took.Round(time.Millisecond), delay.Round(time.Millisecond), lastLine(res.stdout))
		case res.code == 0:
			t.Logf("run %2d: prune %v (takes %v) finished before the kill at %v", run, flags, took.Round(time.Millisecond), delay.Round(time.Millisecond))
		default:
			t.Fatalf("run %d: prune %v failed by itself: exit %d\n%s%s", run, flags, res.code, res.stdout, res.stderr)
		}

		// The killed process's lock is stale: its PID is gone.
		e.must("unlock")
		if left := e.locksLeft(); len(left) > 0 {
			t.Fatalf("run %d: `dj unlock` left the lock of a killed prune: %v", run, left)
		}
		e.checkAndRestoreAll(src, want)
	}
	t.Logf("%d of %d prunes killed midway; %v", killed, runs, time.Since(begin).Round(time.Millisecond))
	if killed < runs/2 {
		t.Errorf("only %d of %d prunes were killed before they finished: the delays do not cover prune's run", killed, runs)
	}

	// Whatever the kills left behind (superseded index files, unindexed
	// packs, pending packs), two complete prunes clear it.
	e.must("prune", "--keep-delete", "0s", "--max-unused", "0%")
	e.must("prune", "--keep-delete", "0s")
	code, problems, summary := e.checkJSON("--read-data")
	if code != 0 || summary.Errors != 0 || summary.Warnings != 0 {
		var msgs []string
		for _, p := range problems {
			msgs = append(msgs, p.Message)
		}
		t.Errorf("after two complete prunes, check reports %d errors, %d warnings (exit %d):\n  %s",
			summary.Errors, summary.Warnings, code, strings.Join(msgs, "\n  "))
	}
	e.checkAndRestoreAll(src, want)
	var temps int
	var tempBytes int64
	filepath.WalkDir(e.repo, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), "-tmp-") {
			if fi, err := d.Info(); err == nil {
				temps++
				tempBytes += fi.Size()
			}
		}
		return nil
	})
	if temps > 0 {
		t.Logf("%d temporary files (%d bytes) of uploads cut short by the kills remain in the repository", temps, tempBytes)
	}
}

// TestMaintBackupDuringPrune runs backups of a sizeable tree and prunes
// at the same time, with different timing and prune modes. Both end well,
// or (only with --instant-delete, which needs an exclusive lock) one of them
// fails cleanly with exit 11; afterwards check --read-data passes and every
// snapshot, the new one included, restores byte-identical.
func TestMaintBackupDuringPrune(t *testing.T) {
	g := newTreeGen(t, 77)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 24<<20)
	want := map[string]manifest{}
	id := e.backupSnapshot(src)
	want[id] = scanTree(t, src)

	type tc struct {
		pruneFirst bool
		offset     time.Duration
		flags      []string
	}
	cases := []tc{
		{false, 0, nil},
		{false, 50 * time.Millisecond, []string{"--keep-delete", "0s"}},
		{false, 150 * time.Millisecond, []string{"--max-unused", "0%", "--keep-delete", "0s"}},
		{true, 20 * time.Millisecond, []string{"--max-unused", "0%", "--keep-delete", "0s"}},
		{false, 250 * time.Millisecond, []string{"--keep-delete", "0s"}},
		{false, 0, []string{"--instant-delete"}},
		{false, 100 * time.Millisecond, []string{"--instant-delete"}},
		{true, 0, []string{"--instant-delete", "--max-unused", "0%"}},
	}
	if testing.Short() {
		cases = cases[:4]
	}
	bothOK := 0
	for i, c := range cases {
		// The backup has much new data; the prune has the data of the
		// forgotten snapshots to mark, repack and delete.
		g.mutate(src, 40<<20)
		snaps := e.snapshots()
		if len(snaps) > 1 {
			args := []string{"forget"}
			for _, s := range snaps[:len(snaps)-1] {
				args = append(args, s.ID)
				delete(want, s.ID)
			}
			e.must(args...)
		}
		m := scanTree(t, src)
		before := map[string]bool{}
		for id := range want {
			before[id] = true
		}

		var bk, pr *proc
		pruneArgs := append([]string{"prune"}, c.flags...)
		if c.pruneFirst {
			pr, _ = e.start(nil, false, pruneArgs...)
			time.Sleep(c.offset)
			bk, _ = e.start(nil, false, "backup", "--quiet", src)
		} else {
			bk, _ = e.start(nil, false, "backup", "--quiet", src)
			time.Sleep(c.offset)
			pr, _ = e.start(nil, false, pruneArgs...)
		}
		rb, _ := bk.wait()
		rp, _ := pr.wait()
		instant := strings.Contains(strings.Join(c.flags, " "), "--instant-delete")
		cleanLockFailure := func(r result) bool {
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			return r.code == 11 && len(lines) == 1 && strings.HasPrefix(lines[0], "dj: ") && strings.Contains(lines[0], "locked")
		}
		if rb.code != 0 && (!instant || !cleanLockFailure(rb)) {
			t.Fatalf("case %d: backup next to prune %v: exit %d\n%s%s", i, c.flags, rb.code, rb.stdout, rb.stderr)
		}
		if rp.code != 0 && (!instant || !cleanLockFailure(rp)) {
			t.Fatalf("case %d: prune %v next to a backup: exit %d\n%s%s", i, c.flags, rp.code, rp.stdout, rp.stderr)
		}
		if rb.code != 0 && rp.code != 0 {
			t.Fatalf("case %d: both backup and prune %v failed on the lock (each saw the other's):\n%s\n%s", i, c.flags, rb.stderr, rp.stderr)
		}
		end, begin := bk.ended, bk.started
		if pr.ended.Before(end) {
			end = pr.ended
		}
		if pr.started.After(begin) {
			begin = pr.started
		}
		overlap := end.Sub(begin)
		t.Logf("case %d: backup %v (exit %d), prune %v %v (exit %d), overlapping %v", i,
			bk.ended.Sub(bk.started).Round(time.Millisecond), rb.code, c.flags,
			pr.ended.Sub(pr.started).Round(time.Millisecond), rp.code, overlap.Round(time.Millisecond))
		if rb.code == 0 {
			want[e.newSnapshot(before)] = m
		}
		if rb.code == 0 && rp.code == 0 {
			bothOK++
		}
		if left := e.locksLeft(); len(left) > 0 {
			t.Fatalf("case %d: locks left after both ended: %v", i, left)
		}
		e.checkAndRestoreAll(src, want)
	}
	if bothOK == 0 {
		t.Fatal("no case ran backup and prune side by side successfully")
	}
}

// TestPruneKeepsPacksABackupDedupsAgainst is the race of prune's safety
// argument: a backup that loaded the index before prune marked a pack
// deduplicates against the marked pack's blobs; a later prune with
// --keep-delete 0s must not delete that pack, whether it runs while the
// backup still runs (the backup's lock is older than the mark) or after it
// (the new snapshot needs the pack: it is resurrected).
func TestPruneKeepsPacksABackupDedupsAgainst(t *testing.T) {
	for _, during := range []bool{true, false} {
		name := "second prune after the backup"
		if during {
			name = "second prune during the backup"
		}
		t.Run(name, func(t *testing.T) {
			g := newTreeGen(t, 5)
			e := newEnv(t)
			e.must("init")
			src := filepath.Join(e.dir, "src")
			writeFile(t, filepath.Join(src, "keep.bin"), g.bytes(3<<20))
			gone := g.bytes(6 << 20)
			writeFile(t, filepath.Join(src, "gone.bin"), gone)
			first := e.backupSnapshot(src)
			if err := os.Remove(filepath.Join(src, "gone.bin")); err != nil {
				t.Fatal(err)
			}
			second := e.backupSnapshot(src)
			wantSecond := scanTree(t, src)
			e.must("forget", first)

			// The backup loads the index (gone.bin's blobs are in a normal
			// pack there) and takes its lock before prune marks that pack.
			before := map[string]bool{second: true}
			bk, stdin := e.start(nil, true, "backup", "--stdin", "--stdin-filename", "gone.bin")
			deadline := time.Now().Add(30 * time.Second)
			for len(e.locksLeft()) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("backup --stdin took no lock")
				}
				time.Sleep(10 * time.Millisecond)
			}
			var p1 pruneJSON
			parseJSON(t, "prune --json", e.must("prune", "--json", "--max-unused", "0%"), &p1)
			if len(p1.PacksMarked)+len(p1.PacksRepacked) == 0 {
				t.Fatalf("prune marked nothing: %+v", p1)
			}
			if _, err := stdin.Write(gone); err != nil {
				t.Fatal(err)
			}
			if during {
				var p2 pruneJSON
				parseJSON(t, "prune --json", e.must("prune", "--json", "--keep-delete", "0s"), &p2)
				if len(p2.PacksDeleted) > 0 {
					t.Errorf("prune --keep-delete 0s deleted packs marked after a running backup started: %v", p2.PacksDeleted)
				}
				if p2.PacksPending == 0 {
					t.Errorf("prune --keep-delete 0s during the backup kept no marked pack: %+v", p2)
				}
			}
			stdin.Close()
			if res, _ := bk.wait(); res.code != 0 {
				t.Fatalf("backup --stdin: exit %d\n%s", res.code, res.stderr)
			}
			third := e.newSnapshot(before)

			var p3 pruneJSON
			parseJSON(t, "prune --json", e.must("prune", "--json", "--keep-delete", "0s"), &p3)
			if len(p3.PacksResurrected) == 0 {
				t.Errorf("the backup's snapshot needs blobs of marked packs, but prune resurrected none: %+v", p3)
			}
			e.must("prune", "--keep-delete", "0s")
			if r := e.run("check", "--read-data"); r.code != 0 {
				t.Fatalf("check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			if got := e.must("dump", third, "/gone.bin"); got != string(gone) {
				t.Fatalf("the snapshot of the racing backup restores %d bytes, not its input", len(got))
			}
			e.restoreMatches(second, src, wantSecond)
		})
	}
}

// TestPruneSparesPacksOfABackupThatStartedAfterIt stops prune right after
// it listed the locks, runs a backup that uploads packs (not yet indexed)
// meanwhile, and lets prune --keep-delete 0s go on: it must not delete the
// running backup's packs, which no index names yet.
func TestPruneSparesPacksOfABackupThatStartedAfterIt(t *testing.T) {
	g := newTreeGen(t, 9)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 4<<20)
	// Many directories: finding the data in use (between listing the locks
	// and listing the packs) takes prune tens of milliseconds.
	for i := 0; i < 1600; i++ {
		writeFile(t, filepath.Join(src, "many", fmt.Sprintf("d%02d", i/40), fmt.Sprintf("e%02d", i%40), "f"), []byte(fmt.Sprint(i)))
	}
	e.backupSnapshot(src)
	packsBefore := e.packCount()

	cmd := exec.Command(e.bin, "prune", "--verbose", "--keep-delete", "0s")
	cmd.Env = append(cleanEnv(), e.extraEnv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var pruneOut []string
	for l := range lines {
		pruneOut = append(pruneOut, l)
		if strings.Contains(l, "loading snapshots") {
			// Prune has listed the locks (see PlanPrune).
			if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	// What prune printed before the stop took hold: it must not have got
	// past finding the data in use (it lists the packs after that).
	time.Sleep(50 * time.Millisecond)
	for drained := false; !drained; {
		select {
		case l, ok := <-lines:
			if !ok {
				drained = true
				break
			}
			pruneOut = append(pruneOut, l)
			if !strings.Contains(l, "loading index") && !strings.Contains(l, "finding data in use") {
				cmd.Process.Signal(syscall.SIGCONT)
				cmd.Wait()
				t.Fatalf("prune got too far before it was stopped; the race was not exercised:\n%s", strings.Join(pruneOut, "\n"))
			}
		default:
			drained = true
		}
	}
	if !strings.Contains(strings.Join(pruneOut, "\n"), "loading snapshots") {
		cmd.Wait()
		t.Fatalf("prune --verbose did not print `loading snapshots`:\n%s\n%s", strings.Join(pruneOut, "\n"), stderr.String())
	}

	big := g.bytes(48 << 20)
	bk, stdin := e.start(nil, true, "backup", "--stdin", "--stdin-filename", "big.bin")
	writeErr := make(chan error, 1)
	go func() {
		_, err := stdin.Write(big)
		writeErr <- err
	}()
	deadline := time.Now().Add(60 * time.Second)
	for e.packCount() <= packsBefore {
		if time.Now().After(deadline) {
			cmd.Process.Signal(syscall.SIGCONT)
			t.Fatal("the backup uploaded no pack before its input ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		pruneOut = append(pruneOut, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("prune: %v\n%s\n%s", err, strings.Join(pruneOut, "\n"), stderr.String())
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if res, _ := bk.wait(); res.code != 0 {
		t.Fatalf("backup --stdin next to prune: exit %d\n%s", res.code, res.stderr)
	}
	if r := e.run("check", "--read-data"); r.code != 0 {
		t.Fatalf("check --read-data after prune ran beside a later backup: exit %d\n%s%s\nprune output:\n%s",
			r.code, r.stdout, r.stderr, strings.Join(pruneOut, "\n"))
	}
	if got := e.must("dump", "latest", "/big.bin"); got != string(big) {
		t.Fatalf("the backup's file restores as %d bytes, not its %d bytes of input", len(got), len(big))
	}
}

// startStoppedAtIndexOpen starts dj with args and stops it (SIGSTOP) as
// soon as it opens an index file; the caller sends SIGCONT.
func (e *env) startStoppedAtIndexOpen(args ...string) *proc {
	e.t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		e.t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(e.repo, "index"), unix.IN_OPEN); err != nil {
		e.t.Fatal(err)
	}
	p, _ := e.start(nil, false, args...)
	// Listing the directory opens the directory itself: an event without
	// a name.
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			e.t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if ev.Len > 0 && ev.Mask&unix.IN_ISDIR == 0 {
				if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					e.t.Fatal(err)
				}
				return p
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// setupUnusedBigFile makes three snapshots of src: s0 with a small file,
// s1 that adds a big file (in packs of its own) and directories that s2
// keeps (so that s1's tree packs stay in use), and s2 without the big file;
// it merges the index into one file (prune) and forgets s1, so that the
// big file's packs are the only unused ones. It returns the big file's
// content and the manifests of s0 and s2.
func (e *env) setupUnusedBigFile(g *treeGen, src string) ([]byte, map[string]manifest) {
	t := e.t
	t.Helper()
	writeFile(t, filepath.Join(src, "keep", "k.txt"), []byte("kept in every snapshot\n"))
	s0 := e.backupSnapshot(src)
	m0 := scanTree(t, src)
	big := g.bytes(20 << 20)
	writeFile(t, filepath.Join(src, "big.bin"), big)
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("newdir%02d", i), fmt.Sprintf("empty%02d", i)), nil)
	}
	s1 := e.backupSnapshot(src)
	if err := os.Remove(filepath.Join(src, "big.bin")); err != nil {
		t.Fatal(err)
	}
	s2 := e.backupSnapshot(src)
	m2 := scanTree(t, src)
	e.must("prune")
	e.must("forget", s1)
	if n := len(filesIn(t, filepath.Join(e.repo, "index"))); n != 1 {
		t.Fatalf("want one index file, have %d", n)
	}
	return big, map[string]manifest{s0: m0, s2: m2}
}

// pruneBesideStopped runs prune --instant-delete while p is stopped and
// reports whether p held its lock (then prune must refuse with exit 11).
func (e *env) pruneBesideStopped(p *proc) {
	t := e.t
	t.Helper()
	locked := len(e.locksLeft()) > 0
	r := e.run("prune", "--json", "--instant-delete", "--max-unused", "100%")
	switch {
	case r.code == 11 && locked:
		t.Logf("dj %s held its lock when it read the index: prune --instant-delete refused (exit 11)", p.args[0])
	case r.code == 0 && !locked:
		var pj pruneJSON
		parseJSON(t, "prune --json", r.stdout, &pj)
		if len(pj.PacksMarked) == 0 {
			t.Fatalf("prune --instant-delete deleted no pack: %+v", pj)
		}
		t.Logf("dj %s read the index before it locked; prune --instant-delete ran meanwhile and deleted %d packs", p.args[0], len(pj.PacksMarked))
	default:
		p.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("prune --instant-delete while dj %s (lock held: %v) was stopped: exit %d\n%s%s", p.args[0], locked, r.code, r.stdout, r.stderr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// TestPruneWhileABackupLoadsTheIndex stops a backup the moment it opens
// the index, runs prune --instant-delete, and resumes the backup, which
// backs up a file whose old copy was in the packs prune deleted. Either the
// backup's lock keeps prune out (exit 11), or the backup must not rely on
// the deleted packs: check passes and the new snapshot restores.
func TestPruneWhileABackupLoadsTheIndex(t *testing.T) {
	g := newTreeGen(t, 62)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	big, want := e.setupUnusedBigFile(g, src)
	writeFile(t, filepath.Join(src, "big.bin"), big)
	m3 := scanTree(t, src)
	before := map[string]bool{}
	for id := range want {
		before[id] = true
	}
	bk := e.startStoppedAtIndexOpen("backup", "--quiet", src)
	e.pruneBesideStopped(bk)
	if res, _ := bk.wait(); res.code != 0 {
		t.Fatalf("backup after the prune: exit %d\n%s", res.code, res.stderr)
	}
	want[e.newSnapshot(before)] = m3
	e.checkAndRestoreAll(src, want)
}
