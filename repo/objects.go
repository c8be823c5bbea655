package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// LoadTree loads, verifies and decodes a tree blob.
func (r *Repository) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	return loadTree(ctx, r, id, tree.Decode)
}

// SaveTree encodes and saves a tree blob and returns its id.
func (r *Repository) SaveTree(ctx context.Context, t *tree.Tree) (crypto.ID, bool, error) {
	b, err := t.Encode()
	if err != nil {
		return crypto.ID{}, false, err
	}
	return r.SaveBlob(ctx, pack.TreeBlob, b)
}

// SaveSnapshot writes a snapshot file and sets sn.ID.
//
// A snapshot is written only under locks that are still held: before the
// write the lock files must be in the repository and fresh, and after it
// still fresh. A process stopped during the write (SIGSTOP, a suspended
// machine) may find on waking that its lock went stale meanwhile, and a
// prune on another host may then have deleted the packs the snapshot
// names: the snapshot file is removed again and ErrLockLost returned.
func (r *Repository) SaveSnapshot(ctx context.Context, sn *snapshot.Snapshot) error {
	if err := r.locks.verify(ctx); err != nil {
		return err
	}
	b, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	r.snapshotGen.Add(1)
	id, err := r.SaveFile(ctx, backend.SnapshotFile, b)
	if err != nil {
		return err
	}
	if err := r.locks.check(); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), LockRemoveTimeout)
		defer cancel()
		if rerr := r.be.Remove(rctx, backend.Handle{Type: backend.SnapshotFile, Name: id.String()}); rerr != nil {
			return fmt.Errorf("%w; snapshot %s was written meanwhile and could not be removed again (%v): remove it with `dj forget %s`", err, id.Short(), rerr, id.Short())
		}
		return err
	}
	sn.ID = id
	return nil
}

// LoadSnapshot loads one snapshot file.
func (r *Repository) LoadSnapshot(ctx context.Context, id crypto.ID) (*snapshot.Snapshot, error) {
	b, err := r.LoadFile(ctx, backend.SnapshotFile, id)
	if err != nil {
		return nil, err
	}
	var sn snapshot.Snapshot
	if err := json.Unmarshal(b, &sn); err != nil {
		return nil, fmt.Errorf("%w: snapshot %s: %w", ErrCorrupt, id.Short(), err)
	}
	sn.ID = id
	return &sn, nil
}

// SnapshotProblem is a snapshot file that could not be loaded.
type SnapshotProblem struct {
	ID  crypto.ID
	Err error
}

// Snapshots loads every snapshot, sorted oldest first. Snapshot files that
// fail to load are returned as problems; the others are still returned.
// The first call after PrefetchSnapshots returns what the prefetch loaded,
// unless this handle saved or removed a snapshot since it began.
func (r *Repository) Snapshots(ctx context.Context) ([]*snapshot.Snapshot, []SnapshotProblem, error) {
	if p := r.takeSnapshotPrefetch(); p != nil {
		select {
		case <-p.done:
			// The lists are the caller's now (callers may change
			// the snapshots they get).
			if p.err == nil && p.gen == r.snapshotGen.Load() {
				return p.list, p.problems, nil
			}
		case <-ctx.Done():
			p.cancel()
			<-p.done // nothing may run after Close
			return nil, nil, ctx.Err()
		}
	}
	return r.loadSnapshots(ctx)
}

// snapshotPrefetch is a loading of the snapshots begun ahead of need.
type snapshotPrefetch struct {
	done     chan struct{} // closed when list, problems and err are set
	cancel   context.CancelFunc
	gen      uint64 // Repository.snapshotGen when it began
	list     []*snapshot.Snapshot
	problems []SnapshotProblem
	err      error
}

// PrefetchSnapshots begins loading the snapshots in the background, for
// the next call to Snapshots: across a network a command then lists the
// snapshots while it loads the index, not after. Call it only where a
// listing taken now is as good as one taken at the call to Snapshots (with
// the lock held). Close stops a prefetch nobody took and waits for it.
func (r *Repository) PrefetchSnapshots(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	p := &snapshotPrefetch{done: make(chan struct{}), cancel: cancel, gen: r.snapshotGen.Load()}
	if old := r.takeSnapshotPrefetch(); old != nil {
		old.cancel()
		<-old.done
	}
	r.snapMu.Lock()
	r.snapPrefetch = p
	r.snapMu.Unlock()
	go func() {
		defer close(p.done)
		defer cancel()
		p.list, p.problems, p.err = r.loadSnapshots(ctx)
	}()
}

// takeSnapshotPrefetch returns the prefetch begun, once, or nil.
func (r *Repository) takeSnapshotPrefetch() *snapshotPrefetch {
	r.snapMu.Lock()
	defer r.snapMu.Unlock()
	p := r.snapPrefetch
	r.snapPrefetch = nil
	return p
}

// loadSnapshots lists and loads every snapshot file.
func (r *Repository) loadSnapshots(ctx context.Context) ([]*snapshot.Snapshot, []SnapshotProblem, error) {
	ids, err := r.ListFiles(ctx, backend.SnapshotFile)
	if err != nil {
		return nil, nil, err
	}
	sns, errs, err := loadEach(ctx, ids, runtime.GOMAXPROCS(0)*4, r.LoadSnapshot)
	if err != nil {
		return nil, nil, err
	}
	var out []*snapshot.Snapshot
	var problems []SnapshotProblem
	for i := range ids {
		if errs[i] != nil {
			problems = append(problems, SnapshotProblem{ids[i], errs[i]})
			continue
		}
		out = append(out, sns[i])
	}
	snapshot.SortByTime(out)
	return out, problems, nil
}

// RemoveSnapshot deletes a snapshot file.
func (r *Repository) RemoveSnapshot(ctx context.Context, id crypto.ID) error {
	r.snapshotGen.Add(1)
	return r.be.Remove(ctx, backend.Handle{Type: backend.SnapshotFile, Name: id.String()})
}

// ErrPathNotFound is returned by FindNode for a path that is not in the tree.
var ErrPathNotFound = errors.New("path not found in snapshot")

// FindNode returns the node at path (slash-separated, relative to the
// snapshot root) below the tree root. The root itself is returned as a
// directory node named "/".
func (r *Repository) FindNode(ctx context.Context, root crypto.ID, path string) (*tree.Node, error) {
	node := &tree.Node{Name: "/", Type: tree.Dir, Mode: os.ModeDir | 0o755, Subtree: &root}
	for _, el := range strings.Split(path, "/") {
		if el == "" || el == "." {
			continue
		}
		if node.Type != tree.Dir || node.Subtree == nil {
			return nil, fmt.Errorf("%s: %w", path, ErrPathNotFound)
		}
		t, err := r.LoadTree(ctx, *node.Subtree)
		if err != nil {
			return nil, err
		}
		node = t.Find(el)
		if node == nil {
			return nil, fmt.Errorf("%s: %w", path, ErrPathNotFound)
		}
	}
	return node, nil
}
