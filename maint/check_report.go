// Problems found by Check: their kinds, how they are named and ordered,
// and which files of which snapshots lose data because of them.

package maint

import (
	"context"
	"sort"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/tree"
)

// Severity says whether a problem is damage (an error) or a state that
// needs no repair (a warning).
type Severity string

// The severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// ProblemKind classifies a problem found by Check.
type ProblemKind string

// The kinds of problems.
const (
	// Errors.
	KindSnapshotUnreadable ProblemKind = "snapshot_unreadable" // snapshot file does not load (includes a name/content mismatch)
	KindIndexUnreadable    ProblemKind = "index_unreadable"    // index file does not load
	KindKeyUnreadable      ProblemKind = "key_unreadable"      // key file does not load or parse
	KindFileHash           ProblemKind = "file_hash"           // a file's name is not the SHA-256 of its bytes
	KindTreeUnreadable     ProblemKind = "tree_unreadable"     // tree blob in the index that does not load or decode
	KindBlobMissing        ProblemKind = "blob_missing"        // a snapshot needs a blob that no index lists
	KindSizeMismatch       ProblemKind = "size_mismatch"       // a file's size differs from the sum of its blobs
	KindPackMissing        ProblemKind = "pack_missing"        // an indexed pack is not in storage
	KindPackHeader         ProblemKind = "pack_header"         // a pack's header cannot be read or parsed
	KindPackMismatch       ProblemKind = "pack_mismatch"       // index entries that the pack header does not confirm
	KindPackHash           ProblemKind = "pack_hash"           // --read-data: pack content does not match its name
	KindBlobDamaged        ProblemKind = "blob_damaged"        // --read-data: a blob does not decrypt or verify

	// Warnings.
	KindBlobPending      ProblemKind = "blob_pending"      // a snapshot needs a blob only found in a pack marked for deletion
	KindPackUnreferenced ProblemKind = "pack_unreferenced" // a pack no index names (a running or interrupted backup)
	KindPackExtraBlobs   ProblemKind = "pack_extra_blobs"  // a pack holds blobs its index entry does not list
	KindPendingGone      ProblemKind = "pending_gone"      // a pack marked for deletion is already deleted
	KindIndexSuperseded  ProblemKind = "index_superseded"  // a superseded index file is still stored
	KindInvalidName      ProblemKind = "invalid_name"      // a stored file whose name is not an id
	KindFileVanished     ProblemKind = "file_vanished"     // an index or snapshot file was removed while check ran
	KindHardLinkConflict ProblemKind = "hardlink_conflict" // two nodes of a snapshot claim one inode with different contents
)

// ProblemBlob names a blob in a problem report.
type ProblemBlob struct {
	Type string    `json:"type"`
	ID   crypto.ID `json:"id"`
}

// AffectedPath is a file or directory (ending in "/") of one or more
// snapshots that loses data because of a problem. A directory means that
// directory's listing and everything below it.
type AffectedPath struct {
	Path      string      `json:"path"`
	Snapshots []crypto.ID `json:"snapshots"`
}

// Problem is one thing Check found wrong. It names the file of the
// repository, the pack and the blobs concerned, and, for lost data, the
// paths of the snapshots that are affected.
type Problem struct {
	Severity Severity    `json:"severity"`
	Kind     ProblemKind `json:"kind"`
	Message  string      `json:"message"`
	// File is the repository file concerned, like "index/<id>" or
	// "data/ab/<id>".
	File     string        `json:"file,omitempty"`
	Pack     *crypto.ID    `json:"pack,omitempty"`
	Snapshot *crypto.ID    `json:"snapshot,omitempty"`
	Blobs    []ProblemBlob `json:"blobs,omitempty"`
	// LostBlobs counts the blobs of the problem for which no intact copy
	// remains; when it is zero the damage costs no data.
	LostBlobs int            `json:"lost_blobs,omitempty"`
	Affected  []AffectedPath `json:"affected,omitempty"`

	candidates []BlobRef // blobs whose copy in Pack is unusable
	// allOf is the indexed blobs of Pack when every one of them is a
	// candidate (the pack is missing or unreadable).
	allOf []pack.Blob
}

// eachCandidate calls fn with each blob whose copy in the problem's pack is
// unusable.
func (p *Problem) eachCandidate(fn func(BlobRef)) {
	for _, ref := range p.candidates {
		fn(ref)
	}
	for _, b := range p.allOf {
		fn(BlobRef{b.Type, b.ID})
	}
}

func idPtr(id crypto.ID) *crypto.ID { return &id }

