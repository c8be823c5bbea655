package maint

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// CopySource is the repository snapshots are copied from, with its index
// loaded (*repo.Repository).
type CopySource interface {
	Snapshots(ctx context.Context) ([]*snapshot.Snapshot, []repo.SnapshotProblem, error)
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	// LoadBlob returns the verified plaintext of a data blob, appended to
	// buf[:0] when it fits.
	LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error)
	// BlobSize returns the plaintext length of a data blob.
	BlobSize(id crypto.ID) (int, bool)
}

// CopyTarget is the repository snapshots are copied into, with its index
// loaded (*repo.Repository).
type CopyTarget interface {
	Snapshots(ctx context.Context) ([]*snapshot.Snapshot, []repo.SnapshotProblem, error)
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	HasBlob(t pack.BlobType, id crypto.ID) bool
	BlobSize(id crypto.ID) (int, bool)
	// SaveBlob stores plain under its id (keyed with the target's id key)
	// unless the target has it, and reports whether it was new.
	SaveBlob(ctx context.Context, t pack.BlobType, plain []byte) (crypto.ID, bool, error)
	// Flush uploads the packs being filled and indexes every pack written.
	Flush(ctx context.Context) error
	// IndexUploaded indexes the packs uploaded so far (see
	// repo.Repository.IndexUploaded).
	IndexUploaded(ctx context.Context, settle bool) (int, error)
	SaveSnapshot(ctx context.Context, sn *snapshot.Snapshot) error
}

// CopyOptions tune Copy.
type CopyOptions struct {
	// Snapshots names the snapshots to copy ("latest", ids or id
	// prefixes); empty means every snapshot that passes Filter. Filter
	// applies to "latest" too.
	Snapshots []string
	Filter    snapshot.Filter
	// Workers is how many data blobs are loaded and saved at once
	// (default twice GOMAXPROCS, at most 8).
	Workers int
	// CheckpointInterval is how often the packs uploaded so far are
	// indexed, so that an interrupted copy leaves data the next run reuses
	// (default 2 minutes).
	CheckpointInterval time.Duration
	// Progress, when set, is called (never concurrently) every
	// ProgressInterval (default 1s) and once at the end.
	Progress         func(CopyProgress)
	ProgressInterval time.Duration
	// Logf receives restic's lines about each snapshot.
	Logf func(format string, args ...any)
}

// CopyProgress is reported while Copy runs.
type CopyProgress struct {
	SnapshotsDone  int `json:"snapshots_done"`
	SnapshotsTotal int `json:"snapshots_total"`
	// Blobs and Bytes count the source's data blobs handled (read, or
	// known in the target without reading) and their plaintext size.
	Blobs uint64 `json:"blobs"`
	Bytes uint64 `json:"bytes"`
	// BytesRead is the plaintext read from the source.
	BytesRead uint64 `json:"bytes_read"`
	// DataBlobsAdded, TreeBlobsAdded and BytesAdded count blobs the
	// target did not have, and their plaintext size.
	DataBlobsAdded uint64 `json:"data_blobs_added"`
	TreeBlobsAdded uint64 `json:"tree_blobs_added"`
	BytesAdded     uint64 `json:"bytes_added"`
}

// CopiedSnapshot is one source snapshot Copy handled.
type CopiedSnapshot struct {
	Source crypto.ID `json:"source"`
	// Target is the copy: written now, or found from an earlier copy
	// (Skipped).
	Target  crypto.ID `json:"target"`
	Skipped bool      `json:"skipped"`
}

// CopyResult reports what Copy did.
type CopyResult struct {
	Snapshots []CopiedSnapshot `json:"snapshots"`
	Copied    int              `json:"snapshots_copied"`
	Skipped   int              `json:"snapshots_skipped"`
	CopyProgress
}

