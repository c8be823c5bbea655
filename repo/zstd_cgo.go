//go:build cgo

package repo

/*
#include <malloc.h>
*/
import "C"

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
	// Idle compression contexts, each with its tables (one to three
	// megabytes, in C memory the Go collector neither sees nor paces).
	// A pool makes at most cap(made) contexts: a backup saves trees from
	// a goroutine per directory, and a context for each caller that found
	// none idle made 60 of them (peak RSS +50 MiB). A caller that finds
	// none idle and none left to make waits for one, a compression's time
	// at most, since nobody holds one otherwise. Small and large blobs
	// have pools of their own (splitAt): a context keeps the tables of the
	// largest blob it compressed and makes them again, smaller, after
	// many small ones, so one that served both would make them again and
	// again.
	small, large ctxPool
	// fallback compresses when the C library fails (it cannot, with room
	// for its bound, but an error must never lose a blob).
	fallback *zstd.Encoder
}

// splitAt is the largest blob a context of the small pool compresses:
// zstd's parameters for level 3 change at 16, 128 and 256 KiB.
const splitAt = 128 << 10

// Bytes of C memory a context may hold, by pool: measured 2.9 MiB for a
// context that compressed an 8 MiB blob at level 3, and about a megabyte
// for blobs up to splitAt.
const (
	largeCtxMemory = 4 << 20
	smallCtxMemory = 2 << 20
)

// mmapThreshold is the malloc block size from which glibc maps memory of
// its own for a block (its initial threshold, kept fixed).
const mmapThreshold = 128 << 10

// newDefaultEncoder returns the encoder of the default level: zstd's C
// library at level 3, with concurrency users at once.
func newDefaultEncoder(concurrency int) (blobEncoder, error) {
	// glibc's malloc serves a block of 128 KiB or more with mmap until
	// the first such block is freed, then raises that threshold and
	// serves such blocks from its arenas, one per thread that calls it,
	// where freed memory stays. A context makes its tables again when a
	// blob needs bigger ones, from whichever thread its goroutine runs
	// on: the bench's backup ended with a dozen arenas keeping a megabyte
	// or two each (peak RSS 137-140 MiB; 124-127 with the threshold
	// fixed, the time unchanged within the noise). The contexts are the
	// only C code that allocates after start-up.
	C.mallopt(C.M_MMAP_THRESHOLD, mmapThreshold)
	fallback, err := newKlauspostEncoder(zstd.SpeedDefault, concurrency)
	if err != nil {
		return nil, err
	}
	concurrency = max(concurrency, 1)
	return &cEncoder{small: newCtxPool(concurrency), large: newCtxPool(concurrency), fallback: fallback}, nil
}

// EncodeAll appends the zstd frame of src to dst and returns it.
func (e *cEncoder) EncodeAll(src, dst []byte) []byte {
	bound := czstd.CompressBound(len(src))
	if cap(dst)-len(dst) < bound {
		dst = slices.Grow(dst, bound)
	}
	pool := &e.small
	if len(src) > splitAt {
		pool = &e.large
	}
	ctx := pool.get()
	room := dst[len(dst):cap(dst)]
	c, err := ctx.CompressLevel(room, src, cDefaultLevel)
	pool.put(ctx)
	switch {
	case err != nil:
		return e.fallback.EncodeAll(src, dst)
	case len(c) > 0 && &c[0] == &room[0]:
		// With room for the bound the library writes where it is told.
		return dst[:len(dst)+len(c)]
	default:
		return append(dst, c...)
	}
}

// Close releases the encoder.
func (e *cEncoder) Close() error { return e.fallback.Close() }

// nativeMemory is the most C memory the encoder's contexts hold.
func (e *cEncoder) nativeMemory() int64 {
	return int64(cap(e.large.made))*largeCtxMemory + int64(cap(e.small.made))*smallCtxMemory
}

// ctxPool holds compression contexts, at most cap(made) of them.
type ctxPool struct {
	idle chan czstd.Ctx
	made chan struct{}
}

func newCtxPool(n int) ctxPool {
	return ctxPool{idle: make(chan czstd.Ctx, n), made: make(chan struct{}, n)}
}

// get returns an idle context, or makes one while fewer than cap(made)
// exist, or waits for one.
func (p *ctxPool) get() czstd.Ctx {
	select {
	case ctx := <-p.idle:
		return ctx
	default:
	}
	select {
	case ctx := <-p.idle:
		return ctx
	case p.made <- struct{}{}:
		return czstd.NewCtx()
	}
}

// put returns a context from get; it never blocks, since at most
// cap(idle) exist.
func (p *ctxPool) put(ctx czstd.Ctx) { p.idle <- ctx }
