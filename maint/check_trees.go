// Check's tree walk: every tree of every snapshot loads, every blob it
// names is indexed, and file sizes add up.

package maint

import (
	"context"
	"errors"
	"fmt"

	"dj/backend"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/tree"
	"dj/repo/walk"
)

// checkTrees loads every tree of every snapshot once and checks that the
// blobs they name are indexed and that file sizes add up.
func (c *checker) checkTrees(ctx context.Context) error {
	roots := make([]crypto.ID, 0, len(c.snaps))
	for _, sn := range c.snaps {
		roots = append(roots, sn.Tree)
	}
	var trees int64
	err := walk.Trees(ctx, summaryLoader{c}, roots, 4*c.opts.Workers, func(_ int, id crypto.ID, t walk.List, err error) {
		c.mu.Lock()
		trees++
		n := trees
		s := c.summaries[id]
		c.mu.Unlock()
		if n%256 == 0 {
			c.progress(CheckProgress{Phase: "trees", Done: n})
		}
		ref := BlobRef{pack.TreeBlob, id}
		if err != nil {
			c.treeFailed(ctx, ref, err)
			return
		}
		if s == nil {
			s = c.summarize(id, t)
		}
		c.applySummary(ctx, id, s)
	})
	c.res.Trees = int(trees)
	c.summaries = nil
	return err
}

// treeSummary is what the tree walk needs to know of one tree: its
// subtrees, and what its file nodes need that the index lacks.
type treeSummary struct {
	subtrees   []crypto.ID
	notIndexed bool      // the tree itself is only in packs marked for deletion
	missing    []BlobRef // data blobs in no index
	pending    []BlobRef // data blobs only in packs marked for deletion
	mismatches []sizeMismatch
	links      []linkNode // hard-linked nodes
}

type sizeMismatch struct {
	name      string
	size, sum uint64
}

// summarize checks a tree's file nodes against the index.
func (c *checker) summarize(id crypto.ID, t walk.List) *treeSummary {
	idx := c.r.Index()
	s := &treeSummary{notIndexed: !idx.Has(pack.TreeBlob, id)}
	for i := range t.Len() {
		head := t.Head(i) // no allocation: a tree can hold a million nodes
		if head.IsHardLink() {
			s.links = append(s.links, nodeLink(t.Node(i)))
		}
		switch head.Type {
		case tree.Dir:
			if sub, ok := t.Dir(i); ok {
				s.subtrees = append(s.subtrees, sub)
			}
		case tree.File:
			var sum uint64
			known := true
			for _, b := range t.Content(i) {
				n, ok := idx.PlainLength(pack.DataBlob, b)
				if !ok {
					n, ok = c.pendingIdx.PlainLength(pack.DataBlob, b)
					if !ok {
						s.missing = append(s.missing, BlobRef{pack.DataBlob, b})
						known = false
						continue
					}
					s.pending = append(s.pending, BlobRef{pack.DataBlob, b})
				}
				sum += uint64(n)
			}
			if known && sum != head.Size {
				s.mismatches = append(s.mismatches, sizeMismatch{t.Node(i).Name, head.Size, sum})
			}
		}
	}
	return s
}

// applySummary reports what a tree reached from a snapshot lacks.
func (c *checker) applySummary(ctx context.Context, id crypto.ID, s *treeSummary) {
	if s.notIndexed {
		c.blobProblem(ctx, BlobRef{pack.TreeBlob, id}, true)
	}
	c.noteLinks(s.links)
	for _, ref := range s.missing {
		c.blobProblem(ctx, ref, false)
	}
	for _, ref := range s.pending {
		c.blobProblem(ctx, ref, true)
	}
	for _, m := range s.mismatches {
		i := c.add(&Problem{Severity: SeverityError, Kind: KindSizeMismatch,
			Message: fmt.Sprintf("file %q in tree %s has size %d, but its blobs hold %d bytes", m.name, id.Short(), m.size, m.sum)})
		c.mu.Lock()
		c.badNode[nodeKey{id, m.name}] = append(c.badNode[nodeKey{id, m.name}], i)
		c.mu.Unlock()
	}
}

// keepSummary records the summary of a tree blob that the pack checks
// verified, so the tree walk need not load the tree again: with
// --read-data the trees are decoded while the workers would otherwise wait
// for storage, and the walk only follows the subtrees.
func (c *checker) keepSummary(id crypto.ID, plain []byte) {
	if len(plain) > summarizeUpTo {
		return // the walk loads it as it decompresses, without the plaintext
	}
	c.mu.Lock()
	_, done := c.summaries[id]
	c.mu.Unlock()
	if done {
		return
	}
	t, err := tree.DecodeCompact(plain)
	if err != nil {
		return // the walk loads it and reports why it does not decode
	}
	s := c.summarize(id, walk.CompactList(t))
	c.mu.Lock()
	if c.summaries == nil {
		c.summaries = map[crypto.ID]*treeSummary{}
	}
	c.summaries[id] = s
	c.mu.Unlock()
}

