package integration

// The disk-full battery (issue 12): a repository, and a restore's target,
// on a small tmpfs that fills up. dj must say so in one line, write no
// partial snapshot, and leave a repository that checks once space is back.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// smallFS mounts a tmpfs of size bytes at dir until the test ends.
func smallFS(t *testing.T, dir string, size int64) {
	t.Helper()
	requireRoot(t)
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// TestBatteryDiskFull: a backup of more than fits fails with "no space
// left" and writes no snapshot; once space is freed, check --read-data
// passes, the earlier snapshot restores, and the backup completes. A
// restore into a full target names the lack of space and exits non-zero.
func TestBatteryDiskFull(t *testing.T) {
	e := newEnv(t)
	disk := filepath.Join(e.dir, "disk")
	smallFS(t, disk, 48<<20)
	e.repo = filepath.Join(disk, "repo")
	for i, kv := range e.extraEnv {
		if strings.HasPrefix(kv, "DJ_REPOSITORY=") {
			e.extraEnv[i] = "DJ_REPOSITORY=" + e.repo
		}
	}
	e.must("init")
	g := newTreeGen(t, 31)
	small := filepath.Join(e.dir, "small")
	g.addFiles(small, 4<<20)
	first := e.backupSnapshot(small)
	want := scanTree(t, small)
	// A filler takes most of what is left, so the next backup runs out.
	filler := filepath.Join(disk, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=30").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	big := filepath.Join(e.dir, "big")
	g.addFiles(big, 24<<20)

	rows := [][]string{}
	res := e.run("backup", big)
	if res.code == 0 || !strings.Contains(strings.ToLower(res.stderr), "no space left") {
		t.Fatalf("backup onto a full disk: exit %d, stderr %q", res.code, res.stderr)
	}
	if lines := strings.Count(strings.TrimSpace(res.stderr), "\n"); lines > 0 {
		t.Errorf("the error is %d lines:\n%s", lines+1, res.stderr)
	}
	if snaps := e.snapshots(); len(snaps) != 1 || snaps[0].ID != first {
		t.Fatalf("a backup onto a full disk left snapshots %v", snaps)
	}
	t.Logf("backup onto a full disk: exit %d: %s", res.code, strings.TrimSpace(res.stderr))
	rows = append(rows, []string{"backup", "repository", fmt.Sprintf("exit %d, one line naming the lack of space", res.code), "no snapshot written"})

	// Space again: the repository checks, the first snapshot restores, the
	// backup completes.
	os.Remove(filler)
	e.must("unlock")
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check after the disk was full: exit %d %v", code, problems)
	}
	e.restoreMatches(first, small, want)
	second := e.backupSnapshot(big)
	e.restoreMatches(second, big, scanTree(t, big))
	rows = append(rows, []string{"backup", "repository, space freed", "check --read-data passes; backup completes", "snapshots restore"})

	// A restore into a full target.
	target := filepath.Join(e.dir, "target")
	smallFS(t, target, 8<<20)
	res = e.run("restore", second, "--target", target)
	if res.code == 0 || !strings.Contains(strings.ToLower(res.stderr), "no space left") {
		t.Fatalf("restore into a full target: exit %d, stderr %q", res.code, lastLine(res.stderr))
	}
	t.Logf("restore into a full target: exit %d: %s", res.code, lastLine(res.stderr))
	rows = append(rows, []string{"restore", "target", fmt.Sprintf("exit %d, naming the lack of space", res.code), "repository checks"})
	if code, _, _ := e.checkJSON(); code != 0 {
		t.Fatalf("check after the failed restore: exit %d", code)
	}
	for _, r := range rows {
		recordReliability(t, "disk-full", []string{"command", "full", "answer", "after"}, r...)
	}
}
