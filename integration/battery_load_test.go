package integration

// The battery's load and concurrency tests (issue 12): many clients
// backing up into one repository on every backend while a mount is read
// and check runs; prunes while backups run; 30 simulated days of backup,
// forget and prune. The lock contention test is repo's TestBatteryLocks
// (repo/lock_contention_test.go), which records in the same table.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadHeader is the header of the battery's "load" table (repo's
// TestBatteryLocks writes the same one).
var loadHeader = []string{"test", "backend", "clients", "backups", "snapshots restored", "mount reads compared", "checks passed", "prunes", "lock acquisitions", "simulated days", "result"}

// recordLoad appends a row to the "load" table; cells follow loadHeader.
func recordLoad(t *testing.T, cells ...string) {
	t.Helper()
	recordReliability(t, "load", loadHeader, cells...)
}

// loadResult is "ok", or "FAILED" once the test failed.
func loadResult(t *testing.T) string {
	if t.Failed() {
		return "FAILED"
	}
	return "ok"
}

// runSafe runs dj like env.run but may be called from any goroutine: it
// never fails the test itself, it returns what went wrong.
func (e *env) runSafe(args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = append(cleanEnv(), e.extraEnv...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	res := result{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		return res, fmt.Errorf("run dj %v: %w", args, err)
	}
	if strings.Contains(res.stderr, "panic") || strings.Contains(res.stderr, "goroutine ") {
		return res, fmt.Errorf("dj %v panicked (or the race detector spoke):\n%s", args, res.stderr)
	}
	if res.code != 0 {
		return res, fmt.Errorf("dj %v: exit %d\n%s%s", args, res.code, res.stdout, res.stderr)
	}
	return res, nil
}

// backupSummaryID returns the snapshot id of a `backup --json` output.
func backupSummaryID(out string) (string, error) {
	var s struct {
		MessageType string `json:"message_type"`
		SnapshotID  string `json:"snapshot_id"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &s); err != nil || s.MessageType != "summary" || s.SnapshotID == "" {
		return "", fmt.Errorf("no summary with a snapshot id in backup --json output: %v\n%s", err, out)
	}
	return s.SnapshotID, nil
}

// restoreCompare restores snapshot id (with pre, the backend's global
// options, in front of the command) and compares its copy of src with want.
func (e *env) restoreCompare(pre []string, id, src string, want manifest) {
	e.t.Helper()
	target := filepath.Join(e.dir, "restore-compare")
	if err := os.RemoveAll(target); err != nil {
		e.t.Fatal(err)
	}
	e.must(append(pre, "restore", id, "--target", target)...)
	got := scanTree(e.t, filepath.Join(target, src))
	if d := manifestDiff(want, got); len(d) > 0 {
		e.t.Errorf("snapshot %.8s does not restore byte-identical to its source:\n  %s", id, strings.Join(d, "\n  "))
	}
	if err := os.RemoveAll(target); err != nil {
		e.t.Fatal(err)
	}
}

// madeSnapshot is a snapshot the battery made and the manifest of its source.
type madeSnapshot struct {
	id  string // short id, as backup --json names it
	src string
	m   manifest
}

// mountReaders reads files of the snapshots in snaps through the mount at
// mnt, from n goroutines, and compares each with its manifest, until stop
// is closed. Snapshots the mount does not show yet (it re-reads the list
// every --refresh) are passed over.
type mountReaders struct {
	mnt      string
	mu       sync.Mutex
	snaps    []madeSnapshot
	compared atomic.Int64
	unseen   atomic.Int64
	errs     []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func (mr *mountReaders) add(s madeSnapshot) {
	mr.mu.Lock()
	mr.snaps = append(mr.snaps, s)
	mr.mu.Unlock()
}

func (mr *mountReaders) fail(format string, args ...any) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if len(mr.errs) < 20 {
		mr.errs = append(mr.errs, fmt.Sprintf(format, args...))
	}
}

func (mr *mountReaders) start(n int) {
	mr.stop = make(chan struct{})
	for i := range n {
		mr.wg.Add(1)
		go func() {
			defer mr.wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(i), 99))
			for {
				select {
				case <-mr.stop:
					return
				default:
				}
				mr.mu.Lock()
				var s madeSnapshot
				if len(mr.snaps) > 0 {
					s = mr.snaps[rng.IntN(len(mr.snaps))]
				}
				mr.mu.Unlock()
				if s.id == "" {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				root := filepath.Join(mr.mnt, "ids", s.id)
				if _, err := os.Stat(root); err != nil {
					mr.unseen.Add(1)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				mr.readOne(rng, s, root)
			}
		}()
	}
}

// readOne reads one random file of s through the mount and compares it
// with the manifest.
func (mr *mountReaders) readOne(rng *mrand.Rand, s madeSnapshot, root string) {
	var files []string
	for rel, v := range s.m {
		if strings.HasPrefix(v, "file ") {
			files = append(files, rel)
		}
	}
	if len(files) == 0 {
		return
	}
	sort.Strings(files)
	rel := files[rng.IntN(len(files))]
	f, err := os.Open(filepath.Join(root, s.src, rel))
	if err != nil {
		mr.fail("mount: open %s of snapshot %s: %v", rel, s.id, err)
		return
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		mr.fail("mount: read %s of snapshot %s: %v", rel, s.id, err)
		return
	}
	// The manifest says "file PERM SIZE SHA256".
	want := strings.Fields(s.m[rel])
	if got := []string{fmt.Sprint(n), hex.EncodeToString(h.Sum(nil))}; got[0] != want[2] || got[1] != want[3] {
		mr.fail("mount: %s of snapshot %s reads as %s bytes with SHA-256 %s, want %s bytes %s", rel, s.id, got[0], got[1], want[2], want[3])
		return
	}
	mr.compared.Add(1)
}

func (mr *mountReaders) finish(t *testing.T) {
	t.Helper()
	close(mr.stop)
	mr.wg.Wait()
	for _, e := range mr.errs {
		t.Error(e)
	}
}

// checkLoop runs check (every other time with a fifth of the data read)
// until stop is closed, and counts the passes.
type checkLoop struct {
	passed atomic.Int64
	mu     sync.Mutex
	errs   []string
	stop   chan struct{}
	done   chan struct{}
}

func startCheckLoop(e *env, pre []string) *checkLoop {
	c := &checkLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for i := 0; ; i++ {
			select {
			case <-c.stop:
				return
			default:
			}
			args := append(append([]string{}, pre...), "check")
			if i%2 == 1 {
				args = append(args, "--read-data-subset", fmt.Sprintf("%d/5", 1+i/2%5))
			}
			if _, err := e.runSafe(args...); err != nil {
				c.mu.Lock()
				if len(c.errs) < 5 {
					c.errs = append(c.errs, err.Error())
				}
				c.mu.Unlock()
				continue
			}
			c.passed.Add(1)
		}
	}()
	return c
}

func (c *checkLoop) finish(t *testing.T) {
	t.Helper()
	close(c.stop)
	<-c.done
	for _, e := range c.errs {
		t.Errorf("check alongside the backups: %s", e)
	}
}

// loadBackend is a backend of TestBatteryLoadClients: setup returns an
// env with an initialised repository and the global options every dj
// command needs in front of its own (the SFTP server's ssh arguments).
type loadBackend struct {
	name  string
	setup func(t *testing.T) (*env, []string)
}

func loadBackends() []loadBackend {
	return []loadBackend{
		{"local", func(t *testing.T) (*env, []string) {
			e := newEnv(t)
			e.must("init")
			return e, nil
		}},
		{"sftp", func(t *testing.T) (*env, []string) {
			s := newSFTPEnv(t)
			s.must("init")
			return s.env, s.args()
		}},
		{"s3", func(t *testing.T) (*env, []string) {
			e, _, _ := s3Env(t)
			return e, nil
		}},
		{"rest", func(t *testing.T) (*env, []string) {
			e := newEnv(t)
			url := e.serve()
			e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url)
			e.must("init")
			return e, nil
		}},
		{"rclone", func(t *testing.T) (*env, []string) {
			e := newEnv(t)
			e.extraEnv = append(e.extraEnv, rcloneEnv(t, e, filepath.Join(e.dir, "rclone-repo"))...)
			e.must("init")
			return e, nil
		}},
	}
}

// TestBatteryLoadClients: clients back up into one repository at the same
// time, half of each one's data shared with the others, on each backend,
// while 16 readers read the snapshots made so far through a mount and
// compare every file with its manifest, and check runs over and over.
// Every check passes, every read is right, and afterwards check
// --read-data passes and every snapshot restores to its manifest. The full
// form has 8 clients making 20 backups each; the short one 4×3 on the
// local backend and 2×2 on the remote ones (SFTP, S3, REST, rclone). The
// backends run in parallel.
func TestBatteryLoadClients(t *testing.T) {
	for _, b := range loadBackends() {
		t.Run(b.name, func(t *testing.T) {
			// The backends side by side: most of a remote's time is
			// round trips, and the battery's budget is wall time.
			t.Parallel()
			clients, backups := batteryRuns(4, 8), batteryRuns(3, 20)
			if b.name != "local" {
				clients, backups = batteryRuns(2, 8), batteryRuns(2, 20)
			}
			e, pre := b.setup(t)
			loadClients(t, e, pre, b.name, clients, backups, 16)
		})
	}
}

// loadClients runs the load on the initialised repository of e: clients
// back up in rounds (all of a round's backups at once), readers read
// through a mount and check runs in a loop meanwhile; then check
// --read-data and a restore of every snapshot, compared with its manifest.
func loadClients(t *testing.T, e *env, pre []string, backendName string, clients, backups, readers int) {
	start := time.Now()
	srcs := make([]string, clients)
	own := make([]*treeGen, clients)
	for c := range clients {
		srcs[c] = filepath.Join(e.dir, "clients", fmt.Sprintf("c%d", c))
		own[c] = newTreeGen(t, uint64(100+c))
	}

	var mr *mountReaders
	var m *mounted
	if os.Geteuid() == 0 && fileExists("/dev/fuse") {
		m = e.mount(append(append([]string{}, pre...), "--refresh", "1s")...)
		mr = &mountReaders{mnt: m.dir}
		mr.start(readers)
	} else {
		t.Log("no mount readers: they need root and /dev/fuse")
	}
	checks := startCheckLoop(e, pre)

	var made []madeSnapshot
	for round := range backups {
		// Each client's tree: shared/ changes the same way for every
		// client (the same seed), own/ its own way.
		for c := range clients {
			shared := newTreeGen(t, uint64(1000+round))
			shared.seq = 10000 * round // new names each round
			if round == 0 {
				shared.addFiles(filepath.Join(srcs[c], "shared"), 2<<20)
				own[c].addFiles(filepath.Join(srcs[c], "own"), 2<<20)
			} else {
				shared.mutate(filepath.Join(srcs[c], "shared"), 512<<10)
				own[c].mutate(filepath.Join(srcs[c], "own"), 512<<10)
			}
		}
		ms := make([]manifest, clients)
		for c := range clients {
			ms[c] = scanTree(t, srcs[c])
		}
		ids := make([]string, clients)
		errs := make([]error, clients)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := e.runSafe(append(append([]string{}, pre...), "backup", "--json", "--host", fmt.Sprintf("client%d", c), srcs[c])...)
				if err == nil {
					ids[c], err = backupSummaryID(r.stdout)
				}
				errs[c] = err
			}()
		}
		wg.Wait()
		t.Logf("round %d: %d backups done at %v", round, clients, time.Since(start).Round(time.Millisecond))
		for c := range clients {
			if errs[c] != nil {
				t.Errorf("round %d, client %d: %v", round, c, errs[c])
				continue
			}
			s := madeSnapshot{id: ids[c], src: srcs[c], m: ms[c]}
			made = append(made, s)
			if mr != nil {
				mr.add(s)
			}
		}
	}
	if mr != nil {
		if stressMode() {
			// The readers get a moment with the last snapshots too.
			time.Sleep(1500 * time.Millisecond)
		}
		mr.finish(t)
		m.stop()
	}
	checks.finish(t)
	if t.Failed() {
		t.FailNow()
	}

	t.Logf("readers and checks stopped at %v", time.Since(start).Round(time.Millisecond))
	if r := e.run(append(append([]string{}, pre...), "check", "--read-data")...); r.code != 0 {
		t.Fatalf("check --read-data after the load: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var list []snapJSON
	parseJSON(t, "snapshots --json", e.must(append(append([]string{}, pre...), "snapshots", "--json")...), &list)
	if len(list) != clients*backups {
		t.Errorf("the repository holds %d snapshots, want %d", len(list), clients*backups)
	}
	t.Logf("check --read-data passed at %v", time.Since(start).Round(time.Millisecond))
	for _, s := range made {
		e.restoreCompare(pre, s.id, s.src, s.m)
	}
	var compared, unseen int64
	if mr != nil {
		compared, unseen = mr.compared.Load(), mr.unseen.Load()
	}
	t.Logf("%s: %d clients × %d backups, %d mount reads compared (%d times a snapshot was not visible yet), %d checks passed alongside, in %v",
		backendName, clients, backups, compared, unseen, checks.passed.Load(), time.Since(start).Round(time.Millisecond))
	recordLoad(t, "TestBatteryLoadClients", backendName, fmt.Sprint(clients), fmt.Sprint(clients*backups), fmt.Sprint(len(made)),
		fmt.Sprint(compared), fmt.Sprintf("%d alongside + 1 --read-data", checks.passed.Load()), "", "", "", loadResult(t))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestBatteryPruneDuringBackups: prune (5 times in `make test`, 100 in
// `make stress`) while two clients back up, with the prune's modes and the
// order of start varying, and older snapshots forgotten before each round
// so that every prune has packs to mark, repack and delete. Every backup
// and every prune succeeds, check passes after each round, each round's
// snapshots restore to their manifests, and at the end check --read-data
// passes and every remaining snapshot restores to its manifest.
func TestBatteryPruneDuringBackups(t *testing.T) {
	start := time.Now()
	prunes := batteryRuns(5, 100)
	const clients = 2
	e := newEnv(t)
	e.must("init")
	rng := mrand.New(mrand.NewPCG(12, 34))
	srcs := make([]string, clients)
	gens := make([]*treeGen, clients)
	kept := make([][]madeSnapshot, clients) // per client, oldest first
	for c := range clients {
		srcs[c] = filepath.Join(e.dir, fmt.Sprintf("src%d", c))
		gens[c] = newTreeGen(t, uint64(200+c))
		gens[c].addFiles(srcs[c], 4<<20)
	}
	modes := [][]string{
		nil,
		{"--keep-delete", "0s"},
		{"--max-unused", "0%", "--keep-delete", "0s"},
		{"--max-unused", "0%"},
	}
	var backups, restored, checks int
	var marked, repacked, deleted, resurrected int
	for p := range prunes {
		// Forget all but each client's last two snapshots: the prune
		// has their data to free.
		forget := []string{"forget"}
		for c := range clients {
			for len(kept[c]) > 2 {
				forget = append(forget, kept[c][0].id)
				kept[c] = kept[c][1:]
			}
		}
		if len(forget) > 1 {
			e.must(forget...)
		}
		ms := make([]manifest, clients)
		for c := range clients {
			gens[c].mutate(srcs[c], 2<<20)
			ms[c] = scanTree(t, srcs[c])
		}
		pruneArgs := append([]string{"prune", "--json"}, modes[p%len(modes)]...)
		offset := time.Duration(rng.IntN(400)) * time.Millisecond
		pruneFirst := rng.IntN(3) == 0
		var pr *proc
		if pruneFirst {
			pr, _ = e.start(nil, false, pruneArgs...)
			time.Sleep(offset / 4)
		}
		bks := make([]*proc, clients)
		for c := range clients {
			bks[c], _ = e.start(nil, false, "backup", "--json", "--host", fmt.Sprintf("client%d", c), srcs[c])
		}
		if !pruneFirst {
			time.Sleep(offset)
			pr, _ = e.start(nil, false, pruneArgs...)
		}
		for c := range clients {
			r, _ := bks[c].wait()
			if r.code != 0 {
				t.Fatalf("round %d: backup of client %d next to prune %v: exit %d\n%s", p, c, pruneArgs[2:], r.code, r.stderr)
			}
			id, err := backupSummaryID(r.stdout)
			if err != nil {
				t.Fatalf("round %d: %v", p, err)
			}
			backups++
			kept[c] = append(kept[c], madeSnapshot{id: id, src: srcs[c], m: ms[c]})
		}
		rp, _ := pr.wait()
		if rp.code != 0 {
			t.Fatalf("round %d: prune %v next to backups: exit %d\n%s", p, pruneArgs[2:], rp.code, rp.stderr)
		}
		var pj pruneJSON
		parseJSON(t, "prune --json", rp.stdout, &pj)
		marked += len(pj.PacksMarked)
		repacked += len(pj.PacksRepacked)
		deleted += len(pj.PacksDeleted)
		resurrected += len(pj.PacksResurrected)
		if left := e.locksLeft(); len(left) > 0 {
			t.Fatalf("round %d: locks left after backups and prune ended: %v", p, left)
		}
		if r := e.run("check"); r.code != 0 {
			t.Fatalf("round %d: check after prune %v next to backups: exit %d\n%s%s", p, pruneArgs[2:], r.code, r.stdout, r.stderr)
		}
		checks++
		for c := range clients {
			s := kept[c][len(kept[c])-1]
			e.restoreCompare(nil, s.id, s.src, s.m)
			restored++
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	// A last prune, alone, deletes what is marked (next to running
	// backups a pack is deleted only when marked more than the clock
	// skew allowance, 5 minutes, before the oldest backup began: only
	// the full form runs that long), then everything is read.
	var last pruneJSON
	parseJSON(t, "prune --json", e.must("prune", "--json", "--keep-delete", "0s", "--max-unused", "0%"), &last)
	if r := e.run("check", "--read-data"); r.code != 0 {
		t.Fatalf("check --read-data at the end: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checks++
	for c := range clients {
		for _, s := range kept[c] {
			e.restoreCompare(nil, s.id, s.src, s.m)
			restored++
		}
	}
	t.Logf("%d prunes next to %d backups: packs marked %d, repacked %d, deleted %d, resurrected %d; the last prune alone deleted %d; %d restores compared, %d checks passed, in %v",
		prunes, backups, marked, repacked, deleted, resurrected, len(last.PacksDeleted), restored, checks, time.Since(start).Round(time.Millisecond))
	if marked+repacked == 0 || len(last.PacksDeleted)+deleted == 0 {
		t.Error("no prune marked, repacked or deleted a pack: the test did not exercise prune")
	}
	recordLoad(t, "TestBatteryPruneDuringBackups", "local", fmt.Sprint(clients), fmt.Sprint(backups), fmt.Sprint(restored), "",
		fmt.Sprint(checks), fmt.Sprintf("%d next to backups (packs marked %d, repacked %d, deleted %d, resurrected %d) + 1 alone (deleted %d)", prunes, marked, repacked, deleted, resurrected, len(last.PacksDeleted)),
		"", "", loadResult(t))
}

// retentionRule is one --keep-* rule of the policy model: keep the newest
// snapshot of each of the last n buckets.
type retentionRule struct {
	n      int
	bucket func(time.Time) string
}

// applyPolicy is restic's retention algorithm (since restic 0.16, as dj's
// maint.ExpirePolicy), restated for the test: snapshots newest first; a
// snapshot is kept when, for any rule that still has buckets left, it falls
// into a bucket other than the last one that rule kept, or it is the
// oldest snapshot ("oldest daily snapshot"). It returns the kept times.
func applyPolicy(times []time.Time, rules []retentionRule) map[time.Time]bool {
	sorted := append([]time.Time(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].After(sorted[j]) })
	left := make([]int, len(rules))
	last := make([]string, len(rules))
	for i, r := range rules {
		left[i] = r.n
		last[i] = "\x00"
	}
	kept := map[time.Time]bool{}
	for nr, tm := range sorted {
		for i, r := range rules {
			if left[i] == 0 {
				continue
			}
			if b := r.bucket(tm); b != last[i] || nr == len(sorted)-1 {
				last[i] = b
				left[i]--
				kept[tm] = true
			}
		}
	}
	return kept
}

// TestBattery30Days: a month of a laptop's backups in under two minutes:
// each simulated day the source changes and is backed up (with backup
// --time; twice a day in the full form), forget --keep-daily 7
// --keep-weekly 4 runs, and prune runs (weekly in the short
// form, daily in the full one). After each forget the repository holds
// exactly the snapshots the policy keeps (a model of restic's rules); at
// the end check --read-data passes and every kept snapshot restores to its
// manifest.
func TestBattery30Days(t *testing.T) {
	start := time.Now()
	const days = 30
	perDay := batteryRuns(1, 2)
	pruneEvery := batteryRuns(7, 1)
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "home")
	g := newTreeGen(t, 30)
	g.addFiles(src, 3<<20)
	rules := []retentionRule{
		{7, func(t time.Time) string { return t.Format("2006-01-02") }},
		{4, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
	}
	byTime := map[time.Time]madeSnapshot{}
	day0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.Local) // a Monday
	var backups, prunes, forgets int
	for d := range days {
		for k := range perDay {
			g.mutate(src, 256<<10)
			m := scanTree(t, src)
			at := day0.AddDate(0, 0, d).Add(time.Duration(9+9*k)*time.Hour + time.Duration(d)*time.Minute)
			out := e.must("backup", "--json", "--host", "laptop", "--time", at.Format("2006-01-02 15:04:05"), src)
			id, err := backupSummaryID(out)
			if err != nil {
				t.Fatal(err)
			}
			backups++
			byTime[at] = madeSnapshot{id: id, src: src, m: m}
		}
		var groups []struct {
			Keep   []snapJSON `json:"keep"`
			Remove []snapJSON `json:"remove"`
		}
		parseJSON(t, "forget --json", e.must("forget", "--json", "--keep-daily", "7", "--keep-weekly", "4"), &groups)
		forgets++
		var times []time.Time
		for tm := range byTime {
			times = append(times, tm)
		}
		want := applyPolicy(times, rules)
		for tm := range byTime {
			if !want[tm] {
				delete(byTime, tm)
			}
		}
		// What forget says it kept, and (on prune days) what the
		// repository holds, is what the policy keeps.
		kept := map[string]bool{}
		for _, g := range groups {
			for _, s := range g.Keep {
				kept[s.ShortID] = true
			}
		}
		if d%pruneEvery == pruneEvery-1 {
			kept = map[string]bool{}
			for _, s := range e.snapshots() {
				kept[s.ShortID] = true
			}
		}
		var wantIDs []string
		for _, s := range byTime {
			wantIDs = append(wantIDs, s.id)
			if !kept[s.id] {
				t.Errorf("day %d: forget removed snapshot %s, which the policy keeps", d, s.id)
			}
		}
		if len(kept) != len(byTime) {
			t.Errorf("day %d: forget kept %d snapshots, the policy keeps %d: %v", d, len(kept), len(byTime), wantIDs)
		}
		if t.Failed() {
			t.FailNow()
		}
		if d%pruneEvery == pruneEvery-1 {
			e.must("prune", "--keep-delete", "0s")
			prunes++
		}
	}
	e.must("prune", "--keep-delete", "0s")
	prunes++
	if r := e.run("check", "--read-data"); r.code != 0 {
		t.Fatalf("check --read-data after 30 days: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, s := range byTime {
		e.restoreCompare(nil, s.id, s.src, s.m)
	}
	took := time.Since(start)
	t.Logf("%d days: %d backups, %d forgets, %d prunes; %d snapshots kept and restored; in %v", days, backups, forgets, prunes, len(byTime), took.Round(time.Millisecond))
	// The race detector slows dj down several times: the bound is for
	// the ordinary binary.
	if took > 2*time.Minute && os.Getenv("DJ_TEST_RACE") != "1" {
		t.Errorf("30 simulated days took %v, more than two minutes", took.Round(time.Second))
	}
	recordLoad(t, "TestBattery30Days", "local", "1", fmt.Sprint(backups), fmt.Sprint(len(byTime)), "", "1 --read-data",
		fmt.Sprint(prunes), "", fmt.Sprintf("%d (forget --keep-daily 7 --keep-weekly 4 daily, kept exactly the policy's %d)", days, len(byTime)), loadResult(t))
}

// TestRestoreDedupedAgainstMarkedPack is the bug TestBatteryPruneDuringBackups
// found: a backup that loaded the index before a prune marked a pack for
// deletion deduplicates against the pack's blobs; until a later prune puts
// the pack back ("resurrects" it), those blobs are only in the pending
// part of the index. check passed and dump read them, but restore failed
// ("chunk 0 (blob ...) is not in the index") and the mount gave EIO:
// both asked Repository.BlobSize, which did not look at pending packs.
func TestRestoreDedupedAgainstMarkedPack(t *testing.T) {
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
	e.must("forget", first)

	before := map[string]bool{second: true}
	bk, stdin := e.start(nil, true, "backup", "--stdin", "--stdin-filename", "gone.bin")
	deadline := time.Now().Add(30 * time.Second)
	for len(e.locksLeft()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("backup --stdin took no lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var p pruneJSON
	parseJSON(t, "prune --json", e.must("prune", "--json", "--max-unused", "0%"), &p)
	if len(p.PacksMarked)+len(p.PacksRepacked) == 0 {
		t.Fatalf("prune marked nothing: %+v", p)
	}
	if _, err := stdin.Write(gone); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if res, _ := bk.wait(); res.code != 0 {
		t.Fatalf("backup --stdin: exit %d\n%s", res.code, res.stderr)
	}
	third := e.newSnapshot(before)
	e.must("check")
	target := filepath.Join(e.dir, "restored")
	if r := e.run("restore", third, "--target", target); r.code != 0 {
		t.Fatalf("restore of a snapshot whose blobs are in a marked pack: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(target, "gone.bin")); err != nil || !bytes.Equal(got, gone) {
		t.Fatalf("restored gone.bin: %d bytes, %v", len(got), err)
	}
	if os.Geteuid() == 0 && fileExists("/dev/fuse") {
		m := e.mount()
		got, err := os.ReadFile(filepath.Join(m.dir, "snapshots", "latest", "gone.bin"))
		if err != nil || !bytes.Equal(got, gone) {
			t.Errorf("gone.bin through the mount: %d bytes, %v\n%s", len(got), err, m.log.String())
		}
		m.stop()
	}
}
