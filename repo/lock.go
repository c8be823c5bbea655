package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"

	"dj/backend"
	"dj/repo/crypto"
)

// LockKind says what a lock excludes.
type LockKind string

// The lock kinds. Read locks (restore, mount, check, listings) and shared
// locks (backup: a writer that may refer to existing blobs) coexist with each
// other and with a maintenance lock; a maintenance lock (prune, repack)
// excludes other maintenance locks; an exclusive lock excludes every lock.
// Prune waits for shared locks older than the packs it deletes, never for
// read locks: a mount may run for weeks.
const (
	LockRead        LockKind = "read"
	LockShared      LockKind = "shared"
	LockMaintenance LockKind = "maintenance"
	LockExclusive   LockKind = "exclusive"
)

// Lock timing.
const (
	LockRefreshInterval = 5 * time.Minute
	LockStaleAfter      = 30 * time.Minute
)

// ErrLocked means a conflicting lock is held.
var ErrLocked = errors.New("repository is locked")

// ErrLockLost means a held lock went unrefreshed for so long that other
// processes may have taken it for stale (a suspended machine, a stopped
// process, storage that was unreachable). A prune may then have deleted
// packs this process wrote, so the process must not write an index or a
// snapshot that could refer to them.
var ErrLockLost = errors.New("the repository lock was lost")

// lockTiming returns the lock refresh interval and stale time of this
// handle: LockRefreshInterval and LockStaleAfter unless Options set both
// (tests shorten them) with the refresh shorter than the stale time.
//
// A lock may go lostAfter = stale - refresh without a successful refresh
// before its holder treats it as lost: a refresh interval short of the
// stale time, so the holder gives up before anyone else may call the lock
// stale.
func (r *Repository) lockTiming() (refresh, stale time.Duration) {
	if o := r.opts; o.LockRefresh > 0 && o.LockStale > o.LockRefresh {
		return o.LockRefresh, o.LockStale
	}
	return LockRefreshInterval, LockStaleAfter
}

// LockInfo is the content of a lock file.
type LockInfo struct {
	Time      time.Time `json:"time"`    // last refresh
	Created   time.Time `json:"created"` // when the operation took the lock
	Kind      LockKind  `json:"kind"`
	Exclusive bool      `json:"exclusive"`
	Hostname  string    `json:"hostname"`
	Username  string    `json:"username"`
	PID       int       `json:"pid"`

	ID crypto.ID `json:"-"`

	// staleAfter is the stale time of the handle that loaded the lock
	// (zero: LockStaleAfter).
	staleAfter time.Duration
	// damaged says why a lock file could not be read (it does not
	// authenticate or decode: damaged, or cut short by a write that never
	// finished on storage that does not write atomically); written is
	// then the file's modification time. Only RemoveLocks sees such locks.
	damaged string
	written time.Time
}

// Stale reports whether the lock's holder is certainly gone: not refreshed
// for LockStaleAfter, or its process no longer runs on this host.
func (l *LockInfo) Stale() bool { return l.StaleReason() != "" }

// StaleReason says why the lock is stale ("" when it is not): its process
// is gone, or it was not refreshed in time.
func (l *LockInfo) StaleReason() string {
	stale := l.staleAfter
	if stale <= 0 {
		stale = LockStaleAfter
	}
	if l.damaged != "" {
		// Nothing in it can be trusted: only its age can make it stale.
		if age := time.Since(l.written); age > stale {
			return fmt.Sprintf("unreadable (%s), not written for %s (stale after %s)", l.damaged, age.Round(time.Second), stale)
		}
		return ""
	}
	if age := time.Since(l.Time); age > stale {
		return fmt.Sprintf("not refreshed for %s (stale after %s)", age.Round(time.Second), stale)
	}
	if l.Hostname == hostname() && l.PID > 0 {
		if err := syscall.Kill(l.PID, 0); errors.Is(err, syscall.ESRCH) {
			return fmt.Sprintf("process %d no longer runs on %s", l.PID, l.Hostname)
		}
	}
	return ""
}

func conflicts(a, b LockKind) bool {
	if a == LockExclusive || b == LockExclusive {
		return true
	}
	return a == LockMaintenance && b == LockMaintenance
}

func (l *LockInfo) String() string {
	if l.damaged != "" {
		return fmt.Sprintf("unreadable lock %s written %s", l.ID.Short(), l.written.Format(time.RFC3339))
	}
	return fmt.Sprintf("%s lock %s held by PID %d on %s by %s since %s",
		l.Kind, l.ID.Short(), l.PID, l.Hostname, l.Username, l.Created.Format(time.RFC3339))
}

