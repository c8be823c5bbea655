package maint

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
	"dj/repo/walk"
)

// FindOptions says what Find looks for: nodes whose path matches
// Patterns (restic's find), or, with Blobs or Trees, the files that hold a
// data blob and the directories that are a tree.
type FindOptions struct {
	// Patterns are matched against the full path of every node ("/home/
	// ann/a.txt") with restic's rules: filepath.Match globs separated by
	// '/', "**" for any number of elements, a leading '/' anchors the
	// pattern at the root, an unanchored pattern matches a run of
	// elements at any depth, and a matched directory matches everything
	// below it.
	Patterns []string
	// IgnoreCase matches patterns without regard to case.
	IgnoreCase bool
	// Oldest and Newest, when not zero, bound a matching node's
	// modification time (both inclusive).
	Oldest, Newest time.Time

	// Blobs and Trees, when either is set, replace the pattern search:
	// they are ids or id prefixes (hex); a file is reported with the
	// first of its data blobs that matches Blobs, a directory whose tree
	// matches Trees is reported with its tree. Snapshot root trees are
	// not reported (as in restic).
	Blobs, Trees []string

	// PathsOnly leaves FindHit.Node nil: the search then keeps no node
	// metadata in memory, only names.
	PathsOnly bool

	// Workers is the number of trees loaded at once (default 4 per core).
	Workers int
	// TreeError, when set, is called for every tree that cannot be
	// loaded, with the path of one place it appears; the search goes on
	// without it. Without TreeError, such a tree ends the search.
	TreeError func(id crypto.ID, path string, err error)
}

// FindHit is one result of Find.
type FindHit struct {
	// Path is the full path of the node in its snapshot, "/" separated.
	Path string
	// Node is the matching node of a pattern search, without its content
	// list and extended attributes (nil with FindOptions.PathsOnly).
	Node *tree.Node
	// ObjectType is "blob" or "tree" in an object search, empty otherwise.
	ObjectType string
	// ID is the matching blob or tree.
	ID crypto.ID
	// ParentTree is, for a blob, the tree that lists the file.
	ParentTree crypto.ID
}

// FindStats describes the work of a search.
type FindStats struct {
	TreesLoaded int // tree loads, failed ones included
	TreeErrors  int // trees that could not be loaded
}

// Validate checks the options without searching.
func (o *FindOptions) Validate() error {
	_, _, _, err := o.compile()
	return err
}

func (o *FindOptions) compile() (m *findMatcher, blobs, trees *idSet, err error) {
	if blobs, err = newIDSet(o.Blobs); err != nil {
		return nil, nil, nil, err
	}
	if trees, err = newIDSet(o.Trees); err != nil {
		return nil, nil, nil, err
	}
	if blobs != nil || trees != nil {
		return nil, blobs, trees, nil
	}
	if len(o.Patterns) == 0 {
		return nil, nil, nil, errors.New("no pattern given")
	}
	m, err = newFindMatcher(o.Patterns, o.IgnoreCase)
	return m, nil, nil, err
}

// Find searches the snapshots and calls fn for every hit: snapshot by
// snapshot in the order given, in path order (depth first, names sorted)
// within a snapshot. It stops at the first error fn returns. The hit
// passed to fn is reused after fn returns: fn copies what it keeps.
//
// Every tree is searched once however many snapshots share it: the hits
// below a tree are remembered relative to it and reported again, under
// the right path, for every snapshot and place that holds the tree. A tree
// is loaded again only where a pattern containing '/' (or a matched
// directory above it) makes the same tree reachable in a different state
// of the match, which restic's rules make a different search.
func Find(ctx context.Context, l TreeLoader, snaps []*snapshot.Snapshot, opts FindOptions,
	fn func(sn *snapshot.Snapshot, h *FindHit) error) (*FindStats, error) {
	m, blobs, trees, err := opts.compile()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &finder{l: l, opts: &opts, m: m, blobs: blobs, trees: trees, memo: map[findKey]*findResult{}, cancel: cancel}
	f.cond = sync.NewCond(&f.mu)
	start := ""
	if m != nil {
		start = m.start()
	}
	roots := make([]*findResult, len(snaps))
	for i, sn := range snaps {
		if m != nil && start == deadState {
			continue
		}
		f.mu.Lock()
		roots[i] = f.claimLocked(findKey{sn.Tree, start}, "/", "", sn)
		f.mu.Unlock()
	}
	f.run(ctx, opts.Workers)
	if f.err != nil {
		return f.stats(), f.err
	}
	if err := ctx.Err(); err != nil {
		return f.stats(), err
	}
	buf := make([]byte, 0, 4096)
	var hit FindHit
	for i, sn := range snaps {
		if roots[i] == nil || !roots[i].hasHits() {
			continue
		}
		if err := f.emit(ctx, sn, roots[i], buf[:0], &hit, fn); err != nil {
			return f.stats(), err
		}
	}
	return f.stats(), nil
}

