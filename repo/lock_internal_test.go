package repo

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo/index"
	"dj/repo/snapshot"
)

// TestLockLostStopsWrites: a backup whose lock went unrefreshed past the
// point where others may call it stale (a stopped process, a suspended
// laptop) must not publish an index or a snapshot, because a prune may
// meanwhile have deleted the packs they would name; and a later refresh
// must not make the lock look live again.
func TestLockLostStopsWrites(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepository(t, be)
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	sn := &snapshot.Snapshot{Time: time.Now(), Paths: []string{"/x"}}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatalf("snapshot with a live lock: %v", err)
	}

	// The process was stopped for 26 minutes: the refresher never ran.
	l.mu.Lock()
	l.lastOK = l.lastOK.Add(-26 * time.Minute)
	l.mu.Unlock()
	if err := r.SaveSnapshot(ctx, sn); !errors.Is(err, ErrLockLost) {
		t.Fatalf("snapshot after the lock was lost: %v, want ErrLockLost", err)
	}
	if _, err := r.SaveIndexFile(ctx, &index.File{}); !errors.Is(err, ErrLockLost) {
		t.Fatalf("index after the lock was lost: %v, want ErrLockLost", err)
	}
	// A refresh now would succeed on the storage, but the lock stays lost.
	l.mu.Lock()
	l.lastOK = time.Now().Round(0)
	l.mu.Unlock()
	if err := r.CheckLocks(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("a lost lock came back: %v", err)
	}
	var n int
	be.List(ctx, backend.SnapshotFile, func(backend.FileInfo) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d snapshot files, want only the one written before the loss", n)
	}
}

// TestLockUnlockForgetsLock: an unlocked lock no longer guards writes.
func TestLockUnlockForgetsLock(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t, mem.New())
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.lastOK = l.lastOK.Add(-time.Hour)
	l.mu.Unlock()
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.CheckLocks(); err != nil {
		t.Fatalf("an unlocked lock still counts: %v", err)
	}
}

// stuckLocks is a backend whose listing of locks fails and whose removals
// hang until their context ends, as an unreachable server behind the
// retry layer.
type stuckLocks struct{ backend.Backend }

func (s stuckLocks) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t == backend.LockFile {
		return errors.New("server unreachable")
	}
	return s.Backend.List(ctx, t, fn)
}

func (s stuckLocks) Remove(ctx context.Context, h backend.Handle) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestLockRemovalAfterFailureBounded: when taking the lock fails after its
// file was written, the removal of that file ends within LockRemoveTimeout
// even though the storage never answers.
func TestLockRemovalAfterFailureBounded(t *testing.T) {
	r := TestRepository(t, mem.New())
	r.be = stuckLocks{r.be}
	start := time.Now()
	if _, err := r.Lock(context.Background(), LockShared); err == nil {
		t.Fatal("Lock succeeded although the locks cannot be listed")
	}
	if d := time.Since(start); d < LockRemoveTimeout || d > LockRemoveTimeout+2*time.Second {
		t.Errorf("Lock returned after %v, want about %v", d, LockRemoveTimeout)
	}
}

// TestLockRemovedIsLost: a lock whose file another process removed (an
// unlock on another host that took it for stale, `dj unlock
// --remove-all`) is lost: a prune may have run without seeing it. Its
// refresher notices and closes Lost, and SaveSnapshot refuses.
func TestLockRemovedIsLost(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepository(t, be)
	r.opts.LockRefresh, r.opts.LockStale = 50*time.Millisecond, time.Second
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	removed, err := r.RemoveLocks(ctx, true)
	if err != nil || len(removed) != 1 {
		t.Fatalf("RemoveLocks: %v, %v", removed, err)
	}
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("the refresher did not notice that the lock file was removed")
	}
	err = r.SaveSnapshot(ctx, &snapshot.Snapshot{Time: time.Now(), Paths: []string{"/x"}})
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("snapshot after the lock file was removed: %v, want ErrLockLost", err)
	}
	t.Logf("error: %v", err)
}

