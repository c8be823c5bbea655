package integration

// The crash-consistency battery (issue 12): dj's writing commands killed
// with SIGKILL at random moments on every backend (TestBatteryKills), and a
// backup stopped with SIGSTOP past its lock's stale time while another
// client prunes (TestBatteryLockLost).

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"dj/internal/testserver"
)

// killRepo is a repository on one backend, reached through env e with
// pre in front of every command's arguments (SFTP's -o sftp.args) and
// extra added to the environment.
type killRepo struct {
	e     *env
	pre   []string
	extra []string
	dir   string // a local repository's directory
	// inPlace: the storage writes files in place (rclone before 1.63 on
	// a local path), so a kill can leave a file cut short under its
	// final name.
	inPlace bool
}

func (k *killRepo) args(args []string) []string {
	return append(append([]string(nil), k.pre...), args...)
}

func (k *killRepo) run(args ...string) result { return k.e.runEnv(k.extra, k.args(args)...) }

func (k *killRepo) must(args ...string) string {
	k.e.t.Helper()
	r := k.run(args...)
	if r.code != 0 {
		k.e.t.Fatalf("dj %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (k *killRepo) start(args ...string) *proc {
	k.e.t.Helper()
	p, _ := k.e.start(k.extra, false, k.args(args)...)
	return p
}

// killSnap is an entry of `dj snapshots --json`, with its tree.
type killSnap struct {
	snapJSON
	Tree string `json:"tree"`
}

func (k *killRepo) snapshots() []killSnap {
	k.e.t.Helper()
	var list []killSnap
	parseJSON(k.e.t, "snapshots --json", k.must("snapshots", "--json"), &list)
	sort.Slice(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	return list
}

// locks lists the IDs of the lock files (of a local repository without
// running dj).
func (k *killRepo) locks() []string {
	k.e.t.Helper()
	if k.dir == "" {
		return strings.Fields(k.must("list", "locks"))
	}
	entries, err := os.ReadDir(filepath.Join(k.dir, "locks"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		k.e.t.Fatal(err)
	}
	var out []string
	for _, de := range entries {
		if !strings.HasPrefix(de.Name(), ".") && len(de.Name()) == 64 {
			out = append(out, de.Name())
		}
	}
	return out
}

// batteryOnly returns names in the short form, nil (all) in the full one
// and whenever DJ_BATTERY_RUNS sets the kills per command (a run by hand
// that asks for a count asks for every command).
func batteryOnly(names ...string) []string {
	if stressMode() || os.Getenv("DJ_BATTERY_RUNS") != "" {
		return nil
	}
	return names
}

// killRun is one command killed again and again on one repository.
type killRun struct {
	t    *testing.T
	k    *killRepo // the repository under test
	from *killRepo // copy's source repository (a local one), or nil
	g    *treeGen
	src  string
	// newBytes is what each backup adds to src.
	newBytes int64
	seq      int
	// want holds the manifest of the source taken before each backup, by
	// the backup's tag (m001, m002, ...).
	want map[string]manifest
	// rewrite: snapshots with an "original" are rewrites without x-*.
	rewrite bool

	kills, midway, named int
	// cutShort counts the rounds in which a kill left a snapshot or index
	// file cut short on storage that writes in place, which check named
	// and repair removed.
	cutShort int
	// killed holds the PIDs killed so far: on a remote repository a lock
	// whose upload was under way when its process died may land on the
	// server after the round that killed it checked for it, and is named
	// by a later round's unlock.
	killed map[int]bool
}

var manifestTag = regexp.MustCompile(`^m[0-9]{3}$`)

func tagOf(s killSnap) string {
	for _, tg := range s.Tags {
		if manifestTag.MatchString(tg) {
			return tg
		}
	}
	return ""
}

// newBackup changes the source, adds a file x-N (which rewrite removes),
// takes its manifest and returns the tag under which to back it up.
func (kr *killRun) newBackup() string {
	kr.seq++
	kr.g.mutate(kr.src, kr.newBytes)
	writeFile(kr.t, filepath.Join(kr.src, fmt.Sprintf("x-%03d", kr.seq)), kr.g.bytes(1000+kr.g.rng.IntN(20000)))
	tag := fmt.Sprintf("m%03d", kr.seq)
	kr.want[tag] = scanTree(kr.t, kr.src)
	return tag
}

// backupInto backs the source up into r with a new tag.
func (kr *killRun) backupInto(r *killRepo) string {
	tag := kr.newBackup()
	r.must("backup", "--quiet", "--tag", tag, kr.src)
	return tag
}

// tags returns the manifest tags of snaps, oldest first.
func tags(snaps []killSnap) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range snaps {
		if tg := tagOf(s); tg != "" && !seen[tg] {
			seen[tg] = true
			out = append(out, tg)
		}
	}
	sort.Strings(out)
	return out
}

// trim forgets (without prune) the snapshots of r (listed in snaps) whose
// tags are not among the newest keep, so that each check restores only a
// few, and returns the tags kept.
func (kr *killRun) trim(r *killRepo, snaps []killSnap, keep int) []string {
	all := tags(snaps)
	if len(all) <= keep {
		return all
	}
	old := map[string]bool{}
	for _, tg := range all[:len(all)-keep] {
		old[tg] = true
	}
	args := []string{"forget"}
	for _, s := range snaps {
		if old[tagOf(s)] || tagOf(s) == "" {
			args = append(args, s.ID)
		}
	}
	r.must(args...)
	return all[len(all)-keep:]
}

// expected is the manifest snapshot s must restore to.
func (kr *killRun) expected(s killSnap) (manifest, bool) {
	m, ok := kr.want[tagOf(s)]
	if !ok {
		return nil, false
	}
	rewritten := kr.rewrite && s.Original != ""
	for _, tg := range s.Tags {
		rewritten = rewritten || tg == "rewrite"
	}
	if !rewritten {
		return m, true
	}
	out := manifest{}
	for p, v := range m {
		if !strings.HasPrefix(filepath.Base(p), "x-") {
			out[p] = v
		}
	}
	return out, true
}

// verify runs check --read-data on r, restores every snapshot and compares
// it with its manifest, and wants every tag of need present.
func (kr *killRun) verify(r *killRepo, need []string, what string) {
	kr.t.Helper()
	res := r.run("check", "--read-data")
	if res.code != 0 && r.inPlace && kr.repairCutShort(r, res.stdout, what) {
		res = r.run("check", "--read-data")
	}
	if res.code != 0 {
		kr.t.Fatalf("%s: check --read-data: exit %d\n%s%s", what, res.code, res.stdout, res.stderr)
	}
	have := map[string]bool{}
	restored := map[string]bool{} // snapshots of one tree (tag, copy) restore alike
	for _, s := range r.snapshots() {
		want, ok := kr.expected(s)
		if !ok {
			kr.t.Fatalf("%s: snapshot %s has no known manifest (tags %v)", what, s.ShortID, s.Tags)
		}
		have[tagOf(s)] = true
		if restored[s.Tree] {
			continue
		}
		restored[s.Tree] = true
		target := filepath.Join(kr.k.e.dir, "restore-check")
		if err := os.RemoveAll(target); err != nil {
			kr.t.Fatal(err)
		}
		r.must("restore", s.ID, "--target", target)
		if d := manifestDiff(want, scanTree(kr.t, filepath.Join(target, kr.src))); len(d) > 0 {
			kr.t.Fatalf("%s: snapshot %s (%s) does not restore byte-identical to its source:\n  %s", what, s.ShortID, tagOf(s), strings.Join(d, "\n  "))
		}
	}
	for _, tg := range need {
		if !have[tg] {
			kr.t.Fatalf("%s: the snapshot tagged %s is gone", what, tg)
		}
	}
}

// repairCutShort handles what a kill leaves on storage that writes files
// in place: a snapshot or index file whose upload was cut short stands
// under its final name. When every error of check's report (out) is such
// a file, it runs the repair check names (repair index, repair snapshots
// --forget) and reports true; the caller checks again.
func (kr *killRun) repairCutShort(r *killRepo, out, what string) bool {
	kr.t.Helper()
	var index, snaps int
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "error: ") {
			continue
		}
		switch {
		case !strings.Contains(l, "content does not match its name"):
			return false
		case strings.HasPrefix(l, "error: snapshot "):
			snaps++
		case strings.HasPrefix(l, "error: index file "):
			index++
		default:
			return false
		}
	}
	if index+snaps == 0 {
		return false
	}
	kr.t.Logf("%s: the kill left %d snapshot and %d index file(s) cut short; check named them; repairing", what, snaps, index)
	if index > 0 {
		r.must("repair", "index")
	}
	if snaps > 0 {
		r.must("repair", "snapshots", "--forget")
	}
	kr.cutShort++
	return true
}

// rcloneWritesInPlace reports whether the rclone on PATH writes files in
// place (before 1.63, which writes to a temporary name and renames).
func rcloneWritesInPlace(t *testing.T) bool {
	out, err := exec.Command("rclone", "version").Output()
	if err != nil {
		t.Fatalf("rclone version: %v", err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(string(out), "rclone v%d.%d", &major, &minor); err != nil {
		t.Fatalf("rclone version %q: %v", out, err)
	}
	return major < 1 || major == 1 && minor < 63
}

// unlock runs `dj unlock` on r and wants it to name every lock file left
// behind by the killed process pid (its ID, kind, PID and why it is
// stale), and to leave none.
func (kr *killRun) unlock(r *killRepo, pid int, what string) int {
	kr.t.Helper()
	left := r.locks()
	if len(left) == 0 {
		return 0 // killed before it locked, or after it unlocked
	}
	out := r.must("unlock")
	after := r.locks()
	if len(after) > 0 && r.inPlace {
		// A lock file cut short stops no one, and unlock keeps it until
		// it is old: --remove-all must name each as unreadable.
		all := r.must("unlock", "--remove-all")
		for _, id := range after {
			if !strings.Contains(all, "unreadable lock "+id[:8]+" ") {
				kr.t.Fatalf("%s: `dj unlock` left lock %.8s, which is not unreadable:\n%s\n%s", what, id, out, all)
			}
		}
		kr.t.Logf("%s: the kill left %d lock file(s) cut short", what, len(after))
		kr.cutShort++
		after = r.locks()
	}
	if len(after) > 0 {
		kr.t.Fatalf("%s: `dj unlock` left locks %v:\n%s", what, after, out)
	}
	named := 0
	for _, id := range left {
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, " lock "+id[:8]+" ") {
				line = l
			}
		}
		if line == "" {
			// Gone before unlock listed it: the killed process's own
			// removal, still under way at the kill, landed late (rclone,
			// the child that carries dj's requests, finishes or aborts
			// them after dj has died; a server does the same).
			continue
		}
		if !strings.Contains(line, "no longer runs") || !kr.namesKilled(line, pid) {
			kr.t.Fatalf("%s: `dj unlock` does not name lock %.8s of the killed PID %d (or of one killed before) and why it is stale:\n%s", what, id, pid, out)
		}
		named++
	}
	return named
}

// namesKilled reports whether an unlock line names pid or a PID killed
// before it.
func (kr *killRun) namesKilled(line string, pid int) bool {
	if strings.Contains(line, "PID "+strconv.Itoa(pid)+" ") {
		return true
	}
	for p := range kr.killed {
		if strings.Contains(line, "PID "+strconv.Itoa(p)+" ") {
			return true
		}
	}
	return false
}

// killCmd is a command of the battery: prepare does the (unkilled) work
// that gives it something to do, given the snapshots of the repository,
// and returns the command line and the tags that must be present after
// the kill and after a complete run.
type killCmd struct {
	name    string
	prepare func(kr *killRun, run int, snaps []killSnap) (args, needKilled, needDone []string)
	// exact: after a complete run, the tags present are exactly needDone.
	exact bool
}

// killKeep is how many backups the repository keeps before each kill's
// new one: each check restores them all.
const killKeep = 1

// checkDone wants the snapshots a complete run of c (the run-th) leaves.
func (c killCmd) checkDone(t *testing.T, run int, snaps []killSnap, need []string) {
	t.Helper()
	have := tags(snaps)
	for _, tg := range need {
		if !slices.Contains(have, tg) {
			t.Fatalf("%s, run %d: after a complete run, the snapshot tagged %s is missing (have %v)", c.name, run, tg, have)
		}
	}
	if c.exact && len(have) != len(need) {
		t.Fatalf("%s, run %d: after a complete run, snapshots tagged %v, want %v", c.name, run, have, need)
	}
}

var killCmds = []killCmd{
	{name: "backup", prepare: func(kr *killRun, run int, snaps []killSnap) ([]string, []string, []string) {
		before := kr.trim(kr.k, snaps, killKeep)
		tag := kr.newBackup()
		return []string{"backup", "--quiet", "--tag", tag, kr.src}, before, append(before, tag)
	}},
	{name: "prune", prepare: func(kr *killRun, run int, snaps []killSnap) ([]string, []string, []string) {
		all := append(kr.trim(kr.k, snaps, killKeep), kr.backupInto(kr.k))
		variants := [][]string{nil, {"--max-unused", "0%"}, {"--keep-delete", "0s"}, {"--instant-delete"}, {"--max-unused", "0%", "--keep-delete", "0s"}}
		return append([]string{"prune"}, variants[run%len(variants)]...), all, all
	}},
	{name: "repack", prepare: func(kr *killRun, run int, snaps []killSnap) ([]string, []string, []string) {
		if run%10 == 9 {
			// Repack keeps the packs it replaces for a day, and a
			// killed one leaves packs no index names: in the full
			// battery's 200 rounds they filled 18 GB in 12 minutes.
			kr.k.must("prune", "--keep-delete", "0s")
		}
		all := append(kr.trim(kr.k, snaps, killKeep), kr.backupInto(kr.k))
		variants := [][]string{nil, {"--instant-delete"}, {"--min-fill", "0.9", "--compression", "fastest"}}
		return append([]string{"repack"}, variants[run%len(variants)]...), all, all
	}},
	{name: "forget --prune", exact: true, prepare: func(kr *killRun, run int, snaps []killSnap) ([]string, []string, []string) {
		if run%10 == 9 {
			// The packs it marks wait a day: in 200 rounds, every
			// check --read-data read gigabytes more than the last.
			kr.k.must("prune", "--keep-delete", "0s")
		}
		all := append(tags(snaps), kr.backupInto(kr.k))
		keep := all[max(0, len(all)-killKeep):]
		return []string{"forget", "--keep-last", strconv.Itoa(killKeep), "--prune"}, keep, keep
	}},
	{name: "copy", prepare: func(kr *killRun, run int, snaps []killSnap) ([]string, []string, []string) {
		kr.trim(kr.from, kr.from.snapshots(), killKeep)
		before := kr.trim(kr.k, snaps, killKeep)
		tag := kr.backupInto(kr.from)
		return []string{"copy"}, before, append(before, tag)
	}},
	{name: "tag", prepare: func(kr *killRun, run int, snaps []killSnap) ([]string, []string, []string) {
		all := append(kr.trim(kr.k, snaps, killKeep), kr.backupInto(kr.k))
		return []string{"tag", "--add", fmt.Sprintf("k%d", run+1), "--remove", fmt.Sprintf("k%d", run)}, all, all
	}},
	{name: "rewrite", prepare: func(kr *killRun, run int, snaps []killSnap) ([]string, []string, []string) {
		tag := kr.backupInto(kr.k)
		all := append(kr.trim(kr.k, snaps, killKeep), tag)
		args := []string{"rewrite", "--exclude", "x-*", "--tag", tag}
		if run%2 == 1 {
			args = append(args, "--forget")
		}
		return args, all, all
	}},
}

// killHeader is the header of the battery's table (section "kills").
var killHeader = []string{"command", "backend", "kills", "killed midway", "locks named by unlock", "survived (unlock, check --read-data, restores, re-run)", "form"}

// batteryForm names the battery's length for the record: the short form
// kills fewer times on the remote backends.
func batteryForm() string {
	form := "short (remote backends: 1 kill per command; SFTP: backup only)"
	if stressMode() {
		form = "full"
	}
	if n := os.Getenv("DJ_BATTERY_RUNS"); n != "" {
		if !stressMode() {
			form = "short tree"
		}
		form += ", DJ_BATTERY_RUNS=" + n
	}
	return form
}

// killBackend makes repositories on one backend.
type killBackend struct {
	name string
	// kills is the number of kills per command.
	kills int
	// only, when set, names the commands the short form kills (each
	// connection to an SSH server takes a while).
	only []string
	// start starts the backend's server for the test t (a subtest that
	// outlives the repositories) and returns a function that makes a
	// new, uninitialised repository on it for env e.
	start func(t *testing.T) func(e *env, name string) *killRepo
}

// TestBatteryKills kills backup, prune, repack, forget --prune, copy, tag
// and rewrite with SIGKILL at random moments (up to 1.1 times the
// command's measured run time), on the local backend, SFTP (OpenSSH),
// S3 (versitygw), REST (`dj serve`) and rclone (`rclone serve restic
// --stdio` on a local path). After every kill, `dj unlock`
// names the lock the killed process left and removes it, check
// --read-data passes, every snapshot restores to the manifest of its
// source and none that must survive is gone; then the command runs again
// to completion. The short form uses a small tree and kills each command
// 5 times locally and once on S3, REST and rclone, and only backup (once) on
// SFTP, whose every command opens an SSH connection; `make stress` kills
// each command 200 times on every backend, with a larger tree
// (DJ_BATTERY_RUNS=N sets the kills per command and backend, for every
// command on every backend, SFTP too).
func TestBatteryKills(t *testing.T) {
	const seed = 20261204
	local := batteryRuns(5, 200)
	remote := batteryRuns(1, 200)
	if n, err := strconv.Atoi(os.Getenv("DJ_BATTERY_RUNS")); err == nil && n > 0 {
		local, remote = n, n
	}
	backends := []killBackend{
		{name: "local", kills: local, start: func(t *testing.T) func(*env, string) *killRepo {
			return func(e *env, name string) *killRepo { return &killRepo{e: e, dir: e.repo} }
		}},
	}
	if !testing.Short() {
		backends = append(backends,
			killBackend{name: "sftp", kills: remote, only: batteryOnly("backup"), start: func(t *testing.T) func(*env, string) *killRepo {
				sshd := testserver.StartSSHD(t)
				return func(e *env, name string) *killRepo {
					dir := filepath.Join(sshd.Dir, "srv", strings.ReplaceAll(name, " ", "-"))
					return &killRepo{e: e, pre: []string{"-o", "sftp.args=" + sshd.SSHArgs()},
						extra: []string{"DJ_REPOSITORY=sftp:" + testserver.SSHHost + ":" + dir, "DJ_CACHE_DIR=" + filepath.Join(e.dir, "cache")}}
				}
			}},
			killBackend{name: "s3", kills: remote, start: func(t *testing.T) func(*env, string) *killRepo {
				s3 := testserver.StartS3Server(t)
				return func(e *env, name string) *killRepo {
					loc := fmt.Sprintf("s3:%s/dj-kill-%d/repo", s3.URL, s3BucketSeq.Add(1))
					return &killRepo{e: e, extra: append(s3.Env(e.dir), "DJ_REPOSITORY="+loc, "DJ_CACHE_DIR="+filepath.Join(e.dir, "cache"))}
				}
			}},
			killBackend{name: "rest", kills: remote, start: func(t *testing.T) func(*env, string) *killRepo {
				return func(e *env, name string) *killRepo {
					return &killRepo{e: e, extra: []string{"DJ_REPOSITORY=rest:" + e.serve(), "DJ_CACHE_DIR=" + filepath.Join(e.dir, "cache")}}
				}
			}},
			// rclone: `rclone serve restic --stdio` on a local path, the
			// child of every dj; a kill of dj ends it mid-request.
			killBackend{name: "rclone", kills: remote, start: func(t *testing.T) func(*env, string) *killRepo {
				requireCmd(t, "rclone")
				inPlace := rcloneWritesInPlace(t)
				return func(e *env, name string) *killRepo {
					extra := append(rcloneEnv(t, e, filepath.Join(e.dir, "rclone-repo")), "DJ_CACHE_DIR="+filepath.Join(e.dir, "cache"))
					return &killRepo{e: e, inPlace: inPlace, extra: extra}
				}
			}},
		)
	}
	begin := time.Now()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			newRepo := b.start(t)
			for i, c := range killCmds {
				if b.only != nil && !slices.Contains(b.only, c.name) {
					continue
				}
				t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
					kr := killCommand(t, b.name, b.kills, newRepo, c, seed+uint64(i))
					survived := kr.kills
					if t.Failed() {
						survived--
					}
					recordReliability(t, "kills", killHeader, c.name, b.name, strconv.Itoa(kr.kills),
						strconv.Itoa(kr.midway), strconv.Itoa(kr.named), strconv.Itoa(survived), batteryForm())
				})
			}
		})
	}
	t.Logf("%v in all", time.Since(begin).Round(time.Millisecond))
}