// summarizeUpTo is the size of the largest tree plaintext keepSummary
// decodes; a larger tree (a directory of tens of thousands of files) is
// loaded again by the walk, which decodes it as it decompresses and so
// never holds its plaintext and its nodes at once.
const summarizeUpTo = 4 << 20

// summaryLoader serves the tree walk: a tree summarized during the pack
// checks comes back as its subtrees alone; others load from the repository.
type summaryLoader struct{ c *checker }

func (l summaryLoader) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	if s := l.summary(id); s != nil {
		return s.subtreesOnly(), nil
	}
	return l.c.r.LoadTree(ctx, id)
}

// LoadCompactTree is LoadTree in compact form (walk.CompactLoader).
func (l summaryLoader) LoadCompactTree(ctx context.Context, id crypto.ID, spill tree.SpillOptions) (*tree.Compact, error) {
	if s := l.summary(id); s != nil {
		return tree.NewCompact(s.subtreesOnly())
	}
	return l.c.r.LoadCompactTree(ctx, id, spill)
}

func (l summaryLoader) summary(id crypto.ID) *treeSummary {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.c.summaries[id]
}

// subtreesOnly returns a tree of the summarized tree's subtrees alone.
func (s *treeSummary) subtreesOnly() *tree.Tree {
	t := &tree.Tree{Nodes: make([]*tree.Node, len(s.subtrees))}
	for i := range s.subtrees {
		t.Nodes[i] = &tree.Node{Type: tree.Dir, Subtree: &s.subtrees[i]}
	}
	return t
}

// treeFailed records a tree that did not load.
func (c *checker) treeFailed(ctx context.Context, ref BlobRef, err error) {
	if errors.Is(err, repo.ErrBlobNotFound) {
		c.blobProblem(ctx, ref, false)
		return
	}
	if !c.r.Index().Has(ref.Type, ref.ID) {
		// Only in packs marked for deletion.
		if !c.usable(ref, true) {
			c.blobProblem(ctx, ref, true)
			return
		}
	} else if !c.usable(ref, false) {
		return // a pack problem covers it; findLost maps it
	}
	c.mu.Lock()
	if c.reported[ref] {
		c.mu.Unlock()
		return
	}
	c.reported[ref] = true
	c.mu.Unlock()
	i := c.add(&Problem{Severity: SeverityError, Kind: KindTreeUnreadable, Blobs: problemBlobs([]BlobRef{ref}),
		Message: fmt.Sprintf("tree %s cannot be loaded: %v", ref.ID.Short(), err)})
	c.mu.Lock()
	c.badBlob[ref] = append(c.badBlob[ref], i)
	c.mu.Unlock()
}

// blobProblem reports a blob a snapshot needs that is not in the index
// (inPending: it is only in packs marked for deletion), once per blob.
func (c *checker) blobProblem(ctx context.Context, ref BlobRef, inPending bool) {
	c.mu.Lock()
	if c.reported[ref] {
		c.mu.Unlock()
		return
	}
	c.reported[ref] = true
	unref, inUnref := c.unrefBlobs[ref]
	c.mu.Unlock()
	if inPending {
		if c.usable(ref, true) {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindBlobPending, Blobs: problemBlobs([]BlobRef{ref}),
				Message: fmt.Sprintf("%s blob %s is only in a pack marked for deletion; the next prune keeps that pack", ref.Type, ref.ID.Short())})
			return
		}
		// Its pending packs are gone or unreadable: it is missing.
	}
	p := &Problem{Severity: SeverityError, Kind: KindBlobMissing, Blobs: problemBlobs([]BlobRef{ref}),
		Message: fmt.Sprintf("%s blob %s is needed but is in no index", ref.Type, ref.ID.Short())}
	if inUnref {
		p.Pack = idPtr(unref.PackID)
		p.File = packFile(unref.PackID)
		if err := c.verifyCopy(ctx, unref); err != nil {
			p.Message = fmt.Sprintf("%s blob %s is needed but is in no index; the copy in unreferenced pack %s is damaged: %v", ref.Type, ref.ID.Short(), unref.PackID.Short(), err)
		} else {
			p.Message = fmt.Sprintf("%s blob %s is needed but only pack %s holds it, which no index names (run `dj repair index`)", ref.Type, ref.ID.Short(), unref.PackID.Short())
			c.mu.Lock()
			c.res.SuggestRepairIndex = true
			c.mu.Unlock()
		}
	}
	i := c.add(p)
	c.mu.Lock()
	c.badBlob[ref] = append(c.badBlob[ref], i)
	c.mu.Unlock()
}

// verifyCopy loads and verifies one stored copy of a blob.
func (c *checker) verifyCopy(ctx context.Context, pb index.PackedBlob) error {
	h := backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}
	sealed, err := c.r.Backend().Load(ctx, h, int64(pb.Offset), int(pb.Length))
	if err != nil {
		return err
	}
	_, err = c.r.OpenPacked(pb, sealed, nil)
	return err
}