// TestLockStaleTimingFromOptions: the stale time of the handle that lists
// the locks decides staleness (tests shorten it), and the refresher keeps
// a live lock fresh.
func TestLockStaleTimingFromOptions(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t, mem.New())
	r.opts.LockRefresh, r.opts.LockStale = 50*time.Millisecond, 400*time.Millisecond
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := l.Check(); err != nil {
		t.Fatalf("a refreshed lock is lost: %v", err)
	}
	locks, err := r.ListLocks(ctx)
	if err != nil || len(locks) != 1 || locks[0].Stale() {
		t.Fatalf("want one live lock, got %v, %v", locks, err)
	}
	l.Unlock(ctx)
	// A lock file written 1s ago by a process of another host.
	old := LockInfo{Time: time.Now().Add(-time.Second), Created: time.Now().Add(-time.Second), Kind: LockShared, Hostname: "elsewhere", PID: 1}
	if _, err := r.writeLock(ctx, &old); err != nil {
		t.Fatal(err)
	}
	locks, _ = r.ListLocks(ctx)
	if len(locks) != 1 || !locks[0].Stale() || !strings.Contains(locks[0].StaleReason(), "not refreshed") {
		t.Fatalf("want one stale lock, got %v", locks)
	}
}

// stopDuringSnapshot is a backend on which saving a snapshot file takes
// as long as a stopped process: the lock goes stale during the write.
type stopDuringSnapshot struct {
	backend.Backend
	l *Lock
}

func (s stopDuringSnapshot) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := s.Backend.Save(ctx, h, data); err != nil {
		return err
	}
	if h.Type == backend.SnapshotFile {
		s.l.mu.Lock()
		s.l.lastOK = s.l.lastOK.Add(-time.Hour)
		s.l.mu.Unlock()
	}
	return nil
}

// TestLockLostDuringSnapshotWrite: a lock that went stale while the
// snapshot file was being written (the process was stopped) leaves no
// snapshot: the file is removed again.
func TestLockLostDuringSnapshotWrite(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepository(t, be)
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	r.be = stopDuringSnapshot{r.be, l}
	err = r.SaveSnapshot(ctx, &snapshot.Snapshot{Time: time.Now(), Paths: []string{"/x"}})
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("snapshot written while the lock went stale: %v, want ErrLockLost", err)
	}
	var n int
	be.List(ctx, backend.SnapshotFile, func(backend.FileInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d snapshot files left, want 0", n)
	}
	select {
	case <-l.Lost():
	default:
		t.Fatal("Lost not closed")
	}
}

// unlockDuringRefresh is a backend on which, once on is set, another
// client removes every lock file while this one writes a lock file.
type unlockDuringRefresh struct {
	backend.Backend
	on *atomic.Bool
}

func (u unlockDuringRefresh) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if h.Type == backend.LockFile && u.on.Load() {
		u.Backend.List(ctx, backend.LockFile, func(fi backend.FileInfo) error {
			return u.Backend.Remove(ctx, backend.Handle{Type: backend.LockFile, Name: fi.Name})
		})
	}
	return u.Backend.Save(ctx, h, data)
}

// TestLockRemovedDuringRefresh: a lock file removed by another client
// while a refresh writes its successor is lost, although the successor
// exists: a prune may have listed the locks in between and seen none.
func TestLockRemovedDuringRefresh(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t, mem.New())
	r.opts.LockRefresh, r.opts.LockStale = 50*time.Millisecond, time.Minute
	var on atomic.Bool
	r.be = unlockDuringRefresh{r.be, &on}
	l, err := r.Lock(ctx, LockShared)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	on.Store(true)
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("a lock removed during its refresh is taken for held")
	}
	if err := r.SaveSnapshot(ctx, &snapshot.Snapshot{Time: time.Now(), Paths: []string{"/x"}}); !errors.Is(err, ErrLockLost) {
		t.Fatalf("snapshot after the lock was removed: %v, want ErrLockLost", err)
	}
}

