// Package pack reads and writes pack files: blobs (each sealed on its own,
// so repack can move ciphertext), followed by an encrypted header that lists
// them, followed by the header's length as 4 little-endian bytes.
//
// A header entry is: type (1 byte), flags (1 byte; bit 0 = compressed), blob
// id (32 bytes), stored length (uint32), plaintext length (uint32). Offsets
// are cumulative from the start of the pack.
package pack

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"dj/repo/crypto"
)

// BlobType says what a blob holds.
type BlobType uint8

// The blob types.
const (
	DataBlob    BlobType = 0
	TreeBlob    BlobType = 1
	PaddingBlob BlobType = 2
)

// String returns "data", "tree" or "padding".
func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	case PaddingBlob:
		return "padding"
	}
	return fmt.Sprintf("invalid(%d)", uint8(t))
}

// Blob is one entry of a pack header.
type Blob struct {
	Type        BlobType
	Compressed  bool
	ID          crypto.ID
	Offset      uint32 // start of the stored bytes within the pack
	Length      uint32 // stored (sealed) length
	PlainLength uint32 // length of the plaintext
}

const (
	entrySize = 1 + 1 + crypto.IDSize + 4 + 4
	// MaxPackSize bounds the packs dj reads, so a hostile length cannot make
	// it allocate without limit.
	MaxPackSize = 1 << 30
	// MaxBlobSize bounds a blob's plaintext length. Data blobs are at most
	// the chunker's 8 MiB; trees grow with their directory (a directory of
	// a million files is a tree of about 330 MB).
	MaxBlobSize   = 512 << 20
	headerAD      = "dj pack header v1"
	flagCompressd = 1
)

// ErrCorrupt is returned for a pack whose header cannot be trusted.
var ErrCorrupt = errors.New("pack is corrupt")

// blobAD binds a sealed blob to its type and id, so a blob swapped for
// another, or a data blob presented as a tree, fails to open.
func blobAD(t BlobType, id crypto.ID) []byte {
	ad := make([]byte, 1+crypto.IDSize)
	ad[0] = byte(t)
	copy(ad[1:], id[:])
	return ad
}

// SealBlob seals stored content of a blob (plaintext or compressed
// plaintext) and appends it to dst.
func SealBlob(k *crypto.Key, dst []byte, t BlobType, id crypto.ID, content []byte) []byte {
	return k.Seal(dst, content, blobAD(t, id))
}

// SealBlobInPlace seals the stored content of a blob where it lies: buf
// holds crypto.NonceSize bytes of room and then the content.
func SealBlobInPlace(k *crypto.Key, buf []byte, t BlobType, id crypto.ID) []byte {
	return k.SealInPlace(buf, blobAD(t, id))
}

// OpenBlob opens the stored bytes of a blob and appends the content to dst.
func OpenBlob(k *crypto.Key, dst []byte, t BlobType, id crypto.ID, sealed []byte) ([]byte, error) {
	out, err := k.Open(dst, sealed, blobAD(t, id))
	if err != nil {
		return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
	}
	return out, nil
}

// appendHeader appends the sealed header listing blobs, and its length.
func appendHeader(k *crypto.Key, dst []byte, blobs []Blob) []byte {
	hdr := make([]byte, 0, len(blobs)*entrySize)
	for _, b := range blobs {
		hdr = appendEntry(hdr, b)
	}
	start := len(dst)
	dst = k.Seal(dst, hdr, []byte(headerAD))
	return binary.LittleEndian.AppendUint32(dst, uint32(len(dst)-start))
}

// StreamWriter writes a pack to an io.Writer as blobs are added, keeping
// only the header entries in memory, and hashes what it writes: the hash is
// the pack's id. Backup writes packs this way, straight into a file, so
// memory does not grow with the pack size.
type StreamWriter struct {
	key   *crypto.Key
	out   io.Writer
	hash  hash.Hash
	size  int64
	blobs []Blob
}

// NewStreamWriter returns a StreamWriter that writes to out.
func NewStreamWriter(k *crypto.Key, out io.Writer) *StreamWriter {
	return &StreamWriter{key: k, out: out, hash: sha256.New()}
}

// Add writes a sealed blob (from SealBlob) to the pack.
func (w *StreamWriter) Add(t BlobType, id crypto.ID, sealed []byte, compressed bool, plainLen int) error {
	if w.size+int64(len(sealed)) > MaxPackSize {
		return fmt.Errorf("pack would exceed %d bytes", MaxPackSize)
	}
	if _, err := w.out.Write(sealed); err != nil {
		return err
	}
	w.hash.Write(sealed)
	w.blobs = append(w.blobs, Blob{
		Type: t, Compressed: compressed, ID: id,
		Offset: uint32(w.size), Length: uint32(len(sealed)), PlainLength: uint32(plainLen),
	})
	w.size += int64(len(sealed))
	return nil
}

