package repo_test

// Lock contention (issue 12, "Load and concurrency"): many holders of
// shared locks and an exclusive contender take and release locks on one
// repository, in goroutines of one process and in separate processes,
// while a witness outside the lock protocol records who holds what. An
// exclusive holder must never overlap any other holder, a maintenance
// holder never another maintenance holder.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/local"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
)

// lockConflicts is the lock table of repo/lock.go, restated for the
// witness: exclusive conflicts with everything, maintenance with
// maintenance.
func lockConflicts(a, b repo.LockKind) bool {
	if a == repo.LockExclusive || b == repo.LockExclusive {
		return true
	}
	return a == repo.LockMaintenance && b == repo.LockMaintenance
}

// holdWitness counts the current holders of each lock kind, outside the
// lock protocol, and records every overlap the protocol should have
// prevented. The interval it sees (enter to leave) lies inside the one
// the lock is held, so any overlap it records is a real one.
type holdWitness struct {
	mu         sync.Mutex
	held       map[repo.LockKind]int
	violations []string
}

func (w *holdWitness) enter(kind repo.LockKind, who string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, n := range w.held {
		if n > 0 && lockConflicts(kind, k) {
			w.violations = append(w.violations, fmt.Sprintf("%s took a %s lock while %d %s lock(s) were held", who, kind, n, k))
		}
	}
	w.held[kind]++
}

func (w *holdWitness) leave(kind repo.LockKind) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held[kind]--
}

// contender is one party of a contention run: its lock kind and how long
// it pauses between acquisitions (holders of shared locks pause so that
// the exclusive contender gets its turns).
type contender struct {
	kind  repo.LockKind
	pause time.Duration
}

// contentionResult counts what a run did.
type contentionResult struct {
	acquired map[repo.LockKind]int64
	refused  int64 // ErrLocked answers
}

// contentionContenders is the mix: 8 shared and 1 exclusive
// contender, plus (with maint) two maintenance contenders.
func contentionContenders(maint bool) []contender {
	var cs []contender
	for range 8 {
		cs = append(cs, contender{repo.LockShared, 15 * time.Millisecond})
	}
	cs = append(cs, contender{repo.LockExclusive, time.Millisecond})
	if maint {
		cs = append(cs, contender{repo.LockMaintenance, 4 * time.Millisecond}, contender{repo.LockMaintenance, 4 * time.Millisecond})
	}
	return cs
}

