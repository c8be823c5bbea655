// Package index maps blob ids to their place in the repository (pack,
// offset, length) and encodes that map as index files.
//
// In memory the index is a sorted table of fixed-size entries (52 bytes per
// blob) plus a small map of entries added since the last sort. Ids are
// uniformly distributed, so a table of where each range of leading id bits
// starts (one slot per four entries) narrows a lookup to a handful of
// neighbouring entries before a binary search: one or two cache misses
// instead of twenty on a large index. The index is safe for concurrent use.
package index

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sort"
	"sync"

	"dj/repo/crypto"
	"dj/repo/pack"
)

// PackedBlob is where one blob is stored.
type PackedBlob struct {
	pack.Blob
	PackID crypto.ID
}

type entry struct {
	id          crypto.ID
	packIdx     uint32
	offset      uint32
	length      uint32
	plainLength uint32
	typ         pack.BlobType
	compressed  bool
}

// Index is the in-memory blob index.
type Index struct {
	mu     sync.RWMutex
	sorted []entry
	// starts[b] is the first sorted entry whose id's leading bits (the
	// top 64-shift bits of its first 8 bytes) are at least b.
	starts  []uint32
	shift   uint
	pending map[blobKey][]entry
	packs   []crypto.ID
	packIdx map[crypto.ID]uint32
}

type blobKey struct {
	t  pack.BlobType
	id crypto.ID
}

// New returns an empty index.
func New() *Index {
	return &Index{pending: make(map[blobKey][]entry), packIdx: make(map[crypto.ID]uint32)}
}

// packIndexLocked returns the number of packID in x.packs, adding it.
func (x *Index) packIndexLocked(packID crypto.ID) uint32 {
	pi, ok := x.packIdx[packID]
	if !ok {
		pi = uint32(len(x.packs))
		x.packs = append(x.packs, packID)
		x.packIdx[packID] = pi
	}
	return pi
}

// AddPack records the blobs of a pack.
func (x *Index) AddPack(packID crypto.ID, blobs []pack.Blob) {
	x.mu.Lock()
	defer x.mu.Unlock()
	pi := x.packIndexLocked(packID)
	for _, b := range blobs {
		e := entry{id: b.ID, packIdx: pi, offset: b.Offset, length: b.Length, plainLength: b.PlainLength, typ: b.Type, compressed: b.Compressed}
		k := blobKey{b.Type, b.ID}
		x.pending[k] = append(x.pending[k], e)
	}
	if len(x.pending) > 1<<16 && len(x.pending) > len(x.sorted)/8 {
		x.compactLocked()
	}
}

func less(a, b *entry) bool {
	if c := bytes.Compare(a.id[:], b.id[:]); c != 0 {
		return c < 0
	}
	if a.typ != b.typ {
		return a.typ < b.typ
	}
	return a.packIdx < b.packIdx
}

func (x *Index) compactLocked() {
	if len(x.pending) == 0 {
		return
	}
	for _, es := range x.pending {
		x.sorted = append(x.sorted, es...)
	}
	x.pending = make(map[blobKey][]entry)
	x.sortLocked()
}

// sortLocked sorts the table and makes its bucket starts.
func (x *Index) sortLocked() {
	slices.SortFunc(x.sorted, func(a, b entry) int {
		// The first 8 bytes as one integer decide almost every comparison.
		if ka, kb := binary.BigEndian.Uint64(a.id[:8]), binary.BigEndian.Uint64(b.id[:8]); ka != kb {
			if ka < kb {
				return -1
			}
			return 1
		}
		switch {
		case less(&a, &b):
			return -1
		case less(&b, &a):
			return 1
		}
		return 0
	})
	x.buildStarts()
}

// buildStarts makes the table of bucket starts for the sorted entries.
func (x *Index) buildStarts() {
	bits := uint(0)
	for bits < 32 && 4<<bits < len(x.sorted) {
		bits++
	}
	x.shift = 64 - bits
	n := 1 << bits
	if cap(x.starts) >= n+1 {
		x.starts = x.starts[:n+1]
	} else {
		x.starts = make([]uint32, n+1)
	}
	b := 0
	for i := range x.sorted {
		k := int(binary.BigEndian.Uint64(x.sorted[i].id[:8]) >> x.shift) // 0 when shift is 64
		for b <= k {
			x.starts[b] = uint32(i)
			b++
		}
	}
	for ; b <= n; b++ {
		x.starts[b] = uint32(len(x.sorted))
	}
}

