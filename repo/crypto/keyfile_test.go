package crypto

import (
	"runtime"
	"strings"
	"testing"
)

// TestKeyFileRefusesCostlyKDF: a key file read from storage that asks
// argon2 for more memory or work than dj ever uses is refused before
// anything is allocated (a key file of 4 GiB crashed dj out of memory, one
// of 100 passes over 1 GiB took minutes).
func TestKeyFileRefusesCostlyKDF(t *testing.T) {
	for _, p := range []KDFParams{
		{Time: 1, Memory: 1<<32 - 1, Threads: 4},
		{Time: 1, Memory: 4 << 20, Threads: 4},
		{Time: 1, Memory: 256<<10 + 1, Threads: 4},
		{Time: 100, Memory: 1 << 20, Threads: 4},
		{Time: 9, Memory: 256 << 10, Threads: 4},
		{Time: 101, Memory: 64, Threads: 1},
		{Time: 0, Memory: 64, Threads: 1},
		{Time: 1, Memory: 64, Threads: 0},
	} {
		kf := &KeyFile{KDF: "argon2id", KDFParams: p, Salt: make([]byte, 16), Data: make([]byte, 48)}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := kf.Open("pw")
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "invalid KDF parameters") {
			t.Errorf("%+v: got %v, want invalid KDF parameters", p, err)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Errorf("%+v: allocated %d bytes before refusing", p, d)
		}
	}
	// The default and the largest accepted work still open (wrong data:
	// the password check fails after the derivation).
	for _, p := range []KDFParams{DefaultKDF, {Time: 1, Memory: 64, Threads: 1}} {
		kf := &KeyFile{KDF: "argon2id", KDFParams: p, Salt: make([]byte, 16), Data: make([]byte, 48)}
		if _, err := kf.Open("pw"); err != ErrWrongPassword {
			t.Errorf("%+v: got %v, want ErrWrongPassword", p, err)
		}
	}
}