// Lock is a held lock. It refreshes itself until Unlock.
type Lock struct {
	r    *Repository
	info LockInfo

	mu     sync.Mutex
	id     crypto.ID
	stop   chan struct{}
	done   chan struct{}
	failed error
	// lastOK is the wall-clock time of the last lock file written
	// successfully (monotonic reading stripped: a suspended machine's
	// monotonic clock stands still, the wall clock does not).
	lastOK time.Time
	// refreshEvery and lostAfter are the handle's lock timing: the
	// refresh interval, and the time without a successful refresh after
	// which the lock counts as lost (stale time - refresh interval).
	refreshEvery, lostAfter time.Duration
	// lost is why the lock was lost ("" while it is held); lostCh is
	// closed when it is lost.
	lost   string
	lostCh chan struct{}
}

// Check returns ErrLockLost if the lock has, at any moment since it was
// taken, gone longer than its stale time less one refresh interval
// without a successful refresh, or if a refresh found its file removed.
// Once lost, a lock stays lost: a refresh that succeeds later cannot undo
// what others did while it looked stale.
func (l *Lock) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.checkLocked(time.Now().Round(0))
}

// Lost is closed when the lock is found lost (by its refresher, by Check,
// or by Verify); the command holding it should stop.
func (l *Lock) Lost() <-chan struct{} { return l.lostCh }

func (l *Lock) checkLocked(now time.Time) error {
	if l.lost == "" && now.Sub(l.lastOK) > l.lostAfter {
		l.setLostLocked(fmt.Sprintf("not refreshed since %s, %s ago", l.lastOK.Format(time.RFC3339), now.Sub(l.lastOK).Round(time.Second)))
	}
	if l.lost != "" {
		return fmt.Errorf("%w: %s lock %s %s; nothing more was written (run the command again)", ErrLockLost, l.info.Kind, l.id.Short(), l.lost)
	}
	return nil
}

func (l *Lock) setLostLocked(why string) {
	if l.lost == "" {
		l.lost = why
		close(l.lostCh)
	}
}

// Verify is Check, and also makes sure the lock file is still in the
// repository: another process may have removed it (`dj unlock
// --remove-all`, or an unlock on another host that took it for stale),
// and then a prune may not have seen it.
func (l *Lock) Verify(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkLocked(time.Now().Round(0)); err != nil {
		return err
	}
	return l.statLocked(ctx)
}

// statLocked marks the lock lost if its file is gone. Errors other than
// a missing file are returned as they are: the storage may be briefly
// unreachable, and the time check covers a storage that stays so.
func (l *Lock) statLocked(ctx context.Context) error {
	return l.statIDLocked(ctx, l.id)
}

func (l *Lock) statIDLocked(ctx context.Context, id crypto.ID) error {
	_, err := l.r.be.Stat(ctx, backend.Handle{Type: backend.LockFile, Name: id.String()})
	if errors.Is(err, os.ErrNotExist) {
		l.setLostLocked("was removed from the repository by another process")
		return l.checkLocked(time.Now().Round(0))
	}
	if err != nil {
		return fmt.Errorf("check lock %s: %w", id.Short(), err)
	}
	return nil
}

// ListLocks loads every lock file; unreadable ones are skipped.
func (r *Repository) ListLocks(ctx context.Context) ([]*LockInfo, error) {
	return r.listLocks(ctx, crypto.ID{}, false)
}

// lockLoads is how many lock files listLocks loads at once: on a remote
// repository each load is a round trip.
const lockLoads = 8

// listLocks is ListLocks without loading the lock skip (the caller's own,
// whose content it knows). The files are loaded concurrently.
//
// A refresh writes a holder's new lock file before it removes the old one,
// so a file that vanished between the listing and its load may have been
// replaced by one the listing did not see: the locks are then listed
// again, or a prune could see no lock while a backup holds one.
//
// Lock files that cannot be read are left out (a holder's own checks
// cannot weigh them), unless damaged is set: then each comes back with
// the reason and its modification time, for RemoveLocks.
func (r *Repository) listLocks(ctx context.Context, skip crypto.ID, damaged bool) ([]*LockInfo, error) {
	for attempt := 0; ; attempt++ {
		out, vanished, err := r.listLocksOnce(ctx, skip, damaged)
		if err != nil || !vanished || attempt >= lockRelists {
			return out, err
		}
	}
}

// lockRelists is how many times listLocks lists again after lock files
// vanished under it: each round needs a refresh to land inside it.
const lockRelists = 5

