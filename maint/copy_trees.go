// The copier: trees and data blobs of a snapshot copied into the target,
// learning from earlier copies, with progress and checkpoints.

package maint

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/tree"
	"dj/repo/walk"
)

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
	every := func(d time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					f()
				case <-done:
					return
				}
			}
		}()
	}
	every(checkpoint, func() {
		// An error here is the packer's: the copy sees it too.
		_, _ = c.dst.IndexUploaded(ctx, false)
	})
	if c.opts.Progress != nil {
		interval := c.opts.ProgressInterval
		if interval <= 0 {
			interval = time.Second
		}
		every(interval, c.report)
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

// memo remembers src -> dst in m (c.trees or c.blobs), starting m over
// when it is full.
func (c *copier) memo(m map[crypto.ID]crypto.ID, src, dst crypto.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(m) >= maxMemo {
		clear(m)
	}
	m[src] = dst
}

// copyTree copies the tree id (at path, for messages) and everything below
// it, and returns the id of its rewritten copy in the target. hint, when
// set, is an earlier copy of the same directory.
func (c *copier) copyTree(ctx context.Context, id crypto.ID, path string, hint *treePair) (crypto.ID, error) {
	if t, ok := c.knownTree(id); ok {
		return t, nil
	}
	st, err := walk.Load(ctx, c.src, id)
	if err != nil {
		return crypto.ID{}, fmt.Errorf("directory %s: %w", path, err)
	}
	learned, subHints := c.learn(ctx, st, id, hint)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(wctx)
	var inlineErr error
	// What the copy changes in node i: its subtree, or its content, in the
	// target's ids. The nodes themselves are read again from st to be
	// encoded: a directory of a million files is never held whole.
	subs := make([]*crypto.ID, st.Len())
	contents := make([][]crypto.ID, st.Len())
nodes:
	for i := range st.Len() {
		n := st.Node(i)
		switch {
		case n.Type == tree.Dir:
			sub, subPath, h := *n.Subtree, path+n.Name+"/", subHints[n.Name]
			copySub := func() error {
				tid, err := c.copyTree(gctx, sub, subPath, h)
				subs[i] = &tid
				return err
			}
			select {
			case c.dirSem <- struct{}{}:
				g.Go(func() error {
					defer func() { <-c.dirSem }()
					return copySub()
				})
			default:
				if inlineErr = copySub(); inlineErr != nil {
					cancel()
					break nodes
				}
			}
		case len(n.Content) > 0:
			content := make([]crypto.ID, len(n.Content))
			contents[i] = content
			for j, bid := range n.Content {
				if tid, ok := c.mapped(bid, learned); ok {
					content[j] = tid
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
					content[j] = tid
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
	enc := tree.NewEncoder()
	for i := range st.Len() {
		n := st.Node(i)
		if subs[i] != nil {
			n.Subtree = subs[i]
		}
		if contents[i] != nil {
			n.Content = contents[i]
		}
		if err := enc.Add(n); err != nil {
			return crypto.ID{}, fmt.Errorf("directory %s: %w", path, err)
		}
	}
	if err := st.Err(); err != nil {
		return crypto.ID{}, fmt.Errorf("directory %s: %w", path, err)
	}
	subs, contents = nil, nil
	b := enc.Finish()
	// Never write a tree that cannot be read back.
	if n, err := tree.Check(b); err != nil || n != st.Len() {
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
	c.memo(c.trees, id, tid)
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
	c.memo(c.blobs, bid, tid)
	return tid, nil
}

// learn compares the source tree st (id) with an earlier copy of the same
// directory (hint: a source tree and its copy in the target) and returns
// what that copy tells without reading data: the target ids of the data
// blobs of files whose metadata and blob sizes match on both sides, and
// hints for the subdirectories. A hint that cannot be loaded teaches
// nothing; it is never an error.
func (c *copier) learn(ctx context.Context, st walk.List, id crypto.ID, hint *treePair) (map[crypto.ID]crypto.ID, map[string]*treePair) {
	if hint == nil || !c.dst.HasBlob(pack.TreeBlob, hint.dst) {
		return nil, nil
	}
	oldSrc := st
	if hint.src != id {
		var err error
		if oldSrc, err = walk.Load(ctx, c.src, hint.src); err != nil {
			return nil, nil
		}
	}
	oldDst, err := walk.Load(ctx, c.dst, hint.dst)
	if err != nil {
		return nil, nil
	}
	learned := map[crypto.ID]crypto.ID{}
	subHints := map[string]*treePair{}
	for i := range oldSrc.Len() {
		on := oldSrc.Node(i)
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
	if errors.Join(st.Err(), oldSrc.Err(), oldDst.Err()) != nil {
		// A tree kept in files could not be read back: its nodes came
		// back zeroed, and nothing learned from them may be used.
		return nil, nil
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
