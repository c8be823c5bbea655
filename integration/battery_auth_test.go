package integration

// The authentication battery (issue 12): a change to any stored byte of a
// repository is detected, and a blob, pack, index, snapshot or key copied
// in from another repository (another master key) is rejected.

import (
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/repo/pack"
)

// authSource writes a small source tree: a repository of a few KiB.
func authSource(t *testing.T, dir string) string {
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("hello, authentication\n"))
	writeFile(t, filepath.Join(src, "sub", "b.bin"), []byte(strings.Repeat("0123456789", 50)))
	return src
}

func TestBatteryAuthentication(t *testing.T) {
	t.Run("flipped bytes", testAuthFlips)
	t.Run("foreign objects", testAuthForeign)
}

// testAuthFlips flips each byte of every file of a small repository in
// turn (the short form a sample of them) and runs check --read-data: each
// change must be reported.
func testAuthFlips(t *testing.T) {
	e := newEnv(t)
	src := authSource(t, e.dir)
	e.must("init")
	e.must("backup", src)
	type pos struct {
		file string
		off  int
	}
	var all []pos
	var files []string
	for _, folder := range []string{"config", "keys", "index", "snapshots", "data"} {
		for _, p := range repoFiles(t, e.repo, folder) {
			files = append(files, p)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < int(fi.Size()); off++ {
				all = append(all, pos{p, off})
			}
		}
	}
	tries := all
	if !stressMode() {
		// The first and last byte of every file, and a random sample.
		rng := mrand.New(mrand.NewPCG(1, 2))
		tries = nil
		for _, p := range files {
			fi, _ := os.Stat(p)
			tries = append(tries, pos{p, 0}, pos{p, int(fi.Size()) - 1})
		}
		for i := 0; i < 6; i++ {
			tries = append(tries, all[rng.IntN(len(all))])
		}
	}
	timeout := 60 * time.Second
	perFolder := map[string][2]int{}
	for _, tr := range tries {
		b, err := os.ReadFile(tr.file)
		if err != nil {
			t.Fatal(err)
		}
		orig := append([]byte(nil), b...)
		b[tr.off] ^= 0x01
		writeRepoFile(t, tr.file, b)
		r := e.runBounded(timeout, nil, "check", "--read-data")
		writeRepoFile(t, tr.file, orig)
		assertSane(t, fmt.Sprintf("flip %s at %d", tr.file, tr.off), r)
		rel, _ := filepath.Rel(e.repo, tr.file)
		folder := strings.SplitN(rel, "/", 2)[0]
		n := perFolder[folder]
		n[0]++
		if r.code != 0 {
			n[1]++
		} else {
			t.Errorf("a flipped bit in %s at offset %d was not detected by check --read-data:\n%s", rel, tr.off, r.stdout)
		}
		perFolder[folder] = n
	}
	if r := e.runBounded(timeout, nil, "check", "--read-data"); r.code != 0 {
		t.Fatalf("the repository does not check after the flips were undone: %s", r.answer())
	}
	for _, folder := range []string{"config", "keys", "index", "snapshots", "data"} {
		n := perFolder[folder]
		recordReliability(t, "authentication", []string{"what", "tries", "detected", "how"},
			"one bit flipped in "+folder, fmt.Sprint(n[0]), fmt.Sprint(n[1]), "check --read-data exits non-zero")
	}
}