// findKey names one search: a tree in a state of the pattern match.
type findKey struct {
	id    crypto.ID
	state string
}

// findResult is what the search of one tree found: its nodes that match
// and its subtrees with matches, in node order.
type findResult struct {
	entries []findEntry
	has     int8 // 0 unknown, 1 no hits below, 2 hits below
}

type findEntry struct {
	name  string
	hit   *FindHit    // the node matches (Path unset)
	child *findResult // the node's subtree is searched
}

// hasHits reports whether the result or a subtree of it has hits.
func (r *findResult) hasHits() bool {
	if r.has == 0 {
		r.has = 1
		for i := range r.entries {
			e := &r.entries[i]
			if e.hit != nil || (e.child != nil && e.child.hasHits()) {
				r.has = 2
				break
			}
		}
	}
	return r.has == 2
}

type findJob struct {
	key  findKey
	res  *findResult
	path string
	sn   *snapshot.Snapshot
}

type finder struct {
	l      TreeLoader
	opts   *FindOptions
	m      *findMatcher
	blobs  *idSet
	trees  *idSet
	cancel context.CancelFunc
	// pathHit is the hit of every match with PathsOnly (emit copies it).
	pathHit FindHit

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []findJob
	active int
	memo   map[findKey]*findResult
	loads  int
	failed int
	err    error
}

func (f *finder) stats() *FindStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &FindStats{TreesLoaded: f.loads, TreeErrors: f.failed}
}

// claimLocked returns the result for key, queueing its search the first
// time; dir and name give the path of the tree for error messages. The
// caller holds f.mu.
func (f *finder) claimLocked(key findKey, dir, name string, sn *snapshot.Snapshot) *findResult {
	if r, ok := f.memo[key]; ok {
		return r
	}
	r := &findResult{}
	f.memo[key] = r
	f.queue = append(f.queue, findJob{key: key, res: r, path: joinPath(dir, name), sn: sn})
	f.cond.Signal()
	return r
}

func joinPath(dir, name string) string {
	switch {
	case name == "":
		return dir
	case dir == "/":
		return "/" + name
	}
	return dir + "/" + name
}

// childRef is a subtree found by search, to be claimed: the entry idx of
// the parent's result points to it.
type childRef struct {
	idx  int
	key  findKey
	name string
}

// run searches every queued tree with a fixed number of workers; searching
// a tree queues its subtrees. Memory is bounded by the queue of trees, not
// by goroutines.
func (f *finder) run(ctx context.Context, workers int) {
	if workers < 1 {
		workers = 4 * runtime.GOMAXPROCS(0)
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s searchScratch
			for {
				f.mu.Lock()
				for len(f.queue) == 0 && f.active > 0 {
					f.cond.Wait()
				}
				if len(f.queue) == 0 {
					f.mu.Unlock()
					f.cond.Broadcast()
					return
				}
				j := f.queue[len(f.queue)-1]
				f.queue = f.queue[:len(f.queue)-1]
				f.active++
				f.loads++
				f.mu.Unlock()

				var children []childRef
				if ctx.Err() == nil {
					t, err := walk.Load(ctx, f.l, j.key.id)
					switch {
					case ctx.Err() != nil:
					case err != nil:
						f.treeFailed(j, err)
					default:
						j.res.entries, children = f.search(j.key, t, &s)
						if err := t.Err(); err != nil { // a tree in files failed a read
							j.res.entries, children = nil, nil
							f.treeFailed(j, err)
						}
					}
				}
				f.mu.Lock()
				for _, c := range children {
					j.res.entries[c.idx].child = f.claimLocked(c.key, j.path, c.name, j.sn)
				}
				f.active--
				f.mu.Unlock()
				f.cond.Broadcast()
			}
		}()
	}
	wg.Wait()
}

func (f *finder) treeFailed(j findJob, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed++
	if f.opts.TreeError == nil {
		if f.err == nil {
			f.err = fmt.Errorf("tree %s at %s (snapshot %s): %w", j.key.id.Short(), j.path, j.sn.ID.Short(), err)
			f.cancel()
		}
		return
	}
	f.opts.TreeError(j.key.id, j.path, err)
}

// searchScratch is a worker's reusable memory.
type searchScratch struct {
	st, next []uint64
}

