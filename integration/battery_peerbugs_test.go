package integration

// The data-loss bugs restic, kopia, borg and rest-server shipped
// (../shared/research/reliability.md, sections 1.3, 2.3, 3.3 and 4), each
// with the test showing that dj does not have it: a subtest here, or the
// existing dj test that covers it precisely. Bugs of features dj lacks and
// Windows-only ones are listed as skipped, with the reason. Every row goes
// to the "peer-bugs" section of RELIABILITY.md.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// peerBug is one shipped bug and dj's answer to it.
type peerBug struct {
	bug  string // project and issue
	what string // what happened there
	dj   string // what dj does
	test string // the test that shows it (a subtest here when run is set)
	run  func(t *testing.T)
	skip string // why there is no test (Windows-only, a feature dj lacks)
}

// peerEnv is a local repository with two snapshots of a small tree.
type peerEnv struct {
	*env
	src   string // a copy of the base's source, for new backups
	want  map[string]manifest
	srcOf map[string]string // the source directory of each snapshot
	ids   []string          // the base's two snapshots
}

// add expects snapshot id, of p.src, to restore as m.
func (p *peerEnv) add(id string, m manifest) {
	p.want[id], p.srcOf[id] = m, p.src
}

// peerBase is the repository every peerEnv starts from, made once.
var peerBase struct {
	once sync.Once
	e    *env
	src  string
	want map[string]manifest
	ids  []string
}

// newPeerEnv returns a copy of a repository with two snapshots of a
// small tree (made once per test binary, in a directory of its own).
func newPeerEnv(t *testing.T) *peerEnv {
	peerBase.once.Do(func() {
		dir, err := os.MkdirTemp("", "dj-peerbase-")
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, bin: djBinary(t), repo: filepath.Join(dir, "repo"), dir: dir, password: "correct horse"}
		pw := filepath.Join(dir, "password")
		os.WriteFile(pw, []byte(e.password+"\n"), 0o600)
		e.extraEnv = []string{"DJ_REPOSITORY=" + e.repo, "DJ_PASSWORD_FILE=" + pw, "DJ_INSECURE_TEST_KDF=1"}
		e.must("init")
		peerBase.e, peerBase.src, peerBase.want = e, filepath.Join(dir, "src"), map[string]manifest{}
		g := newTreeGen(t, 31)
		g.addFiles(peerBase.src, 768<<10)
		for i := 0; i < 2; i++ {
			if i > 0 {
				g.mutate(peerBase.src, 256<<10)
			}
			m := scanTree(t, peerBase.src)
			id := e.backupSnapshot(peerBase.src)
			peerBase.want[id] = m
			peerBase.ids = append(peerBase.ids, id)
		}
	})
	if peerBase.e == nil {
		t.Fatal("the base repository could not be made")
	}
	e := newEnv(t)
	p := &peerEnv{env: e, src: filepath.Join(e.dir, "src"), want: map[string]manifest{}, srcOf: map[string]string{}, ids: peerBase.ids}
	for _, cp := range [][2]string{{peerBase.e.repo, e.repo}, {peerBase.src, p.src}} {
		if out, err := exec.Command("cp", "-a", cp[0], cp[1]).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
	}
	// The snapshots name the base's source directory: restore compares
	// below it, and new backups of p.src are compared below p.src.
	for id, m := range peerBase.want {
		p.want[id], p.srcOf[id] = m, peerBase.src
	}
	return p
}

