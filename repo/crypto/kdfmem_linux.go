//go:build linux

package crypto

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// kdfHugePagesFrom is the KDF memory from which prepareKDFMemory asks for
// huge pages (DefaultKDF's 19 MiB, not the tests' 64 KiB).
const kdfHugePagesFrom = 4 << 20

// prepareKDFMemory readies n bytes of heap for argon2, which allocates its
// memory itself and writes every page of it: the heap gets a span of n
// bytes marked for transparent huge pages (MADV_HUGEPAGE; Debian's
// default THP mode is madvise), and a collection frees it for argon2's
// allocation to reuse. argon2's writes then fault in a few 2 MiB pages
// instead of thousands of 4 KiB ones. On this project's machines (VMs
// whose memory the host backs on first touch) a 4 KiB fault costs tens of
// microseconds: the first key derivation of a process took 0.3-0.9 s
// there, and 0.06-0.12 s with the huge pages (collection included); it
// is every command's start. Should argon2 land elsewhere, it costs what
// it did.
func prepareKDFMemory(n int) {
	if n < kdfHugePagesFrom {
		return
	}
	b := make([]byte, n)
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	runtime.KeepAlive(b)
	runtime.GC()
}

// releaseKDFMemory collects argon2's n bytes right after the derivation,
// while the heap holds little else (a collection then takes about a
// millisecond). Left to the collector's own pace, they counted as part of
// the heap a command measures to size its memory limit (setMemoryLimit in
// cmd/dj): a backup's limit, and with it its peak RSS, grew by the KDF's
// 19 MiB.
func releaseKDFMemory(n int) {
	if n < kdfHugePagesFrom {
		return
	}
	runtime.GC()
}
