package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"dj/repo/crypto"
	"dj/repo/pack"
)

// File is the content of one index file: packs with their blobs, the index
// files it supersedes, and packs that prune has marked for deletion.
type File struct {
	Supersedes []crypto.ID
	Packs      []FilePack
	// Pending lists packs that no snapshot needed when prune looked. Their
	// blobs stay readable but are never used for deduplication; a later
	// prune deletes them once it is safe (see package maint).
	Pending []FilePack
}

// FilePack is one pack in an index file.
type FilePack struct {
	ID    crypto.ID
	Blobs []pack.Blob
	// MarkedAt is when prune marked a pending pack (Unix nanoseconds); zero
	// for normal packs.
	MarkedAt int64
}

// ErrCorrupt is returned for an index file that does not decode.
var ErrCorrupt = errors.New("index file is corrupt")

const fileMagic = "djix\x01"

// Encode returns the binary encoding of f:
//
//	magic "djix" 0x01, uvarint n, n supersedes ids,
//	uvarint packs, per pack: id, uvarint blobs,
//	per blob: type, flags, id, uvarint offset, uvarint length, uvarint plain length,
//	uvarint pending packs, per pack: id, uvarint marked-at, then as above.
func (f *File) Encode() []byte {
	b := []byte(fileMagic)
	b = binary.AppendUvarint(b, uint64(len(f.Supersedes)))
	for _, id := range f.Supersedes {
		b = append(b, id[:]...)
	}
	b = appendPacks(b, f.Packs, false)
	b = appendPacks(b, f.Pending, true)
	return b
}

func appendPacks(b []byte, packs []FilePack, pending bool) []byte {
	b = binary.AppendUvarint(b, uint64(len(packs)))
	for _, p := range packs {
		b = append(b, p.ID[:]...)
		if pending {
			b = binary.AppendUvarint(b, uint64(p.MarkedAt))
		}
		b = binary.AppendUvarint(b, uint64(len(p.Blobs)))
		for _, e := range p.Blobs {
			var flags byte
			if e.Compressed {
				flags = 1
			}
			b = append(b, byte(e.Type), flags)
			b = append(b, e.ID[:]...)
			b = binary.AppendUvarint(b, uint64(e.Offset))
			b = binary.AppendUvarint(b, uint64(e.Length))
			b = binary.AppendUvarint(b, uint64(e.PlainLength))
		}
	}
	return b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.err = fmt.Errorf("%w: invalid number", ErrCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) id() crypto.ID {
	var id crypto.ID
	if d.err != nil {
		return id
	}
	if len(d.b) < crypto.IDSize {
		d.err = fmt.Errorf("%w: truncated", ErrCorrupt)
		return id
	}
	copy(id[:], d.b)
	d.b = d.b[crypto.IDSize:]
	return id
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = fmt.Errorf("%w: truncated", ErrCorrupt)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// DecodeFile parses an index file, bounding every count by the bytes left
// so a hostile file cannot force a large allocation.
func DecodeFile(b []byte) (*File, error) {
	if len(b) < len(fileMagic) || string(b[:len(fileMagic)]) != fileMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	d := &decoder{b: b[len(fileMagic):]}
	f := &File{}
	ns := d.uvarint(uint64(len(d.b) / crypto.IDSize))
	for i := uint64(0); i < ns && d.err == nil; i++ {
		f.Supersedes = append(f.Supersedes, d.id())
	}
	f.Packs = d.packs(false)
	f.Pending = d.packs(true)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return f, nil
}

func (d *decoder) packs(pending bool) []FilePack {
	var out []FilePack
	np := d.uvarint(uint64(len(d.b) / (crypto.IDSize + 1)))
	for i := uint64(0); i < np && d.err == nil; i++ {
		p := FilePack{ID: d.id()}
		if pending {
			p.MarkedAt = int64(d.uvarint(1 << 62))
		}
		nb := d.uvarint(uint64(len(d.b) / (crypto.IDSize + 5)))
		p.Blobs = make([]pack.Blob, 0, nb)
		for j := uint64(0); j < nb && d.err == nil; j++ {
			e := pack.Blob{Type: pack.BlobType(d.byte())}
			flags := d.byte()
			e.Compressed = flags&1 != 0
			e.ID = d.id()
			e.Offset = uint32(d.uvarint(pack.MaxPackSize))
			e.Length = uint32(d.uvarint(pack.MaxPackSize))
			e.PlainLength = uint32(d.uvarint(pack.MaxBlobSize))
			if d.err == nil && (e.Type > pack.PaddingBlob || flags > 1) {
				d.err = fmt.Errorf("%w: invalid blob type or flags", ErrCorrupt)
			}
			p.Blobs = append(p.Blobs, e)
		}
		out = append(out, p)
	}
	return out
}

// AddFile adds the packs of an index file to the index.
func (x *Index) AddFile(f *File) {
	for _, p := range f.Packs {
		x.AddPack(p.ID, p.Blobs)
	}
}

// AddFiles adds the packs of index files at once, as loading a
// repository's index does: their entries go straight into the table,
// sorted once, instead of into the pending map blob by blob (which cost
// most of an index load's time in map growth).
func (x *Index) AddFiles(files []*File) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, f := range files {
		for _, p := range f.Packs {
			n += len(p.Blobs)
		}
	}
	x.sorted = slices.Grow(x.sorted, n)
	for _, f := range files {
		for _, p := range f.Packs {
			pi := x.packIndexLocked(p.ID)
			for _, b := range p.Blobs {
				x.sorted = append(x.sorted, entry{id: b.ID, packIdx: pi, offset: b.Offset, length: b.Length,
					plainLength: b.PlainLength, typ: b.Type, compressed: b.Compressed})
			}
		}
	}
	for _, es := range x.pending {
		x.sorted = append(x.sorted, es...)
	}
	clear(x.pending)
	x.sortLocked()
}