// runContention lets the contenders, each with its own repository handle
// from open, take and release locks until total acquisitions succeeded
// and every contender had its turns (the exclusive one a tenth of them),
// and returns the counts.
func runContention(t *testing.T, open func() *repo.Repository, cs []contender, total int64) contentionResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := &holdWitness{held: map[repo.LockKind]int{}}
	var done, refused atomic.Int64
	var mine = make([]atomic.Int64, len(cs))
	var wg sync.WaitGroup
	errs := make(chan error, len(cs))
	for i, c := range cs {
		r := open()
		who := fmt.Sprintf("contender %d (%s)", i, c.kind)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			for {
				// Every contender gets its turns: the exclusive one a
				// tenth of them, the others at least one.
				quota := int64(1)
				if c.kind == repo.LockExclusive {
					quota = max(1, total/10)
				}
				if done.Load() >= total && mine[i].Load() >= quota {
					return
				}
				if ctx.Err() != nil {
					errs <- fmt.Errorf("%s: %d acquisitions before the deadline", who, mine[i].Load())
					return
				}
				l, err := r.Lock(ctx, c.kind)
				if errors.Is(err, repo.ErrLocked) {
					refused.Add(1)
					time.Sleep(time.Duration(rng.Int64N(int64(c.pause) + 1)))
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", who, err)
					return
				}
				w.enter(c.kind, who)
				time.Sleep(time.Duration(rng.Int64N(int64(time.Millisecond))))
				w.leave(c.kind)
				if err := l.Unlock(ctx); err != nil {
					errs <- fmt.Errorf("%s: unlock: %w", who, err)
					return
				}
				mine[i].Add(1)
				done.Add(1)
				time.Sleep(time.Duration(rng.Int64N(int64(c.pause) + 1)))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, v := range w.violations {
		t.Errorf("mutual exclusion broken: %s", v)
	}
	res := contentionResult{acquired: map[repo.LockKind]int64{}, refused: refused.Load()}
	for i, c := range cs {
		res.acquired[c.kind] += mine[i].Load()
	}
	return res
}

// contentionBackends makes a fresh repository on each backend the unit
// tests use: mem, and local in a temporary directory.
func contentionBackends(t *testing.T) map[string]func() *repo.Repository {
	t.Helper()
	memBe := mem.New()
	repo.TestRepository(t, memBe)
	dir := filepath.Join(t.TempDir(), "repo")
	localBe, err := local.Create(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	repo.TestRepository(t, localBe)
	open := func(be backend.Backend) func() *repo.Repository {
		return func() *repo.Repository {
			r, err := repo.Open(context.Background(), be, repo.TestPassword, repo.Options{KDF: &crypto.TestKDF})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		}
	}
	return map[string]func() *repo.Repository{"mem": open(memBe), "local": open(localBe)}
}

// TestLockContention: 100 acquisitions by 8 shared, 2 maintenance and 1
// exclusive contender on the mem and local backends: no conflicting
// holders ever overlap, and every contender gets its turn. (The battery's
// TestBatteryLocks runs the mix without maintenance contenders.)
func TestLockContention(t *testing.T) {
	for name, open := range contentionBackends(t) {
		t.Run(name, func(t *testing.T) {
			res := runContention(t, open, contentionContenders(true), 100)
			t.Logf("acquired %v, refused %d times", res.acquired, res.refused)
		})
	}
}

// lockHelperEnv, when set in the environment, makes TestBatteryLocks a
// contender process: DIR:KIND:COUNT:PAUSE (see lockHelper).
const lockHelperEnv = "DJ_LOCK_CONTENDER"

// TestBatteryLocks is the battery's lock contention (issue 12): 1,000
// acquisitions in `make stress` (100 in `make test`) by 8 shared and 1
// exclusive contender, first as goroutines on the mem and local backends,
// then as nine processes (this test binary started again as contenders)
// on one local repository, with a witness file that every holder updates
// under flock(2). Mutual exclusion must hold everywhere.
func TestBatteryLocks(t *testing.T) {
	if spec := os.Getenv(lockHelperEnv); spec != "" {
		lockHelper(t, spec)
		return
	}
	total := int64(100)
	if os.Getenv("DJ_STRESS") != "" {
		total = 1000
	}
	start := time.Now()
	for name, open := range contentionBackends(t) {
		res := runContention(t, open, contentionContenders(false), total)
		t.Logf("%s, in process: acquired %v, refused %d times", name, res.acquired, res.refused)
		result := "no overlap"
		if t.Failed() {
			result = "FAILED"
		}
		recordLoad(t, "TestBatteryLocks", name+" (goroutines)", "9", fmt.Sprint(res.acquired[repo.LockShared]+res.acquired[repo.LockExclusive]),
			fmt.Sprintf("%s; shared %d, exclusive %d, refused %d", result, res.acquired[repo.LockShared], res.acquired[repo.LockExclusive], res.refused))
	}

	// Nine processes on one local repository.
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	be, err := local.Create(context.Background(), repoDir)
	if err != nil {
		t.Fatal(err)
	}
	repo.TestRepository(t, be)
	witness := filepath.Join(dir, "witness")
	if err := os.WriteFile(witness, []byte("0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cs := contentionContenders(false)
	perShared := (total - total/10) / 8
	type child struct {
		cmd  *exec.Cmd
		kind repo.LockKind
		out  strings.Builder
	}
	var children []*child
	for _, c := range cs {
		n := perShared
		if c.kind == repo.LockExclusive {
			n = total - 8*perShared
		}
		ch := &child{kind: c.kind, cmd: exec.Command(os.Args[0], "-test.run=^TestBatteryLocks$", "-test.count=1")}
		ch.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%s:%d:%d", lockHelperEnv, repoDir, c.kind, n, c.pause.Microseconds()))
		ch.cmd.Stdout, ch.cmd.Stderr = &ch.out, &ch.out
		if err := ch.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, ch)
	}
	for _, ch := range children {
		if err := ch.cmd.Wait(); err != nil {
			t.Errorf("contender process (%s): %v\n%s", ch.kind, err, ch.out.String())
		}
	}
	b, err := os.ReadFile(witness + ".log")
	if err != nil {
		t.Fatal(err)
	}
	acquired := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		acquired[line]++
	}
	if got := int64(acquired[string(repo.LockShared)] + acquired[string(repo.LockExclusive)]); got != total {
		t.Errorf("the witness saw %d acquisitions, want %d: %v", got, total, acquired)
	}
	t.Logf("processes: acquired %v in %v", acquired, time.Since(start).Round(time.Millisecond))
	result := "no overlap"
	if t.Failed() {
		result = "FAILED"
	}
	recordLoad(t, "TestBatteryLocks", "local (9 processes)", "9", fmt.Sprint(acquired[string(repo.LockShared)]+acquired[string(repo.LockExclusive)]),
		fmt.Sprintf("%s; shared %d, exclusive %d", result, acquired[string(repo.LockShared)], acquired[string(repo.LockExclusive)]))
}

// lockHelper is a contender process: it opens the local repository DIR
// and takes COUNT locks of KIND, pausing up to PAUSE microseconds after
// each refusal and each release. While it holds a lock it updates the
// witness file next to DIR ("shared exclusive" holder counts) under
// flock(2), failing on any overlap, and logs each acquisition's kind.
func lockHelper(t *testing.T, spec string) {
	f := strings.Split(spec, ":")
	if len(f) != 4 {
		t.Fatalf("bad %s: %q", lockHelperEnv, spec)
	}
	dir, kind := f[0], repo.LockKind(f[1])
	count, err1 := strconv.Atoi(f[2])
	pauseUS, err2 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	pause := time.Duration(pauseUS) * time.Microsecond
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	be, err := local.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, repo.TestPassword, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	witness := filepath.Join(filepath.Dir(dir), "witness")
	// update applies delta to this kind's holder count and fails when a
	// conflicting holder is counted.
	update := func(delta int) {
		fd, err := os.OpenFile(witness, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		if err := syscall.Flock(int(fd.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		defer syscall.Flock(int(fd.Fd()), syscall.LOCK_UN)
		var shared, excl int
		buf := make([]byte, 64)
		n, _ := fd.ReadAt(buf, 0)
		if _, err := fmt.Sscanf(string(buf[:n]), "%d %d", &shared, &excl); err != nil {
			t.Fatalf("witness %q: %v", buf[:n], err)
		}
		if delta > 0 && (excl > 0 || (kind == repo.LockExclusive && shared > 0)) {
			t.Errorf("mutual exclusion broken: PID %d took a %s lock while %d shared and %d exclusive holders were counted", os.Getpid(), kind, shared, excl)
		}
		if kind == repo.LockExclusive {
			excl += delta
		} else {
			shared += delta
		}
		if err := fd.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if _, err := fd.WriteAt(fmt.Appendf(nil, "%d %d\n", shared, excl), 0); err != nil {
			t.Fatal(err)
		}
		if delta > 0 {
			lf, err := os.OpenFile(witness+".log", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(lf, kind)
			lf.Close()
		}
	}
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	for got := 0; got < count; {
		l, err := r.Lock(ctx, kind)
		if errors.Is(err, repo.ErrLocked) {
			time.Sleep(time.Duration(rng.Int64N(int64(pause) + 1)))
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		update(1)
		time.Sleep(time.Duration(rng.Int64N(int64(time.Millisecond))))
		update(-1)
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		got++
		time.Sleep(time.Duration(rng.Int64N(int64(pause) + 1)))
	}
}

// recordLoad appends a row to the battery's "load" table (see
// recordReliability in integration/battery_test.go, whose header this
// repeats): test, backend, clients, lock acquisitions and result; the
// other columns are not this test's.
func recordLoad(t *testing.T, test, backendName, clients, locks, result string) {
	t.Helper()
	dir := os.Getenv("DJ_RELIABILITY_DIR")
	if dir == "" {
		return
	}
	header := []string{"test", "backend", "clients", "backups", "snapshots restored", "mount reads compared", "checks passed", "prunes", "lock acquisitions", "simulated days", "result"}
	cells := []string{test, backendName, clients, "", "", "", "", "", locks, "", result}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Error(err)
		return
	}
	path := filepath.Join(dir, "load.md")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	// The integration battery appends to the same file from another
	// process: the header is written under an exclusive flock(2), once.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Error(err)
		return
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	var b strings.Builder
	if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
		fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	}
	fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	if _, err := f.WriteString(b.String()); err != nil {
		t.Error(err)
	}
}