// verify checks the repository without faults and restores every
// snapshot of want.
func (p *peerEnv) verify() {
	p.t.Helper()
	if r := p.run("check", "--read-data"); r.code != 0 {
		p.t.Fatalf("check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	snaps := p.snapshots()
	if len(snaps) != len(p.want) {
		p.t.Fatalf("the repository holds %d snapshots, want %d", len(snaps), len(p.want))
	}
	for _, s := range snaps {
		m, ok := p.want[s.ID]
		if !ok {
			p.t.Fatalf("unexpected snapshot %s", s.ShortID)
		}
		p.restoreMatches(s.ID, p.srcOf[s.ID], m)
	}
}

// faults runs dj under a DJ_TEST_FAULTS script.
func (p *peerEnv) faults(spec string, args ...string) result {
	p.t.Helper()
	r := p.runEnv([]string{"DJ_TEST_FAULTS=seed=1,delay=1ms;" + spec}, args...)
	cleanFailure(p.t, strings.Join(args, " "), r)
	return r
}

var peerBugs = []peerBug{
	// restic (reliability.md 1.3)
	{bug: "restic #4612", what: "rclone turned a listing error into an empty list; prune saw no snapshots and wiped the repository",
		dj:   "prune refuses (ErrSuspectListing) when no snapshot is listed while the index names packs, when indexed packs are missing from the pack listing, or when no index is listed and packs would go as unindexed; a short (non-empty) snapshot listing cannot be told from forgotten snapshots: the two-phase delete keeps the packs it marks for --keep-delete and the next prune restores them, and --instant-delete lists the snapshots twice and refuses if they differ (a storage that always lists short defeats only --instant-delete)",
		test: "TestBatteryPeerBugs/restic-4612 (e2e, --instant-delete), maint TestPruneRefusesSuspectListings, TestBatteryFaults emptylist modes",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			for _, spec := range []string{"mode=emptylist,types=snapshots,nth=1,every=1", "mode=emptylist,types=snapshots+index,nth=1,every=1",
				"mode=emptylist,types=data,nth=1,every=1", "mode=shortlist,types=data,after=1,nth=1,every=1"} {
				before := countFiles(t, filepath.Join(p.repo, "data"))
				r := p.faults(spec, "prune", "--instant-delete", "--max-unused", "0")
				if r.code == 0 || !strings.Contains(r.stderr, "looks incomplete") {
					t.Errorf("prune with %s: exit %d, %s; want a refusal", spec, r.code, lastLine(r.stderr))
				}
				if n := countFiles(t, filepath.Join(p.repo, "data")); n != before {
					t.Errorf("prune with %s: packs %d -> %d", spec, before, n)
				}
			}
			// A short snapshot listing looks like forgotten snapshots: a
			// plain prune only marks their packs, and the next prune
			// brings them back; --instant-delete lists twice.
			r := p.faults("mode=shortlist,types=snapshots,after=1,nth=1", "prune", "--instant-delete", "--max-unused", "0")
			if r.code == 0 || !strings.Contains(r.stderr, "looks incomplete") {
				t.Errorf("prune --instant-delete with one short snapshot listing: exit %d, %s; want a refusal", r.code, lastLine(r.stderr))
			}
			if r := p.faults("mode=shortlist,types=snapshots,after=1,nth=1,every=1", "prune", "--max-unused", "0"); r.code != 0 {
				t.Fatalf("prune with short snapshot listings: exit %d", r.code)
			}
			p.must("prune")
			p.must("prune", "--keep-delete", "0s")
			p.verify()
		}},
	{bug: "restic #1351", what: "a retried Save re-read only the rest of a consumed reader and stored a truncated file",
		dj:   "Save takes the whole file as bytes; a retry sends all of them again and replaces what a failed attempt left",
		test: "TestBatteryPeerBugs/restic-1351 (every other save stores half and fails), backend/fault TestSpecModes/halfsave",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			g := newTreeGen(t, 32)
			g.mutate(p.src, 512<<10)
			m := scanTree(t, p.src)
			r := p.faults("mode=halfsave,types=data+index+snapshots,nth=1,every=2", "-v", "backup", p.src)
			if r.code != 0 || !strings.Contains(r.stderr, "connection lost after") {
				t.Fatalf("backup with half saves: exit %d, half saves seen %v\n%s", r.code, strings.Contains(r.stderr, "connection lost after"), tail(r.stderr, 5))
			}
			p.add(p.snapshots()[2].ID, m)
			p.verify()
		}},
	{bug: "restic #3161", what: "B2 kept several versions after upload retries; a delete removed one and the file came back",
		dj:   "dj writes no versions of its own and deletes by name; a save repeated after a lost answer, then deleted, stays deleted (on S3 with versioning, a delete leaves a delete marker)",
		test: "TestBatteryPeerBugs/restic-3161 (S3: saves whose answers are lost, then prune)",
		run: func(t *testing.T) {
			e, _, _ := s3Env(t)
			src := filepath.Join(e.dir, "src")
			newTreeGen(t, 33).addFiles(src, 512<<10)
			r := e.runEnv([]string{"DJ_TEST_FAULTS=seed=1,delay=1ms;mode=lostreply,ops=save,types=data+index+snapshots,rate=0.5"}, "backup", src)
			if r.code != 0 {
				t.Fatalf("backup: exit %d\n%s", r.code, tail(r.stderr, 5))
			}
			e.must("forget", e.snapshots()[0].ID, "--prune", "--instant-delete")
			if out := e.must("list", "packs"); strings.TrimSpace(out) != "" {
				t.Errorf("packs left after forgetting the only snapshot:\n%s", out)
			}
			if out := e.must("check"); strings.Contains(out, "not in any index") {
				t.Errorf("a deleted pack came back:\n%s", out)
			}
		}},
	{bug: "restic #3079", what: "a failed upload left a half-size newer version of a file",
		dj:   "a pack whose upload failed for good is named by no index: no snapshot refers to it, check warns of it, prune deletes it; the next backup writes everything again",
		test: "TestBatteryPeerBugs/restic-3079",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			newTreeGen(t, 34).mutate(p.src, 512<<10)
			m := scanTree(t, p.src)
			r := p.runEnv([]string{"DJ_TEST_FAULTS=seed=1,delay=1ms;mode=halfsave,types=data,nth=1,every=1"}, "backup", p.src)
			if r.code == 0 {
				t.Fatal("backup succeeded although every attempt of its first pack failed")
			}
			cleanFailure(t, "backup", r)
			if n := len(p.snapshots()); n != 2 {
				t.Fatalf("%d snapshots after the failed backup, want 2", n)
			}
			p.verify()
			p.must("prune", "--instant-delete")
			p.add(p.backupSnapshot(p.src), m)
			p.verify()
		}},
	{bug: "restic #3268", what: "a provider returned corrupted downloads now and then",
		dj:   "a file or blob whose download does not verify is downloaded once more before it counts as damaged (repo.loadFile, loadPacked, CopyBlobs, key files)",
		test: "TestBatteryPeerBugs/restic-3268 (first downloads flipped or short), repo TestLoadRetriesCorruptDownload, TestCopyBlobsRetriesCorruptDownload",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			target := filepath.Join(p.dir, "r")
			// The first download of each type comes back corrupted, and
			// the third data one (restore reads in parallel).
			r := p.faults("mode=flip,types=data+index+snapshots+keys,nth=1;mode=shortread,types=data,nth=3", "restore", p.ids[1], "--target", target)
			if r.code != 0 {
				t.Fatalf("restore with corrupted downloads: exit %d\n%s", r.code, tail(r.stderr, 5))
			}
			if d := manifestDiff(p.want[p.ids[1]], scanTree(t, filepath.Join(target, peerBase.src))); len(d) > 0 {
				t.Fatalf("restore differs:\n  %s", strings.Join(d, "\n  "))
			}
		}},
	{bug: "restic #3486, #2715", what: "a lock that was not refreshed let another host's prune remove in-flight data",
		dj:   "a process whose lock went unrefreshed too long refuses to write an index or snapshot (repo.ErrLockLost); prune keeps packs younger than a live writer lock",
		test: "repo TestLockLostStopsWrites, maint TestPruneUnindexedPacksOfRunningBackup, TestPruneResurrectsPacksANewSnapshotNeeds"},
	{bug: "restic #4523, #4677", what: "a zstd bug corrupted data at the highest compression",
		dj:   "every blob is opened, decompressed and compared with its plaintext before its pack is uploaded (restic #4529's fix)",
		test: "TestBatteryPeerBugs/restic-4523 (backup at --compression best, check --read-data), repo TestVerifySealed",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			newTreeGen(t, 35).mutate(p.src, 512<<10)
			m := scanTree(t, p.src)
			p.add(p.backupSnapshot("--compression", "best", p.src), m)
			p.verify()
		}},
	{bug: "restic #3151", what: "an interrupted backup saved a snapshot with a null tree",
		dj:   "a snapshot is written only after its tree and every pack and index are stored; an interrupted backup writes none",
		test: "TestBatteryPeerBugs/restic-3151 (SIGINT during backup)",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			big := filepath.Join(p.dir, "big")
			newTreeGen(t, 36).addFiles(big, 16<<20)
			for _, after := range []time.Duration{30 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond} {
				cmd := exec.Command(p.bin, "backup", big)
				cmd.Env = append(cleanEnv(), p.extraEnv...)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(after)
				cmd.Process.Signal(syscall.SIGINT)
				cmd.Wait()
				for _, s := range p.snapshots() {
					if _, ok := p.want[s.ID]; !ok {
						p.want[s.ID] = scanTree(t, big) // a backup that finished first must be whole
						p.restoreMatches(s.ID, big, p.want[s.ID])
						delete(p.want, s.ID)
						p.must("forget", s.ID)
					}
				}
			}
			p.must("unlock")
			if r := p.run("check", "--read-data"); r.code != 0 {
				t.Fatalf("check after interrupted backups: exit %d\n%s", r.code, r.stdout)
			}
			p.verify()
		}},
	{bug: "restic #1589", what: "a backup finished while an intermediate index upload was cancelled: data not indexed",
		dj:   "FlushPacks waits for every upload and the index is written before the snapshot; a failed index save fails the backup",
		test: "TestBatteryPeerBugs/restic-1589 (index saves fail and are retried, or fail for good)",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			newTreeGen(t, 37).mutate(p.src, 512<<10)
			m := scanTree(t, p.src)
			r := p.faults("mode=error,types=index,nth=1,every=1,times=3", "backup", p.src)
			if r.code != 0 {
				t.Fatalf("backup with failing index saves: exit %d\n%s", r.code, tail(r.stderr, 5))
			}
			p.add(p.snapshots()[2].ID, m)
			newTreeGen(t, 38).mutate(p.src, 256<<10)
			r = p.runEnv([]string{"DJ_TEST_FAULTS=seed=1,delay=1ms;mode=error,types=index,nth=1,every=1"}, "backup", p.src)
			if r.code == 0 {
				t.Fatal("backup succeeded although no index could be saved")
			}
			cleanFailure(t, "backup", r)
			p.verify() // check --read-data passes: the packs without index are only warned of
		}},
	{bug: "restic #21820 (0.19)", what: "split index entries for one pack were lost when the index was rewritten",
		dj:   "the index is a set of blob entries whatever file holds them: with every pack's entries split over two index files, check --read-data passes, and after a prune (which rewrites the index) and a repair index every snapshot still restores",
		test: "TestBatteryPeerBugs/restic-21820",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			rr := p.openRaw()
			if n := rr.splitIndex(); n == 0 {
				t.Fatal("no pack had two entries to split")
			}
			rr.done()
			if n := countFiles(t, filepath.Join(p.repo, "index")); n != 2 {
				t.Fatalf("%d index files after the split, want 2", n)
			}
			p.verify()
			// forget the older snapshot: prune deletes and repacks what
			// only it used, and writes the index again.
			p.must("forget", p.ids[0])
			delete(p.want, p.ids[0])
			p.must("prune", "--max-unused", "0", "--instant-delete")
			p.verify()
			rr = p.openRaw()
			rr.splitIndex()
			rr.done()
			p.must("repair", "index")
			p.verify()
		}},
	{bug: "restic #5467", what: "check reported damage from a first bad download that a retry fixed",
		dj:   "check --read-data reads a damaged-looking pack once more and reports the second read, with a warning quoting the first error",
		test: "TestBatteryPeerBugs/restic-5467",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			r := p.faults("mode=flip,types=data,nth=1", "check", "--read-data")
			if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "a second read was sound") {
				t.Fatalf("check --read-data with one corrupted download: exit %d\n%s%s", r.code, r.stdout, tail(r.stderr, 5))
			}
			r = p.faults("mode=flip,types=data,nth=1,every=1", "check", "--read-data")
			if r.code == 0 {
				t.Fatal("check --read-data passed although every download was corrupted")
			}
		}},
	{bug: "restic #5429", what: "kept retrying after rest-server's 507 Insufficient Storage",
		dj:   "507 and ENOSPC are permanent: the retry layer gives up at once and the command fails",
		test: "backend/rest TestDiskFull, backend/retry TestPermanentErrors"},
	{bug: "restic #1445", what: "restore wrote outside the target on Windows through ..\\x names",
		skip: "Windows-only (dj runs on Linux and macOS); names with .. are the hostile battery's (battery_hostile_test.go)"},
	{bug: "restic #4568", what: "forget --keep-tags with a typo deleted all snapshots",
		dj:   "forget refuses a policy that would remove every snapshot of a group unless --unsafe-allow-remove-all",
		test: "TestBatteryPeerBugs/restic-4568",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			r := p.run("forget", "--keep-tag", "no-such-tag", "--prune")
			if r.code == 0 || !strings.Contains(r.stderr, "refusing") {
				t.Fatalf("forget --keep-tag typo: exit %d\n%s", r.code, r.stderr)
			}
			p.verify()
		}},

	// kopia (2.3)
	{bug: "kopia PR #552", what: "metadata blobs deleted prematurely during a partial storage outage",
		dj:   "prune under failing, short and empty listings either completes correctly or refuses; it deletes only what the index and every listing agree is unused",
		test: "TestBatteryFaults (prune and forget --prune under every mode), TestBatteryPeerBugs/restic-4612"},
	{bug: "kopia #3492", what: "after a blob was deleted, later snapshots kept referring to the missing content (dedup trusted the index)",
		dj:   "after `dj repair index` drops what is gone, the next backup uploads the missing data again and the earlier snapshots are whole",
		test: "TestBatteryPeerBugs/kopia-3492",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			// Only a snapshot of p.src stays: the backup that heals it
			// saves the same source, so it needs exactly its blobs.
			m := scanTree(t, p.src)
			p.add(p.backupSnapshot(p.src), m)
			for _, id := range p.ids {
				p.must("forget", id)
				delete(p.want, id)
			}
			p.must("prune", "--instant-delete")
			var packs []string
			filepath.WalkDir(filepath.Join(p.repo, "data"), func(path string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					packs = append(packs, path)
				}
				return nil
			})
			if err := os.Remove(packs[0]); err != nil {
				t.Fatal(err)
			}
			if r := p.run("check"); r.code == 0 {
				t.Fatal("check passed with a pack gone")
			}
			p.must("repair", "index")
			p.add(p.backupSnapshot(p.src), m)
			p.verify()
		}},
	{bug: "kopia #1949, #4769, #2695; borg #9748", what: "a stale local cache claimed deleted data existed; later backups skipped uploads (BLOB not found)",
		dj:   "the cache holds files by name and is checked against the repository's listing on every run; a backup after another client's prune uploads what is gone",
		test: "TestBatteryPeerBugs/stale-cache (two clients with their own caches on one dj serve repository)",
		run: func(t *testing.T) {
			a := newEnv(t)
			u := a.serve()
			a.extraEnv = append(a.extraEnv, "DJ_REPOSITORY=rest:"+u, "DJ_CACHE_DIR="+filepath.Join(a.dir, "cache-a"))
			a.must("init")
			b := &env{t: t, bin: a.bin, repo: a.repo, password: a.password, dir: a.dir,
				extraEnv: append(append([]string{}, a.extraEnv...), "DJ_CACHE_DIR="+filepath.Join(a.dir, "cache-b"))}
			src := filepath.Join(a.dir, "src")
			newTreeGen(t, 39).addFiles(src, 768<<10)
			m := scanTree(t, src)
			first := a.backupSnapshot(src)
			b.must("snapshots") // b's cache now holds the index
			b.must("forget", first, "--prune", "--instant-delete")
			second := b.backupSnapshot(src) // b's cached index is stale
			third := a.backupSnapshot(src)  // so is a's
			a.checkAndRestoreAll(src, map[string]manifest{second: m, third: m})
		}},

	// borg (3.3)
	{bug: "borg CVE-2016-10099, CVE-2023-36811", what: "content an attacker had backed up was accepted as a manifest or archive",
		dj:   "every blob is sealed bound to its type and id, and every file to its type: backed-up content never opens as a tree, snapshot or index",
		test: "repo TestStoredContentCannotPoseAsMetadata"},
	{bug: "borg #3444", what: "check --repair discarded valid items (broken validator)",
		dj:   "repair index and repair snapshots leave a sound repository as it is",
		test: "TestBatteryPeerBugs/borg-3444",
		run: func(t *testing.T) {
			p := newPeerEnv(t)
			p.must("repair", "index")
			p.must("repair", "snapshots")
			p.verify()
		}},
	{bug: "borg #4829", what: "a hashtable bug corrupted the index (rare data loss)",
		dj:   "the in-memory index is checked for every size class and id range against a map",
		test: "repo/index TestIndexLookupSizes, TestAddFilesEqualsAddFile, FuzzDecodeFile"},
	{bug: "borg #1138", what: "I/O errors while writing could corrupt segments",
		dj:   "files are written whole or not at all; a save that fails midway (halfsave) is replaced by its retry or stays unindexed",
		test: "TestBatteryFaults (halfsave, lostreply), TestBatteryPeerBugs/restic-3079, backend/local TestDiskFull"},
	{bug: "borg CVE-2026-62268", what: "extract wrote through a symlinked parent (evil -> victim, then evil/passwd)",
		dj:   "restore does not follow a symlink it restored (or found) as the parent of a later entry",
		test: "TestBatteryPeerBugs/borg-symlinked-parent (two snapshots restored into one target)",
		run: func(t *testing.T) {
			e := newEnv(t)
			e.must("init")
			src := filepath.Join(e.dir, "src")
			victim := filepath.Join(e.dir, "victim")
			os.MkdirAll(victim, 0o755)
			os.MkdirAll(src, 0o755)
			if err := os.Symlink(victim, filepath.Join(src, "evil")); err != nil {
				t.Fatal(err)
			}
			first := e.backupSnapshot(src)
			os.Remove(filepath.Join(src, "evil"))
			writeFile(t, filepath.Join(src, "evil", "passwd"), []byte("pwned\n"))
			second := e.backupSnapshot(src)
			target := filepath.Join(e.dir, "target")
			e.must("restore", first, "--target", target)
			r := e.run("restore", second, "--target", target)
			if _, err := os.Stat(filepath.Join(victim, "passwd")); err == nil {
				t.Fatalf("restore wrote through the symlink into %s (exit %d)", victim, r.code)
			}
			cleanFailure(t, "restore", r)
		}},
	{bug: "borg 2.0.0b22 hardlink to symlink", what: "a hardlink to a symlink leaked an external inode",
		dj:   "restore, dump and the mount link only nodes that agree in device, inode, type and data: a symlink and a file that claim one inode stay two entries, and nothing is written outside the target (its sandbox is hashed before and after)",
		test: "TestBatteryHostileTrees/hardlinks_to_symlinks (restore, ls, dump, diff, find, check, copy, the mount)"},
	{bug: "borg 2.0.0b22 disk space", what: "silent data loss when the repository ran out of space (write errors taken for read errors)",
		dj:   "ENOSPC is permanent and fails the command; nothing is written after it",
		test: "backend/local TestDiskFull, TestDiskFullTmpfs, repo TestUploadErrorStopsTheBackup, backend/rest TestDiskFull"},
	{bug: "borg #9904", what: "a partial chunk index was mistaken for a complete one",
		dj:   "a backup under a short index listing stores more (it cannot dedup what it does not see), never less; prune refuses",
		test: "TestBatteryFaults emptylist-index and shortlist modes, maint TestPruneRefusesSuspectListings"},
	{bug: "borg #9883 and lock fixes", what: "own lock taken for stale; lock not refreshed before the final flush",
		dj:   "dj refreshes its lock while it works and stops writing once it lost it",
		test: "repo TestLockLostStopsWrites (the SIGSTOP case is the kill battery's)"},
	{bug: "borg repoobj", what: "malformed objects raised struct.error/assert instead of an integrity error",
		dj:   "decoders of storage bytes bound lengths and return errors",
		test: "FuzzParseTail, FuzzDecodeFile, FuzzDecode, FuzzDecodePlain, FuzzDecodeCompact (the fuzz helper adds more)"},

	// rest-server (4)
	{bug: "rest-server #60", what: "started without auth when .htpasswd was unreadable",
		dj:   "dj serve without users listens only on loopback unless --insecure-no-auth; an unreadable users file is an error",
		test: "TestServeRefusesOpenNoAuth, backend/rest TestReadHtpasswd"},
	{bug: "rest-server #131", what: "a username with / reached another user's repository",
		dj:   "private repositories are matched by whole path components of the user's name",
		test: "backend/rest TestMultiPrivateRepos, TestMultiPathTricks"},
	{bug: "rest-server #318", what: "a new .htpasswd was world-readable",
		skip: "dj serve does not create password files"},
	{bug: "rest-server #117", what: "%2F, ., .., empty and NUL path components reached other folders",
		dj: "refused", test: "backend/rest TestPaths, TestMultiPathTricks, TestServeAppendOnlyUser (path tricks)"},
	{bug: "rest-server #64", what: "append-only allowed overwriting config",
		dj: "append-only refuses overwrites and deletes but locks, and the config", test: "backend/rest TestAppendOnly, TestServeAppendOnlyRestic"},
	{bug: "rest-server upload integrity", what: "a body whose SHA-256 differs from its name was stored",
		dj: "refused with 400", test: "backend/rest TestUploadMustMatchName"},
	{bug: "rest-server #142", what: "an interrupted upload's cleanup deleted the retried, successful upload",
		dj:   "an aborted upload stores nothing and removes only its own temporary file",
		test: "backend/rest TestAbortedUpload, TestCanceledUpload, TestAbortedUploadKeepsRetry (a first attempt that hangs up after its retry succeeded, local and buffered)"},
}

// TestBatteryPeerBugs runs the subtest of each peer bug dj has one for and
// records every row.
func TestBatteryPeerBugs(t *testing.T) {
	header := []string{"bug", "what happened there", "what dj does", "test"}
	t.Cleanup(func() {
		if peerBase.e != nil {
			os.RemoveAll(peerBase.e.dir)
		}
		peerBase.once, peerBase.e = sync.Once{}, nil
	})
	for _, b := range peerBugs {
		name := strings.NewReplacer("restic #", "restic-", "kopia #", "kopia-", "borg #", "borg-", " ", "-", ",", "", "#", "").Replace(b.bug)
		if b.skip != "" {
			recordReliability(t, "peer-bugs", header, b.bug, b.what, "skipped: "+b.skip, "-")
			continue
		}
		recordReliability(t, "peer-bugs", header, b.bug, b.what, b.dj, b.test)
		if b.run == nil {
			continue
		}
		if i := strings.Index(b.test, "TestBatteryPeerBugs/"); i >= 0 {
			name = strings.Fields(b.test[i+len("TestBatteryPeerBugs/"):])[0]
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b.run(t)
		})
	}
}