// listLocksOnce lists and loads the lock files once; vanished reports a
// listed file that could no longer be loaded.
func (r *Repository) listLocksOnce(ctx context.Context, skip crypto.ID, damaged bool) (out []*LockInfo, vanished bool, err error) {
	ids, err := r.ListFiles(ctx, backend.LockFile)
	if err != nil {
		return nil, false, err
	}
	infos := make([]*LockInfo, len(ids))
	gone := make([]bool, len(ids))
	sem := make(chan struct{}, lockLoads)
	var wg sync.WaitGroup
	for i, id := range ids {
		if id == skip && !skip.IsNull() {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var li LockInfo
			b, err := r.LoadFile(ctx, backend.LockFile, id)
			if err == nil {
				err = json.Unmarshal(b, &li)
			}
			if err != nil {
				// Removed meanwhile (perhaps replaced by a refresh),
				// or unreadable.
				gone[i] = errors.Is(err, fs.ErrNotExist)
				if damaged && !gone[i] && (errors.Is(err, ErrCorrupt) || b != nil) {
					infos[i] = r.damagedLock(ctx, id, err)
				}
				return
			}
			li.ID = id
			_, li.staleAfter = r.lockTiming()
			infos[i] = &li
		}()
	}
	wg.Wait()
	for i, li := range infos {
		if li != nil {
			out = append(out, li)
		}
		vanished = vanished || gone[i]
	}
	return out, vanished, nil
}

// damagedLock describes the unreadable lock file id, with its
// modification time (now, which keeps it, when the storage cannot say).
func (r *Repository) damagedLock(ctx context.Context, id crypto.ID, why error) *LockInfo {
	li := &LockInfo{ID: id, damaged: why.Error(), written: time.Now()}
	_, li.staleAfter = r.lockTiming()
	if fi, err := r.be.Stat(ctx, backend.Handle{Type: backend.LockFile, Name: id.String()}); err == nil && !fi.ModTime.IsZero() {
		li.written = fi.ModTime
	}
	return li
}

func (r *Repository) writeLock(ctx context.Context, li *LockInfo) (crypto.ID, error) {
	b, err := json.Marshal(li)
	if err != nil {
		return crypto.ID{}, err
	}
	return r.SaveFile(ctx, backend.LockFile, b)
}

// LockRemoveTimeout bounds the removal of a lock after a failure, retries
// of the storage's retry layer included, as the CLI bounds it after
// Ctrl-C.
const LockRemoveTimeout = 5 * time.Second

// lockYieldWait bounds how long a lock that saw a newer conflicting lock
// waits for that lock's owner to see it and step back.
const lockYieldWait = 3 * time.Second

// olderThan orders locks by creation time, then by ID: a total order on
// which two processes that raced for conflicting locks agree.
func (l *LockInfo) olderThan(o *LockInfo) bool {
	if !l.Created.Equal(o.Created) {
		return l.Created.Before(o.Created)
	}
	return l.ID.String() < o.ID.String()
}

