//go:build cgo

package repo

import (
	"slices"

	czstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
)

// DefaultCompressor names the encoder of the default compression level in
// this build (dj version shows it).
const DefaultCompressor = "zstd C library (cgo)"

// cDefaultLevel is the level of zstd's C library for the default
// compression: level 3, the level klauspost/compress's SpeedDefault is
// modelled on and restic's "auto" uses.
const cDefaultLevel = 3

// cEncoder compresses with zstd's reference C library (built from source
// by github.com/DataDog/zstd) where the build has cgo. On the compressible
// part of the bench corpus (693 MB in 1 MiB pieces, one core, 2026-12-06)
// it took 2.59 s and wrote 237 MB where klauspost/compress's SpeedDefault
// took 3.83 s and wrote 241 MB: a third less of the backup's largest CPU
// cost, and a smaller repository. Its frames are plain zstd frames (no
// checksum, the content size in the header): every decoder, klauspost's
// included, reads them, and SaveBlob decompresses each with klauspost's
// before it is sealed (issue 12's verify). Builds without cgo use
// klauspost's encoder alone (zstd_nocgo.go).
type cEncoder struct {
	// ctxs holds idle compression contexts (each one's tables are reused
	// across calls); a bounded channel rather than a sync.Pool, which the
	// collector empties, so that contexts are not made again and again.
	ctxs chan czstd.Ctx
	// fallback compresses when the C library fails (it cannot, with room
	// for its bound, but an error must never lose a blob).
	fallback *zstd.Encoder
}

// newDefaultEncoder returns the encoder of the default level: zstd's C
// library at level 3, with concurrency users at once.
func newDefaultEncoder(concurrency int) (blobEncoder, error) {
	fallback, err := newKlauspostEncoder(zstd.SpeedDefault, concurrency)
	if err != nil {
		return nil, err
	}
	return &cEncoder{ctxs: make(chan czstd.Ctx, concurrency), fallback: fallback}, nil
}

// EncodeAll appends the zstd frame of src to dst and returns it.
func (e *cEncoder) EncodeAll(src, dst []byte) []byte {
	bound := czstd.CompressBound(len(src))
	if cap(dst)-len(dst) < bound {
		dst = slices.Grow(dst, bound)
	}
	var ctx czstd.Ctx
	select {
	case ctx = <-e.ctxs:
	default:
		ctx = czstd.NewCtx()
	}
	// With cap >= bound the library writes into the slice it is given.
	c, err := ctx.CompressLevel(dst[len(dst):cap(dst)], src, cDefaultLevel)
	select {
	case e.ctxs <- ctx:
	default: // freed by its finalizer
	}
	if err != nil || len(c) > cap(dst)-len(dst) || (len(c) > 0 && &c[0] != &dst[len(dst):cap(dst)][0]) {
		return e.fallback.EncodeAll(src, dst)
	}
	return dst[:len(dst)+len(c)]
}

// Close releases the encoder.
func (e *cEncoder) Close() error { return e.fallback.Close() }