// refreshOnLoad is a backend on which another client's lock refresh lands
// between a lister's listing and its load: the lock file is replaced by a
// new one (written first, the old removed after) just before it is read.
type refreshOnLoad struct {
	backend.Backend
	r         *Repository
	refreshed LockInfo // the lock's content after the refresh
	once      sync.Once
}

func (b *refreshOnLoad) Load(ctx context.Context, h backend.Handle, off int64, n int) ([]byte, error) {
	if h.Type == backend.LockFile {
		b.once.Do(func() {
			if _, err := b.r.writeLock(ctx, &b.refreshed); err != nil {
				panic(err)
			}
			if err := b.Backend.Remove(ctx, h); err != nil {
				panic(err)
			}
		})
	}
	return b.Backend.Load(ctx, h, off, n)
}

// TestListLocksDuringRefresh: a lock file replaced by its holder's refresh
// between the listing and the load is still seen (listed again), so a
// prune never takes a held lock for no lock.
func TestListLocksDuringRefresh(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t, mem.New())
	info := LockInfo{Time: time.Now(), Created: time.Now(), Kind: LockShared, Hostname: "elsewhere", PID: 1}
	if _, err := r.writeLock(ctx, &info); err != nil {
		t.Fatal(err)
	}
	refreshed := info
	refreshed.Time = info.Time.Add(time.Second)
	r.be = &refreshOnLoad{Backend: r.be, r: r, refreshed: refreshed}
	locks, err := r.ListLocks(ctx)
	if err != nil || len(locks) != 1 || locks[0].Stale() {
		t.Fatalf("want the one live lock, got %v, %v", locks, err)
	}
}

// TestUnreadableLocks: a lock file that does not authenticate (cut short
// by an upload that never finished on storage that writes in place, as
// rclone before 1.63 does, or damaged) stops no one; RemoveLocks keeps it
// while it is younger than the stale time (it may be a live lock still
// being written) and removes it, named as unreadable, once it is older;
// --remove-all removes it at once.
func TestUnreadableLocks(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepository(t, be)
	r.opts.LockRefresh, r.opts.LockStale = 50*time.Millisecond, 400*time.Millisecond
	info := LockInfo{Time: time.Now(), Created: time.Now(), Kind: LockExclusive, Hostname: "elsewhere", PID: 1}
	id, err := r.writeLock(ctx, &info)
	if err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.LockFile, Name: id.String()}
	whole, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, h, whole[:len(whole)/2]); err != nil { // cut short
		t.Fatal(err)
	}
	l, err := r.Lock(ctx, LockExclusive)
	if err != nil {
		t.Fatalf("an unreadable lock file blocked an exclusive lock: %v", err)
	}
	l.Unlock(ctx)
	if locks, err := r.ListLocks(ctx); err != nil || len(locks) != 0 {
		t.Fatalf("ListLocks: %v, %v; want no lock", locks, err)
	}
	removed, err := r.RemoveLocks(ctx, false)
	if err != nil || len(removed) != 0 {
		t.Fatalf("RemoveLocks of a fresh unreadable lock: %v, %v; want it kept", removed, err)
	}
	time.Sleep(500 * time.Millisecond)
	removed, err = r.RemoveLocks(ctx, false)
	if err != nil || len(removed) != 1 || removed[0].ID != id {
		t.Fatalf("RemoveLocks of an old unreadable lock: %v, %v; want it removed", removed, err)
	}
	if why := removed[0].StaleReason(); !strings.Contains(why, "unreadable") || !strings.Contains(why, "not written for") {
		t.Errorf("reason %q", why)
	}
	if s := removed[0].String(); !strings.Contains(s, "unreadable lock "+id.Short()) {
		t.Errorf("String() = %q", s)
	}
	if _, err := be.Stat(ctx, h); err == nil {
		t.Fatal("the lock file is still there")
	}
	// --remove-all takes a fresh one at once.
	if err := be.Save(ctx, h, []byte("not a lock")); err != nil {
		t.Fatal(err)
	}
	if removed, err := r.RemoveLocks(ctx, true); err != nil || len(removed) != 1 {
		t.Fatalf("RemoveLocks(all): %v, %v", removed, err)
	}
}