// Copy copies snapshots from src into dst, whose master keys differ: every
// blob the target lacks is decrypted, hashed with the target's id key and
// stored there. Data blobs keep their boundaries (nothing is chunked
// again) but get new ids, so every tree is rewritten bottom up with the
// new ids. A source snapshot is skipped when the target has a copy of it:
// a snapshot whose original is the source's original (or id) and whose
// time, host, user, paths and tags match (restic's rule, without the tree,
// whose id differs between the repositories).
//
// Earlier copies tell which target blob holds which source blob: a file
// that has the same metadata and blob sizes in an earlier source snapshot
// and in its copy maps its blobs without reading them, so copying the next
// snapshot of a series reads only the changed files. Within a run each
// source tree is rewritten once.
//
// Order keeps the target safe: packs, then the index, then the snapshot;
// the packs uploaded so far are indexed every CheckpointInterval and when
// the copy stops, so an interrupted copy leaves data the next run reuses
// and never a snapshot whose data is missing.
func Copy(ctx context.Context, src CopySource, dst CopyTarget, opts CopyOptions) (res *CopyResult, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	srcAll, problems, err := src.Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	for _, p := range problems {
		logf("warning: source snapshot %s cannot be read: %v\n", p.ID.Short(), p.Err)
	}
	selected, err := selectSnapshots(srcAll, opts.Snapshots, opts.Filter)
	if err != nil {
		return nil, err
	}
	dstAll, problems, err := dst.Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	for _, p := range problems {
		logf("warning: target snapshot %s cannot be read: %v\n", p.ID.Short(), p.Err)
	}

	// Target snapshots by the persistent id of what they were copied
	// from, and the pairs (source snapshot, its copy) known so far.
	copies := map[crypto.ID][]*snapshot.Snapshot{}
	for _, d := range dstAll {
		copies[persistentID(d)] = append(copies[persistentID(d)], d)
	}
	var pairs []copyPair
	for _, s := range srcAll {
		for _, d := range copies[persistentID(s)] {
			if similarSnapshots(s, d) {
				pairs = append(pairs, copyPair{s, d.Tree})
			}
		}
	}

	c := newCopier(ctx, src, dst, opts)
	c.snapshotsTotal = len(selected)
	res = &CopyResult{Snapshots: []CopiedSnapshot{}}
	stop := c.background(ctx)
	defer func() {
		stop()
		if err != nil {
			// Index what reached the target, whatever stopped the copy.
			ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			_, _ = dst.IndexUploaded(ictx, true)
			cancel()
		}
		c.report()
		if res != nil {
			res.CopyProgress = c.progress()
		}
	}()

	for _, sn := range selected {
		logf("\nsnapshot %s of %v at %s)\n", sn.ID.Short(), sn.Paths, sn.Time)
		if d := findCopy(copies[persistentID(sn)], sn); d != nil {
			logf("skipping source snapshot %s, was already copied to snapshot %s\n", sn.ID.Short(), d.ID.Short())
			res.Snapshots = append(res.Snapshots, CopiedSnapshot{Source: sn.ID, Target: d.ID, Skipped: true})
			res.Skipped++
			c.snapshotsDone.Add(1)
			continue
		}
		logf("  copy started, this may take a while...\n")
		var hint *treePair
		if p := bestPair(pairs, sn); p != nil {
			hint = &treePair{src: p.src.Tree, dst: p.dstTree}
		}
		root, err := c.copyTree(ctx, sn.Tree, "/", hint)
		if err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Short(), err)
		}
		if err := dst.Flush(ctx); err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Short(), err)
		}
		ns := *sn
		ns.ID = crypto.ID{}
		ns.Tree = root
		ns.Parent = nil // the parent is a source snapshot
		orig := persistentID(sn)
		ns.Original = &orig
		ns.Paths = append([]string(nil), sn.Paths...)
		ns.Tags = append([]string(nil), sn.Tags...)
		if err := dst.SaveSnapshot(ctx, &ns); err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Short(), err)
		}
		logf("snapshot %s saved\n", ns.ID.Short())
		res.Snapshots = append(res.Snapshots, CopiedSnapshot{Source: sn.ID, Target: ns.ID})
		res.Copied++
		c.snapshotsDone.Add(1)
		copies[orig] = append(copies[orig], &ns)
		pairs = append(pairs, copyPair{sn, root})
	}
	return res, nil
}

// selectSnapshots resolves refs (or applies the filter when there are
// none) and orders the result oldest first, so that each copy can learn
// from the copy of its predecessor.
func selectSnapshots(all []*snapshot.Snapshot, refs []string, f snapshot.Filter) ([]*snapshot.Snapshot, error) {
	out, err := SelectSnapshots(all, refs, f)
	if err != nil {
		return nil, err
	}
	out = append([]*snapshot.Snapshot(nil), out...)
	snapshot.SortByTime(out)
	return out, nil
}