// Size returns the number of bytes written so far (without the header).
func (w *StreamWriter) Size() int64 { return w.size }

// Count returns the number of blobs added.
func (w *StreamWriter) Count() int { return len(w.blobs) }

// Finish writes the header and returns the pack's id (the SHA-256 of its
// bytes), its length and its entries. The StreamWriter must not be used
// afterwards.
func (w *StreamWriter) Finish() (crypto.ID, int64, []Blob, error) {
	tail := appendHeader(w.key, nil, w.blobs)
	if _, err := w.out.Write(tail); err != nil {
		return crypto.ID{}, 0, nil, err
	}
	w.hash.Write(tail)
	var id crypto.ID
	w.hash.Sum(id[:0])
	return id, w.size + int64(len(tail)), w.blobs, nil
}

func appendEntry(b []byte, e Blob) []byte {
	b = append(b, byte(e.Type))
	var flags byte
	if e.Compressed {
		flags |= flagCompressd
	}
	b = append(b, flags)
	b = append(b, e.ID[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.Length)
	b = binary.LittleEndian.AppendUint32(b, e.PlainLength)
	return b
}

// EagerTail is how many bytes from the end of a pack a reader should load
// first: enough for the header of a typical pack in one read.
const EagerTail = 64 << 10

// HeaderLength returns the length of the sealed header, given the last 4
// bytes of a pack of packSize bytes.
func HeaderLength(last4 []byte, packSize int64) (int, error) {
	if len(last4) != 4 {
		return 0, fmt.Errorf("%w: short tail", ErrCorrupt)
	}
	n := int64(binary.LittleEndian.Uint32(last4))
	if n < crypto.Overhead || n+4 > packSize || n > MaxPackSize {
		return 0, fmt.Errorf("%w: header length %d invalid for pack of %d bytes", ErrCorrupt, n, packSize)
	}
	return int(n), nil
}

// ParseHeader opens a sealed header (the bytes before the final 4) and
// checks that its entries tile the pack exactly: blobs are contiguous from
// offset 0 and end where the header starts.
func ParseHeader(k *crypto.Key, sealed []byte, packSize int64) ([]Blob, error) {
	hdr, err := k.Open(nil, sealed, []byte(headerAD))
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
	}
	if len(hdr)%entrySize != 0 {
		return nil, fmt.Errorf("%w: header length %d is not a multiple of %d", ErrCorrupt, len(hdr), entrySize)
	}
	dataEnd := packSize - int64(len(sealed)) - 4
	blobs := make([]Blob, 0, len(hdr)/entrySize)
	var off int64
	for p := 0; p < len(hdr); p += entrySize {
		e := hdr[p : p+entrySize]
		b := Blob{Type: BlobType(e[0]), Compressed: e[1]&flagCompressd != 0, Offset: uint32(off)}
		copy(b.ID[:], e[2:2+crypto.IDSize])
		b.Length = binary.LittleEndian.Uint32(e[2+crypto.IDSize:])
		b.PlainLength = binary.LittleEndian.Uint32(e[6+crypto.IDSize:])
		if b.Type > PaddingBlob || e[1]&^flagCompressd != 0 {
			return nil, fmt.Errorf("%w: entry %d has invalid type or flags", ErrCorrupt, len(blobs))
		}
		if b.Length < crypto.Overhead || b.PlainLength > MaxBlobSize {
			return nil, fmt.Errorf("%w: entry %d has invalid length", ErrCorrupt, len(blobs))
		}
		off += int64(b.Length)
		if off > dataEnd {
			return nil, fmt.Errorf("%w: entries run past the header", ErrCorrupt)
		}
		blobs = append(blobs, b)
	}
	if off != dataEnd {
		return nil, fmt.Errorf("%w: entries cover %d bytes, pack data has %d", ErrCorrupt, off, dataEnd)
	}
	return blobs, nil
}

// ParseTail parses the header from the last bytes of a pack (tail must end
// at the end of the pack and hold the whole header and its length).
func ParseTail(k *crypto.Key, tail []byte, packSize int64) ([]Blob, error) {
	if len(tail) < 4 {
		return nil, fmt.Errorf("%w: pack too short", ErrCorrupt)
	}
	n, err := HeaderLength(tail[len(tail)-4:], packSize)
	if err != nil {
		return nil, err
	}
	if n+4 > len(tail) {
		return nil, fmt.Errorf("%w: tail of %d bytes does not hold the header of %d", ErrCorrupt, len(tail), n)
	}
	return ParseHeader(k, tail[len(tail)-4-n:len(tail)-4], packSize)
}
