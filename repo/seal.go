package repo

import (
	"fmt"
	"math"
	"runtime"

	"github.com/klauspost/compress/zstd"

	"dj/repo/crypto"
	"dj/repo/pack"
)

// compressAndSeal returns the stored form of a blob in one pooled buffer:
// compressed (when that is smaller) right after room for the nonce, then
// sealed in place; incompressible content is sealed from plain directly.
// Content that looks random (incompressible) is not given to zstd at all.
func (r *Repository) compressAndSeal(t pack.BlobType, id crypto.ID, plain []byte) ([]byte, bool) {
	sealed, compressed, _ := r.compressAndSealChecked(t, id, plain, false)
	return sealed, compressed
}

// compressAndSealChecked is compressAndSeal; with check, the compressed
// form is decompressed and compared with plain before it is sealed
// (checkCompressed), and a difference is an error wrapping ErrCorrupt.
func (r *Repository) compressAndSealChecked(t pack.BlobType, id crypto.ID, plain []byte, check bool) ([]byte, bool, error) {
	room := len(plain)
	if r.enc != nil {
		room = compressBound(len(plain))
	}
	buf := r.getSealBuf(room + crypto.Overhead)
	if r.enc != nil && len(plain) >= 64 && !looksRandom(plain) {
		c := r.enc.EncodeAll(plain, buf[:crypto.NonceSize])
		if len(c)-crypto.NonceSize < len(plain) {
			if check {
				if err := r.checkCompressed(t, id, c[crypto.NonceSize:], plain); err != nil {
					r.putSealBuf(c)
					return nil, false, err
				}
			}
			return pack.SealBlobInPlace(r.key, c, t, id), true, nil
		}
		buf = c
	}
	return pack.SealBlob(r.key, buf[:0], t, id, plain), false, nil
}

// Random-looking content: zstd at the default level needs about a third
// of the time it spends on compressible data to find that random data
// (encrypted or already compressed files) does not compress: 0.6 to 1.1
// CPU-seconds of a backup of the bench corpus, 40% of which is such data
// (about 6%). looksRandom counts the bytes of every 64 KiB block of a blob
// instead, about five times faster: when the byte entropy of every block is that of random bytes, no
// compressor could save more than a byte in a thousand with literals, and
// the blob is stored as it is. One compressible block anywhere (a small
// text file inside a tar, say) sends the whole blob to zstd. (Content
// whose bytes look random but that repeats itself within a blob would
// compress through matches; such blobs are rare, and lose only space,
// never data.)
const (
	randomMinLen = 128 << 10 // smaller blobs are cheap to just compress
	randomBlock  = 64 << 10
	// randomEntropy is the byte entropy (bits per byte) above which a
	// block counts as random: random bytes give 8 minus a bias of about
	// 255/(2·block·ln 2), 7.997 for 64 KiB blocks.
	randomEntropy = 7.99
)

// looksRandom reports whether every 64 KiB block of plain (the last one
// ending at its end) has the byte entropy of random data.
func looksRandom(plain []byte) bool {
	if len(plain) < randomMinLen {
		return false
	}
	for off := 0; off < len(plain); off += randomBlock {
		start := min(off, len(plain)-randomBlock)
		if byteEntropy(plain[start:start+randomBlock]) < randomEntropy {
			return false
		}
	}
	return true
}