// search evaluates the nodes of the tree of key: which match, and which
// subtrees must be searched in which state.
// A tree is read a node at a time: a directory of a million files is never
// decoded whole (walk.Load), and only its hits are kept.
func (f *finder) search(key findKey, t walk.List, s *searchScratch) ([]findEntry, []childRef) {
	var entries []findEntry
	var children []childRef
	add := func(name string, hit *FindHit, sub *crypto.ID, state string) {
		entries = append(entries, findEntry{name: name, hit: hit})
		if sub != nil {
			children = append(children, childRef{idx: len(entries) - 1, key: findKey{*sub, state}, name: name})
		}
	}
	if f.m == nil {
		for i := range t.Len() {
			var hit *FindHit
			var sub *crypto.ID
			if id, ok := t.Dir(i); ok {
				sub = &id
				if f.trees.has(sub) {
					hit = &FindHit{ObjectType: "tree", ID: id}
				}
			} else if f.blobs != nil && t.Head(i).Type == tree.File {
				content := t.Content(i)
				for k := range content {
					if f.blobs.has(&content[k]) {
						hit = &FindHit{ObjectType: "blob", ID: content[k], ParentTree: key.id}
						break
					}
				}
			}
			if hit != nil || sub != nil {
				add(t.Name(i), hit, sub, "")
			}
		}
		return entries, children
	}

	accept := key.state == acceptAll
	if !accept {
		s.st = f.m.decode(key.state, s.st)
	}
	for i := range t.Len() {
		name := t.Name(i)
		matched := accept
		state := acceptAll
		if !accept {
			folded := name
			if f.m.fold {
				folded = lower(name)
			}
			s.next = s.next[:0]
			same := true
			for i, p := range f.m.patterns {
				x := p.step(s.st[i], folded)
				if x&p.final != 0 {
					matched = true
				}
				s.next = append(s.next, x)
				same = same && x == s.st[i]
			}
			switch {
			case matched:
			case same:
				state = key.state
			default:
				state = f.m.encode(s.next)
			}
		}
		var hit *FindHit
		if matched {
			if head := t.Head(i); f.inTime(&head) {
				if f.opts.PathsOnly {
					hit = &f.pathHit
				} else {
					c := *t.Node(i) // a copy: a decoded tree's node is the tree's
					c.Content, c.Xattrs = nil, nil
					hit = &FindHit{Node: &c}
				}
			}
		}
		var sub *crypto.ID
		if id, ok := t.Dir(i); ok && state != deadState {
			sub = &id
		}
		if hit != nil || sub != nil {
			add(name, hit, sub, state)
		}
	}
	return entries, children
}

func (f *finder) inTime(n *tree.Node) bool {
	o := f.opts
	if !o.Oldest.IsZero() && n.ModTime.Before(o.Oldest) {
		return false
	}
	if !o.Newest.IsZero() && n.ModTime.After(o.Newest) {
		return false
	}
	return true
}

// lower is strings.ToLower without an allocation for names that are
// already lower case ASCII.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || ('A' <= c && c <= 'Z') {
			return strings.ToLower(s)
		}
	}
	return s
}

// emit reports the hits of r (the root tree of sn, or a subtree at the
// path in buf) in path order, each through h.
func (f *finder) emit(ctx context.Context, sn *snapshot.Snapshot, r *findResult, buf []byte, h *FindHit,
	fn func(*snapshot.Snapshot, *FindHit) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range r.entries {
		e := &r.entries[i]
		p := append(append(buf, '/'), e.name...)
		if e.hit != nil {
			*h = *e.hit
			h.Path = string(p)
			if err := fn(sn, h); err != nil {
				return err
			}
		}
		if e.child != nil && e.child.hasHits() {
			if err := f.emit(ctx, sn, e.child, p, h, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// BlobLister lists the blobs of an index; *index.Index has this method.
type BlobLister interface {
	Each(fn func(index.PackedBlob) bool)
}

// PackBlobs returns the data blobs of the packs whose ids start with one of
// the prefixes, as full ids for FindOptions.Blobs (restic's find --pack).
// A prefix that names no pack in the index is an error.
func PackBlobs(idx BlobLister, prefixes []string) ([]string, error) {
	ps := make([]idPrefix, len(prefixes))
	for i, s := range prefixes {
		p, err := parseIDPrefix(s)
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	found := make([]bool, len(prefixes))
	seen := map[crypto.ID]bool{}
	var out []string
	idx.Each(func(pb index.PackedBlob) bool {
		in := false
		for i, p := range ps {
			if p.match(&pb.PackID) {
				found[i], in = true, true
			}
		}
		if in && pb.Type == pack.DataBlob && !seen[pb.ID] {
			seen[pb.ID] = true
			out = append(out, pb.ID.String())
		}
		return true
	})
	var missing []string
	for i, ok := range found {
		if !ok {
			missing = append(missing, prefixes[i])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("unable to find pack(s): %v", missing)
	}
	return out, nil
}