// testAuthForeign copies objects of repository B (same password, another
// master key) into repository A.
func testAuthForeign(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	src := authSource(t, a.dir)
	want := sourceHashes(t, src)
	for _, e := range []*env{a, b} {
		e.must("init")
		e.must("backup", src)
	}
	timeout := 60 * time.Second
	cases := []struct {
		name string
		// copyIn puts B's object into A; it returns what to look for.
		copyIn func(t *testing.T, a, b *env)
		// snapshotsOK: A's own snapshot must still restore intact.
		snapshotsOK bool
		// answer is how check must answer: "error" (exit code not 0),
		// or "warning" (a warning naming what was found).
		answer string
	}{
		{"snapshot file", func(t *testing.T, a, b *env) { copyFolder(t, b, a, "snapshots", "") }, true, "error"},
		{"index file", func(t *testing.T, a, b *env) { copyFolder(t, b, a, "index", "") }, false, "error"},
		// Packs no index names are never read; check names each as a
		// pack whose header does not open (restic too only warns about
		// packs outside the index).
		{"packs", func(t *testing.T, a, b *env) { copyFolder(t, b, a, "data", "") }, true, "warning"},
		// A key that opens with the password, named to be tried first:
		// the repository still opens with its own key, and check names
		// the file (its name is not its hash).
		{"key file", func(t *testing.T, a, b *env) { copyFolder(t, b, a, "keys", "0000") }, true, "error"},
		{"blob", func(t *testing.T, a, b *env) {
			// A blob sealed with B's key under the id A gives its
			// plaintext, and a snapshot of A whose file uses it.
			plain := []byte("a blob from another repository")
			rb := b.openRaw()
			keyB := rb.r.Key()
			rb.done()
			ra := a.openRaw()
			id := ra.r.BlobID(plain)
			sealed := pack.SealBlob(keyB, nil, pack.DataBlob, id, plain)
			if err := ra.r.CopySealedBlob(ra.ctx, pack.Blob{Type: pack.DataBlob, ID: id, Length: uint32(len(sealed)), PlainLength: uint32(len(plain))}, sealed); err != nil {
				t.Fatal(err)
			}
			ra.snapshot(ra.tree(rawFile("foreign", uint64(len(plain)), id)), "/foreign")
			ra.done()
		}, true, "error"},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			e := newEnv(t)
			shell(t, fmt.Sprintf("cp -a %q %q", a.repo, e.repo))
			own := e.snapshots()
			c.copyIn(t, e, b)
			chk := e.runBounded(timeout, nil, "check", "--read-data")
			assertSane(t, c.name+": check", chk)
			detected := false
			switch c.answer {
			case "error":
				detected = chk.code != 0
			case "warning":
				out := chk.stdout + chk.stderr
				detected = strings.Contains(out, "warning:") && strings.Contains(out, "cannot be read")
			}
			if !detected {
				t.Errorf("%s copied in from another repository: check does not answer with %s:\n%s%s", c.name, c.answer, chk.stdout, chk.stderr)
			}
			answer := chk.answer()
			if c.snapshotsOK {
				target := filepath.Join(e.dir, "restore")
				r := e.runBounded(timeout, nil, "restore", own[0].ID, "--target", target)
				assertSane(t, c.name+": restore", r)
				if r.code != 0 {
					t.Errorf("%s copied in from another repository: the repository's own snapshot does not restore: %s", c.name, r.answer())
				}
				compareRestore(t, c.name, filepath.Join(target, src), want, r)
				answer += "; own snapshot: restore " + r.answer()
			}
			if c.name == "blob" {
				r := e.runBounded(timeout, nil, "dump", "latest", "/foreign")
				assertSane(t, "blob: dump", r)
				if r.code == 0 {
					t.Errorf("a blob sealed by another repository's key was read: %q", r.stdout)
				}
				answer += "; dump of its file: " + r.answer()
			}
			recordReliability(t, "authentication", []string{"what", "tries", "detected", "how"},
				c.name+" copied in from another repository", "1", map[bool]string{true: "1", false: "0"}[detected], c.answer+": "+answer)
		})
	}
}

// copyFolder copies every file of a folder of from's repository into
// to's, each name with its start replaced by prefix.
func copyFolder(t *testing.T, from, to *env, folder, prefix string) {
	t.Helper()
	for _, p := range repoFiles(t, from.repo, folder) {
		rel, _ := filepath.Rel(from.repo, p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(to.repo, filepath.Dir(rel), prefix+filepath.Base(rel)[len(prefix):])
		os.MkdirAll(filepath.Dir(dst), 0o700)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
