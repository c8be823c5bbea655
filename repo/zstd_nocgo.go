//go:build !cgo

package repo

import "github.com/klauspost/compress/zstd"

// DefaultCompressor names the encoder of the default compression level in
// this build (dj version shows it).
const DefaultCompressor = "klauspost/compress (pure Go)"

// newDefaultEncoder returns the encoder of the default level. Without cgo
// it is klauspost/compress's SpeedDefault (zstd_cgo.go has the C library's
// level 3, faster and a little smaller, where the build has cgo).
func newDefaultEncoder(concurrency int) (blobEncoder, error) {
	return newKlauspostEncoder(zstd.SpeedDefault, concurrency)
}