// persistentID is the id that names a snapshot across copies: its
// original, or its own id.
func persistentID(sn *snapshot.Snapshot) crypto.ID {
	if sn.Original != nil {
		return *sn.Original
	}
	return sn.ID
}

// similarSnapshots reports whether b can be a copy of a: everything but
// the parent, the original and the tree (its id depends on the
// repository) matches.
func similarSnapshots(a, b *snapshot.Snapshot) bool {
	if !a.Time.Equal(b.Time) || a.Hostname != b.Hostname || a.Username != b.Username ||
		a.UID != b.UID || a.GID != b.GID || len(a.Paths) != len(b.Paths) || len(a.Tags) != len(b.Tags) {
		return false
	}
	for i := range a.Paths {
		if a.Paths[i] != b.Paths[i] {
			return false
		}
	}
	for i := range a.Tags {
		if a.Tags[i] != b.Tags[i] {
			return false
		}
	}
	return true
}

// findCopy returns the copy of sn among the target snapshots with its
// persistent id, or nil.
func findCopy(candidates []*snapshot.Snapshot, sn *snapshot.Snapshot) *snapshot.Snapshot {
	for _, d := range candidates {
		if similarSnapshots(sn, d) {
			return d
		}
	}
	return nil
}

// copyPair is a source snapshot and the root tree of its copy.
type copyPair struct {
	src     *snapshot.Snapshot
	dstTree crypto.ID
}

// bestPair picks the earlier copy most like sn: the same paths, then the
// same host, then the nearest in time.
func bestPair(pairs []copyPair, sn *snapshot.Snapshot) *copyPair {
	var best *copyPair
	var bestRank int
	var bestDist time.Duration
	for i := range pairs {
		p := &pairs[i]
		rank := 0
		if !p.src.HasPaths(sn.Paths) {
			rank += 2
		}
		if p.src.Hostname != sn.Hostname {
			rank++
		}
		dist := p.src.Time.Sub(sn.Time).Abs()
		if best == nil || rank < bestRank || (rank == bestRank && dist < bestDist) {
			best, bestRank, bestDist = p, rank, dist
		}
	}
	return best
}

// treePair is a source tree and a target tree that an earlier copy made
// of it: a hint, checked node by node before anything is taken from it.
type treePair struct {
	src, dst crypto.ID
}

// maxMemo bounds the maps of the trees and data blobs copied in this run;
// a full map starts over (they only save reading something twice).
const maxMemo = 1 << 20

type copier struct {
	src  CopySource
	dst  CopyTarget
	opts CopyOptions
	// saveCtx is the context of the whole copy, for saves: a pack that a
	// save fills is uploaded in the background with the save's context,
	// which must outlive the walk of one directory.
	saveCtx context.Context

	blobSem chan struct{} // data blobs loaded and saved at once
	dirSem  chan struct{} // directories walked in goroutines of their own
	bufs    chan []byte

	mu    sync.Mutex
	trees map[crypto.ID]crypto.ID // source tree -> target tree, this run
	blobs map[crypto.ID]crypto.ID // source data blob -> target data blob

	snapshotsTotal int
	snapshotsDone  atomic.Int64
	blobsDone      atomic.Uint64
	bytesDone      atomic.Uint64
	bytesRead      atomic.Uint64
	dataAdded      atomic.Uint64
	treesAdded     atomic.Uint64
	bytesAdded     atomic.Uint64

	progressMu sync.Mutex
}

func newCopier(ctx context.Context, src CopySource, dst CopyTarget, opts CopyOptions) *copier {
	workers := opts.Workers
	if workers <= 0 {
		workers = min(2*runtime.GOMAXPROCS(0), 8)
	}
	return &copier{src: src, dst: dst, opts: opts, saveCtx: ctx,
		blobSem: make(chan struct{}, workers), dirSem: make(chan struct{}, runtime.GOMAXPROCS(0)),
		bufs:  make(chan []byte, workers),
		trees: map[crypto.ID]crypto.ID{}, blobs: map[crypto.ID]crypto.ID{}}
}

func (c *copier) progress() CopyProgress {
	return CopyProgress{
		SnapshotsDone: int(c.snapshotsDone.Load()), SnapshotsTotal: c.snapshotsTotal,
		Blobs: c.blobsDone.Load(), Bytes: c.bytesDone.Load(), BytesRead: c.bytesRead.Load(),
		DataBlobsAdded: c.dataAdded.Load(), TreeBlobsAdded: c.treesAdded.Load(), BytesAdded: c.bytesAdded.Load(),
	}
}