func packFile(id crypto.ID) string {
	return backend.Handle{Type: backend.PackFile, Name: id.String()}.String()
}

func problemBlobs(refs []BlobRef) []ProblemBlob {
	out := make([]ProblemBlob, 0, len(refs))
	for _, b := range refs {
		out = append(out, ProblemBlob{Type: b.Type.String(), ID: b.ID})
	}
	return out
}

// problemBlobsOf lists blobs for a problem.
func problemBlobsOf(blobs []pack.Blob) []ProblemBlob {
	out := make([]ProblemBlob, 0, len(blobs))
	for _, b := range blobs {
		out = append(out, ProblemBlob{Type: b.Type.String(), ID: b.ID})
	}
	return out
}

// findLost decides, for the pack-level problems, which blobs have no
// intact copy left, and records them for mapAffected.
func (c *checker) findLost(context.Context) error {
	for i, p := range c.res.Problems {
		if (len(p.candidates) == 0 && len(p.allOf) == 0) || p.Severity != SeverityError {
			continue
		}
		p.eachCandidate(func(ref BlobRef) {
			if c.usable(ref, true) {
				return
			}
			p.LostBlobs++
			if p.allOf == nil {
				c.badBlob[ref] = append(c.badBlob[ref], i)
			}
		})
		if p.allOf != nil && p.LostBlobs > 0 {
			c.goneLost = true
		}
		if p.LostBlobs == 0 && p.Severity == SeverityError {
			p.Message += "; every blob has an intact copy in another pack"
		}
	}
	return nil
}

// lostProblems returns the problems through which blob ref is lost: those
// badBlob records, and the problems of the gone packs that hold it when no
// copy of it can be read. The result must not be changed.
func (c *checker) lostProblems(ref BlobRef) []int {
	ps := c.badBlob[ref]
	if !c.goneLost || c.usable(ref, true) {
		return ps
	}
	var out []int
	add := func(locs []index.PackedBlob) {
		for _, l := range locs {
			i, ok := c.gone[l.PackID]
			if !ok || c.res.Problems[i].Severity != SeverityError {
				continue
			}
			if out == nil {
				out = append([]int(nil), ps...)
			}
			out = append(out, i)
		}
	}
	add(c.r.Index().Lookup(ref.Type, ref.ID))
	add(c.pendingIdx.Lookup(ref.Type, ref.ID))
	if out == nil {
		return ps
	}
	return out
}

type affectedHit struct {
	path     string // relative to the tree, directories end in "/"
	problems []int
}

// mapAffected walks the snapshots to find the files and directories that
// use lost blobs, and attaches them to the problems. It runs only when
// there are such blobs; each tree is loaded once.
func (c *checker) mapAffected(ctx context.Context) error {
	if len(c.badBlob) == 0 && len(c.badNode) == 0 && !c.goneLost {
		return nil
	}
	c.progress(CheckProgress{Phase: "affected"})
	w := &affectedWalk{c: c, memo: map[crypto.ID][]affectedHit{}}
	a := &affectedList{problems: c.res.Problems, where: map[problemPath]int{}}
	for _, sn := range c.snaps {
		if ps := c.lostProblems(BlobRef{pack.TreeBlob, sn.Tree}); len(ps) > 0 {
			for _, i := range ps {
				a.add(i, "/", sn.ID)
			}
			continue
		}
		hits, err := w.hits(ctx, sn.Tree)
		if err != nil {
			return err
		}
		for _, h := range hits {
			for _, i := range h.problems {
				a.add(i, "/"+h.path, sn.ID)
			}
		}
	}
	for _, p := range c.res.Problems {
		sort.Slice(p.Affected, func(i, j int) bool { return p.Affected[i].Path < p.Affected[j].Path })
	}
	return nil
}

// affectedWalk finds the paths below trees that use lost blobs, loading
// each tree once.
type affectedWalk struct {
	c    *checker
	memo map[crypto.ID][]affectedHit
}