// killCommand kills command c kills times on a new repository made by
// newRepo on backend.
func killCommand(t *testing.T, backend string, kills int, newRepo func(*env, string) *killRepo, c killCmd, seed uint64) (kr *killRun) {
	e := newEnv(t)
	e.extraEnv = append(e.extraEnv, "DJ_TEST_RETRY=attempts=3,delay=100ms")
	kr = &killRun{t: t, k: newRepo(e, c.name), g: newTreeGen(t, seed), src: filepath.Join(e.dir, "src"),
		newBytes: 256 << 10, want: map[string]manifest{}, rewrite: c.name == "rewrite"}
	size := int64(1 << 20)
	if stressMode() {
		size, kr.newBytes = 24<<20, 4<<20
	}
	kr.g.addFiles(kr.src, size)
	kr.k.must("init")
	if c.name == "copy" {
		from := filepath.Join(e.dir, "from")
		kr.from = &killRepo{e: e, extra: []string{"DJ_REPOSITORY=" + from}, dir: from}
		kr.from.must("init")
		kr.k.extra = append(kr.k.extra, "DJ_FROM_REPOSITORY="+from, "DJ_FROM_PASSWORD_FILE="+filepath.Join(e.dir, "password"))
	}

	// The run time to kill within: a complete run first, then every run
	// that finished before its kill.
	args, _, needDone := c.prepare(kr, 0, kr.k.snapshots())
	start := time.Now()
	kr.k.must(args...)
	took := time.Since(start)

	begin := time.Now()
	for run := 1; run <= kills; run++ {
		snaps := kr.k.snapshots()
		c.checkDone(t, run-1, snaps, needDone)
		var needKilled []string
		args, needKilled, needDone = c.prepare(kr, run, snaps)
		delay := time.Duration(kr.g.rng.Float64() * 1.1 * float64(took))
		p := kr.k.start(args...)
		time.Sleep(delay)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		res, killed := p.wait()
		what := fmt.Sprintf("%s, kill %d after %v", c.name, run, delay.Round(time.Millisecond))
		switch {
		case killed:
			kr.midway++
		case res.code == 0:
			took = p.ended.Sub(p.started)
		default:
			t.Fatalf("%s: %v failed by itself: exit %d\n%s%s", what, args, res.code, res.stdout, res.stderr)
		}
		kr.kills++
		if kr.killed == nil {
			kr.killed = map[int]bool{}
		}
		kr.killed[p.cmd.Process.Pid] = true
		kr.named += kr.unlock(kr.k, p.cmd.Process.Pid, what)
		if kr.from != nil {
			kr.unlock(kr.from, p.cmd.Process.Pid, what+" (source)")
		}
		kr.verify(kr.k, needKilled, what)
		kr.k.must(args...) // the re-run; the next round checks what it left
	}
	c.checkDone(t, kills, kr.k.snapshots(), needDone)
	if stressMode() {
		kr.verify(kr.k, needDone, "at the end")
	}
	t.Logf("%s on %s: %d kills, %d midway, %d locks named by unlock, %d left a file cut short; runs take %v; %v",
		c.name, backend, kr.kills, kr.midway, kr.named, kr.cutShort, took.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	return kr
}

// lockLostTiming shortens the lock timing of every dj in
// TestBatteryLockLost: refreshed every 300ms, stale after 2s.
const lockLostTiming = "DJ_TEST_LOCK=refresh=300ms,stale=2s"

// TestBatteryLockLost stops a backup (SIGSTOP) once it has uploaded a
// pack, and while it is stopped another client takes its lock for gone
// and prunes: either because the lock went stale (not refreshed for
// longer than its stale time), or because `dj unlock --remove-all`
// removed it. Prune deletes the stopped backup's packs. On SIGCONT the
// backup must notice that its lock was lost and fail with a clear error,
// without writing a snapshot (which would name the deleted packs); the
// repository checks, the earlier snapshot restores, and the backup run
// again completes (restic #2715, #3486).
func TestBatteryLockLost(t *testing.T) {
	runs := batteryRuns(1, 50)
	e := newEnv(t)
	e.extraEnv = append(e.extraEnv, lockLostTiming)
	e.must("init")
	g := newTreeGen(t, 3486)
	src := filepath.Join(e.dir, "src")
	g.addFiles(src, 1<<20)
	want := map[string]manifest{e.backupSnapshot(src): scanTree(t, src)}
	for _, how := range []string{"stale", "removed"} {
		var pruned, failed, written, named int
		for run := 0; run < runs; run++ {
			big := filepath.Join(e.dir, "big")
			os.RemoveAll(big)
			g.addFiles(big, 24<<20)
			before := e.packCount()
			// Removed: a stale time long enough that only the removal
			// of the lock file can tell the backup its lock is lost.
			timing, reason := []string(nil), "not refreshed since"
			if how == "removed" {
				timing, reason = []string{"DJ_TEST_LOCK=refresh=300ms,stale=1m"}, "was removed from the repository"
			}
			p, _ := e.start(timing, false, "--limit-upload", "8192", "--pack-size", "4", "backup", big)
			deadline := time.Now().Add(time.Minute)
			for e.packCount() == before {
				if time.Now().After(deadline) {
					p.cmd.Process.Kill()
					t.Fatal("the backup wrote no pack within a minute")
				}
				select {
				case <-p.done:
					res, _ := p.wait()
					t.Fatalf("the backup ended before it wrote a pack: exit %d\n%s", res.code, res.stderr)
				case <-time.After(5 * time.Millisecond):
				}
			}
			if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			if how == "stale" {
				time.Sleep(2500 * time.Millisecond) // past the stale time
			} else {
				out := e.must("unlock", "--remove-all")
				if !strings.Contains(out, "PID "+strconv.Itoa(p.cmd.Process.Pid)+" ") {
					t.Errorf("unlock --remove-all does not name the stopped backup's lock:\n%s", out)
				} else {
					named++
				}
			}
			packs := e.packCount()
			var pj pruneJSON
			parseJSON(t, "prune --json", e.must("prune", "--json", "--keep-delete", "0s", "--max-unused", "0%"), &pj)
			pruned += len(pj.UnindexedDeleted) + len(pj.PacksDeleted)
			t.Logf("%s run %d: backup stopped for %v with %d new packs; prune deleted %d unindexed, %d indexed packs",
				how, run, time.Since(stopped).Round(time.Millisecond), packs-before, len(pj.UnindexedDeleted), len(pj.PacksDeleted))
			if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			res, killed := p.wait()
			msg := strings.TrimSpace(res.stderr)
			switch {
			case killed:
				t.Fatalf("%s run %d: the backup died of a signal", how, run)
			case res.code == 0:
				written++
				t.Errorf("%s run %d: the backup whose lock was lost succeeded:\n%s", how, run, res.stdout)
			case !strings.Contains(msg, "lock was lost") || !strings.Contains(msg, reason) || strings.Count(msg, "\n") > 0:
				t.Errorf("%s run %d: the backup failed (exit %d) without one clear line saying its lock was lost (%s):\n%s", how, run, res.code, reason, msg)
			default:
				failed++
				t.Logf("%s run %d: exit %d: %s", how, run, res.code, msg)
			}
			if n := len(e.snapshots()); n != len(want) {
				written++
				t.Fatalf("%s run %d: %d snapshots after the backup that lost its lock, want %d", how, run, n, len(want))
			}
			if left := e.locksLeft(); len(left) > 0 {
				t.Errorf("%s run %d: the failed backup left its lock: %v", how, run, left)
				e.must("unlock", "--remove-all")
			}
			// What the prune left (pending packs, an index naming
			// deleted packs of the stopped backup) is cleaned up, the
			// repository checks, and the backup taken again works.
			e.must("prune", "--keep-delete", "0s", "--max-unused", "0%")
			e.checkAndRestoreAll(src, want)
			if r := e.run("backup", "--quiet", big); r.code != 0 {
				t.Fatalf("%s run %d: the backup run again: exit %d\n%s", how, run, r.code, r.stderr)
			}
			e.must("check", "--read-data")
			// Keep only the first snapshot for the next run.
			for _, s := range e.snapshots() {
				if _, ok := want[s.ID]; !ok {
					e.must("forget", s.ID)
				}
			}
		}
		// One table for the section: a stop counts as a kill; survived
		// means the backup failed with its lost lock and wrote nothing.
		recordReliability(t, "kills", killHeader,
			fmt.Sprintf("backup SIGSTOPped, lock %s, other client prunes (%d packs pruned, %d snapshots written)", how, pruned, written),
			"local", strconv.Itoa(runs), strconv.Itoa(runs), strconv.Itoa(named), strconv.Itoa(failed), batteryForm())
		if pruned == 0 {
			t.Errorf("%s: prune deleted none of the stopped backups' packs: the test did not test the case", how)
		}
	}
}