// report calls the progress callback, never concurrently.
func (c *copier) report() {
	if c.opts.Progress == nil {
		return
	}
	c.progressMu.Lock()
	defer c.progressMu.Unlock()
	c.opts.Progress(c.progress())
}

// background starts the progress reports and the checkpoints; the
// returned function stops them.
func (c *copier) background(ctx context.Context) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	checkpoint := c.opts.CheckpointInterval
	if checkpoint <= 0 {
		checkpoint = 2 * time.Minute
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(checkpoint)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				// An error here is the packer's: the copy sees it too.
				_, _ = c.dst.IndexUploaded(ctx, false)
			case <-done:
				return
			}
		}
	}()
	if c.opts.Progress != nil {
		interval := c.opts.ProgressInterval
		if interval <= 0 {
			interval = time.Second
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					c.report()
				case <-done:
					return
				}
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

func (c *copier) knownTree(id crypto.ID) (crypto.ID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.trees[id]
	return t, ok
}

// copyTree copies the tree id (at path, for messages) and everything below
// it, and returns the id of its rewritten copy in the target. hint, when
// set, is an earlier copy of the same directory.
func (c *copier) copyTree(ctx context.Context, id crypto.ID, path string, hint *treePair) (crypto.ID, error) {
	if t, ok := c.knownTree(id); ok {
		return t, nil
	}
	st, err := c.src.LoadTree(ctx, id)
	if err != nil {
		return crypto.ID{}, fmt.Errorf("directory %s: %w", path, err)
	}
	learned, subHints := c.learn(ctx, st, id, hint)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(wctx)
	var inlineErr error
	out := &tree.Tree{Nodes: make([]*tree.Node, len(st.Nodes))}
nodes:
	for i, n := range st.Nodes {
		nn := *n
		out.Nodes[i] = &nn
		switch {
		case n.Type == tree.Dir:
			sub, subPath, h := *n.Subtree, path+n.Name+"/", subHints[n.Name]
			walk := func() error {
				tid, err := c.copyTree(gctx, sub, subPath, h)
				nn.Subtree = &tid
				return err
			}
			select {
			case c.dirSem <- struct{}{}:
				g.Go(func() error {
					defer func() { <-c.dirSem }()
					return walk()
				})
			default:
				if inlineErr = walk(); inlineErr != nil {
					cancel()
					break nodes
				}
			}
		case len(n.Content) > 0:
			nn.Content = make([]crypto.ID, len(n.Content))
			for j, bid := range n.Content {
				if tid, ok := c.mapped(bid, learned); ok {
					nn.Content[j] = tid
					continue
				}
				select {
				case c.blobSem <- struct{}{}:
				case <-gctx.Done():
					break nodes
				}
				file := path + n.Name
				g.Go(func() error {
					defer func() { <-c.blobSem }()
					tid, err := c.copyBlob(gctx, bid)
					if err != nil {
						return fmt.Errorf("file %s: %w", file, err)
					}
					nn.Content[j] = tid
					return nil
				})
			}
		}
	}
	if err := g.Wait(); err != nil {
		return crypto.ID{}, err
	}
	if inlineErr != nil {
		return crypto.ID{}, inlineErr
	}
	if err := ctx.Err(); err != nil {
		return crypto.ID{}, err
	}
	b, err := out.Encode()
	if err != nil {
		return crypto.ID{}, fmt.Errorf("directory %s: %w", path, err)
	}
	// Never write a tree that cannot be read back.
	if back, err := tree.Decode(b); err != nil || len(back.Nodes) != len(out.Nodes) {
		return crypto.ID{}, fmt.Errorf("directory %s: rewritten tree does not decode: %v", path, err)
	}
	tid, added, err := c.dst.SaveBlob(c.saveCtx, pack.TreeBlob, b)
	if err != nil {
		return crypto.ID{}, fmt.Errorf("directory %s: %w", path, err)
	}
	if added {
		c.treesAdded.Add(1)
		c.bytesAdded.Add(uint64(len(b)))
	}
	c.mu.Lock()
	if len(c.trees) >= maxMemo {
		clear(c.trees)
	}
	c.trees[id] = tid
	c.mu.Unlock()
	return tid, nil
}

// mapped returns the target id of a source data blob when it is known
// without reading the blob: learned from an earlier copy of the directory,
// or copied earlier in this run.
func (c *copier) mapped(bid crypto.ID, learned map[crypto.ID]crypto.ID) (crypto.ID, bool) {
	tid, ok := learned[bid]
	if !ok {
		c.mu.Lock()
		tid, ok = c.blobs[bid]
		c.mu.Unlock()
	}
	if !ok {
		return crypto.ID{}, false
	}
	c.blobsDone.Add(1)
	if n, ok := c.src.BlobSize(bid); ok {
		c.bytesDone.Add(uint64(n))
	}
	return tid, true
}

// copyBlob reads a data blob from the source and stores it in the target
// unless the target has it, and returns its id there.
func (c *copier) copyBlob(ctx context.Context, bid crypto.ID) (crypto.ID, error) {
	var buf []byte
	select {
	case buf = <-c.bufs:
	default:
	}
	plain, err := c.src.LoadBlob(ctx, bid, buf)
	if err != nil {
		return crypto.ID{}, err
	}
	tid, added, err := c.dst.SaveBlob(c.saveCtx, pack.DataBlob, plain)
	n := uint64(len(plain))
	if cap(plain) <= 16<<20 {
		select {
		case c.bufs <- plain[:0]:
		default:
		}
	}
	if err != nil {
		return crypto.ID{}, err
	}
	c.blobsDone.Add(1)
	c.bytesDone.Add(n)
	c.bytesRead.Add(n)
	if added {
		c.dataAdded.Add(1)
		c.bytesAdded.Add(n)
	}
	c.mu.Lock()
	if len(c.blobs) >= maxMemo {
		clear(c.blobs)
	}
	c.blobs[bid] = tid
	c.mu.Unlock()
	return tid, nil
}

// learn compares the source tree st (id) with an earlier copy of the same
// directory (hint: a source tree and its copy in the target) and returns
// what that copy tells without reading data: the target ids of the data
// blobs of files whose metadata and blob sizes match on both sides, and
// hints for the subdirectories. A hint that cannot be loaded teaches
// nothing; it is never an error.
func (c *copier) learn(ctx context.Context, st *tree.Tree, id crypto.ID, hint *treePair) (map[crypto.ID]crypto.ID, map[string]*treePair) {
	if hint == nil || !c.dst.HasBlob(pack.TreeBlob, hint.dst) {
		return nil, nil
	}
	oldSrc := st
	if hint.src != id {
		var err error
		if oldSrc, err = c.src.LoadTree(ctx, hint.src); err != nil {
			return nil, nil
		}
	}
	oldDst, err := c.dst.LoadTree(ctx, hint.dst)
	if err != nil {
		return nil, nil
	}
	learned := map[crypto.ID]crypto.ID{}
	subHints := map[string]*treePair{}
	for _, on := range oldSrc.Nodes {
		cur := st.Find(on.Name)
		dn := oldDst.Find(on.Name)
		if cur == nil || dn == nil || dn.Type != on.Type || cur.Type != on.Type {
			continue
		}
		switch on.Type {
		case tree.Dir:
			subHints[on.Name] = &treePair{src: *on.Subtree, dst: *dn.Subtree}
		case tree.File:
			if len(on.Content) == 0 || len(on.Content) != len(dn.Content) || !sameMetadata(on, dn) {
				continue
			}
			ok := true
			for j := range on.Content {
				a, okA := c.src.BlobSize(on.Content[j])
				b, okB := c.dst.BlobSize(dn.Content[j])
				if !okA || !okB || a != b {
					ok = false
					break
				}
			}
			if ok {
				for j := range on.Content {
					learned[on.Content[j]] = dn.Content[j]
				}
			}
		}
	}
	return learned, subHints
}

// sameMetadata reports whether two nodes are equal but for their content
// and subtree ids.
func sameMetadata(a, b *tree.Node) bool {
	x, y := *a, *b
	x.Content, y.Content, x.Subtree, y.Subtree = nil, nil, nil, nil
	bx, err1 := x.MarshalJSON()
	by, err2 := y.MarshalJSON()
	return err1 == nil && err2 == nil && string(bx) == string(by)
}