// hits returns the files and directories below tree id that use lost
// blobs. A lost subtree is a hit itself, and is not entered.
func (w *affectedWalk) hits(ctx context.Context, id crypto.ID) ([]affectedHit, error) {
	c := w.c
	if hits, ok := w.memo[id]; ok {
		return hits, nil
	}
	w.memo[id] = nil // cycles cannot occur (ids are hashes), but be safe
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := c.r.LoadTree(ctx, id)
	if err != nil {
		return nil, nil // reported where it is referenced
	}
	var hits []affectedHit
	for _, n := range t.Nodes {
		switch {
		case n.Type == tree.Dir && n.Subtree != nil:
			if ps := c.lostProblems(BlobRef{pack.TreeBlob, *n.Subtree}); len(ps) > 0 {
				hits = append(hits, affectedHit{n.Name + "/", ps})
				continue
			}
			sub, err := w.hits(ctx, *n.Subtree)
			if err != nil {
				return nil, err
			}
			for _, h := range sub {
				hits = append(hits, affectedHit{n.Name + "/" + h.path, h.problems})
			}
		case n.Type == tree.File:
			var ps []int
			for _, b := range n.Content {
				ps = append(ps, c.lostProblems(BlobRef{pack.DataBlob, b})...)
			}
			ps = append(ps, c.badNode[nodeKey{id, n.Name}]...)
			if len(ps) > 0 {
				hits = append(hits, affectedHit{n.Name, uniqueInts(ps)})
			}
		}
	}
	w.memo[id] = hits
	return hits, nil
}

type problemPath struct {
	problem int
	path    string
}

// affectedList attaches affected paths to problems, each path once per
// problem with the snapshots that have it.
type affectedList struct {
	problems []*Problem
	where    map[problemPath]int // -> index into the problem's Affected
}

// add records that snapshot sn loses path through problem i.
func (a *affectedList) add(i int, path string, sn crypto.ID) {
	p := a.problems[i]
	k := problemPath{i, path}
	j, ok := a.where[k]
	if !ok {
		j = len(p.Affected)
		a.where[k] = j
		p.Affected = append(p.Affected, AffectedPath{Path: path})
	}
	af := &p.Affected[j]
	if n := len(af.Snapshots); n == 0 || af.Snapshots[n-1] != sn {
		af.Snapshots = append(af.Snapshots, sn)
	}
}

func uniqueInts(xs []int) []int {
	if len(xs) < 2 {
		return xs
	}
	sort.Ints(xs)
	out := xs[:1]
	for _, x := range xs[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}

// tally orders the problems, counts errors and warnings, lists the broken
// packs and sets the repair suggestions.
func (res *CheckResult) tally() {
	sortProblems(res.Problems)
	broken := map[crypto.ID]bool{}
	for _, p := range res.Problems {
		if p.Severity == SeverityError {
			res.Errors++
		} else {
			res.Warnings++
		}
		switch p.Kind {
		case KindPackMissing, KindPackHeader, KindPackMismatch, KindPackHash, KindBlobDamaged:
			if p.Severity == SeverityError && p.Pack != nil {
				broken[*p.Pack] = true
			}
		}
		switch p.Kind {
		case KindIndexUnreadable, KindPackMismatch:
			res.SuggestRepairIndex = true
		case KindPackMissing, KindPackHeader, KindBlobDamaged, KindPackHash:
			if p.Severity == SeverityError {
				res.SuggestRepairIndex = true
			}
		case KindPackUnreferenced, KindIndexSuperseded:
			res.SuggestPrune = true
		case KindSnapshotUnreadable:
			res.SuggestForgetUnreadable = true
		}
		if p.Severity == SeverityError && len(p.Affected) > 0 {
			res.SuggestRepairSnapshots = true
		}
	}
	for id := range broken {
		res.BrokenPacks = append(res.BrokenPacks, id)
	}
	sortIDs(res.BrokenPacks)
}

// kindRank orders problems in reports: by the phase that finds them.
var kindRank = map[ProblemKind]int{
	KindSnapshotUnreadable: 0, KindIndexUnreadable: 1, KindIndexSuperseded: 2, KindKeyUnreadable: 3, KindFileHash: 4,
	KindInvalidName: 5, KindFileVanished: 5, KindPackMissing: 6, KindPendingGone: 7, KindPackHeader: 8, KindPackHash: 9, KindPackMismatch: 10,
	KindBlobDamaged: 11, KindPackExtraBlobs: 12, KindPackUnreferenced: 13, KindTreeUnreadable: 14, KindBlobMissing: 15,
	KindBlobPending: 16, KindSizeMismatch: 17,
}

// sortProblems orders problems deterministically: by kind, then by file,
// pack and first blob.
func sortProblems(ps []*Problem) {
	first := func(p *Problem) string {
		if len(p.Blobs) > 0 {
			return p.Blobs[0].ID.String()
		}
		return ""
	}
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if kindRank[a.Kind] != kindRank[b.Kind] {
			return kindRank[a.Kind] < kindRank[b.Kind]
		}
		if a.File != b.File {
			return a.File < b.File
		}
		if fa, fb := first(a), first(b); fa != fb {
			return fa < fb
		}
		return a.Message < b.Message
	})
}