// Compact sorts pending entries into the table. Call it after loading all
// index files.
func (x *Index) Compact() {
	x.mu.Lock()
	x.compactLocked()
	x.mu.Unlock()
}

func (x *Index) toPacked(e *entry) PackedBlob {
	return PackedBlob{
		Blob:   pack.Blob{Type: e.typ, Compressed: e.compressed, ID: e.id, Offset: e.offset, Length: e.length, PlainLength: e.plainLength},
		PackID: x.packs[e.packIdx],
	}
}

// Lookup returns every known location of a blob (usually one).
func (x *Index) Lookup(t pack.BlobType, id crypto.ID) []PackedBlob {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []PackedBlob
	for i := x.searchLocked(t, id); i < len(x.sorted) && x.sorted[i].id == id && x.sorted[i].typ == t; i++ {
		out = append(out, x.toPacked(&x.sorted[i]))
	}
	for _, e := range x.pending[blobKey{t, id}] {
		out = append(out, x.toPacked(&e))
	}
	return out
}

// searchLocked returns the position of the first sorted entry that is not
// before (id, t). It compares the first 8 bytes of the ids as one integer
// (the same order as bytes.Compare) and looks at the rest only on a tie:
// lookups run once per chunk in backup and once per blob reference in check.
func (x *Index) searchLocked(t pack.BlobType, id crypto.ID) int {
	key := binary.BigEndian.Uint64(id[:8])
	lo, hi := 0, len(x.sorted)
	if len(x.starts) > 2 {
		b := key >> x.shift
		lo, hi = int(x.starts[b]), int(x.starts[b+1])
	}
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		e := &x.sorted[mid]
		var before bool // e sorts before (id, t)
		if ek := binary.BigEndian.Uint64(e.id[:8]); ek != key {
			before = ek < key
		} else if c := bytes.Compare(e.id[8:], id[8:]); c != 0 {
			before = c < 0
		} else {
			before = e.typ < t
		}
		if before {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// firstLocked returns an entry of the blob, or nil.
func (x *Index) firstLocked(t pack.BlobType, id crypto.ID) *entry {
	if i := x.searchLocked(t, id); i < len(x.sorted) && x.sorted[i].id == id && x.sorted[i].typ == t {
		return &x.sorted[i]
	}
	if es := x.pending[blobKey{t, id}]; len(es) > 0 {
		return &es[0]
	}
	return nil
}

// Has reports whether the index knows a blob.
func (x *Index) Has(t pack.BlobType, id crypto.ID) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.firstLocked(t, id) != nil
}

// PlainLength returns the plaintext length of a blob.
func (x *Index) PlainLength(t pack.BlobType, id crypto.ID) (int, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if e := x.firstLocked(t, id); e != nil {
		return int(e.plainLength), true
	}
	return 0, false
}

// Len returns the number of entries (a blob stored in two packs counts twice).
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := len(x.sorted)
	for _, es := range x.pending {
		n += len(es)
	}
	return n
}

// Each calls fn for every entry, sorted by blob id, until fn returns false.
func (x *Index) Each(fn func(PackedBlob) bool) {
	x.Compact()
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i := range x.sorted {
		if !fn(x.toPacked(&x.sorted[i])) {
			return
		}
	}
}

// Packs returns the blobs of each pack, grouped by pack id.
func (x *Index) Packs() map[crypto.ID][]pack.Blob {
	out := make(map[crypto.ID][]pack.Blob)
	x.Each(func(pb PackedBlob) bool {
		out[pb.PackID] = append(out[pb.PackID], pb.Blob)
		return true
	})
	for id, bs := range out {
		sort.Slice(bs, func(i, j int) bool { return bs[i].Offset < bs[j].Offset })
		out[id] = bs
	}
	return out
}

// Filter returns a copy of the index restricted to the packs for which keep
// returns true.
func (x *Index) Filter(keep func(packID crypto.ID) bool) *Index {
	n := New()
	for id, blobs := range x.Packs() {
		if keep(id) {
			n.AddPack(id, blobs)
		}
	}
	n.Compact()
	return n
}
