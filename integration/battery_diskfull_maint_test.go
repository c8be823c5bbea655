package integration

// The disk-full battery beyond backup and restore (issue 12): prune and
// repack on a repository whose disk fills up, a cache directory with no
// room, and dj serve on a full disk. Each must fail in one line naming the
// lack of space (or, for the cache, carry on), delete nothing it still
// needs, and leave a repository that checks and completes the job once
// space is back.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fillDisk fills the file system of dir until at most leave bytes are
// free, and returns a function that frees the space again.
func fillDisk(t *testing.T, dir string, leave int64) func() {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	p := filepath.Join(dir, fmt.Sprintf("filler-%d", time.Now().UnixNano()))
	if free > leave {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Fallocate(int(f.Fd()), 0, 0, free-leave); err != nil {
			f.Close()
			t.Fatalf("fallocate %d bytes: %v", free-leave, err)
		}
		f.Close()
	}
	return func() { os.Remove(p) }
}

// onSmallDisk points e's repository at a fresh tmpfs of size bytes and
// returns the tmpfs's directory.
func onSmallDisk(t *testing.T, e *env, size int64) string {
	t.Helper()
	disk := filepath.Join(e.dir, "disk")
	smallFS(t, disk, size)
	e.repo = filepath.Join(disk, "repo")
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY="+e.repo)
	return disk
}

// oneLineNoSpace fails the test unless res failed with one line of error
// that names the lack of space (the local "no space left on device", or
// a server's "disk is full").
func oneLineNoSpace(t *testing.T, what string, res result) {
	t.Helper()
	msg := strings.ToLower(res.stderr)
	if res.code == 0 || !strings.Contains(msg, "no space left") && !strings.Contains(msg, "disk is full") {
		t.Fatalf("%s on a full disk: exit %d, stderr %q", what, res.code, res.stderr)
	}
	if lines := strings.Count(strings.TrimSpace(res.stderr), "\n"); lines > 0 {
		t.Errorf("%s on a full disk: the error is %d lines:\n%s", what, lines+1, res.stderr)
	}
	t.Logf("%s on a full disk: exit %d: %s", what, res.code, strings.TrimSpace(res.stderr))
}

// packCount counts the pack files of a local repository.
func packCount(t *testing.T, repo string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(repo, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.Contains(d.Name(), "tmp") {
			n++
		}
		return nil
	})
	return n
}

// TestBatteryDiskFullPrune: a prune that must repack half-used packs on a
// full disk fails in one line, removes nothing the kept snapshot needs,
// and completes once space is back.
func TestBatteryDiskFullPrune(t *testing.T) {
	e := newEnv(t)
	disk := onSmallDisk(t, e, 64<<20)
	e.must("init")
	g := newTreeGen(t, 43)
	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 12<<20)
	first := e.backupSnapshot(src)
	_, files := g.entries(src)
	for i, f := range files {
		if i%2 == 0 {
			os.Remove(filepath.Join(src, f))
		}
	}
	g.addFiles(filepath.Join(src, "new"), 2<<20)
	second := e.backupSnapshot(src)
	want := scanTree(t, src)
	e.must("forget", first)
	packsBefore := packCount(t, e.repo)

	free := fillDisk(t, disk, 32<<10)
	res := e.run("prune", "--max-unused", "0")
	oneLineNoSpace(t, "prune", res)
	if snaps := e.snapshots(); len(snaps) != 1 || snaps[0].ID != second {
		t.Fatalf("after the failed prune the snapshots are %v, want only %s", snaps, second[:8])
	}
	if n := packCount(t, e.repo); n < packsBefore {
		t.Errorf("the failed prune removed packs: %d before, %d after", packsBefore, n)
	}
	// Still on the full disk: the kept snapshot restores whole.
	e.restoreMatches(second, src, want)

	free()
	e.must("unlock")
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check after the failed prune: exit %d %v", code, problems)
	}
	e.must("prune", "--max-unused", "0")
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check after the prune: exit %d %v", code, problems)
	}
	e.restoreMatches(second, src, want)
	recordReliability(t, "disk-full", []string{"command", "full", "answer", "after"},
		"prune (repacking half-used packs)", "repository", fmt.Sprintf("exit %d, one line naming the lack of space; no pack removed, the kept snapshot restores", res.code),
		"check --read-data passes; prune completes; snapshot restores")
}

// TestBatteryDiskFullRepack: repack of many small packs on a full disk
// fails in one line and deletes no pack; with space back it completes.
func TestBatteryDiskFullRepack(t *testing.T) {
	e := newEnv(t)
	disk := onSmallDisk(t, e, 48<<20)
	e.must("init")
	g := newTreeGen(t, 47)
	var snaps []string
	var srcs []string
	var wants []manifest
	for i := range 8 {
		src := filepath.Join(e.dir, fmt.Sprintf("src%d", i))
		g.addFiles(src, 1<<20)
		snaps = append(snaps, e.backupSnapshot(src))
		srcs = append(srcs, src)
		wants = append(wants, scanTree(t, src))
	}
	packsBefore := packCount(t, e.repo)
	free := fillDisk(t, disk, 32<<10)
	res := e.run("repack")
	oneLineNoSpace(t, "repack", res)
	if n := packCount(t, e.repo); n < packsBefore {
		t.Errorf("the failed repack removed packs: %d before, %d after", packsBefore, n)
	}
	e.restoreMatches(snaps[3], srcs[3], wants[3])

	free()
	e.must("unlock")
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check after the failed repack: exit %d %v", code, problems)
	}
	e.must("repack", "--instant-delete")
	after := packCount(t, e.repo)
	if after >= packsBefore {
		t.Errorf("repack with space left %d packs of %d", after, packsBefore)
	}
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check after the repack: exit %d %v", code, problems)
	}
	for i := range snaps {
		e.restoreMatches(snaps[i], srcs[i], wants[i])
	}
	recordReliability(t, "disk-full", []string{"command", "full", "answer", "after"},
		"repack (8 small packs)", "repository", fmt.Sprintf("exit %d, one line naming the lack of space; no pack removed", res.code),
		fmt.Sprintf("check --read-data passes; repack completes (%d packs to %d); snapshots restore", packsBefore, after))
}

