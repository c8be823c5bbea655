//go:build race

package cache

// poisonReleased makes the last Release of a blob overwrite its buffer in
// builds with the race detector (the tests): a holder that released it too
// early, or a reply the kernel is sent after its release, then shows
// garbage at once instead of only when a later load happens to reuse the
// buffer in time.
const poisonReleased = true
