package integration

// Restore into a target that holds things already: nothing the user has
// below a directory is deleted to make room for a file unless --delete
// asks, and with --delete the target ends up as the snapshot, no more.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRestoreIntoExistingTarget(t *testing.T) {
	requireCmd(t, "rsync")
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	for name, content := range map[string]string{"a/x": "x", "b": "b is a file", "c/d": "d", "e": "e"} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.must("init")
	e.must("backup", "-q", src)

	// The user's target: a directory with their file where the snapshot
	// has the file b, files the snapshot lacks, and a symlink leading out.
	target := filepath.Join(e.dir, "target")
	outside := filepath.Join(e.dir, "outside")
	for name, content := range map[string]string{"b/mine": "mine", "a/extra": "extra", "top-extra": "t"} {
		p := filepath.Join(target, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(target, "c")); err != nil {
		t.Fatal(err)
	}

	r := e.run("restore", "latest:"+src, "--target", target)
	if r.code != 1 || !strings.Contains(r.stderr, "not restored: /b: a non-empty directory is in the way") {
		t.Fatalf("restore over a non-empty directory: exit %d, want 1 naming /b\n%s", r.code, r.stderr)
	}
	for name, want := range map[string]string{"b/mine": "mine", "a/extra": "extra", "top-extra": "t", "a/x": "x", "c/d": "d", "e": "e"} {
		if b, err := os.ReadFile(filepath.Join(target, name)); err != nil || string(b) != want {
			t.Errorf("after a restore without --delete, %s = %q, %v; want %q", name, b, err, want)
		}
	}

	// --dry-run names what --delete would delete and changes nothing.
	dry := e.must("restore", "-v", "--dry-run", "latest:"+src, "--target", target, "--delete")
	if !strings.Contains(dry, "would have deleted /a/extra") || !strings.Contains(dry, "would have deleted /top-extra") {
		t.Errorf("restore --dry-run -v --delete does not name what it would delete:\n%s", dry)
	}
	for name, want := range map[string]string{"b/mine": "mine", "a/extra": "extra", "top-extra": "t"} {
		if b, err := os.ReadFile(filepath.Join(target, name)); err != nil || string(b) != want {
			t.Errorf("after restore --dry-run, %s = %q, %v; want %q", name, b, err, want)
		}
	}

	out := e.must("restore", "--json", "latest:"+src, "--target", target, "--delete")
	var sum map[string]any
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("restore --json: %v\n%s", err, out)
	}
	if sum["files_deleted"] != float64(2) { // a/extra and top-extra; b/ was replaced, not deleted
		t.Errorf("files_deleted = %v, want 2: %s", sum["files_deleted"], out)
	}
	rsync := exec.Command("rsync", "-rlptgoDn", "--checksum", "--delete", "--itemize-changes", src+"/", target+"/")
	rout, err := rsync.CombinedOutput()
	if err != nil {
		t.Fatalf("rsync: %v\n%s", err, rout)
	}
	// The target directory itself is not a node of the snapshot (the
	// restore is of SNAPSHOT:PATH), so its times are the restore's own:
	// rsync's line for a time change of "./" alone is left out.
	var diffs []string
	for _, l := range strings.Split(strings.TrimSpace(string(rout)), "\n") {
		if l != "" && l != ".d..t...... ./" {
			diffs = append(diffs, l)
		}
	}
	if len(diffs) != 0 {
		t.Errorf("after restore --delete the target differs from the source (rsync -n --delete):\n%s", strings.Join(diffs, "\n"))
	}
	if b, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(b) != "precious" {
		t.Errorf("outside the target: precious = %q, %v", b, err)
	}

	// --overwrite never keeps the user's edit; the default replaces it.
	if err := os.WriteFile(filepath.Join(target, "e"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = e.must("restore", "--json", "latest:"+src, "--target", target, "--overwrite", "never")
	sum = nil
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("restore --json: %v\n%s", err, out)
	}
	if sum["files_skipped"] != float64(4) || sum["files_restored"] != float64(0) {
		t.Errorf("--overwrite never over a full target: %s, want 4 files skipped, none restored", out)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "e")); string(b) != "edited" {
		t.Errorf("--overwrite never: e = %q, want the user's edit", b)
	}
	e.must("restore", "latest:"+src, "--target", target)
	if b, _ := os.ReadFile(filepath.Join(target, "e")); string(b) != "e" {
		t.Errorf("restore (--overwrite always): e = %q, want the snapshot's", b)
	}
	if r := e.run("restore", "latest:"+src, "--target", target, "--overwrite", "sometimes"); r.code != 1 || !strings.Contains(r.stderr, "invalid --overwrite") {
		t.Errorf("--overwrite sometimes: exit %d, %s", r.code, r.stderr)
	}
}
