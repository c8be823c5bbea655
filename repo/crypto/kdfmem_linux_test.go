package crypto

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

// heapObjects is the heap's objects, live or not yet collected: what a
// command measures to size its memory limit.
func heapObjects() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// TestKDFMemoryReleased: opening a key file leaves the heap about as it
// found it, not holding argon2's memory (16 MiB here) as garbage that a
// memory limit sized from the heap would count.
func TestKDFMemoryReleased(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	p := KDFParams{Time: 1, Memory: 16 << 10, Threads: 1}
	kf, err := NewKeyFile(k, "secret", p, "ann", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	// Only the derivation may collect: with the collector's own pacing
	// off, argon2's memory stays in the heap unless it is released.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := heapObjects()
	if _, err := kf.Open("secret"); err != nil {
		t.Fatal(err)
	}
	if grew := heapObjects() - before; grew > 4<<20 {
		t.Errorf("the heap grew by %d MiB across the key derivation, want the KDF's 16 MiB collected", grew>>20)
	}
}
