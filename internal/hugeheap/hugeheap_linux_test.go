//go:build linux

package hugeheap

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func TestHeapRun(t *testing.T) {
	var ms []mapping
	for _, l := range []string{
		"00400000-00541000 r-xp 00000000 fe:00 9978437 /tmp/x.test",
		"006d9000-02711000 rw-p 00000000 00:00 0",
		"12e280000000-12e282800000 ---p 00000000 00:00 0",
		"12e282800000-12e289000000 rw-p 00000000 00:00 0",
		"12e289000000-12e28c000000 ---p 00000000 00:00 0",
		"7fae2dc7e000-7fae2de00000 rw-p 00000000 00:00 0",
		"7fae2de00000-7fae2fe00000 rw-p 00000000 00:00 0",
		"7fae2fe00000-7fae423c5000 r--p 00000000 00:00 0",
		"garbage",
	} {
		if m, ok := parseMapping([]byte(l)); ok {
			ms = append(ms, m)
		}
	}
	if len(ms) != 6 {
		t.Fatalf("parsed %d anonymous private mappings, want 6: %+v", len(ms), ms)
	}
	run := heapRun(ms, 0x12e283000000)
	if len(run) != 3 || run[0].start != 0x12e280000000 || run[2].end != 0x12e28c000000 {
		t.Errorf("heapRun around the heap: %+v", run)
	}
	if run := heapRun(ms, 0x7fae2de00000); len(run) != 2 {
		t.Errorf("heapRun of two adjacent mappings: %+v", run)
	}
	if run := heapRun(ms, 0x1000); run != nil {
		t.Errorf("heapRun of an address nothing holds: %+v", run)
	}
}

// TestAdviseMarksTheHeap: after Advise, the mapping that holds a large
// heap object carries the kernel's huge-page mark ("hg" in its VmFlags),
// and nothing outside the heap arenas does that did not before.
func TestAdviseMarksTheHeap(t *testing.T) {
	b := make([]byte, 100<<20)
	addr := uintptr(unsafe.Pointer(&b[0]))
	before := markedOutsideHeap(t, addr)
	n, err := Advise()
	if err != nil {
		t.Fatal(err)
	}
	if n < 100<<20 {
		t.Errorf("Advise marked %d bytes, want at least the 100 MiB object's arenas", n)
	}
	if !marked(t, addr) {
		t.Errorf("the heap mapping at %#x has no huge-page mark after Advise", addr)
	}
	if after := markedOutsideHeap(t, addr); after != before {
		t.Errorf("mappings outside the heap marked: %d before, %d after", before, after)
	}
	runtime.KeepAlive(b)
}

// smaps calls fn with the range and VmFlags of every mapping.
func smaps(t *testing.T, fn func(start, end uintptr, flags string)) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	var start, end uintptr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if fl, ok := strings.CutPrefix(l, "VmFlags:"); ok {
			fn(start, end, fl)
			continue
		}
		if r, _, ok := strings.Cut(l, " "); ok && strings.Contains(r, "-") && !strings.Contains(r, ":") {
			a, z, _ := strings.Cut(r, "-")
			s, err1 := strconv.ParseUint(a, 16, 64)
			e, err2 := strconv.ParseUint(z, 16, 64)
			if err1 == nil && err2 == nil {
				start, end = uintptr(s), uintptr(e)
			}
		}
	}
}

func marked(t *testing.T, addr uintptr) bool {
	hg := false
	smaps(t, func(s, e uintptr, flags string) {
		if s <= addr && addr < e {
			hg = strings.Contains(flags, " hg")
		}
	})
	return hg
}

// markedOutsideHeap counts the marked mappings that do not lie within
// 1 GiB of addr.
func markedOutsideHeap(t *testing.T, addr uintptr) int {
	n := 0
	smaps(t, func(s, e uintptr, flags string) {
		if (e+1<<30 < addr || s > addr+1<<30) && strings.Contains(flags, " hg") {
			n++
		}
	})
	return n
}

// TestKeepMarksGrowth: memory the heap maps after Keep started is marked
// within a few intervals, and heapMapped, whose growth triggers a new
// mark, counts the heap's objects. (On this project's kernel a mapping the heap adds next
// to a marked one often carries the mark at once, so the first half
// alone does not tell whether Keep marked it.)
func TestKeepMarksGrowth(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Keep(ctx, 10*time.Millisecond)
	b := make([]byte, 1<<30) // beyond what the test's heap had mapped (never touched)
	if n := heapMapped(); n < 1<<30 {
		t.Errorf("heapMapped %d with a 1 GiB object alive", n)
	}
	addr := uintptr(unsafe.Pointer(&b[0]))
	deadline := time.Now().Add(5 * time.Second)
	for !marked(t, addr) {
		if time.Now().After(deadline) {
			t.Fatalf("the heap mapping at %#x was not marked after it grew", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(b)
}