// byteEntropy returns the Shannon entropy of the bytes of b in bits per byte.
func byteEntropy(b []byte) float64 {
	// Four tables, so that runs of one byte value do not make each
	// increment wait for the one before.
	var counts [4][256]uint32
	i := 0
	for ; i+4 <= len(b); i += 4 {
		counts[0][b[i]]++
		counts[1][b[i+1]]++
		counts[2][b[i+2]]++
		counts[3][b[i+3]]++
	}
	for ; i < len(b); i++ {
		counts[0][b[i]]++
	}
	n := float64(len(b))
	var h float64
	for v := range counts[0] {
		if c := counts[0][v] + counts[1][v] + counts[2][v] + counts[3][v]; c != 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// sealBufMin is the smallest blob whose sealed form gets a pooled buffer;
// smaller ones (trees, small files) get one of their own size.
const sealBufMin = 64 << 10

// sealBufSize is the capacity of every pooled buffer for sealed blobs:
// twice the average chunk size holds all but a few percent of chunks, and
// one size for all means that no pooled buffer is ever too small.
func (r *Repository) sealBufSize() int {
	const step = 1 << 20
	n := 2*max(r.cfg.ChunkerAvg, 1<<20) + crypto.Overhead
	return (n + step - 1) / step * step
}

// getSealBuf returns an empty buffer with room for n bytes for a sealed
// blob, from the packer's pool when n fits the pooled size.
func (r *Repository) getSealBuf(n int) []byte {
	size := r.sealBufSize()
	if n < sealBufMin || n > size {
		return make([]byte, 0, n)
	}
	select {
	case b := <-r.packer.sealBufs:
		return b
	default:
		return make([]byte, 0, size)
	}
}

// putSealBuf returns a buffer from getSealBuf to the pool once the
// sealed blob in it is written; other buffers are left to the collector.
func (r *Repository) putSealBuf(b []byte) {
	if cap(b) != r.sealBufSize() {
		return
	}
	select {
	case r.packer.sealBufs <- b[:0]:
	default:
	}
}

// smallBuf is the capacity of the pooled buffers for small blobs (most
// files of a source tree): they come from a pool of their own, so that
// they neither take the large buffers nor cost a 1 MiB allocation (and
// its zeroing) each when the large pool runs dry.
const smallBuf = 64 << 10

// getBuf returns an empty buffer with room for n bytes from the pool.
func (r *Repository) getBuf(n int) []byte {
	pool, step := r.bufPool, 1<<20
	if n <= smallBuf {
		pool, step = r.smallBufPool, smallBuf
	}
	select {
	case b := <-pool:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	// Round up so that the buffer serves later, larger requests too: the
	// pool then settles on a few buffers instead of churning the heap.
	return make([]byte, 0, (n+step-1)/step*step)
}

// putBuf returns a buffer to the pool; nil is ignored.
func (r *Repository) putBuf(b []byte) {
	if b == nil || cap(b) > 16<<20 {
		return
	}
	pool := r.bufPool
	if cap(b) <= smallBuf {
		pool = r.smallBufPool
	}
	select {
	case pool <- b[:0]:
	default:
	}
}

// compress returns the zstd encoding of plain when it is smaller.
func (r *Repository) compress(plain []byte) ([]byte, bool) {
	if r.enc == nil || len(plain) < 64 {
		return plain, false
	}
	c := r.enc.EncodeAll(plain, make([]byte, 0, compressBound(len(plain))))
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

// compressBound is at least the largest zstd frame of n bytes (zstd's
// ZSTD_COMPRESSBOUND: n + n/256, plus up to 64 bytes below 128 KiB): room
// in which an encoder never has to grow its output.
func compressBound(n int) int { return n + n>>8 + 64 }

// blobEncoder compresses whole blobs and files into zstd frames, from many
// goroutines at once.
type blobEncoder interface {
	// EncodeAll appends the zstd frame of src to dst and returns it.
	EncodeAll(src, dst []byte) []byte
	Close() error
}

// newEncoder returns the zstd encoder for a level name, or nil for "off".
// The default level is the C library's where the build has cgo
// (newDefaultEncoder); the others are klauspost/compress's.
func newEncoder(name string) (blobEncoder, error) {
	level := zstd.SpeedDefault
	switch name {
	case "", "auto", "default":
		return newDefaultEncoder(runtime.GOMAXPROCS(0))
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
	return newKlauspostEncoder(level, runtime.GOMAXPROCS(0))
}

// newKlauspostEncoder returns klauspost/compress's encoder at level for
// concurrency users at once. No frame checksum: every blob is sealed and
// its plaintext hashed to its id, so zstd's own checksum would only cost
// time.
func newKlauspostEncoder(level zstd.EncoderLevel, concurrency int) (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(concurrency),
		zstd.WithZeroFrames(true), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
}

// NativeMemory is the most memory the repository's compressor may hold
// outside the Go heap (zstd's C library, where the build has it), which a
// limit of the Go heap (debug.SetMemoryLimit) does not count: a command
// that bounds its memory takes it off the heap's share.
func (r *Repository) NativeMemory() int64 {
	if n, ok := r.enc.(interface{ nativeMemory() int64 }); ok {
		return n.nativeMemory()
	}
	return 0
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
// compressed. With verify, the compressed form is decompressed and
// compared with plain first, as SaveBlob does (an error wraps ErrCorrupt).
// It saves nothing. The result lies in a pooled buffer, which the caller
// may hand back with ReleaseSealed once it is done with it. (The bench's
// backup ceiling measures the blob stage with it.)
func (r *Repository) SealedForm(t pack.BlobType, id crypto.ID, plain []byte, verify bool) ([]byte, bool, error) {
	return r.compressAndSealChecked(t, id, plain, verify)
}

// ReleaseSealed returns a buffer from SealedForm to the pool.
func (r *Repository) ReleaseSealed(b []byte) { r.putSealBuf(b) }
