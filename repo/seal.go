package repo

import (
	"dj/repo/crypto"
	"dj/repo/pack"
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// compressAndSeal returns the stored form of a blob in one pooled buffer:
// compressed (when that is smaller) right after room for the nonce, then
// sealed in place; incompressible content is sealed from plain directly.
func (r *Repository) compressAndSeal(t pack.BlobType, id crypto.ID, plain []byte) ([]byte, bool) {
	buf := r.getBuf(len(plain) + crypto.Overhead)
	if r.enc != nil && len(plain) >= 64 {
		c := r.enc.EncodeAll(plain, buf[:crypto.NonceSize])
		if len(c)-crypto.NonceSize < len(plain) {
			return pack.SealBlobInPlace(r.key, c, t, id), true
		}
		buf = c
	}
	return pack.SealBlob(r.key, buf[:0], t, id, plain), false
}

// getBuf returns an empty buffer with room for n bytes from the pool.
func (r *Repository) getBuf(n int) []byte {
	select {
	case b := <-r.bufPool:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	// Round up so that the buffer serves later, larger requests too: the
	// pool then settles on a few buffers instead of churning the heap.
	const step = 1 << 20
	return make([]byte, 0, (n+step-1)/step*step)
}

// putBuf returns a buffer to the pool; nil is ignored.
func (r *Repository) putBuf(b []byte) {
	if b == nil || cap(b) > 16<<20 {
		return
	}
	select {
	case r.bufPool <- b[:0]:
	default:
	}
}

// compress returns the zstd encoding of plain when it is smaller.
func (r *Repository) compress(plain []byte) ([]byte, bool) {
	if r.enc == nil || len(plain) < 64 {
		return plain, false
	}
	c := r.enc.EncodeAll(plain, make([]byte, 0, len(plain)))
	if len(c) >= len(plain) {
		return plain, false
	}
	return c, true
}

// SetCompression changes the zstd level for blobs saved from now on
// ("off", "fastest", "default", "better", "best"). It must not run while
// blobs or files are being saved.
func (r *Repository) SetCompression(level string) error {
	enc, err := newEncoder(level)
	if err != nil {
		return err
	}
	if r.enc != nil {
		r.enc.Close()
	}
	r.enc = enc
	return nil
}

// newEncoder returns the zstd encoder for a level name, or nil for "off".
func newEncoder(name string) (*zstd.Encoder, error) {
	level := zstd.SpeedDefault
	switch name {
	case "", "auto", "default":
	case "off":
		return nil, nil
	case "fastest":
		level = zstd.SpeedFastest
	case "better":
		level = zstd.SpeedBetterCompression
	case "best", "max":
		level = zstd.SpeedBestCompression
	default:
		return nil, fmt.Errorf("unknown compression %q (want off, fastest, default, better or best)", name)
	}
	// No frame checksum: every blob is sealed and its plaintext hashed to
	// its id, so zstd's own checksum would only cost time.
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithZeroFrames(true), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
}

// Compress returns the zstd encoding of plain when that is smaller, with the
// repository's current level.
func (r *Repository) Compress(plain []byte) ([]byte, bool) { return r.compress(plain) }

// BlobID returns the keyed id of plaintext.
func (r *Repository) BlobID(plain []byte) crypto.ID { return r.key.BlobID(plain) }

// Gear returns the keyed gear table of the chunker.
func (r *Repository) Gear() *[256]uint64 { return r.key.Gear() }

// ChunkerSizes returns the chunker's minimum, average and maximum chunk sizes.
func (r *Repository) ChunkerSizes() (min, avg, max int) {
	return r.cfg.ChunkerMin, r.cfg.ChunkerAvg, r.cfg.ChunkerMax
}

// SealedForm returns the bytes SaveBlob would write into a pack for plain
// with id: compressed when that is smaller, then sealed; and whether it is
// compressed. It saves nothing. The result lies in a pooled buffer, which
// the caller may hand back with ReleaseSealed once it is done with it.
// (The bench's backup ceiling measures the blob stage with it.)
func (r *Repository) SealedForm(t pack.BlobType, id crypto.ID, plain []byte) ([]byte, bool) {
	return r.compressAndSeal(t, id, plain)
}

// ReleaseSealed returns a buffer from SealedForm to the pool.
func (r *Repository) ReleaseSealed(b []byte) { r.putBuf(b) }