// Lock takes a lock of the given kind. It fails with ErrLocked when a
// conflicting lock that is not stale exists.
//
// Two processes that take conflicting locks at the same moment each write
// their lock file and then list the others; at least one of them sees the
// other's. The older of the two (olderThan) wins: a lock that sees an older
// conflicting one removes itself and fails, a lock that sees only newer
// ones waits (up to lockYieldWait) for them to go. A process proceeds only
// after a listing, taken after its own file was written, that shows no
// conflicting lock, so two conflicting holders never both proceed, and two
// processes racing never both give up.
func (r *Repository) Lock(ctx context.Context, kind LockKind) (*Lock, error) {
	now := time.Now()
	li := LockInfo{Time: now, Created: now, Kind: kind, Exclusive: kind == LockExclusive, Hostname: hostname(), Username: currentUser(), PID: os.Getpid()}
	id, err := r.writeLock(ctx, &li)
	if err != nil {
		return nil, fmt.Errorf("create lock: %w", err)
	}
	li.ID = id
	removeOwn := func() {
		// The lock is removed after a failure (or Ctrl-C), often of the
		// storage itself: wait no longer for it than after Ctrl-C. A lock
		// left behind is stale once this process is gone.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), LockRemoveTimeout)
		defer cancel()
		_ = r.be.Remove(rctx, backend.Handle{Type: backend.LockFile, Name: id.String()})
	}
	deadline := time.Now().Add(lockYieldWait)
	for {
		others, err := r.listLocks(ctx, id, false)
		if err != nil {
			removeOwn()
			return nil, err
		}
		var newer *LockInfo
		for _, o := range others {
			if o.ID == id || o.Stale() || !conflicts(kind, o.Kind) {
				continue
			}
			if o.olderThan(&li) {
				removeOwn()
				return nil, fmt.Errorf("%w: %s (if no dj process uses it, run `dj unlock`)", ErrLocked, o)
			}
			newer = o
		}
		if newer == nil {
			break
		}
		if time.Now().After(deadline) {
			removeOwn()
			return nil, fmt.Errorf("%w: %s (if no dj process uses it, run `dj unlock`)", ErrLocked, newer)
		}
		select {
		case <-ctx.Done():
			removeOwn()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	refresh, stale := r.lockTiming()
	l := &Lock{r: r, info: li, id: id, stop: make(chan struct{}), done: make(chan struct{}), lastOK: now.Round(0),
		refreshEvery: refresh, lostAfter: stale - refresh, lostCh: make(chan struct{})}
	r.locks.add(l)
	go l.refresh()
	return l, nil
}

func (l *Lock) refresh() {
	defer close(l.done)
	t := time.NewTicker(l.refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), min(max(l.refreshEvery, time.Second), time.Minute))
			l.mu.Lock()
			info := l.info
			info.Time = time.Now()
			if l.checkLocked(info.Time.Round(0)) != nil {
				// Lost: writing the lock again would make it look
				// live to others although they may have acted on it.
				l.mu.Unlock()
				cancel()
				return
			}
			old := l.id
			id, err := l.r.writeLock(ctx, &info)
			if err != nil {
				l.failed = err
				l.mu.Unlock()
				cancel()
				continue
			}
			l.id = id
			// The old file must still be there once the new one is: a
			// lock file removed by another process (an unlock that
			// took it for stale, unlock --remove-all) means a prune may
			// have run without seeing this lock. Checked after the new
			// file is written, so that anyone who lists the locks after
			// the old file is gone sees the new one.
			if errors.Is(l.statIDLocked(ctx, old), ErrLockLost) {
				l.mu.Unlock()
				cancel()
				return
			}
			l.info = info
			l.lastOK = info.Time.Round(0)
			_ = l.r.be.Remove(ctx, backend.Handle{Type: backend.LockFile, Name: old.String()})
			l.mu.Unlock()
			cancel()
		}
	}
}

// Created returns when the lock was first taken.
func (l *Lock) Created() time.Time { return l.info.Created }

// Unlock stops refreshing and removes the lock file.
func (l *Lock) Unlock(ctx context.Context) error {
	if l == nil {
		return nil
	}
	select {
	case <-l.stop:
		return nil
	default:
	}
	close(l.stop)
	<-l.done
	l.r.locks.remove(l)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.be.Remove(ctx, backend.Handle{Type: backend.LockFile, Name: l.id.String()})
}

// RemoveLocks deletes stale locks, or every lock when all is set, and
// returns those it removed (also when it fails midway).
func (r *Repository) RemoveLocks(ctx context.Context, all bool) ([]*LockInfo, error) {
	locks, err := r.listLocks(ctx, crypto.ID{}, true)
	if err != nil {
		return nil, err
	}
	var removed []*LockInfo
	for _, l := range locks {
		if all || l.Stale() {
			if err := r.be.Remove(ctx, backend.Handle{Type: backend.LockFile, Name: l.ID.String()}); err != nil && !errors.Is(err, os.ErrNotExist) {
				return removed, err
			}
			removed = append(removed, l)
		}
	}
	return removed, nil
}

// heldLocks is the set of locks this repository handle holds; writes that
// publish references to packs (index and snapshot files) check them first.
type heldLocks struct {
	mu  sync.Mutex
	set map[*Lock]bool
}

func (h *heldLocks) add(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.set == nil {
		h.set = map[*Lock]bool{}
	}
	h.set[l] = true
}

func (h *heldLocks) remove(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.set, l)
}

// check returns ErrLockLost if any held lock was lost.
func (h *heldLocks) check() error {
	h.mu.Lock()
	locks := make([]*Lock, 0, len(h.set))
	for l := range h.set {
		locks = append(locks, l)
	}
	h.mu.Unlock()
	for _, l := range locks {
		if err := l.Check(); err != nil {
			return err
		}
	}
	return nil
}

// verify is check, and also makes sure the lock files are still there
// (Lock.Verify): one Stat per lock.
func (h *heldLocks) verify(ctx context.Context) error {
	h.mu.Lock()
	locks := make([]*Lock, 0, len(h.set))
	for l := range h.set {
		locks = append(locks, l)
	}
	h.mu.Unlock()
	for _, l := range locks {
		if err := l.Verify(ctx); err != nil {
			return err
		}
	}
	return nil
}

// CheckLocks returns ErrLockLost if a lock taken through this handle was
// lost. Operations that delete or publish check it before each step that
// others could have invalidated while the lock looked stale.
func (r *Repository) CheckLocks() error { return r.locks.check() }
