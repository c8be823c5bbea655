package tree

import (
	"runtime"
	"strings"
	"testing"
)

// TestDecodeBoundsHostileAllocation decodes trees made to ask for much more
// memory than they hold: the decoders sized their node arrays by counting
// the braces in the input, so a megabyte of braces asked for hundreds of
// megabytes of nodes (a zstd blob of a few KiB asked for 13 GB). Each must
// decode or fail having allocated a small multiple of its length.
func TestDecodeBoundsHostileAllocation(t *testing.T) {
	const n = 1 << 20
	rep := func(s string, k int) string { return strings.Repeat(s, k) }
	cases := []struct {
		name string
		json string
		ok   bool
	}{
		{"braces in a name", `{"nodes":[{"name":"` + rep("{", n) + `","type":"file"}]}`, true},
		{"braces in an escaped name", `{"nodes":[{"name":"\"` + rep("{", n) + `","type":"file"}]}`, true},
		{"empty nodes", `{"nodes":[` + rep("{},", n/3) + `{}]}`, false},
		{"empty nodes, not plain", `{"nodes":[{"x":1},` + rep("{},", n/3) + `{}]}`, false},
		{"empty xattrs", `{"nodes":[{"name":"a","type":"file","xattrs":[` + rep("{},", n/3) + `{}]}]}`, false},
		{"empty xattrs, not plain", `{"nodes":[{"name":"\"","type":"file","xattrs":[` + rep("{},", n/3) + `{}]}]}`, false},
	}
	for _, c := range cases {
		b := []byte(c.json)
		for _, dec := range []struct {
			name string
			fn   func([]byte) error
		}{
			{"Decode", func(b []byte) error { _, err := Decode(b); return err }},
			{"DecodeCompact", func(b []byte) error { _, err := DecodeCompact(b); return err }},
		} {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := dec.fn(b)
			runtime.ReadMemStats(&after)
			if (err == nil) != c.ok {
				t.Errorf("%s, %s: error %v, want ok=%v", c.name, dec.name, err, c.ok)
			}
			// The name's copies, and the nodes allocated before any is read.
			limit := uint64(8*len(b)) + 32<<20
			if got := after.TotalAlloc - before.TotalAlloc; got > limit {
				t.Errorf("%s, %s: allocated %d MiB for %d KiB of JSON (limit %d MiB)",
					c.name, dec.name, got>>20, len(b)>>10, limit>>20)
			}
		}
	}
}
