//go:build linux && !race

package fusefs

// raceEnabled reports whether the race detector is on; timing tests skip.
const raceEnabled = false