// TestBatteryDiskFullCache: a cache directory on a full disk makes a
// remote repository slower, never unusable: backup, snapshots, ls, find,
// diff and restore work and return the right data.
func TestBatteryDiskFullCache(t *testing.T) {
	e := newEnv(t)
	url := e.serve()
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url)
	cacheDisk := filepath.Join(e.dir, "cachedisk")
	smallFS(t, cacheDisk, 1<<20)
	fillDisk(t, cacheDisk, 0)
	e.extraEnv = append(e.extraEnv, "DJ_CACHE_DIR="+filepath.Join(cacheDisk, "cache"))
	e.must("init")
	g := newTreeGen(t, 53)
	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 3<<20)
	first := e.backupSnapshot(src)
	g.addFiles(filepath.Join(src, "more"), 1<<20)
	second := e.backupSnapshot(src)
	want := scanTree(t, src)
	for _, args := range [][]string{{"snapshots"}, {"ls", second}, {"find", "*"}, {"diff", first, second}} {
		res := e.run(args...)
		if res.code != 0 {
			t.Fatalf("%s with a full cache disk: exit %d: %s", args[0], res.code, res.stderr)
		}
		if s := strings.TrimSpace(res.stderr); s != "" {
			t.Logf("%s with a full cache disk: %s", args[0], s)
		}
		if n := strings.Count(strings.TrimSpace(res.stderr), "\n"); n > 1 {
			t.Errorf("%s with a full cache disk says %d lines:\n%s", args[0], n+1, res.stderr)
		}
	}
	e.restoreMatches(second, src, want)
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check: exit %d %v", code, problems)
	}
	// The control: with room, the same commands fill a cache, so the full
	// one was really in the way.
	roomy := filepath.Join(e.dir, "roomy-cache")
	if res := e.runEnv([]string{"DJ_CACHE_DIR=" + roomy}, "ls", second); res.code != 0 {
		t.Fatalf("ls with a cache that has room: %s", res.stderr)
	}
	var cached int
	filepath.WalkDir(roomy, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			cached++
		}
		return nil
	})
	if cached == 0 {
		t.Fatal("dj ls wrote nothing to a cache with room: the test does not test the cache")
	}
	recordReliability(t, "disk-full", []string{"command", "full", "answer", "after"},
		"backup, snapshots, ls, find, diff, restore, check", "cache directory (rest: repository)", "every command succeeds with the right data",
		"—")
}

// TestBatteryDiskFullServe: dj serve on a full disk answers 507; the
// client's backup fails in one line naming the lack of space, soon (the
// retry layer does not retry it for minutes), and leaves no snapshot and
// no temporary file on the server; with space back it completes.
func TestBatteryDiskFullServe(t *testing.T) {
	e := newEnv(t)
	disk := filepath.Join(e.dir, "served")
	smallFS(t, disk, 32<<20)
	url := e.serve()
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url)
	e.must("init")
	g := newTreeGen(t, 59)
	small := filepath.Join(e.dir, "small")
	g.addFiles(small, 1<<20)
	first := e.backupSnapshot(small)
	big := filepath.Join(e.dir, "big")
	g.addFiles(big, 8<<20)
	free := fillDisk(t, disk, 256<<10)
	start := time.Now()
	res := e.run("backup", big)
	took := time.Since(start)
	oneLineNoSpace(t, "backup to dj serve", res)
	if took > 60*time.Second {
		t.Errorf("the backup took %s to give up on a full server", took.Round(time.Second))
	}
	if snaps := e.snapshots(); len(snaps) != 1 || snaps[0].ID != first {
		t.Fatalf("a backup to a full server left snapshots %v", snaps)
	}
	var temps []string
	filepath.WalkDir(disk, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.Contains(d.Name(), "tmp") || strings.HasPrefix(d.Name(), ".")) {
			temps = append(temps, p)
		}
		return nil
	})
	if len(temps) > 0 {
		t.Errorf("the full server kept temporary files: %v", temps)
	}

	free()
	e.must("unlock")
	second := e.backupSnapshot(big)
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check after the full server: exit %d %v", code, problems)
	}
	e.restoreMatches(second, big, scanTree(t, big))
	recordReliability(t, "disk-full", []string{"command", "full", "answer", "after"},
		"backup to dj serve", "server's disk", fmt.Sprintf("507 from the server; exit %d after %s, one line naming the lack of space; no snapshot, no temporary file", res.code, took.Round(100*time.Millisecond)),
		"check --read-data passes; backup completes")
}
