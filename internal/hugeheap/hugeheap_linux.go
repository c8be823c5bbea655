//go:build linux

package hugeheap

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Advise marks the Go heap's read-write mappings for transparent huge
// pages (madvise MADV_HUGEPAGE) and returns how many bytes it marked.
//
// The heap is found from a probe: a fresh heap allocation lies inside the
// runtime's heap reservation, a run of adjacent anonymous private mappings
// (the parts in use read-write, the rest reserved without access; the
// runtime randomizes where it starts since Go 1.26). Every read-write
// mapping of that run is marked; the runtime's other mappings (its sparse
// page summaries and arena index, which huge pages would make resident)
// lie elsewhere. Mappings marked before are marked again (a no-op); parts
// the heap maps later are marked by the next call.
func Advise() (int64, error) {
	probe := make([]byte, 64<<10)
	addr := uintptr(unsafe.Pointer(&probe[0]))
	maps, err := os.ReadFile("/proc/self/maps")
	runtime.KeepAlive(probe)
	if err != nil {
		return 0, fmt.Errorf("hugeheap: %w", err)
	}
	var ms []mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		if m, ok := parseMapping(sc.Bytes()); ok {
			ms = append(ms, m)
		}
	}
	var marked int64
	for _, m := range heapRun(ms, addr) {
		if m.perms != "rw-p" {
			continue
		}
		if err := madvise(m.start, m.end-m.start); err == nil {
			marked += int64(m.end - m.start)
		}
	}
	return marked, nil
}

// mapping is an anonymous mapping of /proc/self/maps.
type mapping struct {
	start, end uintptr
	perms      string
}

// parseMapping parses a line of /proc/self/maps and reports whether it is
// an anonymous private mapping (no file, no name).
func parseMapping(line []byte) (mapping, bool) {
	f := bytes.Fields(line)
	// address perms offset dev inode [path]
	if len(f) != 5 || string(f[4]) != "0" || (string(f[1]) != "rw-p" && string(f[1]) != "---p") {
		return mapping{}, false
	}
	addr := bytes.SplitN(f[0], []byte("-"), 2)
	if len(addr) != 2 {
		return mapping{}, false
	}
	s, err1 := strconv.ParseUint(string(addr[0]), 16, 64)
	e, err2 := strconv.ParseUint(string(addr[1]), 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return mapping{}, false
	}
	return mapping{start: uintptr(s), end: uintptr(e), perms: string(f[1])}, true
}

// heapRun returns the run of adjacent mappings of ms (sorted by address,
// as the kernel lists them) around the one that holds addr; nil when no
// mapping holds it.
func heapRun(ms []mapping, addr uintptr) []mapping {
	for i, m := range ms {
		if addr < m.start || addr >= m.end {
			continue
		}
		lo, hi := i, i+1
		for lo > 0 && ms[lo-1].end == ms[lo].start {
			lo--
		}
		for hi < len(ms) && ms[hi-1].end == ms[hi].start {
			hi++
		}
		return ms[lo:hi]
	}
	return nil
}

// madvise marks [start, start+n) with MADV_HUGEPAGE.
func madvise(start, n uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, start, n, unix.MADV_HUGEPAGE)
	if errno != 0 {
		return errno
	}
	return nil
}
